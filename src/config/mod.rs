//! Configuration: `load(path)` reads, validates and compiles `notifications.yaml` into an
//! immutable `Config`, collecting every error as `FILE:LINE:COL: message`. Startup,
//! `herald check` and reloads all call the same `load`.

pub mod compile;
pub mod diagnostic;
pub mod keypath;
pub mod live;
pub mod model;
pub mod schema;
pub mod source;
pub mod units;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Method};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

pub use diagnostic::{ConfigErrors, Diagnostic, Origin};
pub use model::FunctionsDelivery;

use crate::cron::CronSchedule;
use crate::message::{Message, Recipient};
use crate::signalr::ServiceEndpoint;
use crate::signalr::endpoints::NamedEndpoint;
use crate::template::{Compiled, TemplateError};

/// Read, validate and compile the config at `path` with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = source::read(path)?;
    compile::compile(&src, &|name| std::env::var(name).ok())
}

/// Validate and compile config `text` as if read from `path` (tests, `herald check` on stdin).
pub fn load_str(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let src = source::parse(path, text, lookup)?;
    compile::compile(&src, lookup)
}

/// A secret string (API key, access key): never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated configuration snapshot. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Hex SHA-256 of the file's text.
    pub content_hash: String,
    pub signalr: SignalrConfig,
    pub http: HttpConfig,
    pub logging: LoggingConfig,
    pub hubs: BTreeMap<String, Hub>,
    pub templates: BTreeMap<String, Arc<MessageTemplate>>,
    pub schedules: BTreeMap<String, Schedule>,
    pub routes: Vec<Route>,
    /// Negotiate paths and status routes, matched per request.
    pub endpoints: EndpointTable,
    /// Azure Functions custom-handler settings.
    pub functions: FunctionsConfig,
    /// The state database.
    pub state: StateConfig,
    /// `cluster:` the shared Redis; None: one node.
    pub cluster: Option<ClusterConfig>,
    /// The data-plane REST API version the REST client calls.
    pub api_version: crate::signalr::rest::ApiVersion,
    /// Client events by lowercased hub name (`events:`).
    pub events: BTreeMap<String, HubEvents>,
    /// Problems that do not stop herald (short API keys, CORS `*`).
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// The client events of `hub` (compared case-insensitively: Azure sends hub names
    /// lowercased upstream).
    pub fn events_of(&self, hub: &str) -> Option<&HubEvents> {
        self.events.get(&hub.to_ascii_lowercase())
    }

    /// Whether clients of `hub` can acknowledge messages (an `ack` method is configured):
    /// only then are its messages recorded for acknowledgement.
    pub fn acks_in(&self, hub: &str) -> bool {
        self.events_of(hub).is_some_and(|events| {
            events
                .methods
                .values()
                .any(|m| matches!(m.action, EventAction::Ack))
        })
    }

    /// The hub named `name`, compared case-insensitively.
    pub fn hub_named(&self, name: &str) -> Option<&Hub> {
        self.hubs.get(name).or_else(|| {
            self.hubs
                .values()
                .find(|h| h.name.eq_ignore_ascii_case(name))
        })
    }
}

/// `events.<hub>:` compiled.
#[derive(Debug)]
pub struct HubEvents {
    /// The hub's name as configured.
    pub hub: String,
    /// Send the hub's retained statuses to each new connection.
    pub send_retained: bool,
    /// Client methods by lowercased name.
    pub methods: BTreeMap<String, EventMethod>,
}

impl HubEvents {
    /// The method a client invoked, compared case-insensitively.
    pub fn method(&self, name: &str) -> Option<&EventMethod> {
        self.methods.get(&name.to_ascii_lowercase())
    }
}

/// One configured client method.
#[derive(Debug)]
pub struct EventMethod {
    /// The name as configured.
    pub name: String,
    pub action: EventAction,
    pub rate_limit: Option<RateLimit>,
}

/// What a client method does.
#[derive(Debug)]
pub enum EventAction {
    /// Record an acknowledgement of the message id in the first argument.
    Ack,
    /// Add the caller's connection to the group in the first argument, when it matches.
    JoinGroup(GroupPattern),
    /// Remove the caller's connection from the group in the first argument, when it matches.
    LeaveGroup(GroupPattern),
    /// Render the template with the invocation and send it through the outbox.
    Relay {
        template: Arc<MessageTemplate>,
        /// Boxed: a compiled recipient is large beside the other actions.
        to: Option<Box<ToTemplate>>,
    },
}

/// A group-name pattern: literal text, `*` (any run of characters) and `{{ user }}` (exactly
/// the caller's user id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPattern {
    /// The pattern as written.
    pub text: String,
    parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternPart {
    Literal(String),
    Star,
    User,
}

impl GroupPattern {
    /// Parse `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<GroupPattern, String> {
        if text.trim().is_empty() {
            return Err("the group pattern is empty".into());
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("{{") {
                let Some(end) = after.find("}}") else {
                    return Err(format!("`{{{{` without `}}}}` in `{text}`"));
                };
                if after[..end].trim() != "user" {
                    return Err(format!(
                        "only `{{{{ user }}}}` may appear in a group pattern, not `{{{{{}}}}}`",
                        &after[..end]
                    ));
                }
                if !literal.is_empty() {
                    parts.push(PatternPart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(PatternPart::User);
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix('*') {
                if !literal.is_empty() {
                    parts.push(PatternPart::Literal(std::mem::take(&mut literal)));
                }
                if parts.last() != Some(&PatternPart::Star) {
                    parts.push(PatternPart::Star);
                }
                rest = after;
            } else if rest.starts_with("}}") || rest.starts_with("{%") || rest.starts_with("{#") {
                return Err(format!(
                    "unexpected `{}` in `{text}`; only `*` and `{{{{ user }}}}` are special",
                    &rest[..2]
                ));
            } else {
                let c = rest.chars().next().unwrap_or_default();
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(PatternPart::Literal(literal));
        }
        Ok(GroupPattern {
            text: text.to_string(),
            parts,
        })
    }

    /// Whether the pattern names the caller's own groups (`{{ user }}`).
    pub fn needs_user(&self) -> bool {
        self.parts.contains(&PatternPart::User)
    }

    /// Whether `group` matches for a caller with `user` (None: anonymous, so a pattern with
    /// `{{ user }}` never matches).
    pub fn matches(&self, group: &str, user: Option<&str>) -> bool {
        if self.needs_user() && user.is_none_or(str::is_empty) {
            return false;
        }
        // `{{ user }}` is literal text once the user is known; what remains is a `*` glob:
        // literal segments between stars, matched leftmost in order (linear, no backtracking).
        let user = user.unwrap_or("");
        let mut segments: Vec<String> = vec![String::new()];
        for part in &self.parts {
            match part {
                PatternPart::Literal(l) => {
                    segments.last_mut().into_iter().for_each(|s| s.push_str(l))
                }
                PatternPart::User => segments
                    .last_mut()
                    .into_iter()
                    .for_each(|s| s.push_str(user)),
                PatternPart::Star => segments.push(String::new()),
            }
        }
        let (first, rest) = segments
            .split_first()
            .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        let Some(mut tail) = group.strip_prefix(first) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for seg in middle {
            match tail.find(seg.as_str()) {
                Some(i) => tail = &tail[i + seg.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// `functions:` compiled: how Functions invocations deliver messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionsConfig {
    pub delivery: FunctionsDelivery,
}

/// Which service delivers messages.
#[derive(Debug, Clone)]
pub enum SignalrConfig {
    /// Azure SignalR Service (or any service reached by connection string): one endpoint
    /// (`connection_string`, the environment; named `default`, primary) or the
    /// `signalr.endpoints` set. Never empty, at least one primary, names unique.
    Azure(Arc<Vec<NamedEndpoint>>),
    /// herald's embedded service.
    Embedded {
        listen: SocketAddr,
        access_key: Option<Secret>,
        public_url: Option<String>,
        max_connections: usize,
        /// Connection timeouts of the embedded service's listener.
        timeouts: ListenerTimeouts,
    },
}

impl SignalrConfig {
    /// The Azure endpoints, or `None` for the embedded service.
    pub fn azure_endpoints(&self) -> Option<&[NamedEndpoint]> {
        match self {
            SignalrConfig::Azure(set) => Some(set),
            SignalrConfig::Embedded { .. } => None,
        }
    }

    /// The first primary Azure endpoint (the only one of a lone connection string).
    pub fn azure_primary(&self) -> Option<&ServiceEndpoint> {
        let set = self.azure_endpoints()?;
        set.iter()
            .find(|e| e.role == crate::signalr::endpoints::EndpointRole::Primary)
            .or(set.first())
            .map(|e| &e.endpoint)
    }
}

/// The daemon's HTTP listener settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Allowed origins; `*` means any.
    pub cors_origins: Vec<String>,
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// Connection timeouts of the daemon's listener.
    pub timeouts: ListenerTimeouts,
    /// Serve the status page at `/` (`daemon/http/page`).
    pub status_page: bool,
}

/// `cluster:` compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL (it may hold a password: never log it).
    pub redis: Secret,
    /// This node's id; None: a random one per start.
    pub node_id: Option<String>,
}

/// `state:` compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The configured directory; None: `crate::state::state_dir()`.
    pub dir: Option<PathBuf>,
    pub synchronous: crate::store::Synchronous,
    pub idempotency_window: Duration,
}

/// How long a listener waits on a connection that is not doing anything: a request head
/// that never completes (slowloris), or a keep-alive connection with no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(20),
        }
    }
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: String,
    pub json: bool,
}

/// One hub and its negotiate endpoint.
#[derive(Debug, Clone)]
pub struct Hub {
    pub name: String,
    pub negotiate_path: String,
    pub token_ttl: Duration,
    pub user_id: Option<UserIdRule>,
    /// What is kept of delivered messages; None keeps nothing.
    pub history: Option<crate::store::HistoryPolicy>,
    /// The history endpoint's path (also in `endpoints`), when history is kept.
    pub history_path: Option<String>,
}

/// How negotiate finds the connecting user.
#[derive(Debug, Clone)]
pub struct UserIdRule {
    pub source: UserIdSource,
    /// Refuse negotiate without a user id.
    pub required: bool,
}

/// Where a user id comes from.
#[derive(Debug, Clone)]
pub enum UserIdSource {
    /// A header set by a trusted proxy.
    Header(HeaderName),
    /// A verified bearer JWT's claim.
    Bearer(JwtRule),
}

/// A bearer-token check: key, algorithm, expected issuer and audience, user claim.
#[derive(Clone)]
pub struct JwtRule {
    pub key: Arc<DecodingKey>,
    pub algorithm: Algorithm,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub claim: String,
}

impl fmt::Debug for JwtRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtRule")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

/// A compiled message template.
#[derive(Debug)]
pub struct MessageTemplate {
    pub name: String,
    pub target: Compiled,
    /// The `arguments` list, compiled as one JSON array.
    pub arguments: Compiled,
}

impl MessageTemplate {
    /// Render target and arguments with `vars`.
    pub fn render(&self, vars: &Value) -> Result<(String, Vec<Value>), TemplateError> {
        let target = self.target.render_string(vars)?;
        let arguments = match self.arguments.render(vars)? {
            Value::Array(items) => items,
            other => vec![other],
        };
        Ok((target, arguments))
    }

    /// Whether rendering may read the top-level variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.target.uses(name) || self.arguments.uses(name)
    }
}

/// A compiled `to:`: the kind of recipient and its name template.
#[derive(Debug)]
pub struct ToTemplate {
    pub kind: fn(String) -> Recipient,
    pub value: Compiled,
}

/// Render a full message for `hub` from `template` and `to`.
pub fn render_message(
    hub: &str,
    template: &MessageTemplate,
    to: Option<&ToTemplate>,
    vars: &Value,
) -> Result<Message, TemplateError> {
    let (target, arguments) = template.render(vars)?;
    let to = match to {
        None => Recipient::All,
        Some(t) => {
            let name = t.value.render_string(vars).map_err(|mut e| {
                e.at = format!(
                    "to{}",
                    if e.at.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", e.at)
                    }
                );
                e
            })?;
            if name.is_empty() {
                return Err(TemplateError {
                    at: "to".into(),
                    message: "recipient rendered to an empty name".into(),
                    missing: None,
                });
            }
            (t.kind)(name)
        }
    };
    Ok(Message {
        hub: hub.to_string(),
        to,
        target,
        arguments,
        excluded: Vec::new(),
    })
}

/// A compiled schedule.
#[derive(Debug)]
pub struct Schedule {
    pub name: String,
    pub cron: CronSchedule,
    pub hub: String,
    pub template: Arc<MessageTemplate>,
    pub to: Option<ToTemplate>,
    pub run_on_startup: bool,
    /// Keep the latest message as the current status.
    pub retain: bool,
}

impl Schedule {
    /// What decides the schedule's timing; equal keys keep their next fire time on reload.
    pub fn timing_key(&self) -> (String, String) {
        (
            self.cron.expression().to_string(),
            self.cron.time_zone().name().to_string(),
        )
    }
}

/// A compiled status route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub method: Method,
    pub path: String,
    pub hub: String,
    pub template: Arc<MessageTemplate>,
    pub to: Option<ToTemplate>,
    pub auth: Option<RouteAuth>,
    pub rate_limit: Option<RateLimit>,
    /// Keep the latest message as the current status; `GET` on `path` returns it.
    pub retain: bool,
}

impl Route {
    /// Whether rendering its message (template and recipient) may read the top-level
    /// variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.template.uses(name) || self.to.as_ref().is_some_and(|to| to.value.uses(name))
    }
}

/// A route's request budget: `requests` per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: std::num::NonZeroU32,
    pub per: Duration,
    pub burst: std::num::NonZeroU32,
}

/// How a route checks its caller.
#[derive(Debug, Clone)]
pub enum RouteAuth {
    /// Compared with `X-API-Key` in constant time.
    ApiKey(Secret),
    /// A verified bearer JWT.
    Bearer(JwtRule),
}

/// What a path leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The negotiate endpoint of a hub (GET and POST).
    Negotiate(String),
    /// The history endpoint of a hub (GET).
    History(String),
    /// Status routes at this path, by method, as indexes into `Config::routes`; `retained`:
    /// the route whose retained status a `GET` answers (when no route takes GET itself).
    Routes {
        methods: Vec<(Method, usize)>,
        retained: Option<usize>,
    },
}

/// The outcome of matching a request against the table.
#[derive(Debug, PartialEq, Eq)]
pub enum EndpointMatch<'a> {
    Negotiate(&'a str),
    History(&'a str),
    /// `GET` on a retaining route's path: its retained status.
    Retained {
        index: usize,
        params: BTreeMap<String, String>,
    },
    Route {
        index: usize,
        params: BTreeMap<String, String>,
    },
    /// The path exists, the method does not: the allowed methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Negotiate paths and status routes in one path space (matchit, `{param}` segments).
#[derive(Default)]
pub struct EndpointTable {
    router: matchit::Router<usize>,
    entries: Vec<Endpoint>,
    by_path: HashMap<String, usize>,
}

impl fmt::Debug for EndpointTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_path.keys()).finish()
    }
}

impl EndpointTable {
    fn insert_path(&mut self, path: &str, entry: Endpoint) -> Result<usize, String> {
        let index = self.entries.len();
        self.router
            .insert(path, index)
            .map_err(|e| format!("path `{path}` cannot be served: {e}"))?;
        self.entries.push(entry);
        self.by_path.insert(path.to_string(), index);
        Ok(index)
    }

    pub(crate) fn add_negotiate(&mut self, path: &str, hub: &str) -> Result<(), String> {
        if let Some(&i) = self.by_path.get(path) {
            return Err(self.taken(i, path));
        }
        self.insert_path(path, Endpoint::Negotiate(hub.to_string()))
            .map(|_| ())
    }

    /// Why `path` (entry `i`) cannot take another hub endpoint.
    fn taken(&self, i: usize, path: &str) -> String {
        match &self.entries[i] {
            Endpoint::Negotiate(other) => {
                format!("path `{path}` is already the negotiate path of hub `{other}`")
            }
            Endpoint::History(other) => {
                format!("path `{path}` is already the history path of hub `{other}`")
            }
            Endpoint::Routes { .. } => format!("path `{path}` is already used by a status route"),
        }
    }

    pub(crate) fn add_history(&mut self, path: &str, hub: &str) -> Result<(), String> {
        if let Some(&i) = self.by_path.get(path) {
            return Err(self.taken(i, path));
        }
        self.insert_path(path, Endpoint::History(hub.to_string()))
            .map(|_| ())
    }

    pub(crate) fn add_route(
        &mut self,
        path: &str,
        method: Method,
        route: usize,
        retain: bool,
    ) -> Result<(), String> {
        match self.by_path.get(path).copied() {
            Some(i) => match &mut self.entries[i] {
                Endpoint::Negotiate(hub) => Err(format!(
                    "path `{path}` clashes with the negotiate endpoint of hub `{hub}`"
                )),
                Endpoint::History(hub) => Err(format!(
                    "path `{path}` clashes with the history endpoint of hub `{hub}`"
                )),
                Endpoint::Routes { methods, retained } => {
                    if methods.iter().any(|(m, _)| *m == method) {
                        Err(format!("another route already answers {method} {path}"))
                    } else if retain && retained.is_some() {
                        Err(format!(
                            "another route at {path} already retains its status; `GET {path}` can answer only one"
                        ))
                    } else {
                        methods.push((method, route));
                        if retain {
                            *retained = Some(route);
                        }
                        Ok(())
                    }
                }
            },
            None => self
                .insert_path(
                    path,
                    Endpoint::Routes {
                        methods: vec![(method, route)],
                        retained: retain.then_some(route),
                    },
                )
                .map(|_| ()),
        }
    }

    /// Match `method` and `path`.
    pub fn lookup(&self, method: &Method, path: &str) -> EndpointMatch<'_> {
        let Ok(found) = self.router.at(path) else {
            return EndpointMatch::NotFound;
        };
        match &self.entries[*found.value] {
            Endpoint::Negotiate(hub) => {
                if method == Method::GET || method == Method::POST || method == Method::OPTIONS {
                    EndpointMatch::Negotiate(hub)
                } else {
                    EndpointMatch::MethodNotAllowed(vec![Method::GET, Method::POST])
                }
            }
            Endpoint::History(hub) => {
                if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
                    EndpointMatch::History(hub)
                } else {
                    EndpointMatch::MethodNotAllowed(vec![Method::GET])
                }
            }
            Endpoint::Routes { methods, retained } => {
                let params = || {
                    found
                        .params
                        .iter()
                        .map(|(k, v)| {
                            let decoded =
                                percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                            (k.to_string(), decoded.into_owned())
                        })
                        .collect()
                };
                match methods.iter().find(|(m, _)| m == method) {
                    Some((_, index)) => EndpointMatch::Route {
                        index: *index,
                        params: params(),
                    },
                    None => match retained {
                        Some(index) if method == Method::GET || method == Method::HEAD => {
                            EndpointMatch::Retained {
                                index: *index,
                                params: params(),
                            }
                        }
                        _ => {
                            let mut allow: Vec<Method> =
                                methods.iter().map(|(m, _)| m.clone()).collect();
                            if retained.is_some() {
                                allow.push(Method::GET);
                            }
                            EndpointMatch::MethodNotAllowed(allow)
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
