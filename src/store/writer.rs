//! The store's one writer: a thread that owns the write connection and commits in groups. It
//! takes the first waiting request, then every request already queued behind it (up to
//! `BATCH`), runs each in its own savepoint (one bad request fails alone), commits once and
//! only then answers every caller. Under load many requests share one fsync, so durability
//! costs little throughput; alone, a request is committed at once.
//!
//! The writer never waits for the disk. It commits at SQLite's `synchronous = NORMAL` (the
//! write-ahead log written, not yet synced), gives the new messages to the outbox's feed at
//! once, answers what promises nothing (the outbox's removals, prunes) and, under
//! `synchronous: full`, hands the answers that promise durability to the syncer
//! (`syncer.rs`), which sends them once the log is on disk. So a message may reach its
//! clients before its 202, never a 202 before the disk has it; a power cut in between loses
//! a message nobody was told was kept (its sender, with no 202, sends again). The fan-out
//! that follows the feed does not queue the 202s behind all of it: it wakes its connections
//! a chunk at a time (`service::fanout`), so the syncer's answers get in between (a sync that
//! ends mid-burst still waits for the core; BENCHMARKS.md has what that costs).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::feed::{Feed, Stored};
use super::syncer::{self, Broken, SyncFn, Syncer};
use super::{Accept, Accepted, Pending, Removal, StoreError, now_ms};

/// Most requests committed in one transaction.
const BATCH: usize = 512;
/// How often a hub's history is checked for messages past its age (per hub, on deliveries).
const AGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the writer keeps of a hub's history between batches (it is the table's only writer).
#[derive(Debug, Default)]
struct HubHistory {
    /// Messages in it.
    count: u64,
    /// When it was last checked for messages past their age.
    age_checked: Option<std::time::Instant>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write request.
pub(super) enum Command {
    Accept(Accept, Reply<Accepted>),
    Delivered {
        removals: Vec<Removal>,
        reply: Reply<()>,
    },
    Prune {
        idempotency_window: Duration,
        fires_older: Duration,
        reply: Reply<()>,
    },
    Ack(super::NewAck, Reply<super::AckOutcome>),
}

/// An answer held back until the commit (and, for a promise, the sync).
#[derive(Debug)]
pub(super) enum Answer {
    Accepted(Reply<Accepted>, Result<Accepted, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Ack(
        Reply<super::AckOutcome>,
        Result<super::AckOutcome, StoreError>,
    ),
}

impl Answer {
    /// Whether it tells its caller something is kept (an accepted message, an
    /// acknowledgement): under `synchronous: full` it waits for the sync.
    fn is_promise(&self) -> bool {
        !matches!(self, Answer::Unit(..))
    }

    /// Answer with the outcome, unless `commit` (the commit, or the sync) failed.
    pub(super) fn send(self, commit: &Result<(), String>, path: &std::path::Path) {
        let failed = |e: &String| StoreError::Unusable {
            path: path.to_path_buf(),
            detail: format!("commit failed: {e}"),
        };
        match self {
            Answer::Accepted(reply, result) => {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(failed(e)),
                });
            }
            Answer::Unit(reply, result) => {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(failed(e)),
                });
            }
            Answer::Ack(reply, result) => {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(failed(e)),
                });
            }
        }
    }
}

/// Start the writer on `conn`; with `sync` (`synchronous: full`), promises are answered by a
/// syncer once `sync` took the log to disk.
pub(super) fn spawn(
    conn: Connection,
    sync: Option<SyncFn>,
    rx: mpsc::Receiver<Command>,
    path: PathBuf,
    feed: Arc<Feed>,
    broken: Broken,
) -> Result<(), StoreError> {
    let syncer = sync
        .map(|sync| syncer::spawn(sync, path.clone(), broken.clone()))
        .transpose()?;
    std::thread::Builder::new()
        .name("herald-store".into())
        .spawn(move || run(conn, syncer, rx, path, &feed, &broken))
        .map(|_| ())
        .map_err(|e| StoreError::Unusable {
            path: PathBuf::new(),
            detail: format!("cannot start the writer thread: {e}"),
        })
}

/// Serve requests until every `Store` handle is dropped.
fn run(
    mut conn: Connection,
    syncer: Option<Syncer>,
    mut rx: mpsc::Receiver<Command>,
    path: PathBuf,
    feed: &Feed,
    broken: &OnceLock<String>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Each hub's history as the writer knows it (it is the table's only writer): its count,
    // taken once and then kept up to date, so pruning to `keep` costs what it removes, and
    // when it was last checked for age.
    let mut hubs: HashMap<String, HubHistory> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Some(why) = broken.get() {
            // A sync failed: nothing written now could be vouched for.
            let e = Err(why.clone());
            for cmd in batch.drain(..) {
                refuse(cmd).send(&e, &path);
            }
            continue;
        }
        let (answers, committed, commit) = commit_batch(&mut conn, batch.drain(..), &mut hubs);
        if let Err(e) = &commit {
            tracing::error!(path = %path.display(), error = %e, "state database commit failed");
            // Rolled back: count again when next needed.
            hubs.clear();
        }
        let (owed, now): (Vec<Answer>, Vec<Answer>) = match (&syncer, &commit) {
            (Some(_), Ok(())) => answers.into_iter().partition(Answer::is_promise),
            _ => (Vec::new(), answers),
        };
        // Into the feed before anyone hears "stored": the worker finds them there.
        if commit.is_ok() {
            feed.push(committed);
        }
        // The promises to the syncer, which answers them once the log is on disk.
        if let Some(syncer) = &syncer
            && !owed.is_empty()
            && let Err(unsent) = syncer.promise(owed)
        {
            let e = Err("its sync thread has stopped".to_string());
            for answer in unsent {
                answer.send(&e, &path);
            }
        }
        for answer in now {
            answer.send(&commit, &path);
        }
    }
}

fn commit_batch(
    conn: &mut Connection,
    batch: impl Iterator<Item = Command>,
    hubs: &mut HashMap<String, HubHistory>,
) -> (Vec<Answer>, Vec<Stored>, Result<(), String>) {
    let mut answers = Vec::new();
    // The messages stored, in sequence order, with the size of their text (for the feed).
    let mut committed = Vec::new();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = e.to_string();
            for cmd in batch {
                answers.push(refuse(cmd));
            }
            return (answers, committed, Err(e));
        }
    };
    // Hubs whose history grew in this batch (by how many), pruned once at the end.
    let mut touched: BTreeMap<(String, u32, u64), u64> = BTreeMap::new();
    for cmd in batch {
        // Each request in its own savepoint: kept when it succeeded, rolled back otherwise.
        // Cached statements rather than rusqlite's `Savepoint`, which parses its SQL anew
        // for every request.
        if let Err(e) = run_cached(&tx, "SAVEPOINT request") {
            answers.push(fail(cmd, StoreError::Sql(e)));
            continue;
        }
        let kept = |ok: bool| {
            if !ok {
                let _ = run_cached(&tx, "ROLLBACK TO request");
            }
            let _ = run_cached(&tx, "RELEASE request");
        };
        let answer = match cmd {
            Command::Accept(accept, reply) => {
                let result = accept_one(&tx, accept).map(|(accepted, stored)| {
                    committed.extend(stored);
                    accepted
                });
                kept(result.is_ok());
                Answer::Accepted(reply, result)
            }
            Command::Delivered { removals, reply } => {
                let result = removals
                    .into_iter()
                    .try_for_each(|removal| delivered_one(&tx, removal, &mut touched));
                kept(result.is_ok());
                Answer::Unit(reply, result)
            }
            Command::Prune {
                idempotency_window,
                fires_older,
                reply,
            } => {
                let result = prune(&tx, idempotency_window, fires_older);
                kept(result.is_ok());
                Answer::Unit(reply, result)
            }
            Command::Ack(ack, reply) => {
                let result = ack_one(&tx, ack);
                kept(result.is_ok());
                Answer::Ack(reply, result)
            }
        };
        answers.push(answer);
    }
    for ((hub, keep, max_age_ms), added) in touched {
        if prune_history(&tx, &hub, keep, max_age_ms, added, hubs).is_err() {
            hubs.remove(&hub);
        }
    }
    let commit = tx.commit().map_err(|e| e.to_string());
    (answers, committed, commit)
}

/// Run one statement without parameters from the statement cache.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn refuse(cmd: Command) -> Answer {
    fail(cmd, StoreError::Closed)
}

/// The answer for a request that could not run.
fn fail(cmd: Command, e: StoreError) -> Answer {
    match cmd {
        Command::Accept(_, reply) => Answer::Accepted(reply, Err(e)),
        Command::Delivered { reply, .. } | Command::Prune { reply, .. } => {
            Answer::Unit(reply, Err(e))
        }
        Command::Ack(_, reply) => Answer::Ack(reply, Err(e)),
    }
}

/// Store one request; also the messages stored, as the outbox will read them.
fn accept_one(conn: &Connection, accept: Accept) -> Result<(Accepted, Vec<Stored>), StoreError> {
    let now = now_ms();
    if let Some(idem) = &accept.idempotency {
        let seen: Option<(String, i64)> = conn
            .prepare_cached(
                "SELECT answer, created_ms FROM idempotency WHERE scope = ?1 AND key = ?2",
            )?
            .query_row(params![idem.scope, idem.key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((answer, created)) = seen
            && now.saturating_sub(created) < idem.window.as_millis() as i64
        {
            return Ok((Accepted::Repeat(answer), Vec::new()));
        }
    }
    if let Some(fire) = &accept.fire {
        let inserted = conn
            .prepare_cached("INSERT OR IGNORE INTO fires (schedule, instant_ms) VALUES (?1, ?2)")?
            .execute(params![fire.schedule, fire.instant_ms])?;
        if inserted == 0 {
            return Ok((Accepted::FireSeen, Vec::new()));
        }
    }
    let mut stored = Vec::with_capacity(accept.messages.len());
    for m in accept.messages {
        let text = serde_json::to_string(&m.message)?;
        conn.prepare_cached(
            "INSERT INTO outbox (id, hub, message, source, accepted_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![m.id, m.message.hub, text, m.source, now])?;
        let seq = conn.last_insert_rowid();
        // Who sent it and into which hub, for acknowledgements (kept `MESSAGES_KEPT`).
        if m.for_acks {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO messages (id, hub, source, accepted_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![m.id, m.message.hub, m.source, now])?;
        }
        if let Some(key) = &m.retain {
            conn.prepare_cached(
                "INSERT INTO retained (source, key, hub, id, time_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, key) DO UPDATE SET
                   hub = excluded.hub, id = excluded.id, time_ms = excluded.time_ms,
                   message = excluded.message",
            )?
            .execute(params![
                key.source,
                key.key,
                m.message.hub.to_ascii_lowercase(),
                m.id,
                now,
                text
            ])?;
        }
        let bytes = text.len();
        let pending = Pending {
            seq,
            id: m.id,
            message: m.message,
            source: m.source,
            accepted_ms: now,
        };
        stored.push((pending, bytes));
    }
    if let Some(idem) = &accept.idempotency {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (scope, key, answer, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![idem.scope, idem.key, idem.answer, now])?;
    }
    let seqs = stored.iter().map(|(p, _)| p.seq).collect();
    Ok((Accepted::Stored(seqs), stored))
}

fn delivered_one(
    conn: &Connection,
    removal: Removal,
    touched: &mut BTreeMap<(String, u32, u64), u64>,
) -> Result<(), StoreError> {
    let removed = conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
        .execute([removal.seq])?;
    // Nothing removed: already delivered (a retry racing a restart), already in history.
    let (Some((policy, row)), 1..) = (removal.history, removed) else {
        return Ok(());
    };
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO history (seq, id, hub, user, time_ms, target, arguments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            removal.seq,
            row.id,
            row.hub,
            row.user,
            row.time_ms,
            row.target,
            row.arguments
        ])?;
    *touched
        .entry((row.hub, policy.keep, policy.max_age.as_millis() as u64))
        .or_default() += inserted as u64;
    Ok(())
}

/// Keep `hub`'s history within `keep` messages and `max_age_ms`, `added` having just been
/// inserted. The count comes from `hubs` (one `count(*)` the first time), so a prune costs
/// what it removes rather than a walk over `keep` rows. Age: at most every
/// `AGE_CHECK_EVERY`, the oldest message is looked up and the delete runs only when it is
/// past the age (messages are stored in time order, so it is the first to go).
fn prune_history(
    conn: &Connection,
    hub: &str,
    keep: u32,
    max_age_ms: u64,
    added: u64,
    hubs: &mut HashMap<String, HubHistory>,
) -> Result<(), StoreError> {
    let known = match hubs.get_mut(hub) {
        Some(known) => {
            known.count += added;
            known
        }
        None => {
            // Counted now, with this batch's messages already in.
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM history WHERE hub = ?1")?
                .query_row([hub], |r| r.get(0))?;
            hubs.entry(hub.to_string()).or_insert(HubHistory {
                count: n.max(0) as u64,
                age_checked: None,
            })
        }
    };
    if known
        .age_checked
        .is_none_or(|at| at.elapsed() >= AGE_CHECK_EVERY)
    {
        known.age_checked = Some(std::time::Instant::now());
        let cutoff = now_ms().saturating_sub(max_age_ms.min(i64::MAX as u64) as i64);
        let oldest: Option<i64> = conn
            .prepare_cached("SELECT time_ms FROM history WHERE hub = ?1 ORDER BY seq LIMIT 1")?
            .query_row([hub], |r| r.get(0))
            .optional()?;
        if oldest.is_some_and(|t| t < cutoff) {
            let gone = conn
                .prepare_cached("DELETE FROM history WHERE hub = ?1 AND time_ms < ?2")?
                .execute(params![hub, cutoff])?;
            known.count = known.count.saturating_sub(gone as u64);
        }
    }
    if known.count > u64::from(keep) {
        let excess = known.count - u64::from(keep);
        let gone = conn
            .prepare_cached(
                "DELETE FROM history WHERE seq IN
                   (SELECT seq FROM history WHERE hub = ?1 ORDER BY seq LIMIT ?2)",
            )?
            .execute(params![hub, i64::try_from(excess).unwrap_or(i64::MAX)])?;
        known.count = known.count.saturating_sub(gone as u64);
    }
    Ok(())
}

fn prune(conn: &Connection, window: Duration, fires_older: Duration) -> Result<(), StoreError> {
    let now = now_ms();
    conn.prepare_cached("DELETE FROM idempotency WHERE created_ms < ?1")?
        .execute([now.saturating_sub(window.as_millis() as i64)])?;
    conn.prepare_cached("DELETE FROM fires WHERE instant_ms < ?1")?
        .execute([now.saturating_sub(fires_older.as_millis() as i64)])?;
    let cutoff = now.saturating_sub(super::MESSAGES_KEPT.as_millis() as i64);
    conn.prepare_cached(
        "DELETE FROM acks WHERE id IN (SELECT id FROM messages WHERE accepted_ms < ?1)",
    )?
    .execute([cutoff])?;
    conn.prepare_cached("DELETE FROM messages WHERE accepted_ms < ?1")?
        .execute([cutoff])?;
    Ok(())
}

/// Record one acknowledgement of a message herald sent; a repeat by the same connection
/// keeps the first time.
fn ack_one(conn: &Connection, ack: super::NewAck) -> Result<super::AckOutcome, StoreError> {
    let known: Option<(String, String)> = conn
        .prepare_cached("SELECT hub, source FROM messages WHERE id = ?1")?
        .query_row([&ack.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((hub, source)) = known else {
        return Ok(super::AckOutcome::UnknownMessage);
    };
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO acks (id, connection, user, time_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![ack.id, ack.connection, ack.user, now_ms()])?;
    Ok(super::AckOutcome::Recorded {
        hub,
        source,
        first: inserted > 0,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::{Message, Recipient};
    use crate::store::NewMessage;

    fn accept(id: &str) -> Accept {
        Accept {
            messages: vec![NewMessage {
                id: id.into(),
                message: Message {
                    hub: "hub".into(),
                    to: Recipient::All,
                    target: "t".into(),
                    arguments: Vec::new(),
                    excluded: Vec::new(),
                },
                source: "route:r".into(),
                retain: None,
                for_acks: false,
            }],
            ..Accept::default()
        }
    }

    /// What the feed has within 10 s.
    fn fed_soon(feed: &Feed) -> crate::store::feed::Fed {
        let started = std::time::Instant::now();
        loop {
            let fed = feed.take(0, 10);
            if !fed.messages.is_empty() || started.elapsed() > Duration::from_secs(10) {
                return fed;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A writer on a fresh database whose syncs run `sync` (given the database's path).
    struct Started {
        _dir: tempfile::TempDir,
        tx: mpsc::Sender<Command>,
        feed: Arc<Feed>,
        broken: Broken,
    }

    fn start(sync: impl FnOnce(&std::path::Path) -> SyncFn) -> Started {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let conn = super::super::schema::open(&path).expect("open");
        let sync = sync(&path);
        let (tx, rx) = mpsc::channel(8);
        let feed = Arc::new(Feed::default());
        let broken = Broken::default();
        spawn(conn, Some(sync), rx, path, feed.clone(), broken.clone()).expect("spawn");
        Started {
            _dir: dir,
            tx,
            feed,
            broken,
        }
    }

    /// A real sync of the log that first waits for the test's release (a held disk).
    fn held(gate: std::sync::mpsc::Receiver<()>) -> impl FnOnce(&std::path::Path) -> SyncFn {
        move |path| {
            let mut real = syncer::wal_of(path);
            Box::new(move || {
                gate.recv_timeout(Duration::from_secs(10))
                    .map_err(std::io::Error::other)?;
                real()
            })
        }
    }

    fn send_accept(w: &Started, id: &str) -> oneshot::Receiver<Result<Accepted, StoreError>> {
        let (reply, answer) = oneshot::channel();
        w.tx.blocking_send(Command::Accept(accept(id), reply))
            .expect("send");
        answer
    }

    #[test]
    fn the_outbox_gets_a_message_before_its_sync_and_the_caller_after() {
        let (release, gate) = std::sync::mpsc::channel();
        let w = start(held(gate));
        let mut answer = send_accept(&w, "a");
        // The disk is held: the feed has the message, the caller has no answer yet.
        let fed = fed_soon(&w.feed);
        assert_eq!(fed.messages.len(), 1, "the outbox has it before the sync");
        assert_eq!(fed.messages[0].id, "a");
        assert!(answer.try_recv().is_err(), "no 202 before the sync");

        // What promises nothing is answered while the sync is still held.
        let (reply, removed) = oneshot::channel();
        w.tx.blocking_send(Command::Prune {
            idempotency_window: Duration::from_secs(60),
            fires_older: Duration::from_secs(60),
            reply,
        })
        .expect("send");
        removed.blocking_recv().expect("answer").expect("pruned");
        assert!(answer.try_recv().is_err(), "still waiting for the disk");

        release.send(()).expect("release");
        let accepted = answer.blocking_recv().expect("answer").expect("kept");
        assert!(matches!(accepted, Accepted::Stored(seqs) if seqs.len() == 1));
    }

    #[test]
    fn after_a_failed_sync_nothing_more_is_stored() {
        let failing = |_: &std::path::Path| -> SyncFn {
            Box::new(|| Err(std::io::Error::from_raw_os_error(5)))
        };
        let w = start(failing);
        let e = send_accept(&w, "a")
            .blocking_recv()
            .expect("answer")
            .expect_err("not kept");
        assert!(e.to_string().contains("could not be synced"), "{e}");
        assert!(w.broken.get().is_some());
        // Committed, so the outbox may still send it (its sender got a 503).
        assert_eq!(fed_soon(&w.feed).messages.len(), 1);

        let e = send_accept(&w, "b")
            .blocking_recv()
            .expect("answer")
            .expect_err("refused");
        assert!(e.to_string().contains("until it is restarted"), "{e}");
        assert!(
            w.feed.take(0, 10).messages.is_empty(),
            "nothing more stored"
        );
    }

    #[test]
    fn under_normal_the_outbox_has_it_before_the_caller_hears() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let conn = super::super::schema::open(&path).expect("open");
        let (tx, rx) = mpsc::channel(8);
        let feed = Arc::new(Feed::default());
        spawn(conn, None, rx, path, feed.clone(), Broken::default()).expect("spawn");
        for id in ["a", "b"] {
            let (reply, answer) = oneshot::channel();
            tx.blocking_send(Command::Accept(accept(id), reply))
                .expect("send");
            answer.blocking_recv().expect("answer").expect("stored");
            assert_eq!(feed.take(0, 10).messages.len(), 1, "fed before the answer");
        }
    }
}
