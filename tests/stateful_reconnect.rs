//! Stateful reconnect with the official JS client: `@microsoft/signalr` built
//! `withStatefulReconnect()` connects through `herald run`'s negotiate to the embedded
//! service, which clients reach through a small TCP proxy written here
//! (`signalr.embedded.public_url` points at it; herald's own REST deliveries go to the
//! service directly). The test cuts the proxy (every socket through it is dropped, new ones
//! are held), posts statuses before, during and after a ~2 s cut, and checks that the
//! client received every one, in order, none twice, without ever closing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::{ClientProcess, Daemon, free_port};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const KEY: &str = "stateful-test-api-key-0123456789abcdef";
const ACCESS_KEY: &str = "stateful-access-key-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

/// A TCP proxy to `127.0.0.1:upstream` that can be cut and restored.
struct Proxy {
    port: u16,
    /// `false` while cut: new connections are accepted but held until restored.
    open: watch::Sender<bool>,
    /// Bumped by every cut: each forwarding task drops both of its sockets.
    cuts: watch::Sender<u64>,
    /// Forwarded connections dropped by a cut.
    dropped: Arc<AtomicUsize>,
    /// Connections that arrived during a cut (and waited for the restore).
    held: Arc<AtomicUsize>,
}

impl Proxy {
    /// Bind on port 0 (before the upstream exists); `start` begins forwarding.
    async fn bind() -> (Proxy, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = Proxy {
            port,
            open: watch::Sender::new(true),
            cuts: watch::Sender::new(0),
            dropped: Arc::new(AtomicUsize::new(0)),
            held: Arc::new(AtomicUsize::new(0)),
        };
        (proxy, listener)
    }

    fn start(&self, listener: TcpListener, upstream: u16) {
        let open = self.open.subscribe();
        let cuts = self.cuts.subscribe();
        let (dropped, held) = (self.dropped.clone(), self.held.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(
                    inbound,
                    upstream,
                    open.clone(),
                    cuts.clone(),
                    dropped.clone(),
                    held.clone(),
                ));
            }
        });
    }

    fn cut(&self) {
        self.open.send_replace(false);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

async fn forward(
    mut inbound: TcpStream,
    upstream: u16,
    mut open: watch::Receiver<bool>,
    mut cuts: watch::Receiver<u64>,
    dropped: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
) {
    if !*open.borrow_and_update() {
        held.fetch_add(1, Ordering::SeqCst);
        if open.wait_for(|o| *o).await.is_err() {
            return;
        }
    }
    cuts.borrow_and_update();
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cuts.changed() => {
            dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    // Both sockets drop here: the peers see the connection end, with no WebSocket close.
}

fn config(service_port: u16, proxy_port: u16) -> String {
    format!(
        r#"
signalr:
  embedded:
    listen: 127.0.0.1:{service_port}
    access_key: {ACCESS_KEY}
    public_url: http://127.0.0.1:{proxy_port}
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
    auth: {{api_key: {KEY}}}
"#
    )
}

async fn post_status(d: &Daemon, status: &str) {
    let r = reqwest::Client::new()
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({ "status": status }))
        .send()
        .await
        .expect("status POST");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
}

/// Wait (on a blocking thread) until the client reported the status `n`.
async fn wait_for_status(client: ClientProcess, n: u32) -> ClientProcess {
    tokio::task::spawn_blocking(move || {
        let mut client = client;
        let status = n.to_string();
        client.wait_for(WAIT, |v| {
            v["event"] == "message" && v["args"][0]["status"] == status.as_str()
        });
        client
    })
    .await
    .expect("waiting thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_with_stateful_reconnect_loses_nothing_across_a_cut() {
    let (proxy, listener) = Proxy::bind().await;
    let service_port = free_port();
    proxy.start(listener, service_port);
    let d = Daemon::start(&config(service_port, proxy.port), &[]);

    let client = ClientProcess::js(&["--url", &d.url("/api"), "--stateful"]);
    let mut client = tokio::task::spawn_blocking(move || {
        let mut client = client;
        client.connected();
        client
    })
    .await
    .expect("connect thread");

    for n in 1..=5 {
        post_status(&d, &n.to_string()).await;
    }
    client = wait_for_status(client, 5).await;

    // Cut: the WebSocket drops; the client reconnects at once and is held by the proxy.
    proxy.cut();
    for n in 6..=10 {
        post_status(&d, &n.to_string()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    for n in 11..=15 {
        post_status(&d, &n.to_string()).await;
    }
    client = wait_for_status(client, 15).await;
    // Time for a late duplicate to show up, if the service sent one.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let statuses: Vec<String> = client
        .messages()
        .iter()
        .map(|m| m["args"][0]["status"].as_str().unwrap_or("?").to_string())
        .collect();
    let expected: Vec<String> = (1..=15).map(|n| n.to_string()).collect();
    assert_eq!(statuses, expected, "every status, in order, none twice");
    assert!(
        proxy.dropped.load(Ordering::SeqCst) >= 1,
        "the cut dropped the WebSocket"
    );
    assert!(
        proxy.held.load(Ordering::SeqCst) >= 1,
        "the client reconnected during the cut"
    );
    let events: Vec<&serde_json::Value> = client
        .seen
        .iter()
        .filter(|v| v["event"] != "message")
        .collect();
    assert!(
        events.iter().all(|v| v["event"] == "connected"),
        "no close and no reconnecting: the resume is invisible to the app: {events:?}"
    );
}
