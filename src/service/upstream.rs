//! Serverless upstream, the sending side (facts §5): for the first [`UpstreamTemplate`] that
//! matches, POST a client's `connected` and `disconnected` events and each of its
//! Invocations, with the `X-ASRS-*` headers and signature of [`crate::signalr::upstream`], and
//! turn the answer to an Invocation with an `invocationId` into the client's Completion.
//!
//! Bounds, so that a dead or slow upstream costs only its own events:
//!
//! - Every connection has one lane that sends its events in order (`connected`, its
//!   invocations, `disconnected`), as ASP.NET Core runs one invocation per client at a time.
//!   A lane's task runs only while it has events and ends when they are sent, so an idle
//!   connection holds no task and no channel. The connection's reader only queues: it
//!   never waits on the upstream.
//! - Per hub, at most `upstream_concurrency` POSTs are in flight (a semaphore) and at most
//!   `upstream_concurrency + upstream_queue` events are admitted (sent or waiting); the
//!   per-connection lanes are unbounded only because admission bounds their sum.
//!   An event past the bound is not queued: a connection event is dropped and counted, an
//!   invocation with an id gets a Completion error at once.
//! - Every POST has the upstream timeout (connect, headers and body), and an answer is read
//!   up to 16 MB.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Shared;
use super::connection::{Connection, Frame, Outgoing};
use super::metrics::{self as service_metrics, UpstreamOutcome};
use crate::signalr::protocol::{CompletionResult, Headers, HubMessage, Protocol};
use crate::signalr::upstream::{self as wire, UpstreamTemplate};

/// Idle keep-alive connections kept per upstream host, and for how long.
const IDLE_CONNECTIONS: usize = 8;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest upstream answer forwarded to a client (the emulator's limit).
pub(crate) const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The Completion error for an invocation no upstream takes.
pub(crate) const NO_UPSTREAM_ERROR: &str =
    "Client invocations are not supported in serverless mode";
/// The Completion error for an invocation refused because the hub's upstream queue is full.
pub(crate) const QUEUE_FULL_ERROR: &str = "Invocation failed, the upstream queue is full.";
pub(crate) const TOO_LARGE_ERROR: &str = "Invocation failed, response too large.";
pub(crate) const TIMEOUT_ERROR: &str = "Invocation failed, the upstream timed out.";
pub(crate) const UNREACHABLE_ERROR: &str = "Invocation failed, the upstream could not be reached.";

/// What the upstream is told about a client, fixed when the connection is created.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientInfo {
    /// `type: value`, one per claim of the client's token (`X-ASRS-User-Claims`).
    pub(crate) claims: Vec<String>,
    /// The connect query string with its leading `?`, `access_token` removed; empty when
    /// there is none (`X-ASRS-Client-Query`).
    pub(crate) query: String,
}

/// The upstream sender of one service; `None` in [`Shared`] when no template is configured.
pub(crate) struct Upstream {
    templates: Vec<UpstreamTemplate>,
    http: reqwest::Client,
    keys: Vec<String>,
    concurrency: usize,
    admit_limit: usize,
    /// One gate per (lowercased) hub, created on first use and kept (a hub name is small).
    /// A std `Mutex`: only held to look a gate up, never across an `.await`.
    hubs: Mutex<HashMap<String, Arc<Gate>>>,
}

/// A hub's bound: `running` limits POSTs in flight, `admitted` counts events sent or waiting.
struct Gate {
    running: Semaphore,
    admitted: AtomicUsize,
    limit: usize,
}

/// One admitted event; dropping it (sent, failed or abandoned) frees its place.
struct Admitted(Arc<Gate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(self.clone()))
    }
}

/// An event for a connection's worker.
enum Event {
    Connected,
    Disconnected(Option<String>),
    Invocation {
        target: String,
        invocation_id: Option<String>,
        body: Vec<u8>,
    },
}

impl Event {
    fn category(&self) -> &'static str {
        match self {
            Event::Connected | Event::Disconnected(_) => wire::CATEGORY_CONNECTIONS,
            Event::Invocation { .. } => wire::CATEGORY_MESSAGES,
        }
    }

    fn name(&self) -> &str {
        match self {
            Event::Connected => wire::EVENT_CONNECTED,
            Event::Disconnected(_) => wire::EVENT_DISCONNECTED,
            Event::Invocation { target, .. } => target,
        }
    }

    /// The `event` label of the dropped counter.
    fn label(&self) -> &'static str {
        match self {
            Event::Connected => wire::EVENT_CONNECTED,
            Event::Disconnected(_) => wire::EVENT_DISCONNECTED,
            Event::Invocation { .. } => "invocation",
        }
    }
}

/// An admitted event with its URL.
pub(crate) struct Job {
    event: Event,
    url: String,
    admitted: Admitted,
}

/// The lane a connection keeps from its handshake to its end.
pub(crate) type Link = Arc<Lane>;

/// One connection's events in order, and whether a task is sending them now.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    jobs: VecDeque<Job>,
    running: bool,
}

impl Lane {
    fn state(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `job`; start the lane's task unless it is running.
    fn push(self: &Arc<Self>, upstream: &Arc<Upstream>, connection: &Arc<Connection>, job: Job) {
        let mut state = self.state();
        state.jobs.push_back(job);
        if !state.running {
            state.running = true;
            tokio::spawn(work(upstream.clone(), connection.clone(), self.clone()));
        }
    }

    /// The next job, or `None` after marking the lane idle (under the same lock as `push`,
    /// so a job queued meanwhile starts a new task).
    fn next(&self) -> Option<Job> {
        let mut state = self.state();
        let job = state.jobs.pop_front();
        if job.is_none() {
            state.running = false;
            state.jobs = VecDeque::new();
        }
        job
    }
}

/// Why the upstream sender could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build the upstream HTTP client: {0}")]
pub struct UpstreamBuildError(#[source] reqwest::Error);

impl Upstream {
    /// `None` when `templates` is empty.
    pub(crate) fn new(
        templates: Vec<UpstreamTemplate>,
        keys: Vec<String>,
        timeout: Duration,
        concurrency: usize,
        queue: usize,
    ) -> Result<Option<Upstream>, UpstreamBuildError> {
        if templates.is_empty() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A burst of connects opens many connections at once; keep only a few idle
            // afterwards (each costs both ends buffers of several KiB).
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(UpstreamBuildError)?;
        Ok(Some(Upstream {
            templates,
            http,
            keys: keys.into_iter().filter(|k| !k.is_empty()).collect(),
            concurrency,
            admit_limit: concurrency.saturating_add(queue),
            hubs: Mutex::new(HashMap::new()),
        }))
    }

    fn gate(&self, hub: &str) -> Arc<Gate> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.entry(hub.to_string())
            .or_insert_with(|| {
                Arc::new(Gate {
                    running: Semaphore::new(self.concurrency),
                    admitted: AtomicUsize::new(0),
                    limit: self.admit_limit,
                })
            })
            .clone()
    }

    /// The job for `event` if a template matches and the hub has room: `Err(true)` when no
    /// template matches, `Err(false)` when the hub's queue is full (counted).
    fn job(&self, hub: &str, event: Event) -> Result<Job, (Event, bool)> {
        let Some(template) = wire::pick(&self.templates, hub, event.category(), event.name())
        else {
            return Err((event, true));
        };
        let url = template.url(hub, event.category(), event.name());
        match self.gate(hub).admit() {
            Some(admitted) => Ok(Job {
                event,
                url,
                admitted,
            }),
            None => {
                tracing::warn!(
                    hub,
                    event = event.name(),
                    "upstream queue full: event not sent"
                );
                service_metrics::upstream_dropped(event.label());
                Err((event, false))
            }
        }
    }
}

/// The handshake completed: start the connection's worker and send `connected`.
pub(crate) fn connected(shared: &Shared, connection: &Arc<Connection>) {
    let Some(upstream) = shared.upstream.as_ref() else {
        return;
    };
    let link = Link::default();
    if !connection.set_upstream(link.clone()) {
        return;
    }
    if let Ok(job) = upstream.job(&connection.hub, Event::Connected) {
        link.push(upstream, connection, job);
    }
}

/// The connection ended: send `disconnected` (after its other events) and let the worker end.
pub(crate) fn disconnected(shared: &Shared, connection: &Arc<Connection>) {
    let (Some(upstream), Some(link)) = (shared.upstream.as_ref(), connection.take_upstream())
    else {
        return;
    };
    let error = connection.close_error();
    if let Ok(job) = upstream.job(&connection.hub, Event::Disconnected(error)) {
        link.push(upstream, connection, job);
    }
}

/// A client Invocation (type 1), `body` its bytes as sent without framing. Without a
/// matching upstream, or with a full queue, an invocation with an id gets its Completion
/// error here; one without is dropped.
pub(crate) fn invocation(
    shared: &Shared,
    connection: &Arc<Connection>,
    target: &str,
    invocation_id: Option<&str>,
    body: &[u8],
) {
    let refused = |error: &str| {
        if let Some(id) = invocation_id {
            connection.push_message(&HubMessage::completion_error(id, error));
        }
    };
    let (Some(upstream), Some(link)) = (shared.upstream.as_ref(), connection.upstream()) else {
        refused(NO_UPSTREAM_ERROR);
        return;
    };
    let event = Event::Invocation {
        target: target.to_string(),
        invocation_id: invocation_id.map(str::to_string),
        body: body.to_vec(),
    };
    match upstream.job(&connection.hub, event) {
        Ok(job) => link.push(upstream, connection, job),
        Err((_, true)) => refused(NO_UPSTREAM_ERROR),
        Err((_, false)) => refused(QUEUE_FULL_ERROR),
    }
}

/// One lane's task: its events in order, each waiting for a place among the hub's POSTs in
/// flight. Ends when the lane is empty; the next event starts a new one.
async fn work(upstream: Arc<Upstream>, connection: Arc<Connection>, lane: Arc<Lane>) {
    while let Some(job) = lane.next() {
        let gate = job.admitted.0.clone();
        // The semaphore is never closed.
        let Ok(_permit) = gate.running.acquire().await else {
            return;
        };
        post(&upstream, &connection, job).await;
    }
}

/// What an upstream POST came to.
enum Answer {
    /// 200 with a body.
    Body(Vec<u8>),
    /// 200 empty or 204.
    Empty,
    Status(u16),
    TooLarge,
    Timeout,
    Unreachable,
}

async fn post(upstream: &Upstream, connection: &Connection, job: Job) {
    let Job {
        event,
        url,
        admitted: _admitted,
    } = job;
    let protocol = connection.protocol().unwrap_or(Protocol::Json);
    let category = event.category();
    let (content_type, body) = match &event {
        Event::Connected => ("application/json", b"{\"type\":10}".to_vec()),
        Event::Disconnected(error) => ("application/json", disconnected_body(error.as_deref())),
        Event::Invocation { body, .. } => (
            match protocol {
                Protocol::Json => "application/json",
                Protocol::MessagePack => "application/x-msgpack",
            },
            body.clone(),
        ),
    };
    let keys: Vec<&str> = upstream.keys.iter().map(String::as_str).collect();
    let mut request = upstream
        .http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(wire::HEADER_CONNECTION_ID, &connection.id)
        .header(wire::HEADER_HUB, &connection.hub)
        .header(wire::HEADER_CATEGORY, category)
        .header(wire::HEADER_EVENT, event.name())
        .header(
            wire::HEADER_SIGNATURE,
            wire::signature(&keys, &connection.id),
        );
    if let Some(user) = &connection.user {
        request = request.header(wire::HEADER_USER_ID, user);
    }
    let info = connection.client_info();
    for claim in &info.claims {
        match reqwest::header::HeaderValue::from_str(claim) {
            Ok(value) => request = request.header(wire::HEADER_USER_CLAIMS, value),
            Err(_) => {
                tracing::debug!(connection = %connection.id, "claim not sendable as a header")
            }
        }
    }
    if !info.query.is_empty() {
        request = request.header(wire::HEADER_CLIENT_QUERY, &info.query);
    }
    let answer = send(request.body(body)).await;
    let outcome = match &answer {
        Answer::Body(_) | Answer::Empty => UpstreamOutcome::Ok,
        Answer::Status(_) => UpstreamOutcome::Status,
        Answer::Timeout => UpstreamOutcome::Timeout,
        Answer::TooLarge | Answer::Unreachable => UpstreamOutcome::Error,
    };
    service_metrics::upstream_request(category, outcome);
    if outcome != UpstreamOutcome::Ok {
        tracing::warn!(
            connection = %connection.id,
            hub = %connection.hub,
            category,
            event = event.name(),
            outcome = outcome.label(),
            status = match &answer { Answer::Status(s) => *s, _ => 0 },
            "upstream call failed"
        );
    }
    let Event::Invocation {
        invocation_id: Some(id),
        ..
    } = event
    else {
        return;
    };
    match answer {
        // A complete framed hub message chosen by the upstream: written as it is.
        Answer::Body(bytes) => {
            connection.try_push(Outgoing::tracked(Frame::new(Some(protocol), bytes)));
        }
        Answer::Empty => connection.push_message(&HubMessage::Completion {
            headers: Headers::new(),
            invocation_id: id,
            result: CompletionResult::Void,
        }),
        Answer::Status(status) => connection.push_message(&HubMessage::completion_error(
            id,
            format!("Invocation failed, status code {status}"),
        )),
        Answer::TooLarge => {
            connection.push_message(&HubMessage::completion_error(id, TOO_LARGE_ERROR))
        }
        Answer::Timeout => {
            connection.push_message(&HubMessage::completion_error(id, TIMEOUT_ERROR))
        }
        Answer::Unreachable => {
            connection.push_message(&HubMessage::completion_error(id, UNREACHABLE_ERROR))
        }
    }
}

/// `{"Type":11}` or `{"Type":11,"Error":"..."}`, as the emulator writes it.
fn disconnected_body(error: Option<&str>) -> Vec<u8> {
    match error.filter(|e| !e.is_empty()) {
        // `Type` first, as the emulator writes it (a serde_json map would sort the keys).
        Some(error) => format!(
            "{{\"Type\":11,\"Error\":{}}}",
            serde_json::Value::from(error)
        )
        .into_bytes(),
        None => b"{\"Type\":11}".to_vec(),
    }
}

fn failed(error: &reqwest::Error) -> Answer {
    if error.is_timeout() {
        Answer::Timeout
    } else {
        tracing::debug!(error = %redacted(error), "upstream request failed");
        Answer::Unreachable
    }
}

/// The error text without its URL (which may carry a function key).
fn redacted(error: &reqwest::Error) -> String {
    let text = error.to_string();
    match error.url() {
        Some(url) => text.replace(url.as_str(), "<upstream>"),
        None => text,
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return failed(&error),
    };
    let status = response.status().as_u16();
    match status {
        204 => return Answer::Empty,
        200 => {}
        other => return Answer::Status(other),
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE as u64)
    {
        return Answer::TooLarge;
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE {
                    return Answer::TooLarge;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => return failed(&error),
        }
    }
    if body.is_empty() {
        Answer::Empty
    } else {
        Answer::Body(body)
    }
}

/// `type: value` for each claim of a (verified) JWT, as the emulator lists them; array
/// claims give one entry per element. The token mechanics (`aud`, `exp`, `iat`, `nbf`) are
/// left out.
pub(crate) fn claims_of(token: &str) -> Vec<String> {
    use base64::Engine;
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(&bytes) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for (name, value) in &claims {
        if matches!(name.as_str(), "aud" | "exp" | "iat" | "nbf") {
            continue;
        }
        match value {
            serde_json::Value::Array(items) => {
                out.extend(items.iter().map(|v| format!("{name}: {}", text(v))))
            }
            other => out.push(format!("{name}: {}", text(other))),
        }
    }
    out
}

/// The raw query with its leading `?`, without `access_token` (empty when nothing is left).
pub(crate) fn client_query(query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("access_token"))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnected_bodies_follow_the_emulator() {
        assert_eq!(disconnected_body(None), b"{\"Type\":11}");
        assert_eq!(disconnected_body(Some("")), b"{\"Type\":11}");
        assert_eq!(
            disconnected_body(Some("gone \"now\"")),
            b"{\"Type\":11,\"Error\":\"gone \\\"now\\\"\"}"
        );
    }

    #[test]
    fn client_query_drops_the_token() {
        assert_eq!(
            client_query(Some("hub=chat&access_token=abc&x=1%202")),
            "?hub=chat&x=1%202"
        );
        assert_eq!(client_query(Some("access_token=abc")), "");
        assert_eq!(client_query(None), "");
    }

    #[test]
    fn claims_are_listed_without_token_mechanics() {
        use base64::Engine;
        let payload = serde_json::json!({
            "aud": "http://x", "exp": 1, "asrs.s.uid": "alice", "role": ["a", "b"], "n": 3
        });
        let token = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut claims = claims_of(&token);
        claims.sort();
        assert_eq!(claims, ["asrs.s.uid: alice", "n: 3", "role: a", "role: b"]);
        assert!(claims_of("not a token").is_empty());
    }

    #[test]
    fn a_gate_admits_up_to_its_limit_and_frees_on_drop() {
        let gate = Arc::new(Gate {
            running: Semaphore::new(1),
            admitted: AtomicUsize::new(0),
            limit: 2,
        });
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none(), "past the bound");
        drop(a);
        assert!(gate.admit().is_some(), "a freed place is reused");
    }
}
