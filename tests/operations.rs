//! Production operation: a test plays systemd (notify socket + watchdog), SIGTERM closes
//! connected official JS clients and exits 0, `/metrics` is Prometheus text that counts what
//! was sent, route rate limits answer 429, the embedded service's connection limit holds, and
//! the example unit passes `systemd-analyze verify`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::json;
use support::ws::{client_negotiate_url, negotiate};
use support::{ClientProcess, Daemon, DaemonYaml};

const KEY: &str = support::API_KEY;

fn config(extra_routes: &str) -> String {
    DaemonYaml::embedded().routes(extra_routes).build()
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

    // The outbox counts a send once the service answered, which can be just after the
    // client saw it: scrape until the fifth send is counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let r = http.get(d.url("/metrics")).send().await.unwrap();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let samples = parse_prometheus(&r.text().await.unwrap());
        let sent: f64 = samples
            .iter()
            .filter(|(n, l, _)| n == "herald_messages_total" && l.contains("outcome=\"sent\""))
            .map(|(_, _, v)| v)
            .sum();
        if sent >= 5.0 || std::time::Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    // One observation per REST request: the five sends went one per request or several per
    // `:sendBatch` (the embedded service), depending on how they queued.
    let requests = value("herald_rest_request_seconds_count", &["operation=\"send\""])
        + value(
            "herald_rest_request_seconds_count",
            &["operation=\"send_batch\""],
        );
    assert!(
        (1.0..=5.0).contains(&requests),
        "REST latency histogram: {requests} send requests"
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
    let yaml = DaemonYaml::embedded()
        .embedded_extra("    max_connections: 1\n")
        .build();
    let d = tokio::task::block_in_place(|| Daemon::start(&yaml, &[]));
    let http = reqwest::Client::new();
    let info = negotiate(&d, "/api/negotiate").await;
    let negotiate = client_negotiate_url(info["url"].as_str().unwrap());
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

/// Families of a Prometheus text exposition: name → (has HELP, has TYPE, sample count).
fn families(text: &str) -> std::collections::BTreeMap<String, (bool, bool, usize)> {
    let mut out: std::collections::BTreeMap<String, (bool, bool, usize)> = Default::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap().to_string());
            let entry = out.entry(name).or_default();
            match kind {
                "HELP" => {
                    assert!(parts.next().is_some_and(|h| !h.is_empty()), "{line}");
                    entry.0 = true
                }
                "TYPE" => entry.1 = true,
                _ => panic!("bad comment line: {line}"),
            }
        }
    }
    for (name, _, _) in parse_prometheus(text) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| out.contains_key(*f)))
            .unwrap_or(&name)
            .to_string();
        out.entry(family).or_default().2 += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_before_any_traffic_have_every_family_with_help() {
    let extra = "schedules:\n  tick:\n    cron: '0 0 0 1 1 *'\n    hub: notifications\n    template: status\n";
    let d = tokio::task::block_in_place(|| {
        Daemon::start(&DaemonYaml::embedded().section(extra).build(), &[])
    });
    let text = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let families = families(&text);
    for (name, (help, kind, samples)) in &families {
        assert!(*help, "{name} has no HELP:\n{text}");
        assert!(*kind, "{name} has no TYPE:\n{text}");
        assert!(*samples > 0, "{name} has no sample:\n{text}");
    }
    assert!(families.len() >= 10, "{} families:\n{text}", families.len());
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
        "herald_build_info",
        "herald_config_generation",
        "herald_config_last_reload_successful",
        "herald_config_restart_required",
        "herald_config_reloads_total",
        "herald_negotiate_total",
        "herald_schedule_fires_total",
        "herald_schedule_next_fire_timestamp_seconds",
    ] {
        assert!(families.contains_key(name), "no {name}:\n{text}");
    }
    let samples = parse_prometheus(&text);
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        samples
            .iter()
            .any(|(n, l, v)| n == "herald_build_info" && l.contains(&version) && *v == 1.0),
        "{text}"
    );
    let rss = samples
        .iter()
        .find(|(n, _, _)| n == "process_resident_memory_bytes")
        .unwrap()
        .2;
    assert!(rss > 1_000_000.0, "RSS {rss}");
    let next = samples
        .iter()
        .find(|(n, l, _)| {
            n == "herald_schedule_next_fire_timestamp_seconds" && l.contains("schedule=\"tick\"")
        })
        .unwrap()
        .2;
    assert!(next > chrono::Utc::now().timestamp() as f64, "{next}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_requests_are_counted_by_route_name_not_path() {
    let d = tokio::task::block_in_place(|| Daemon::start(&config(""), &[]));
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .post(d.url("/api/status"))
            .header("X-API-Key", KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let r = http.post(d.url("/api/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let _ = http.post(d.url("/api/negotiate")).send().await.unwrap();
    let _ = http.get(d.url("/nothing/here/1")).send().await.unwrap();
    let _ = http.get(d.url("/healthz")).send().await.unwrap();
    // herald's own endpoints outside the config are named too, not `unmatched`.
    let _ = http.get(d.url("/api/messages/m1")).send().await.unwrap();
    let _ = http.get(d.url("/")).send().await.unwrap();
    let _ = http
        .post(d.url("/runtime/webhooks/signalr"))
        .send()
        .await
        .unwrap();
    let text = http
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    let count = |labels: &[&str]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == "herald_http_requests_total" && labels.iter().all(|m| l.contains(m))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    let expected: [(&[&str], f64); 8] = [
        (
            &["route=\"status\"", "method=\"POST\"", "status=\"202\""],
            2.0,
        ),
        (&["route=\"status\"", "status=\"401\""], 1.0),
        (&["route=\"negotiate\"", "status=\"200\""], 1.0),
        (&["route=\"unmatched\"", "status=\"404\""], 1.0),
        (&["route=\"messages\"", "method=\"GET\""], 1.0),
        (&["route=\"status-page\"", "method=\"GET\""], 1.0),
        (&["route=\"upstream\"", "method=\"POST\""], 1.0),
        (&["route=\"healthz\"", "method=\"GET\""], 1.0),
    ];
    for (labels, want) in expected {
        assert_eq!(count(labels), want, "{labels:?}:\n{text}");
    }
    assert!(
        !text.contains("route=\"\""),
        "an empty route label:\n{text}"
    );
    assert!(
        !text.contains("/nothing/here"),
        "a raw path became a label:\n{text}"
    );
    assert!(
        samples.iter().any(
            |(n, l, _)| n == "herald_http_request_duration_seconds_bucket"
                && l.contains("route=\"status\"")
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_star_never_grants_credentials_and_warns_once() {
    let yaml = DaemonYaml::embedded()
        .http("  cors: {allowed_origins: ['https://app.example.com', '*']}\n")
        .build();
    let d = tokio::task::block_in_place(|| Daemon::start(&yaml, &[]));
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, d.url("/api/status"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key, content-type")
            .send()
    };
    let r = preflight("https://anything.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        !r.headers().contains_key("access-control-allow-credentials"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.headers()["access-control-allow-methods"], "POST");
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    // An actual request from an unlisted origin: `*`, no credentials.
    let r = http
        .post(d.url("/api/negotiate"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));

    // The `*` warning: once at start, not again on reload.
    std::fs::write(
        &d.config_path,
        yaml.replace("default('ok')", "default('fine')"),
    )
    .unwrap();
    d.wait_generation(2, Duration::from_secs(10)).await;
    let warnings = d
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("CORS allows any origin"))
        })
        .count();
    assert_eq!(warnings, 1);
}

#[test]
fn status_line_names_a_pending_restart() {
    let mut systemd = FakeSystemd::new();
    let d = Daemon::start(&config(""), &[("NOTIFY_SOCKET", &systemd.path)]);
    systemd.wait_for("READY=1", Duration::from_secs(10));
    let mark = systemd.seen.len();
    let edited = DaemonYaml::embedded()
        .http("  request_timeout: 9s\n")
        .build();
    std::fs::write(&d.config_path, edited).unwrap();
    let at = systemd.wait_for_since(mark, "RELOADING=1", Duration::from_secs(10));
    let ready = systemd.wait_for_since(at + 1, "READY=1", Duration::from_secs(10));
    let msg = &systemd.seen[ready].1;
    let status = msg
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(status.starts_with("STATUS=reloaded:"), "{status}");
    assert!(
        status.ends_with("restart pending for http.request_timeout"),
        "{status}"
    );
}

/// Metric names a PromQL expression refers to: identifiers outside `{...}` selectors that
/// start with `herald_` or `process_`.
fn promql_metrics(expr: &str) -> Vec<String> {
    let mut outside = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
        if c == '{' || c == '}' {
            outside.push(' ');
        }
    }
    outside
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("herald_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn grafana_dashboard_queries_only_catalogued_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/herald.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let known: Vec<&str> = herald::telemetry::metrics::names().collect();
    let mut queried = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "no metric in `{expr}`");
            for name in names {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| known.contains(f))
                    .unwrap_or(&name)
                    .to_string();
                assert!(
                    known.contains(&family.as_str()),
                    "`{name}` in `{expr}` is not in the catalogue"
                );
                queried.insert(family);
            }
        }
    }
    for must in [
        "herald_connections",
        "herald_messages_total",
        "herald_http_requests_total",
        "herald_http_request_duration_seconds",
        "herald_schedule_fire_lag_seconds",
        "herald_config_reloads_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(queried.contains(must), "the dashboard does not show {must}");
    }
}
