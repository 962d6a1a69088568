//! Compile a parsed `RawConfig` into a validated, immutable `Config`: parse cron expressions,
//! time zones, durations, sizes and addresses; compile templates; resolve references from
//! schedules and routes to hubs and templates; build the route table. Every problem is
//! collected (never just the first) with its `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::diagnostic::{ConfigErrors, Diagnostic};
use super::model::{JwtSection, LogFormat, RawConfig, ToSection};
use super::source::{Source, did_you_mean};
use super::units::{parse_bytes, parse_duration};
use super::{
    Config, EndpointTable, FunctionsConfig, HttpConfig, Hub, JwtRule, LoggingConfig,
    MessageTemplate, RateLimit, Route, RouteAuth, Schedule, Secret, SignalrConfig, ToTemplate,
    UserIdRule, UserIdSource,
};
use crate::cron::CronSchedule;
use crate::message::Recipient;
use crate::template::Compiled;

/// Paths the daemon serves itself; no hub or route may use them.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

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

struct Ctx<'a> {
    src: &'a Source,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &[&str], message: impl Into<String>) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let d =
            Diagnostic::new(self.src.map.value_origin(&path), message).with_source(&self.src.text);
        self.errors.push(d);
    }

    /// An error about a key itself (a name), pointing at the key rather than its value.
    fn err_key(&mut self, path: &[&str], message: impl Into<String>) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let d =
            Diagnostic::new(self.src.map.key_origin(&path), message).with_source(&self.src.text);
        self.errors.push(d);
    }

    fn warn(&mut self, path: &[&str], message: impl Into<String>) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.warnings
            .push(Diagnostic::new(self.src.map.value_origin(&path), message));
    }
}

/// Compile `src`. `lookup` reads environment variables (for `AzureSignalRConnectionString`).
pub fn compile(
    src: &Source,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let raw: &RawConfig = &src.raw;
    let mut cx = Ctx {
        src,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    let signalr = compile_signalr(&mut cx, raw, lookup);
    let http = compile_http(&mut cx, raw);
    let logging = compile_logging(&mut cx, raw);
    let state = compile_state(&mut cx, raw);

    // Hubs.
    let mut hubs = BTreeMap::new();
    let single = raw.hubs.len() == 1;
    for (name, section) in &raw.hubs {
        if let Err(e) = crate::signalr::names::hub(name) {
            cx.err_key(&["hubs", name], e.to_string());
        }
        let n = &section.negotiate;
        let path = match &n.path {
            Some(p) => p.clone(),
            None if single => "/api/negotiate".to_string(),
            None => format!("/api/{name}/negotiate"),
        };
        if !path.starts_with('/') {
            cx.err(
                &["hubs", name, "negotiate", "path"],
                format!("path `{path}` must start with `/`"),
            );
        }
        let token_ttl = match &n.token_ttl {
            None => Duration::from_secs(3600),
            Some(t) => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(7 * 86_400) => d,
                Ok(_) => {
                    cx.err(
                        &["hubs", name, "negotiate", "token_ttl"],
                        "token_ttl must be between 1s and 7d",
                    );
                    Duration::from_secs(3600)
                }
                Err(e) => {
                    cx.err(&["hubs", name, "negotiate", "token_ttl"], e);
                    Duration::from_secs(3600)
                }
            },
        };
        let user_id = n.user_id.as_ref().and_then(|u| {
            let at = ["hubs", name.as_str(), "negotiate", "user_id"];
            let source = match (&u.header, &u.bearer) {
                (Some(h), None) => match axum::http::HeaderName::try_from(h.as_str()) {
                    Ok(h) => Some(UserIdSource::Header(h)),
                    Err(_) => {
                        cx.err(
                            &[&at[..], &["header"]].concat(),
                            format!("invalid header name `{h}`"),
                        );
                        None
                    }
                },
                (None, Some(jwt)) => compile_jwt(&mut cx, &[&at[..], &["bearer"]].concat(), jwt)
                    .map(UserIdSource::Bearer),
                _ => {
                    cx.err(&at, "user_id needs exactly one of `header` or `bearer`");
                    None
                }
            };
            source.map(|source| UserIdRule {
                source,
                required: u.required,
            })
        });
        let (history, history_path) = compile_history(&mut cx, name, &section.history);
        hubs.insert(
            name.clone(),
            Hub {
                name: name.clone(),
                negotiate_path: path,
                token_ttl,
                user_id,
                history,
                history_path,
            },
        );
    }

    // Templates.
    let mut templates = BTreeMap::new();
    for (name, t) in &raw.templates {
        let target = Compiled::text(&t.target);
        let arguments = Compiled::new(&serde_json::Value::Array(t.arguments.clone()));
        if t.target.trim().is_empty() {
            cx.err(&["templates", name, "target"], "target must not be empty");
        }
        match (target, arguments) {
            (Ok(target), Ok(arguments)) => {
                templates.insert(
                    name.clone(),
                    Arc::new(MessageTemplate {
                        name: name.clone(),
                        target,
                        arguments,
                    }),
                );
            }
            (Err(e), _) => cx.err(
                &["templates", name, "target"],
                format!("template does not compile: {e}"),
            ),
            (_, Err(e)) => {
                let mut path = vec![
                    "templates".to_string(),
                    name.clone(),
                    "arguments".to_string(),
                ];
                path.extend(template_path(&e.at));
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                cx.err(&refs, format!("template does not compile: {e}"));
            }
        }
    }

    let hub_names: Vec<&str> = raw.hubs.keys().map(String::as_str).collect();
    let template_names: Vec<&str> = raw.templates.keys().map(String::as_str).collect();

    // Schedules.
    let mut schedules = BTreeMap::new();
    for (name, s) in &raw.schedules {
        let at = ["schedules", name.as_str()];
        let cron = match CronSchedule::parse(&s.cron, &s.time_zone) {
            Ok(c) => Some(c),
            Err(e @ crate::cron::CronError::TimeZone(_)) => {
                cx.err(&[&at[..], &["time_zone"]].concat(), e.to_string());
                None
            }
            Err(e) => {
                cx.err(&[&at[..], &["cron"]].concat(), e.to_string());
                None
            }
        };
        check_ref(&mut cx, &at, "hub", &s.hub, &hub_names);
        let template = resolve_template(&mut cx, &at, &s.template, &templates, &template_names);
        let to = compile_to(&mut cx, &at, s.to.as_ref());
        if let (Some(cron), Some(template)) = (cron, template) {
            schedules.insert(
                name.clone(),
                Schedule {
                    name: name.clone(),
                    cron,
                    hub: s.hub.clone(),
                    template,
                    to: to.flatten(),
                    run_on_startup: s.run_on_startup,
                    retain: s.retain,
                },
            );
        }
    }

    // Routes and the endpoint table (negotiate + routes share one path space).
    let mut endpoints = EndpointTable::default();
    for hub in hubs.values() {
        if reserved(&hub.negotiate_path, raw.http.status_page) {
            cx.err(
                &["hubs", &hub.name, "negotiate", "path"],
                format!(
                    "path `{}` is reserved for herald itself",
                    hub.negotiate_path
                ),
            );
            continue;
        }
        if let Err(e) = endpoints.add_negotiate(&hub.negotiate_path, &hub.name) {
            cx.err(&["hubs", &hub.name, "negotiate", "path"], e);
        }
        if let Some(path) = &hub.history_path {
            let at = ["hubs", hub.name.as_str(), "history", "path"];
            if reserved(path, raw.http.status_page) {
                cx.err(&at, format!("path `{path}` is reserved for herald itself"));
            } else if let Err(e) = endpoints.add_history(path, &hub.name) {
                cx.err(&at, e);
            }
        }
    }
    let mut routes = Vec::new();
    for (name, r) in &raw.routes {
        let at = ["routes", name.as_str()];
        let method = r.method.to_ascii_uppercase();
        let method = if ROUTE_METHODS.contains(&method.as_str()) {
            Method::from_bytes(method.as_bytes()).ok()
        } else {
            cx.err(
                &[&at[..], &["method"]].concat(),
                format!(
                    "unsupported method `{}`; use one of {}",
                    r.method,
                    ROUTE_METHODS.join(", ")
                ),
            );
            None
        };
        if !r.path.starts_with('/') {
            cx.err(
                &[&at[..], &["path"]].concat(),
                format!("path `{}` must start with `/`", r.path),
            );
        }
        if reserved(&r.path, raw.http.status_page) {
            cx.err(
                &[&at[..], &["path"]].concat(),
                format!("path `{}` is reserved for herald itself", r.path),
            );
        }
        check_ref(&mut cx, &at, "hub", &r.hub, &hub_names);
        let template = resolve_template(&mut cx, &at, &r.template, &templates, &template_names);
        let to = compile_to(&mut cx, &at, r.to.as_ref());
        let auth = r.auth.as_ref().and_then(|a| {
            let auth_at = [&at[..], &["auth"]].concat();
            match (&a.api_key, &a.bearer) {
                (Some(key), None) => {
                    if key.is_empty() {
                        cx.err(&[&auth_at[..], &["api_key"]].concat(), "api_key is empty (is its environment variable set?)");
                        None
                    } else {
                        if key.chars().count() < 32 {
                            cx.warn(
                                &[&auth_at[..], &["api_key"]].concat(),
                                format!("api_key of route `{name}` is shorter than 32 characters; use a long random key"),
                            );
                        }
                        Some(RouteAuth::ApiKey(Secret::new(key.clone())))
                    }
                }
                (None, Some(jwt)) => compile_jwt(&mut cx, &[&auth_at[..], &["bearer"]].concat(), jwt).map(RouteAuth::Bearer),
                _ => {
                    cx.err(&auth_at, "auth needs exactly one of `api_key` or `bearer`");
                    None
                }
            }
        });
        let rate_limit = match &r.rate_limit {
            None => Some(None),
            Some(rl) => {
                let rl_at = [&at[..], &["rate_limit"]].concat();
                let requests = std::num::NonZeroU32::new(rl.requests);
                let burst = std::num::NonZeroU32::new(rl.burst.unwrap_or(rl.requests));
                let per = parse_duration(&rl.per);
                match (requests, burst, per) {
                    (Some(requests), Some(burst), Ok(per)) if !per.is_zero() => {
                        Some(Some(RateLimit {
                            requests,
                            per,
                            burst,
                        }))
                    }
                    (_, _, Err(e)) => {
                        cx.err(&[&rl_at[..], &["per"]].concat(), e);
                        None
                    }
                    _ => {
                        cx.err(
                            &rl_at,
                            "rate_limit needs requests ≥ 1, burst ≥ 1 and a period above 0",
                        );
                        None
                    }
                }
            }
        };
        if let (Some(method), Some(template), Some(to), Some(rate_limit)) =
            (method, template, to, rate_limit)
        {
            let index = routes.len();
            if let Err(e) = endpoints.add_route(&r.path, method.clone(), index, r.retain) {
                cx.err(&[&at[..], &["path"]].concat(), e);
                continue;
            }
            routes.push(Route {
                name: name.clone(),
                method,
                path: r.path.clone(),
                hub: r.hub.clone(),
                template,
                to,
                auth,
                rate_limit,
                retain: r.retain,
            });
        }
    }

    if !cx.errors.is_empty() {
        return Err(ConfigErrors::new(cx.errors));
    }
    let (Some(signalr), Some(http), Some(logging)) = (signalr, http, logging) else {
        return Err(ConfigErrors::whole(&src.path, "invalid configuration"));
    };
    Ok(Config {
        path: src.path.clone(),
        content_hash: content_hash(&src.text),
        signalr,
        http,
        logging,
        hubs,
        templates,
        schedules,
        routes,
        endpoints,
        state: state.unwrap_or(super::StateConfig {
            dir: None,
            synchronous: crate::store::Synchronous::Full,
            idempotency_window: Duration::from_secs(86_400),
        }),
        functions: FunctionsConfig {
            delivery: raw.functions.delivery,
        },
        api_version: match raw.signalr.api_version {
            super::model::ApiVersionSetting::V2022_06_01 => {
                crate::signalr::rest::ApiVersion::V2022_06_01
            }
            super::model::ApiVersionSetting::V1 => crate::signalr::rest::ApiVersion::V1,
        },
        warnings: cx.warnings,
    })
}

/// Hex SHA-256 of the file text: the identity of a config version.
pub fn content_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `[0].status` → `["0", "status"]`, to point errors inside `arguments`.
fn template_path(at: &str) -> Vec<String> {
    at.split(['.', '[', ']'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn check_ref(cx: &mut Ctx<'_>, at: &[&str], kind: &str, name: &str, known: &[&str]) -> bool {
    if known.contains(&name) {
        return true;
    }
    let mut msg = format!("unknown {kind} `{name}`");
    match did_you_mean(name, known) {
        Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
        None if known.is_empty() => msg.push_str(&format!(" (no {kind}s are defined)")),
        None => msg.push_str(&format!("; defined {kind}s: {}", known.join(", "))),
    }
    cx.err(&[at, &[kind]].concat(), msg);
    false
}

fn resolve_template(
    cx: &mut Ctx<'_>,
    at: &[&str],
    name: &str,
    templates: &BTreeMap<String, Arc<MessageTemplate>>,
    known: &[&str],
) -> Option<Arc<MessageTemplate>> {
    if !check_ref(cx, at, "template", name, known) {
        return None;
    }
    // Present in `known` but absent here means the template itself failed to compile,
    // which was already reported.
    templates.get(name).cloned()
}

/// `Some(None)`: no `to` (whole hub). `Some(Some(t))`: a target. `None`: an error was reported.
fn compile_to(cx: &mut Ctx<'_>, at: &[&str], to: Option<&ToSection>) -> Option<Option<ToTemplate>> {
    let Some(to) = to else { return Some(None) };
    let to_at = [at, &["to"]].concat();
    let (kind, source): (fn(String) -> Recipient, &String) =
        match (&to.user, &to.group, &to.connection) {
            (Some(u), None, None) => (Recipient::User, u),
            (None, Some(g), None) => (Recipient::Group, g),
            (None, None, Some(c)) => (Recipient::Connection, c),
            _ => {
                cx.err(
                    &to_at,
                    "`to` needs exactly one of `user`, `group` or `connection`",
                );
                return None;
            }
        };
    match Compiled::text(source) {
        Ok(value) => Some(Some(ToTemplate { kind, value })),
        Err(e) => {
            cx.err(&to_at, format!("template does not compile: {e}"));
            None
        }
    }
}

fn compile_jwt(cx: &mut Ctx<'_>, at: &[&str], jwt: &JwtSection) -> Option<JwtRule> {
    let (key, algorithm) = match (&jwt.secret, &jwt.public_key) {
        (Some(secret), None) if !secret.is_empty() => (
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ),
        (Some(_), None) => {
            cx.err(
                &[at, &["secret"]].concat(),
                "secret is empty (is its environment variable set?)",
            );
            return None;
        }
        (None, Some(pem)) => match DecodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(k) => (k, Algorithm::RS256),
            Err(e) => {
                cx.err(
                    &[at, &["public_key"]].concat(),
                    format!("public_key is not an RSA public key in PEM form: {e}"),
                );
                return None;
            }
        },
        _ => {
            cx.err(
                at,
                "bearer needs exactly one of `secret` (HS256) or `public_key` (RS256)",
            );
            return None;
        }
    };
    Some(JwtRule {
        key: Arc::new(key),
        algorithm,
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        claim: jwt.claim.clone().unwrap_or_else(|| "sub".to_string()),
    })
}

fn parse_listen(cx: &mut Ctx<'_>, at: &[&str], value: &str) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                at,
                format!("invalid listen address `{value}`: write `host:port` with an IP, e.g. `127.0.0.1:7071` or `0.0.0.0:80`"),
            );
            None
        }
    }
}

fn compile_signalr(
    cx: &mut Ctx<'_>,
    raw: &RawConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<SignalrConfig> {
    let from_file = raw
        .signalr
        .connection_string
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let connection_string = match from_file {
        Some(s) => Some((s.to_string(), true)),
        None => lookup("AzureSignalRConnectionString")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .map(|s| (s, false)),
    };
    if let Some((cs, in_file)) = connection_string {
        return match crate::signalr::ServiceEndpoint::from_connection_string(&cs) {
            Ok(endpoint) => Some(SignalrConfig::Azure(Arc::new(endpoint))),
            Err(e) => {
                let msg = if in_file {
                    format!("invalid connection string: {e}")
                } else {
                    format!("invalid connection string in AzureSignalRConnectionString: {e}")
                };
                cx.err(&["signalr", "connection_string"], msg);
                None
            }
        };
    }
    let e = &raw.signalr.embedded;
    let listen = parse_listen(cx, &["signalr", "embedded", "listen"], &e.listen)?;
    if let Some(key) = &e.access_key
        && key.len() < 16
    {
        cx.err(
            &["signalr", "embedded", "access_key"],
            "access_key must be at least 16 characters",
        );
    }
    if e.max_connections == 0 {
        cx.err(
            &["signalr", "embedded", "max_connections"],
            "max_connections must be at least 1",
        );
    }
    let timeouts = listener_timeouts(
        cx,
        &["signalr", "embedded"],
        &e.header_read_timeout,
        &e.idle_timeout,
    );
    Some(SignalrConfig::Embedded {
        listen,
        access_key: e.access_key.clone().map(Secret::new),
        public_url: e.public_url.clone(),
        max_connections: e.max_connections.max(1),
        timeouts: timeouts?,
    })
}

fn compile_http(cx: &mut Ctx<'_>, raw: &RawConfig) -> Option<HttpConfig> {
    let h = &raw.http;
    let listen = parse_listen(cx, &["http", "listen"], &h.listen);
    let body_limit = match parse_bytes(&h.body_limit) {
        Ok(n) if n > 0 => Some(n),
        Ok(_) => {
            cx.err(&["http", "body_limit"], "body_limit must be above 0");
            None
        }
        Err(e) => {
            cx.err(&["http", "body_limit"], e);
            None
        }
    };
    let request_timeout = match parse_duration(&h.request_timeout) {
        Ok(d) if d > Duration::ZERO => Some(d),
        Ok(_) => {
            cx.err(
                &["http", "request_timeout"],
                "request_timeout must be above 0",
            );
            None
        }
        Err(e) => {
            cx.err(&["http", "request_timeout"], e);
            None
        }
    };
    for (i, origin) in h.cors.allowed_origins.iter().enumerate() {
        let idx = i.to_string();
        let at = ["http", "cors", "allowed_origins", idx.as_str()];
        if origin == "*" {
            cx.warn(
                &at,
                "CORS allows any origin (`*`); list your sites' origins in production",
            );
        } else if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || axum::http::HeaderValue::from_str(origin).is_err()
            || origin.trim_end_matches('/').matches('/').count() > 2
        {
            cx.err(&at, format!("invalid origin `{origin}`: write `*` or `scheme://host[:port]`, e.g. `https://app.example.com`"));
        }
    }
    let timeouts = listener_timeouts(cx, &["http"], &h.header_read_timeout, &h.idle_timeout);
    Some(HttpConfig {
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

/// `state:` the state database's directory, commit level and idempotency window.
fn compile_state(cx: &mut Ctx<'_>, raw: &RawConfig) -> Option<super::StateConfig> {
    let st = &raw.state;
    let dir = match st.dir.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => Some(std::path::PathBuf::from(d)),
    };
    let idempotency_window =
        positive_duration(cx, &["state", "idempotency_window"], &st.idempotency_window)?;
    Some(super::StateConfig {
        dir,
        synchronous: match st.synchronous {
            super::model::SynchronousSetting::Full => crate::store::Synchronous::Full,
            super::model::SynchronousSetting::Normal => crate::store::Synchronous::Normal,
        },
        idempotency_window,
    })
}

/// `hubs.<name>.history:` the policy (None when `keep` is 0) and the endpoint's path.
fn compile_history(
    cx: &mut Ctx<'_>,
    hub: &str,
    h: &super::model::HistorySection,
) -> (Option<crate::store::HistoryPolicy>, Option<String>) {
    let max_age = positive_duration(cx, &["hubs", hub, "history", "max_age"], &h.max_age);
    if h.keep == 0 {
        return (None, None);
    }
    let path = h
        .path
        .clone()
        .unwrap_or_else(|| format!("/api/{hub}/history"));
    if !path.starts_with('/') {
        cx.err(
            &["hubs", hub, "history", "path"],
            format!("history path `{path}` must start with `/`"),
        );
    }
    let policy = max_age.map(|max_age| crate::store::HistoryPolicy {
        keep: h.keep,
        max_age,
    });
    (policy, Some(path))
}

/// A duration above zero at `path`, or an error there.
fn positive_duration(cx: &mut Ctx<'_>, path: &[&str], text: &str) -> Option<Duration> {
    match parse_duration(text) {
        Ok(d) if d > Duration::ZERO => Some(d),
        Ok(_) => {
            let key = path.last().copied().unwrap_or("duration");
            cx.err(path, format!("{key} must be above 0"));
            None
        }
        Err(e) => {
            cx.err(path, e);
            None
        }
    }
}

/// `header_read_timeout` and `idle_timeout` of the listener section at `section`.
fn listener_timeouts(
    cx: &mut Ctx<'_>,
    section: &[&str],
    header_read: &str,
    idle: &str,
) -> Option<super::ListenerTimeouts> {
    let at = |key: &'static str| {
        let mut p = section.to_vec();
        p.push(key);
        p
    };
    let header_read = positive_duration(cx, &at("header_read_timeout"), header_read);
    let idle = positive_duration(cx, &at("idle_timeout"), idle);
    Some(super::ListenerTimeouts {
        header_read: header_read?,
        idle: idle?,
    })
}

fn compile_logging(cx: &mut Ctx<'_>, raw: &RawConfig) -> Option<LoggingConfig> {
    let level = raw.logging.level.trim().to_string();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        cx.err(
            &["logging", "level"],
            format!("invalid log level `{level}`: use error, warn, info, debug, trace or a filter like `herald=debug`"),
        );
        return None;
    }
    Some(LoggingConfig {
        level,
        json: raw.logging.format == LogFormat::Json,
    })
}
