//! `herald run` against Azure SignalR Service, played by a recording stand-in of its REST API:
//! negotiate answers and tokens, status routes with every error case, targeting, schedules,
//! and `herald send` / `herald token`, all checked against the documented wire format.

mod support;

use std::time::Duration;

use herald::signalr::token;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::http::error_of;
use support::{ACCESS_KEY, Daemon, DaemonYaml, Recorder, claims};

const KEY: &str = support::API_KEY;

/// The base config with a richer `status` template, an `order` template and routes to a
/// user, a group and a connection; `extra` is written after the routes.
fn config(extra: &str) -> String {
    DaemonYaml::azure()
        .arguments(
            r#"
      - timestamp: "{{ now }}"
        status: "{{ status | default('System operational') }}"
        message: "{{ message | default('All services running normally') }}""#,
        )
        .templates(
            r#"  order:
    target: orderStatus
    arguments:
      - "{{ params.id }}"
      - "{{ status }}"
      - "{{ count }}"
"#,
        )
        .routes(&format!(
            r#"  to-user:
    path: /api/users/{{user}}/orders/{{id}}
    hub: notifications
    template: order
    to: {{user: "{{{{ params.user }}}}"}}
    auth: {{api_key: {KEY}}}
  to-group:
    method: PUT
    path: /api/groups/{{id}}
    hub: notifications
    template: order
    to: {{group: "orders-{{{{ params.id }}}}"}}
  to-connection:
    path: /api/connections/{{id}}
    hub: notifications
    template: order
    to: {{connection: "{{{{ params.id }}}}"}}
"#
        ))
        .section(extra)
        .build()
}

async fn start(extra: &str) -> (Recorder, Daemon) {
    support::start_with_recorder(&config(extra)).await
}

/// Verify a REST request's bearer token as Azure would and check the audience has no port.
fn assert_rest_token(req: &support::Recorded) {
    let t = req.bearer();
    let expected = format!("http://127.0.0.1{}", req.path);
    let c = token::verify(&t, &[ACCESS_KEY], &expected)
        .expect("REST token verifies with the access key");
    assert!(
        c.aud.starts_with("http://127.0.0.1/api/"),
        "audience must not carry the port: {}",
        c.aud
    );
    let raw = claims(&t);
    assert_eq!(
        raw["exp"].as_u64().unwrap() - raw["iat"].as_u64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn negotiate_returns_client_url_and_verifiable_token() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    for method in [reqwest::Method::POST, reqwest::Method::GET] {
        let r = http
            .request(method, d.url("/api/negotiate"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        let url = body["url"].as_str().unwrap();
        assert_eq!(
            url,
            format!(
                "http://127.0.0.1:{}/client/?hub=notifications",
                rec.addr.port()
            )
        );
        let t = body["accessToken"].as_str().unwrap();
        let c = token::verify(t, &[ACCESS_KEY], url).expect("token verifies");
        assert_eq!(c.aud, "http://127.0.0.1/client/?hub=notifications");
        let raw = claims(t);
        let ttl = raw["exp"].as_u64().unwrap() - raw["iat"].as_u64().unwrap();
        assert_eq!(ttl, 3600);
        assert!(raw.get("asrs.s.uid").is_none(), "anonymous by default");
        assert_eq!(
            body.as_object().unwrap().len(),
            2,
            "exactly url and accessToken: {body}"
        );
    }
}

#[tokio::test]
async fn status_route_sends_exactly_one_rest_message() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    let r = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({"status": "Degraded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert!(
        uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok(),
        "{body}"
    );

    let sends = rec.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sends = if rec.sends().len() > sends.len() {
        rec.sends()
    } else {
        sends
    };
    assert_eq!(sends.len(), 1, "{sends:?}");
    let s = &sends[0];
    assert_eq!(s.method, reqwest::Method::POST);
    assert_eq!(s.path, "/api/hubs/notifications/:send");
    assert_eq!(s.query.as_deref(), Some("api-version=2022-06-01"));
    assert_eq!(s.headers["content-type"], "application/json");
    let msg = s.json();
    assert_eq!(msg["target"], "statusUpdate");
    let arg = &msg["arguments"][0];
    assert_eq!(arg["status"], "Degraded");
    assert_eq!(arg["message"], "All services running normally");
    let ts = arg["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "{ts}"
    );
    assert_eq!(
        msg.as_object().unwrap().len(),
        2,
        "payload is {{target, arguments}}: {msg}"
    );
    assert_rest_token(s);
}

#[tokio::test]
async fn targets_map_to_rest_paths_and_keep_json_types() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    let body = json!({"status": "shipped", "count": 3});
    let r = http
        .post(d.url("/api/users/alice%20b/orders/7"))
        .header("X-API-Key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .put(d.url("/api/groups/42"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .post(d.url("/api/connections/conn-1"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let sends = rec.wait_for(3, Duration::from_secs(5)).await;
    let paths: Vec<&str> = sends.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/hubs/notifications/users/alice%20b/:send",
            "/api/hubs/notifications/groups/orders-42/:send",
            "/api/hubs/notifications/connections/conn-1/:send",
        ]
    );
    for s in &sends {
        assert_eq!(s.query.as_deref(), Some("api-version=2022-06-01"));
        assert_rest_token(s);
        assert_eq!(s.json()["target"], "orderStatus");
        assert_eq!(s.json()["arguments"][1], "shipped");
        assert_eq!(
            s.json()["arguments"][2],
            3,
            "a lone expression keeps its JSON type"
        );
    }
    assert_eq!(sends[0].json()["arguments"][0], "7");
    assert_eq!(sends[1].json()["arguments"][0], "42");
}

#[tokio::test]
async fn status_route_errors() {
    let extra = "  small:\n    path: /api/small\n    hub: notifications\n    template: status\n";
    let (rec, d) = start(extra).await;
    let http = reqwest::Client::new();
    let post = |path: &str| http.post(d.url(path));

    let (s, b) = error_of(post("/api/status").json(&json!({})).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, _) = error_of(
        post("/api/status")
            .header("X-API-Key", "wrong")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, b) = error_of(
        post("/api/status")
            .header("X-API-Key", KEY)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = error_of(
        post("/api/status")
            .header("X-API-Key", KEY)
            .body("not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = error_of(
        post("/api/status")
            .header("X-API-Key", KEY)
            .json(&json!([1, 2]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["detail"].as_str().unwrap().contains("JSON object"), "{b}");
    let (s, _) = error_of(
        post("/api/status")
            .header("X-API-Key", KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A template variable without a default is required.
    let (s, b) = error_of(
        post("/api/connections/c1")
            .json(&json!({"count": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `status`"),
        "{b}"
    );

    let (s, _) = error_of(post("/api/nothing-here").send().await.unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = http.get(d.url("/api/status")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    let (s, _) = error_of(r).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = error_of(http.delete(d.url("/api/negotiate")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    let big = json!({"status": "x".repeat(70 * 1024)});
    let (s, _) = error_of(post("/api/small").json(&big).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    assert!(
        rec.sends().is_empty(),
        "no error case may send: {:?}",
        rec.sends()
    );

    // The service refuses everything: the message is still accepted (it is stored), and
    // retried until the service takes it.
    rec.respond_with(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let r = post("/api/small").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let sends = rec.wait_for(2, Duration::from_secs(10)).await;
    assert!(sends.len() >= 2, "retried: {}", sends.len());
}

#[tokio::test]
async fn every_second_schedule_fires_on_distinct_seconds() {
    let extra = "schedules:\n  tick:\n    cron: '* * * * * *'\n    hub: notifications\n    template: status\n";
    let (rec, _d) = start(extra).await;
    let sends = rec.wait_for(2, Duration::from_secs(3)).await;
    assert!(sends.len() >= 2, "fired {} times in 3 s", sends.len());
    let stamps: Vec<String> = sends
        .iter()
        .map(|s| {
            s.json()["arguments"][0]["timestamp"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for w in stamps.windows(2) {
        assert_ne!(
            w[0][..19],
            w[1][..19],
            "two fires in one second: {stamps:?}"
        );
        assert!(w[0].ends_with(".000Z"), "fires on the second: {stamps:?}");
    }
    for s in &sends {
        assert_eq!(s.path, "/api/hubs/notifications/:send");
        assert_rest_token(s);
    }
}

#[tokio::test]
async fn negotiate_user_id_from_header_and_bearer() {
    let yaml = r#"
http: {listen: 127.0.0.1:0}
hubs:
  a:
    negotiate:
      user_id: {header: x-ms-client-principal-id}
  b:
    negotiate:
      token_ttl: 10m
      user_id:
        bearer: {secret: jwt-secret-for-tests, issuer: https://idp.test}
        required: true
"#;
    let (_rec, d) = support::start_with_recorder(yaml).await;
    let http = reqwest::Client::new();
    let b: Value = http
        .post(d.url("/api/a/negotiate"))
        .header("x-ms-client-principal-id", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims(b["accessToken"].as_str().unwrap())["asrs.s.uid"],
        "alice"
    );

    let (s, _) = error_of(http.post(d.url("/api/b/negotiate")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "user id required");
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let make = |iss: &str, key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "bob", "iss": iss, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let good = make("https://idp.test", b"jwt-secret-for-tests");
    let b: Value = http
        .post(d.url("/api/b/negotiate"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = claims(b["accessToken"].as_str().unwrap());
    assert_eq!(c["asrs.s.uid"], "bob");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
    for bad in [
        make("https://evil", b"jwt-secret-for-tests"),
        make("https://idp.test", b"forged"),
    ] {
        let (s, _) = error_of(
            http.post(d.url("/api/b/negotiate"))
                .bearer_auth(bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn health_ready_and_cors() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    let h: Value = http
        .get(d.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["config"]["generation"], 1);
    assert_eq!(h["service"], "azure");
    let r = http.get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        rec.requests()
            .iter()
            .any(|r| r.method == reqwest::Method::HEAD && r.path == "/api/health")
    );
    // An unhealthy service does not make herald unready: the outbox keeps what is accepted.
    rec.respond_with(reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let r = http.get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["service"]["healthy"], false, "{ready}");
    // No CORS origins configured: no CORS headers.
    let r = http
        .post(d.url("/api/negotiate"))
        .header("origin", "https://app.test")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("herald_negotiate_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_send_and_token_use_the_same_client() {
    herald::install_crypto();
    let rec = Recorder::start().await;
    let cs = rec.connection_string();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n.yaml");
    std::fs::write(&f, "hubs: {notifications: {}}\n").unwrap();
    let path = f.to_str().unwrap().to_string();
    let env = [("AzureSignalRConnectionString", cs.as_str())];
    let (code, out, err) = tokio::task::block_in_place(|| {
        support::herald(
            &[
                "send",
                "-c",
                &path,
                "--hub",
                "notifications",
                "--target",
                "notify",
                "--user",
                "alice",
                "{\"n\":1}",
                "hello",
            ],
            &env,
        )
    });
    assert_eq!(code, Some(0), "{out}{err}");
    let sends = rec.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(sends[0].path, "/api/hubs/notifications/users/alice/:send");
    assert_eq!(
        sends[0].json(),
        json!({"target": "notify", "arguments": [{"n": 1}, "hello"]})
    );
    assert_rest_token(&sends[0]);

    let (code, out, err) = tokio::task::block_in_place(|| {
        support::herald(
            &[
                "token",
                "-c",
                &path,
                "--hub",
                "notifications",
                "--user",
                "bob",
                "--ttl",
                "5m",
            ],
            &env,
        )
    });
    assert_eq!(code, Some(0), "{err}");
    let info: Value = serde_json::from_str(out.trim()).unwrap();
    let url = info["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!(
            "http://127.0.0.1:{}/client/?hub=notifications",
            rec.addr.port()
        )
    );
    let c = token::verify(info["accessToken"].as_str().unwrap(), &[ACCESS_KEY], url).unwrap();
    assert_eq!(c.user_id(), Some("bob"));
    assert_eq!(c.exp - c.iat.unwrap(), 300);
}

#[tokio::test]
async fn logs_never_contain_secrets() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(d.url("/api/negotiate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = token["accessToken"].as_str().unwrap().to_string();
    let _ = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({"status": "ok"}))
        .send()
        .await
        .unwrap();
    let _ = http
        .post(d.url("/api/status"))
        .header("X-API-Key", "wrong-key-guess")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    rec.respond_with(reqwest::StatusCode::UNAUTHORIZED);
    let _ = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    rec.respond_with(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let _ = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let rest_tokens: Vec<String> = rec
        .requests()
        .iter()
        .filter(|r| r.headers.contains_key("authorization"))
        .map(|r| r.bearer())
        .collect();
    assert!(!rest_tokens.is_empty());
    // The outbox logs its retry after the REST client's own retries: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d
        .logs_with("outbox: the service did not take the message; retrying")
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no retry was logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = d
        .logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("message accepted"),
        "the log was captured: {logs}"
    );
    assert!(
        logs.contains("the service did not take the message"),
        "failures were logged: {logs}"
    );
    for secret in [ACCESS_KEY, KEY, access_token.as_str()]
        .into_iter()
        .chain(rest_tokens.iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "a secret reached the log: {secret}");
    }
    assert!(
        logs.contains("AccessKey=***"),
        "the connection string is logged redacted: {logs}"
    );
}

/// The outbox's warn line for message `id`, once the service refused it.
async fn retry_warning(d: &Daemon, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = d
            .logs_with("outbox: the service did not take the message; retrying")
            .into_iter()
            .filter(|l| l["id"] == id)
            .collect();
        if let Some(line) = lines.first() {
            assert_eq!(line["level"], "WARN");
            return line.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry warning for {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The 202 a caller gets names nothing of the service: only the message id.
fn assert_accepted_names_nothing_internal(
    headers: &reqwest::header::HeaderMap,
    body: &str,
    port: u16,
) -> String {
    let v: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{body}");
    let mut shown = body.to_string();
    for (name, value) in headers {
        shown.push_str(&format!("\n{name}: {}", value.to_str().unwrap_or("")));
    }
    for secret in [
        "127.0.0.1",
        &port.to_string(),
        ACCESS_KEY,
        "http://",
        "/api/hubs",
    ] {
        assert!(
            !shown.contains(secret),
            "the answer shows `{secret}`: {shown}"
        );
    }
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn a_refusing_service_does_not_fail_the_route_and_gets_the_message_when_it_recovers() {
    let (rec, d) = start("").await;
    let http = reqwest::Client::new();
    rec.respond_with(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let r = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({"status": "Degraded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    let id = assert_accepted_names_nothing_internal(&headers, &body, rec.addr.port());
    let line = retry_warning(&d, &id).await;
    assert!(
        line["error"].as_str().unwrap().contains("HTTP 500"),
        "the log has the cause: {line}"
    );
    // The service recovers: the waiting message goes out.
    rec.respond_with(reqwest::StatusCode::ACCEPTED);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health: Value = http
            .get(d.url("/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["outbox"]["depth"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox not drained: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempts = rec
        .requests()
        .into_iter()
        .filter(|r| {
            r.headers
                .get("x-herald-message-id")
                .is_some_and(|v| v == id.as_str())
        })
        .count();
    assert!(
        attempts >= 2,
        "retried with the same message id: {attempts}"
    );
}

#[tokio::test]
async fn an_unreachable_service_does_not_fail_the_route_and_the_log_has_the_cause() {
    herald::install_crypto();
    // A port nobody listens on.
    let port = support::free_port();
    let cs = format!("Endpoint=http://127.0.0.1;Port={port};AccessKey={ACCESS_KEY};Version=1.0;");
    let yaml = config("");
    let d = tokio::task::spawn_blocking(move || {
        Daemon::start(&yaml, &[("AzureSignalRConnectionString", cs.as_str())])
    })
    .await
    .unwrap();
    let r = reqwest::Client::new()
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    let id = assert_accepted_names_nothing_internal(&headers, &body, port);
    let line = retry_warning(&d, &id).await;
    let cause = line["error"].as_str().unwrap();
    assert!(
        cause.contains(&port.to_string()),
        "the log has the full cause, address included: {line}"
    );
    assert!(!cause.contains(ACCESS_KEY), "{line}");
}

#[tokio::test]
async fn api_version_v1_calls_the_legacy_paths() {
    let extra = "signalr: {api_version: v1}\n";
    let (rec, d) = start(extra).await;
    let http = reqwest::Client::new();
    let r = http
        .post(d.url("/api/status"))
        .header("X-API-Key", KEY)
        .json(&json!({"status": "Degraded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .post(d.url("/api/users/bob/orders/7"))
        .header("X-API-Key", KEY)
        .json(&json!({"status": "shipped", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .put(d.url("/api/groups/9"))
        .json(&json!({"status": "s", "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let sends = rec.wait_for(3, Duration::from_secs(5)).await;
    let paths: Vec<(&str, &str, Option<&str>)> = sends
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.query.as_deref()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/api/v1/hubs/notifications", None),
            ("POST", "/api/v1/hubs/notifications/users/bob", None),
            ("POST", "/api/v1/hubs/notifications/groups/orders-9", None),
        ]
    );
    for s in &sends {
        // The v1 audience is the path alone, without `?api-version=`.
        assert_rest_token(s);
        assert!(s.json()["target"].is_string());
    }
    // Health probes, if any, use the v1 path too.
    for r in rec.requests() {
        assert!(r.path.starts_with("/api/v1/"), "{} {}", r.method, r.path);
    }
}
