//! Serverless upstream from the embedded service: a recording axum stand-in on 127.0.0.1:0
//! plays the upstream (facts §5), the service runs on 127.0.0.1:0, and clients speak JSON
//! and MessagePack over WebSockets.

mod service_support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use herald::signalr::protocol::{CompletionResult, Headers, HubMessage, Protocol, msgpack};
use herald::signalr::upstream::{self, UpstreamTemplate};
use reqwest::Method;
use serde_json::{Value, json};
use service_support::*;
use tokio::sync::{Mutex, mpsc};

/// One POST the stand-in received.
#[derive(Debug)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }
}

/// The recording upstream. It answers by `X-ASRS-Event`: `result` → 200 with a framed
/// Completion carrying `"from upstream"`, `empty` → 200 with no body, `nocontent` → 204,
/// `fail` → 500, `slow` → 200 after 5 s, anything else → 200 empty.
struct StandIn {
    url: String,
    records: Mutex<mpsc::UnboundedReceiver<Recorded>>,
}

impl StandIn {
    async fn start() -> Arc<StandIn> {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route("/{*path}", post(answer)).with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Arc::new(StandIn {
            url: format!("http://{addr}"),
            records: Mutex::new(rx),
        })
    }

    /// `http://stand-in/{prefix}/{hub}/{category}/{event}` for every event.
    fn template(&self, prefix: &str) -> UpstreamTemplate {
        UpstreamTemplate::all(format!(
            "{}/{prefix}/{{hub}}/{{category}}/{{event}}",
            self.url
        ))
    }

    async fn next(&self) -> Recorded {
        tokio::time::timeout(WAIT, self.records.lock().await.recv())
            .await
            .expect("the upstream got a request in time")
            .expect("stand-in running")
    }

    /// The next request for `event` (others, e.g. `connected`, are skipped).
    async fn next_for(&self, event: &str) -> Recorded {
        loop {
            let record = self.next().await;
            if record.header(upstream::HEADER_EVENT) == event {
                return record;
            }
        }
    }
}

fn invocation_id(headers: &HeaderMap, body: &[u8]) -> String {
    let msgpack = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-msgpack");
    let message = if msgpack {
        let mut frame = Vec::new();
        msgpack::write_varint(&mut frame, body.len() as u64);
        frame.extend_from_slice(body);
        Protocol::MessagePack
            .decode_frame(&frame)
            .expect("msgpack body")
    } else {
        let mut frame = body.to_vec();
        frame.push(0x1e);
        Protocol::Json.decode_frame(&frame).expect("json body")
    };
    match message.first() {
        Some(HubMessage::Invocation {
            invocation_id: Some(id),
            ..
        }) => id.clone(),
        other => panic!("not an invocation with an id: {other:?}"),
    }
}

async fn answer(
    State(tx): State<mpsc::UnboundedSender<Recorded>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = headers
        .get(upstream::HEADER_EVENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = tx.send(Recorded {
        path: uri.path().to_string(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    match event.as_str() {
        "result" => {
            let protocol = if headers
                .get("content-type")
                .is_some_and(|v| v.as_bytes() == b"application/x-msgpack")
            {
                Protocol::MessagePack
            } else {
                Protocol::Json
            };
            let completion = HubMessage::Completion {
                headers: Headers::new(),
                invocation_id: invocation_id(&headers, &body),
                result: CompletionResult::Value(json!("from upstream")),
            };
            let bytes = protocol.encode(&completion).expect("encode");
            (StatusCode::OK, bytes).into_response()
        }
        "nocontent" => StatusCode::NO_CONTENT.into_response(),
        "fail" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

async fn service(templates: Vec<UpstreamTemplate>) -> TestService {
    start_with(|o| o.upstreams = templates).await
}

fn invoke(id: Option<&str>, target: &str, arguments: Vec<Value>) -> HubMessage {
    HubMessage::Invocation {
        headers: Headers::new(),
        invocation_id: id.map(str::to_string),
        target: target.to_string(),
        arguments,
        stream_ids: Vec::new(),
    }
}

/// The next Completion the client gets (Pings skipped).
async fn completion(client: &mut Client) -> (String, CompletionResult) {
    match client.next_non_ping().await {
        Event::Message(HubMessage::Completion {
            invocation_id,
            result,
            ..
        }) => (invocation_id, result),
        other => panic!("expected a Completion, got {other:?}"),
    }
}

#[tokio::test]
async fn connected_and_disconnected_carry_the_headers_bodies_and_a_valid_signature() {
    let stand = StandIn::start().await;
    let svc = service(vec![stand.template("up")]).await;
    let token = client_token("Chat", Some("alice"));
    let negotiated: Value = negotiate(&svc, "hub=Chat&negotiateVersion=1&tenant=blue", &token)
        .await
        .json()
        .await
        .expect("negotiate");
    let id = negotiated["connectionId"].as_str().expect("id").to_string();
    let connection_token = negotiated["connectionToken"].as_str().expect("token");
    let client = Client::connect(
        &svc,
        &format!("hub=Chat&id={connection_token}"),
        Some(&token),
        Protocol::Json,
    )
    .await;

    let connected = stand.next().await;
    assert_eq!(connected.path, "/up/chat/connections/connected");
    assert_eq!(connected.body, b"{\"type\":10}");
    assert_eq!(connected.header("content-type"), "application/json");
    assert_eq!(connected.header(upstream::HEADER_CONNECTION_ID), id);
    assert_eq!(connected.header(upstream::HEADER_HUB), "chat");
    assert_eq!(connected.header(upstream::HEADER_CATEGORY), "connections");
    assert_eq!(connected.header(upstream::HEADER_EVENT), "connected");
    assert_eq!(connected.header(upstream::HEADER_USER_ID), "alice");
    let signature = connected.header(upstream::HEADER_SIGNATURE);
    assert_eq!(
        signature.split(',').count(),
        2,
        "one per access key: {signature}"
    );
    assert!(upstream::verify(signature, &[KEY], &id));
    assert!(upstream::verify(signature, &[SECOND_KEY], &id));
    assert!(!upstream::verify(signature, &["another-key"], &id));
    assert!(!upstream::verify(signature, &[KEY], "another-connection"));
    let claims = connected.all(upstream::HEADER_USER_CLAIMS);
    assert!(
        claims.iter().any(|c| c == "asrs.s.uid: alice"),
        "{claims:?}"
    );
    assert!(
        !claims.iter().any(|c| c.starts_with("exp:")),
        "token mechanics are left out: {claims:?}"
    );
    let query = connected.header(upstream::HEADER_CLIENT_QUERY);
    assert!(query.starts_with('?'), "{query}");
    assert!(query.contains("tenant=blue"), "{query}");
    assert!(!query.contains("access_token"), "{query}");

    // A clean close: no error.
    drop(client);
    let disconnected = stand.next_for("disconnected").await;
    assert_eq!(disconnected.path, "/up/chat/connections/disconnected");
    assert_eq!(disconnected.header(upstream::HEADER_CONNECTION_ID), id);
    assert_eq!(disconnected.body, b"{\"Type\":11}");
    assert!(upstream::verify(
        disconnected.header(upstream::HEADER_SIGNATURE),
        &[KEY],
        &id
    ));

    // Closed by the server with a reason: the reason is the error.
    let (_client, id) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    let connected = stand.next_for("connected").await;
    assert_eq!(connected.header(upstream::HEADER_CONNECTION_ID), id);
    assert!(connected.headers.get(upstream::HEADER_USER_ID).is_none());
    assert!(
        svc.handle
            .close_connection("chat", &id, Some("maintenance"))
    );
    let disconnected = stand.next_for("disconnected").await;
    assert_eq!(disconnected.header(upstream::HEADER_CONNECTION_ID), id);
    let body: Value = serde_json::from_slice(&disconnected.body).expect("json");
    assert_eq!(body, json!({"Type": 11, "Error": "maintenance"}));
}

async fn completions_follow_the_upstream_answer(protocol: Protocol) {
    let stand = StandIn::start().await;
    let svc = service(vec![stand.template("up")]).await;
    let (mut client, id) = Client::negotiated(&svc, "chat", Some("bob"), protocol).await;
    let _ = stand.next_for("connected").await;

    let message = invoke(Some("1"), "result", vec![json!("hi"), json!({"n": 1})]);
    client.send(&message).await;
    let recorded = stand.next_for("result").await;
    assert_eq!(recorded.path, "/up/chat/messages/result");
    assert_eq!(recorded.header(upstream::HEADER_CATEGORY), "messages");
    assert_eq!(recorded.header(upstream::HEADER_CONNECTION_ID), id);
    assert_eq!(recorded.header(upstream::HEADER_USER_ID), "bob");
    let framed = protocol.encode(&message).expect("encode");
    let unframed = match protocol {
        Protocol::Json => framed[..framed.len() - 1].to_vec(),
        Protocol::MessagePack => framed[1..].to_vec(),
    };
    assert_eq!(
        recorded.body, unframed,
        "the invocation exactly as sent, unframed"
    );
    assert_eq!(
        recorded.header("content-type"),
        match protocol {
            Protocol::Json => "application/json",
            Protocol::MessagePack => "application/x-msgpack",
        }
    );
    assert_eq!(
        completion(&mut client).await,
        ("1".into(), CompletionResult::Value(json!("from upstream")))
    );

    for (invocation, event, expected) in [
        ("2", "empty", CompletionResult::Void),
        ("3", "nocontent", CompletionResult::Void),
        (
            "4",
            "fail",
            CompletionResult::Error("Invocation failed, status code 500".into()),
        ),
    ] {
        client.send(&invoke(Some(invocation), event, vec![])).await;
        assert_eq!(
            completion(&mut client).await,
            (invocation.to_string(), expected),
            "{event}"
        );
    }

    // Without an invocation id the answer (here an error) is ignored: the next message
    // the client gets is the Completion of the following invocation.
    client.send(&invoke(None, "fail", vec![])).await;
    let _ = stand.next_for("fail").await;
    client.send(&invoke(Some("5"), "nocontent", vec![])).await;
    assert_eq!(
        completion(&mut client).await,
        ("5".into(), CompletionResult::Void)
    );
}

#[tokio::test]
async fn json_invocations_get_their_completion_from_the_upstream() {
    completions_follow_the_upstream_answer(Protocol::Json).await;
}

#[tokio::test]
async fn messagepack_invocations_get_their_completion_from_the_upstream() {
    completions_follow_the_upstream_answer(Protocol::MessagePack).await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_into_a_completion_error() {
    let stand = StandIn::start().await;
    let templates = vec![stand.template("up")];
    let svc = start_with(|o| {
        o.upstreams = templates;
        o.upstream_timeout = Duration::from_millis(300);
    })
    .await;
    let (mut client, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    client.send(&invoke(Some("9"), "slow", vec![])).await;
    let (id, result) = completion(&mut client).await;
    assert_eq!(id, "9");
    match result {
        CompletionResult::Error(error) => assert!(error.contains("timed out"), "{error}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_first_matching_template_wins() {
    let stand = StandIn::start().await;
    let first = UpstreamTemplate {
        url_template: format!("{}/first/{{event}}", stand.url),
        hub_pattern: "news, chat".into(),
        category_pattern: "messages".into(),
        event_pattern: "nocontent".into(),
    };
    let svc = service(vec![first, stand.template("second")]).await;
    let (mut client, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    assert_eq!(
        stand.next().await.path,
        "/second/chat/connections/connected"
    );
    client.send(&invoke(Some("1"), "nocontent", vec![])).await;
    assert_eq!(stand.next().await.path, "/first/nocontent");
    client.send(&invoke(Some("2"), "other", vec![])).await;
    assert_eq!(stand.next().await.path, "/second/chat/messages/other");
}

#[tokio::test]
async fn invocations_no_upstream_takes_are_refused_with_a_completion_error() {
    let stand = StandIn::start().await;
    let connections_only = UpstreamTemplate {
        category_pattern: "connections".into(),
        ..stand.template("up")
    };
    let svc = service(vec![connections_only]).await;
    let (mut client, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    let _ = stand.next_for("connected").await;
    // Fire-and-forget: dropped silently; with an id: the serverless refusal.
    client.send(&invoke(None, "send", vec![])).await;
    client.send(&invoke(Some("1"), "send", vec![])).await;
    assert_eq!(
        completion(&mut client).await,
        (
            "1".into(),
            CompletionResult::Error(
                "Client invocations are not supported in serverless mode".into()
            )
        )
    );
}

/// A TCP listener that accepts connections and never answers: a hung upstream.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/{{event}}")
}

#[tokio::test]
async fn a_dead_upstream_never_holds_up_fan_out_and_its_queue_is_bounded() {
    let url = black_hole().await;
    let svc = start_with(|o| {
        o.upstreams = vec![UpstreamTemplate::all(url)];
        // One POST in flight and one waiting per hub; the rest is refused at once.
        o.upstream_concurrency = 1;
        o.upstream_queue = 1;
    })
    .await;
    let (mut caller, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    let (mut other, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    // The two `connected` events fill the hub's bound (one hangs, one waits).
    for id in ["1", "2", "3"] {
        caller.send(&invoke(Some(id), "send", vec![])).await;
    }
    let response = rest(
        &svc,
        Method::POST,
        "/api/v1/hubs/chat",
        Some(json!({"target": "news", "arguments": ["fan-out"]})),
    )
    .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        other.next_invocation().await,
        ("news".to_string(), vec![json!("fan-out")])
    );
    // The caller's reader and writer are not held either: its refused invocations are
    // answered at once, and the broadcast arrives.
    let mut refused = Vec::new();
    let mut broadcast = false;
    while refused.len() < 3 || !broadcast {
        match caller.next_non_ping().await {
            Event::Message(HubMessage::Completion {
                invocation_id,
                result: CompletionResult::Error(error),
                ..
            }) => {
                assert!(error.contains("queue is full"), "{error}");
                refused.push(invocation_id);
            }
            Event::Message(HubMessage::Invocation { target, .. }) if target == "news" => {
                broadcast = true
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, ["1", "2", "3"]);
}

#[tokio::test]
async fn stream_invocations_are_still_refused() {
    let stand = StandIn::start().await;
    let svc = service(vec![stand.template("up")]).await;
    let (mut client, _) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    client
        .send(&HubMessage::StreamInvocation {
            headers: Headers::new(),
            invocation_id: "s1".into(),
            target: "counter".into(),
            arguments: vec![],
            stream_ids: vec![],
        })
        .await;
    let (id, result) = completion(&mut client).await;
    assert_eq!(id, "s1");
    assert!(matches!(result, CompletionResult::Error(_)), "{result:?}");
}

#[tokio::test]
async fn presence_counts_connections_users_and_transports() {
    use herald::signalr::ServiceEndpoint;
    use herald::signalr::rest::{ApiVersion, RestClient, RestOptions};

    let svc = start().await;
    let (_a, _) = Client::negotiated(&svc, "chat", Some("alice"), Protocol::Json).await;
    let (_b, b) = Client::negotiated(&svc, "chat", Some("alice"), Protocol::MessagePack).await;
    let (_other_hub, _) = Client::negotiated(&svc, "news", Some("carol"), Protocol::Json).await;
    assert!(svc.handle.add_connection_to_group("chat", "room", &b));

    for api in [ApiVersion::V2022_06_01, ApiVersion::V1] {
        let endpoint = ServiceEndpoint::new("http://127.0.0.1", Some(svc.addr().port()), KEY)
            .expect("endpoint");
        let client = RestClient::new(
            endpoint,
            RestOptions {
                api,
                ..RestOptions::default()
            },
        )
        .expect("client");
        let presence = client.presence("Chat").await.expect("presence");
        assert_eq!((presence.connections, presence.users), (2, 1), "{api}");
        assert_eq!(presence.groups, 1);
        assert_eq!(presence.transports.get("WebSockets"), Some(&2));
        let empty = client.presence("quiet").await.expect("presence");
        assert_eq!((empty.connections, empty.users, empty.groups), (0, 0, 0));
    }

    // The raw answer has at least the documented shape, and needs a REST token.
    let body: Value = rest(&svc, Method::GET, "/api/hubs/chat/presence", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["connections"], 2);
    assert_eq!(body["users"], 1);
    let unauthorised = http()
        .get(format!("{}/api/hubs/chat/presence", svc.http()))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthorised.status(), 401);
}
