//! The YAML shape of `notifications.yaml`: serde + schemars types with `deny_unknown_fields`
//! and a doc comment on every field. These types are the JSON Schema (`herald schema`); they
//! hold raw, unvalidated values. `config::compile` turns them into a validated `Config`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "herald notifications.yaml")]
pub struct RawConfig {
    /// Which SignalR service herald talks to: Azure SignalR Service (by connection string) or
    /// the embedded service.
    #[serde(default)]
    pub signalr: SignalrSection,
    /// The daemon's HTTP listener: negotiate endpoints, status routes, health and metrics.
    #[serde(default)]
    pub http: HttpSection,
    /// SignalR hubs by name. Clients connect to a hub through its negotiate endpoint.
    #[serde(default)]
    pub hubs: BTreeMap<String, HubSection>,
    /// Message templates by name: the client method (`target`) and its arguments.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSection>,
    /// Cron schedules by name: each renders a template and sends it into a hub.
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleSection>,
    /// HTTP status routes by name: each accepts a JSON body, renders a template and sends it.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteSection>,
    /// Log level and format.
    #[serde(default)]
    pub logging: LoggingSection,
    /// Azure Functions custom-handler mode (`herald functions init`, `herald run
    /// --custom-handler`): how the generated functions deliver messages.
    #[serde(default)]
    pub functions: FunctionsSection,
    /// Where herald keeps its durable state (outbox, idempotency keys, history, retained
    /// statuses) and how it writes it.
    #[serde(default)]
    pub state: StateSection,
    /// Several herald nodes as one logical service, sharing a Redis server: sends, group
    /// membership, presence, schedule fires and idempotency keys span every node. Absent:
    /// one node, nothing shared.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Client events by hub name: what herald does when a client connects, and which client
    /// methods (`connection.invoke("ack", id)`) it answers. The service forwards them to
    /// herald's upstream endpoint (`/runtime/webhooks/signalr`); anything not configured here
    /// is refused with a Completion error.
    #[serde(default)]
    pub events: BTreeMap<String, EventsSection>,
}

/// `cluster:` the Redis server the nodes share.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Redis URL, e.g. `redis://127.0.0.1:6379` or `redis://:password@host:6379/0`
    /// (`${REDIS_URL}` keeps a password out of the file).
    pub redis: String,
    /// This node's id in the cluster (logs, the backplane envelope, schedule locks). Default:
    /// a random id per start.
    #[serde(default)]
    pub node_id: Option<String>,
}

/// `events.<hub>:` the client events of one hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// What happens when a client connects.
    #[serde(default)]
    pub connected: ConnectedSection,
    /// Client method name -> what herald does when a client invokes it. Names compare
    /// case-insensitively, as SignalR hub methods do.
    #[serde(default)]
    pub methods: BTreeMap<String, MethodSection>,
}

/// `events.<hub>.connected:` on each new connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectedSection {
    /// Send the hub's retained statuses (routes and schedules with `retain: true`) to the new
    /// connection, oldest first, before it can receive anything newer.
    #[serde(default)]
    pub send_retained: bool,
}

/// `events.<hub>.methods.<name>:` one client method. Exactly one of `ack`, `join_group`,
/// `leave_group` and `relay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodSection {
    /// `invoke(name, messageId)` acknowledges a message herald sent: recorded with the
    /// connection, user and time, and listed by `GET /api/messages/{id}`.
    #[serde(default)]
    pub ack: Option<bool>,
    /// `invoke(name, group)` adds the calling connection to `group` when the name matches
    /// this pattern: `*` matches any run of characters, `{{ user }}` exactly the caller's
    /// user id (refused for anonymous connections), e.g. `orders-*`, `orders-{{ user }}`.
    #[serde(default)]
    pub join_group: Option<String>,
    /// `invoke(name, group)` removes the calling connection from `group` when the name
    /// matches this pattern (same syntax as `join_group`).
    #[serde(default)]
    pub leave_group: Option<String>,
    /// Render a template with the invocation's arguments and send it on, like a route.
    #[serde(default)]
    pub relay: Option<RelaySection>,
    /// Most invocations of this method accepted in a period, for all connections of the hub
    /// together; more are refused with a Completion error. Absent: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
}

/// `events.<hub>.methods.<name>.relay:` a client invocation rendered into a template and sent
/// through the outbox, like a route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Template to render. Variables: `args` (the invocation's arguments), `user`,
    /// `connection`, `hub`, `now` and `id` (the new message's id).
    pub template: String,
    /// Send to one user, group or connection instead of the whole hub (templates, e.g.
    /// `group: "{{ args[0] }}"`).
    #[serde(default)]
    pub to: Option<ToSection>,
}

/// `state:` the state database, one SQLite file (`herald.db`) in `dir`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Directory of the state database. Default: `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`), else `$XDG_STATE_HOME/herald`, else `~/.local/state/herald`.
    #[serde(default)]
    pub dir: Option<String>,
    /// How commits reach the disk: `full` (default; an accepted message survives a power
    /// cut) or `normal` (survives a crash of herald; a power cut may lose the last commits).
    #[serde(default)]
    pub synchronous: SynchronousSetting,
    /// How long an `Idempotency-Key` is remembered: a repeat within it gets the first answer
    /// and sends nothing. Default `24h`.
    #[serde(
        default = "default_idempotency_window",
        deserialize_with = "scalar_text"
    )]
    pub idempotency_window: String,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            dir: None,
            synchronous: SynchronousSetting::Full,
            idempotency_window: default_idempotency_window(),
        }
    }
}

fn default_idempotency_window() -> String {
    "24h".to_string()
}

/// `state.synchronous:` SQLite's `synchronous` level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousSetting {
    /// fsync at every commit.
    #[default]
    Full,
    /// fsync at checkpoints.
    Normal,
}

/// `hubs.<name>.history:` what herald keeps of the hub's delivered broadcasts and user
/// messages, for clients that reconnect (`GET /api/{hub}/history`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// Most messages kept; `0` keeps none (and turns the history endpoint off). Default 1000.
    #[serde(default = "default_history_keep")]
    pub keep: u32,
    /// Older messages are dropped, e.g. `7d` (default), `12h`.
    #[serde(default = "default_history_max_age", deserialize_with = "scalar_text")]
    pub max_age: String,
    /// Path of the history endpoint. Default: `/api/{hub}/history`.
    #[serde(default)]
    pub path: Option<String>,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            keep: default_history_keep(),
            max_age: default_history_max_age(),
            path: None,
        }
    }
}

fn default_history_keep() -> u32 {
    1000
}
fn default_history_max_age() -> String {
    "7d".to_string()
}

/// `signalr:` which service delivers messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalrSection {
    /// Azure SignalR Service connection string
    /// (`Endpoint=https://x.service.signalr.net;AccessKey=...;Version=1.0;`). Empty or absent:
    /// the environment variable `AzureSignalRConnectionString` is used, and when that is
    /// unset too, herald starts its embedded service. Never logged.
    #[serde(default)]
    pub connection_string: Option<String>,
    /// Several Azure SignalR Service instances, as the Azure SDK's multiple endpoints (for
    /// failover and regions), instead of `connection_string` (not both). Negotiate hands out
    /// a healthy primary, secondaries only while no primary is healthy; sends and group
    /// changes go to every endpoint that is not failing. At least one primary; names unique.
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointEntry>>,
    /// The embedded SignalR-compatible service, used when no connection string is set.
    #[serde(default)]
    pub embedded: EmbeddedSection,
    /// Version of the service's data-plane REST API herald calls: `2022-06-01` (default) or
    /// `v1` (the legacy `/api/v1/...` paths, for older emulators and self-hosted services).
    #[serde(default)]
    pub api_version: ApiVersionSetting,
}

/// One entry of `signalr.endpoints:`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointEntry {
    /// The instance's connection string
    /// (`Endpoint=https://x.service.signalr.net;AccessKey=...;Version=1.0;`). Never logged.
    pub connection_string: String,
    /// `primary` (default): handed out by negotiate while healthy; `secondary`: handed out
    /// only while no primary is healthy. Both receive every send and group change.
    #[serde(default)]
    pub role: EndpointRoleSetting,
    /// A unique name for logs, `/healthz` and the `endpoint` label of `herald_endpoint_up`.
    pub name: String,
}

/// `signalr.endpoints[].role:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointRoleSetting {
    /// Handed out by negotiate while healthy.
    #[default]
    Primary,
    /// Handed out by negotiate only while no primary is healthy.
    Secondary,
}

/// `signalr.api_version:` which data-plane REST API herald calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersionSetting {
    /// `/api/hubs/{hub}/...?api-version=2022-06-01`.
    #[default]
    #[serde(rename = "2022-06-01")]
    V2022_06_01,
    /// `/api/v1/hubs/{hub}/...`.
    #[serde(rename = "v1")]
    V1,
}

/// `signalr.embedded:` herald's own SignalR service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSection {
    /// Address the embedded service listens on (clients connect here after negotiate).
    #[serde(default = "default_embedded_listen")]
    pub listen: String,
    /// Access key that signs client and REST tokens (at least 16 characters). When absent, a
    /// random key is generated once and kept (mode 0600) in `$STATE_DIRECTORY`, else
    /// `$XDG_STATE_HOME/herald`, else `~/.local/state/herald`, so `herald token` and
    /// `herald send` sign with the same key as the running daemon.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Base URL handed to clients in negotiate, when they reach the service through a proxy
    /// (e.g. `https://signalr.example.com`). Default: `http://{listen}`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Most client connections served at once; more are refused with 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A TCP connection that has not sent a complete request head within this time is
    /// closed, e.g. `10s`.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "scalar_text"
    )]
    pub header_read_timeout: String,
    /// A keep-alive connection with no request in flight is closed after this time, e.g.
    /// `20s`. Open WebSocket, SSE and long-polling transports are not idle.
    #[serde(default = "default_idle_timeout", deserialize_with = "scalar_text")]
    pub idle_timeout: String,
}

fn default_header_read_timeout() -> String {
    "10s".to_string()
}
fn default_idle_timeout() -> String {
    "20s".to_string()
}

fn default_max_connections() -> usize {
    10_000
}

impl Default for EmbeddedSection {
    fn default() -> Self {
        EmbeddedSection {
            listen: default_embedded_listen(),
            access_key: None,
            public_url: None,
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_embedded_listen() -> String {
    "127.0.0.1:8888".to_string()
}

/// `http:` the daemon's HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, `host:port`.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Cross-origin requests from browsers.
    #[serde(default)]
    pub cors: CorsSection,
    /// Largest accepted request body, e.g. `64KiB`, `1MiB`, or a number of bytes.
    #[serde(default = "default_body_limit", deserialize_with = "scalar_text")]
    #[schemars(schema_with = "string_or_integer")]
    pub body_limit: String,
    /// Longest time a request may take before it is answered 503, e.g. `30s`.
    #[serde(default = "default_request_timeout", deserialize_with = "scalar_text")]
    pub request_timeout: String,
    /// A TCP connection that has not sent a complete request head within this time is
    /// closed, e.g. `10s`.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "scalar_text"
    )]
    pub header_read_timeout: String,
    /// A keep-alive connection with no request in flight is closed after this time, e.g.
    /// `20s`.
    #[serde(default = "default_idle_timeout", deserialize_with = "scalar_text")]
    pub idle_timeout: String,
    /// Serve the live status page at `/` (and its assets under `/status-page/`); `false`
    /// turns it off and `/` answers 404.
    #[serde(default = "default_status_page")]
    pub status_page: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_http_listen(),
            cors: CorsSection::default(),
            body_limit: default_body_limit(),
            request_timeout: default_request_timeout(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            status_page: default_status_page(),
        }
    }
}

/// Read a scalar as text: sizes may be written as plain numbers (`65536`), and a duration
/// written as a bare number gets a "needs a unit" message instead of a type error.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(u64),
        Float(f64),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
    })
}

fn optional_scalar_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    scalar_text(d).map(Some)
}

fn string_or_integer(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": ["string", "integer"], "minimum": 1 })
}

fn default_status_page() -> bool {
    true
}
fn default_http_listen() -> String {
    "127.0.0.1:7071".to_string()
}
fn default_body_limit() -> String {
    "64KiB".to_string()
}
fn default_request_timeout() -> String {
    "30s".to_string()
}

/// `http.cors:` allowed browser origins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Origins allowed to call herald from a browser, e.g. `https://app.example.com`.
    /// `"*"` allows any origin (the recipe's demo setting; herald warns about it). Empty: no
    /// CORS headers.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `hubs.<name>:` one SignalR hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The hub's negotiate endpoint.
    #[serde(default)]
    pub negotiate: NegotiateSection,
    /// What is kept of the hub's messages for clients that reconnect.
    #[serde(default)]
    pub history: HistorySection,
}

/// `hubs.<name>.negotiate:` how clients obtain connection info for the hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NegotiateSection {
    /// Path of the negotiate endpoint (GET and POST). Default: `/api/negotiate` when there is
    /// one hub, `/api/{hub}/negotiate` otherwise.
    #[serde(default)]
    pub path: Option<String>,
    /// Lifetime of the client access token, e.g. `1h`.
    #[serde(default, deserialize_with = "optional_scalar_text")]
    pub token_ttl: Option<String>,
    /// Where the connecting user's id comes from. Absent: connections are anonymous.
    #[serde(default)]
    pub user_id: Option<UserIdSection>,
}

/// `negotiate.user_id:` take the user id from a trusted header or a verified bearer token.
/// Exactly one of `header` and `bearer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIdSection {
    /// A header set by a trusted proxy, e.g. `x-ms-client-principal-id` (App Service auth).
    #[serde(default)]
    pub header: Option<String>,
    /// A bearer JWT in `Authorization`, verified; the user id is one of its claims.
    #[serde(default)]
    pub bearer: Option<JwtSection>,
    /// Refuse negotiate (401) when no user id can be found. Default: false (anonymous).
    #[serde(default)]
    pub required: bool,
}

/// A JWT verification rule. Exactly one of `secret` (HS256) and `public_key` (RS256 PEM).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Shared secret for HS256 tokens.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM-encoded RSA public key for RS256 tokens.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Required `iss` claim.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim that holds the user id. Default: `sub`.
    #[serde(default)]
    pub claim: Option<String>,
}

/// `templates.<name>:` a message: the client method and its arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    /// Client method name, what clients subscribe to with `connection.on("<target>", ...)`.
    /// May itself be a template.
    pub target: String,
    /// Positional arguments. Any JSON/YAML value; strings are templates (minijinja). A string
    /// that is exactly one `{{ expression }}` keeps the expression's JSON type. Variables:
    /// `now` (RFC 3339 UTC), the posted body's fields, `params`, `query`, `headers` (routes)
    /// and `schedule` (schedules).
    #[serde(default)]
    pub arguments: Vec<serde_json::Value>,
}

/// `to:` send to one user, group or connection instead of the whole hub. Exactly one key;
/// each value is a template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToSection {
    /// A user id (connections whose token carries it).
    #[serde(default)]
    pub user: Option<String>,
    /// A group name.
    #[serde(default)]
    pub group: Option<String>,
    /// A connection id.
    #[serde(default)]
    pub connection: Option<String>,
}

/// `schedules.<name>:` a cron-driven broadcast.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// NCRONTAB expression, 6 fields with seconds (`0 */30 * * * *` = every 30 minutes);
    /// 5 fields mean "at second 0".
    pub cron: String,
    /// IANA time zone the expression is read in. Default: `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Hub to send into.
    pub hub: String,
    /// Template to render.
    pub template: String,
    /// Send to one user, group or connection instead of the whole hub.
    #[serde(default)]
    pub to: Option<ToSection>,
    /// Also fire once when herald starts (and when the schedule is added by a reload).
    #[serde(default)]
    pub run_on_startup: bool,
    /// Keep the latest message as the schedule's current status (sent to new connections by
    /// `events.<hub>.connected.send_retained`).
    #[serde(default)]
    pub retain: bool,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// `routes.<name>:` an HTTP endpoint that turns a JSON POST into a message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// HTTP method. Default: `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path, with `{param}` segments available to templates as `params.param`.
    pub path: String,
    /// Hub to send into.
    pub hub: String,
    /// Template to render; the posted JSON object's fields are its variables.
    pub template: String,
    /// Send to one user, group or connection instead of the whole hub.
    #[serde(default)]
    pub to: Option<ToSection>,
    /// Who may call the route. Absent: anyone who can reach the listener.
    #[serde(default)]
    pub auth: Option<RouteAuthSection>,
    /// Most requests the route accepts in a period, for all callers together; more are
    /// answered 429 with `Retry-After`. Absent: no limit (routes are key-protected).
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
    /// Keep the latest message as the current status: `GET` on the route's path answers it
    /// as JSON (404 before the first), also after a restart.
    #[serde(default)]
    pub retain: bool,
}

/// `routes.<name>.rate_limit:` a token bucket (GCRA) shared by all callers of the route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests allowed per `per` (at least 1).
    pub requests: u32,
    /// The period, e.g. `1s`, `1m`. Default: `1s`.
    #[serde(default = "default_rate_period", deserialize_with = "scalar_text")]
    pub per: String,
    /// Requests that may arrive at once before the rate applies. Default: `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_rate_period() -> String {
    "1s".to_string()
}

fn default_method() -> String {
    "POST".to_string()
}

/// `routes.<name>.auth:` exactly one of `api_key` and `bearer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthSection {
    /// Key compared (in constant time) with the `X-API-Key` header.
    #[serde(default)]
    pub api_key: Option<String>,
    /// A bearer JWT in `Authorization`, verified.
    #[serde(default)]
    pub bearer: Option<JwtSection>,
}

/// `logging:` log output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// Level or filter (`error`, `warn`, `info`, `debug`, `trace`, or an `EnvFilter`
    /// directive). `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (human-readable) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: default_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_level() -> String {
    "info".to_string()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `functions:` settings for running as an Azure Functions custom handler.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionsSection {
    /// How route and timer functions deliver their message. `binding` (default): herald
    /// returns it as the function's `signalR` output binding and the Functions host sends it.
    /// `direct`: herald sends it itself through the service's REST API (connection string
    /// from `signalr.connection_string` or `AzureSignalRConnectionString`) and the generated
    /// functions have no `signalR` output.
    #[serde(default)]
    pub delivery: FunctionsDelivery,
}

/// Who sends a message rendered by a Functions invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionsDelivery {
    /// The Functions host, through the `signalR` output binding.
    #[default]
    Binding,
    /// herald, through the SignalR service's REST API.
    Direct,
}
