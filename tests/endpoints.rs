//! `signalr.endpoints`: two embedded services (`herald service` processes, each with its own
//! key) stand in for two Azure SignalR instances behind one `herald run`. Official JS clients
//! connect through the daemon's negotiate; a status POST reaches the clients of both; after
//! one service is killed, negotiate answers with the other and sends keep reaching its
//! clients, `/healthz` shows the dead one down; restarted on its port, it is probed up again
//! and receives sends again.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ClientProcess, Daemon, free_port};

const API_KEY: &str = "endpoints-test-api-key-0123456789";
const KEY_A: &str = "endpoint-a-access-key-0123456789abcdef";
const KEY_B: &str = "endpoint-b-access-key-0123456789abcdef";
/// Generous: a send to a dead endpoint fails after the REST client's retries, then the
/// outbox retries it with backoff.
const WAIT: Duration = Duration::from_secs(45);

/// A `herald service` process on a fixed port. Killed (SIGKILL) on drop.
struct Service {
    child: Child,
}

impl Service {
    /// Start on `port` with `key`; waits for the connection string it prints when listening.
    /// Retries a few times, for a port still held by a process just killed.
    fn start(port: u16, key: &str) -> Service {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["service", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--access-key", key])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn herald service");
            let mut line = String::new();
            let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
            if matches!(read, Ok(n) if n > 0) && line.starts_with("Endpoint=") {
                return Service { child };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "herald service did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn connection_string(port: u16, key: &str) -> String {
        format!("Endpoint=http://127.0.0.1;Port={port};AccessKey={key};Version=1.0;")
    }

    /// SIGKILL, no goodbye to anyone.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port_a: u16, port_b: u16, role_b: &str) -> String {
    format!(
        r#"
signalr:
  endpoints:
    - name: a
      role: primary
      connection_string: "{cs_a}"
    - name: b
      role: {role_b}
      connection_string: "{cs_b}"
http:
  listen: 127.0.0.1:0
hubs:
  notifications: {{}}
templates:
  system-status:
    target: statusUpdate
    arguments:
      - status: "{{{{ status }}}}"
routes:
  status:
    path: /api/status
    hub: notifications
    template: system-status
    auth: {{api_key: {API_KEY}}}
"#,
        cs_a = Service::connection_string(port_a, KEY_A),
        cs_b = Service::connection_string(port_b, KEY_B),
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The daemon's negotiate answer `{url, accessToken}`.
fn negotiate(d: &Daemon) -> Value {
    block_on(async {
        let r = reqwest::Client::new()
            .post(d.url("/api/negotiate"))
            .send()
            .await
            .expect("negotiate");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("JSON")
    })
}

/// The port of the service a negotiate answer points at.
fn port_of(info: &Value) -> u16 {
    let url = reqwest::Url::parse(info["url"].as_str().expect("url")).expect("a URL");
    url.port().expect("a port")
}

/// Negotiate until the answer points at `port`; panics after `WAIT`.
fn negotiate_to(d: &Daemon, port: u16) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = negotiate(d);
        if port_of(&info) == port {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "negotiate never pointed at port {port}: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A JS client following a negotiate answer (as the official client does after a redirect).
fn client(info: &Value) -> ClientProcess {
    let mut c = ClientProcess::js(&[
        "--url",
        info["url"].as_str().expect("url"),
        "--token",
        info["accessToken"].as_str().expect("token"),
    ]);
    assert!(c.connected().is_some(), "{} did not connect", c.name);
    c
}

fn post_status(d: &Daemon, status: &str) {
    block_on(async {
        let r = reqwest::Client::new()
            .post(d.url("/api/status"))
            .header("X-API-Key", API_KEY)
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("status POST");
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    });
}

fn got(c: &mut ClientProcess, status: &str) {
    c.wait_for(WAIT, |v| {
        v["event"] == "message" && v["target"] == "statusUpdate" && v["args"][0]["status"] == status
    });
}

/// `/healthz`'s entry for endpoint `name`.
fn endpoint_health(d: &Daemon, name: &str) -> (Value, Value) {
    let h = block_on(d.health());
    let e = h["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no endpoint {name} in {h}"));
    (h, e)
}

fn wait_endpoint_up(d: &Daemon, name: &str, up: bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (h, e) = endpoint_health(d, name);
        if e["up"] == up {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint {name} never up={up}: {h}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(d: &Daemon) -> String {
    block_on(async {
        reqwest::get(d.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    })
}

/// The whole story for endpoint `b` in `role_b`; `a` (primary) is the one that dies.
fn failover(role_b: &str) {
    herald::install_crypto();
    let (port_a, port_b) = (free_port(), free_port());
    let service_a = Service::start(port_a, KEY_A);
    let _service_b = Service::start(port_b, KEY_B);
    let d = Daemon::start(&config(port_a, port_b, role_b), &[]);

    // Negotiate: a primary, spread over both when both are primaries.
    let ports: Vec<u16> = (0..6).map(|_| port_of(&negotiate(&d))).collect();
    if role_b == "primary" {
        assert!(
            ports.contains(&port_a) && ports.contains(&port_b),
            "{ports:?}"
        );
    } else {
        assert!(ports.iter().all(|p| *p == port_a), "{ports:?}");
    }
    let mut on_a = client(&negotiate_to(&d, port_a));
    let mut on_b = if role_b == "primary" {
        client(&negotiate_to(&d, port_b))
    } else {
        // A secondary is not handed out while the primary is up: connect as a client of the
        // other app sharing that instance would, with a token of its key.
        let token = herald::signalr::token::mint_client(
            KEY_B,
            "http://127.0.0.1/client/?hub=notifications",
            None,
            Duration::from_secs(600),
        )
        .expect("token");
        client(&json!({
            "url": format!("http://127.0.0.1:{port_b}/client/?hub=notifications"),
            "accessToken": token,
        }))
    };

    post_status(&d, "both");
    got(&mut on_a, "both");
    got(&mut on_b, "both");
    let (h, _) = endpoint_health(&d, "a");
    assert_eq!(h["status"], "ok", "{h}");
    let shown = h.to_string() + &metrics(&d);
    assert!(
        !shown.contains(KEY_A) && !shown.contains(KEY_B),
        "a key leaked: {shown}"
    );

    // A dies.
    service_a.kill();
    post_status(&d, "a is gone");
    got(&mut on_b, "a is gone");
    let h = wait_endpoint_up(&d, "a", false);
    assert_eq!(h["status"], "degraded", "{h}");
    let (_, b) = endpoint_health(&d, "b");
    assert_eq!(b["up"], true, "{h}");
    assert_eq!(b["role"], role_b);
    for _ in 0..4 {
        assert_eq!(
            port_of(&negotiate(&d)),
            port_b,
            "negotiate must avoid the dead endpoint"
        );
    }
    let mut late_on_b = client(&negotiate(&d));
    let text = metrics(&d);
    assert!(
        text.contains(r#"herald_endpoint_up{endpoint="a",role="primary"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"herald_endpoint_up{{endpoint="b",role="{role_b}"}} 1"#
        )),
        "{text}"
    );
    post_status(&d, "still here");
    got(&mut on_b, "still here");
    got(&mut late_on_b, "still here");

    // A comes back on the same port: probed up, handed out and sent to again.
    let _service_a = Service::start(port_a, KEY_A);
    let h = wait_endpoint_up(&d, "a", true);
    assert_eq!(h["status"], "ok", "{h}");
    let mut back_on_a = client(&negotiate_to(&d, port_a));
    post_status(&d, "a is back");
    got(&mut back_on_a, "a is back");
    got(&mut on_b, "a is back");
    got(&mut late_on_b, "a is back");
    assert!(
        metrics(&d).contains(r#"herald_endpoint_up{endpoint="a",role="primary"} 1"#),
        "a is up again"
    );
}

#[test]
fn primary_and_secondary_fail_over_and_back() {
    failover("secondary");
}

#[test]
fn two_primaries_fail_over_and_back() {
    failover("primary");
}
