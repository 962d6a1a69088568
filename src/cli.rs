//! The command line: `run`, `check`, `schema`, `send`, `token`, `service` and
//! `functions init`, parsed with clap. Each command returns an `Outcome` that `main` maps to
//! the exit code (0 ok, 1 invalid input or config, 2 usage, 3 runtime failure).

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Args, Parser, Subcommand};

use serde_json::Value;

use crate::config::{self, Config, SignalrConfig};
use crate::message::{Message, Recipient};
use crate::service::{Service, ServiceOptions};
use crate::signalr::rest::RestClient;
use crate::telemetry::LogFormat;

/// herald: declarative real-time status notifications over SignalR.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "HERALD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// `-c FILE`, shared by the commands that read the config.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        env = "HERALD_CONFIG",
        default_value = "notifications.yaml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (and the embedded SignalR service when no connection string is set).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Serve Azure Functions custom-handler invocations on FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long)]
        custom_handler: bool,
        /// Do not watch the config file; reload only on SIGHUP (e.g. on NFS, where file
        /// events do not arrive).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate the config; print hubs, routes, schedules and their next fire times.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Send one message through the configured service.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// Hub to send into (default: the config's only hub).
        #[arg(long)]
        hub: Option<String>,
        /// Client method name.
        #[arg(long)]
        target: String,
        /// Send to this user only.
        #[arg(long, group = "recipient")]
        user: Option<String>,
        /// Send to this group only.
        #[arg(long, group = "recipient")]
        group: Option<String>,
        /// Send to this connection only.
        #[arg(long, group = "recipient")]
        connection: Option<String>,
        /// Arguments, each a JSON value (a bare word is sent as a string; text that starts
        /// like JSON, `{`, `[` or `"`, must parse).
        arguments: Vec<String>,
    },
    /// Print client connection info `{url, accessToken}` as negotiate would.
    Token {
        #[command(flatten)]
        config: ConfigArg,
        /// Hub to connect to (default: the config's only hub).
        #[arg(long)]
        hub: Option<String>,
        /// User id to put in the token.
        #[arg(long)]
        user: Option<String>,
        /// Token lifetime, e.g. `1h`.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Run only the embedded SignalR-compatible service and print its connection string.
    Service {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8888")]
        listen: String,
        /// Access key for tokens (generated when absent).
        #[arg(long, env = "HERALD_ACCESS_KEY")]
        access_key: Option<String>,
        /// Serverless upstream, as Azure's upstream settings (repeatable; the first match
        /// wins): `URL_TEMPLATE[;hub=P][;category=P][;event=P]`. The URL may hold `{hub}`,
        /// `{category}` and `{event}`; each pattern is `*` (the default), a name or a
        /// comma-separated list. Example:
        /// `--upstream 'http://localhost:7071/runtime/webhooks/signalr;category=messages'`.
        /// Connected/disconnected events and client invocations are POSTed with the
        /// X-ASRS-* headers; without one, client invocations are refused.
        #[arg(
            long = "upstream",
            value_name = "URL_TEMPLATE[;hub=P][;category=P][;event=P]"
        )]
        upstreams: Vec<String>,
    },
    /// Azure Functions custom-handler app generation.
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// Write a ready Functions app for the config into DIR.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Output folder.
        dir: PathBuf,
    },
}

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Invalid input or config (exit 1).
    Invalid,
    /// Runtime failure (exit 3).
    Failed,
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Check { config } => check(&config.config),
        Command::Schema => {
            print!("{}", config::schema::json_schema());
            Outcome::Ok
        }
        Command::Run {
            config,
            custom_handler,
            no_watch,
        } => {
            if custom_handler || std::env::var_os("FUNCTIONS_CUSTOMHANDLER_PORT").is_some() {
                return run_custom_handler(&config.config, cli.log_format);
            }
            run_daemon(&config.config, cli.log_format, !no_watch)
        }
        Command::Send {
            config,
            hub,
            target,
            user,
            group,
            connection,
            arguments,
        } => {
            let to = match (user, group, connection) {
                (Some(u), _, _) => Recipient::User(u),
                (_, Some(g), _) => Recipient::Group(g),
                (_, _, Some(c)) => Recipient::Connection(c),
                _ => Recipient::All,
            };
            let arguments = match parse_arguments(&arguments) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("herald send: {e}");
                    return Outcome::Invalid;
                }
            };
            send(&config.config, hub.as_deref(), to, target, arguments)
        }
        Command::Token {
            config,
            hub,
            user,
            ttl,
        } => token(
            &config.config,
            hub.as_deref(),
            user.as_deref(),
            ttl.as_deref(),
        ),
        Command::Service {
            listen,
            access_key,
            upstreams,
        } => service(&listen, access_key, &upstreams),
        Command::Functions {
            command: FunctionsCommand::Init { config, dir },
        } => functions_init(&config.config, &dir),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Load the config or print its errors.
fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprint!("{}", errors.render());
            None
        }
    }
}

/// Load the config (or print its errors), then set up logging as it says; `--log-format`
/// wins over `logging.format`.
fn load_with_logging(path: &Path, log_format: Option<LogFormat>) -> Option<Config> {
    let cfg = load_or_report(path)?;
    let format = log_format.unwrap_or(if cfg.logging.json {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    crate::telemetry::init(&cfg.logging.level, format);
    Some(cfg)
}

/// `herald run`.
fn run_daemon(path: &Path, log_format: Option<LogFormat>, watch: bool) -> Outcome {
    let Some(cfg) = load_with_logging(path, log_format) else {
        return Outcome::Invalid;
    };
    let Some(rt) = runtime() else {
        return Outcome::Failed;
    };
    rt.block_on(async move {
        let metrics = crate::telemetry::install_metrics();
        match crate::daemon::run(cfg, metrics, watch).await {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                // Once: logging is set up and writes to stderr.
                tracing::error!("herald stopped: {e}");
                Outcome::Failed
            }
        }
    })
}

/// The REST client for the configured service; the embedded one is reached at its listen
/// address (it must be running: `herald run` or `herald service`).
fn client_for(cfg: &Config) -> Result<RestClient, String> {
    let endpoint = match &cfg.signalr {
        SignalrConfig::Azure(endpoint) => (**endpoint).clone(),
        SignalrConfig::Embedded {
            listen,
            access_key,
            public_url,
            ..
        } => {
            let key = crate::state::embedded_access_key(access_key.as_ref()).map_err(|e| {
                format!(
                    "cannot read the embedded service's key in {}: {e}",
                    crate::state::state_dir().display()
                )
            })?;
            crate::daemon::embedded_endpoint(*listen, &key, public_url.as_deref())
                .map_err(|e| e.to_string())?
        }
    };
    RestClient::new(endpoint, crate::daemon::rest_options(cfg)).map_err(|e| e.to_string())
}

/// The command-line arguments of `herald send` as JSON values: valid JSON as it is, a bare
/// word as a string; text that starts like JSON (`{`, `[`, `"`) but does not parse is refused,
/// so a typo is never sent as a string.
pub fn parse_arguments(args: &[String]) -> Result<Vec<Value>, String> {
    args.iter()
        .enumerate()
        .map(|(i, a)| match serde_json::from_str(a) {
            Ok(v) => Ok(v),
            Err(e) if a.trim_start().starts_with(['{', '[', '"']) => Err(format!(
                "argument {} `{a}` looks like JSON but does not parse ({e}); quote it as a JSON string to send it as text",
                i + 1
            )),
            Err(_) => Ok(Value::String(a.clone())),
        })
        .collect()
}

/// The hub a command addresses: `--hub` when the config declares it, else the config's only
/// hub; otherwise a message naming the hubs there are.
pub fn pick_hub<'a>(cfg: &'a Config, hub: Option<&str>) -> Result<&'a str, String> {
    let names = || {
        cfg.hubs
            .keys()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match hub {
        Some(name) => cfg
            .hubs
            .get_key_value(name)
            .map(|(k, _)| k.as_str())
            .ok_or_else(|| {
                format!(
                    "hub `{name}` is not declared in {}; its hubs: {}",
                    cfg.path.display(),
                    names()
                )
            }),
        None if cfg.hubs.len() == 1 => cfg
            .hubs
            .keys()
            .next()
            .map(String::as_str)
            .ok_or_else(|| "the config declares no hub".to_string()),
        None => Err(format!(
            "pass --hub: {} declares the hubs {}",
            cfg.path.display(),
            names()
        )),
    }
}

/// `herald send`.
fn send(
    path: &Path,
    hub: Option<&str>,
    to: Recipient,
    target: String,
    arguments: Vec<Value>,
) -> Outcome {
    let Some(cfg) = load_or_report(path) else {
        return Outcome::Invalid;
    };
    let hub = match pick_hub(&cfg, hub) {
        Ok(h) => h.to_string(),
        Err(e) => {
            eprintln!("herald send: {e}");
            return Outcome::Invalid;
        }
    };
    let message = Message {
        hub,
        to,
        target,
        arguments,
        excluded: Vec::new(),
    };
    let rest = match client_for(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald send: {e}");
            return Outcome::Invalid;
        }
    };
    let Some(rt) = runtime() else {
        return Outcome::Failed;
    };
    match rt.block_on(rest.send(&message)) {
        Ok(()) => {
            println!(
                "sent {} to {} in hub {}",
                message.target, message.to, message.hub
            );
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("herald send: {e}");
            Outcome::Failed
        }
    }
}

/// `herald token`.
fn token(path: &Path, hub: Option<&str>, user: Option<&str>, ttl: Option<&str>) -> Outcome {
    let Some(cfg) = load_or_report(path) else {
        return Outcome::Invalid;
    };
    let hub = match pick_hub(&cfg, hub) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("herald token: {e}");
            return Outcome::Invalid;
        }
    };
    let ttl = match ttl.map(config::units::parse_duration) {
        None => cfg
            .hubs
            .get(hub)
            .map(|h| h.token_ttl)
            .unwrap_or(std::time::Duration::from_secs(3600)),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            eprintln!("herald token: --ttl must be above 0");
            return Outcome::Invalid;
        }
        Some(Err(e)) => {
            eprintln!("herald token: --ttl: {e}");
            return Outcome::Invalid;
        }
    };
    let rest = match client_for(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald token: {e}");
            return Outcome::Invalid;
        }
    };
    let endpoint = rest.endpoint();
    match crate::signalr::token::mint_client(
        endpoint.access_key(),
        &endpoint.client_audience(hub),
        user,
        ttl,
    ) {
        Ok(t) => {
            println!(
                "{}",
                serde_json::json!({"url": endpoint.client_url(hub), "accessToken": t})
            );
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("herald token: {e}");
            Outcome::Failed
        }
    }
}

/// One `--upstream`: `URL_TEMPLATE[;hub=P][;category=P][;event=P]` (patterns default `*`).
fn parse_upstream(text: &str) -> Result<crate::signalr::upstream::UpstreamTemplate, String> {
    let mut parts = text.split(';');
    let url = parts.next().unwrap_or("").trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("the URL template must start with http:// or https://".into());
    }
    let mut template = crate::signalr::upstream::UpstreamTemplate::all(url);
    for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, pattern)) = part.split_once('=') else {
            return Err(format!("`{part}` is not key=pattern"));
        };
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(format!("`{key}` has an empty pattern"));
        }
        let slot = match key.trim() {
            "hub" => &mut template.hub_pattern,
            "category" => &mut template.category_pattern,
            "event" => &mut template.event_pattern,
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected hub, category or event)"
                ));
            }
        };
        *slot = pattern.to_string();
    }
    Ok(template)
}

/// `herald service`.
fn service(listen: &str, access_key: Option<String>, upstreams: &[String]) -> Outcome {
    let mut templates = Vec::new();
    for text in upstreams {
        match parse_upstream(text) {
            Ok(template) => templates.push(template),
            Err(e) => {
                eprintln!("herald service: invalid --upstream `{text}`: {e}");
                return Outcome::Invalid;
            }
        }
    }
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        eprintln!(
            "herald service: invalid --listen `{listen}`: write host:port, e.g. 127.0.0.1:8888"
        );
        return Outcome::Invalid;
    };
    if access_key.as_ref().is_some_and(|k| k.len() < 16) {
        eprintln!("herald service: --access-key must be at least 16 characters");
        return Outcome::Invalid;
    }
    crate::telemetry::init("info", LogFormat::Text);
    let Some(rt) = runtime() else {
        return Outcome::Failed;
    };
    rt.block_on(async move {
        let key = access_key.unwrap_or_else(crate::state::generate_access_key);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut options = ServiceOptions::new(addr, vec![key.clone()]);
        options.upstreams = templates;
        let handle = match Service::start(options, shutdown.clone()).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("herald service: {e}");
                return Outcome::Failed;
            }
        };
        match crate::daemon::embedded_endpoint(handle.local_addr(), &key, None) {
            // Printed once, on stdout, for the operator to copy; never logged.
            Ok(endpoint) => println!("{}", endpoint.to_connection_string()),
            Err(e) => {
                eprintln!("herald service: {e}");
                return Outcome::Failed;
            }
        }
        let (tx, mut rx) = crate::control::channel();
        if let Err(e) = crate::control::spawn_signal_forwarder(tx) {
            eprintln!("herald service: {e}");
            return Outcome::Failed;
        }
        while let Some(msg) = rx.recv().await {
            if msg == crate::control::Control::Shutdown {
                break;
            }
        }
        shutdown.cancel();
        handle.stopped().await;
        Outcome::Ok
    })
}

/// `herald run --custom-handler` (or with `FUNCTIONS_CUSTOMHANDLER_PORT` set): serve Azure
/// Functions invocations on that port.
fn run_custom_handler(path: &Path, log_format: Option<LogFormat>) -> Outcome {
    let Some(cfg) = load_with_logging(path, log_format) else {
        return Outcome::Invalid;
    };
    let port = match crate::daemon::functions::port_from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("herald: {e}");
            return Outcome::Invalid;
        }
    };
    let Some(rt) = runtime() else {
        return Outcome::Failed;
    };
    rt.block_on(async move {
        match crate::daemon::functions::run(cfg, port).await {
            Ok(()) => Outcome::Ok,
            Err(e @ crate::daemon::functions::FunctionsError::DirectNeedsConnectionString) => {
                eprintln!("herald: {e}");
                Outcome::Invalid
            }
            Err(e) => {
                // Once: logging is set up and writes to stderr.
                tracing::error!("herald stopped: {e}");
                Outcome::Failed
            }
        }
    })
}

/// `herald functions init`: generate the Functions app in `dir`.
fn functions_init(path: &Path, dir: &Path) -> Outcome {
    let Some(cfg) = load_or_report(path) else {
        return Outcome::Invalid;
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("herald functions init: {}: {e}", path.display());
            return Outcome::Invalid;
        }
    };
    match crate::daemon::functions::init::init(&cfg, &text, dir) {
        Ok(report) => {
            for f in &report.written {
                println!("wrote {}", dir.join(f).display());
            }
            for f in &report.removed {
                println!("removed {}", dir.join(f).display());
            }
            for n in &report.notes {
                println!("note: {n}");
            }
            println!(
                "next: put a Linux x86-64 `herald` binary at {}, set AzureSignalRConnectionString in local.settings.json, then `func start` or `func azure functionapp publish <app>`",
                dir.join(crate::daemon::functions::init::EXECUTABLE)
                    .display()
            );
            Outcome::Ok
        }
        Err(e @ crate::daemon::functions::FunctionsError::Io { .. }) => {
            eprintln!("herald functions init: {e}");
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("herald functions init: {e}");
            Outcome::Invalid
        }
    }
}

/// `herald check`: validate and summarise.
pub fn check(path: &Path) -> Outcome {
    match config::load(path) {
        Ok(cfg) => {
            print!("{}", summary(&cfg));
            Outcome::Ok
        }
        Err(errors) => {
            eprint!("{}", errors.render());
            Outcome::Invalid
        }
    }
}

/// The human summary `herald check` prints for a valid config.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid (sha256 {})",
        cfg.path.display(),
        &cfg.content_hash[..12]
    );
    match &cfg.signalr {
        SignalrConfig::Azure(endpoint) => {
            let _ = writeln!(out, "service: {}", endpoint.connection_string_redacted());
        }
        SignalrConfig::Embedded { listen, .. } => {
            let _ = writeln!(out, "service: embedded SignalR service on {listen}");
        }
    }
    let _ = writeln!(out, "http: {}", cfg.http.listen);
    let _ = writeln!(out, "hubs:");
    for hub in cfg.hubs.values() {
        let user = match &hub.user_id {
            None => "anonymous".to_string(),
            Some(rule) => match &rule.source {
                config::UserIdSource::Header(h) => format!("user id from header {h}"),
                config::UserIdSource::Bearer(j) => {
                    format!("user id from bearer claim `{}`", j.claim)
                }
            },
        };
        let _ = writeln!(
            out,
            "  {}  negotiate GET|POST {}  token ttl {}s, {user}",
            hub.name,
            hub.negotiate_path,
            hub.token_ttl.as_secs()
        );
    }
    let _ = writeln!(out, "routes:");
    if cfg.routes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for r in &cfg.routes {
        let auth = match &r.auth {
            None => "no auth",
            Some(config::RouteAuth::ApiKey(_)) => "X-API-Key",
            Some(config::RouteAuth::Bearer(_)) => "bearer token",
        };
        let _ = writeln!(
            out,
            "  {} {}  ({}) -> hub {}, template {}, {auth}",
            r.method, r.path, r.name, r.hub, r.template.name
        );
    }
    let _ = writeln!(out, "schedules:");
    if cfg.schedules.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let now = Utc::now();
    for s in cfg.schedules.values() {
        let _ = writeln!(
            out,
            "  {}  \"{}\" in {} -> hub {}, template {}",
            s.name,
            s.cron.expression(),
            s.cron.time_zone().name(),
            s.hub,
            s.template.name
        );
        for t in s.cron.next_n(now, 3) {
            let _ = writeln!(out, "    next: {}", t.to_rfc3339());
        }
    }
    if !cfg.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &cfg.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_upstream;

    #[test]
    fn upstream_flags_take_a_url_and_optional_patterns() {
        let t = parse_upstream("http://h/{hub}/{event}").expect("plain URL");
        assert_eq!(t.url_template, "http://h/{hub}/{event}");
        assert_eq!(
            (
                t.hub_pattern.as_str(),
                t.category_pattern.as_str(),
                t.event_pattern.as_str()
            ),
            ("*", "*", "*")
        );
        let t = parse_upstream("https://h/x; hub=chat, news ;category=messages;event=*")
            .expect("patterns");
        assert_eq!(t.hub_pattern, "chat, news");
        assert_eq!(t.category_pattern, "messages");
        assert!(t.matches("news", "messages", "send"));
        assert!(!t.matches("news", "connections", "connected"));
        for bad in ["h/x", "http://h;hub", "http://h;room=a", "http://h;event="] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
