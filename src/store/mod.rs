//! herald's durable state, one SQLite file (`herald.db` in the state directory): the outbox of
//! accepted messages, idempotency keys, per-hub history, retained statuses, the record of
//! schedule fires, and client acknowledgements (with the hub and source of each message sent
//! to a hub that takes acks, kept `MESSAGES_KEPT`). [`Store`] is a cheap handle: every write
//! goes to one writer thread that commits in groups (many callers per transaction, see
//! `writer`); reads use a second connection (WAL lets them run beside the writer).
//!
//! Durability: the database runs in WAL mode. With `synchronous = full` (the default) a
//! commit is on disk before its callers hear "stored", so an accepted message survives a
//! process crash and a power cut; with `normal` it survives a process crash, and a power cut
//! may lose the last commits. The sync runs on a thread of its own behind the writer
//! (`syncer`): the outbox has a message once it is synced or 2 ms after its commit, whichever
//! is first, and removals and prunes are never synced (see `writer`).

mod feed;
mod schema;
mod syncer;
mod writer;

pub use feed::Fed;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::message::{Message, Recipient};

/// The file name of the database inside the state directory.
pub const FILE_NAME: &str = "herald.db";

/// Longest a caller waits for the writer before giving up (the route then answers 503).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most write requests queued for the writer; more wait (backpressure), bounded by
/// [`WRITE_TIMEOUT`].
const QUEUE: usize = 8192;

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// The log synced (`fdatasync`) before a caller hears "kept", by the syncer thread behind
    /// the writer: survives a power cut.
    #[default]
    Full,
    /// Synced at WAL checkpoints only: survives a process crash; a power cut may lose recent
    /// commits.
    Normal,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the state directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state database {path} is not usable: {detail}")]
    Unusable { path: PathBuf, detail: String },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: a stored message cannot be read: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the state database writer has stopped")]
    Closed,
    #[error("the state database did not answer within {0:?}")]
    Timeout(Duration),
}

/// One message to store in the outbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message id the caller was (or will be) given.
    pub id: String,
    pub message: Message,
    /// `route:NAME` or `schedule:NAME`: where it came from (logs, metrics).
    pub source: String,
    /// Keep it as the latest status under this key (`retain: true`).
    pub retain: Option<RetainKey>,
    /// Record it for acknowledgements (kept `MESSAGES_KEPT`): its hub has an `ack` method, so
    /// clients may acknowledge it and `GET /api/messages/{id}` shows who did.
    pub for_acks: bool,
}

/// Where a retained status is kept: the source (`route:NAME`, `schedule:NAME`) and a key
/// within it (a route's concrete path, so `/api/status/db` and `/api/status/web` are two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainKey {
    pub source: String,
    pub key: String,
}

/// A request to accept messages, stored in one transaction or not at all.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub messages: Vec<NewMessage>,
    /// `Idempotency-Key`: store `answer` under (scope, key) unless it is there and younger than
    /// `window`, in which case nothing is stored and the first answer is returned.
    pub idempotency: Option<Idempotency>,
    /// A schedule fire: stored at most once per (schedule, instant), across restarts.
    pub fire: Option<Fire>,
}

/// An idempotency key and the answer to remember for it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub answer: String,
    pub window: Duration,
}

/// One fire of a schedule.
#[derive(Debug, Clone)]
pub struct Fire {
    pub schedule: String,
    /// The fire instant, milliseconds since the Unix epoch.
    pub instant_ms: i64,
}

/// What an [`Accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored; the outbox sequence numbers, in order.
    Stored(Vec<i64>),
    /// The idempotency key was seen within its window: the first request's answer.
    Repeat(String),
    /// This fire was stored before (an earlier run of herald).
    FireSeen,
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub id: String,
    pub message: Message,
    pub source: String,
    pub accepted_ms: i64,
}

/// What to keep of a hub's delivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Most messages kept per hub.
    pub keep: u32,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

/// A delivered message leaving the outbox, with its history row when its hub keeps one.
#[derive(Debug)]
struct Removal {
    seq: i64,
    history: Option<(HistoryPolicy, HistoryRow)>,
}

/// A history row, built from the message in hand.
#[derive(Debug)]
struct HistoryRow {
    id: String,
    /// Lowercased.
    hub: String,
    user: Option<String>,
    time_ms: i64,
    target: String,
    arguments: String,
}

impl Removal {
    fn new(p: &Pending, policy: Option<HistoryPolicy>) -> Result<Removal, StoreError> {
        let kept = policy.filter(|policy| policy.keep > 0);
        let history = match (kept, history_audience(&p.message.to)) {
            (Some(policy), Some(user)) => Some((
                policy,
                HistoryRow {
                    id: p.id.clone(),
                    hub: p.message.hub.to_ascii_lowercase(),
                    user: user.map(str::to_string),
                    time_ms: p.accepted_ms,
                    target: p.message.target.clone(),
                    arguments: serde_json::to_string(&p.message.arguments)?,
                },
            )),
            _ => None,
        };
        Ok(Removal {
            seq: p.seq,
            history,
        })
    }
}

/// One message of a hub's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// The user it was sent to; absent for a broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub target: String,
    pub arguments: Vec<Value>,
}

/// A retained status.
#[derive(Debug, Clone, PartialEq)]
pub struct Retained {
    pub id: String,
    pub time_ms: i64,
    pub message: Message,
}

impl Retained {
    /// Whether a caller with `user` may see it: a broadcast, or a message to that user (the
    /// rule history follows; group and connection messages are nobody's to read later).
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        match history_audience(&self.message.to) {
            Some(None) => true,
            Some(Some(to)) => user == Some(to),
            None => false,
        }
    }

    /// `{"id", "time", "target", "arguments"}`, as herald answers a retained status.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "time": rfc3339_ms(self.time_ms),
            "target": self.message.target,
            "arguments": self.message.arguments,
        })
    }
}

/// The outbox at a glance, for metrics and `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// When the oldest pending message was accepted (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

/// How long herald remembers which hub and source a message came from, so that clients can
/// acknowledge it; older messages and their acknowledgements are pruned.
pub const MESSAGES_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// A client's acknowledgement of a message (`events.<hub>.methods.<m>.ack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAck {
    /// The acknowledged message's id.
    pub id: String,
    pub connection: String,
    pub user: Option<String>,
}

/// What recording an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded (`first`: this connection had not acknowledged it before). `hub` and
    /// `source` are the message's.
    Recorded {
        hub: String,
        source: String,
        first: bool,
    },
    /// No message with that id was sent by herald (or it is older than [`MESSAGES_KEPT`]).
    UnknownMessage,
}

/// One acknowledgement of a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AckEntry {
    pub user: Option<String>,
    pub connection: String,
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
}

/// A message and who acknowledged it, oldest acknowledgement first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAcks {
    pub id: String,
    pub hub: String,
    pub source: String,
    pub acks: Vec<AckEntry>,
}

/// A handle on the state database. Clone freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writes: mpsc::Sender<writer::Command>,
    /// The read connection. A std `Mutex`: reads are short and run in `spawn_blocking`, never
    /// across an `.await`.
    reader: Mutex<Connection>,
    /// What the writer just stored into the outbox, for the worker (see `feed`).
    feed: Arc<feed::Feed>,
    /// Set once a sync of the log failed: every write is refused from then on (see `syncer`).
    broken: syncer::Broken,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Open (creating if needed) `dir/herald.db` and start its writer thread. A file that is
    /// not a database, or a directory that cannot be written, is an error naming the path.
    pub fn open(dir: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let write = schema::open(&path)?;
        let reader = schema::open_reader(&path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let feed = Arc::new(feed::Feed::default());
        let sync = (synchronous == Synchronous::Full).then(|| syncer::wal_of(&path));
        let broken = syncer::Broken::default();
        writer::spawn(write, sync, rx, path.clone(), feed.clone(), broken.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writes: tx,
                reader: Mutex::new(reader),
                feed,
                broken,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Why the store refuses every write, once a sync of its log failed (until a restart).
    pub fn broken(&self) -> Option<&str> {
        self.inner.broken.get().map(String::as_str)
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let send = self.inner.writes.send(make(reply));
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            send.await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(WRITE_TIMEOUT)),
        }
    }

    /// Store `accept` durably (see [`Synchronous`]) in one transaction.
    pub async fn accept(&self, accept: Accept) -> Result<Accepted, StoreError> {
        self.write(|reply| writer::Command::Accept(accept, reply))
            .await
    }

    /// The service took these messages: remove them from the outbox and keep each one whose
    /// policy is given in its hub's history (broadcasts and user messages only), pruned to the
    /// policy. One request, all or nothing: on an error every message stays in the outbox.
    /// The history rows come from the messages in hand, so nothing is read back.
    pub async fn delivered<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a Pending, Option<HistoryPolicy>)>,
    ) -> Result<(), StoreError> {
        let removals = messages
            .into_iter()
            .map(|(p, policy)| Removal::new(p, policy))
            .collect::<Result<Vec<_>, _>>()?;
        if removals.is_empty() {
            return Ok(());
        }
        self.write(|reply| writer::Command::Delivered { removals, reply })
            .await
    }

    /// Drop idempotency keys older than `window` and fire records older than `fires_older`.
    pub async fn prune(&self, window: Duration, fires_older: Duration) -> Result<(), StoreError> {
        self.write(|reply| writer::Command::Prune {
            idempotency_window: window,
            fires_older,
            reply,
        })
        .await
    }

    /// Record a client's acknowledgement of a message, in the writer's group commit.
    pub async fn ack(&self, ack: NewAck) -> Result<AckOutcome, StoreError> {
        self.write(|reply| writer::Command::Ack(ack, reply)).await
    }

    /// The message `id` (hub, source) and its acknowledgements; None when herald does not
    /// know the id.
    pub async fn acks(&self, id: &str) -> Result<Option<MessageAcks>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let known: Option<(String, String)> = c
                .query_row(
                    "SELECT hub, source FROM messages WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((hub, source)) = known else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT connection, user, time_ms FROM acks WHERE id = ?1 ORDER BY time_ms, connection",
            )?;
            let rows = stmt.query_map([&id], |r| {
                Ok(AckEntry {
                    connection: r.get(0)?,
                    user: r.get(1)?,
                    time: rfc3339_ms(r.get(2)?),
                })
            })?;
            let acks = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(Some(MessageAcks {
                id,
                hub,
                source,
                acks,
            }))
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let conn = inner
                .reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&conn)
        });
        match tokio::time::timeout(WRITE_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout(WRITE_TIMEOUT)),
        }
    }

    /// The feed's epoch: read it before [`Store::pending`], and a [`Fed`] of the same epoch
    /// holds every message stored after that read.
    pub fn feed_epoch(&self) -> u64 {
        self.inner.feed.epoch()
    }

    /// Resolves once the writer has committed new outbox messages (at once if it did since
    /// the last wait): what wakes the outbox worker.
    pub fn stored(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.feed.arrived()
    }

    /// Up to `limit` messages from the feed, the ones stored most recently, after sequence
    /// number `after`, oldest first, without reading the table.
    pub fn fed(&self, after: i64, limit: usize) -> Fed {
        self.inner.feed.take(after, limit)
    }

    /// Up to `limit` pending messages after sequence number `after`, oldest first.
    pub async fn pending(&self, after: i64, limit: u32) -> Result<Vec<Pending>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, message, source, accepted_ms FROM outbox
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, id, message, source, accepted_ms) = row?;
                out.push(Pending {
                    seq,
                    id,
                    message: serde_json::from_str(&message)?,
                    source,
                    accepted_ms,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Outbox depth and the age of its oldest message.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.read(|c| {
            let (depth, oldest): (i64, Option<i64>) =
                c.query_row("SELECT count(*), min(accepted_ms) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok(OutboxStats {
                depth: depth.max(0) as u64,
                oldest_ms: oldest,
            })
        })
        .await
    }

    /// Messages kept in `hub`'s history.
    pub async fn history_len(&self, hub: &str) -> Result<u64, StoreError> {
        let hub = hub.to_ascii_lowercase();
        self.read(move |c| {
            let n: i64 =
                c.query_row("SELECT count(*) FROM history WHERE hub = ?1", [hub], |r| {
                    r.get(0)
                })?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// `hub`'s history after the message `after` (None: from the start), oldest first, at
    /// most `limit`: broadcasts, plus messages to `user` when given. `Ok(None)` when `after`
    /// is not (or no longer) in the history.
    pub async fn history(
        &self,
        hub: &str,
        after: Option<String>,
        user: Option<String>,
        limit: u32,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let hub = hub.to_ascii_lowercase();
        self.read(move |c| {
            let after_seq = match after {
                None => 0,
                Some(id) => {
                    let seq: Option<i64> = c
                        .query_row(
                            "SELECT seq FROM history WHERE id = ?1 AND hub = ?2",
                            params![id, hub],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match seq {
                        Some(seq) => seq,
                        None => return Ok(None),
                    }
                }
            };
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, time_ms, user, target, arguments FROM history
                 WHERE hub = ?1 AND seq > ?2 AND (user IS NULL OR user = ?3)
                 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![hub, after_seq, user, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, id, time_ms, user, target, arguments) = row?;
                out.push(HistoryEntry {
                    seq,
                    id,
                    time: rfc3339_ms(time_ms),
                    user,
                    target,
                    arguments: serde_json::from_str(&arguments)?,
                });
            }
            Ok(Some(out))
        })
        .await
    }

    /// The latest retained status under `key`, if any.
    pub async fn retained(&self, key: RetainKey) -> Result<Option<Retained>, StoreError> {
        self.read(move |c| {
            let row: Option<(String, i64, String)> = c
                .query_row(
                    "SELECT id, time_ms, message FROM retained WHERE source = ?1 AND key = ?2",
                    params![key.source, key.key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some((id, time_ms, message)) => Ok(Some(Retained {
                    id,
                    time_ms,
                    message: serde_json::from_str(&message)?,
                })),
            }
        })
        .await
    }

    /// Every retained status of `hub`, oldest first (sent to a new connection by client
    /// events).
    pub async fn retained_in_hub(&self, hub: &str) -> Result<Vec<Retained>, StoreError> {
        let hub = hub.to_ascii_lowercase();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, time_ms, message FROM retained WHERE hub = ?1 ORDER BY time_ms",
            )?;
            let rows = stmt.query_map([hub], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, time_ms, message) = row?;
                out.push(Retained {
                    id,
                    time_ms,
                    message: serde_json::from_str(&message)?,
                });
            }
            Ok(out)
        })
        .await
    }
}

/// RFC 3339 UTC with milliseconds, as templates' `now`.
pub fn rfc3339_ms(ms: i64) -> String {
    use chrono::{SecondsFormat, TimeZone, Utc};
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The user a message is kept in history for: `Some(None)` for a broadcast, `Some(user)` for
/// a user message, `None` for group and connection messages (not kept: membership changes
/// over time, so "who may read it later" has no answer).
pub(crate) fn history_audience(to: &Recipient) -> Option<Option<&str>> {
    match to {
        Recipient::All => Some(None),
        Recipient::User(u) => Some(Some(u)),
        Recipient::Group(_) | Recipient::Connection(_) => None,
    }
}

#[cfg(test)]
mod tests;
