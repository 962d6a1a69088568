//! The embedded service end to end: the real server on 127.0.0.1:0, a small SignalR client
//! on tokio-tungstenite, SSE and long polling over reqwest, and the REST API with tokens.

mod service_support;

use std::time::Duration;

use herald::message::Message;
use herald::signalr::protocol::{HubMessage, Protocol};
use herald::signalr::token::Claims;
use reqwest::Method;
use serde_json::{Value, json};
use service_support::*;

fn send_body(target: &str, arguments: Value) -> Option<Value> {
    Some(json!({"target": target, "arguments": arguments}))
}

/// Wait until `check` holds (polling), panicking after the generous ceiling.
async fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn negotiate_shapes() {
    let svc = start().await;
    let token = client_token("chat", Some("alice"));

    let v0: Value = negotiate(&svc, "hub=chat", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v0["negotiateVersion"], 0);
    assert!(v0["connectionId"].is_string());
    assert!(v0.get("connectionToken").is_none());
    assert!(v0.get("useStatefulReconnect").is_none());
    let transports = json!([
        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
        {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
        {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
    ]);
    assert_eq!(v0["availableTransports"], transports);

    let v1: Value = negotiate(
        &svc,
        "hub=Chat&negotiateVersion=1&useStatefulReconnect=true",
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v1["negotiateVersion"], 1);
    assert!(v1["connectionToken"].is_string());
    assert_ne!(v1["connectionToken"], v1["connectionId"]);
    // Asked for at version 1: answered (the JS client refuses it unasked).
    assert_eq!(v1["useStatefulReconnect"], true);
    let plain: Value = negotiate(&svc, "hub=chat&negotiateVersion=1", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(plain.get("useStatefulReconnect").is_none());
    let v0_asked: Value = negotiate(&svc, "hub=chat&useStatefulReconnect=true", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v0_asked.get("useStatefulReconnect").is_none(),
        "version 0 has no secret token to resume with"
    );

    let v9: Value = negotiate(&svc, "hub=chat&negotiateVersion=9", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v9["negotiateVersion"], 1);

    assert_eq!(negotiate(&svc, "x=1", &token).await.status(), 400);

    // v0: the connectionId is the transport id.
    let id = v0["connectionId"].as_str().unwrap();
    let mut client = Client::connect(
        &svc,
        &format!("hub=chat&id={id}"),
        Some(&token),
        Protocol::Json,
    )
    .await;
    rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/:send",
        send_body("hello", json!([1])),
    )
    .await;
    assert_eq!(
        client.next_invocation().await,
        ("hello".into(), vec![json!(1)])
    );

    // Browsers: CORS mirrors the origin and allows credentials.
    let response = http()
        .request(
            Method::OPTIONS,
            format!("{}/client/negotiate?hub=chat", svc.http()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-signalr-user-agent",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
}

#[tokio::test]
async fn websocket_json_and_messagepack_receive_a_rest_broadcast() {
    let svc = start().await;
    let (mut json_client, _) = Client::negotiated(&svc, "Chat", Some("a"), Protocol::Json).await;
    let (mut mp_client, _) =
        Client::negotiated(&svc, "chat", Some("b"), Protocol::MessagePack).await;
    eventually(|| svc.handle.connection_count() == 2).await;

    let args = json!(["alice", {"text": "hi", "n": -3, "f": 1.5, "ok": true, "none": null}]);
    let response = rest(
        &svc,
        Method::POST,
        "/api/hubs/CHAT/:send?api-version=2022-06-01",
        send_body("newMessage", args.clone()),
    )
    .await;
    assert_eq!(response.status(), 202);
    let expected = ("newMessage".to_string(), args.as_array().unwrap().clone());
    assert_eq!(json_client.next_invocation().await, expected);
    assert_eq!(mp_client.next_invocation().await, expected);

    // The v1 broadcast route.
    let response = rest(
        &svc,
        Method::POST,
        "/api/v1/hubs/chat",
        send_body("v1", json!([])),
    )
    .await;
    assert_eq!(response.status(), 202);
    assert_eq!(json_client.next_invocation().await.0, "v1");
    assert_eq!(mp_client.next_invocation().await.0, "v1");
}

#[tokio::test]
async fn server_sent_events_receive_a_broadcast() {
    let svc = start().await;
    let token = client_token("chat", None);
    let (_, id) = negotiate_v1(&svc, "chat", &token).await;
    let url = format!(
        "{}/client/?hub=chat&id={id}&access_token={token}",
        svc.http()
    );
    let mut stream = http()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    // A second SSE request for the same id is refused.
    let second = http()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409);

    let post = |body: &'static [u8]| {
        let url = url.clone();
        async move { http().post(url).body(body).send().await.unwrap().status() }
    };
    assert_eq!(
        post(b"{\"protocol\":\"json\",\"version\":1}\x1e").await,
        200
    );

    let mut text = String::new();
    let mut read_until = async |needle: &str, text: &mut String| {
        while !text.contains(needle) {
            let chunk = tokio::time::timeout(WAIT, stream.chunk())
                .await
                .expect("SSE data in time")
                .unwrap()
                .expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until("data: {}\u{1e}\r\n\r\n", &mut text).await;
    rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/:send",
        send_body("sse", json!(["x"])),
    )
    .await;
    read_until(
        "data: {\"type\":1,\"target\":\"sse\",\"arguments\":[\"x\"]}\u{1e}\r\n\r\n",
        &mut text,
    )
    .await;

    // A client invocation expecting a result gets a Completion with the serverless error.
    assert_eq!(
        post(b"{\"type\":1,\"invocationId\":\"7\",\"target\":\"Echo\",\"arguments\":[]}\x1e").await,
        200
    );
    read_until(
        "data: {\"type\":3,\"invocationId\":\"7\",\"error\":\"Client invocations are not supported in serverless mode\"}\u{1e}",
        &mut text,
    )
    .await;
    assert_eq!(
        http()
            .post(format!(
                "{}/client/?hub=chat&access_token={token}",
                svc.http()
            ))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn long_polling_receives_a_broadcast() {
    let svc = start().await;
    let token = client_token("chat", Some("lp"));
    let (_, id) = negotiate_v1(&svc, "chat", &token).await;
    let url = format!("{}/client/?hub=chat&id={id}", svc.http());
    let poll = || async {
        let response = http().get(&url).bearer_auth(&token).send().await.unwrap();
        (
            response.status().as_u16(),
            response.bytes().await.unwrap().to_vec(),
        )
    };
    // The first poll returns at once, empty.
    assert_eq!(poll().await, (200, Vec::new()));
    let status = http()
        .post(&url)
        .bearer_auth(&token)
        .body(&b"{\"protocol\":\"json\",\"version\":1}\x1e"[..])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let (status, body) = poll().await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with(b"{}\x1e"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    eventually(|| svc.handle.user_exists("chat", "lp")).await;

    rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/users/lp/:send",
        send_body("lp", json!([2])),
    )
    .await;
    let mut seen = body[3..].to_vec();
    while !seen.windows(2).any(|w| w == b"lp") {
        let (status, body) = poll().await;
        assert_eq!(status, 200);
        seen.extend(body);
    }
    let messages = Protocol::Json.decode_frame(&seen).unwrap();
    assert!(messages.contains(&HubMessage::invocation("lp", vec![json!(2)])));

    // DELETE ends the connection; the next poll says 204.
    let status = http()
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    let (status, _) = poll().await;
    assert!(status == 204 || status == 404, "{status}");

    // Missing id → 400, unknown id → 404.
    let missing = http()
        .get(format!("{}/client/?hub=chat", svc.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let unknown = http()
        .get(format!("{}/client/?hub=chat&id=nope", svc.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn users_groups_connections_and_excluded() {
    let svc = start().await;
    let (mut alice1, alice1_id) =
        Client::negotiated(&svc, "chat", Some("alice"), Protocol::Json).await;
    let (mut alice2, _) =
        Client::negotiated(&svc, "chat", Some("alice"), Protocol::MessagePack).await;
    let (mut carol, carol_id) =
        Client::negotiated(&svc, "chat", Some("carol"), Protocol::Json).await;
    // Bob connects like pysignalr after an Azure redirect: no negotiate, no id, bearer header.
    let bob_token = client_token("chat", Some("bob"));
    let mut bob = Client::connect(&svc, "hub=chat", Some(&bob_token), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 4).await;

    let marker = async |svc: &TestService| {
        rest(
            svc,
            Method::POST,
            "/api/hubs/chat/:send",
            send_body("marker", json!([])),
        )
        .await;
    };

    // User send: both of alice's connections, nobody else.
    let r = rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/users/alice/:send",
        send_body("u", json!([1])),
    )
    .await;
    assert_eq!(r.status(), 202);
    marker(&svc).await;
    assert_eq!(alice1.next_invocation().await.0, "u");
    assert_eq!(alice2.next_invocation().await.0, "u");
    for c in [&mut alice1, &mut alice2, &mut bob, &mut carol] {
        assert_eq!(c.next_invocation().await.0, "marker");
    }

    // Group: carol by connection, bob by user (v1 path, both orderings exist), alice by user.
    let r = rest(
        &svc,
        Method::PUT,
        &format!("/api/hubs/chat/groups/g1/connections/{carol_id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(
        &svc,
        Method::PUT,
        "/api/v1/hubs/chat/groups/g1/users/bob",
        None,
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = rest(
        &svc,
        Method::PUT,
        "/api/hubs/chat/users/alice/groups/g1?ttl=3600",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(
        &svc,
        Method::HEAD,
        "/api/hubs/chat/users/bob/groups/g1",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(&svc, Method::HEAD, "/api/hubs/chat/groups/g1", None).await;
    assert_eq!(r.status(), 200);

    // Group send excluding alice1.
    let r = rest(
        &svc,
        Method::POST,
        &format!("/api/hubs/chat/groups/g1/:send?excluded={alice1_id}&excluded=other"),
        send_body("g", json!([])),
    )
    .await;
    assert_eq!(r.status(), 202);
    marker(&svc).await;
    assert_eq!(alice1.next_invocation().await.0, "marker");
    for c in [&mut alice2, &mut bob, &mut carol] {
        assert_eq!(c.next_invocation().await.0, "g");
        assert_eq!(c.next_invocation().await.0, "marker");
    }

    // A later connection of alice joins her group.
    let (mut alice3, _) = Client::negotiated(&svc, "chat", Some("alice"), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 5).await;
    svc.handle.send(&Message {
        hub: "CHAT".into(),
        to: herald::message::Recipient::Group("g1".into()),
        target: "g2".into(),
        arguments: vec![],
        excluded: vec![],
    });
    marker(&svc).await;
    // alice1 was only excluded from one send: she is still a member through her user.
    for c in [&mut alice1, &mut alice2, &mut alice3, &mut bob, &mut carol] {
        assert_eq!(c.next_invocation().await.0, "g2");
        assert_eq!(c.next_invocation().await.0, "marker");
    }

    // Connection send reaches exactly one connection.
    let r = rest(
        &svc,
        Method::POST,
        &format!("/api/hubs/chat/connections/{carol_id}/:send"),
        send_body("c", json!([])),
    )
    .await;
    assert_eq!(r.status(), 202);
    marker(&svc).await;
    assert_eq!(carol.next_invocation().await.0, "c");
    assert_eq!(bob.next_invocation().await.0, "marker");

    // Removing alice from all groups, and carol's connection from g1.
    let r = rest(
        &svc,
        Method::DELETE,
        "/api/hubs/chat/users/alice/groups",
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = rest(
        &svc,
        Method::DELETE,
        &format!("/api/hubs/chat/connections/{carol_id}/groups/g1"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(!svc.handle.user_in_group("chat", "g1", "alice"));
    assert!(svc.handle.user_in_group("chat", "g1", "bob"));
    let r = rest(
        &svc,
        Method::DELETE,
        "/api/hubs/chat/users/bob/groups/g1",
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = rest(&svc, Method::HEAD, "/api/hubs/chat/groups/g1", None).await;
    assert_eq!(r.status(), 404);
}

fn forged_tokens(audience: &str) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64| Claims {
        aud: aud.to_string(),
        exp,
        iat: None,
        nbf: None,
        asrs_uid: Some("mallory".into()),
        nameid: None,
        sub: None,
    };
    let sign = |key: &str, c: &Claims| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            c,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&claims(audience, now + 3600)).unwrap())
    );
    vec![
        ("forged", sign("not-the-key", &claims(audience, now + 3600))),
        ("expired", sign(KEY, &claims(audience, now - 3600))),
        (
            "wrong audience",
            sign(
                KEY,
                &claims("http://elsewhere.example/other/path", now + 3600),
            ),
        ),
        ("alg none", none),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_everywhere() {
    let svc = start().await;
    let client_aud = "http://127.0.0.1/client/?hub=chat";
    let mut cases = forged_tokens(client_aud);
    // Right host and path, but the token names another hub.
    cases.push((
        "other hub",
        herald::signalr::token::mint_client(
            KEY,
            "http://127.0.0.1/client/?hub=admin",
            None,
            Duration::from_secs(60),
        )
        .unwrap(),
    ));
    for (name, token) in &cases {
        let response = negotiate(&svc, "hub=chat&negotiateVersion=1", token).await;
        assert_eq!(response.status(), 401, "negotiate with {name}");
        assert!(!response.text().await.unwrap().is_empty());
        assert_eq!(
            ws_status(&svc, "hub=chat", Some(token)).await,
            401,
            "WebSocket with {name}"
        );
        assert_eq!(
            ws_status(&svc, &format!("hub=chat&access_token={token}"), None).await,
            401,
            "WebSocket (query token) with {name}"
        );
    }
    assert_eq!(ws_status(&svc, "hub=chat", None).await, 401);
    assert_eq!(negotiate(&svc, "hub=chat", "").await.status(), 401);

    let path = "/api/hubs/chat/:send";
    for (name, token) in forged_tokens(&format!("http://127.0.0.1{path}")) {
        let response = http()
            .post(format!("{}{path}", svc.http()))
            .bearer_auth(token)
            .json(&json!({"target": "t", "arguments": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "REST with {name}");
    }
    // A REST token for another path is refused too; none at all as well.
    let response = http()
        .post(format!("{}{path}", svc.http()))
        .bearer_auth(rest_token("/api/hubs/chat/users/x/:send"))
        .json(&json!({"target": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = http()
        .post(format!("{}{path}", svc.http()))
        .json(&json!({"target": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn malformed_handshakes_and_frames_close_cleanly() {
    let svc = start().await;
    let token = client_token("chat", None);

    // Not a handshake: closed without an answer.
    let mut c = Client::open(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    c.send_text(b"{\"type\":6}\x1e").await;
    assert_eq!(c.next_event().await, Event::Closed(Some(1000)));

    // Garbage bytes.
    let mut c = Client::open(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    c.send_binary(vec![0xff, 0x00, 0x1e]).await;
    assert!(matches!(c.next_event().await, Event::Closed(_)));

    // Unknown protocol: the error response, then close.
    let mut c = Client::open(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    c.send_text(b"{\"protocol\":\"x\",\"version\":1}\x1e").await;
    assert_eq!(
        c.handshake_response().await.as_deref(),
        Some("Requested protocol 'x' is not available.")
    );
    assert!(matches!(c.next_event().await, Event::Closed(_)));

    // A malformed frame after the handshake: a Close message with an error, then close.
    let mut c = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    c.send_text(b"{\"type\":1,\"target\":").await;
    match c.next_non_ping().await {
        Event::Message(HubMessage::Close { error: Some(e), .. }) => {
            assert!(e.contains("error"), "{e}")
        }
        other => panic!("expected a Close message, got {other:?}"),
    }
    assert_eq!(c.next_event().await, Event::Closed(Some(1000)));

    // MessagePack garbage.
    let mut c = Client::connect(&svc, "hub=chat", Some(&token), Protocol::MessagePack).await;
    c.send_binary(vec![0x05, 0xc1, 0xc1]).await;
    assert!(matches!(
        c.next_non_ping().await,
        Event::Message(HubMessage::Close { error: Some(_), .. })
    ));

    // Client invocations: a Completion error when a result is expected; fire-and-forget and
    // pings are accepted silently.
    let mut c = Client::connect(&svc, "hub=chat", Some(&token), Protocol::MessagePack).await;
    c.send(&HubMessage::invocation("Ignored", vec![json!(1)]))
        .await;
    c.send(&HubMessage::Ping).await;
    c.send(&HubMessage::Invocation {
        headers: Default::default(),
        invocation_id: Some("42".into()),
        target: "Echo".into(),
        arguments: vec![],
        stream_ids: vec![],
    })
    .await;
    assert_eq!(
        c.next_non_ping().await,
        Event::Message(HubMessage::completion_error(
            "42",
            "Client invocations are not supported in serverless mode"
        ))
    );

    // The service still serves new connections.
    let mut fresh = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 2).await;
    rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/:send",
        send_body("alive", json!([])),
    )
    .await;
    assert_eq!(fresh.next_invocation().await.0, "alive");
    assert_eq!(c.next_invocation().await.0, "alive");
}

#[tokio::test]
async fn transport_conflicts_and_unknown_ids() {
    let svc = start().await;
    let token = client_token("chat", Some("u"));
    let (_, id) = negotiate_v1(&svc, "chat", &token).await;
    let _first = Client::connect(
        &svc,
        &format!("hub=chat&id={id}"),
        Some(&token),
        Protocol::Json,
    )
    .await;
    assert_eq!(
        ws_status(&svc, &format!("hub=chat&id={id}"), Some(&token)).await,
        409
    );
    assert_eq!(
        ws_status(&svc, "hub=chat&id=unknown", Some(&token)).await,
        404
    );
    // Another user's token cannot use the connection.
    let other = client_token("chat", Some("someone-else"));
    assert_eq!(
        ws_status(&svc, &format!("hub=chat&id={id}"), Some(&other)).await,
        403
    );
}

#[tokio::test]
async fn slow_consumer_is_closed_without_delaying_others() {
    let svc = start_with(|o| o.outbound_queue = 8).await;
    let token = client_token("chat", None);
    let _slow = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    let mut fast = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 2).await;

    let big = "x".repeat(256 * 1024);
    let mut slow_closed = false;
    for i in 0..2000 {
        let report = svc.handle.send(&Message::broadcast(
            "chat",
            "big",
            vec![json!(i), json!(big)],
        ));
        // The fast client reads every message before the next one is sent.
        let (target, args) = fast.next_invocation().await;
        assert_eq!((target.as_str(), &args[0]), ("big", &json!(i)));
        if report.slow_consumers > 0 {
            slow_closed = true;
            break;
        }
    }
    assert!(slow_closed, "the slow consumer was never closed");
    eventually(|| svc.handle.connection_count() == 1).await;
    let report = svc
        .handle
        .send(&Message::broadcast("chat", "after", vec![]));
    assert_eq!(report.connections, 1);
    assert_eq!(fast.next_invocation().await.0, "after");
}

#[tokio::test]
async fn rest_status_codes_404_error_codes_and_body_limit() {
    let svc = start().await;
    for path in ["/api/health", "/api/v1/health"] {
        for method in [Method::HEAD, Method::GET] {
            let r = http()
                .request(method, format!("{}{path}", svc.http()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
    }
    let cases = [
        (
            Method::HEAD,
            "/api/hubs/chat/connections/nope",
            "Warning.Connection.NotExisted",
        ),
        (
            Method::GET,
            "/api/v1/hubs/chat/connections/nope",
            "Warning.Connection.NotExisted",
        ),
        (
            Method::HEAD,
            "/api/hubs/chat/users/nobody",
            "Warning.User.NotExisted",
        ),
        (
            Method::HEAD,
            "/api/hubs/chat/groups/empty",
            "Warning.Group.NotExisted",
        ),
        (
            Method::GET,
            "/api/hubs/chat/users/nobody/groups/g",
            "Info.User.NotInGroup",
        ),
        (
            Method::GET,
            "/api/v1/hubs/chat/groups/g/users/nobody",
            "Info.User.NotInGroup",
        ),
        (
            Method::PUT,
            "/api/hubs/chat/groups/g/connections/nope",
            "Error.Connection.NotExisted",
        ),
        (
            Method::DELETE,
            "/api/hubs/chat/groups/g/connections/nope",
            "Warning.Connection.NotExisted",
        ),
    ];
    for (method, path, code) in cases {
        let r = rest(&svc, method.clone(), path, None).await;
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(r.headers()["x-ms-error-code"], code, "{method} {path}");
    }
    // Status codes that differ between the APIs.
    let r = rest(
        &svc,
        Method::PUT,
        "/api/v1/hubs/chat/users/u/groups/g",
        None,
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = rest(
        &svc,
        Method::DELETE,
        "/api/v1/hubs/chat/users/u/groups",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(
        &svc,
        Method::DELETE,
        "/api/hubs/chat/connections/nope?reason=x",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(&svc, Method::POST, "/api/hubs/chat/:closeConnections", None).await;
    assert_eq!(r.status(), 204);
    let r = rest(
        &svc,
        Method::POST,
        "/api/hubs/1bad/:send",
        send_body("t", json!([])),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/:send",
        Some(json!({"arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = rest(
        &svc,
        Method::PUT,
        "/api/hubs/chat/users/u/groups/g?ttl=soon",
        None,
    )
    .await;
    assert_eq!(r.status(), 400);

    // Over 1 MB.
    let huge = json!({"target": "t", "arguments": ["y".repeat(1_100_000)]});
    let r = rest(&svc, Method::POST, "/api/hubs/chat/:send", Some(huge)).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn rest_close_sends_close_with_allow_reconnect() {
    let svc = start().await;
    let (mut c, id) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    eventually(|| svc.handle.connection_exists("chat", &id)).await;
    let r = rest(
        &svc,
        Method::HEAD,
        &format!("/api/hubs/chat/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = rest(
        &svc,
        Method::DELETE,
        &format!("/api/hubs/chat/connections/{id}?reason=bye"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.next_non_ping().await,
        Event::Message(HubMessage::Close {
            error: Some("bye".into()),
            allow_reconnect: true
        })
    );
    assert_eq!(c.next_event().await, Event::Closed(Some(1000)));
    eventually(|| !svc.handle.connection_exists("chat", &id)).await;
}

#[tokio::test]
async fn keep_alive_pings_and_client_timeout() {
    let svc = start_with(|o| {
        o.keep_alive = Duration::from_millis(100);
        o.client_timeout = Duration::from_millis(1500);
    })
    .await;
    let token = client_token("chat", None);
    let mut c = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    assert_eq!(c.next_event().await, Event::Message(HubMessage::Ping));
    // The client never sends anything: the server gives up with a Close message.
    loop {
        match c.next_event().await {
            Event::Message(HubMessage::Ping) => continue,
            Event::Message(HubMessage::Close { error: Some(e), .. }) => {
                assert!(e.contains("timeout"), "{e}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(c.next_event().await, Event::Closed(_)));
}

#[tokio::test]
async fn handshake_timeout_closes() {
    let svc = start_with(|o| o.handshake_timeout = Duration::from_millis(300)).await;
    let token = client_token("chat", None);
    let mut c = Client::open(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    assert!(matches!(c.next_event().await, Event::Closed(_)));
}

#[tokio::test]
async fn shutdown_closes_connections_with_allow_reconnect() {
    let svc = start().await;
    let token = client_token("chat", None);
    let mut c = Client::connect(&svc, "hub=chat", Some(&token), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 1).await;
    svc.handle.shutdown();
    assert_eq!(
        c.next_non_ping().await,
        Event::Message(HubMessage::Close {
            error: Some("Server is shutting down.".into()),
            allow_reconnect: true
        })
    );
    assert_eq!(c.next_event().await, Event::Closed(Some(1001)));
    tokio::time::timeout(WAIT, svc.handle.stopped())
        .await
        .expect("service stops");
}

/// Read until the peer closes; `true` if it did within `limit`.
async fn closed_by_peer(mut stream: tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn listener_timeouts_from_service_options_close_unfinished_and_idle_connections() {
    use tokio::io::AsyncWriteExt;
    // Shorter than the defaults (10 s, 20 s), so only the configured values can close
    // them within the (generous) limit below.
    let svc = start_with(|o| {
        o.header_read_timeout = Duration::from_secs(1);
        o.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut half = tokio::net::TcpStream::connect(svc.addr()).await.unwrap();
    half.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(svc.addr()).await.unwrap();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let limit = Duration::from_secs(8);
    let (half, idle) = tokio::join!(closed_by_peer(half, limit), closed_by_peer(idle, limit));
    assert!(half, "an unfinished request head was not closed");
    assert!(idle, "an idle keep-alive connection was not closed");
}

/// A REST send to `path` carrying `x-herald-message-id: id` (when given); returns the status.
async fn send_with_id(svc: &TestService, path: &str, id: Option<&str>, arguments: Value) -> u16 {
    let mut request = http()
        .post(format!("{}{path}", svc.http()))
        .bearer_auth(rest_token(path))
        .json(&json!({"target": "m", "arguments": arguments}));
    if let Some(id) = id {
        request = request.header(herald::signalr::rest::MESSAGE_ID_HEADER, id);
    }
    request.send().await.expect("REST send").status().as_u16()
}

#[tokio::test]
async fn a_repeated_message_id_is_accepted_but_delivered_once() {
    let svc = start_with(|o| o.dedupe_window = Duration::from_secs(2)).await;
    let (mut client, id) = Client::negotiated(&svc, "chat", Some("alice"), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 1).await;
    let added = rest(
        &svc,
        Method::PUT,
        &format!("/api/hubs/chat/groups/g/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(added.status(), 200);

    // Every send endpoint, both API versions: the second send of an id is a 202 no-op.
    let paths = [
        "/api/hubs/chat/:send".to_string(),
        "/api/v1/hubs/chat".to_string(),
        "/api/hubs/chat/users/alice/:send".to_string(),
        "/api/hubs/chat/groups/g/:send".to_string(),
        format!("/api/hubs/chat/connections/{id}/:send"),
        format!("/api/v1/hubs/chat/connections/{id}"),
    ];
    for (n, path) in paths.iter().enumerate() {
        let message_id = format!("id-{n}");
        assert_eq!(
            send_with_id(&svc, path, Some(&message_id), json!([n])).await,
            202
        );
        assert_eq!(
            send_with_id(&svc, path, Some(&message_id), json!([n])).await,
            202,
            "{path}"
        );
    }
    // A new id is delivered; an id seen on another endpoint is still a repeat.
    assert_eq!(
        send_with_id(&svc, &paths[0], Some("id-new"), json!(["new"])).await,
        202
    );
    assert_eq!(
        send_with_id(&svc, &paths[3], Some("id-0"), json!(["again"])).await,
        202
    );
    // No header: never deduplicated.
    for _ in 0..2 {
        assert_eq!(
            send_with_id(&svc, &paths[0], None, json!(["plain"])).await,
            202
        );
    }
    let mut got = Vec::new();
    for _ in 0..paths.len() + 3 {
        got.push(client.next_invocation().await.1);
    }
    let expected: Vec<Vec<Value>> = (0..paths.len())
        .map(|n| vec![json!(n)])
        .chain([
            vec![json!("new")],
            vec![json!("plain")],
            vec![json!("plain")],
        ])
        .collect();
    assert_eq!(got, expected, "each id once, in order");

    // After the window the id is forgotten: delivered again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        send_with_id(&svc, &paths[0], Some("id-0"), json!(["later"])).await,
        202
    );
    assert_eq!(client.next_invocation().await.1, vec![json!("later")]);
}

#[tokio::test]
async fn stateful_reconnect_resumes_the_connection_and_replays_what_was_not_acknowledged() {
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let svc = start_with(|o| o.reconnect_window = Duration::from_secs(3)).await;
        let token = client_token("chat", Some("alice"));
        let body: Value = negotiate(
            &svc,
            "hub=chat&negotiateVersion=1&useStatefulReconnect=true",
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(body["useStatefulReconnect"], true);
        let id = body["connectionId"].as_str().unwrap().to_string();
        let query = format!("hub=chat&id={}", body["connectionToken"].as_str().unwrap());
        let mut first = Client::connect(&svc, &query, Some(&token), protocol).await;
        eventually(|| svc.handle.connection_count() == 1).await;
        let group_path = format!("/api/hubs/chat/groups/g/connections/{id}");
        assert_eq!(
            rest(&svc, Method::PUT, &group_path, None).await.status(),
            200
        );
        let to_group = |n: u64| {
            let svc = &svc;
            async move {
                let r = rest(
                    svc,
                    Method::POST,
                    "/api/hubs/chat/groups/g/:send",
                    send_body("m", json!([n])),
                )
                .await;
                assert_eq!(r.status(), 202);
            }
        };
        for n in 1..=3 {
            to_group(n).await;
        }
        for n in 1..=3 {
            assert_eq!(first.next_invocation().await, ("m".into(), vec![json!(n)]));
        }
        // The client processed message 1 only; it sends one trackable message of its own,
        // which the service acknowledges (about a second later).
        first.send(&HubMessage::Ack { sequence_id: 1 }).await;
        first
            .send(&HubMessage::invocation("fromClient", vec![]))
            .await;
        assert_eq!(
            first.next_non_ping().await,
            Event::Message(HubMessage::Ack { sequence_id: 1 }),
            "{protocol:?}"
        );

        // The socket drops without a Close: the connection, its user and group stay.
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(svc.handle.connection_exists("chat", &id));
        to_group(4).await;

        // A new WebSocket with the same token resumes (no handshake): Sequence, then 2..4.
        let mut second = Client::open(&svc, &query, Some(&token), protocol).await;
        assert_eq!(
            second.next_non_ping().await,
            Event::Message(HubMessage::Sequence { sequence_id: 2 })
        );
        for n in 2..=4 {
            assert_eq!(second.next_invocation().await, ("m".into(), vec![json!(n)]));
        }
        // The client resumes its own side: its message 1 was acknowledged, so it starts at 2;
        // a replayed duplicate of 1 would be dropped (the service never answers it anyway).
        second.send(&HubMessage::Sequence { sequence_id: 2 }).await;
        second
            .send(&HubMessage::invocation("fromClient", vec![]))
            .await;
        assert_eq!(
            second.next_non_ping().await,
            Event::Message(HubMessage::Ack { sequence_id: 2 })
        );
        to_group(5).await;
        assert_eq!(second.next_invocation().await, ("m".into(), vec![json!(5)]));
        assert!(svc.handle.group_exists("chat", "g"));

        // Dropped again and not resumed: closed after the window, its group membership gone.
        drop(second);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            svc.handle.connection_exists("chat", &id),
            "inside the window"
        );
        eventually(|| !svc.handle.connection_exists("chat", &id)).await;
        assert!(!svc.handle.group_exists("chat", "g"));
        let status = ws_status(&svc, &query, Some(&token)).await;
        assert_eq!(status, 404, "the token no longer resumes anything");
    }
}

#[tokio::test]
async fn a_full_replay_buffer_holds_messages_until_the_client_acknowledges() {
    // Room for about one message: the writer waits for an Ack before the next.
    let svc = start_with(|o| o.stateful_reconnect_buffer = 10).await;
    let token = client_token("chat", None);
    let body: Value = negotiate(
        &svc,
        "hub=chat&negotiateVersion=1&useStatefulReconnect=true",
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    let query = format!("hub=chat&id={}", body["connectionToken"].as_str().unwrap());
    let mut client = Client::connect(&svc, &query, Some(&token), Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 1).await;
    for n in 1..=3 {
        rest(
            &svc,
            Method::POST,
            "/api/hubs/chat/:send",
            send_body("m", json!([n])),
        )
        .await;
    }
    assert_eq!(client.next_invocation().await.1, vec![json!(1)]);
    let held = tokio::time::timeout(Duration::from_millis(700), client.next_non_ping()).await;
    assert!(held.is_err(), "message 2 must wait for an Ack: {held:?}");
    client.send(&HubMessage::Ack { sequence_id: 1 }).await;
    assert_eq!(client.next_invocation().await.1, vec![json!(2)]);
    client.send(&HubMessage::Ack { sequence_id: 2 }).await;
    assert_eq!(client.next_invocation().await.1, vec![json!(3)]);
}

#[tokio::test]
async fn without_stateful_reconnect_a_dropped_socket_closes_the_connection() {
    let svc = start().await;
    let (client, id) = Client::negotiated(&svc, "chat", None, Protocol::Json).await;
    eventually(|| svc.handle.connection_count() == 1).await;
    drop(client);
    eventually(|| !svc.handle.connection_exists("chat", &id)).await;

    // Zero buffer: stateful reconnect is not offered.
    let off = start_with(|o| o.stateful_reconnect_buffer = 0).await;
    let body: Value = negotiate(
        &off,
        "hub=chat&negotiateVersion=1&useStatefulReconnect=true",
        &client_token("chat", None),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(body.get("useStatefulReconnect").is_none());
}

#[tokio::test]
async fn a_batch_is_delivered_in_order_each_to_its_recipient_once_and_a_bad_item_sends_nothing() {
    let svc = start().await;
    let (mut alice, alice_id) =
        Client::negotiated(&svc, "chat", Some("alice"), Protocol::Json).await;
    let (mut bob, _) = Client::negotiated(&svc, "chat", Some("bob"), Protocol::MessagePack).await;
    eventually(|| svc.handle.connection_count() == 2).await;
    let added = rest(
        &svc,
        Method::PUT,
        &format!("/api/hubs/chat/groups/g/connections/{alice_id}"),
        None,
    )
    .await;
    assert_eq!(added.status(), 200);

    let item = |n: u32, extra: Value| {
        let mut v = json!({"id": format!("b-{n}"), "target": "m", "arguments": [n]});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    };
    let batch = json!([
        item(0, json!({})),
        item(1, json!({"user": "bob"})),
        item(2, json!({"group": "g"})),
        item(3, json!({"connection": alice_id})),
        item(4, json!({"excluded": [alice_id]})),
        // A repeat of an id already in this batch: not delivered again.
        item(0, json!({})),
    ]);
    let path = "/api/hubs/chat/:sendBatch";
    let sent = rest(&svc, Method::POST, path, Some(batch.clone())).await;
    assert_eq!(sent.status(), 202);
    let mut to_alice = Vec::new();
    let mut to_bob = Vec::new();
    for _ in 0..3 {
        to_alice.push(alice.next_invocation().await.1);
        to_bob.push(bob.next_invocation().await.1);
    }
    assert_eq!(
        to_alice,
        vec![vec![json!(0)], vec![json!(2)], vec![json!(3)]]
    );
    assert_eq!(to_bob, vec![vec![json!(0)], vec![json!(1)], vec![json!(4)]]);

    // A bad item (an empty user name) is a 400 naming it, and nothing of that batch goes
    // out; an unknown field too. The marker sent after is the next thing either client gets.
    let bad = json!([item(10, json!({})), item(11, json!({"user": ""}))]);
    let refused = rest(&svc, Method::POST, path, Some(bad)).await;
    assert_eq!(refused.status(), 400);
    let text = refused.text().await.unwrap_or_default();
    assert!(text.contains("batch item 1"), "{text}");
    let unknown = json!([{"target": "m", "arguments": [12], "everyone": true}]);
    assert_eq!(
        rest(&svc, Method::POST, path, Some(unknown)).await.status(),
        400
    );
    // The same batch again: every id is a repeat, nothing is delivered.
    assert_eq!(
        rest(&svc, Method::POST, path, Some(batch)).await.status(),
        202
    );
    let marker = rest(
        &svc,
        Method::POST,
        "/api/hubs/chat/:send",
        Some(json!({"target": "m", "arguments": ["marker"]})),
    )
    .await;
    assert_eq!(marker.status(), 202);
    assert_eq!(alice.next_invocation().await.1, vec![json!("marker")]);
    assert_eq!(bob.next_invocation().await.1, vec![json!("marker")]);
}
