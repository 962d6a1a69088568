//! `RestClient` against a recording stand-in of the service's REST API
//! (`support::Recorder`, scripted answers): every operation's method, path, query, body and
//! token audience in both API versions; what counts as success; what is retried, after how
//! long (`Retry-After` in both forms, capped) and how errors read.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use herald::message::{Message, Recipient};
use herald::signalr::ServiceEndpoint;
use herald::signalr::rest::{ApiVersion, MAX_BODY_BYTES, RestClient, RestError, RestOptions};
use herald::signalr::token;
use reqwest::{StatusCode, Url};
use support::{Recorded, Recorder, Reply, reply};

const KEY: &str = support::ACCESS_KEY;
const SERVER_NAME: &str = "herald_test";

/// A stand-in on 127.0.0.1:0 that records requests and plays `script` (then answers 202).
async fn server(script: Vec<Reply>) -> (SocketAddr, Recorder) {
    let rec = Recorder::start().await;
    rec.script(script);
    (rec.addr, rec)
}

fn options(api: ApiVersion) -> RestOptions {
    RestOptions {
        api,
        timeout: Duration::from_secs(5),
        max_retries: 3,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        server_name: SERVER_NAME.into(),
        batch_sends: false,
    }
}

/// A client whose Endpoint has no port and whose `Port` points at the test server, so
/// every audience must come out without the port.
fn client(addr: SocketAddr, options: RestOptions) -> RestClient {
    herald::install_crypto();
    let endpoint = ServiceEndpoint::from_connection_string(&format!(
        "Endpoint=http://127.0.0.1;Port={};AccessKey={KEY};Version=1.0;",
        addr.port()
    ))
    .unwrap();
    RestClient::new(endpoint, options).unwrap()
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// What one operation must have put on the wire.
struct Expect {
    method: &'static str,
    path: &'static str,
    extra_query: Vec<(&'static str, &'static str)>,
    body: Option<Vec<u8>>,
}

fn expect(method: &'static str, path: &'static str) -> Expect {
    Expect {
        method,
        path,
        extra_query: Vec::new(),
        body: None,
    }
}

impl Expect {
    fn query(mut self, key: &'static str, value: &'static str) -> Self {
        self.extra_query.push((key, value));
        self
    }
    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

fn check(seen: &Recorded, want: &Expect, api: ApiVersion) {
    let label = format!("{} {}", want.method, want.path);
    assert_eq!(seen.method.as_str(), want.method, "{label}");
    assert_eq!(seen.path, want.path, "{label}");

    let mut query = Vec::new();
    if api == ApiVersion::V2022_06_01 {
        query.push(("api-version".to_string(), "2022-06-01".to_string()));
    }
    query.extend(
        want.extra_query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    assert_eq!(
        query_pairs(seen.query.as_deref().unwrap_or_default()),
        query,
        "{label}: query"
    );

    match &want.body {
        Some(body) => {
            assert_eq!(&seen.body, body, "{label}: body");
            assert_eq!(
                seen.headers.get("content-type").unwrap(),
                "application/json",
                "{label}"
            );
        }
        None => assert!(seen.body.is_empty(), "{label}: body"),
    }

    // The token verifies with the key, and its audience is the API path on the
    // Endpoint's host with no port, plus `?api-version=` in 2022-06-01 only.
    let audience = match api {
        ApiVersion::V2022_06_01 => {
            format!("http://127.0.0.1{}?api-version=2022-06-01", want.path)
        }
        ApiVersion::V1 => format!("http://127.0.0.1{}", want.path),
    };
    let claims = token::verify(&seen.bearer(), &[KEY], &audience).unwrap();
    assert_eq!(claims.aud, audience, "{label}: aud");
    assert_eq!(claims.nameid.as_deref(), Some(SERVER_NAME));
}

fn message(to: Recipient, excluded: &[&str]) -> Message {
    Message {
        hub: "Chat".into(),
        to,
        target: "newMessage".into(),
        arguments: vec![
            serde_json::json!("alice"),
            serde_json::json!({"text": "hi"}),
        ],
        excluded: excluded.iter().map(|s| s.to_string()).collect(),
    }
}

const USER: &str = "alice smith/1";
const GROUP: &str = "ops team?#%";
const CONN: &str = "conn-1";

/// Every operation and every recipient kind, in one pass over one server.
async fn run_every_operation(client: &RestClient) {
    for to in [
        Recipient::All,
        Recipient::User(USER.into()),
        Recipient::Group(GROUP.into()),
        Recipient::Connection(CONN.into()),
    ] {
        client.send(&message(to, &["a", "b c"])).await.unwrap();
    }
    client
        .add_connection_to_group("Chat", GROUP, CONN)
        .await
        .unwrap();
    client
        .remove_connection_from_group("Chat", GROUP, CONN)
        .await
        .unwrap();
    client
        .add_user_to_group("Chat", GROUP, USER, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    client
        .add_user_to_group("Chat", GROUP, USER, None)
        .await
        .unwrap();
    client
        .remove_user_from_group("Chat", GROUP, USER)
        .await
        .unwrap();
    client
        .remove_user_from_all_groups("Chat", USER)
        .await
        .unwrap();
    client
        .close_connection("Chat", CONN, Some("bye now"))
        .await
        .unwrap();
    client.close_connection("Chat", CONN, None).await.unwrap();
    assert!(client.connection_exists("Chat", CONN).await.unwrap());
    assert!(client.user_exists("Chat", USER).await.unwrap());
    assert!(client.group_exists("Chat", GROUP).await.unwrap());
    assert!(client.user_in_group("Chat", GROUP, USER).await.unwrap());
    client.health().await.unwrap();
}

/// The body every test send must carry: `Message::payload()` serialised, which is
/// `{"target":"newMessage","arguments":["alice",{"text":"hi"}]}` (key order is
/// serde_json's).
fn payload() -> Vec<u8> {
    let body = serde_json::to_vec(&message(Recipient::All, &[]).payload()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"target": "newMessage", "arguments": ["alice", {"text": "hi"}]})
    );
    body
}

#[tokio::test]
async fn every_operation_2022_06_01() {
    let (addr, rec) = server(vec![]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    run_every_operation(&client).await;
    client
        .remove_connection_from_all_groups("Chat", CONN)
        .await
        .unwrap();

    let want = [
        expect("POST", "/api/hubs/chat/:send")
            .query("excluded", "a")
            .query("excluded", "b c")
            .body(payload()),
        expect("POST", "/api/hubs/chat/users/alice%20smith%2F1/:send").body(payload()),
        expect("POST", "/api/hubs/chat/groups/ops%20team%3F%23%25/:send")
            .query("excluded", "a")
            .query("excluded", "b c")
            .body(payload()),
        expect("POST", "/api/hubs/chat/connections/conn-1/:send").body(payload()),
        expect(
            "PUT",
            "/api/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
        ),
        expect(
            "DELETE",
            "/api/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
        ),
        expect(
            "PUT",
            "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
        )
        .query("ttl", "60"),
        expect(
            "PUT",
            "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
        ),
        expect(
            "DELETE",
            "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
        ),
        expect("DELETE", "/api/hubs/chat/users/alice%20smith%2F1/groups"),
        expect("DELETE", "/api/hubs/chat/connections/conn-1").query("reason", "bye now"),
        expect("DELETE", "/api/hubs/chat/connections/conn-1"),
        expect("HEAD", "/api/hubs/chat/connections/conn-1"),
        expect("HEAD", "/api/hubs/chat/users/alice%20smith%2F1"),
        expect("HEAD", "/api/hubs/chat/groups/ops%20team%3F%23%25"),
        expect(
            "HEAD",
            "/api/hubs/chat/users/alice%20smith%2F1/groups/ops%20team%3F%23%25",
        ),
        expect("HEAD", "/api/health"),
        expect("DELETE", "/api/hubs/chat/connections/conn-1/groups"),
    ];
    let seen = rec.requests();
    assert_eq!(seen.len(), want.len());
    for (seen, want) in seen.iter().zip(&want) {
        check(seen, want, ApiVersion::V2022_06_01);
    }
    // `excluded` is repeated, not comma-joined.
    assert_eq!(
        seen[0].query.as_deref(),
        Some("api-version=2022-06-01&excluded=a&excluded=b%20c")
    );
}

#[tokio::test]
async fn every_operation_v1_legacy_paths() {
    let (addr, rec) = server(vec![]).await;
    let client = client(addr, options(ApiVersion::V1));
    run_every_operation(&client).await;
    assert!(matches!(
        client.remove_connection_from_all_groups("Chat", CONN).await,
        Err(RestError::Unsupported {
            api: ApiVersion::V1,
            ..
        })
    ));

    let want = [
        expect("POST", "/api/v1/hubs/chat")
            .query("excluded", "a")
            .query("excluded", "b c")
            .body(payload()),
        expect("POST", "/api/v1/hubs/chat/users/alice%20smith%2F1").body(payload()),
        expect("POST", "/api/v1/hubs/chat/groups/ops%20team%3F%23%25")
            .query("excluded", "a")
            .query("excluded", "b c")
            .body(payload()),
        expect("POST", "/api/v1/hubs/chat/connections/conn-1").body(payload()),
        expect(
            "PUT",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
        ),
        expect(
            "DELETE",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/connections/conn-1",
        ),
        expect(
            "PUT",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
        )
        .query("ttl", "60"),
        expect(
            "PUT",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
        ),
        expect(
            "DELETE",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
        ),
        expect("DELETE", "/api/v1/hubs/chat/users/alice%20smith%2F1/groups"),
        expect("DELETE", "/api/v1/hubs/chat/connections/conn-1").query("reason", "bye now"),
        expect("DELETE", "/api/v1/hubs/chat/connections/conn-1"),
        expect("HEAD", "/api/v1/hubs/chat/connections/conn-1"),
        expect("HEAD", "/api/v1/hubs/chat/users/alice%20smith%2F1"),
        expect("HEAD", "/api/v1/hubs/chat/groups/ops%20team%3F%23%25"),
        expect(
            "HEAD",
            "/api/v1/hubs/chat/groups/ops%20team%3F%23%25/users/alice%20smith%2F1",
        ),
        expect("HEAD", "/api/v1/health"),
    ];
    let seen = rec.requests();
    assert_eq!(seen.len(), want.len());
    for (seen, want) in seen.iter().zip(&want) {
        check(seen, want, ApiVersion::V1);
    }
}

#[tokio::test]
async fn any_2xx_is_success() {
    let (addr, rec) = server(vec![reply(200), reply(204), reply(202)]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    client
        .add_user_to_group("chat", "g", "u", None)
        .await
        .unwrap();
    client
        .remove_user_from_group("chat", "g", "u")
        .await
        .unwrap();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert_eq!(rec.requests().len(), 3);
}

#[tokio::test]
async fn existence_checks_map_404_to_false() {
    let not_found = |code: &str| reply(404).header("x-ms-error-code", code);
    let (addr, rec) = server(vec![
        not_found("Warning.Connection.NotExisted"),
        not_found("Warning.User.NotExisted"),
        not_found("Warning.Group.NotExisted"),
        not_found("Info.User.NotInGroup"),
        reply(404),
        reply(200),
        reply(401),
    ])
    .await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    assert!(!client.connection_exists("chat", "c").await.unwrap());
    assert!(!client.user_exists("chat", "u").await.unwrap());
    assert!(!client.group_exists("chat", "g").await.unwrap());
    assert!(!client.user_in_group("chat", "g", "u").await.unwrap());
    assert!(!client.group_exists("chat", "g").await.unwrap());
    assert!(client.group_exists("chat", "g").await.unwrap());
    let err = client.group_exists("chat", "g").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(rec.requests().len(), 7);
}

#[tokio::test]
async fn error_status_carries_code_and_body_excerpt() {
    let (addr, rec) = server(vec![
        reply(404)
            .header("x-ms-error-code", "Error.Connection.NotExisted")
            .body("  {\"code\":\"Error.Connection.NotExisted\",\"message\":\"gone\"}\n"),
    ])
    .await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    let err = client
        .add_connection_to_group("chat", "g", "c")
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.error_code(), Some("Error.Connection.NotExisted"));
    assert_eq!(
        err.to_string(),
        "PUT /api/hubs/chat/groups/g/connections/c answered HTTP 404 Not Found \
         (Error.Connection.NotExisted): \
         {\"code\":\"Error.Connection.NotExisted\",\"message\":\"gone\"}"
    );
    assert!(!err.to_string().contains(KEY));
    assert_eq!(rec.requests().len(), 1);
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let (addr, rec) = server(vec![reply(503)]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    client.send(&message(Recipient::All, &[])).await.unwrap();
    let seen = rec.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[0].path, seen[1].path);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (addr, rec) = server(vec![reply(429).header("retry-after", "1")]).await;
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.max_backoff = Duration::from_secs(5);
    let client = client(addr, opts);
    let started = Instant::now();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_is_capped_at_max_backoff() {
    let (addr, rec) = server(vec![reply(503).header("retry-after", "3600")]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    let started = Instant::now();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let (addr, rec) = server(vec![reply(500), reply(502), reply(503), reply(504)]).await;
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.max_retries = 2;
    let client = client(addr, opts);
    let err = client
        .send(&message(Recipient::All, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(rec.requests().len(), 3);
}

#[tokio::test]
async fn no_retry_on_4xx_other_than_429() {
    for status in [400, 401, 403, 404, 413] {
        let (addr, rec) = server(vec![reply(status).body("bad")]).await;
        let client = client(addr, options(ApiVersion::V2022_06_01));
        let err = client
            .send(&message(Recipient::All, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        assert_eq!(rec.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn timeouts_are_retried() {
    let (addr, rec) = server(vec![reply(202).delay(Duration::from_secs(3))]).await;
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.timeout = Duration::from_millis(300);
    let client = client(addr, opts);
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // Bind and drop to get a port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.max_retries = 2;
    let client = client(addr, opts);
    let err = client.health().await.unwrap_err();
    match &err {
        RestError::Transport { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "HEAD /api/health failed after 3 attempt(s): could not connect"
    );
}

#[tokio::test]
async fn bodies_over_1_mb_are_refused_before_sending() {
    let (addr, rec) = server(vec![]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    let mut big = message(Recipient::All, &[]);
    big.arguments = vec![serde_json::json!("x".repeat(MAX_BODY_BYTES))];
    let err = client.send(&big).await.unwrap_err();
    let size = serde_json::to_vec(&big.payload()).unwrap().len();
    assert!(matches!(err, RestError::TooLarge { size: s, limit: MAX_BODY_BYTES } if s == size));
    assert!(err.to_string().contains(&size.to_string()));
    assert!(rec.requests().is_empty());

    // Exactly at the limit is allowed.
    let overhead = size - MAX_BODY_BYTES;
    big.arguments = vec![serde_json::json!("x".repeat(MAX_BODY_BYTES - overhead))];
    client.send(&big).await.unwrap();
    assert_eq!(rec.requests()[0].body.len(), MAX_BODY_BYTES);
}

#[tokio::test]
async fn invalid_arguments_send_nothing() {
    let (addr, rec) = server(vec![]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    let invalid = |r: Result<(), RestError>| matches!(r, Err(RestError::InvalidArgument(_)));
    let mut m = message(Recipient::All, &[]);
    m.hub = "1chat".into();
    assert!(invalid(client.send(&m).await));
    m.hub = "chat/x".into();
    assert!(invalid(client.send(&m).await));
    m.hub = "chat".into();
    m.target = String::new();
    assert!(invalid(client.send(&m).await));
    assert!(invalid(
        client
            .send(&message(Recipient::User(String::new()), &[]))
            .await
    ));
    assert!(invalid(
        client
            .send(&message(Recipient::Group("  ".into()), &[]))
            .await
    ));
    assert!(invalid(
        client
            .send(&message(Recipient::Group("..".into()), &[]))
            .await
    ));
    assert!(invalid(
        client
            .send(&message(Recipient::Group("g".repeat(1025)), &[]))
            .await
    ));
    assert!(invalid(
        client.add_connection_to_group("chat", "g", "").await
    ));
    assert!(rec.requests().is_empty());
}

#[tokio::test]
async fn rest_base_from_server_endpoint_and_audience_from_endpoint() {
    let (addr, rec) = server(vec![]).await;
    herald::install_crypto();
    let endpoint = ServiceEndpoint::from_connection_string(&format!(
        "Endpoint=https://contoso.service.signalr.net;AccessKey={KEY};\
         ServerEndpoint=http://{addr}/"
    ))
    .unwrap();
    let client = RestClient::new(endpoint, options(ApiVersion::V2022_06_01)).unwrap();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    let seen = rec.requests();
    let jwt = seen[0].headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let aud = "https://contoso.service.signalr.net/api/hubs/chat/:send?api-version=2022-06-01";
    assert_eq!(token::verify(&jwt, &[KEY], aud).unwrap().aud, aud);
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    // Whole seconds only: three seconds ahead is at least two after rounding down.
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (addr, rec) = server(vec![reply(503).header("retry-after", &at)]).await;
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.max_backoff = Duration::from_secs(10);
    let client = client(addr, opts);
    let started = Instant::now();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_http_date_is_capped_at_max_backoff() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let (addr, rec) = server(vec![reply(429).header("retry-after", &at)]).await;
    let client = client(addr, options(ApiVersion::V2022_06_01));
    let started = Instant::now();
    client.send(&message(Recipient::All, &[])).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_http_date_in_the_past_retries_at_once() {
    let (addr, rec) = server(vec![
        reply(503).header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ])
    .await;
    let mut opts = options(ApiVersion::V2022_06_01);
    // A fallback to the computed backoff would be visible: up to an hour.
    opts.base_backoff = Duration::from_secs(3600);
    opts.max_backoff = Duration::from_secs(3600);
    let client = client(addr, opts);
    tokio::time::timeout(
        Duration::from_secs(30),
        client.send(&message(Recipient::All, &[])),
    )
    .await
    .expect("a past date means retry now, not after the backoff")
    .unwrap();
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn final_error_carries_the_services_retry_after() {
    let (addr, _rec) = server(vec![
        reply(503).header("retry-after", "7"),
        reply(503).header("retry-after", "7"),
    ])
    .await;
    let mut opts = options(ApiVersion::V2022_06_01);
    opts.max_retries = 1;
    opts.max_backoff = Duration::from_millis(10);
    let client = client(addr, opts);
    let err = client
        .send(&message(Recipient::All, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

/// `:sendBatch` (the embedded service's extension): one POST per batch, the audience and
/// token of any call, and a JSON list of the messages in order, each with its id and
/// recipient; `excluded` only where it applies.
#[tokio::test]
async fn a_batch_is_one_post_of_a_json_list() {
    let (addr, rec) = server(vec![]).await;
    let client = client(
        addr,
        RestOptions {
            batch_sends: true,
            ..options(ApiVersion::V2022_06_01)
        },
    );
    assert!(client.batch_sends());
    let all = message(Recipient::All, &["a"]);
    let user = message(Recipient::User("alice smith/1".into()), &["ignored"]);
    let group = message(Recipient::Group("ops".into()), &["b"]);
    client
        .send_batch("chat", &[(&all, "m-1"), (&user, "m-2"), (&group, "m-3")])
        .await
        .unwrap();
    let arguments = serde_json::json!(["alice", {"text": "hi"}]);
    let body = serde_json::to_vec(&serde_json::json!([
        {"id": "m-1", "target": "newMessage", "arguments": arguments, "excluded": ["a"]},
        {"id": "m-2", "target": "newMessage", "arguments": arguments, "user": "alice smith/1"},
        {"id": "m-3", "target": "newMessage", "arguments": arguments, "group": "ops", "excluded": ["b"]},
    ]))
    .unwrap();
    let seen = rec.requests();
    assert_eq!(seen.len(), 1);
    check(
        &seen[0],
        &expect("POST", "/api/hubs/chat/:sendBatch").body(body),
        ApiVersion::V2022_06_01,
    );
    // A message of another hub, or a bad name, is refused before anything is sent.
    let other = Message {
        hub: "other".into(),
        ..message(Recipient::All, &[])
    };
    assert!(client.send_batch("chat", &[(&other, "x")]).await.is_err());
    let bad = message(Recipient::User(String::new()), &[]);
    assert!(client.send_batch("chat", &[(&bad, "y")]).await.is_err());
    assert_eq!(rec.requests().len(), 1);
}
