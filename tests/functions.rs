//! Azure Functions mode driven as the Functions host drives it: `herald functions init` checked
//! against golden files (refresh with `UPDATE_GOLDEN=1 cargo test --test functions`), re-runs
//! that remove only herald's own folders, and the built binary in custom-handler mode
//! (`FUNCTIONS_CUSTOMHANDLER_PORT`) invoked with host-shaped payloads (facts §6.2), asserting
//! the exact answer JSON (facts §6.3) with volatile values masked explicitly.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Recorder, free_port, herald};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, by relative path, with its text.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn init(config: &Path, dir: &Path) -> String {
    let (code, stdout, stderr) = herald(
        &[
            "functions",
            "init",
            "-c",
            config.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    stdout
}

#[test]
fn generated_app_matches_golden_files() {
    let out = tempfile::tempdir().unwrap();
    let app = out.path().join("app");
    init(&root().join("notifications.yaml"), &app);
    let generated = tree(&app);
    let golden_dir = root().join("tests/golden/functions");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&golden_dir);
        for (rel, text) in &generated {
            let path = golden_dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }
    let golden = tree(&golden_dir);
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "file list differs from tests/golden/functions (UPDATE_GOLDEN=1 refreshes it)"
    );
    for (rel, text) in &generated {
        assert_eq!(
            text, &golden[rel],
            "{rel} differs from the golden file (UPDATE_GOLDEN=1 refreshes it)"
        );
    }

    // What the acceptance names, spelt out.
    let negotiate: Value = serde_json::from_str(&generated["negotiate/function.json"]).unwrap();
    let info = negotiate["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "signalRConnectionInfo")
        .unwrap();
    assert_eq!(info["hubName"], "notifications");
    assert_eq!(
        info["connectionStringSetting"],
        "AzureSignalRConnectionString"
    );
    let timer: Value =
        serde_json::from_str(&generated["schedule-broadcast/function.json"]).unwrap();
    assert_eq!(timer["bindings"][0]["type"], "timerTrigger");
    assert_eq!(timer["bindings"][0]["schedule"], "0 */30 * * * *");
    let host: Value = serde_json::from_str(&generated["host.json"]).unwrap();
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    assert_eq!(
        generated["notifications.yaml"],
        std::fs::read_to_string(root().join("notifications.yaml")).unwrap()
    );

    // Deterministic: a second run changes nothing.
    init(&root().join("notifications.yaml"), &app);
    assert_eq!(tree(&app), generated);
}

const TWO_SCHEDULES: &str = r#"
hubs: {notifications: {}}
templates: {t: {target: tick, arguments: ["{{ schedule }}"]}}
schedules:
  morning: {cron: "0 0 9 * * *", hub: notifications, template: t}
  evening: {cron: "0 0 18 * * *", hub: notifications, template: t}
routes:
  ping: {path: /api/ping, hub: notifications, template: t}
"#;

#[test]
fn rerun_removes_only_herald_folders_of_deleted_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifications.yaml");
    let app = dir.path().join("app");
    std::fs::write(&config, TWO_SCHEDULES).unwrap();
    init(&config, &app);
    assert!(app.join("schedule-evening/function.json").exists());
    // The user's own things: a function of theirs, a file, and a note in herald's folder.
    std::fs::create_dir_all(app.join("my-func")).unwrap();
    std::fs::write(app.join("my-func/function.json"), "{\"bindings\": []}\n").unwrap();
    std::fs::write(app.join("README.txt"), "mine\n").unwrap();
    std::fs::write(app.join("schedule-morning/notes.txt"), "mine\n").unwrap();
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(app.join("local.settings.json")).unwrap())
            .unwrap();
    settings["Values"]["AzureSignalRConnectionString"] =
        json!("Endpoint=https://mine;AccessKey=k;");
    std::fs::write(app.join("local.settings.json"), settings.to_string()).unwrap();

    std::fs::write(
        &config,
        TWO_SCHEDULES
            .replace(
                "  evening: {cron: \"0 0 18 * * *\", hub: notifications, template: t}\n",
                "",
            )
            .replace("  morning:", "  early:"),
    )
    .unwrap();
    let stdout = init(&config, &app);
    assert!(!app.join("schedule-evening").exists(), "{stdout}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(app.join("schedule-early/function.json").exists());
    assert!(!app.join("schedule-morning/function.json").exists());
    assert_eq!(
        std::fs::read_to_string(app.join("schedule-morning/notes.txt")).unwrap(),
        "mine\n",
        "a file the user put in herald's folder stays"
    );
    assert!(app.join("my-func/function.json").exists());
    assert!(app.join("README.txt").exists());
    assert!(app.join("route-ping/function.json").exists());
    assert!(
        std::fs::read_to_string(app.join("local.settings.json"))
            .unwrap()
            .contains("Endpoint=https://mine"),
        "local.settings.json is never overwritten"
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(app.join(".herald-generated")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["functions"],
        json!(["negotiate", "route-ping", "schedule-early"])
    );
}

#[test]
fn init_refuses_to_overwrite_a_function_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifications.yaml");
    std::fs::write(&config, TWO_SCHEDULES).unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("route-ping")).unwrap();
    std::fs::write(app.join("route-ping/function.json"), "{\"bindings\": []}\n").unwrap();
    let (code, _, stderr) = herald(
        &[
            "functions",
            "init",
            "-c",
            config.to_str().unwrap(),
            app.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("was not generated by herald"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(app.join("route-ping/function.json")).unwrap(),
        "{\"bindings\": []}\n"
    );
    assert!(
        !app.join("host.json").exists(),
        "nothing is written on refusal"
    );
}

/// Start the binary in custom-handler mode on the repository's config (or `yaml`).
async fn handler(yaml: Option<&str>, env: &[(&str, &str)]) -> Daemon {
    herald::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifications.yaml");
    match yaml {
        Some(y) => std::fs::write(&config, y).unwrap(),
        None => std::fs::copy(root().join("notifications.yaml"), &config)
            .map(|_| ())
            .unwrap(),
    }
    let port = free_port().to_string();
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port));
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start_with(dir, config, &env, &[])
    })
    .await
    .unwrap()
}

/// POST an invocation as the host does; (status, JSON answer).
async fn invoke(d: &Daemon, function: &str, payload: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(d.url(&format!("/{function}")))
        .header(
            "X-Azure-Functions-InvocationId",
            uuid::Uuid::new_v4().to_string(),
        )
        .header("X-Azure-Functions-HostVersion", "4.1037.0.0")
        .header("User-Agent", "Azure-Functions-Host/4.1037.0.0")
        .json(payload)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Replace the value at `pointer` with `"<masked>"`, returning what was there.
fn mask(v: &mut Value, pointer: &str) -> Value {
    let shown = v.to_string();
    let slot = v
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} missing in {shown}"));
    std::mem::replace(slot, json!("<masked>"))
}

fn status_request(headers: Value, query: Value, body: &str) -> Value {
    json!({
        "Data": {
            "req": {
                "Url": "https://herald-app.azurewebsites.net/api/status",
                "Method": "POST",
                "Query": query,
                "Headers": headers,
                "Params": {},
                "Identities": [],
                "Body": body,
            }
        },
        "Metadata": {
            "Headers": {"Content-Type": "application/json"},
            "sys": {"MethodName": "route-status", "UtcNow": "2026-03-01T12:00:00.1234567Z", "RandGuid": "0d6b2a3c-1111-2222-3333-444455556666"}
        }
    })
}

#[tokio::test]
async fn custom_handler_answers_each_function_kind_exactly() {
    // The repository's config, with its default key (as if STATUS_API_KEY were unset).
    let d = handler(
        None,
        &[("STATUS_API_KEY", "local-development-key-change-me-now")],
    )
    .await;

    // Readiness: the host GETs / until anything answers.
    let r = reqwest::get(d.url("/")).await.unwrap();
    assert_eq!(r.status(), 200);

    // Negotiate (facts §6.2's example request): the binding's connection info, as the body.
    let info = json!({"url": "https://contoso.service.signalr.net/client/?hub=notifications", "accessToken": "eyJhbGciOiJIUzI1NiJ9.e30.sig"});
    let (status, answer) = invoke(
        &d,
        "negotiate",
        &json!({
            "Data": {
                "req": {"Url": "https://herald-app.azurewebsites.net/api/negotiate?negotiateVersion=1", "Method": "POST",
                        "Query": {"negotiateVersion": "1"}, "Headers": {"Content-Type": ["text/plain;charset=UTF-8"]},
                        "Params": {}, "Identities": []},
                "connectionInfo": info,
            },
            "Metadata": {"sys": {"MethodName": "negotiate", "UtcNow": "2026-03-01T12:00:00Z", "RandGuid": "0d6b2a3c-1111-2222-3333-444455556666"}}
        }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "Outputs": {"res": {"statusCode": 200, "status": 200, "body": info.to_string(),
                                "headers": {"Content-Type": "application/json"}}},
            "Logs": ["negotiate: hub notifications, anonymous"],
            "ReturnValue": null,
        })
    );
    // Older hosts hand the connection info over as a JSON string.
    let (_, answer) = invoke(
        &d,
        "negotiate",
        &json!({"Data": {"req": {"Method": "GET", "Query": "{}", "Headers": {}}, "connectionInfo": info.to_string()}, "Metadata": {}}),
    )
    .await;
    assert_eq!(answer["Outputs"]["res"]["body"], info.to_string());

    // Timer (the host's timer object; `now` is the schedule's slot at Metadata.sys.UtcNow).
    let (status, answer) = invoke(
        &d,
        "schedule-broadcast",
        &json!({
            "Data": {"timer": {"Schedule": {"AdjustForDST": true},
                "ScheduleStatus": {"Last": "2026-03-01T11:30:00.0096035+00:00", "Next": "2026-03-01T12:00:00+00:00",
                                   "LastUpdated": "2026-03-01T11:30:00.0096035+00:00"},
                "IsPastDue": false}},
            "Metadata": {"sys": {"MethodName": "schedule-broadcast", "UtcNow": "2026-03-01T12:00:00.0123456Z", "RandGuid": "0d6b2a3c-1111-2222-3333-444455556666"}}
        }),
    )
    .await;
    assert_eq!(status, 200);
    let mut answer = answer;
    let fire_id = mask(&mut answer, "/Outputs/signalRMessages/arguments/0/id");
    assert!(
        uuid::Uuid::parse_str(fire_id.as_str().unwrap()).is_ok(),
        "{fire_id}"
    );
    assert_eq!(
        answer,
        json!({
            "Outputs": {"signalRMessages": {"target": "statusUpdate", "arguments": [{
                "id": "<masked>",
                "timestamp": "2026-03-01T12:00:00.000Z",
                "status": "System operational",
                "message": "All services running normally",
            }]}},
            "Logs": ["schedule broadcast: statusUpdate to all in hub notifications"],
            "ReturnValue": null,
        })
    );

    // Status route: X-API-Key from the header arrays, Query as an object, the body as text.
    let (status, mut answer) = invoke(
        &d,
        "route-status",
        &status_request(
            json!({"Content-Type": ["application/json"], "X-API-Key": ["local-development-key-change-me-now"]}),
            json!({}),
            r#"{"status":"Degraded","message":"Queue backlog"}"#,
        ),
    )
    .await;
    assert_eq!(status, 200);
    let body = mask(&mut answer, "/Outputs/res/body");
    let id = serde_json::from_str::<Value>(body.as_str().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    // The template's `id` is the id the caller was given.
    let message_id = mask(&mut answer, "/Outputs/signalRMessages/arguments/0/id");
    assert_eq!(message_id, id.as_str());
    let timestamp = mask(
        &mut answer,
        "/Outputs/signalRMessages/arguments/0/timestamp",
    );
    let timestamp = timestamp.as_str().unwrap();
    assert!(
        timestamp.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{timestamp}"
    );
    assert_eq!(
        answer,
        json!({
            "Outputs": {
                "res": {"statusCode": 202, "status": 202, "body": "<masked>",
                        "headers": {"Content-Type": "application/json"}},
                "signalRMessages": {"target": "statusUpdate", "arguments": [{
                    "id": "<masked>", "timestamp": "<masked>", "status": "Degraded", "message": "Queue backlog",
                }]},
            },
            "Logs": [format!("route status: statusUpdate to all in hub notifications (id {id})")],
            "ReturnValue": null,
        })
    );

    // A missing key: 401 in Outputs.res, no message.
    let (status, answer) = invoke(
        &d,
        "route-status",
        &status_request(
            json!({"Content-Type": ["application/json"]}),
            json!("{}"),
            r#"{"status":"Degraded"}"#,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "Outputs": {"res": {"statusCode": 401, "status": 401,
                "body": json!({"error": "unauthorized", "detail": "send the route's key in the X-API-Key header"}).to_string(),
                "headers": {"Content-Type": "application/json"}}},
            "Logs": ["answered 401 unauthorized: send the route's key in the X-API-Key header"],
            "ReturnValue": null,
        })
    );

    // A body that is not JSON: 400, as the daemon answers it.
    let (_, answer) = invoke(
        &d,
        "route-status",
        &status_request(
            json!({"Content-Type": ["application/json"], "X-API-Key": ["local-development-key-change-me-now"]}),
            json!("{}"),
            "not json",
        ),
    )
    .await;
    assert_eq!(answer["Outputs"]["res"]["statusCode"], 400);
    assert!(answer["Outputs"].get("signalRMessages").is_none());

    // An unknown function fails the invocation.
    let (status, _) = invoke(&d, "nope", &json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(status, 404);

    assert!(
        d.logs_with("schedule started").is_empty(),
        "the cron loop is off in custom-handler mode"
    );
}

const DIRECT: &str = r#"
functions:
  delivery: direct
hubs:
  notifications: {}
templates:
  order:
    target: orderStatus
    arguments: ["{{ params.id }}", "{{ status }}", "{{ query.source }}"]
  tick:
    target: tick
    arguments: ["{{ schedule }}", "{{ now }}"]
schedules:
  tick: {cron: "*/30 * * * * *", hub: notifications, template: tick, to: {group: ops}}
routes:
  order:
    path: /api/users/{user}/orders/{id}
    hub: notifications
    template: order
    to: {user: "{{ params.user }}"}
"#;

#[tokio::test]
async fn direct_delivery_sends_through_the_rest_api() {
    herald::install_crypto();
    let rec = Recorder::start().await;
    let cs = rec.connection_string();
    let d = handler(
        Some(DIRECT),
        &[("AzureSignalRConnectionString", cs.as_str())],
    )
    .await;
    let (status, mut answer) = invoke(
        &d,
        "route-order",
        &json!({
            "Data": {"req": {"Url": "https://app/api/users/alice/orders/7?source=web", "Method": "POST",
                "Query": "{\"source\":\"web\"}", "Headers": {"Content-Type": ["application/json"]},
                "Params": {"user": "alice", "id": "7"}, "Body": "{\"status\":\"shipped\"}"}},
            "Metadata": {}
        }),
    )
    .await;
    assert_eq!(status, 200);
    mask(&mut answer, "/Outputs/res/body");
    mask(&mut answer, "/Logs/0");
    assert_eq!(
        answer,
        json!({
            "Outputs": {"res": {"statusCode": 202, "status": 202, "body": "<masked>",
                                "headers": {"Content-Type": "application/json"}}},
            "Logs": ["<masked>"],
            "ReturnValue": null,
        }),
        "direct delivery returns no signalRMessages output"
    );
    let sends = rec.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(sends[0].path, "/api/hubs/notifications/users/alice/:send");
    assert_eq!(
        sends[0].json(),
        json!({"target": "orderStatus", "arguments": ["7", "shipped", "web"]})
    );

    // The timer with a group recipient, also sent directly.
    let (status, answer) = invoke(
        &d,
        "schedule-tick",
        &json!({"Data": {"timer": {"IsPastDue": true}},
                "Metadata": {"sys": {"UtcNow": "2026-03-01T12:00:31.5Z"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "Outputs": {},
            "Logs": ["schedule tick: the timer is past due",
                     "schedule tick: tick to group ops in hub notifications, sent"],
            "ReturnValue": null,
        })
    );
    let sends = rec.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(sends[1].path, "/api/hubs/notifications/groups/ops/:send");
    assert_eq!(
        sends[1].json(),
        json!({"target": "tick", "arguments": ["tick", "2026-03-01T12:00:30.000Z"]})
    );

    // The service refusing a route's message: 503 in Outputs.res.
    rec.respond_with(reqwest::StatusCode::BAD_REQUEST);
    let (_, answer) = invoke(
        &d,
        "route-order",
        &json!({"Data": {"req": {"Query": {"source": "x"}, "Headers": {}, "Params": {"user": "bob", "id": "1"}, "Body": "{\"status\":\"s\"}"}}, "Metadata": {}}),
    )
    .await;
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 503);
    // The same answer as the daemon's listener: when to retry, nothing internal.
    assert_eq!(res["headers"]["Retry-After"], "5", "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"error": "service_unavailable",
               "detail": "the SignalR service is unavailable; retry after 5 s"})
    );
    let shown = answer.to_string();
    for internal in [
        "127.0.0.1",
        &rec.addr.port().to_string(),
        support::ACCESS_KEY,
    ] {
        assert!(!shown.contains(internal), "`{internal}` shown: {shown}");
    }
}

#[test]
fn direct_delivery_without_a_connection_string_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("n.yaml");
    std::fs::write(&config, DIRECT).unwrap();
    let port = free_port().to_string();
    let (code, _, stderr) = herald(
        &["run", "--custom-handler", "-c", config.to_str().unwrap()],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str())],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("delivery: direct needs a connection string"),
        "{stderr}"
    );
}

/// A config with client events, for the `signalRTrigger` functions.
const EVENTS: &str = r#"
hubs: {notifications: {}}
templates:
  t: {target: tick, arguments: ["{{ args[1] }}"]}
events:
  notifications:
    connected: {send_retained: true}
    methods:
      ack: {ack: true}
      join: {join_group: "orders-*"}
      say: {relay: {template: t, to: {group: "{{ args[0] }}"}}}
"#;

#[test]
fn client_events_become_signalr_trigger_functions_matching_golden_files() {
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("notifications.yaml");
    std::fs::write(&config, EVENTS).unwrap();
    let app = out.path().join("app");
    let report = init(&config, &app);
    assert!(report.contains("/runtime/webhooks/signalr"), "{report}");
    let generated = tree(&app);
    let golden_dir = root().join("tests/golden/functions-events");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&golden_dir);
        for (rel, text) in &generated {
            let path = golden_dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }
    let golden = tree(&golden_dir);
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "file list differs from tests/golden/functions-events (UPDATE_GOLDEN=1 refreshes it)"
    );
    for (rel, text) in &generated {
        assert_eq!(text, &golden[rel], "{rel} differs from the golden file");
    }
    let ack: Value =
        serde_json::from_str(&generated["method-notifications-ack/function.json"]).unwrap();
    assert_eq!(
        ack["bindings"][0],
        json!({"type": "signalRTrigger", "direction": "in", "name": "invocation",
               "hubName": "notifications", "category": "messages", "event": "ack",
               "parameterNames": ["messageId"],
               "connectionStringSetting": "AzureSignalRConnectionString"})
    );
    let connected: Value =
        serde_json::from_str(&generated["connected-notifications/function.json"]).unwrap();
    assert_eq!(connected["bindings"][0]["category"], "connections");
    assert_eq!(connected["bindings"][0]["event"], "connected");
}

fn trigger_payload(connection: &str, event: &str, arguments: Value) -> Value {
    json!({
        "Data": {"invocation": {
            "Arguments": arguments, "Error": null, "Category": "messages", "Event": event,
            "Hub": "notifications", "ConnectionId": connection, "UserId": "alice",
            "Headers": {}, "Query": {}, "Claims": {}
        }},
        "Metadata": {"sys": {"MethodName": format!("method-notifications-{event}")}}
    })
}

#[tokio::test]
async fn signalr_trigger_invocations_run_the_same_actions() {
    herald::install_crypto();
    let rec = Recorder::start().await;
    let cs = rec.connection_string();
    let d = handler(
        Some(EVENTS),
        &[("AzureSignalRConnectionString", cs.as_str())],
    )
    .await;
    let (status, answer) = invoke(
        &d,
        "method-notifications-join",
        &trigger_payload("c1", "join", json!(["orders-7"])),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ReturnValue"]["group"], "orders-7");
    let sends = rec.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sends[0].method, "PUT");
    assert!(
        sends[0].path.contains("/groups/orders-7/connections/c1"),
        "{}",
        sends[0].path
    );

    // A refusal fails the invocation, with the reason in the log.
    let (status, answer) = invoke(
        &d,
        "method-notifications-join",
        &trigger_payload("c1", "join", json!(["admins"])),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(answer["Logs"][0], "join: group `admins` is not allowed");
    assert_eq!(rec.sends().len(), 1, "nothing sent for a refusal");

    // A relay is sent straight to the service (no outbox in custom-handler mode).
    let (status, answer) = invoke(
        &d,
        "method-notifications-say",
        &trigger_payload("c1", "say", json!(["orders-7", "hi"])),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sends = rec.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        sends[1].path.contains("/groups/orders-7"),
        "{}",
        sends[1].path
    );
    assert_eq!(sends[1].json()["arguments"], json!(["hi"]));

    let (status, answer) = invoke(&d, "method-notifications-join", &json!({"Data": {}})).await;
    assert_eq!(status, 400, "{answer}");
}
