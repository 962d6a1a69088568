//! The command line: `run`, `check`, `schema`, `send`, `token`, `service` and
//! `functions init`, parsed with clap. Each command returns an `Outcome` that `main` maps to
//! the exit code (0 ok, 1 invalid input or config, 2 usage, 3 runtime failure).

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, SignalrConfig};
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
        /// Hub to send into.
        #[arg(long)]
        hub: String,
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
        /// Arguments, each a JSON value (a bare word is sent as a string).
        arguments: Vec<String>,
    },
    /// Print client connection info `{url, accessToken}` as negotiate would.
    Token {
        #[command(flatten)]
        config: ConfigArg,
        /// Hub to connect to.
        #[arg(long)]
        hub: String,
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
        Command::Run { .. } => not_yet("run"),
        Command::Send { .. } => not_yet("send"),
        Command::Token { .. } => not_yet("token"),
        Command::Service { .. } => not_yet("service"),
        Command::Functions { .. } => not_yet("functions init"),
    }
}

fn not_yet(name: &str) -> Outcome {
    eprintln!("herald {name}: not implemented yet");
    Outcome::Failed
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
