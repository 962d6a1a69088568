//! The daemon's HTTP API in-process: `router()` built over a real `AppState` (a `LiveConfig`,
//! a `RestClient`, an outbox over a store in a temp dir) and called with `oneshot`, no socket:
//! negotiate answers, every status-route error, a 202 whose message is in the store,
//! `/healthz`, `/readyz`, history 400s and a retained 404.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use herald::config::SignalrConfig;
use herald::config::live::LiveConfig;
use herald::daemon::endpoint::rest_options;
use herald::daemon::http::{AppState, router};
use herald::daemon::outbox::Outbox;
use herald::daemon::reload::ReloadLog;
use herald::signalr::rest::RestClient;
use herald::store::Store;
use serde_json::{Value, json};
use support::{ACCESS_KEY, API_KEY, DaemonYaml};
use tower::ServiceExt;

/// Nothing listens at port 9 (discard): no request here reaches the service except the
/// readiness probe, which then reports it unhealthy.
fn base() -> DaemonYaml {
    DaemonYaml::connection_string(&format!(
        "Endpoint=http://127.0.0.1;Port=9;AccessKey={ACCESS_KEY};Version=1.0;"
    ))
}

/// The router over `yaml`, its store (to read back what was accepted) and the temp dir.
struct App {
    router: Router,
    store: Store,
    _dir: tempfile::TempDir,
}

impl App {
    fn new(yaml: &DaemonYaml) -> App {
        herald::install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notifications.yaml");
        let cfg = herald::config::load_str(&path, &yaml.build(), &|_| None).expect("config");
        let SignalrConfig::Azure(endpoints) = &cfg.signalr else {
            panic!("the test config uses a connection string");
        };
        let rest =
            RestClient::with_endpoints((**endpoints).clone(), rest_options(&cfg)).expect("client");
        let store = Store::open(&dir.path().join("state"), cfg.state.synchronous).expect("store");
        let timeout = cfg.http.request_timeout;
        let live = LiveConfig::new(cfg);
        let outbox = Outbox::new(store.clone());
        let limiters: Arc<herald::daemon::http::rate_limit::RateLimiters> = Arc::default();
        let state = AppState {
            reloads: Arc::new(ReloadLog::new(live.current())),
            live,
            rest: rest.clone(),
            service_kind: "azure",
            metrics: None,
            limiters: limiters.clone(),
            outbox: outbox.clone(),
            events: herald::daemon::events::Events {
                rest,
                store: store.clone(),
                outbox: Some(outbox),
                limiters,
                presence: Arc::default(),
            },
        };
        App {
            router: router(state, timeout),
            store,
            _dir: dir,
        }
    }

    /// One request; the status, headers and body (JSON, or `Value::Null` when empty).
    async fn call(&self, request: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (parts.status, parts.headers, value)
    }

    /// An error answer: its status and body, checked to be `{error, detail}`.
    async fn error(&self, request: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
        let (status, headers, body) = self.call(request).await;
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{status}: {body}"
        );
        (status, headers, body)
    }
}

fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

/// `POST path` with `body` as JSON and, when given, the API key.
fn post_json(path: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut r = request(Method::POST, path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        r = r.header("x-api-key", key);
    }
    r.body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn negotiate_answers_url_and_token_and_401_when_a_user_id_is_required() {
    let app = App::new(&base());
    let (status, _, body) = app
        .call(
            request(Method::POST, "/api/negotiate")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    assert_eq!(
        body["url"], "http://127.0.0.1:9/client/?hub=notifications",
        "{body}"
    );
    let token = body["accessToken"].as_str().expect("accessToken");
    let claims =
        herald::signalr::token::verify(token, &[ACCESS_KEY], body["url"].as_str().expect("url"))
            .expect("token verifies");
    assert_eq!(claims.user_id(), None);
    let (status, _, _) = app
        .call(
            request(Method::GET, "/api/negotiate")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "GET negotiates too");

    let app = App::new(&base().hub(
        "    negotiate:\n      user_id:\n        bearer: {secret: jwt-secret-for-tests, issuer: https://idp.test}\n        required: true",
    ));
    let (status, _, body) = app
        .error(
            request(Method::POST, "/api/negotiate")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn every_status_route_error_and_nothing_is_stored() {
    let app = App::new(
        &base()
            .arguments(r#"["{{ status }}"]"#)
            .http("  body_limit: 1KiB\n"),
    );
    let ok = json!({"status": "up"});
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post_json("/api/status", None, &ok),
            StatusCode::UNAUTHORIZED,
            "no key",
        ),
        (
            post_json("/api/status", Some("wrong"), &ok),
            StatusCode::UNAUTHORIZED,
            "wrong key",
        ),
        (
            request(Method::POST, "/api/status")
                .header("x-api-key", API_KEY)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            post_json("/api/status", Some(API_KEY), &json!([1, 2])),
            StatusCode::BAD_REQUEST,
            "not an object",
        ),
        (
            post_json("/api/status", Some(API_KEY), &json!({})),
            StatusCode::BAD_REQUEST,
            "missing field",
        ),
        (
            request(Method::POST, "/api/status")
                .header("x-api-key", API_KEY)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("a=1"))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "form body",
        ),
        (
            post_json(
                "/api/status",
                Some(API_KEY),
                &json!({"status": "x".repeat(2048)}),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "over body_limit",
        ),
        (
            request(Method::POST, "/api/status")
                .header("x-api-key", API_KEY)
                .header("idempotency-key", "")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(ok.to_string()))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "empty Idempotency-Key",
        ),
        (
            post_json("/api/nothing-here", Some(API_KEY), &ok),
            StatusCode::NOT_FOUND,
            "no route",
        ),
    ];
    for (req, want, what) in cases {
        let (status, _, body) = app.error(req).await;
        assert_eq!(status, want, "{what}: {body}");
        if what == "missing field" {
            let detail = body["detail"].as_str().unwrap_or("");
            assert!(detail.contains("status"), "{what}: {body}");
        }
        if what == "not an object" {
            let detail = body["detail"].as_str().unwrap_or("");
            assert!(detail.contains("JSON object"), "{what}: {body}");
        }
    }
    let (status, headers, _) = app
        .error(
            request(Method::GET, "/api/status")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");
    let (status, headers, _) = app
        .error(
            request(Method::DELETE, "/api/negotiate")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.contains_key(header::ALLOW), "{headers:?}");

    let pending = app.store.pending(0, 100).await.expect("pending");
    assert!(pending.is_empty(), "no error case may store: {pending:?}");
}

#[tokio::test]
async fn an_accepted_status_is_in_the_store_with_its_id() {
    let app = App::new(&base().arguments(r#"["{{ status }}", "{{ id }}"]"#));
    let (status, _, body) = app
        .call(post_json(
            "/api/status",
            Some(API_KEY),
            &json!({"status": "degraded"}),
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let pending = app.store.pending(0, 100).await.expect("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let stored = &pending[0];
    assert_eq!(stored.id, id);
    assert_eq!(stored.message.hub, "notifications");
    assert_eq!(stored.message.target, "statusUpdate");
    assert_eq!(stored.message.arguments, vec![json!("degraded"), json!(id)]);
    assert_eq!(stored.message.to, herald::message::Recipient::All);
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_service() {
    let app = App::new(&base());
    let (status, _, h) = app
        .call(
            request(Method::GET, "/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["config"]["generation"], 1, "{h}");
    assert_eq!(h["service"], "azure", "{h}");
    // Nothing listens at the service's port: reported, yet herald stays ready (the outbox
    // keeps what is accepted).
    let (status, _, r) = tokio::time::timeout(
        Duration::from_secs(30),
        app.call(request(Method::GET, "/readyz").body(Body::empty()).unwrap()),
    )
    .await
    .expect("readyz answers");
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["service"]["healthy"], false, "{r}");
    assert_eq!(r["outbox"]["depth"], 0, "{r}");
}

#[tokio::test]
async fn history_rejects_a_bad_limit_and_a_retained_route_is_404_before_a_send() {
    let app = App::new(
        &base()
            .hub("    history: {keep: 10, max_age: 1h}")
            .status_route("    retain: true\n"),
    );
    for query in ["?limit=0", "?limit=1001", "?limit=ten", "?limit=-1"] {
        let path = format!("/api/notifications/history{query}");
        let (status, _, body) = app
            .error(request(Method::GET, &path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, _, body) = app
        .call(
            request(Method::GET, "/api/notifications/history?limit=5")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messages"], json!([]), "{body}");

    let (status, _, body) = app
        .error(
            request(Method::GET, "/api/status")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
