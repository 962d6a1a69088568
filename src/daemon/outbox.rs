//! The outbox worker: delivers the messages the store holds (accepted by routes and
//! schedules, `store::Store::accept`) through the REST client, in order per hub, and removes
//! each one (keeping it in its hub's history) only once the service took it. A service that is
//! unreachable, frozen or throttling is retried with backoff for as long as it takes,
//! including across restarts of herald: what is in the store is delivered when it is back.
//!
//! Toward the embedded service, a hub's waiting messages go up to 64 per request
//! (`:sendBatch`, delivered in order), and delivery is exactly once: each message carries
//! its id, and the service drops an id it has seen. Toward Azure it is at least once: a crash between
//! Azure's answer and the removal from the outbox sends that message again on restart.
//!
//! Where the worker reads: the table, until a round shows it has caught up (the read held
//! everything waiting and all of it was delivered); from then on the store's feed, which
//! hands over what the writer commits without reading it back. Any failed round, a feed that
//! dropped messages (its epoch moved), or a second with an empty feed sends it back to the
//! table, so the table stays the record and the feed only a shortcut.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::signalr::rest::{RestClient, RestError};
use crate::store::{Accept, Accepted, HistoryPolicy, Pending, Store, StoreError};
use crate::telemetry::metrics as m;

/// Messages read from the store per round.
const ROUND: u32 = 512;
/// Most messages per `:sendBatch` request (embedded service only).
const BATCH_MESSAGES: usize = 64;
/// The first and the longest pause after a failed round.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How often the worker looks at the store without being woken (a safety net).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the outbox and history gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(2);

/// Where routes and schedules hand messages over: the store (whose writer wakes the worker
/// on each commit). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    store: Store,
    /// The cluster, when clustered: fire locks and idempotency keys are cluster-wide.
    cluster: Option<crate::cluster::Cluster>,
}

impl Outbox {
    pub fn new(store: Store) -> Outbox {
        Outbox {
            store,
            cluster: None,
        }
    }

    /// Take schedule-fire locks and idempotency keys in the cluster's Redis first.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Outbox {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster this node belongs to, if any (health reports it).
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.as_ref()
    }

    /// The state database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// History and retained reads: cluster-wide from Redis when clustered, else the store.
    pub fn shared(&self) -> crate::cluster::Shared {
        crate::cluster::Shared::new(self.store.clone(), self.cluster.clone())
    }

    /// Store `accept` durably (the commit wakes the worker). Once this returns `Stored`, the
    /// messages are delivered even if herald dies next.
    pub async fn accept(&self, accept: Accept) -> Result<Accepted, StoreError> {
        if let Some(cluster) = &self.cluster
            && let Some(seen) = crate::cluster::shared_accept(cluster, &accept).await
        {
            return Ok(seen);
        }
        let retained: Vec<_> = match &self.cluster {
            Some(_) => accept
                .messages
                .iter()
                .filter_map(|m| Some((m.retain.clone()?, m.id.clone(), m.message.clone())))
                .collect(),
            None => Vec::new(),
        };
        let accepted = self.store.accept(accept).await?;
        if matches!(accepted, Accepted::Stored(_))
            && let Some(cluster) = &self.cluster
            && let Err(error) = cluster
                .keep_retained(&retained, crate::store::now_ms())
                .await
        {
            tracing::warn!(%error, "cluster: retained status kept on this node only");
        }
        Ok(accepted)
    }
}

/// How often old idempotency keys and fire records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Fire records are kept this long (longer than any catch-up after a restart).
const FIRES_KEPT: Duration = Duration::from_secs(86_400);

/// What the worker reads from the live config: the hubs that keep history, by lowercased
/// name, with their policy.
pub type HistoryPolicies = Arc<dyn Fn() -> BTreeMap<String, HistoryPolicy> + Send + Sync>;

/// What became of one round.
#[derive(Debug, Default, PartialEq, Eq)]
struct Round {
    delivered: usize,
    /// Some hub stopped at a message the service did not take (it is retried).
    failed: bool,
    /// The longest wait the service asked for (`Retry-After`), if any.
    retry_after: Option<Duration>,
}

/// Deliver until `shutdown`. Returns when shutdown is requested; an undelivered message stays
/// in the store for the next start.
pub async fn run(
    outbox: Outbox,
    rest: RestClient,
    history: HistoryPolicies,
    idempotency_window: Arc<dyn Fn() -> Duration + Send + Sync>,
    shutdown: CancellationToken,
) {
    let Outbox { store, cluster } = outbox;
    let mut backoff = BACKOFF_MIN;
    let mut last_stats = std::time::Instant::now() - STATS_EVERY;
    let mut last_prune = std::time::Instant::now() - PRUNE_EVERY;
    // Caught up at this feed epoch: everything waiting after `delivered_to` is in the feed.
    let mut caught_up: Option<u64> = None;
    let mut delivered_to: i64 = 0;
    let mut last_table_read = std::time::Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            if let Err(error) = store.prune(idempotency_window(), FIRES_KEPT).await {
                tracing::warn!(%error, "outbox: pruning old idempotency keys failed");
            }
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = std::time::Instant::now();
            publish_stats(&store, history().keys()).await;
        }
        // The table's read carries the feed epoch seen just before it.
        let (batch, read_at) = match caught_up {
            Some(epoch) => {
                let fed = store.fed(delivered_to, ROUND as usize);
                let dry = fed.messages.is_empty() && last_table_read.elapsed() >= IDLE_POLL;
                if fed.epoch != epoch || dry {
                    caught_up = None;
                    continue;
                }
                (fed.messages, None)
            }
            None => {
                let epoch = store.feed_epoch();
                last_table_read = std::time::Instant::now();
                match store.pending(0, ROUND).await {
                    Ok(batch) => (batch, Some(epoch)),
                    Err(error) => {
                        tracing::error!(%error, "outbox: cannot read the state database");
                        if pause(backoff, &store, &shutdown, false).await {
                            return;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        if batch.is_empty() {
            backoff = BACKOFF_MIN;
            if read_at.is_some() {
                caught_up = read_at;
            }
            if pause(IDLE_POLL, &store, &shutdown, true).await {
                return;
            }
            continue;
        }
        let whole_table = batch.len() < ROUND as usize;
        let last_seq = batch.last().map_or(0, |p| p.seq);
        let round =
            deliver_round(&store, cluster.as_ref(), &rest, &history, batch, &shutdown).await;
        if round.failed {
            caught_up = None;
        } else {
            delivered_to = delivered_to.max(last_seq);
            if whole_table && read_at.is_some() {
                caught_up = read_at;
            }
        }
        if round.failed {
            let wait = round
                .retry_after
                .map_or(backoff, |asked| asked.min(BACKOFF_MAX).max(backoff));
            if pause(wait, &store, &shutdown, false).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        } else {
            backoff = BACKOFF_MIN;
        }
    }
}

/// Sleep for `d` (or until woken, when `wakeable`) or shutdown; true on shutdown.
async fn pause(d: Duration, store: &Store, shutdown: &CancellationToken, wakeable: bool) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = store.stored(), if wakeable => false,
        () = shutdown.cancelled() => true,
    }
}

/// Deliver one batch: hubs in parallel, each hub's messages one after another, stopping a hub
/// at its first failure so that its order holds.
async fn deliver_round(
    store: &Store,
    cluster: Option<&crate::cluster::Cluster>,
    rest: &RestClient,
    history: &HistoryPolicies,
    batch: Vec<Pending>,
    shutdown: &CancellationToken,
) -> Round {
    let mut by_hub: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    for p in batch {
        by_hub
            .entry(p.message.hub.to_ascii_lowercase())
            .or_default()
            .push(p);
    }
    let policies = history();
    let hubs = by_hub.into_iter().map(|(hub, messages)| {
        let policy = policies.get(&hub).copied();
        async move {
            let mut round = Round::default();
            // What the service took, removed from the outbox together at the end of the hub's
            // round: the removals queue at once and share one commit (one fsync), instead of
            // one commit per message. A crash before that commit sends them again on restart:
            // the embedded service drops the repeats by message id.
            let mut taken: Vec<(Pending, Option<HistoryPolicy>)> = Vec::new();
            let mut waiting: VecDeque<Pending> = messages.into();
            // A service that takes `:sendBatch` gets up to BATCH_MESSAGES per request; after
            // a batch it refuses for good, the round goes one by one, so that each message
            // gets its own verdict.
            let mut batching = rest.batch_sends();
            while !waiting.is_empty() {
                if shutdown.is_cancelled() {
                    round.failed = true;
                    break;
                }
                if batching && waiting.len() > 1 {
                    let n = waiting.len().min(BATCH_MESSAGES);
                    let chunk: Vec<Pending> = waiting.drain(..n).collect();
                    match send_batch(rest, &hub, &chunk).await {
                        Sent::Delivered => taken.extend(chunk.into_iter().map(|p| (p, policy))),
                        Sent::Dropped => {
                            batching = false;
                            for p in chunk.into_iter().rev() {
                                waiting.push_front(p);
                            }
                        }
                        Sent::Retry(asked) => {
                            round.failed = true;
                            round.retry_after = asked;
                            break;
                        }
                    }
                    continue;
                }
                let Some(p) = waiting.pop_front() else { break };
                match send(rest, &p).await {
                    Sent::Delivered => taken.push((p, policy)),
                    Sent::Dropped => taken.push((p, None)),
                    Sent::Retry(asked) => {
                        round.failed = true;
                        round.retry_after = asked;
                        break;
                    }
                }
            }
            if let Err(error) = store
                .delivered(taken.iter().map(|(p, policy)| (p, *policy)))
                .await
            {
                // Sent, but still in the outbox: sent again later (and dropped as repeats by
                // the embedded service).
                tracing::error!(messages = taken.len(), %error, "outbox: delivered but not removed");
                round.failed = true;
                return round;
            }
            round.delivered += taken.len();
            for (p, policy) in &taken {
                // Clustered: the delivering node also keeps the entry in the shared history.
                if let (Some(cluster), Some(policy)) = (cluster, policy)
                    && let Err(error) = cluster
                        .keep_history(&p.id, p.accepted_ms, &p.message, *policy)
                        .await
                {
                    tracing::warn!(id = %p.id, %error, "cluster: history entry kept on this node only");
                }
            }
            round
        }
    });
    let rounds = futures_util::future::join_all(hubs).await;
    Round {
        delivered: rounds.iter().map(|r| r.delivered).sum(),
        failed: rounds.iter().any(|r| r.failed),
        retry_after: rounds.iter().filter_map(|r| r.retry_after).max(),
    }
}

enum Sent {
    /// The service took it.
    Delivered,
    /// The service refused it for good; it leaves the outbox without entering history.
    Dropped,
    /// Not taken; the service's `Retry-After`, when it sent one.
    Retry(Option<Duration>),
}

/// Send `chunk` (messages of `hub`, in order) in one `:sendBatch`; a refusal for good is
/// `Dropped` for the whole chunk (the caller then sends its messages one by one).
async fn send_batch(rest: &RestClient, hub: &str, chunk: &[Pending]) -> Sent {
    let started = std::time::Instant::now();
    let items: Vec<(&crate::message::Message, &str)> =
        chunk.iter().map(|p| (&p.message, p.id.as_str())).collect();
    let result = rest.send_batch(hub, &items).await;
    metrics::histogram!(m::REST_REQUEST_DURATION, "operation" => "send_batch")
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            for p in chunk {
                count(p, "sent");
            }
            Sent::Delivered
        }
        Err(error) if permanent(&error) => {
            let cause = crate::daemon::delivery::full_cause(&error);
            tracing::warn!(hub, messages = chunk.len(), error = %cause,
                "outbox: the service refused a batch; sending its messages one by one");
            Sent::Dropped
        }
        Err(error) => {
            let cause = crate::daemon::delivery::full_cause(&error);
            tracing::warn!(hub, messages = chunk.len(), error = %cause,
                "outbox: the service did not take a batch; retrying");
            metrics::counter!(m::OUTBOX_RETRIES).increment(1);
            Sent::Retry(error.retry_after())
        }
    }
}

/// Count `p` in `herald_messages_total` with `outcome`.
fn count(p: &Pending, outcome: &'static str) {
    let source_kind = p.source.split(':').next().unwrap_or("route").to_string();
    metrics::counter!(m::MESSAGES, "hub" => p.message.hub.clone(),
        "to" => p.message.to.kind(), "source" => source_kind, "outcome" => outcome)
    .increment(1);
}

async fn send(rest: &RestClient, p: &Pending) -> Sent {
    let started = std::time::Instant::now();
    let result = rest.send_with_id(&p.message, Some(&p.id)).await;
    metrics::histogram!(m::REST_REQUEST_DURATION, "operation" => "send")
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            count(p, "sent");
            Sent::Delivered
        }
        Err(error) if permanent(&error) => {
            // The service will never take it: keep the rest flowing, and say so loudly.
            let cause = crate::daemon::delivery::full_cause(&error);
            tracing::error!(id = %p.id, source = %p.source, hub = %p.message.hub, error = %cause,
                "outbox: the service refused the message for good; dropped");
            count(p, "refused");
            metrics::counter!(m::OUTBOX_DROPPED).increment(1);
            Sent::Dropped
        }
        Err(error) => {
            let cause = crate::daemon::delivery::full_cause(&error);
            tracing::warn!(id = %p.id, hub = %p.message.hub, error = %cause,
                "outbox: the service did not take the message; retrying");
            metrics::counter!(m::OUTBOX_RETRIES).increment(1);
            Sent::Retry(error.retry_after())
        }
    }
}

/// Refresh the outbox gauges, and the history size of `hubs`.
async fn publish_stats(store: &Store, hubs: impl Iterator<Item = &String>) {
    if let Ok(stats) = store.outbox_stats().await {
        metrics::gauge!(m::OUTBOX_DEPTH).set(stats.depth as f64);
        let age = stats
            .oldest_ms
            .map(|t| (crate::store::now_ms() - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!(m::OUTBOX_OLDEST_AGE).set(age);
    }
    for hub in hubs {
        if let Ok(n) = store.history_len(hub).await {
            metrics::gauge!(m::HISTORY_MESSAGES, "hub" => hub.clone()).set(n as f64);
        }
    }
}

/// Errors that no retry can fix: the message itself is wrong for the service.
fn permanent(e: &RestError) -> bool {
    match e {
        RestError::TooLarge { .. }
        | RestError::InvalidArgument(_)
        | RestError::Unsupported { .. } => true,
        RestError::Status { status, .. } => {
            status.is_client_error()
                && !matches!(status.as_u16(), 401 | 403 | 404 | 408 | 409 | 429)
        }
        RestError::Transport { .. } | RestError::Token(_) | RestError::Client(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Recipient};
    use crate::signalr::ServiceEndpoint;
    use crate::signalr::rest::RestOptions;
    use crate::store::{Accept, NewMessage, Synchronous};
    use axum::http::StatusCode;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

    /// A stand-in service that refuses the first `fail` sends with 503 and records the rest.
    async fn stand_in(fail: usize) -> (std::net::SocketAddr, Seen) {
        let calls = AtomicUsize::new(0);
        stand_in_refusing(move || calls.fetch_add(1, Ordering::SeqCst) < fail).await
    }

    /// A stand-in service that answers 503 while `refuse()` says so and records the rest.
    async fn stand_in_refusing(
        refuse: impl Fn() -> bool + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let refuse = Arc::new(refuse);
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let record = record.clone();
            let refuse = refuse.clone();
            async move {
                if refuse() {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let value = serde_json::from_slice(&body).unwrap_or_default();
                record.lock().unwrap().push(value);
                StatusCode::ACCEPTED
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    fn client(addr: std::net::SocketAddr) -> RestClient {
        crate::install_crypto();
        let cs = format!(
            "Endpoint=http://127.0.0.1;Port={};AccessKey=outbox-test-access-key-0123456789;Version=1.0;",
            addr.port()
        );
        let endpoint = ServiceEndpoint::from_connection_string(&cs).unwrap();
        let options = RestOptions {
            max_retries: 0,
            ..RestOptions::default()
        };
        RestClient::new(endpoint, options).unwrap()
    }

    #[tokio::test]
    async fn delivers_in_order_after_failures_and_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
        store.accept(numbered(0, 5)).await.unwrap();
        let (addr, seen) = stand_in(3).await;
        let stop = CancellationToken::new();
        let policy = HistoryPolicy {
            keep: 10,
            max_age: Duration::from_secs(60),
        };
        let worker = tokio::spawn(run(
            Outbox::new(store.clone()),
            client(addr),
            Arc::new(move || BTreeMap::from([("hub".to_string(), policy)])),
            Arc::new(|| Duration::from_secs(60)),
            stop.clone(),
        ));
        drained(&store).await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(sent(&seen), numbers(0..5));
        let history = store.history("hub", None, None, 10).await.unwrap().unwrap();
        assert_eq!(history.len(), 5);
    }

    /// The first argument of each message the stand-in took, in order.
    fn sent(seen: &Seen) -> Vec<serde_json::Value> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|v| v["arguments"][0].clone())
            .collect()
    }

    fn numbers(range: std::ops::Range<usize>) -> Vec<serde_json::Value> {
        range.map(|n| serde_json::json!(n)).collect()
    }

    fn numbered(from: usize, n: usize) -> Accept {
        let messages = (from..from + n)
            .map(|i| NewMessage {
                id: format!("m{i}"),
                message: Message {
                    hub: "hub".into(),
                    to: Recipient::All,
                    target: "t".into(),
                    arguments: vec![serde_json::json!(i)],
                    excluded: Vec::new(),
                },
                source: "route:r".into(),
                retain: None,
                for_acks: false,
            })
            .collect();
        Accept {
            messages,
            ..Accept::default()
        }
    }

    async fn drained(store: &Store) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while store.outbox_stats().await.unwrap().depth > 0 {
            assert!(tokio::time::Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// From the feed once caught up, back to the table when the service fails and the feed
    /// overflows behind it, and to the feed again: every message once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn feed_and_table_hand_over_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, seen) = {
            let down = down.clone();
            stand_in_refusing(move || down.load(Ordering::SeqCst)).await
        };
        let outbox = Outbox::new(store.clone());
        let stop = CancellationToken::new();
        let worker = tokio::spawn(run(
            outbox.clone(),
            client(addr),
            Arc::new(BTreeMap::new),
            Arc::new(|| Duration::from_secs(60)),
            stop.clone(),
        ));
        outbox.accept(numbered(0, 3)).await.unwrap();
        drained(&store).await;
        // Caught up: these come through the feed.
        for i in 0..3 {
            outbox.accept(numbered(3 + i * 2, 2)).await.unwrap();
        }
        drained(&store).await;
        // The service goes away; more than the feed holds piles up behind it.
        down.store(true, Ordering::SeqCst);
        let mut next = 9;
        for _ in 0..10 {
            outbox.accept(numbered(next, 500)).await.unwrap();
            next += 500;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.outbox_stats().await.unwrap().depth > 4096);
        down.store(false, Ordering::SeqCst);
        drained(&store).await;
        outbox.accept(numbered(next, 3)).await.unwrap();
        next += 3;
        drained(&store).await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(sent(&seen), numbers(0..next));
    }
}
