//! `EndpointClient`: the REST operations (sends, group membership, existence checks, closing
//! connections, health) against one service endpoint, over one shared connection pool. Each call is built from a path
//! (`paths`), signed with a fresh REST token, and sent with the retry policy of `retry`;
//! the final answer becomes `Ok` or a `RestError`. Owns the 1 MB body check and the
//! per-request timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};

use super::error::{excerpt, transport_kind};
use super::paths::encode_segment;
use super::{MAX_BODY_BYTES, RestError, RestOptions, retry};
use crate::message::{Message, Recipient};
use crate::signalr::ServiceEndpoint;
use crate::signalr::names;
use crate::signalr::token;

/// Lifetime of each REST token. A token is minted per call, so this only has to outlive the
/// call with its retries; one hour is the SDK's default.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A client for one service endpoint. Cheap to clone: the state sits behind one `Arc`, so
/// the daemon's handlers and scheduler tasks share one connection pool. The daemon holds a
/// [`super::RestClient`], which drives one of these per endpoint.
#[derive(Clone)]
pub struct EndpointClient {
    inner: Arc<Inner>,
}

/// Immutable after construction, so no lock: shared by every clone, dropped with the last.
struct Inner {
    /// reqwest's pool is itself shared; one client keeps keep-alive connections warm.
    http: reqwest::Client,
    endpoint: ServiceEndpoint,
    /// `endpoint.rest_base()`, computed once.
    base: String,
    options: RestOptions,
}

impl fmt::Debug for EndpointClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `ServiceEndpoint`'s Debug redacts the key.
        f.debug_struct("EndpointClient")
            .field("endpoint", &self.inner.endpoint)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// Whether `message` can be sent at all (a target, names the REST API accepts, at most 1 MB
/// of JSON), checked before it is accepted for later delivery.
pub fn check_sendable(message: &Message) -> Result<(), RestError> {
    sendable_body(message)?;
    check_names(message)
}

/// The hub's and the recipient's names of `message`, checked.
fn check_names(message: &Message) -> Result<(), RestError> {
    names::hub(&message.hub).map_err(|e| RestError::InvalidArgument(e.to_string()))?;
    let checked = match &message.to {
        Recipient::All => Ok(()),
        Recipient::User(u) => names::user(u),
        Recipient::Group(g) => names::group(g),
        Recipient::Connection(c) => names::connection(c),
    };
    checked.map_err(|e| RestError::InvalidArgument(e.to_string()))
}

/// The JSON body of a send, or why it cannot be sent.
fn sendable_body(message: &Message) -> Result<Vec<u8>, RestError> {
    check_target(message)?;
    json_body(&message.payload())
}

fn check_target(message: &Message) -> Result<(), RestError> {
    if message.target.is_empty() {
        return Err(RestError::InvalidArgument(
            "message target (client method name) is empty".into(),
        ));
    }
    Ok(())
}

/// `value` as a request body within `MAX_BODY_BYTES`.
fn json_body(value: &impl serde::Serialize) -> Result<Vec<u8>, RestError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        RestError::InvalidArgument(format!("message arguments cannot be serialised: {e}"))
    })?;
    if body.len() > MAX_BODY_BYTES {
        return Err(RestError::TooLarge {
            size: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(body)
}

/// The JSON body of a `:sendBatch`: one object per message, in order, each with its id,
/// its recipient (`user`, `group` or `connection`; none for the hub), `target`,
/// `arguments` and `excluded`.
fn batch_body(hub: &str, items: &[(&Message, &str)]) -> Result<Vec<u8>, RestError> {
    let mut list = Vec::with_capacity(items.len());
    for (message, id) in items {
        // What `check_sendable` checks, but serialised once, in the list (whose size
        // `json_body` bounds).
        check_target(message)?;
        check_names(message)?;
        if !message.hub.eq_ignore_ascii_case(hub) {
            return Err(RestError::InvalidArgument(format!(
                "a batch for hub `{hub}` holds a message for hub `{}`",
                message.hub
            )));
        }
        let mut item = serde_json::json!({
            "id": id,
            "target": message.target,
            "arguments": message.arguments,
        });
        match &message.to {
            Recipient::All => {}
            Recipient::User(u) => item["user"] = u.as_str().into(),
            Recipient::Group(g) => item["group"] = g.as_str().into(),
            Recipient::Connection(c) => item["connection"] = c.as_str().into(),
        }
        if !message.excluded.is_empty() && message.to.takes_excluded() {
            item["excluded"] = message.excluded.clone().into();
        }
        list.push(item);
    }
    json_body(&list)
}

/// One REST operation, ready to send.
struct Call {
    /// Human name for logs and errors (`send to group`).
    operation: &'static str,
    method: Method,
    /// Percent-encoded API path (`/api/hubs/chat/:send`); the token audience is built from it.
    path: String,
    /// Query parameters after `api-version`. Not part of the audience (`excluded`, `ttl`,
    /// `reason`), as in the SDK.
    extra_query: Vec<(&'static str, String)>,
    /// JSON body. `Bytes` so that a retry re-sends it without copying.
    body: Option<Bytes>,
    /// Sent as [`super::MESSAGE_ID_HEADER`] so a service can drop a repeat.
    message_id: Option<String>,
}

impl Call {
    fn new(operation: &'static str, method: Method, path: String) -> Self {
        Call {
            operation,
            method,
            path,
            extra_query: Vec::new(),
            body: None,
            message_id: None,
        }
    }
}

/// Who is connected to a hub, as the embedded service's `GET /api/hubs/{hub}/presence`
/// answers it (a herald extension: Azure SignalR Service has no such operation; there the
/// daemon counts `connected`/`disconnected` upstream events instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// Connections that completed their handshake.
    pub connections: usize,
    /// Distinct users among them (connections without a user are not counted).
    pub users: usize,
    /// Groups with at least one live connection.
    #[serde(default)]
    pub groups: usize,
    /// Connections by transport (`WebSockets`, `ServerSentEvents`, `LongPolling`).
    #[serde(default)]
    pub transports: BTreeMap<String, usize>,
}

/// What the service finally answered (2xx, or an error status after retries ran out).
struct Answer {
    status: StatusCode,
    error_code: Option<String>,
    body: String,
    /// A success body, kept for GET calls only (presence).
    content: Bytes,
    /// `Retry-After`, kept for the error so callers can pass the service's wish on.
    retry_after: Option<Duration>,
}

impl EndpointClient {
    /// A client for `endpoint`. Builds one reqwest client (rustls) with `options.timeout`.
    pub fn new(endpoint: ServiceEndpoint, options: RestOptions) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RestError::Client)?;
        let base = endpoint.rest_base();
        Ok(EndpointClient {
            inner: Arc::new(Inner {
                http,
                endpoint,
                base,
                options,
            }),
        })
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &ServiceEndpoint {
        &self.inner.endpoint
    }

    /// The options this client was built with.
    pub fn options(&self) -> &RestOptions {
        &self.inner.options
    }

    /// Send `message` to its recipient. The body is `Message::payload()` as JSON (at most
    /// 1 MB, checked before sending). `excluded` is passed for hub and group sends, the only
    /// ones that accept it, and ignored for user and connection sends.
    pub async fn send(&self, message: &Message) -> Result<(), RestError> {
        self.send_with_id(message, None).await
    }

    /// [`send`](Self::send), carrying `id` in the [`super::MESSAGE_ID_HEADER`] header. The
    /// embedded service delivers a message id once and drops repeats (exactly once across
    /// retries and restarts); Azure ignores the header (at least once).
    pub async fn send_with_id(&self, message: &Message, id: Option<&str>) -> Result<(), RestError> {
        let body = sendable_body(message)?;
        let send = self.api().send(&message.hub, &message.to)?;
        let mut call = Call::new(send.operation, Method::POST, send.path);
        if send.takes_excluded {
            call.extra_query = message
                .excluded
                .iter()
                .map(|c| ("excluded", c.clone()))
                .collect();
        } else if !message.excluded.is_empty() {
            tracing::debug!(
                recipient = message.to.kind(),
                "`excluded` only applies to hub and group sends; ignored"
            );
        }
        call.body = Some(Bytes::from(body));
        call.message_id = id.map(str::to_string);
        self.execute(&call).await?.success(&call)
    }

    /// Send `items` (messages of `hub`, each with its id) in one `:sendBatch` request,
    /// delivered in order; only for a service that takes it (`RestOptions::batch_sends`).
    pub async fn send_batch(&self, hub: &str, items: &[(&Message, &str)]) -> Result<(), RestError> {
        let body = batch_body(hub, items)?;
        let mut call = Call::new("send batch", Method::POST, self.api().send_batch(hub)?);
        call.body = Some(Bytes::from(body));
        self.execute(&call).await?.success(&call)
    }

    /// Whether the service takes `:sendBatch`.
    pub fn batch_sends(&self) -> bool {
        self.inner.options.batch_sends
    }

    /// Add one connection to a group.
    pub async fn add_connection_to_group(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        let path = self.api().group_connection(hub, group, connection)?;
        let call = Call::new("add connection to group", Method::PUT, path);
        self.execute(&call).await?.success(&call)
    }

    /// Remove one connection from a group.
    pub async fn remove_connection_from_group(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        let path = self.api().group_connection(hub, group, connection)?;
        let call = Call::new("remove connection from group", Method::DELETE, path);
        self.execute(&call).await?.success(&call)
    }

    /// Add a user (all of its connections, present and future) to a group, for `ttl` if
    /// given (whole seconds; `ttl=0` adds only the user's current connections).
    pub async fn add_user_to_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
        ttl: Option<Duration>,
    ) -> Result<(), RestError> {
        let path = self.api().user_group(hub, group, user)?;
        let mut call = Call::new("add user to group", Method::PUT, path);
        if let Some(ttl) = ttl {
            call.extra_query.push(("ttl", ttl.as_secs().to_string()));
        }
        self.execute(&call).await?.success(&call)
    }

    /// Remove a user from a group.
    pub async fn remove_user_from_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
    ) -> Result<(), RestError> {
        let path = self.api().user_group(hub, group, user)?;
        let call = Call::new("remove user from group", Method::DELETE, path);
        self.execute(&call).await?.success(&call)
    }

    /// Remove a user from every group of the hub.
    pub async fn remove_user_from_all_groups(
        &self,
        hub: &str,
        user: &str,
    ) -> Result<(), RestError> {
        let path = self.api().user_groups(hub, user)?;
        let call = Call::new("remove user from all groups", Method::DELETE, path);
        self.execute(&call).await?.success(&call)
    }

    /// Remove a connection from every group of the hub. Only in the 2022-06-01 API.
    pub async fn remove_connection_from_all_groups(
        &self,
        hub: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        const OPERATION: &str = "remove connection from all groups";
        let path = self.api().connection_groups(OPERATION, hub, connection)?;
        let call = Call::new(OPERATION, Method::DELETE, path);
        self.execute(&call).await?.success(&call)
    }

    /// Close a client connection, with a `reason` the client sees in its close message.
    pub async fn close_connection(
        &self,
        hub: &str,
        connection: &str,
        reason: Option<&str>,
    ) -> Result<(), RestError> {
        let mut call = Call::new(
            "close connection",
            Method::DELETE,
            self.api().connection(hub, connection)?,
        );
        if let Some(reason) = reason {
            call.extra_query.push(("reason", reason.to_string()));
        }
        self.execute(&call).await?.success(&call)
    }

    /// Whether a connection is connected to the hub (200 → true, 404 → false).
    pub async fn connection_exists(&self, hub: &str, connection: &str) -> Result<bool, RestError> {
        let call = Call::new(
            "check connection",
            Method::HEAD,
            self.api().connection(hub, connection)?,
        );
        self.execute(&call).await?.exists(&call)
    }

    /// Whether a user has any connection to the hub (200 → true, 404 → false).
    pub async fn user_exists(&self, hub: &str, user: &str) -> Result<bool, RestError> {
        let path = self.api().user(hub, user)?;
        let call = Call::new("check user", Method::HEAD, path);
        self.execute(&call).await?.exists(&call)
    }

    /// Whether a group has any connection (200 → true, 404 → false).
    pub async fn group_exists(&self, hub: &str, group: &str) -> Result<bool, RestError> {
        let path = self.api().group(hub, group)?;
        let call = Call::new("check group", Method::HEAD, path);
        self.execute(&call).await?.exists(&call)
    }

    /// Whether a user is in a group (200 → true, 404 → false). Uses HEAD, as the spec
    /// documents (the .NET SDK sends GET; the emulator and the service answer both).
    pub async fn user_in_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
    ) -> Result<bool, RestError> {
        let path = self.api().user_group(hub, group, user)?;
        let call = Call::new("check user in group", Method::HEAD, path);
        self.execute(&call).await?.exists(&call)
    }

    /// Connection, user and group counts of a hub: `GET {hub}/presence`. Only herald's
    /// embedded service has it (Azure answers 404, an `Err` with that status).
    pub async fn presence(&self, hub: &str) -> Result<Presence, RestError> {
        let call = Call::new("presence", Method::GET, self.api().presence(hub)?);
        let answer = self.execute(&call).await?;
        if !answer.status.is_success() {
            return Err(answer.into_error(&call));
        }
        serde_json::from_slice(&answer.content).map_err(|e| RestError::Status {
            method: call.method.clone(),
            path: call.path.clone(),
            status: answer.status,
            error_code: None,
            body: format!("not a presence answer: {e}"),
            retry_after: None,
        })
    }

    /// The service's health probe: `HEAD /api/health` (or `/api/v1/health`).
    pub async fn health(&self) -> Result<(), RestError> {
        let call = Call::new("health", Method::HEAD, self.api().health().to_string());
        self.execute(&call).await?.success(&call)
    }

    fn api(&self) -> super::ApiVersion {
        self.inner.options.api
    }

    /// Send `call`, retrying connection errors, timeouts, 429 and 5xx with jittered
    /// exponential backoff (or `Retry-After`, capped). Returns the final answer, whatever
    /// its status; only a transport failure on the last attempt is an `Err`.
    async fn execute(&self, call: &Call) -> Result<Answer, RestError> {
        let inner = &*self.inner;
        let options = &inner.options;

        // The audience is the API path on `Endpoint`'s scheme://host (no port), with
        // `?api-version=` in 2022-06-01 (the SDK's form) and without the extra query.
        let audience = inner
            .endpoint
            .rest_audience(&options.api.audience_path(&call.path));
        let mut query: Vec<String> = options.api.version_query().into_iter().collect();
        query.extend(
            call.extra_query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_segment(v))),
        );
        let mut url = format!("{}{}", inner.base, call.path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let url = Url::parse(&url).map_err(|e| {
            RestError::InvalidArgument(format!("request URL for {} is invalid: {e}", call.path))
        })?;
        let token = token::mint_rest(
            inner.endpoint.access_key(),
            &audience,
            &options.server_name,
            TOKEN_TTL,
        )?;

        let attempts = options.max_retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            let mut request = inner
                .http
                .request(call.method.clone(), url.clone())
                .bearer_auth(&token);
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(id) = &call.message_id {
                request = request.header(super::MESSAGE_ID_HEADER, id);
            }
            let (delay, reason) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if !retry::is_retryable_status(status) || attempt >= attempts {
                        return Ok(Answer::read(response, call.method == Method::GET).await);
                    }
                    let delay = retry::delay_after_answer(
                        response.headers(),
                        attempt,
                        options.base_backoff,
                        options.max_backoff,
                    );
                    (delay, format!("HTTP {status}"))
                }
                Err(e) => {
                    if !retry::is_retryable_transport(&e) || attempt >= attempts {
                        return Err(RestError::Transport {
                            method: call.method.clone(),
                            path: call.path.clone(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    let delay = retry::backoff(attempt, options.base_backoff, options.max_backoff);
                    (delay, transport_kind(&e).to_string())
                }
            };
            tracing::warn!(
                operation = call.operation,
                method = %call.method,
                path = %call.path,
                attempt,
                attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                reason = %reason,
                "SignalR REST call failed; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Answer {
    /// Keep the status, the `x-ms-error-code` header and, for errors, a body excerpt. A body
    /// that cannot be read is described rather than failing the call: the status says enough.
    async fn read(response: reqwest::Response, keep_content: bool) -> Answer {
        let status = response.status();
        let error_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = retry::retry_after(response.headers(), std::time::SystemTime::now());
        let mut content = Bytes::new();
        let body = if status.is_success() {
            if keep_content {
                match response.bytes().await {
                    Ok(bytes) => content = bytes,
                    Err(e) => {
                        return Answer {
                            status,
                            error_code,
                            body: format!("<body unreadable: {}>", transport_kind(&e)),
                            content,
                            retry_after,
                        };
                    }
                }
            }
            String::new()
        } else {
            match response.text().await {
                Ok(text) => excerpt(&text),
                Err(e) => format!("<body unreadable: {}>", transport_kind(&e)),
            }
        };
        Answer {
            status,
            error_code,
            body,
            content,
            retry_after,
        }
    }

    /// Any 2xx is success: the emulator answers 202 where the spec says 200 or 204.
    fn success(self, call: &Call) -> Result<(), RestError> {
        if self.status.is_success() {
            Ok(())
        } else {
            Err(self.into_error(call))
        }
    }

    /// Existence checks: 2xx → true, 404 → false, anything else is an error.
    fn exists(self, call: &Call) -> Result<bool, RestError> {
        if self.status.is_success() {
            Ok(true)
        } else if self.status == StatusCode::NOT_FOUND {
            if self.error_code.is_none() {
                // Azure marks a real "not there" with x-ms-error-code; without it the 404
                // may come from a wrong endpoint or proxy (facts §0.7).
                tracing::debug!(
                    operation = call.operation,
                    path = %call.path,
                    "404 without x-ms-error-code; reporting `false`"
                );
            }
            Ok(false)
        } else {
            Err(self.into_error(call))
        }
    }

    fn into_error(self, call: &Call) -> RestError {
        RestError::Status {
            method: call.method.clone(),
            path: call.path.clone(),
            status: self.status,
            error_code: self.error_code,
            body: self.body,
            retry_after: self.retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    #[test]
    fn debug_hides_the_key() {
        crate::install_crypto();
        let endpoint = ServiceEndpoint::new("http://localhost", Some(8888), KEY).unwrap();
        let client = EndpointClient::new(endpoint, RestOptions::default()).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(client.options().server_name.starts_with("herald_"));
    }
}
