//! Compile a parsed `RawConfig` into a validated, immutable `Config`: parse cron expressions,
//! time zones, durations, sizes and addresses; compile templates; resolve references from
//! schedules and routes to hubs and templates; build the route table. Every problem is
//! collected (never just the first) with its `FILE:LINE:COL`, together with those the reading
//! step found (`Source::problems`).
//!
//! One function per config section, each on the shared `Ctx`. A section function reports its
//! problems through `Ctx::err` and answers `Err(Reported)` when it could not build its value;
//! `compile` runs every section whatever failed before, so one pass finds every problem.
//! Adding a section: write `fn section(cx: &mut Ctx<'_>) -> Checked<T>`, call it in `compile`
//! (one line), and give `Config` its field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::diagnostic::{ConfigErrors, Diagnostic};
use super::keypath::KeyPath;
use super::model::{
    ApiVersionSetting, EventsSection, HistorySection, HubSection, JwtSection, LogFormat,
    MethodSection, RateLimitSection, RawConfig, RouteAuthSection, RouteSection, ScheduleSection,
    SynchronousSetting, TemplateSection, ToSection, UserIdSection,
};
use super::source::{Source, did_you_mean};
use super::units::{parse_bytes, parse_duration};
use super::{
    ClusterConfig, Config, EndpointTable, EventAction, EventMethod, FunctionsConfig, GroupPattern,
    HttpConfig, Hub, HubEvents, JwtRule, ListenerTimeouts, LoggingConfig, MessageTemplate,
    RateLimit, Route, RouteAuth, Schedule, Secret, SignalrConfig, StateConfig, ToTemplate,
    UserIdRule, UserIdSource,
};
use crate::cron::CronSchedule;
use crate::message::Recipient;
use crate::signalr::endpoints::NamedEndpoint;
use crate::signalr::rest::ApiVersion;
use crate::store::{HistoryPolicy, Synchronous};
use crate::template::Compiled;

/// Paths the daemon serves itself; no hub or route may use them.
pub const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    crate::signalr::upstream::FUNCTIONS_PATH,
];

/// Whether herald itself answers `path`: `RESERVED_PATHS`, the status page's assets and
/// endpoints under `/status-page`, and `/` while the page is on.
fn reserved(path: &str, status_page: bool) -> bool {
    RESERVED_PATHS.contains(&path)
        || path == "/status-page"
        || path.starts_with("/status-page/")
        || (status_page && path == "/")
}

/// Methods a status route may use.
const ROUTE_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Most defined names a "did you mean" looks through; beyond it, no suggestion. Keeps the
/// work per unknown reference constant however many hubs or templates a file defines.
const SUGGEST_LIMIT: usize = 256;

/// Most defined names an "unknown hub" message lists.
const LIST_LIMIT: usize = 10;

/// The problem was already reported to the `Ctx`: the caller only skips building the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// A compiled value, or `Reported` when its problems are already in the `Ctx`.
pub type Checked<T> = Result<T, Reported>;

/// What every section function shares: the source (positions, raw values), the environment
/// and the problems found so far.
pub struct Ctx<'a> {
    src: &'a Source,
    raw: &'a RawConfig,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    fn new(src: &'a Source, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Ctx {
            src,
            raw: &src.raw,
            lookup,
            errors: src.problems.clone(),
            warnings: Vec::new(),
        }
    }

    /// An error about the value at `at`. Silent where reading already reported that value.
    fn err(&mut self, at: &KeyPath, message: impl Into<String>) -> Reported {
        if !self.src.reported.contains(at) {
            let d = Diagnostic::new(self.src.map.value_origin(at), message)
                .with_snippet(&self.src.lines, &self.src.text);
            self.errors.push(d);
        }
        Reported
    }

    /// An error about a key itself (a name), pointing at the key rather than its value.
    fn err_key(&mut self, at: &KeyPath, message: impl Into<String>) -> Reported {
        let d = Diagnostic::new(self.src.map.key_origin(at), message)
            .with_snippet(&self.src.lines, &self.src.text);
        self.errors.push(d);
        Reported
    }

    fn warn(&mut self, at: &KeyPath, message: impl Into<String>) {
        self.warnings
            .push(Diagnostic::new(self.src.map.value_origin(at), message));
    }

    /// The config when nothing was reported, else every problem.
    fn finish(self, config: Checked<Config>) -> Result<Config, ConfigErrors> {
        if !self.errors.is_empty() {
            return Err(ConfigErrors::new(self.errors));
        }
        match config {
            Ok(mut config) => {
                config.warnings = self.warnings;
                Ok(config)
            }
            // A section failed without saying why: a bug, but never a silent success.
            Err(Reported) => Err(ConfigErrors::whole(&self.src.path, "invalid configuration")),
        }
    }
}

/// Compile `src`. `lookup` reads environment variables (for `AzureSignalRConnectionString`).
pub fn compile(
    src: &Source,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx::new(src, lookup);
    // One line per section; each runs whatever failed before it.
    let signalr = signalr(&mut cx);
    let http = http(&mut cx);
    let logging = logging(&mut cx);
    let hubs = hubs(&mut cx);
    let templates = templates(&mut cx);
    let schedules = schedules(&mut cx, &templates);
    let (routes, endpoints) = routes(&mut cx, &hubs, &templates);
    let functions = functions(&mut cx);
    let api_version = api_version(&mut cx);
    let state = state(&mut cx);
    let cluster = cluster(&mut cx);
    let events = events(&mut cx, &hubs, &templates);
    let config = (|| {
        Ok(Config {
            path: src.path.clone(),
            content_hash: content_hash(&src.text),
            signalr: signalr?,
            http: http?,
            logging: logging?,
            hubs,
            templates,
            schedules,
            routes,
            endpoints,
            functions: functions?,
            api_version: api_version?,
            state: state?,
            cluster: cluster?,
            events,
            warnings: Vec::new(),
        })
    })();
    cx.finish(config)
}

/// Hex SHA-256 of the file text: the identity of a config version.
pub fn content_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Sections.

/// `signalr:` Azure by `endpoints`, or by connection string (file, else environment), else
/// the embedded service.
fn signalr(cx: &mut Ctx<'_>) -> Checked<SignalrConfig> {
    let raw = &cx.raw.signalr;
    let at = KeyPath::root().child("signalr");
    let from_file = raw
        .connection_string
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(entries) = &raw.endpoints {
        if from_file.is_some() {
            return Err(cx.err_key(
                &at.child("endpoints"),
                "signalr.connection_string and signalr.endpoints are both set; use one or the other",
            ));
        }
        return signalr_endpoints(cx, &at.child("endpoints"), entries);
    }
    let connection_string = match from_file {
        Some(s) => Some((s.to_string(), true)),
        None => (cx.lookup)("AzureSignalRConnectionString")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .map(|s| (s, false)),
    };
    if let Some((cs, in_file)) = connection_string {
        return match crate::signalr::ServiceEndpoint::from_connection_string(&cs) {
            Ok(endpoint) => Ok(SignalrConfig::Azure(Arc::new(vec![
                NamedEndpoint::primary(endpoint),
            ]))),
            Err(e) => {
                let msg = if in_file {
                    format!("invalid connection string: {e}")
                } else {
                    format!("invalid connection string in AzureSignalRConnectionString: {e}")
                };
                Err(cx.err(&at.child("connection_string"), msg))
            }
        };
    }
    let e = &raw.embedded;
    let at = at.child("embedded");
    let listen = parse_listen(cx, &at.child("listen"), &e.listen);
    let access_key = match &e.access_key {
        Some(key) if key.len() < 16 => Err(cx.err(
            &at.child("access_key"),
            "access_key must be at least 16 characters",
        )),
        key => Ok(key.clone().map(Secret::new)),
    };
    let max_connections = match e.max_connections {
        0 => Err(cx.err(
            &at.child("max_connections"),
            "max_connections must be at least 1",
        )),
        n => Ok(n),
    };
    let timeouts = listener_timeouts(cx, &at, &e.header_read_timeout, &e.idle_timeout);
    Ok(SignalrConfig::Embedded {
        listen: listen?,
        access_key: access_key?,
        public_url: e.public_url.clone(),
        max_connections: max_connections?,
        timeouts: timeouts?,
    })
}

/// `signalr.endpoints:` several connection strings with roles; at least one primary, names
/// unique. Every entry is checked, so one pass names every problem.
fn signalr_endpoints(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    entries: &[crate::config::model::EndpointEntry],
) -> Checked<SignalrConfig> {
    use crate::config::model::EndpointRoleSetting;
    use crate::signalr::endpoints::EndpointRole;
    if entries.is_empty() {
        return Err(cx.err(at, "signalr.endpoints needs at least one endpoint"));
    }
    let mut set = Vec::with_capacity(entries.len());
    let mut failed = false;
    let mut names: Vec<&str> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = at.child(i);
        let name = entry.name.trim();
        if name.is_empty() {
            cx.err(&at.child("name"), "an endpoint's name must not be empty");
            failed = true;
        } else if names.contains(&name) {
            cx.err(
                &at.child("name"),
                format!("endpoint name `{name}` is used twice; names must be unique"),
            );
            failed = true;
        }
        names.push(name);
        let role = match entry.role {
            EndpointRoleSetting::Primary => EndpointRole::Primary,
            EndpointRoleSetting::Secondary => EndpointRole::Secondary,
        };
        match crate::signalr::ServiceEndpoint::from_connection_string(
            entry.connection_string.trim(),
        ) {
            Ok(endpoint) => set.push(NamedEndpoint {
                name: name.to_string(),
                role,
                endpoint,
            }),
            Err(e) => {
                cx.err(
                    &at.child("connection_string"),
                    format!("invalid connection string: {e}"),
                );
                failed = true;
            }
        }
    }
    if !entries
        .iter()
        .any(|e| e.role == EndpointRoleSetting::Primary)
    {
        return Err(cx.err(
            at,
            "signalr.endpoints needs at least one endpoint with `role: primary`",
        ));
    }
    if failed {
        return Err(Reported);
    }
    Ok(SignalrConfig::Azure(Arc::new(set)))
}

/// `signalr.api_version:` which data-plane REST API the client calls.
fn api_version(cx: &mut Ctx<'_>) -> Checked<ApiVersion> {
    Ok(match cx.raw.signalr.api_version {
        ApiVersionSetting::V2022_06_01 => ApiVersion::V2022_06_01,
        ApiVersionSetting::V1 => ApiVersion::V1,
    })
}

/// `http:` the daemon's listener.
fn http(cx: &mut Ctx<'_>) -> Checked<HttpConfig> {
    let h = &cx.raw.http;
    let at = KeyPath::root().child("http");
    let listen = parse_listen(cx, &at.child("listen"), &h.listen);
    let body_limit = match parse_bytes(&h.body_limit) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(cx.err(&at.child("body_limit"), "body_limit must be above 0")),
        Err(e) => Err(cx.err(&at.child("body_limit"), e)),
    };
    let request_timeout = positive_duration(cx, &at.child("request_timeout"), &h.request_timeout);
    let origins = at.child("cors").child("allowed_origins");
    let mut cors = Ok(());
    for (i, origin) in h.cors.allowed_origins.iter().enumerate() {
        let at = origins.child(i);
        if origin == "*" {
            cx.warn(
                &at,
                "CORS allows any origin (`*`); list your sites' origins in production",
            );
        } else if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || axum::http::HeaderValue::from_str(origin).is_err()
            || origin.trim_end_matches('/').matches('/').count() > 2
        {
            cors = Err(cx.err(&at, format!("invalid origin `{origin}`: write `*` or `scheme://host[:port]`, e.g. `https://app.example.com`")));
        }
    }
    let timeouts = listener_timeouts(cx, &at, &h.header_read_timeout, &h.idle_timeout);
    cors?;
    Ok(HttpConfig {
        timeouts: timeouts?,
        listen: listen?,
        cors_origins: h
            .cors
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect(),
        body_limit: body_limit?,
        request_timeout: request_timeout?,
        status_page: h.status_page,
    })
}

/// `logging:` level filter and format.
fn logging(cx: &mut Ctx<'_>) -> Checked<LoggingConfig> {
    let raw = &cx.raw.logging;
    let level = raw.level.trim().to_string();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(cx.err(
            &KeyPath::from(["logging", "level"]),
            format!("invalid log level `{level}`: use error, warn, info, debug, trace or a filter like `herald=debug`"),
        ));
    }
    Ok(LoggingConfig {
        level,
        json: raw.format == LogFormat::Json,
    })
}

/// `functions:` custom-handler settings.
fn functions(cx: &mut Ctx<'_>) -> Checked<FunctionsConfig> {
    Ok(FunctionsConfig {
        delivery: cx.raw.functions.delivery,
    })
}

/// `hubs:` every hub that compiles (the others are reported).
fn hubs(cx: &mut Ctx<'_>) -> BTreeMap<String, Hub> {
    let raw = cx.raw;
    let at = KeyPath::root().child("hubs");
    let single = raw.hubs.len() == 1;
    let mut hubs = BTreeMap::new();
    for (name, section) in &raw.hubs {
        if let Ok(h) = hub(cx, &at.child(name), name, section, single) {
            hubs.insert(name.clone(), h);
        }
    }
    hubs
}

fn hub(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    section: &HubSection,
    single: bool,
) -> Checked<Hub> {
    let valid_name = crate::signalr::names::hub(name).map_err(|e| cx.err_key(at, e.to_string()));
    let n = &section.negotiate;
    let at = at.child("negotiate");
    let path = match &n.path {
        Some(p) => p.clone(),
        None if single => "/api/negotiate".to_string(),
        None => format!("/api/{name}/negotiate"),
    };
    let path = if path.starts_with('/') {
        Ok(path)
    } else {
        Err(cx.err(
            &at.child("path"),
            format!("path `{path}` must start with `/`"),
        ))
    };
    let token_ttl = match &n.token_ttl {
        None => Ok(Duration::from_secs(3600)),
        Some(t) => match parse_duration(t) {
            Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(7 * 86_400) => Ok(d),
            Ok(_) => Err(cx.err(
                &at.child("token_ttl"),
                "token_ttl must be between 1s and 7d",
            )),
            Err(e) => Err(cx.err(&at.child("token_ttl"), e)),
        },
    };
    let user_id = match &n.user_id {
        None => Ok(None),
        Some(u) => user_id(cx, &at.child("user_id"), u).map(Some),
    };
    let history_at = KeyPath::from(["hubs", name, "history"]);
    let history = history(cx, &history_at, name, &section.history);
    valid_name?;
    let (history, history_path) = history?;
    Ok(Hub {
        name: name.to_string(),
        negotiate_path: path?,
        token_ttl: token_ttl?,
        user_id: user_id?,
        history,
        history_path,
    })
}

/// `negotiate.user_id:` a trusted header or a verified bearer token.
fn user_id(cx: &mut Ctx<'_>, at: &KeyPath, u: &UserIdSection) -> Checked<UserIdRule> {
    let source = match (&u.header, &u.bearer) {
        (Some(h), None) => axum::http::HeaderName::try_from(h.as_str())
            .map(UserIdSource::Header)
            .map_err(|_| cx.err(&at.child("header"), format!("invalid header name `{h}`")))?,
        (None, Some(jwt)) => UserIdSource::Bearer(compile_jwt(cx, &at.child("bearer"), jwt)?),
        _ => {
            return Err(cx.err(at, "user_id needs exactly one of `header` or `bearer`"));
        }
    };
    Ok(UserIdRule {
        source,
        required: u.required,
    })
}

/// `templates:` every template that compiles (the others are reported).
fn templates(cx: &mut Ctx<'_>) -> BTreeMap<String, Arc<MessageTemplate>> {
    let raw = cx.raw;
    let at = KeyPath::root().child("templates");
    let mut templates = BTreeMap::new();
    for (name, t) in &raw.templates {
        if let Ok(t) = template(cx, &at.child(name), name, t) {
            templates.insert(name.clone(), Arc::new(t));
        }
    }
    templates
}

fn template(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    t: &TemplateSection,
) -> Checked<MessageTemplate> {
    let target = if t.target.trim().is_empty() {
        Err(cx.err(&at.child("target"), "target must not be empty"))
    } else {
        Compiled::text(&t.target).map_err(|e| {
            cx.err(
                &at.child("target"),
                format!("template does not compile: {e}"),
            )
        })
    };
    let arguments = Compiled::new(&serde_json::Value::Array(t.arguments.clone())).map_err(|e| {
        // `[0].status` → `arguments.0.status`, to point inside `arguments`.
        let inside =
            e.at.split(['.', '[', ']'])
                .filter(|s| !s.is_empty())
                .fold(at.child("arguments"), |p, s| p.child(s));
        cx.err(&inside, format!("template does not compile: {e}"))
    });
    Ok(MessageTemplate {
        name: name.to_string(),
        target: target?,
        arguments: arguments?,
    })
}

/// `schedules:` every schedule that compiles (the others are reported).
fn schedules(
    cx: &mut Ctx<'_>,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> BTreeMap<String, Schedule> {
    let raw = cx.raw;
    let at = KeyPath::root().child("schedules");
    let mut schedules = BTreeMap::new();
    for (name, s) in &raw.schedules {
        if let Ok(s) = schedule(cx, &at.child(name), name, s, templates) {
            schedules.insert(name.clone(), s);
        }
    }
    schedules
}

fn schedule(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    s: &ScheduleSection,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> Checked<Schedule> {
    let cron = CronSchedule::parse(&s.cron, &s.time_zone).map_err(|e| {
        let key = match e {
            crate::cron::CronError::TimeZone(_) => "time_zone",
            _ => "cron",
        };
        cx.err(&at.child(key), e.to_string())
    });
    let hub = reference(cx, at, Ref::Hub, &s.hub);
    let template = resolve_template(cx, at, &s.template, templates);
    let to = compile_to(cx, at, s.to.as_ref());
    hub?;
    Ok(Schedule {
        name: name.to_string(),
        cron: cron?,
        hub: s.hub.clone(),
        template: template?,
        to: to?,
        run_on_startup: s.run_on_startup,
        retain: s.retain,
    })
}

/// `routes:` every route that compiles, and the endpoint table they share with the hubs'
/// negotiate paths (one path space).
fn routes(
    cx: &mut Ctx<'_>,
    hubs: &BTreeMap<String, Hub>,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> (Vec<Route>, EndpointTable) {
    let mut endpoints = EndpointTable::default();
    for hub in hubs.values() {
        let at = KeyPath::from(["hubs", &hub.name, "negotiate", "path"]);
        if reserved(&hub.negotiate_path, cx.raw.http.status_page) {
            cx.err(
                &at,
                format!(
                    "path `{}` is reserved for herald itself",
                    hub.negotiate_path
                ),
            );
        } else if let Err(e) = endpoints.add_negotiate(&hub.negotiate_path, &hub.name) {
            cx.err(&at, e);
        }
        if let Some(path) = &hub.history_path {
            let at = KeyPath::from(["hubs", &hub.name, "history", "path"]);
            if reserved(path, cx.raw.http.status_page) {
                cx.err(&at, format!("path `{path}` is reserved for herald itself"));
            } else if let Err(e) = endpoints.add_history(path, &hub.name) {
                cx.err(&at, e);
            }
        }
    }
    let raw = cx.raw;
    let at = KeyPath::root().child("routes");
    let mut routes = Vec::new();
    for (name, r) in &raw.routes {
        let at = at.child(name);
        let Ok(route) = route(cx, &at, name, r, templates) else {
            continue;
        };
        match endpoints.add_route(
            &route.path,
            route.method.clone(),
            routes.len(),
            route.retain,
        ) {
            Ok(()) => routes.push(route),
            Err(e) => {
                cx.err(&at.child("path"), e);
            }
        }
    }
    (routes, endpoints)
}

fn route(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    r: &RouteSection,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> Checked<Route> {
    let upper = r.method.to_ascii_uppercase();
    let method = match Method::from_bytes(upper.as_bytes()) {
        Ok(m) if ROUTE_METHODS.contains(&upper.as_str()) => Ok(m),
        _ => Err(cx.err(
            &at.child("method"),
            format!(
                "unsupported method `{}`; use one of {}",
                r.method,
                ROUTE_METHODS.join(", ")
            ),
        )),
    };
    let path = if !r.path.starts_with('/') {
        Err(cx.err(
            &at.child("path"),
            format!("path `{}` must start with `/`", r.path),
        ))
    } else if reserved(&r.path, cx.raw.http.status_page) {
        Err(cx.err(
            &at.child("path"),
            format!("path `{}` is reserved for herald itself", r.path),
        ))
    } else {
        Ok(r.path.clone())
    };
    let hub = reference(cx, at, Ref::Hub, &r.hub);
    let template = resolve_template(cx, at, &r.template, templates);
    let to = compile_to(cx, at, r.to.as_ref());
    let auth = match &r.auth {
        None => Ok(None),
        Some(a) => route_auth(cx, &at.child("auth"), name, a).map(Some),
    };
    let rate_limit = match &r.rate_limit {
        None => Ok(None),
        Some(rl) => rate_limit(cx, &at.child("rate_limit"), rl).map(Some),
    };
    hub?;
    Ok(Route {
        name: name.to_string(),
        method: method?,
        path: path?,
        hub: r.hub.clone(),
        template: template?,
        to: to?,
        auth: auth?,
        rate_limit: rate_limit?,
        retain: r.retain,
    })
}

/// `routes.<name>.auth:` an API key or a bearer rule.
fn route_auth(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    route: &str,
    a: &RouteAuthSection,
) -> Checked<RouteAuth> {
    match (&a.api_key, &a.bearer) {
        (Some(key), None) => {
            let at = at.child("api_key");
            if key.is_empty() {
                return Err(cx.err(&at, "api_key is empty (is its environment variable set?)"));
            }
            if key.chars().count() < 32 {
                cx.warn(
                    &at,
                    format!("api_key of route `{route}` is shorter than 32 characters; use a long random key"),
                );
            }
            Ok(RouteAuth::ApiKey(Secret::new(key.clone())))
        }
        (None, Some(jwt)) => compile_jwt(cx, &at.child("bearer"), jwt).map(RouteAuth::Bearer),
        _ => Err(cx.err(at, "auth needs exactly one of `api_key` or `bearer`")),
    }
}

/// `routes.<name>.rate_limit:` requests per period with a burst.
fn rate_limit(cx: &mut Ctx<'_>, at: &KeyPath, rl: &RateLimitSection) -> Checked<RateLimit> {
    let requests = NonZeroU32::new(rl.requests);
    let burst = NonZeroU32::new(rl.burst.unwrap_or(rl.requests));
    let per = parse_duration(&rl.per).map_err(|e| cx.err(&at.child("per"), e))?;
    match (requests, burst) {
        (Some(requests), Some(burst)) if !per.is_zero() => Ok(RateLimit {
            requests,
            per,
            burst,
        }),
        _ => Err(cx.err(
            at,
            "rate_limit needs requests ≥ 1, burst ≥ 1 and a period above 0",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces.

/// What a schedule or route refers to by name.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Hub,
    Template,
}

impl Ref {
    /// The key that names it (`hub:`), which is also the word in messages.
    fn key(self) -> &'static str {
        match self {
            Ref::Hub => "hub",
            Ref::Template => "template",
        }
    }

    /// The section that defines it.
    fn section(self) -> &'static str {
        match self {
            Ref::Hub => "hubs",
            Ref::Template => "templates",
        }
    }

    fn names(self, raw: &RawConfig) -> Box<dyn ExactSizeIterator<Item = &str> + '_> {
        match self {
            Ref::Hub => Box::new(raw.hubs.keys().map(String::as_str)),
            Ref::Template => Box::new(raw.templates.keys().map(String::as_str)),
        }
    }

    fn defined(self, raw: &RawConfig, name: &str) -> bool {
        match self {
            Ref::Hub => raw.hubs.contains_key(name),
            Ref::Template => raw.templates.contains_key(name),
        }
    }
}

/// Check that `name` (the value of `at.<kind>`) is defined; suggest a close name if not.
/// An entry left out for a type error still counts as defined (it was reported).
fn reference(cx: &mut Ctx<'_>, at: &KeyPath, kind: Ref, name: &str) -> Checked<()> {
    let raw = cx.raw;
    if kind.defined(raw, name) {
        return Ok(());
    }
    if cx
        .src
        .unreadable
        .contains(&KeyPath::root().child(kind.section()).child(name))
    {
        return Err(Reported);
    }
    let k = kind.key();
    let names = kind.names(raw);
    let count = names.len();
    let mut msg = format!("unknown {k} `{name}`");
    let candidates: Vec<&str> = if count <= SUGGEST_LIMIT {
        names.collect()
    } else {
        Vec::new()
    };
    match did_you_mean(name, &candidates) {
        Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
        None if count == 0 => msg.push_str(&format!(" (no {k}s are defined)")),
        None if count <= LIST_LIMIT => {
            msg.push_str(&format!("; defined {k}s: {}", candidates.join(", ")))
        }
        None => msg.push_str(&format!("; {count} {k}s are defined")),
    }
    Err(cx.err(&at.child(k), msg))
}

/// The compiled template `name` refers to. Defined but absent from `templates` means the
/// template itself failed to compile, which was already reported.
fn resolve_template(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> Checked<Arc<MessageTemplate>> {
    reference(cx, at, Ref::Template, name)?;
    templates.get(name).cloned().ok_or(Reported)
}

/// `to:` at `at`: `Ok(None)` when absent (the whole hub).
fn compile_to(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    to: Option<&ToSection>,
) -> Checked<Option<ToTemplate>> {
    let Some(to) = to else { return Ok(None) };
    let at = at.child("to");
    let (kind, source): (fn(String) -> Recipient, &String) =
        match (&to.user, &to.group, &to.connection) {
            (Some(u), None, None) => (Recipient::User, u),
            (None, Some(g), None) => (Recipient::Group, g),
            (None, None, Some(c)) => (Recipient::Connection, c),
            _ => {
                return Err(cx.err(
                    &at,
                    "`to` needs exactly one of `user`, `group` or `connection`",
                ));
            }
        };
    match Compiled::text(source) {
        Ok(value) => Ok(Some(ToTemplate { kind, value })),
        Err(e) => Err(cx.err(&at, format!("template does not compile: {e}"))),
    }
}

fn compile_jwt(cx: &mut Ctx<'_>, at: &KeyPath, jwt: &JwtSection) -> Checked<JwtRule> {
    let (key, algorithm) = match (&jwt.secret, &jwt.public_key) {
        (Some(secret), None) if !secret.is_empty() => (
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ),
        (Some(_), None) => {
            return Err(cx.err(
                &at.child("secret"),
                "secret is empty (is its environment variable set?)",
            ));
        }
        (None, Some(pem)) => match DecodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(k) => (k, Algorithm::RS256),
            Err(e) => {
                return Err(cx.err(
                    &at.child("public_key"),
                    format!("public_key is not an RSA public key in PEM form: {e}"),
                ));
            }
        },
        _ => {
            return Err(cx.err(
                at,
                "bearer needs exactly one of `secret` (HS256) or `public_key` (RS256)",
            ));
        }
    };
    Ok(JwtRule {
        key: Arc::new(key),
        algorithm,
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        claim: jwt.claim.clone().unwrap_or_else(|| "sub".to_string()),
    })
}

fn parse_listen(cx: &mut Ctx<'_>, at: &KeyPath, value: &str) -> Checked<SocketAddr> {
    value.parse::<SocketAddr>().map_err(|_| {
        cx.err(
            at,
            format!("invalid listen address `{value}`: write `host:port` with an IP, e.g. `127.0.0.1:7071` or `0.0.0.0:80`"),
        )
    })
}

/// A duration above zero at `at`, or an error there.
fn positive_duration(cx: &mut Ctx<'_>, at: &KeyPath, text: &str) -> Checked<Duration> {
    match parse_duration(text) {
        Ok(d) if d > Duration::ZERO => Ok(d),
        Ok(_) => {
            let key = at.last().unwrap_or("duration");
            Err(cx.err(at, format!("{key} must be above 0")))
        }
        Err(e) => Err(cx.err(at, e)),
    }
}

/// `header_read_timeout` and `idle_timeout` of the listener section at `section`.
fn listener_timeouts(
    cx: &mut Ctx<'_>,
    section: &KeyPath,
    header_read: &str,
    idle: &str,
) -> Checked<ListenerTimeouts> {
    let header_read = positive_duration(cx, &section.child("header_read_timeout"), header_read);
    let idle = positive_duration(cx, &section.child("idle_timeout"), idle);
    Ok(ListenerTimeouts {
        header_read: header_read?,
        idle: idle?,
    })
}

/// `state:` the state database's directory, commit level and idempotency window.
fn state(cx: &mut Ctx<'_>) -> Checked<StateConfig> {
    let st = &cx.raw.state;
    let dir = match st.dir.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => Some(std::path::PathBuf::from(d)),
    };
    let synchronous = match st.synchronous {
        SynchronousSetting::Full => Synchronous::Full,
        SynchronousSetting::Normal => Synchronous::Normal,
    };
    let at = KeyPath::from(["state", "idempotency_window"]);
    let idempotency_window = positive_duration(cx, &at, &st.idempotency_window.clone())?;
    Ok(StateConfig {
        dir,
        synchronous,
        idempotency_window,
    })
}

/// `cluster:` the Redis URL (parsed, not connected) and the node id.
fn cluster(cx: &mut Ctx<'_>) -> Checked<Option<ClusterConfig>> {
    let Some(section) = cx.raw.cluster.clone() else {
        return Ok(None);
    };
    let url = section.redis.trim().to_string();
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        let at = KeyPath::from(["cluster", "redis"]);
        return Err(cx.err(
            &at,
            format!("not a Redis URL (redis://host:port, redis+unix:///path): {e}"),
        ));
    }
    let node_id = match section.node_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id)
            if id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            Some(id.to_string())
        }
        Some(_) => {
            let at = KeyPath::from(["cluster", "node_id"]);
            return Err(cx.err(&at, "use letters, digits, `-`, `_` and `.` only"));
        }
    };
    Ok(Some(ClusterConfig {
        redis: Secret::new(url),
        node_id,
    }))
}

/// `hubs.<name>.history:` the policy (None when `keep` is 0) and the endpoint's path.
fn history(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    hub: &str,
    h: &HistorySection,
) -> Checked<(Option<HistoryPolicy>, Option<String>)> {
    let max_age = positive_duration(cx, &at.child("max_age"), &h.max_age);
    if h.keep == 0 {
        return Ok((None, None));
    }
    let path = h
        .path
        .clone()
        .unwrap_or_else(|| format!("/api/{hub}/history"));
    let path = if path.starts_with('/') {
        Ok(path)
    } else {
        Err(cx.err(
            &at.child("path"),
            format!("history path `{path}` must start with `/`"),
        ))
    };
    let policy = HistoryPolicy {
        keep: h.keep,
        max_age: max_age?,
    };
    Ok((Some(policy), Some(path?)))
}

/// `events:` the client events of each hub that compiles (the others are reported). Checks
/// the hub and template references, the group patterns and that each method does one thing.
fn events(
    cx: &mut Ctx<'_>,
    hubs: &BTreeMap<String, Hub>,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> BTreeMap<String, HubEvents> {
    let raw = cx.raw;
    let at = KeyPath::root().child("events");
    let mut out = BTreeMap::new();
    for (hub, section) in &raw.events {
        let at = at.child(hub);
        if !raw.hubs.contains_key(hub) {
            let defined: Vec<&str> = raw.hubs.keys().map(String::as_str).collect();
            let mut msg = format!("events for unknown hub `{hub}`");
            match did_you_mean(hub, &defined) {
                Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
                None if defined.is_empty() => msg.push_str(" (no hubs are defined)"),
                None => {}
            }
            cx.err_key(&at, msg);
            continue;
        }
        if let Ok(e) = hub_events(cx, &at, hub, section, templates)
            && hubs.contains_key(hub)
        {
            out.insert(hub.to_ascii_lowercase(), e);
        }
    }
    out
}

fn hub_events(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    hub: &str,
    section: &EventsSection,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> Checked<HubEvents> {
    let mut methods = BTreeMap::new();
    let mut failed = false;
    let methods_at = at.child("methods");
    for (name, m) in &section.methods {
        let at = methods_at.child(name);
        if name.trim().is_empty() {
            cx.err_key(&at, "a method name must not be empty");
            failed = true;
            continue;
        }
        match event_method(cx, &at, name, m, templates) {
            Ok(method) => {
                if methods.insert(name.to_ascii_lowercase(), method).is_some() {
                    cx.err_key(
                        &at,
                        format!(
                            "method `{name}` is defined twice (names compare case-insensitively)"
                        ),
                    );
                    failed = true;
                }
            }
            Err(Reported) => failed = true,
        }
    }
    if failed {
        return Err(Reported);
    }
    Ok(HubEvents {
        hub: hub.to_string(),
        send_retained: section.connected.send_retained,
        methods,
    })
}

fn event_method(
    cx: &mut Ctx<'_>,
    at: &KeyPath,
    name: &str,
    m: &MethodSection,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
) -> Checked<EventMethod> {
    let rate_limit = match &m.rate_limit {
        None => Ok(None),
        Some(rl) => rate_limit(cx, &at.child("rate_limit"), rl).map(Some),
    };
    let pattern = |cx: &mut Ctx<'_>, key: &str, text: &str| {
        GroupPattern::parse(text).map_err(|e| cx.err(&at.child(key), e))
    };
    let action = match (&m.ack, &m.join_group, &m.leave_group, &m.relay) {
        (Some(true), None, None, None) => Ok(EventAction::Ack),
        (Some(false), None, None, None) => {
            Err(cx.err(&at.child("ack"), "write `ack: true`, or remove the method"))
        }
        (None, Some(p), None, None) => pattern(cx, "join_group", p).map(EventAction::JoinGroup),
        (None, None, Some(p), None) => pattern(cx, "leave_group", p).map(EventAction::LeaveGroup),
        (None, None, None, Some(relay)) => {
            let at = at.child("relay");
            let template = resolve_template(cx, &at, &relay.template, templates);
            let to = compile_to(cx, &at, relay.to.as_ref());
            match (template, to) {
                (Ok(template), Ok(to)) => Ok(EventAction::Relay {
                    template,
                    to: to.map(Box::new),
                }),
                _ => Err(Reported),
            }
        }
        _ => Err(cx.err(
            at,
            format!(
                "method `{name}` needs exactly one of `ack`, `join_group`, `leave_group` or `relay`"
            ),
        )),
    };
    Ok(EventMethod {
        name: name.to_string(),
        action: action?,
        rate_limit: rate_limit?,
    })
}
