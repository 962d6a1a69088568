//! `herald send` and `herald token` as a user meets them: a hub the config does not declare is
//! refused with the hubs it has, `--hub` defaults to the only hub, an argument that starts like
//! JSON must parse, the confirmation names the recipient; and a listener that cannot bind is
//! reported once, with a hint.

mod support;

use std::time::Duration;

use support::{ACCESS_KEY, Recorder, herald};

fn azure_env(port: u16) -> String {
    format!("Endpoint=http://127.0.0.1;Port={port};AccessKey={ACCESS_KEY};Version=1.0;")
}

fn config_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("n.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn token_refuses_an_undeclared_hub_and_defaults_to_the_only_one() {
    let dir = tempfile::tempdir().unwrap();
    let cs = azure_env(1);
    let env = [("AzureSignalRConnectionString", cs.as_str())];
    let two = config_file(&dir, "hubs: {alerts: {}, notifications: {}}\n");
    let (code, out, err) = herald(&["token", "-c", &two, "--hub", "notifs"], &env);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("hub `notifs` is not declared") && err.contains("`alerts`, `notifications`"),
        "{err}"
    );
    let (code, _, err) = herald(&["token", "-c", &two], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--hub") && err.contains("`alerts`, `notifications`"),
        "{err}"
    );

    let one = config_file(&dir, "hubs: {notifications: {}}\n");
    let (code, out, err) = herald(&["token", "-c", &one, "--user", "alice"], &env);
    assert_eq!(code, Some(0), "{err}");
    let info: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(info["url"], "http://127.0.0.1:1/client/?hub=notifications");
}

#[tokio::test(flavor = "multi_thread")]
async fn send_checks_hub_and_json_and_names_the_recipient() {
    herald::install_crypto();
    let rec = Recorder::start().await;
    let cs = rec.connection_string();
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(&dir, "hubs: {notifications: {}}\n");
    let env = [("AzureSignalRConnectionString", cs.as_str())];
    let send = |args: &[&str]| {
        let mut all = vec!["send", "-c", path.as_str(), "--target", "statusUpdate"];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| herald(&all, &env))
    };
    for bad in ["{bad", "[1,", "\"unterminated"] {
        let (code, out, err) = send(&["--user", "alice", "fine", bad]);
        assert_eq!(code, Some(1), "{bad}: {out}{err}");
        assert!(
            err.contains("argument 2") && err.contains("looks like JSON") && err.contains(bad),
            "{err}"
        );
    }
    let (code, _, err) = send(&["--hub", "alerts", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("hub `alerts` is not declared") && err.contains("`notifications`"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rec.sends().is_empty(), "a refused send reached the service");

    let (code, out, err) = send(&["--user", "alice", "{\"ok\": true}", "plain words"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        "sent statusUpdate to user alice in hub notifications"
    );
    let sends = rec.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(sends[0].path, "/api/hubs/notifications/users/alice/:send");
    assert_eq!(
        sends[0].json()["arguments"],
        serde_json::json!([{"ok": true}, "plain words"])
    );
    let (code, out, err) = send(&["--group", "ops", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "sent statusUpdate to group ops in hub notifications"
    );
}

#[test]
fn address_in_use_is_reported_once_with_a_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cs = azure_env(1);
    for (yaml, env) in [
        (
            format!("http:\n  listen: 127.0.0.1:{port}\nhubs: {{n: {{}}}}\n"),
            vec![("AzureSignalRConnectionString", cs.as_str())],
        ),
        (
            format!(
                "signalr:\n  embedded:\n    listen: 127.0.0.1:{port}\nhttp:\n  listen: 127.0.0.1:0\nhubs: {{n: {{}}}}\n"
            ),
            vec![("XDG_STATE_HOME", state.to_str().unwrap())],
        ),
    ] {
        let path = config_file(&dir, &yaml);
        let (code, out, err) = herald(&["run", "--no-watch", "-c", &path], &env);
        assert_eq!(code, Some(3), "{out}{err}");
        let lower = err.to_lowercase();
        assert_eq!(lower.matches("address already in use").count(), 1, "{err}");
        assert!(lower.contains("another herald"), "{err}");
    }
    drop(taken);
}
