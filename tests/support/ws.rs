//! Negotiate and a small SignalR WebSocket test client (JSON protocol) for daemon tests:
//! herald's negotiate answer, the service's client negotiate, the WebSocket and handshake.
//! (`tests/service_support` has the embedded service's own, fuller client.)

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;

use super::Daemon;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `POST path` on the daemon (a negotiate path): the `{url, accessToken}` answer.
pub async fn negotiate(d: &Daemon, path: &str) -> Value {
    reqwest::Client::new()
        .post(d.url(path))
        .send()
        .await
        .expect("negotiate")
        .json()
        .await
        .expect("negotiate JSON")
}

/// The service's negotiate URL (version 1) for a client URL `.../client/?hub=H`.
pub fn client_negotiate_url(client_url: &str) -> String {
    client_url.replace("/client/?hub=", "/client/negotiate?hub=") + "&negotiateVersion=1"
}

/// A JSON-protocol SignalR connection: negotiated, WebSocket open, handshake done.
pub struct SignalrWs {
    /// The connection id negotiate gave.
    pub id: String,
    pub ws: Socket,
}

impl SignalrWs {
    /// Negotiate at the service for `client_url` (`.../client/?hub=H`) with `token`, open the
    /// WebSocket and complete the JSON handshake.
    pub async fn connect(client_url: &str, token: &str) -> SignalrWs {
        let n: Value = reqwest::Client::new()
            .post(client_negotiate_url(client_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("client negotiate")
            .json()
            .await
            .expect("client negotiate JSON");
        let id = n["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_string();
        let ws_url = format!(
            "{}&id={}&access_token={token}",
            client_url.replace("http://", "ws://"),
            n["connectionToken"].as_str().expect("connectionToken")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("WebSocket opens");
        ws.send(Ws::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .expect("handshake sent");
        let reply = next_text(&mut ws).await.expect("handshake reply");
        assert!(reply.starts_with("{}\u{1e}"), "{reply}");
        SignalrWs { id, ws }
    }

    /// The next Invocation's arguments (or `{"closed": CLOSE}` for a Close message), skipping
    /// pings; `None` when nothing arrives within `wait`.
    pub async fn invocation(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let text = tokio::time::timeout_at(deadline, next_text(&mut self.ws))
                .await
                .ok()??;
            for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
                let v: Value = serde_json::from_str(record).expect("JSON record");
                match v["type"].as_u64() {
                    Some(1) => return Some(v["arguments"].clone()),
                    Some(7) => return Some(json!({"closed": v})),
                    _ => {}
                }
            }
        }
    }
}

/// The next text frame; `None` once the socket closes.
pub async fn next_text(ws: &mut Socket) -> Option<String> {
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Ws::Text(t) => return Some(t.to_string()),
            Ws::Close(_) => return None,
            _ => {}
        }
    }
    None
}
