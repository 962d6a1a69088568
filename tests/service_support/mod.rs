//! Test support: start the embedded service on 127.0.0.1:0, mint tokens, call the REST API
//! with reqwest, and a small SignalR WebSocket client on tokio-tungstenite.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::service::{Service, ServiceHandle, ServiceOptions};
use herald::signalr::protocol::{HandshakeRequest, HubMessage, Protocol, parse_handshake_response};
use herald::signalr::token;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "primary-access-key-for-tests-0123456789";
pub const SECOND_KEY: &str = "secondary-access-key-for-tests-987654";

/// Generous ceiling for anything a test waits on (never a timing assertion).
pub const WAIT: Duration = Duration::from_secs(15);

pub struct TestService {
    pub handle: ServiceHandle,
    pub shutdown: CancellationToken,
}

impl TestService {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle.local_addr()
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn ws(&self) -> String {
        format!("ws://{}", self.addr())
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start() -> TestService {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut ServiceOptions)) -> TestService {
    herald::install_crypto();
    let mut options = ServiceOptions::new(
        "127.0.0.1:0".parse().expect("address"),
        vec![KEY.to_string(), SECOND_KEY.to_string()],
    );
    configure(&mut options);
    let shutdown = CancellationToken::new();
    let handle = Service::start(options, shutdown.clone())
        .await
        .expect("service starts");
    TestService { handle, shutdown }
}

/// A client token for `hub` (audience without port, as the SDK mints it).
pub fn client_token(hub: &str, user: Option<&str>) -> String {
    token::mint_client(
        KEY,
        &format!("http://127.0.0.1/client/?hub={hub}"),
        user,
        Duration::from_secs(3600),
    )
    .expect("token")
}

/// A REST token whose audience is the request URL (with the query, as the SDK does).
pub fn rest_token(path_and_query: &str) -> String {
    token::mint_rest(
        SECOND_KEY,
        &format!("http://127.0.0.1{path_and_query}"),
        "test-server",
        Duration::from_secs(3600),
    )
    .expect("token")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// Call the REST API with a correct token.
pub async fn rest(
    svc: &TestService,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = http()
        .request(method, format!("{}{path_and_query}", svc.http()))
        .bearer_auth(rest_token(path_and_query));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("REST call")
}

pub async fn negotiate(svc: &TestService, query: &str, token: &str) -> reqwest::Response {
    http()
        .post(format!("{}/client/negotiate?{query}", svc.http()))
        .bearer_auth(token)
        .send()
        .await
        .expect("negotiate")
}

/// Negotiate version 1 and return (connectionId, connectionToken).
pub async fn negotiate_v1(svc: &TestService, hub: &str, token: &str) -> (String, String) {
    let body: Value = negotiate(svc, &format!("hub={hub}&negotiateVersion=1"), token)
        .await
        .json()
        .await
        .expect("negotiate body");
    (
        body["connectionId"].as_str().expect("id").to_string(),
        body["connectionToken"].as_str().expect("token").to_string(),
    )
}

pub type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open a WebSocket to `/client/?{query}`, token in the Authorization header.
pub async fn open_ws(
    svc: &TestService,
    query: &str,
    bearer: Option<&str>,
) -> Result<RawWs, tungstenite::Error> {
    let mut request = format!("{}/client/?{query}", svc.ws()).into_client_request()?;
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

/// The HTTP status of a refused WebSocket upgrade.
pub async fn ws_status(svc: &TestService, query: &str, bearer: Option<&str>) -> u16 {
    match open_ws(svc, query, bearer).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected WebSocket error: {other}"),
    }
}

/// A SignalR client over one WebSocket.
pub struct Client {
    pub ws: RawWs,
    pub protocol: Protocol,
    pending: VecDeque<HubMessage>,
    /// The server closed the socket.
    pub closed: bool,
    /// The close code it sent, if any.
    pending_close: Option<u16>,
}

/// What the client saw next.
#[derive(Debug, PartialEq)]
pub enum Event {
    Message(HubMessage),
    /// The server closed the WebSocket (code, if any).
    Closed(Option<u16>),
}

impl Client {
    /// Connect (with or without `id`), send the handshake and expect `{}`.
    pub async fn connect(
        svc: &TestService,
        query: &str,
        bearer: Option<&str>,
        protocol: Protocol,
    ) -> Client {
        let mut client = Client::open(svc, query, bearer, protocol).await;
        let request = HandshakeRequest {
            protocol: protocol.name().to_string(),
            version: 1,
        };
        client.send_text(&request.encode()).await;
        let error = client.handshake_response().await;
        assert_eq!(error, None, "handshake refused");
        client
    }

    /// Open the WebSocket without a handshake.
    pub async fn open(
        svc: &TestService,
        query: &str,
        bearer: Option<&str>,
        protocol: Protocol,
    ) -> Client {
        let ws = open_ws(svc, query, bearer).await.expect("WebSocket opens");
        Client {
            ws,
            protocol,
            pending: VecDeque::new(),
            closed: false,
            pending_close: None,
        }
    }

    /// A client on a negotiated connection (negotiate v1, `id` = connectionToken).
    pub async fn negotiated(
        svc: &TestService,
        hub: &str,
        user: Option<&str>,
        protocol: Protocol,
    ) -> (Client, String) {
        let token = client_token(hub, user);
        let (id, connection_token) = negotiate_v1(svc, hub, &token).await;
        let client = Client::connect(
            svc,
            &format!("hub={hub}&id={connection_token}"),
            Some(&token),
            protocol,
        )
        .await;
        (client, id)
    }

    pub async fn send_text(&mut self, data: &[u8]) {
        let text = String::from_utf8(data.to_vec()).expect("utf-8");
        self.ws.send(WsMessage::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws.send(WsMessage::binary(data)).await.expect("send");
    }

    pub async fn send(&mut self, message: &HubMessage) {
        let bytes = self.protocol.encode(message).expect("encode");
        match self.protocol {
            Protocol::Json => self.send_text(&bytes).await,
            Protocol::MessagePack => self.send_binary(bytes).await,
        }
    }

    /// Read the handshake response; returns its error, if any. Messages after it in the
    /// same frame are kept.
    pub async fn handshake_response(&mut self) -> Option<String> {
        let frame = match self.next_frame().await {
            Some(frame) => frame,
            None => panic!("closed before the handshake response"),
        };
        let (error, used) = parse_handshake_response(&frame)
            .expect("valid handshake response")
            .expect("complete handshake response");
        if used < frame.len() {
            let rest = self
                .protocol
                .decode_frame(&frame[used..])
                .expect("valid messages");
            self.pending.extend(rest);
        }
        error
    }

    /// The next data frame's bytes, or `None` when the socket closed.
    async fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            match next {
                Some(Ok(WsMessage::Text(t))) => return Some(t.as_bytes().to_vec()),
                Some(Ok(WsMessage::Binary(b))) => return Some(b.to_vec()),
                Some(Ok(WsMessage::Close(frame))) => {
                    self.closed = true;
                    self.pending_close = frame.map(|f| u16::from(f.code));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// The next hub message or the close.
    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Event::Message(message);
            }
            match self.next_frame().await {
                Some(frame) => {
                    let messages = self.protocol.decode_frame(&frame).expect("valid frame");
                    self.pending.extend(messages);
                }
                None => return Event::Closed(self.pending_close),
            }
        }
    }

    /// The next invocation (Pings skipped): (target, arguments).
    pub async fn next_invocation(&mut self) -> (String, Vec<Value>) {
        loop {
            match self.next_event().await {
                Event::Message(HubMessage::Ping) => continue,
                Event::Message(HubMessage::Invocation {
                    target, arguments, ..
                }) => return (target, arguments),
                other => panic!("expected an invocation, got {other:?}"),
            }
        }
    }

    /// The next message that is not a Ping.
    pub async fn next_non_ping(&mut self) -> Event {
        loop {
            match self.next_event().await {
                Event::Message(HubMessage::Ping) => continue,
                other => return other,
            }
        }
    }
}
