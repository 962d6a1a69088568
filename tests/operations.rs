//! Production operation: a test plays systemd (notify socket + watchdog), SIGTERM closes
//! connected official JS clients and exits 0, `/metrics` is Prometheus text that counts what
//! was sent, route rate limits answer 429, the embedded service's connection limit holds, and
//! the example unit passes `systemd-analyze verify`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{ClientProcess, Daemon};

const KEY: &str = "operations-test-api-key-0123456789ab";

fn config(extra_routes: &str) -> String {
    format!(
        r#"signalr:
  embedded:
    listen: 127.0.0.1:0
http:
  listen: 127.0.0.1:0
hubs:
  notifications: {{}}
templates:
  status:
    target: statusUpdate
    arguments: ["{{{{ status | default('ok') }}}}"]
routes:
  status:
    path: /api/status
    hub: notifications
    template: status
    auth: {{api_key: {KEY}}}
{extra_routes}"#
    )
}

/// Collects sd_notify datagrams.
struct FakeSystemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
    seen: Vec<(Instant, String)>,
}

impl FakeSystemd {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeSystemd {
            socket,
            path: path.to_str().unwrap().to_string(),
            _dir: dir,
            seen: Vec::new(),
        }
    }

    /// Read datagrams until one contains `needle` (or `timeout`); returns its index.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> usize {
        self.wait_for_since(0, needle, timeout)
    }

    /// Like `wait_for`, among the datagrams from index `since` on.
    fn wait_for_since(&mut self, since: usize, needle: &str, timeout: Duration) -> usize {
        if let Some(i) = self
            .seen
            .iter()
            .skip(since)
            .position(|(_, m)| m.lines().any(|l| l == needle))
        {
            return since + i;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == needle);
                self.seen.push((Instant::now(), msg));
                if hit {
                    return self.seen.len() - 1;
                }
            }
        }
        panic!("no `{needle}` from herald; got {:#?}", self.seen)
    }

    /// Keep reading for `window`; the messages seen in it.
    fn collect(&mut self, window: Duration) -> Vec<String> {
        let start = self.seen.len();
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        self.seen[start..].iter().map(|(_, m)| m.clone()).collect()
    }
}

#[test]
fn plays_systemd_ready_watchdog_reloading_stopping() {
    let mut systemd = FakeSystemd::new();
    let mut d = Daemon::start(
        &config(""),
        &[
            ("NOTIFY_SOCKET", &systemd.path),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    systemd.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        systemd.seen.iter().any(|(_, m)| m
            .lines()
            .any(|l| l.starts_with("STATUS=running: 1 hubs, 1 routes"))),
        "{:#?}",
        systemd.seen
    );
    let window = systemd.collect(Duration::from_millis(2500));
    let pings = window
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(pings >= 2, "{pings} WATCHDOG=1 in 2.5 s: {window:#?}");

    let mark = systemd.seen.len();
    d.signal("HUP");
    let at = systemd.wait_for_since(mark, "RELOADING=1", Duration::from_secs(10));
    let reloading = &systemd.seen[at].1;
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    systemd.wait_for_since(at + 1, "READY=1", Duration::from_secs(10));

    d.signal("TERM");
    systemd.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigterm_closes_every_connected_js_client_and_exits_zero() {
    let mut d = Daemon::start(&config(""), &[]);
    let base = d.url("/api");
    let transports = ["WebSockets", "ServerSentEvents", "LongPolling"];
    let mut clients: Vec<ClientProcess> = (0..9)
        .map(|i| ClientProcess::js(&["--url", &base, "--transport", transports[i % 3]]))
        .collect();
    for c in &mut clients {
        c.connected();
    }
    let started = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let took = started.elapsed();
    for c in &mut clients {
        c.wait_for(Duration::from_secs(10), |v| v["event"] == "closed");
    }
    let stopping = d.logs_with("shutting down");
    assert_eq!(stopping.len(), 1);
    eprintln!("shutdown with {} clients took {took:?}", clients.len());
}

/// Parse Prometheus text exposition: every sample line is `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "bad comment line: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "bad labels: {line}");
                (n.to_string(), l.trim_end_matches('}').to_string())
            }
            None => (series.to_string(), String::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_and_count_what_was_sent() {
    let d = tokio::task::block_in_place(|| Daemon::start(&config(""), &[]));
    let mut client = tokio::task::block_in_place(|| {
        let mut c = ClientProcess::js(&["--url", &d.url("/api")]);
        c.connected();
        c
    });
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(d.url("/api/status"))
            .header("X-API-Key", KEY)
            .json(&json!({"status": format!("s{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let _ = http.post(d.url("/api/negotiate")).send().await.unwrap();
    tokio::task::block_in_place(|| {
        client.wait_for(Duration::from_secs(10), |v| v["args"] == json!(["s4"]))
    });

    let r = http.get(d.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let samples = parse_prometheus(&r.text().await.unwrap());
    let value = |name: &str, must: &[&str]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && must.iter().all(|m| l.contains(m)))
            .map(|(_, _, v)| v)
            .sum()
    };
    assert!(
        value(
            "herald_messages_total",
            &[
                "outcome=\"sent\"",
                "source=\"route\"",
                "hub=\"notifications\""
            ]
        ) >= 5.0
    );
    assert!(value("herald_negotiate_total", &["hub=\"notifications\""]) >= 2.0);
    assert!(
        value(
            "herald_connections",
            &["hub=\"notifications\"", "transport=\"WebSockets\""]
        ) >= 1.0
    );
    assert!(
        value("herald_rest_request_seconds_count", &[]) >= 5.0,
        "REST latency histogram"
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "herald_rest_request_seconds_bucket")
    );
    assert_eq!(value("herald_config_last_reload_successful", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_route_answers_429_with_retry_after() {
    let extra = "  limited:\n    path: /api/limited\n    hub: notifications\n    template: status\n    rate_limit: {requests: 2, per: 1m}\n";
    let d = tokio::task::block_in_place(|| Daemon::start(&config(extra), &[]));
    let http = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(
            http.post(d.url("/api/limited"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status(),
            202
        );
    }
    let r = http
        .post(d.url("/api/limited"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Other routes are not limited.
    let r = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_connection_limit_refuses_extra_connections() {
    let yaml = config("").replace(
        "    listen: 127.0.0.1:0\nhttp",
        "    listen: 127.0.0.1:0\n    max_connections: 1\nhttp",
    );
    let d = tokio::task::block_in_place(|| Daemon::start(&yaml, &[]));
    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .post(d.url("/api/negotiate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let negotiate = info["url"]
        .as_str()
        .unwrap()
        .replace("/client/?hub=", "/client/negotiate?hub=")
        + "&negotiateVersion=1";
    let token = info["accessToken"].as_str().unwrap();
    let first = http
        .post(&negotiate)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = http
        .post(&negotiate)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
}

#[test]
fn example_unit_file_is_complete_and_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/systemd/herald.service"
    ))
    .unwrap();
    for directive in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=herald",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(directive), "unit lacks `{directive}`");
    }
    let Ok(which) = std::process::Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
    else {
        return;
    };
    if !which.status.success() {
        eprintln!("systemd-analyze is not installed: only the directives were checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("herald.service:"),
        "systemd-analyze verify: {stderr}"
    );
}
