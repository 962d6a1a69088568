//! `herald functions init`: generate an Azure Functions custom-handler app from the config.
//! herald owns `host.json`'s handler keys, the function folders it lists in its manifest
//! (`.herald-generated`) and the config copy; `local.settings.json` is written once (it holds
//! the user's secrets afterwards). Output is deterministic (sorted keys, fixed order), and a
//! re-run removes only the folders of herald's own functions that the config no longer has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{
    CONNECTION_STRING_SETTING, FunctionDef, FunctionKind, FunctionsError, binding, function_table,
    valid_function_name,
};
use crate::config::{Config, FunctionsDelivery};

/// The manifest of generated function folders, in the app folder.
pub const MANIFEST: &str = ".herald-generated";
/// The config copy's name in the app (the handler's `-c` argument).
pub const CONFIG_NAME: &str = "notifications.yaml";
/// The handler executable's name in the app folder.
pub const EXECUTABLE: &str = "herald";

/// What `init` did, for the command to print.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Files written (created or updated), relative to the app folder.
    pub written: Vec<PathBuf>,
    /// Function folders removed because their schedule or route is gone.
    pub removed: Vec<PathBuf>,
    /// Things a user should know: kept folders, time zones, paths outside `/api/`.
    pub notes: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FunctionsError + '_ {
    move |source| FunctionsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Pretty JSON with a trailing newline (keys sorted: serde_json's map is ordered).
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

/// An http trigger's `route`: the path without its leading `/api/` (the host adds its
/// `api` route prefix), and whether the path had that prefix.
pub fn trigger_route(path: &str) -> (String, bool) {
    match path.strip_prefix("/api/") {
        Some(rest) => (rest.to_string(), true),
        None => (path.trim_start_matches('/').to_string(), false),
    }
}

fn signalr_output(hub: &str) -> Value {
    json!({
        "type": "signalR",
        "direction": "out",
        "name": binding::SIGNALR_MESSAGES,
        "hubName": hub,
        "connectionStringSetting": CONNECTION_STRING_SETTING,
    })
}

fn http_trigger(methods: &[String], route: &str) -> Value {
    json!({
        "type": "httpTrigger",
        "direction": "in",
        "name": binding::REQ,
        "authLevel": "anonymous",
        "methods": methods,
        "route": route,
    })
}

/// The `signalRTrigger` of a client-event function: the service's upstream calls reach the
/// Functions host at `/runtime/webhooks/signalr`, which invokes the function.
fn signalr_trigger(hub: &str, category: &str, event: &str, parameters: &[&str]) -> Value {
    let mut trigger = json!({
        "type": "signalRTrigger",
        "direction": "in",
        "name": binding::INVOCATION,
        "hubName": hub,
        "category": category,
        "event": event,
        "connectionStringSetting": CONNECTION_STRING_SETTING,
    });
    if !parameters.is_empty() {
        trigger["parameterNames"] = json!(parameters);
    }
    trigger
}

fn http_output() -> Value {
    json!({"type": "http", "direction": "out", "name": binding::RES})
}

/// The function.json of `def`.
pub fn function_json(cfg: &Config, def: &FunctionDef) -> Value {
    let direct = cfg.functions.delivery == FunctionsDelivery::Direct;
    let bindings = match &def.kind {
        FunctionKind::Negotiate { hub } => {
            let path = cfg
                .hubs
                .get(hub)
                .map(|h| h.negotiate_path.as_str())
                .unwrap_or("/api/negotiate");
            let mut info = json!({
                "type": "signalRConnectionInfo",
                "direction": "in",
                "name": binding::CONNECTION_INFO,
                "hubName": hub,
                "connectionStringSetting": CONNECTION_STRING_SETTING,
            });
            if let Some(rule) = cfg.hubs.get(hub).and_then(|h| h.user_id.as_ref())
                && let crate::config::UserIdSource::Header(name) = &rule.source
            {
                info["userId"] = json!(format!("{{headers.{name}}}"));
            }
            vec![
                http_trigger(
                    &["get".to_string(), "post".to_string()],
                    &trigger_route(path).0,
                ),
                info,
                http_output(),
            ]
        }
        FunctionKind::Route { index } => match cfg.routes.get(*index) {
            Some(route) => {
                let mut b = vec![http_trigger(
                    &[route.method.as_str().to_ascii_lowercase()],
                    &trigger_route(&route.path).0,
                )];
                if !direct {
                    b.push(signalr_output(&route.hub));
                }
                b.push(http_output());
                b
            }
            None => Vec::new(),
        },
        FunctionKind::Schedule { name } => match cfg.schedules.get(name) {
            Some(s) => {
                let mut b = vec![json!({
                    "type": "timerTrigger",
                    "direction": "in",
                    "name": binding::TIMER,
                    "schedule": s.cron.expression(),
                    "runOnStartup": s.run_on_startup,
                })];
                if !direct {
                    b.push(signalr_output(&s.hub));
                }
                b
            }
            None => Vec::new(),
        },
        FunctionKind::Connected { hub } => {
            vec![signalr_trigger(hub, "connections", "connected", &[])]
        }
        FunctionKind::Method { hub, method } => {
            let parameters: &[&str] = match cfg.events_of(hub).and_then(|e| e.method(method)) {
                Some(m) => match &m.action {
                    crate::config::EventAction::Ack => &["messageId"],
                    crate::config::EventAction::JoinGroup(_)
                    | crate::config::EventAction::LeaveGroup(_) => &["group"],
                    crate::config::EventAction::Relay { .. } => &[],
                },
                None => &[],
            };
            vec![signalr_trigger(hub, "messages", method, parameters)]
        }
    };
    json!({ "bindings": bindings })
}

/// herald's keys of host.json, set over whatever else the file holds.
fn host_json(existing: Option<Value>) -> Value {
    let mut host = match existing {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    host.insert("version".into(), json!("2.0"));
    host.insert(
        "customHandler".into(),
        json!({
            "description": {
                "defaultExecutablePath": EXECUTABLE,
                "workingDirectory": "",
                "arguments": ["run", "--custom-handler", "-c", CONFIG_NAME],
            },
            "enableForwardingHttpRequest": false,
        }),
    );
    host.insert(
        "extensionBundle".into(),
        json!({"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}),
    );
    Value::Object(host)
}

/// local.settings.json for `func start`: the custom runtime, storage for the timer's lock,
/// a connection-string placeholder and the config's CORS origins.
fn local_settings(cfg: &Config) -> Value {
    let mut settings = json!({
        "IsEncrypted": false,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "custom",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            CONNECTION_STRING_SETTING: "Endpoint=https://<your-signalr>.service.signalr.net;AccessKey=<access-key>;Version=1.0;",
        },
    });
    if !cfg.http.cors_origins.is_empty() {
        settings["Host"] = json!({ "CORS": cfg.http.cors_origins.join(",") });
    }
    settings
}

fn read_json(path: &Path) -> Result<Option<Value>, FunctionsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| FunctionsError::InvalidJson {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FunctionsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The function folders a previous run generated (invalid names are ignored, never touched).
fn read_manifest(dir: &Path) -> Result<BTreeSet<String>, FunctionsError> {
    let Some(manifest) = read_json(&dir.join(MANIFEST))? else {
        return Ok(BTreeSet::new());
    };
    Ok(manifest["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|n| valid_function_name(n))
        .map(str::to_string)
        .collect())
}

/// Write `text` to `dir/rel` unless it already holds exactly that.
fn write(
    dir: &Path,
    rel: &Path,
    text: &str,
    report: &mut InitReport,
) -> Result<(), FunctionsError> {
    let path = dir.join(rel);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    report.written.push(rel.to_path_buf());
    Ok(())
}

/// Generate (or update) the Functions app for `cfg` in `dir`. `config_text` is the config
/// file's text, copied as `notifications.yaml` (its `${VAR}` references are resolved from
/// app settings when the handler starts).
pub fn init(cfg: &Config, config_text: &str, dir: &Path) -> Result<InitReport, FunctionsError> {
    let defs = function_table(cfg)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let previous = read_manifest(dir)?;
    let host_path = dir.join("host.json");
    let host = host_json(read_json(&host_path)?);

    // Refuse before writing anything if a folder herald did not make would be overwritten.
    let mut functions = Vec::new();
    for def in &defs {
        let text = pretty(&function_json(cfg, def));
        let path = dir.join(&def.name).join("function.json");
        if !previous.contains(&def.name)
            && let Ok(existing) = std::fs::read_to_string(&path)
            && existing != text
        {
            return Err(FunctionsError::NotOurs {
                path,
                what: def.describe(cfg),
            });
        }
        functions.push((def, text));
    }

    let mut report = InitReport::default();
    write(dir, Path::new("host.json"), &pretty(&host), &mut report)?;
    let settings = Path::new("local.settings.json");
    if dir.join(settings).exists() {
        report
            .notes
            .push("kept local.settings.json (it holds your settings)".to_string());
    } else {
        write(dir, settings, &pretty(&local_settings(cfg)), &mut report)?;
    }
    write(dir, Path::new(CONFIG_NAME), config_text, &mut report)?;
    for (def, text) in &functions {
        write(
            dir,
            &Path::new(&def.name).join("function.json"),
            text,
            &mut report,
        )?;
    }

    // Remove what herald generated before and the config no longer has: only function.json,
    // and the folder only if that leaves it empty.
    let current: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    for old in previous.iter().filter(|n| !current.contains(n.as_str())) {
        let folder = dir.join(old);
        let file = folder.join("function.json");
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(FunctionsError::Io { path: file, source }),
        }
        let empty = std::fs::read_dir(&folder)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if empty {
            std::fs::remove_dir(&folder).map_err(io(&folder))?;
            report.removed.push(PathBuf::from(old));
        } else if folder.exists() {
            report.notes.push(format!(
                "removed {old}/function.json; kept the folder {old}/ for the files you added there"
            ));
        }
    }

    let manifest = json!({
        "generator": "herald functions init",
        "note": "Function folders herald generated; a re-run removes those the config no longer has. Do not edit.",
        "functions": defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
    });
    write(dir, Path::new(MANIFEST), &pretty(&manifest), &mut report)?;

    for def in &defs {
        let path = match &def.kind {
            FunctionKind::Negotiate { hub } => cfg.hubs.get(hub).map(|h| &h.negotiate_path),
            FunctionKind::Route { index } => cfg.routes.get(*index).map(|r| &r.path),
            FunctionKind::Schedule { .. }
            | FunctionKind::Connected { .. }
            | FunctionKind::Method { .. } => None,
        };
        if let Some(path) = path
            && !trigger_route(path).1
        {
            report.notes.push(format!(
                "{} is served at /api{path} (Functions puts `api/` before every route)",
                def.name
            ));
        }
    }
    if !cfg.events.is_empty() {
        report.notes.push("client events reach the app through the SignalR trigger: set the service's upstream URL to https://<app>.azurewebsites.net/runtime/webhooks/signalr?code=<signalr_extension key>".to_string());
    }
    for s in cfg.schedules.values() {
        let zone = s.cron.time_zone().name();
        if zone != "UTC" {
            report.notes.push(format!(
                "schedule `{}` uses time zone {zone}: Functions timers read the app-wide WEBSITE_TIME_ZONE setting (UTC by default; not supported on Linux Consumption)",
                s.name
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_routes_drop_the_api_prefix() {
        assert_eq!(trigger_route("/api/status"), ("status".to_string(), true));
        assert_eq!(
            trigger_route("/api/orders/{id}"),
            ("orders/{id}".to_string(), true)
        );
        assert_eq!(trigger_route("/hooks/x"), ("hooks/x".to_string(), false));
    }

    #[test]
    fn host_json_keeps_other_keys() {
        let host = host_json(Some(
            json!({"logging": {"logLevel": {"default": "Warning"}}, "version": "1"}),
        ));
        assert_eq!(host["version"], "2.0");
        assert_eq!(host["logging"]["logLevel"]["default"], "Warning");
        assert_eq!(
            host["customHandler"]["description"]["arguments"],
            json!(["run", "--custom-handler", "-c", "notifications.yaml"])
        );
    }

    #[test]
    fn header_user_id_becomes_a_binding_expression() {
        let cfg = crate::config::load_str(
            Path::new("t.yaml"),
            "hubs: {chat: {negotiate: {user_id: {header: x-ms-client-principal-id}}}}\n",
            &|_| None,
        )
        .unwrap();
        let defs = function_table(&cfg).unwrap();
        let f = function_json(&cfg, &defs[0]);
        assert_eq!(
            f["bindings"][1]["userId"],
            "{headers.x-ms-client-principal-id}"
        );
    }
}
