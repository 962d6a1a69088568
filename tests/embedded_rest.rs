//! herald's own REST client against the embedded service, in-process: every data-plane
//! operation round-trips, observed through real WebSocket connections.

mod support;

use std::time::Duration;

use herald::message::{Message, Recipient};
use herald::service::{Service, ServiceOptions};
use herald::signalr::rest::{ApiVersion, RestClient, RestOptions};
use herald::signalr::{ServiceEndpoint, token};
use serde_json::{Value, json};
use support::ws::SignalrWs;
use tokio_util::sync::CancellationToken;

const KEY: &str = "embedded-rest-test-key-0123456789";
const HUB: &str = "chat";

/// A JSON-protocol connection to `HUB` as `user`: negotiated, WebSocket open, handshake done.
async fn open(endpoint: &ServiceEndpoint, user: Option<&str>) -> SignalrWs {
    let t = token::mint_client(
        KEY,
        &endpoint.client_audience(HUB),
        user,
        Duration::from_secs(600),
    )
    .unwrap();
    SignalrWs::connect(&endpoint.client_url(HUB), &t).await
}

fn msg(to: Recipient, n: u32) -> Message {
    Message {
        hub: HUB.into(),
        to,
        target: "t".into(),
        arguments: vec![json!(n)],
        excluded: vec![],
    }
}

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);

async fn run_all_operations(api: ApiVersion) {
    herald::install_crypto();
    let shutdown = CancellationToken::new();
    let handle = Service::start(
        ServiceOptions::new("127.0.0.1:0".parse().unwrap(), vec![KEY.into()]),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = handle.local_addr();
    let endpoint = ServiceEndpoint::new("http://127.0.0.1", Some(addr.port()), KEY).unwrap();
    let rest = RestClient::new(
        endpoint.clone(),
        RestOptions {
            api,
            ..RestOptions::default()
        },
    )
    .unwrap();
    let v1 = api == ApiVersion::V1;

    rest.health().await.unwrap();
    let mut a = open(&endpoint, Some("alice")).await;
    let mut b = open(&endpoint, Some("bob")).await;

    assert!(rest.connection_exists(HUB, &a.id).await.unwrap());
    assert!(!rest.connection_exists(HUB, "nope").await.unwrap());
    assert!(rest.user_exists(HUB, "alice").await.unwrap());
    assert!(!rest.user_exists(HUB, "carol").await.unwrap());

    // Broadcast, with and without exclusion.
    rest.send(&msg(Recipient::All, 1)).await.unwrap();
    assert_eq!(a.invocation(LONG).await, Some(json!([1])));
    assert_eq!(b.invocation(LONG).await, Some(json!([1])));
    let mut excluded = msg(Recipient::All, 2);
    excluded.excluded = vec![a.id.clone()];
    rest.send(&excluded).await.unwrap();
    assert_eq!(b.invocation(LONG).await, Some(json!([2])));
    assert_eq!(a.invocation(SHORT).await, None);

    // User and connection sends.
    rest.send(&msg(Recipient::User("bob".into()), 3))
        .await
        .unwrap();
    assert_eq!(b.invocation(LONG).await, Some(json!([3])));
    rest.send(&msg(Recipient::Connection(a.id.clone()), 4))
        .await
        .unwrap();
    assert_eq!(a.invocation(LONG).await, Some(json!([4])));
    assert_eq!(b.invocation(SHORT).await, None);

    // Connection group membership.
    rest.add_connection_to_group(HUB, "g1", &a.id)
        .await
        .unwrap();
    assert!(rest.group_exists(HUB, "g1").await.unwrap());
    rest.send(&msg(Recipient::Group("g1".into()), 5))
        .await
        .unwrap();
    assert_eq!(a.invocation(LONG).await, Some(json!([5])));
    assert_eq!(b.invocation(SHORT).await, None);
    rest.remove_connection_from_group(HUB, "g1", &a.id)
        .await
        .unwrap();
    assert!(!rest.group_exists(HUB, "g1").await.unwrap());

    // User group membership (with a TTL), checks, removal, remove-from-all.
    rest.add_user_to_group(HUB, "g2", "bob", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(rest.user_in_group(HUB, "g2", "bob").await.unwrap());
    assert!(!rest.user_in_group(HUB, "g2", "alice").await.unwrap());
    rest.send(&msg(Recipient::Group("g2".into()), 6))
        .await
        .unwrap();
    assert_eq!(b.invocation(LONG).await, Some(json!([6])));
    rest.remove_user_from_group(HUB, "g2", "bob").await.unwrap();
    assert!(!rest.user_in_group(HUB, "g2", "bob").await.unwrap());
    rest.add_user_to_group(HUB, "g3", "bob", None)
        .await
        .unwrap();
    rest.add_user_to_group(HUB, "g4", "bob", None)
        .await
        .unwrap();
    rest.remove_user_from_all_groups(HUB, "bob").await.unwrap();
    assert!(!rest.user_in_group(HUB, "g3", "bob").await.unwrap());
    assert!(!rest.user_in_group(HUB, "g4", "bob").await.unwrap());

    if !v1 {
        rest.add_connection_to_group(HUB, "g5", &b.id)
            .await
            .unwrap();
        rest.remove_connection_from_all_groups(HUB, &b.id)
            .await
            .unwrap();
        assert!(!rest.group_exists(HUB, "g5").await.unwrap());
    }

    // Adding an unknown connection to a group is a 404 with Azure's error code.
    let err = rest
        .add_connection_to_group(HUB, "g1", "missing")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    if !v1 {
        assert_eq!(err.error_code(), Some("Error.Connection.NotExisted"));
    }

    // Close a connection: it gets a Close message, then disappears.
    rest.close_connection(HUB, &a.id, Some("bye"))
        .await
        .unwrap();
    let closed = a.invocation(LONG).await;
    assert!(
        closed.is_none() || closed.as_ref().is_some_and(|c| c.get("closed").is_some()),
        "{closed:?}"
    );
    let deadline = tokio::time::Instant::now() + LONG;
    while rest.connection_exists(HUB, &a.id).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection still exists after close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A message over 1 MB is refused before it is sent.
    let big = Message {
        arguments: vec![json!("x".repeat(1_100_000))],
        ..msg(Recipient::All, 0)
    };
    assert!(matches!(
        rest.send(&big).await,
        Err(herald::signalr::rest::RestError::TooLarge { .. })
    ));

    // A REST client with the wrong key is refused.
    let wrong = ServiceEndpoint::new(
        "http://127.0.0.1",
        Some(addr.port()),
        "a-different-key-0123456789",
    )
    .unwrap();
    let wrong = RestClient::new(
        wrong,
        RestOptions {
            api,
            max_retries: 0,
            ..RestOptions::default()
        },
    )
    .unwrap();
    let err = wrong.send(&msg(Recipient::All, 9)).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");

    shutdown.cancel();
    handle.stopped().await;
}

#[tokio::test]
async fn every_rest_operation_round_trips_2022_06_01() {
    run_all_operations(ApiVersion::V2022_06_01).await;
}

#[tokio::test]
async fn every_rest_operation_round_trips_legacy_v1() {
    run_all_operations(ApiVersion::V1).await;
}

/// One raw HTTP/1.1 request with a valid REST token, so the path reaches the service
/// exactly as written (URL libraries resolve `.` and `%2E` segments away). Returns the
/// status, the `x-ms-error-code` header and the body.
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Option<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let audience = format!("http://127.0.0.1:{}{path}", addr.port());
    let bearer = token::mint_rest(KEY, &audience, "test", Duration::from_secs(600)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(LONG, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let code = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-ms-error-code")
            .then(|| v.trim().to_string())
    });
    (status, code, body.to_string())
}

/// Every REST path with a user, group or connection segment, `{}` standing for it, and
/// what the segment is called in the error message.
const NAMED_PATHS: &[(&str, &str, &str)] = &[
    ("POST", "users/{}/:send", "user id"),
    ("POST", "users/{}/:closeConnections", "user id"),
    ("GET", "users/{}/groups/g", "user id"),
    ("PUT", "users/{}/groups/g", "user id"),
    ("DELETE", "users/{}/groups/g", "user id"),
    ("PUT", "groups/g/users/{}", "user id"),
    ("DELETE", "users/{}/groups", "user id"),
    ("POST", "groups/{}/:send", "group name"),
    ("POST", "groups/{}/:closeConnections", "group name"),
    ("PUT", "users/u/groups/{}", "group name"),
    ("DELETE", "groups/{}/users/u", "group name"),
    ("PUT", "groups/{}/connections/c", "group name"),
    ("DELETE", "connections/c/groups/{}", "group name"),
    ("POST", "connections/{}/:send", "connection id"),
    ("DELETE", "connections/{}/groups", "connection id"),
    ("PUT", "groups/g/connections/{}", "connection id"),
    ("DELETE", "connections/{}/groups/g", "connection id"),
];

/// Paths that end in the name.
const NAMED_LAST: &[(&str, &str, &str)] = &[
    ("POST", "users/{}", "user id"),
    ("GET", "users/{}", "user id"),
    ("HEAD", "users/{}", "user id"),
    ("POST", "groups/{}", "group name"),
    ("GET", "groups/{}", "group name"),
    ("POST", "connections/{}", "connection id"),
    ("GET", "connections/{}", "connection id"),
    ("HEAD", "connections/{}", "connection id"),
    ("DELETE", "connections/{}", "connection id"),
];

#[tokio::test]
async fn empty_dot_and_blank_names_are_400_on_every_path_of_both_apis() {
    herald::install_crypto();
    let shutdown = CancellationToken::new();
    let handle = Service::start(
        ServiceOptions::new("127.0.0.1:0".parse().unwrap(), vec![KEY.into()]),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = handle.local_addr();
    let body = r#"{"target":"t","arguments":[]}"#;
    let mut checked = 0;
    for api in ["/api", "/api/v1"] {
        let cases = NAMED_PATHS
            .iter()
            .flat_map(|c| ["", ".", "%2E", "..", "%20", "%09%20"].map(|n| (c, n)))
            .chain(
                NAMED_LAST
                    .iter()
                    .flat_map(|c| ["", ".", "%2e", "%2E%2E", "%20"].map(|n| (c, n))),
            );
        for ((method, shape, kind), name) in cases {
            let path = format!("{api}/hubs/{HUB}/{}", shape.replace("{}", name));
            let (status, code, text) = raw(addr, method, &path, body).await;
            assert_eq!(status, 400, "{method} {path}: {text}");
            assert_eq!(
                code.as_deref(),
                Some("Error.Request.Invalid"),
                "{method} {path}"
            );
            if *method != "HEAD" {
                let v: Value = serde_json::from_str(&text).unwrap();
                let message = v["message"].as_str().unwrap_or_default();
                assert!(
                    message.starts_with(kind),
                    "{method} {path}: {message} should name the {kind}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");

    // The defect as reported: an empty user is not a send to someone.
    let (status, _, text) = raw(addr, "POST", "/api/hubs/chat/users//:send", body).await;
    assert_eq!(status, 400);
    assert!(text.contains("user id is empty"), "{text}");
    // Unknown shapes stay 404, whatever their segments hold.
    for (method, path) in [
        ("POST", "/api/hubs/chat/users//x/y"),
        ("GET", "/api/hubs/chat/groups//connections"),
        ("PATCH", "/api/v1/hubs/chat/users/u/groups/g"),
    ] {
        let (status, code, _) = raw(addr, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(
            code.as_deref(),
            Some("Error.Request.NotFound"),
            "{method} {path}"
        );
    }
    // A trailing slash where no name goes is ignored, as before.
    let (status, _, text) = raw(addr, "POST", "/api/hubs/chat/", body).await;
    assert_eq!(status, 202, "{text}");
    // Good names still work over the same raw path.
    let (status, _, text) = raw(addr, "POST", "/api/hubs/chat/users/a%20b/:send", body).await;
    assert_eq!(status, 202, "{text}");
    shutdown.cancel();
    handle.stopped().await;
}
