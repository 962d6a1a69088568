//! `RestClient`: the data-plane REST API of Azure SignalR Service (and of herald's embedded
//! service, which mirrors it): sends to all/user/group/connection, group membership,
//! existence checks, closing connections and health. Owns the 1 MB body limit, per-request
//! timeouts, retries with jittered backoff, and `RestError`.
//!
//! Paths and audiences follow the 2022-06-01 API (facts §4.1, §4.3), with the legacy `/api/v1`
//! paths (facts §4.2) available through [`ApiVersion::V1`].

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::message::{Message, Recipient};
use crate::signalr::ServiceEndpoint;
use crate::signalr::names;
use crate::signalr::token::{self, TokenError};

/// The `api-version` query value of every 2022-06-01 call.
pub const API_VERSION_2022_06_01: &str = "2022-06-01";

/// The service refuses request bodies over 1 MB (facts §4.1); herald refuses them first, so
/// an oversized message fails fast and is never retried.
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// Lifetime of each REST token. A token is minted per call, so this only has to outlive the
/// call with its retries; one hour is the SDK's default.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How much of an error response body is kept in [`RestError::Status`].
const BODY_EXCERPT_CHARS: usize = 512;

/// Which REST API paths to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    /// `/api/hubs/...` with `?api-version=2022-06-01` (the current API).
    #[default]
    V2022_06_01,
    /// The legacy `/api/v1/hubs/...` paths, no `api-version` query.
    V1,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::V2022_06_01 => "2022-06-01",
            ApiVersion::V1 => "v1",
        })
    }
}

/// How a [`RestClient`] talks to the service.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Which API paths to use.
    pub api: ApiVersion,
    /// Limit for one HTTP request (connect, send, and read of the answer).
    pub timeout: Duration,
    /// Retries after the first attempt, for connection errors, timeouts, 429 and 5xx only.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled per retry, then fully jittered.
    pub base_backoff: Duration,
    /// Ceiling of any backoff, including one asked for by `Retry-After`.
    pub max_backoff: Duration,
    /// The `nameid` claim of REST tokens: which server made the call.
    pub server_name: String,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            api: ApiVersion::default(),
            timeout: Duration::from_secs(10),
            max_retries: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            server_name: default_server_name(),
        }
    }
}

/// `herald_<hostname>`, or `herald_<random>` where the host name cannot be read (the SDK
/// uses `<MachineName>_<guid>`).
fn default_server_name() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let host = from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    format!("herald_{host}")
}

/// Why a REST call failed. Never carries the access key or a token.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The JSON body is over [`MAX_BODY_BYTES`]; nothing was sent.
    #[error(
        "message body is {size} bytes, over the service limit of {limit} bytes (1 MB); not sent"
    )]
    TooLarge { size: usize, limit: usize },
    /// The service answered with a non-success status (after any retries).
    #[error("{method} {path} answered HTTP {status}{}{}", code_suffix(.error_code), body_suffix(.body))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        /// The `x-ms-error-code` header (e.g. `Warning.Connection.NotExisted`).
        error_code: Option<String>,
        /// The start of the response body, trimmed.
        body: String,
    },
    /// No answer: connection refused or reset, or the request timed out (after any retries).
    #[error("{method} {path} failed after {attempts} attempt(s): {}", transport_kind(.source))]
    Transport {
        method: Method,
        path: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The REST access token could not be minted.
    #[error("could not mint the REST access token")]
    Token(#[from] TokenError),
    /// An argument cannot be sent (bad hub name, empty id, empty target...); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation has no path in the chosen API version.
    #[error("{operation} is not available in the {api} REST API")]
    Unsupported {
        operation: &'static str,
        api: ApiVersion,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl RestError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RestError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `x-ms-error-code` header, when the service answered with one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            RestError::Status { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    /// Whether the service answered 404 (e.g. removing a connection that is gone).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection error"
    }
}

/// A client for one service endpoint. Cheap to clone: the state sits behind one `Arc`, so
/// the daemon's handlers and scheduler tasks share one connection pool.
#[derive(Clone)]
pub struct RestClient {
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

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `ServiceEndpoint`'s Debug redacts the key.
        f.debug_struct("RestClient")
            .field("endpoint", &self.inner.endpoint)
            .field("options", &self.inner.options)
            .finish()
    }
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
}

impl Call {
    fn new(operation: &'static str, method: Method, path: String) -> Self {
        Call {
            operation,
            method,
            path,
            extra_query: Vec::new(),
            body: None,
        }
    }
}

/// What the service finally answered (2xx, or an error status after retries ran out).
struct Answer {
    status: StatusCode,
    error_code: Option<String>,
    body: String,
}

impl RestClient {
    /// A client for `endpoint`. Builds one reqwest client (rustls) with `options.timeout`.
    pub fn new(endpoint: ServiceEndpoint, options: RestOptions) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RestError::Client)?;
        let base = endpoint.rest_base();
        Ok(RestClient {
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
        if message.target.is_empty() {
            return Err(RestError::InvalidArgument(
                "message target (client method name) is empty".into(),
            ));
        }
        let body = serde_json::to_vec(&message.payload()).map_err(|e| {
            RestError::InvalidArgument(format!("message arguments cannot be serialised: {e}"))
        })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(RestError::TooLarge {
                size: body.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        let hub = self.hub_path(&message.hub)?;
        // 2022-06-01 sends end in `/:send`; v1 posts to the resource itself.
        let send = match self.inner.options.api {
            ApiVersion::V2022_06_01 => "/:send",
            ApiVersion::V1 => "",
        };
        let (operation, path, takes_excluded) = match &message.to {
            Recipient::All => ("send to hub", format!("{hub}{send}"), true),
            Recipient::User(user) => (
                "send to user",
                format!("{hub}/users/{}{send}", segment(names::user, user)?),
                false,
            ),
            Recipient::Group(group) => (
                "send to group",
                format!("{hub}/groups/{}{send}", segment(names::group, group)?),
                true,
            ),
            Recipient::Connection(connection) => (
                "send to connection",
                format!(
                    "{hub}/connections/{}{send}",
                    segment(names::connection, connection)?
                ),
                false,
            ),
        };
        let mut call = Call::new(operation, Method::POST, path);
        if takes_excluded {
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
        self.execute(&call).await?.success(&call)
    }

    /// Add one connection to a group.
    pub async fn add_connection_to_group(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<(), RestError> {
        let path = self.group_connection_path(hub, group, connection)?;
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
        let path = self.group_connection_path(hub, group, connection)?;
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
        let path = self.user_group_path(hub, group, user)?;
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
        let path = self.user_group_path(hub, group, user)?;
        let call = Call::new("remove user from group", Method::DELETE, path);
        self.execute(&call).await?.success(&call)
    }

    /// Remove a user from every group of the hub.
    pub async fn remove_user_from_all_groups(
        &self,
        hub: &str,
        user: &str,
    ) -> Result<(), RestError> {
        let path = format!(
            "{}/users/{}/groups",
            self.hub_path(hub)?,
            segment(names::user, user)?
        );
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
        if self.inner.options.api == ApiVersion::V1 {
            return Err(RestError::Unsupported {
                operation: OPERATION,
                api: ApiVersion::V1,
            });
        }
        let path = format!(
            "{}/connections/{}/groups",
            self.hub_path(hub)?,
            segment(names::connection, connection)?
        );
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
            self.connection_path(hub, connection)?,
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
            self.connection_path(hub, connection)?,
        );
        self.execute(&call).await?.exists(&call)
    }

    /// Whether a user has any connection to the hub (200 → true, 404 → false).
    pub async fn user_exists(&self, hub: &str, user: &str) -> Result<bool, RestError> {
        let path = format!(
            "{}/users/{}",
            self.hub_path(hub)?,
            segment(names::user, user)?
        );
        let call = Call::new("check user", Method::HEAD, path);
        self.execute(&call).await?.exists(&call)
    }

    /// Whether a group has any connection (200 → true, 404 → false).
    pub async fn group_exists(&self, hub: &str, group: &str) -> Result<bool, RestError> {
        let path = format!(
            "{}/groups/{}",
            self.hub_path(hub)?,
            segment(names::group, group)?
        );
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
        let path = self.user_group_path(hub, group, user)?;
        let call = Call::new("check user in group", Method::HEAD, path);
        self.execute(&call).await?.exists(&call)
    }

    /// The service's health probe: `HEAD /api/health` (or `/api/v1/health`).
    pub async fn health(&self) -> Result<(), RestError> {
        let path = match self.inner.options.api {
            ApiVersion::V2022_06_01 => "/api/health",
            ApiVersion::V1 => "/api/v1/health",
        };
        let call = Call::new("health", Method::HEAD, path.to_string());
        self.execute(&call).await?.success(&call)
    }

    /// `/api/hubs/{hub}` or `/api/v1/hubs/{hub}`, hub validated and lowercased.
    fn hub_path(&self, hub: &str) -> Result<String, RestError> {
        names::hub(hub).map_err(|e| RestError::InvalidArgument(e.to_string()))?;
        let prefix = match self.inner.options.api {
            ApiVersion::V2022_06_01 => "/api/hubs",
            ApiVersion::V1 => "/api/v1/hubs",
        };
        Ok(format!("{prefix}/{}", encode_segment(&hub.to_lowercase())))
    }

    fn connection_path(&self, hub: &str, connection: &str) -> Result<String, RestError> {
        Ok(format!(
            "{}/connections/{}",
            self.hub_path(hub)?,
            segment(names::connection, connection)?
        ))
    }

    /// 2022-06-01 and v1 agree: `groups/{group}/connections/{connection}`.
    fn group_connection_path(
        &self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<String, RestError> {
        Ok(format!(
            "{}/groups/{}/connections/{}",
            self.hub_path(hub)?,
            segment(names::group, group)?,
            segment(names::connection, connection)?
        ))
    }

    /// 2022-06-01: `users/{user}/groups/{group}`; v1: `groups/{group}/users/{user}`.
    fn user_group_path(&self, hub: &str, group: &str, user: &str) -> Result<String, RestError> {
        let hub = self.hub_path(hub)?;
        let group = segment(names::group, group)?;
        let user = segment(names::user, user)?;
        Ok(match self.inner.options.api {
            ApiVersion::V2022_06_01 => format!("{hub}/users/{user}/groups/{group}"),
            ApiVersion::V1 => format!("{hub}/groups/{group}/users/{user}"),
        })
    }

    /// Send `call`, retrying connection errors, timeouts, 429 and 5xx with jittered
    /// exponential backoff (or `Retry-After`, capped). Returns the final answer, whatever
    /// its status; only a transport failure on the last attempt is an `Err`.
    async fn execute(&self, call: &Call) -> Result<Answer, RestError> {
        let inner = &*self.inner;
        let options = &inner.options;

        // The audience is the API path on `Endpoint`'s scheme://host (no port), with
        // `?api-version=` in 2022-06-01 (the SDK's form) and without the extra query.
        let mut query = Vec::new();
        let audience = match options.api {
            ApiVersion::V2022_06_01 => {
                query.push(format!("api-version={API_VERSION_2022_06_01}"));
                inner.endpoint.rest_audience(&format!(
                    "{}?api-version={API_VERSION_2022_06_01}",
                    call.path
                ))
            }
            ApiVersion::V1 => inner.endpoint.rest_audience(&call.path),
        };
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
            let (delay, reason) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retryable || attempt >= attempts {
                        return Ok(Answer::read(response).await);
                    }
                    let delay = retry_after(response.headers())
                        .map(|d| d.min(options.max_backoff))
                        .unwrap_or_else(|| self.backoff(attempt));
                    (delay, format!("HTTP {status}"))
                }
                Err(e) => {
                    if !is_retryable_transport(&e) || attempt >= attempts {
                        return Err(RestError::Transport {
                            method: call.method.clone(),
                            path: call.path.clone(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    (self.backoff(attempt), transport_kind(&e).to_string())
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

    /// Full jitter: uniform in `[0, min(max_backoff, base_backoff * 2^(attempt-1))]`, so
    /// that many senders hit by the same outage do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let options = &self.inner.options;
        let exponential = options
            .base_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        exponential
            .min(options.max_backoff)
            .mul_f64(rand::random::<f64>())
    }
}

impl Answer {
    /// Keep the status, the `x-ms-error-code` header and, for errors, a body excerpt. A body
    /// that cannot be read is described rather than failing the call: the status says enough.
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let error_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = if status.is_success() {
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
        }
    }
}

/// `Retry-After` in its delta-seconds form (the HTTP-date form is not used by the service
/// and falls back to the computed backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Connection failures and timeouts are worth another try; so is a connection dropped
/// under the request (reset, broken pipe, early EOF). Anything else (a bad URL, a body
/// error) would fail again.
fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_connect() || e.is_timeout() {
        return true;
    }
    let mut cause = e.source();
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset
                    | ConnectionAborted
                    | ConnectionRefused
                    | BrokenPipe
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// The trimmed start of an error body, at most [`BODY_EXCERPT_CHARS`] characters.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A checked name (see [`names`]) as one percent-encoded path segment.
fn segment(
    check: fn(&str) -> Result<(), names::NameError>,
    value: &str,
) -> Result<String, RestError> {
    check(value).map_err(|e| RestError::InvalidArgument(e.to_string()))?;
    Ok(encode_segment(value))
}

/// Percent-encode everything but RFC 3986 unreserved characters (as .NET's
/// `Uri.EscapeDataString`), so ids with spaces, `/`, `?`, `#` or `%` stay one segment or one
/// query value.
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    const SERVER_NAME: &str = "herald_test";

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        query: String,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
    }

    /// One scripted answer; when the script runs out the server answers 202.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
        delay: Duration,
    }

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: "",
            delay: Duration::ZERO,
        }
    }

    impl Reply {
        fn header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((name, value.to_string()));
            self
        }
        fn body(mut self, body: &'static str) -> Self {
            self.body = body;
            self
        }
        fn delay(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<Mutex<Vec<Seen>>>,
        script: Arc<Mutex<VecDeque<Reply>>>,
    }

    impl Recorder {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn record(State(rec): State<Recorder>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        rec.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers: parts.headers,
            body: body.to_vec(),
        });
        let reply = rec
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| reply(202));
        tokio::time::sleep(reply.delay).await;
        let mut response = Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(*name, value);
        }
        response.body(Body::from(reply.body)).unwrap()
    }

    /// An in-test service on 127.0.0.1:0 that records requests and plays `script`.
    async fn server(script: Vec<Reply>) -> (SocketAddr, Recorder) {
        let rec = Recorder::default();
        rec.script.lock().unwrap().extend(script);
        let app = axum::Router::new().fallback(record).with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (addr, rec)
    }

    fn options(api: ApiVersion) -> RestOptions {
        RestOptions {
            api,
            timeout: Duration::from_secs(5),
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
            server_name: SERVER_NAME.into(),
        }
    }

    /// A client whose Endpoint has no port and whose `Port` points at the test server, so
    /// every audience must come out without the port.
    fn client(addr: SocketAddr, options: RestOptions) -> RestClient {
        crate::install_crypto();
        let endpoint = ServiceEndpoint::from_connection_string(&format!(
            "Endpoint=http://127.0.0.1;Port={};AccessKey={KEY};Version=1.0;",
            addr.port()
        ))
        .unwrap();
        RestClient::new(endpoint, options).unwrap()
    }

    fn query_pairs(query: &str) -> Vec<(String, String)> {
        Url::parse(&format!("http://x/?{query}"))
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// What one operation must have put on the wire.
    struct Expect {
        method: &'static str,
        path: &'static str,
        extra_query: Vec<(&'static str, &'static str)>,
        body: Option<Vec<u8>>,
    }

    fn expect(method: &'static str, path: &'static str) -> Expect {
        Expect {
            method,
            path,
            extra_query: Vec::new(),
            body: None,
        }
    }

    impl Expect {
        fn query(mut self, key: &'static str, value: &'static str) -> Self {
            self.extra_query.push((key, value));
            self
        }
        fn body(mut self, body: Vec<u8>) -> Self {
            self.body = Some(body);
            self
        }
    }

    fn check(seen: &Seen, want: &Expect, api: ApiVersion) {
        let label = format!("{} {}", want.method, want.path);
        assert_eq!(seen.method, want.method, "{label}");
        assert_eq!(seen.path, want.path, "{label}");

        let mut query = Vec::new();
        if api == ApiVersion::V2022_06_01 {
            query.push(("api-version".to_string(), "2022-06-01".to_string()));
        }
        query.extend(
            want.extra_query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(query_pairs(&seen.query), query, "{label}: query");

        match &want.body {
            Some(body) => {
                assert_eq!(&seen.body, body, "{label}: body");
                assert_eq!(
                    seen.headers.get("content-type").unwrap(),
                    "application/json",
                    "{label}"
                );
            }
            None => assert!(seen.body.is_empty(), "{label}: body"),
        }

        // The token verifies with the key, and its audience is the API path on the
        // Endpoint's host with no port, plus `?api-version=` in 2022-06-01 only.
        let auth = seen.headers.get("authorization").unwrap().to_str().unwrap();
        let jwt = auth.strip_prefix("Bearer ").unwrap();
        let audience = match api {
            ApiVersion::V2022_06_01 => {
                format!("http://127.0.0.1{}?api-version=2022-06-01", want.path)
            }
            ApiVersion::V1 => format!("http://127.0.0.1{}", want.path),
        };
        let claims = token::verify(jwt, &[KEY], &audience).unwrap();
        assert_eq!(claims.aud, audience, "{label}: aud");
        assert_eq!(claims.nameid.as_deref(), Some(SERVER_NAME));
    }

    fn message(to: Recipient, excluded: &[&str]) -> Message {
        Message {
            hub: "Chat".into(),
            to,
            target: "newMessage".into(),
            arguments: vec![
                serde_json::json!("alice"),
                serde_json::json!({"text": "hi"}),
            ],
            excluded: excluded.iter().map(|s| s.to_string()).collect(),
        }
    }

    const USER: &str = "alice smith/1";
    const GROUP: &str = "ops team?#%";
    const CONN: &str = "conn-1";

    /// Every operation and every recipient kind, in one pass over one server.
    async fn run_every_operation(client: &RestClient) {
        for to in [
            Recipient::All,
            Recipient::User(USER.into()),
            Recipient::Group(GROUP.into()),
            Recipient::Connection(CONN.into()),
        ] {
            client.send(&message(to, &["a", "b c"])).await.unwrap();
        }
        client
            .add_connection_to_group("Chat", GROUP, CONN)
            .await
            .unwrap();
        client
            .remove_connection_from_group("Chat", GROUP, CONN)
            .await
            .unwrap();
        client
            .add_user_to_group("Chat", GROUP, USER, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        client
            .add_user_to_group("Chat", GROUP, USER, None)
            .await
            .unwrap();
        client
            .remove_user_from_group("Chat", GROUP, USER)
            .await
            .unwrap();
        client
            .remove_user_from_all_groups("Chat", USER)
            .await
            .unwrap();
        client
            .close_connection("Chat", CONN, Some("bye now"))
            .await
            .unwrap();
        client.close_connection("Chat", CONN, None).await.unwrap();
        assert!(client.connection_exists("Chat", CONN).await.unwrap());
        assert!(client.user_exists("Chat", USER).await.unwrap());
        assert!(client.group_exists("Chat", GROUP).await.unwrap());
        assert!(client.user_in_group("Chat", GROUP, USER).await.unwrap());
        client.health().await.unwrap();
    }

    /// The body every test send must carry: `Message::payload()` serialised, which is
    /// `{"target":"newMessage","arguments":["alice",{"text":"hi"}]}` (key order is
    /// serde_json's).
    fn payload() -> Vec<u8> {
        let body = serde_json::to_vec(&message(Recipient::All, &[]).payload()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"target": "newMessage", "arguments": ["alice", {"text": "hi"}]})
        );
        body
    }

    #[tokio::test]
    async fn every_operation_2022_06_01() {
        let (addr, rec) = server(vec![]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        run_every_operation(&client).await;
        client
            .remove_connection_from_all_groups("Chat", CONN)
            .await
            .unwrap();

        let want = [
            expect("POST", "/api/hubs/chat/:send")
                .query("excluded", "a")
                .query("excluded", "b c")
                .body(payload()),
            expect("POST", "/api/hubs/chat/users/alice%20smith%2F1/:send").body(payload()),
            expect("POST", "/api/hubs/chat/groups/ops%20team%3F%23%25/:send")
                .query("excluded", "a")
                .query("excluded", "b c")
                .body(payload()),
            expect("POST", "/api/hubs/chat/connections/conn-1/:send").body(payload()),
            expect(
                "PUT",
                "/api/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
            ),
            expect(
                "DELETE",
                "/api/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
            ),
            expect(
                "PUT",
                "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
            )
            .query("ttl", "60"),
            expect(
                "PUT",
                "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
            ),
            expect(
                "DELETE",
                "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
            ),
            expect("DELETE", "/api/hubs/chat/users/alice%20smith%2F1/groups"),
            expect("DELETE", "/api/hubs/chat/connections/conn-1").query("reason", "bye now"),
            expect("DELETE", "/api/hubs/chat/connections/conn-1"),
            expect("HEAD", "/api/hubs/chat/connections/conn-1"),
            expect("HEAD", "/api/hubs/chat/users/alice%20smith%2F1"),
            expect("HEAD", "/api/hubs/chat/groups/ops%20team%3F%23%25"),
            expect(
                "HEAD",
                "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
            ),
            expect("HEAD", "/api/health"),
            expect("DELETE", "/api/hubs/chat/connections/conn-1/groups"),
        ];
        let seen = rec.seen();
        assert_eq!(seen.len(), want.len());
        for (seen, want) in seen.iter().zip(&want) {
            check(seen, want, ApiVersion::V2022_06_01);
        }
        // `excluded` is repeated, not comma-joined.
        assert_eq!(
            seen[0].query,
            "api-version=2022-06-01&excluded=a&excluded=b%20c"
        );
    }

    #[tokio::test]
    async fn every_operation_v1_legacy_paths() {
        let (addr, rec) = server(vec![]).await;
        let client = client(addr, options(ApiVersion::V1));
        run_every_operation(&client).await;
        assert!(matches!(
            client.remove_connection_from_all_groups("Chat", CONN).await,
            Err(RestError::Unsupported {
                api: ApiVersion::V1,
                ..
            })
        ));

        let want = [
            expect("POST", "/api/v1/hubs/chat")
                .query("excluded", "a")
                .query("excluded", "b c")
                .body(payload()),
            expect("POST", "/api/v1/hubs/chat/users/alice%20smith%2F1").body(payload()),
            expect("POST", "/api/v1/hubs/chat/groups/ops%20team%3F%23%25")
                .query("excluded", "a")
                .query("excluded", "b c")
                .body(payload()),
            expect("POST", "/api/v1/hubs/chat/connections/conn-1").body(payload()),
            expect(
                "PUT",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
            ),
            expect(
                "DELETE",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
            ),
            expect(
                "PUT",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
            )
            .query("ttl", "60"),
            expect(
                "PUT",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
            ),
            expect(
                "DELETE",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
            ),
            expect("DELETE", "/api/v1/hubs/chat/users/alice%20smith%2F1/groups"),
            expect("DELETE", "/api/v1/hubs/chat/connections/conn-1").query("reason", "bye now"),
            expect("DELETE", "/api/v1/hubs/chat/connections/conn-1"),
            expect("HEAD", "/api/v1/hubs/chat/connections/conn-1"),
            expect("HEAD", "/api/v1/hubs/chat/users/alice%20smith%2F1"),
            expect("HEAD", "/api/v1/hubs/chat/groups/ops%20team%3F%23%25"),
            expect(
                "HEAD",
                "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
            ),
            expect("HEAD", "/api/v1/health"),
        ];
        let seen = rec.seen();
        assert_eq!(seen.len(), want.len());
        for (seen, want) in seen.iter().zip(&want) {
            check(seen, want, ApiVersion::V1);
        }
    }

    #[tokio::test]
    async fn any_2xx_is_success() {
        let (addr, rec) = server(vec![reply(200), reply(204), reply(202)]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        client
            .add_user_to_group("chat", "g", "u", None)
            .await
            .unwrap();
        client
            .remove_user_from_group("chat", "g", "u")
            .await
            .unwrap();
        client.send(&message(Recipient::All, &[])).await.unwrap();
        assert_eq!(rec.seen().len(), 3);
    }

    #[tokio::test]
    async fn existence_checks_map_404_to_false() {
        let not_found = |code: &str| reply(404).header("x-ms-error-code", code);
        let (addr, rec) = server(vec![
            not_found("Warning.Connection.NotExisted"),
            not_found("Warning.User.NotExisted"),
            not_found("Warning.Group.NotExisted"),
            not_found("Info.User.NotInGroup"),
            reply(404),
            reply(200),
            reply(401),
        ])
        .await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        assert!(!client.connection_exists("chat", "c").await.unwrap());
        assert!(!client.user_exists("chat", "u").await.unwrap());
        assert!(!client.group_exists("chat", "g").await.unwrap());
        assert!(!client.user_in_group("chat", "g", "u").await.unwrap());
        assert!(!client.group_exists("chat", "g").await.unwrap());
        assert!(client.group_exists("chat", "g").await.unwrap());
        let err = client.group_exists("chat", "g").await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(rec.seen().len(), 7);
    }

    #[tokio::test]
    async fn error_status_carries_code_and_body_excerpt() {
        let (addr, rec) = server(vec![
            reply(404)
                .header("x-ms-error-code", "Error.Connection.NotExisted")
                .body("  {\"code\":\"Error.Connection.NotExisted\",\"message\":\"gone\"}\n"),
        ])
        .await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        let err = client
            .add_connection_to_group("chat", "g", "c")
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.error_code(), Some("Error.Connection.NotExisted"));
        assert_eq!(
            err.to_string(),
            "PUT /api/hubs/chat/groups/g/connections/c answered HTTP 404 Not Found \
             (Error.Connection.NotExisted): \
             {\"code\":\"Error.Connection.NotExisted\",\"message\":\"gone\"}"
        );
        assert!(!err.to_string().contains(KEY));
        assert_eq!(rec.seen().len(), 1);
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "é".repeat(2000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let (addr, rec) = server(vec![reply(503)]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        client.send(&message(Recipient::All, &[])).await.unwrap();
        let seen = rec.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body, seen[1].body);
        assert_eq!(seen[0].path, seen[1].path);
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let (addr, rec) = server(vec![reply(429).header("retry-after", "1")]).await;
        let mut opts = options(ApiVersion::V2022_06_01);
        opts.max_backoff = Duration::from_secs(5);
        let client = client(addr, opts);
        let started = Instant::now();
        client.send(&message(Recipient::All, &[])).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(950));
        assert_eq!(rec.seen().len(), 2);
    }

    #[tokio::test]
    async fn retry_after_is_capped_at_max_backoff() {
        let (addr, rec) = server(vec![reply(503).header("retry-after", "3600")]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        let started = Instant::now();
        client.send(&message(Recipient::All, &[])).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(rec.seen().len(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let (addr, rec) = server(vec![reply(500), reply(502), reply(503), reply(504)]).await;
        let mut opts = options(ApiVersion::V2022_06_01);
        opts.max_retries = 2;
        let client = client(addr, opts);
        let err = client
            .send(&message(Recipient::All, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(rec.seen().len(), 3);
    }

    #[tokio::test]
    async fn no_retry_on_4xx_other_than_429() {
        for status in [400, 401, 403, 404, 413] {
            let (addr, rec) = server(vec![reply(status).body("bad")]).await;
            let client = client(addr, options(ApiVersion::V2022_06_01));
            let err = client
                .send(&message(Recipient::All, &[]))
                .await
                .unwrap_err();
            assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
            assert_eq!(rec.seen().len(), 1, "{status}");
        }
    }

    #[tokio::test]
    async fn timeouts_are_retried() {
        let (addr, rec) = server(vec![reply(202).delay(Duration::from_secs(3))]).await;
        let mut opts = options(ApiVersion::V2022_06_01);
        opts.timeout = Duration::from_millis(300);
        let client = client(addr, opts);
        client.send(&message(Recipient::All, &[])).await.unwrap();
        assert_eq!(rec.seen().len(), 2);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        // Bind and drop to get a port nobody listens on.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut opts = options(ApiVersion::V2022_06_01);
        opts.max_retries = 2;
        let client = client(addr, opts);
        let err = client.health().await.unwrap_err();
        match &err {
            RestError::Transport { attempts, .. } => assert_eq!(*attempts, 3),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "HEAD /api/health failed after 3 attempt(s): could not connect"
        );
    }

    #[tokio::test]
    async fn bodies_over_1_mb_are_refused_before_sending() {
        let (addr, rec) = server(vec![]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        let mut big = message(Recipient::All, &[]);
        big.arguments = vec![serde_json::json!("x".repeat(MAX_BODY_BYTES))];
        let err = client.send(&big).await.unwrap_err();
        let size = serde_json::to_vec(&big.payload()).unwrap().len();
        assert!(matches!(err, RestError::TooLarge { size: s, limit: MAX_BODY_BYTES } if s == size));
        assert!(err.to_string().contains(&size.to_string()));
        assert!(rec.seen().is_empty());

        // Exactly at the limit is allowed.
        let overhead = size - MAX_BODY_BYTES;
        big.arguments = vec![serde_json::json!("x".repeat(MAX_BODY_BYTES - overhead))];
        client.send(&big).await.unwrap();
        assert_eq!(rec.seen()[0].body.len(), MAX_BODY_BYTES);
    }

    #[tokio::test]
    async fn invalid_arguments_send_nothing() {
        let (addr, rec) = server(vec![]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        let invalid = |r: Result<(), RestError>| matches!(r, Err(RestError::InvalidArgument(_)));
        let mut m = message(Recipient::All, &[]);
        m.hub = "1chat".into();
        assert!(invalid(client.send(&m).await));
        m.hub = "chat/x".into();
        assert!(invalid(client.send(&m).await));
        m.hub = "chat".into();
        m.target = String::new();
        assert!(invalid(client.send(&m).await));
        assert!(invalid(
            client
                .send(&message(Recipient::User(String::new()), &[]))
                .await
        ));
        assert!(invalid(
            client
                .send(&message(Recipient::Group("  ".into()), &[]))
                .await
        ));
        assert!(invalid(
            client
                .send(&message(Recipient::Group("..".into()), &[]))
                .await
        ));
        assert!(invalid(
            client
                .send(&message(Recipient::Group("g".repeat(1025)), &[]))
                .await
        ));
        assert!(invalid(
            client.add_connection_to_group("chat", "g", "").await
        ));
        assert!(rec.seen().is_empty());
    }

    #[tokio::test]
    async fn rest_base_from_server_endpoint_and_audience_from_endpoint() {
        let (addr, rec) = server(vec![]).await;
        crate::install_crypto();
        let endpoint = ServiceEndpoint::from_connection_string(&format!(
            "Endpoint=https://contoso.service.signalr.net;AccessKey={KEY};\
             ServerEndpoint=http://{addr}/"
        ))
        .unwrap();
        let client = RestClient::new(endpoint, options(ApiVersion::V2022_06_01)).unwrap();
        client.send(&message(Recipient::All, &[])).await.unwrap();
        let seen = rec.seen();
        let jwt = seen[0].headers["authorization"]
            .to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_string();
        let aud = "https://contoso.service.signalr.net/api/hubs/chat/:send?api-version=2022-06-01";
        assert_eq!(token::verify(&jwt, &[KEY], aud).unwrap().aud, aud);
    }

    #[test]
    fn debug_hides_the_key() {
        crate::install_crypto();
        let endpoint = ServiceEndpoint::new("http://localhost", Some(8888), KEY).unwrap();
        let client = RestClient::new(endpoint, RestOptions::default()).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(client.options().server_name.starts_with("herald_"));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        crate::install_crypto();
        let endpoint = ServiceEndpoint::new("http://localhost", None, KEY).unwrap();
        let mut opts = options(ApiVersion::V2022_06_01);
        opts.base_backoff = Duration::from_millis(100);
        opts.max_backoff = Duration::from_millis(350);
        let client = RestClient::new(endpoint, opts).unwrap();
        for _ in 0..200 {
            assert!(client.backoff(1) <= Duration::from_millis(100));
            assert!(client.backoff(2) <= Duration::from_millis(200));
            assert!(client.backoff(10) <= Duration::from_millis(350));
            assert!(client.backoff(u32::MAX) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn hub_names() {
        for ok in ["chat", "Chat_1", "a`,.[]", &"h".repeat(128)] {
            assert!(names::hub(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "_a", "a b", "a/b", "a-b", &"h".repeat(129)] {
            assert!(names::hub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            encode_segment("a b/c?d#e%f~g.h-i_j"),
            "a%20b%2Fc%3Fd%23e%25f~g.h-i_j"
        );
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
