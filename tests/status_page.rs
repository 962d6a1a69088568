//! The status page at `/`: served (and as `HEAD`), turned off by `http.status_page: false`,
//! its paths reserved; and, in headless Chromium driven by `playwright-core`
//! (`tests/clients/page.js`), it connects, shows a posted status within 2 s and the retained
//! status on a fresh load, rides out a herald restart (reconnecting, then the status posted
//! while it was away filled from history, then the next one live), loads nothing from outside
//! the machine and raises no console or script errors. Screenshots at phone and desktop width
//! go to the test's temp dir (or `STATUS_PAGE_SCREENSHOTS`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Daemon;

const KEY: &str = "status-page-test-api-key-0123456789abcdef";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How soon a posted status must show on an open page (issue [12]).
const LIVE_WITHIN: Duration = Duration::from_secs(2);

fn config(port: u16, state_dir: &Path, status_page: bool) -> String {
    format!(
        r#"
signalr:
  embedded:
    listen: 127.0.0.1:0
http:
  listen: 127.0.0.1:{port}
  status_page: {status_page}
state:
  dir: {state}
hubs:
  notifications: {{negotiate: {{path: /api/negotiate}}}}
  ops: {{negotiate: {{path: /api/ops/negotiate}}}}
templates:
  system-status:
    target: statusUpdate
    arguments:
      - timestamp: "{{{{ now }}}}"
        status: "{{{{ status | default('Operational') }}}}"
        message: "{{{{ message | default('') }}}}"
routes:
  status:
    path: /api/status
    hub: notifications
    template: system-status
    retain: true
    auth: {{api_key: {KEY}}}
"#,
        state = state_dir.display()
    )
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn post_status(d: &Daemon, status: &str, message: &str) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(d.url("/api/status"))
            .header("x-api-key", KEY)
            .json(&json!({ "status": status, "message": message }))
            .send()
            .await
            .expect("POST /api/status");
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
    });
}

/// `(status, content-type, body)` of `method path`.
fn request(d: &Daemon, method: &str, path: &str) -> (u16, String, String) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .request(method.parse().expect("method"), d.url(path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, r.text().await.unwrap_or_default())
    })
}

#[test]
fn the_page_and_its_assets_are_served_and_answer_head() {
    let state = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&config(0, state.path(), true), &[]);
    let (status, ct, html) = request(&d, "GET", "/");
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(html.contains(r#""negotiate":"/api/negotiate""#), "{html}");
    assert!(
        html.contains(r#""history":"/api/notifications/history""#),
        "{html}"
    );
    assert!(
        html.contains("<title>notifications status</title>"),
        "{html}"
    );
    assert!(!html.contains("__CONFIG__") && !html.contains("__TITLE__"));
    for (path, want) in [
        ("/status-page/app.js", "text/javascript"),
        ("/status-page/style.css", "text/css"),
        ("/status-page/icon.svg", "image/svg+xml"),
    ] {
        let (status, ct, body) = request(&d, "GET", path);
        assert_eq!(status, 200, "{path}");
        assert!(ct.starts_with(want), "{path}: {ct}");
        assert!(!body.is_empty());
        let (status, _, body) = request(&d, "HEAD", path);
        assert_eq!((status, body.as_str()), (200, ""), "HEAD {path}");
    }
    let (status, _, body) = request(&d, "HEAD", "/");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(request(&d, "GET", "/status-page/nope.js").0, 404);
    assert_eq!(request(&d, "GET", "/?hub=nope").0, 404);
    assert_eq!(request(&d, "GET", "/?hub=NOTIFICATIONS").0, 200);
    assert_eq!(request(&d, "POST", "/").0, 405);

    // The retained endpoint: empty, then the latest status.
    let (status, _, body) = request(&d, "GET", "/status-page/retained?hub=notifications");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"retained": []})
    );
    post_status(&d, "Degraded", "first");
    post_status(&d, "Outage", "second");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = request(&d, "GET", "/status-page/retained?hub=notifications");
        let v: Value = serde_json::from_str(&body).expect("json");
        let list = v["retained"].as_array().cloned().unwrap_or_default();
        if list.len() == 1 && list[0]["arguments"][0]["message"] == "second" {
            assert_eq!(list[0]["target"], "statusUpdate");
            assert!(list[0]["id"].is_string() && list[0]["time"].is_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retained never showed `second`: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(request(&d, "HEAD", "/status-page/retained").0, 200);
}

#[test]
fn status_page_false_turns_it_off() {
    let state = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&config(0, state.path(), false), &[]);
    for path in [
        "/",
        "/status-page/app.js",
        "/status-page/retained?hub=notifications",
    ] {
        let (status, ct, body) = request(&d, "GET", path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
    }
    assert_eq!(request(&d, "HEAD", "/").0, 404);
    // The negotiate path still works.
    assert_eq!(request(&d, "POST", "/api/negotiate").0, 200);
}

#[test]
fn config_routes_cannot_take_the_page_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let route_at = |path: &str, page: bool| {
        format!(
            "http: {{status_page: {page}}}\nhubs: {{h: {{}}}}\ntemplates: {{t: {{target: x, arguments: []}}}}\n\
             routes: {{r: {{path: \"{path}\", hub: h, template: t}}}}\n"
        )
    };
    let load = |yaml: String| {
        let p = dir.path().join("n.yaml");
        std::fs::write(&p, yaml).expect("write");
        herald::config::load(&p)
    };
    let err = load(route_at("/", true)).expect_err("`/` is the page's");
    assert!(err.to_string().contains("reserved"), "{err}");
    load(route_at("/", false)).expect("`/` is free with the page off");
    for path in ["/status-page/retained", "/status-page/{x}", "/status-page"] {
        for page in [true, false] {
            let err = load(route_at(path, page)).expect_err(path);
            assert!(err.to_string().contains("reserved"), "{path}: {err}");
        }
    }
}

/// `tests/clients/page.js` running headless Chromium: one JSON command a line.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Browser {
    fn start() -> Browser {
        let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install the Debian package `chromium` (scripts/test does)"
        );
        assert!(
            clients.join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run `npm ci` in tests/clients (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg(clients.join("page.js"))
            .current_dir(&clients)
            .env("CHROMIUM", CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node tests/clients/page.js");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut b = Browser {
            child,
            stdin,
            lines,
        };
        let ready = b.answer(Duration::from_secs(60));
        assert_eq!(ready["ready"], true, "browser did not start: {ready}");
        b
    }

    fn answer(&mut self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .expect("page.js answered nothing in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("page.js said {line:?}: {e}"))
    }

    /// Run `cmd`; its answer, or a panic naming `cmd` and the error.
    fn cmd(&mut self, cmd: Value) -> Value {
        let answer = self.try_cmd(&cmd);
        assert_eq!(answer["ok"], true, "{cmd} failed: {answer}");
        answer
    }

    fn try_cmd(&mut self, cmd: &Value) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to page.js");
        self.stdin.flush().expect("flush");
        self.answer(Duration::from_secs(120))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "close"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique(what: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{what}-{n}")
}

#[test]
fn the_page_in_headless_chromium() {
    let state = tempfile::tempdir().expect("state dir");
    let shots_tmp = tempfile::tempdir().expect("screenshot dir");
    let shots = std::env::var_os("STATUS_PAGE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shots_tmp.path().to_path_buf());
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let port = free_port();
    let yaml = config(port, state.path(), true);
    let mut d = Daemon::start(&yaml, &[]);
    let url = d.url("/");

    // A retained status from before any page was open.
    let retained = unique("retained-before-load");
    post_status(&d, "Maintenance", &retained);
    std::thread::sleep(Duration::from_millis(300));

    let mut b = Browser::start();
    b.cmd(json!({"cmd": "open", "name": "desk", "url": url, "width": 1280, "height": 800}));
    b.cmd(json!({"cmd": "wait_state", "name": "desk", "state": "connected", "timeout_ms": 20000}));
    let shown = b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#sources li",
        "text": retained, "timeout_ms": 10000}),
    );
    assert_eq!(shown["origin"], "retained", "{shown}");

    // A status POST shows on the open page, in the current card and in the history.
    let live = unique("live");
    let posted = Instant::now();
    post_status(&d, "Degraded", &live);
    b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#history li",
        "text": live, "timeout_ms": 10000}),
    );
    let took = posted.elapsed();
    assert!(
        took <= LIVE_WITHIN,
        "the posted status took {took:?} to show"
    );
    let shown = b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#sources li",
        "text": live, "timeout_ms": 5000}),
    );
    assert_eq!(shown["origin"], "live", "{shown}");
    let sev = b.cmd(json!({"cmd": "eval", "name": "desk",
        "js": "document.querySelector('#sources li').dataset.sev + '|' + document.querySelector('#sources .sev').textContent"}));
    assert_eq!(sev["value"], "degraded|Degraded", "{sev}");

    // A fresh load (at phone width) shows the retained status before any new message.
    b.cmd(json!({"cmd": "open", "name": "phone", "url": url, "width": 390, "height": 844}));
    let shown = b.cmd(
        json!({"cmd": "wait_text", "name": "phone", "selector": "#sources li",
        "text": live, "timeout_ms": 10000}),
    );
    assert_eq!(shown["origin"], "retained", "{shown}");
    b.cmd(
        json!({"cmd": "wait_text", "name": "phone", "selector": "#history li",
        "text": retained, "timeout_ms": 10000}),
    );
    b.cmd(json!({"cmd": "wait_state", "name": "phone", "state": "connected", "timeout_ms": 20000}));
    b.cmd(json!({"cmd": "screenshot", "name": "phone",
        "path": shots.join("status-page-phone.png")}));

    // herald restarts with the same state dir. While the page cannot reach it, a status is
    // posted; once it reconnects, the page fills it from history, then shows the next live.
    b.cmd(json!({"cmd": "phase", "name": "outage"}));
    let _ = d.child.kill();
    let _ = d.child.wait();
    let state_text = b.cmd(
        json!({"cmd": "wait_state", "name": "desk", "state": "reconnecting",
        "timeout_ms": 20000}),
    );
    assert!(
        state_text["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("reconnecting"),
        "{state_text}"
    );
    b.cmd(json!({"cmd": "block", "name": "desk", "pattern": "/negotiate"}));
    drop(d);
    let d = Daemon::start(&yaml, &[]);
    assert_eq!(d.addr.port(), port);
    let missed = unique("missed-while-away");
    post_status(&d, "Outage", &missed);
    std::thread::sleep(Duration::from_millis(300));
    // A stand-in presence answer for this page, to see the exact figure it shows.
    b.cmd(
        json!({"cmd": "fulfill", "name": "desk", "pattern": "/api/notifications/presence",
        "body": {"connections": 3, "users": 1}}),
    );
    b.cmd(json!({"cmd": "unblock", "name": "desk", "pattern": "/negotiate"}));
    b.cmd(json!({"cmd": "wait_state", "name": "desk", "state": "connected", "timeout_ms": 60000}));
    b.cmd(json!({"cmd": "phase", "name": "after"}));
    let filled = b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#history li",
        "text": missed, "timeout_ms": 10000}),
    );
    assert_eq!(filled["origin"], "history", "{filled}");
    let next = unique("after-restart");
    post_status(&d, "Operational", &next);
    let shown = b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#sources li",
        "text": next, "timeout_ms": 10000}),
    );
    assert_eq!(shown["origin"], "live", "{shown}");
    // Each message once in the history.
    let counts = b.cmd(json!({"cmd": "eval", "name": "desk", "js": format!(
        "[{:?}, {:?}, {:?}].map(t => [...document.querySelectorAll('#history li')].filter(li => li.textContent.includes(t)).length)",
        live, missed, next)}));
    assert_eq!(counts["value"], json!([1, 1, 1]), "{counts}");
    let viewers = b.cmd(
        json!({"cmd": "wait_text", "name": "desk", "selector": "#viewers:not([hidden])",
        "text": "3", "timeout_ms": 10000}),
    );
    assert!(viewers["elapsed_ms"].is_number(), "{viewers}");
    b.cmd(json!({"cmd": "screenshot", "name": "desk",
        "path": shots.join("status-page-desktop.png")}));
    // The phone page talks to herald's own presence endpoint (issue [9]): the figure shows
    // the real count of viewers (the open pages), not the desk page's stand-in.
    let viewers = b.cmd(
        json!({"cmd": "wait_text", "name": "phone", "selector": "#viewers:not([hidden])",
        "text": "", "timeout_ms": 20000}),
    );
    assert!(viewers["elapsed_ms"].is_number(), "{viewers}");
    let shown = b.cmd(json!({"cmd": "eval", "name": "phone",
        "js": "document.getElementById('viewers').textContent"}));
    assert!(
        shown["value"]
            .as_str()
            .is_some_and(|t| t.chars().any(|c| c.is_ascii_digit())),
        "{shown}"
    );

    // Dark, on a wall screen, with the hub picker (two hubs).
    b.cmd(
        json!({"cmd": "open", "name": "wall", "url": d.url("/?hub=notifications"),
        "width": 1920, "height": 1080, "color_scheme": "dark"}),
    );
    b.cmd(json!({"cmd": "wait_state", "name": "wall", "state": "connected", "timeout_ms": 20000}));
    b.cmd(
        json!({"cmd": "wait_text", "name": "wall", "selector": "#sources li",
        "text": next, "timeout_ms": 10000}),
    );
    let nav = b.cmd(json!({"cmd": "eval", "name": "wall", "js":
        "[...document.querySelectorAll('#hubs a')].map(a => a.textContent + (a.getAttribute('aria-current') ? '*' : ''))"}));
    assert_eq!(nav["value"], json!(["notifications*", "ops"]), "{nav}");
    let bg = b.cmd(json!({"cmd": "eval", "name": "wall",
        "js": "getComputedStyle(document.body).backgroundColor"}));
    assert_eq!(bg["value"], "rgb(15, 18, 22)", "not dark: {bg}");
    b.cmd(json!({"cmd": "screenshot", "name": "wall",
        "path": shots.join("status-page-dark.png")}));
    b.cmd(json!({"cmd": "wait_state", "name": "phone", "state": "connected", "timeout_ms": 60000}));

    let report = b.cmd(json!({"cmd": "report"}));
    // Nothing left the machine.
    let requests = report["requests"].as_array().cloned().unwrap_or_default();
    assert!(requests.len() > 5, "{report}");
    for r in &requests {
        let u = r["url"].as_str().unwrap_or("");
        let parsed = reqwest::Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert_eq!(
            parsed.host_str(),
            Some("127.0.0.1"),
            "a request left the machine: {u}"
        );
    }
    assert!(
        requests.iter().any(|r| r["url"]
            .as_str()
            .unwrap_or("")
            .starts_with("ws://127.0.0.1:")),
        "no WebSocket was opened: {report}"
    );
    // No script errors; console errors only for fetches that failed while herald was down
    // and for the presence endpoint while herald was restarting.
    assert_eq!(report["page_errors"], json!([]), "{report}");
    for e in report["console_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let text = e["text"].as_str().unwrap_or("");
        let failed_load = text.starts_with("Failed to load resource")
            || text.contains("net::ERR_")
            || text.starts_with("WebSocket connection to");
        let expected = failed_load
            && (e["phase"] == "outage" || e["url"].as_str().unwrap_or("").ends_with("/presence"));
        assert!(expected, "unexpected console error: {e}");
    }
    for shot in [
        "status-page-phone.png",
        "status-page-desktop.png",
        "status-page-dark.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{shot} was not written");
    }
    eprintln!("screenshots in {}", shots.display());
}
