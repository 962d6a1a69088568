//! Shared test helpers: start the built `herald` binary on free ports and learn its address
//! from its JSON log, and a recording stand-in for Azure SignalR Service's REST API. The base
//! config is in `yaml`, HTTP helpers and the "wait until" poller in `http`, negotiate and a
//! WebSocket client in `ws`.
#![allow(dead_code)]

pub mod http;
pub mod ws;
pub mod yaml;

#[allow(unused_imports)]
pub use yaml::{API_KEY, DaemonYaml};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::sync::Notify;

/// A running `herald` process. Killed on drop.
pub struct Daemon {
    pub child: Child,
    /// The daemon's HTTP address.
    pub addr: SocketAddr,
    /// The embedded service's address, when it runs one.
    pub service_addr: Option<SocketAddr>,
    /// Every log line so far (JSON objects).
    pub logs: Arc<Mutex<Vec<serde_json::Value>>>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Daemon {
    /// Write `yaml` to a temp dir and run `herald run -c` on it with `env` set.
    pub fn start(yaml: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("notifications.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        Self::start_in(dir, config_path, env)
    }

    pub fn start_in(dir: tempfile::TempDir, config_path: PathBuf, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(dir, config_path, env, &[])
    }

    /// `start_in` with extra `herald run` arguments.
    pub fn start_with(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["--log-format", "json", "run"])
            .args(args)
            .arg("-c")
            .arg(&config_path)
            .env_remove("AzureSignalRConnectionString")
            .env("RUST_LOG", "info,herald=debug")
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                let _ = tx.send(value.clone());
                if let Ok(mut l) = sink.lock() {
                    l.push(value);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut service_addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "herald did not start; log: {:#?}",
                    logs.lock().map(|l| l.clone())
                );
            };
            let msg = line.get("message").and_then(|m| m.as_str()).unwrap_or("");
            if msg == "embedded SignalR service started" {
                service_addr = line["listen"].as_str().and_then(|s| s.parse().ok());
            }
            if msg == "herald is running" {
                let addr = line["listen"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("listen address");
                return Daemon {
                    child,
                    addr,
                    service_addr,
                    logs,
                    dir,
                    config_path,
                };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Log lines whose message is `msg`.
    pub fn logs_with(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .map(|l| l.iter().filter(|v| v["message"] == msg).cloned().collect())
            .unwrap_or_default()
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Daemon {
    /// `GET /healthz` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        reqwest::get(self.url("/healthz"))
            .await
            .expect("healthz")
            .json()
            .await
            .expect("JSON")
    }

    /// Wait until `/healthz` reports config generation `n`.
    pub async fn wait_generation(&self, n: u64, timeout: Duration) -> serde_json::Value {
        http::wait_until(timeout, format!("generation {n} not reached"), || async {
            let h = self.health().await;
            if h["config"]["generation"].as_u64() == Some(n) {
                Ok(h)
            } else {
                Err(h)
            }
        })
        .await
    }
}

/// A [`Recorder`] playing Azure, and `herald run` on `yaml` pointed at it.
pub async fn start_with_recorder(yaml: &str) -> (Recorder, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notifications.yaml");
    std::fs::write(&path, yaml).expect("write config");
    start_with_recorder_in(dir, path, &[]).await
}

/// [`start_with_recorder`] on a config already at `path` in `dir`, with extra `run` arguments.
pub async fn start_with_recorder_in(
    dir: tempfile::TempDir,
    path: PathBuf,
    args: &'static [&'static str],
) -> (Recorder, Daemon) {
    herald::install_crypto();
    let rec = Recorder::start().await;
    let cs = rec.connection_string();
    let daemon = tokio::task::spawn_blocking(move || {
        Daemon::start_with(
            dir,
            path,
            &[("AzureSignalRConnectionString", cs.as_str())],
            args,
        )
    })
    .await
    .expect("daemon start task");
    (rec, daemon)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    pub fn bearer(&self) -> String {
        self.headers["authorization"]
            .to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .expect("bearer")
            .to_string()
    }
}

/// One scripted answer of the stand-in (see [`Recorder::script`]).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering (to make a client time out).
    pub delay: Duration,
}

/// An answer with `status`, no headers, no body, no delay.
pub fn reply(status: u16) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).expect("status code"),
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone, Default)]
struct RecorderState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: Arc<Mutex<Option<StatusCode>>>,
    /// Answers played in order, one per request, before falling back to `status`.
    script: Arc<Mutex<std::collections::VecDeque<Reply>>>,
    notify: Arc<Notify>,
}

/// A stand-in for the Azure SignalR REST API that records every request and answers 202, the
/// status of `respond_with`, or the next of its scripted replies (`script`).
pub struct Recorder {
    pub addr: SocketAddr,
    state: RecorderState,
}

pub const ACCESS_KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

impl Recorder {
    pub async fn start() -> Recorder {
        let state = RecorderState::default();
        let app = Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { addr, state }
    }

    /// Answer every request with `status` from now on (default 202).
    pub fn respond_with(&self, status: StatusCode) {
        *self.state.status.lock().unwrap() = Some(status);
    }

    /// Answer the next requests with `replies`, one each, in order; then as before.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// `Endpoint=http://127.0.0.1;Port=PORT;AccessKey=...;Version=1.0;`
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=http://127.0.0.1;Port={};AccessKey={ACCESS_KEY};Version=1.0;",
            self.addr.port()
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests other than health checks.
    pub fn sends(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.ends_with("/health"))
            .collect()
    }

    /// Wait until at least `n` non-health requests arrived (or `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let sends = self.sends();
            if sends.len() >= n {
                return sends;
            }
            let notified = self.state.notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.sends();
            }
        }
    }
}

async fn record(
    State(state): State<RecorderState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    state.requests.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
    });
    state.notify.notify_waiters();
    let scripted = state.script.lock().unwrap().pop_front();
    let reply = scripted.unwrap_or_else(|| Reply {
        status: state.status.lock().unwrap().unwrap_or(StatusCode::ACCEPTED),
        ..reply(202)
    });
    tokio::time::sleep(reply.delay).await;
    let mut response = axum::response::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    response
        .body(axum::body::Body::from(reply.body))
        .expect("scripted response")
}

/// Decode a JWT's claims without checking anything (for inspection after verification).
pub fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("claims")
}

/// Run the `herald` binary with `args` (and `env`), returning (code, stdout, stderr).
pub fn herald(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).env_remove("AzureSignalRConnectionString");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run herald");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real SignalR client process (the official JS client or pysignalr) that prints one JSON
/// event per line. Killed on drop.
pub struct ClientProcess {
    child: Child,
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
    pub name: String,
}

pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

impl ClientProcess {
    /// `node tests/clients/listen.js ARGS`.
    pub fn js(args: &[&str]) -> ClientProcess {
        let dir = clients_dir();
        assert!(
            dir.join("node_modules/@microsoft/signalr").exists(),
            "the JS clients are not installed: run `npm ci` in tests/clients (scripts/test does)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("listen.js")).args(args);
        Self::spawn(cmd, format!("js {}", args.join(" ")))
    }

    /// `tests/clients/.venv/bin/python tests/clients/listen.py URL TARGETS`.
    pub fn python(args: &[&str]) -> ClientProcess {
        let dir = clients_dir();
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "pysignalr is not installed: make the venv in tests/clients/.venv (scripts/test does)"
        );
        let mut cmd = Command::new(python);
        cmd.arg(dir.join("listen.py")).args(args);
        Self::spawn(cmd, format!("pysignalr {}", args.join(" ")))
    }

    pub fn spawn(mut cmd: Command, name: String) -> ClientProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        ClientProcess {
            child,
            rx,
            seen: Vec::new(),
            name,
        }
    }

    /// Wait for an event matching `pred`; panics with the events seen on timeout.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == "error" {
                        panic!("{}: client error: {v}", self.name);
                    }
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("{}: timed out; events seen: {:#?}", self.name, self.seen),
            }
        }
    }

    /// Wait until connected; returns the connection id when the client reports one.
    pub fn connected(&mut self) -> Option<String> {
        let v = self.wait_for(Duration::from_secs(20), |v| v["event"] == "connected");
        v["connectionId"].as_str().map(str::to_string)
    }

    /// Wait for a message for `target`.
    pub fn message(&mut self, target: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for(timeout, |v| {
            v["event"] == "message" && v["target"] == target
        })
    }

    /// Messages received so far (after draining what is buffered).
    pub fn messages(&mut self) -> Vec<serde_json::Value> {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        self.seen
            .iter()
            .filter(|v| v["event"] == "message")
            .cloned()
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for configs that other processes must also read).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
