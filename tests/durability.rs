//! Nothing lost: a status accepted with 202 reaches its clients even when the SignalR service
//! is frozen and herald is killed with SIGKILL in between (exactly once, in order, through the
//! embedded service's message-id check); an `Idempotency-Key` sends once; history returns
//! exactly what a client missed and never another user's messages; a retained status survives
//! a restart.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http::wait_until;
use support::{ClientProcess, Daemon, DaemonYaml, free_port};

const KEY: &str = support::API_KEY;
const ACCESS_KEY: &str = "durability-test-access-key-0123456789abcdef";

/// `herald service` as its own process, on a port picked here.
struct ServiceProcess {
    child: Child,
    port: u16,
}

impl ServiceProcess {
    fn start() -> ServiceProcess {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "service",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--access-key",
                ACCESS_KEY,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn herald service");
        // It prints its connection string once it listens.
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("connection string");
        assert!(line.contains("Endpoint="), "{line}");
        ServiceProcess { child, port }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status template's arguments in this file: the posted `n`.
const ARGUMENTS: &str = r#"["{{ n }}"]"#;

fn azure_config(port: u16, state: &std::path::Path) -> String {
    DaemonYaml::connection_string(&format!(
        "Endpoint=http://127.0.0.1;Port={port};AccessKey={ACCESS_KEY};Version=1.0;"
    ))
    .arguments(ARGUMENTS)
    .section(&format!("state:\n  dir: {}\n", state.display()))
    .build()
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Option<reqwest::Response> {
    support::http::post(client, url, Some(KEY), &body)
        .await
        .ok()
}

/// Wait until `client` has `n` messages (or the timeout); returns their first arguments.
fn received(client: &mut ClientProcess, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let got: Vec<Value> = client
            .messages()
            .iter()
            .map(|m| m["args"][0].clone())
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_a_frozen_service_and_a_killed_herald_exactly_once_in_order() {
    let service = ServiceProcess::start();
    let state = tempfile::tempdir().unwrap();
    let config = azure_config(service.port, state.path());
    let mut daemon = Daemon::start(&config, &[]);
    let mut client = ClientProcess::js(&["--url", &daemon.url("/api")]);
    client.connected();

    // Freeze the service: herald can store, but not deliver.
    service.signal("STOP");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = daemon.url("/api/status");
    let mut accepted = Vec::new();
    for n in 0..1000 {
        if let Some(r) = post(&http, &url, json!({ "n": n })).await
            && r.status() == 202
        {
            accepted.push(n);
        }
    }
    assert!(
        accepted.len() >= 750,
        "only {} of 1000 posts were accepted while the service was frozen",
        accepted.len()
    );
    // Kill herald while everything is still undelivered, then let the service go on.
    daemon.signal("KILL");
    let _ = daemon.wait_exit(Duration::from_secs(10));
    service.signal("CONT");
    drop(daemon);
    let _daemon = Daemon::start(&config, &[]);

    let got = received(&mut client, accepted.len(), Duration::from_secs(60));
    let expected: Vec<Value> = accepted.iter().map(|n| json!(n)).collect();
    // Compact reports: these lists are long.
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&Value> = got.iter().filter(|v| !seen.insert(v.to_string())).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let missing: Vec<&Value> = expected.iter().filter(|v| !got.contains(v)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    let first_out_of_order = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_out_of_order, None, "not in the order accepted");
    assert_eq!(got.len(), expected.len());
    // Nothing more arrives later (no late duplicate).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(client.messages().len(), expected.len());
}

fn embedded_config(extra_hub: &str, extra_routes: &str) -> DaemonYaml {
    DaemonYaml::embedded()
        .hub(extra_hub)
        .arguments(ARGUMENTS)
        .routes(extra_routes)
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_id_and_sends_once() {
    let daemon = Daemon::start(&embedded_config("    {}", "").build(), &[]);
    let mut client = ClientProcess::js(&["--url", &daemon.url("/api")]);
    client.connected();
    let http = reqwest::Client::new();
    let send = |n: u32, key: &'static str| {
        http.post(daemon.url("/api/status"))
            .header("x-api-key", KEY)
            .header("idempotency-key", key)
            .json(&json!({ "n": n }))
            .send()
    };
    let first = send(1, "order-42").await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(2, "order-42").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"], "the repeat gets the first answer");
    let other = send(3, "order-43").await.unwrap();
    assert_eq!(other.status(), 202);
    let got = received(&mut client, 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let got_after = client.messages();
    assert_eq!(got, vec![json!(1), json!(3)]);
    assert_eq!(got_after.len(), 2, "the repeat was never sent");

    let bad = http
        .post(daemon.url("/api/status"))
        .header("x-api-key", KEY)
        .header("idempotency-key", "")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn history(daemon: &Daemon, user: Option<&str>, query: &str) -> Value {
    let mut req =
        reqwest::Client::new().get(daemon.url(&format!("/api/notifications/history{query}")));
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn ns(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["arguments"][0].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn history_returns_exactly_what_was_missed_and_never_another_users() {
    let hub =
        "    negotiate:\n      user_id: {header: x-user}\n    history: {keep: 100, max_age: 1h}";
    let routes = format!(
        "  direct:\n    path: /api/direct/{{user}}\n    hub: notifications\n    template: status\n    to: {{user: \"{{{{ params.user }}}}\"}}\n    auth: {{api_key: {KEY}}}\n"
    );
    let daemon = Daemon::start(&embedded_config(hub, &routes).build(), &[]);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (path, n) in [
        ("/api/status", "b1"),
        ("/api/direct/alice", "a1"),
        ("/api/direct/bob", "x1"),
        ("/api/status", "b2"),
    ] {
        let r = post(&http, &daemon.url(path), json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // History is written as messages are delivered: wait for all four.
    wait_until(Duration::from_secs(10), "history not written", || async {
        let got = ns(&history(&daemon, Some("alice"), "").await);
        if got.len() >= 3 {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert_eq!(
        ns(&history(&daemon, Some("alice"), "").await),
        ["b1", "a1", "b2"]
    );
    assert_eq!(
        ns(&history(&daemon, Some("bob"), "").await),
        ["b1", "x1", "b2"]
    );
    assert_eq!(ns(&history(&daemon, None, "").await), ["b1", "b2"]);
    let after = history(&daemon, Some("alice"), &format!("?after={}", ids[0])).await;
    assert_eq!(ns(&after), ["a1", "b2"], "exactly what came after");
    assert!(after.get("reset").is_none());
    let m = &after["messages"][0];
    assert_eq!(m["id"], ids[1].as_str());
    assert_eq!(m["target"], "statusUpdate");
    assert!(m["time"].as_str().unwrap().ends_with('Z'));
    let limited = history(&daemon, Some("alice"), "?limit=1").await;
    assert_eq!(ns(&limited), ["b1"]);
    let unknown = history(&daemon, None, "?after=not-an-id").await;
    assert_eq!(
        unknown["reset"], true,
        "an unknown id says the client may have missed some"
    );
    let bad = http
        .get(daemon.url("/api/notifications/history?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_retained_status_is_answered_on_get_and_survives_a_restart() {
    let config = embedded_config("    {}", "")
        .status_route("    retain: true\n")
        .build();
    assert!(config.contains("retain: true"));
    let mut daemon = Daemon::start(&config, &[]);
    let http = reqwest::Client::new();
    let before = http.get(daemon.url("/api/status")).send().await.unwrap();
    assert_eq!(before.status(), 404);
    for n in ["Operational", "Degraded"] {
        let r = post(&http, &daemon.url("/api/status"), json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let now: Value = http
        .get(daemon.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["arguments"], json!(["Degraded"]));
    assert_eq!(now["target"], "statusUpdate");

    // Restart on the same state directory.
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    let path = daemon.config_path.clone();
    drop(daemon);
    let daemon = Daemon::start_in(dir, path, &[]);
    let after: Value = http
        .get(daemon.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, now, "the same status after a restart");
}

#[test]
fn a_corrupt_state_database_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("herald.db");
    std::fs::write(&db, vec![0x5au8; 16 * 1024]).unwrap();
    let config = dir.path().join("notifications.yaml");
    std::fs::write(
        &config,
        format!(
            "http:\n  listen: 127.0.0.1:0\nsignalr:\n  embedded:\n    listen: 127.0.0.1:0\nstate:\n  dir: {}\nhubs:\n  notifications: {{}}\n",
            state.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["run", "--no-watch", "-c"])
        .arg(&config)
        .env("XDG_STATE_HOME", dir.path().join("xdg"))
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    assert!(
        !out.status.success(),
        "herald must not start on a corrupt store"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&db.display().to_string()),
        "the error names the file: {stderr}"
    );
    assert!(
        std::fs::read(&db).unwrap() == vec![0x5au8; 16 * 1024],
        "the file is left as it was"
    );
}

#[tokio::test]
async fn templates_see_the_message_id_the_caller_gets() {
    let config = embedded_config("    {}", "")
        .arguments(r#"["{{ n }}", "{{ id }}"]"#)
        .build();
    let daemon = Daemon::start(&config, &[]);
    let mut client = ClientProcess::js(&["--url", &daemon.url("/api")]);
    client.connected();
    let r = post(
        &reqwest::Client::new(),
        &daemon.url("/api/status"),
        json!({"n": 7}),
    )
    .await
    .unwrap();
    let id: Value = r.json().await.unwrap();
    let m = client.message("statusUpdate", Duration::from_secs(10));
    assert_eq!(m["args"], json!([7, id["id"]]));
}
