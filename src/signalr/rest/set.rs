//! `RestClient`: the one REST handle the daemon, the outbox, the scheduler, the Functions
//! handler and the CLI use, over a set of endpoints (one, or several as the Azure SDK's
//! multiple endpoints). It owns which endpoints a call goes to and their health:
//!
//! - sends, group changes and closes go to every endpoint not marked down, concurrently; the
//!   call succeeds when every endpoint it went to took it (else the caller, e.g. the outbox,
//!   retries it; a repeat to an endpoint that had it is fine: Azure is at least once, and the
//!   embedded service drops repeats by message id);
//! - existence checks ask the same endpoints: `true` when any says so;
//! - negotiate takes a primary that is up, round-robin, else a secondary that is up, else any
//!   primary;
//! - an endpoint that fails a call (no answer, 5xx, 401/403) or a probe is marked down and
//!   skipped until a probe ([`RestClient::run_probes`], the REST `health` call; or, with no
//!   such task, one a call runs first when probes are stale) succeeds. When
//!   every endpoint is down, calls go to all of them rather than to none, so a lone endpoint
//!   behaves exactly as a plain client and is never marked.
//!
//! Sets of two or more report `herald_endpoint_up{endpoint,role}`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::client::EndpointClient;
use super::{RestError, RestOptions};
use crate::message::Message;
use crate::signalr::ServiceEndpoint;
use crate::signalr::endpoints::{EndpointRole, NamedEndpoint};
use crate::telemetry::metrics::ENDPOINT_UP;

/// How often [`RestClient::run_probes`] probes every endpoint.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Limit of one probe (no retries): an endpoint slower than this to say it is healthy is not.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The REST client for one or several endpoints. Cheap to clone: everything sits behind one
/// `Arc`, shared by every handler and task, dropped with the last clone.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// In config order; never empty. Fixed for the client's life (endpoints are restart-only).
    members: Vec<Member>,
    /// Round-robin cursor of negotiate. An atomic: bumped by concurrent requests, and its
    /// exact value does not matter.
    next: AtomicUsize,
    /// When every endpoint was last probed. A std mutex, held only to read or write the
    /// instant, never across an `.await`: a call that finds an endpoint down and no probe for
    /// two intervals (no [`RestClient::run_probes`] task, as in the Functions handler) probes
    /// first, so a skipped endpoint always comes back.
    last_probe: Mutex<Option<Instant>>,
    options: RestOptions,
}

struct Member {
    name: String,
    role: EndpointRole,
    /// Calls, with the configured timeout and retries.
    client: EndpointClient,
    /// Probes: the same endpoint with [`PROBE_TIMEOUT`] and no retries.
    probe: EndpointClient,
    /// Whether calls go here. An atomic bool: read on every call and negotiate, written by
    /// the probe task and by failed calls; no other state has to change with it.
    up: AtomicBool,
    /// Why it was last marked down, for `/healthz`. A std mutex, held only to copy a string,
    /// never across an `.await`.
    last_error: Mutex<Option<String>>,
}

/// One endpoint's state, as `/healthz` shows it (no key).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointState {
    pub name: String,
    pub role: &'static str,
    pub up: bool,
    /// The REST base URL (`scheme://host:port`), never the key.
    pub url: String,
    /// Why it was last marked down (while it is down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `EndpointClient`'s Debug redacts the key.
        let mut d = f.debug_struct("RestClient");
        for m in &self.inner.members {
            d.field(&m.name, &m.client);
        }
        d.finish()
    }
}

/// Whether `e` says the endpoint itself is at fault (unreachable, failing, refusing our
/// key), as opposed to the call (a bad argument, a 404 of a missing connection).
fn endpoint_fault(e: &RestError) -> bool {
    match e {
        RestError::Transport { .. } => true,
        RestError::Status { status, .. } => {
            status.is_server_error() || matches!(status.as_u16(), 401 | 403)
        }
        _ => false,
    }
}

fn set_gauge(member: &Member, up: bool) {
    metrics::gauge!(ENDPOINT_UP, "endpoint" => member.name.clone(), "role" => member.role.as_str())
        .set(if up { 1.0 } else { 0.0 });
}

impl RestClient {
    /// A client for one endpoint (a lone connection string, the embedded service).
    pub fn new(endpoint: ServiceEndpoint, options: RestOptions) -> Result<Self, RestError> {
        Self::with_endpoints(vec![NamedEndpoint::primary(endpoint)], options)
    }

    /// A client for a set of endpoints (at least one; names unique, checked by the config).
    pub fn with_endpoints(
        endpoints: Vec<NamedEndpoint>,
        options: RestOptions,
    ) -> Result<Self, RestError> {
        if endpoints.is_empty() {
            return Err(RestError::InvalidArgument(
                "a REST client needs at least one endpoint".into(),
            ));
        }
        let probe_options = RestOptions {
            timeout: options.timeout.min(PROBE_TIMEOUT),
            max_retries: 0,
            ..options.clone()
        };
        let multi = endpoints.len() > 1;
        let mut members = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let client = EndpointClient::new(e.endpoint.clone(), options.clone())?;
            let probe = EndpointClient::new(e.endpoint, probe_options.clone())?;
            let member = Member {
                name: e.name,
                role: e.role,
                client,
                probe,
                up: AtomicBool::new(true),
                last_error: Mutex::new(None),
            };
            if multi {
                set_gauge(&member, true);
            }
            members.push(member);
        }
        Ok(RestClient {
            inner: Arc::new(Inner {
                members,
                next: AtomicUsize::new(0),
                last_probe: Mutex::new(None),
                options,
            }),
        })
    }

    /// The first primary endpoint (the only one of a one-endpoint client): whose key
    /// `herald token` signs with.
    pub fn endpoint(&self) -> &ServiceEndpoint {
        let members = &self.inner.members;
        let first = members
            .iter()
            .find(|m| m.role == EndpointRole::Primary)
            .unwrap_or(&members[0]);
        first.client.endpoint()
    }

    /// The endpoint to hand a negotiating client: a primary that is up (round-robin over
    /// them), else a secondary that is up, else any primary (round-robin), else the first.
    pub fn negotiate_endpoint(&self) -> &ServiceEndpoint {
        let members = &self.inner.members;
        if members.len() == 1 {
            return members[0].client.endpoint();
        }
        let turn = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let pick = |f: &dyn Fn(&Member) -> bool| {
            let candidates: Vec<&Member> = members.iter().filter(|m| f(m)).collect();
            (!candidates.is_empty()).then(|| candidates[turn % candidates.len()])
        };
        let up = |m: &Member| m.up.load(Ordering::Relaxed);
        pick(&|m| m.role == EndpointRole::Primary && up(m))
            .or_else(|| pick(&|m| m.role == EndpointRole::Secondary && up(m)))
            .or_else(|| pick(&|m| m.role == EndpointRole::Primary))
            .unwrap_or(&members[0])
            .client
            .endpoint()
    }

    /// The options this client was built with.
    pub fn options(&self) -> &RestOptions {
        &self.inner.options
    }

    /// How many endpoints this client drives.
    pub fn endpoint_count(&self) -> usize {
        self.inner.members.len()
    }

    /// Every endpoint's state, in config order.
    pub fn endpoint_states(&self) -> Vec<EndpointState> {
        self.inner
            .members
            .iter()
            .map(|m| {
                let up = m.up.load(Ordering::Relaxed);
                EndpointState {
                    name: m.name.clone(),
                    role: m.role.as_str(),
                    up,
                    url: m.client.endpoint().rest_base(),
                    error: if up {
                        None
                    } else {
                        m.last_error.lock().ok().and_then(|e| e.clone())
                    },
                }
            })
            .collect()
    }

    /// Probe now when an endpoint is down and nothing probed for two intervals.
    async fn probe_if_stale(&self) {
        if !self.multi()
            || self
                .inner
                .members
                .iter()
                .all(|m| m.up.load(Ordering::Relaxed))
        {
            return;
        }
        let stale = self
            .inner
            .last_probe
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() > 2 * PROBE_INTERVAL))
            .unwrap_or(true);
        if stale {
            self.probe_once().await;
        }
    }

    /// The endpoints a call goes to: those up, or all when none is.
    fn targets(&self) -> Vec<&Member> {
        let members = &self.inner.members;
        let up: Vec<&Member> = members
            .iter()
            .filter(|m| m.up.load(Ordering::Relaxed))
            .collect();
        if up.is_empty() {
            members.iter().collect()
        } else {
            up
        }
    }

    fn multi(&self) -> bool {
        self.inner.members.len() > 1
    }

    fn mark_down(&self, member: &Member, why: &str) {
        if !self.multi() {
            return;
        }
        if let Ok(mut e) = member.last_error.lock() {
            *e = Some(why.to_string());
        }
        if member.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                endpoint = %member.name,
                role = %member.role,
                error = %why,
                "SignalR endpoint marked down; skipped until a health probe succeeds"
            );
        }
        set_gauge(member, false);
    }

    fn mark_up(&self, member: &Member) {
        if !self.multi() {
            return;
        }
        if !member.up.swap(true, Ordering::Relaxed) {
            tracing::info!(endpoint = %member.name, role = %member.role, "SignalR endpoint is up again");
        }
        set_gauge(member, true);
    }

    /// Run `op` on every target endpoint concurrently: `Ok` when all took it, else the first
    /// error (after marking endpoints at fault down).
    async fn each<'a, F, Fut>(&'a self, operation: &'static str, op: F) -> Result<(), RestError>
    where
        F: Fn(&'a EndpointClient) -> Fut,
        Fut: std::future::Future<Output = Result<(), RestError>> + 'a,
    {
        self.probe_if_stale().await;
        let targets = self.targets();
        let results = join_all(targets.iter().map(|m| op(&m.client))).await;
        let mut first = None;
        for (member, result) in targets.into_iter().zip(results) {
            if let Err(e) = result {
                if self.multi() {
                    tracing::warn!(endpoint = %member.name, operation, error = %e, "SignalR endpoint did not take the call");
                }
                if endpoint_fault(&e) {
                    self.mark_down(member, &e.to_string());
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Ask every target endpoint: `true` when any says so, `false` when all say not, else
    /// the first error.
    async fn any<'a, F, Fut>(&'a self, op: F) -> Result<bool, RestError>
    where
        F: Fn(&'a EndpointClient) -> Fut,
        Fut: std::future::Future<Output = Result<bool, RestError>> + 'a,
    {
        self.probe_if_stale().await;
        let targets = self.targets();
        let results = join_all(targets.iter().map(|m| op(&m.client))).await;
        let mut first = None;
        for (member, result) in targets.into_iter().zip(results) {
            match result {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    if endpoint_fault(&e) {
                        self.mark_down(member, &e.to_string());
                    }
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(false), Err)
    }

    /// Send `message` to its recipient, on every endpoint up. See [`EndpointClient::send`].
    pub async fn send(&self, message: &Message) -> Result<(), RestError> {
        self.send_with_id(message, None).await
    }

    /// [`send`](Self::send) with a message id (see [`EndpointClient::send_with_id`]).
    pub async fn send_with_id(&self, message: &Message, id: Option<&str>) -> Result<(), RestError> {
        self.each("send", |c| c.send_with_id(message, id)).await
    }

    /// Several messages of one hub in one request per endpoint (see
    /// [`EndpointClient::send_batch`]); only where every endpoint takes it.
    pub async fn send_batch(&self, hub: &str, items: &[(&Message, &str)]) -> Result<(), RestError> {
        self.each("send batch", |c| c.send_batch(hub, items)).await
    }

    /// Whether sends may be batched: every endpoint takes `:sendBatch`.
    pub fn batch_sends(&self) -> bool {
        self.targets().iter().all(|m| m.client.batch_sends())
    }

    /// Add one connection to a group, on every endpoint up.
    pub async fn add_connection_to_group(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        self.each("add connection to group", |c| {
            c.add_connection_to_group(hub, group, connection)
        })
        .await
    }

    /// Remove one connection from a group, on every endpoint up.
    pub async fn remove_connection_from_group(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        self.each("remove connection from group", |c| {
            c.remove_connection_from_group(hub, group, connection)
        })
        .await
    }

    /// Add a user to a group (for `ttl`), on every endpoint up.
    pub async fn add_user_to_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
        ttl: Option<Duration>,
    ) -> Result<(), RestError> {
        self.each("add user to group", |c| {
            c.add_user_to_group(hub, group, user, ttl)
        })
        .await
    }

    /// Remove a user from a group, on every endpoint up.
    pub async fn remove_user_from_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
    ) -> Result<(), RestError> {
        self.each("remove user from group", |c| {
            c.remove_user_from_group(hub, group, user)
        })
        .await
    }

    /// Remove a user from every group of the hub, on every endpoint up.
    pub async fn remove_user_from_all_groups(
        &self,
        hub: &str,
        user: &str,
    ) -> Result<(), RestError> {
        self.each("remove user from all groups", |c| {
            c.remove_user_from_all_groups(hub, user)
        })
        .await
    }

    /// Remove a connection from every group of the hub, on every endpoint up.
    pub async fn remove_connection_from_all_groups(
        &self,
        hub: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        self.each("remove connection from all groups", |c| {
            c.remove_connection_from_all_groups(hub, connection)
        })
        .await
    }

    /// Close a client connection (on every endpoint up: a connection lives on one of them).
    pub async fn close_connection(
        &self,
        hub: &str,
        connection: &str,
        reason: Option<&str>,
    ) -> Result<(), RestError> {
        self.each("close connection", |c| {
            c.close_connection(hub, connection, reason)
        })
        .await
    }

    /// Whether a connection is connected to the hub on any endpoint up.
    pub async fn connection_exists(&self, hub: &str, connection: &str) -> Result<bool, RestError> {
        self.any(|c| c.connection_exists(hub, connection)).await
    }

    /// Whether a user has a connection on any endpoint up.
    pub async fn user_exists(&self, hub: &str, user: &str) -> Result<bool, RestError> {
        self.any(|c| c.user_exists(hub, user)).await
    }

    /// Whether a group has a connection on any endpoint up.
    pub async fn group_exists(&self, hub: &str, group: &str) -> Result<bool, RestError> {
        self.any(|c| c.group_exists(hub, group)).await
    }

    /// Whether a user is in a group on any endpoint up.
    pub async fn user_in_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
    ) -> Result<bool, RestError> {
        self.any(|c| c.user_in_group(hub, group, user)).await
    }

    /// Presence summed over the endpoints that are up (a herald extension of the embedded
    /// service; Azure answers 404). Fails only when no endpoint answers.
    pub async fn presence(&self, hub: &str) -> Result<super::Presence, RestError> {
        self.probe_if_stale().await;
        let targets = self.targets();
        let results = join_all(targets.iter().map(|m| m.client.presence(hub))).await;
        let mut total: Option<super::Presence> = None;
        let mut first = None;
        for result in results {
            match result {
                Ok(p) => {
                    let t = total.get_or_insert_with(super::Presence::default);
                    t.connections += p.connections;
                    t.users += p.users;
                    t.groups += p.groups;
                    for (k, v) in p.transports {
                        *t.transports.entry(k).or_default() += v;
                    }
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match (total, first) {
            (Some(t), _) => Ok(t),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(super::Presence::default()),
        }
    }

    /// The service's health: a lone endpoint's `health` call as it is; for a set, every
    /// endpoint is probed now (updating its mark) and the set is healthy while any is up.
    pub async fn health(&self) -> Result<(), RestError> {
        let members = &self.inner.members;
        if members.len() == 1 {
            return members[0].client.health().await;
        }
        let mut first = None;
        for result in self.probe_once().await {
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Probe every endpoint once, concurrently (each within [`PROBE_TIMEOUT`]), and mark
    /// each up or down.
    pub async fn probe_once(&self) -> Vec<Result<(), RestError>> {
        let members = &self.inner.members;
        // The probe client's own timeout is PROBE_TIMEOUT and it does not retry, so the
        // call ends within it.
        let results = join_all(members.iter().map(|m| m.probe.health())).await;
        if let Ok(mut t) = self.inner.last_probe.lock() {
            *t = Some(Instant::now());
        }
        for (member, result) in members.iter().zip(&results) {
            match result {
                Ok(()) => self.mark_up(member),
                Err(e) => self.mark_down(member, &format!("health probe failed: {e}")),
            }
        }
        results
    }

    /// Probe every endpoint each `interval` until `shutdown`. Returns at once for a lone
    /// endpoint, which is never skipped.
    pub async fn run_probes(self, interval: Duration, shutdown: CancellationToken) {
        if !self.multi() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.probe_once() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    fn named(name: &str, role: EndpointRole, port: u16) -> NamedEndpoint {
        NamedEndpoint {
            name: name.into(),
            role,
            endpoint: ServiceEndpoint::new("http://127.0.0.1", Some(port), KEY).unwrap(),
        }
    }

    fn quick() -> RestOptions {
        RestOptions {
            timeout: Duration::from_secs(2),
            max_retries: 0,
            ..RestOptions::default()
        }
    }

    /// A port with nothing listening (bound, then closed).
    fn dead_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn bases(rest: &RestClient) -> Vec<String> {
        (0..6)
            .map(|_| rest.negotiate_endpoint().rest_base())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn negotiate_spreads_over_primaries_and_falls_back_to_secondaries() {
        crate::install_crypto();
        let rest = RestClient::with_endpoints(
            vec![
                named("a", EndpointRole::Primary, 1001),
                named("b", EndpointRole::Primary, 1002),
                named("c", EndpointRole::Secondary, 1003),
            ],
            quick(),
        )
        .unwrap();
        let m = &rest.inner.members;
        assert_eq!(
            bases(&rest),
            ["http://127.0.0.1:1001", "http://127.0.0.1:1002"]
        );
        rest.mark_down(&m[0], "test");
        assert_eq!(bases(&rest), ["http://127.0.0.1:1002"]);
        rest.mark_down(&m[1], "test");
        assert_eq!(bases(&rest), ["http://127.0.0.1:1003"]);
        // Nothing up: the primaries rather than nothing.
        rest.mark_down(&m[2], "test");
        assert_eq!(
            bases(&rest),
            ["http://127.0.0.1:1001", "http://127.0.0.1:1002"]
        );
        rest.mark_up(&m[2]);
        let states = rest.endpoint_states();
        assert_eq!(
            states.iter().map(|s| s.up).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(states[0].error.as_deref(), Some("test"));
        assert_eq!(states[2].error, None);
        assert_eq!(rest.endpoint().rest_base(), "http://127.0.0.1:1001");
        assert!(!format!("{states:?} {rest:?}").contains(KEY));
    }

    #[tokio::test]
    async fn failed_sends_and_probes_mark_endpoints_down() {
        crate::install_crypto();
        let rest = RestClient::with_endpoints(
            vec![
                named("a", EndpointRole::Primary, dead_port()),
                named("b", EndpointRole::Secondary, dead_port()),
            ],
            quick(),
        )
        .unwrap();
        let message = Message::broadcast("hub", "t", vec![]);
        assert!(matches!(
            rest.send(&message).await,
            Err(RestError::Transport { .. })
        ));
        assert!(rest.endpoint_states().iter().all(|s| !s.up));
        // With every endpoint down, calls still go to all of them (and fail).
        assert!(rest.send(&message).await.is_err());
        assert!(rest.health().await.is_err());
        let states = rest.endpoint_states();
        assert!(
            states[0]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("health probe failed")),
            "{states:?}"
        );
        // A bad argument is the call's fault, not the endpoint's.
        let rest = RestClient::with_endpoints(
            vec![
                named("a", EndpointRole::Primary, dead_port()),
                named("b", EndpointRole::Primary, dead_port()),
            ],
            quick(),
        )
        .unwrap();
        let bad = Message::broadcast("hub", "", vec![]);
        assert!(matches!(
            rest.send(&bad).await,
            Err(RestError::InvalidArgument(_))
        ));
        assert!(rest.endpoint_states().iter().all(|s| s.up));
    }

    /// A stand-in service that takes every call (200) on `listener`.
    fn stub(listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    #[tokio::test]
    async fn a_skipped_endpoint_comes_back_when_a_probe_succeeds_even_without_the_probe_task() {
        crate::install_crypto();
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port_a = a.local_addr().unwrap().port();
        stub(a);
        let port_b = dead_port();
        let rest = RestClient::with_endpoints(
            vec![
                named("a", EndpointRole::Primary, port_a),
                named("b", EndpointRole::Primary, port_b),
            ],
            quick(),
        )
        .unwrap();
        let message = Message::broadcast("hub", "t", vec![]);
        // b is dead: the send fails (the outbox would retry it) and b is marked down.
        assert!(rest.send(&message).await.is_err());
        assert_eq!(
            rest.endpoint_states()
                .iter()
                .map(|s| s.up)
                .collect::<Vec<_>>(),
            [true, false]
        );
        // Skipped now: the send succeeds on a alone (the probe run first still fails).
        rest.send(&message).await.unwrap();
        assert_eq!(
            rest.negotiate_endpoint().rest_base(),
            format!("http://127.0.0.1:{port_a}")
        );
        // b comes back on its port; probes are fresh, so the next call does not probe yet.
        let Ok(b) = std::net::TcpListener::bind(("127.0.0.1", port_b)) else {
            return; // the port was taken meanwhile; nothing more to check here
        };
        stub(b);
        rest.send(&message).await.unwrap();
        assert!(!rest.endpoint_states()[1].up);
        // Once probes are stale, a call probes first and b takes calls again.
        *rest.inner.last_probe.lock().unwrap() = None;
        rest.send(&message).await.unwrap();
        assert!(rest.endpoint_states().iter().all(|s| s.up));
        assert!(rest.health().await.is_ok());
    }

    #[tokio::test]
    async fn a_lone_endpoint_is_never_marked_down() {
        crate::install_crypto();
        let rest = RestClient::with_endpoints(
            vec![named("only", EndpointRole::Primary, dead_port())],
            quick(),
        )
        .unwrap();
        let message = Message::broadcast("hub", "t", vec![]);
        assert!(rest.send(&message).await.is_err());
        assert!(rest.probe_once().await[0].is_err());
        assert!(rest.endpoint_states()[0].up);
        assert_eq!(rest.endpoint_count(), 1);
    }
}
