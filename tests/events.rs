//! Client events (`events:`): golden upstream requests, as Azure SignalR Service sends them
//! (facts §5: `X-ASRS-*` headers, `X-ASRS-Signature` = HMAC-SHA256 of the connection id by the
//! access key), against `herald run` with the recording stand-in for Azure's REST API: bad
//! signatures, retained statuses to new connections, acks, groups, relays, presence and
//! refusals as Completion errors.

mod support;

use std::time::Duration;

use herald::signalr::protocol::{CompletionResult, Headers, HubMessage, json as hub_json, msgpack};
use herald::signalr::upstream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ACCESS_KEY, Daemon, Recorder};

const KEY: &str = "0123456789abcdef0123456789abcdef-test-key";

fn config() -> String {
    format!(
        r#"
http:
  listen: 127.0.0.1:0
hubs:
  notifications:
    negotiate:
      user_id: {{ header: x-user }}
templates:
  status:
    target: statusUpdate
    arguments: ["{{{{ status }}}}"]
  chat:
    target: chat
    arguments: ["{{{{ user }}}}", "{{{{ args[1] }}}}"]
routes:
  status:
    path: /api/status
    hub: notifications
    template: status
    retain: true
    auth: {{ api_key: {KEY} }}
events:
  notifications:
    connected: {{ send_retained: true }}
    methods:
      ack:   {{ ack: true }}
      join:  {{ join_group: "orders-*" }}
      leave: {{ leave_group: "orders-*" }}
      mine:  {{ join_group: "mine-{{{{ user }}}}" }}
      say:   {{ relay: {{ template: chat, to: {{ group: "{{{{ args[0] }}}}" }} }} }}
      shout: {{ relay: {{ template: chat }}, rate_limit: {{ requests: 1, per: 1m }} }}
"#
    )
}

struct Up<'a> {
    daemon: &'a Daemon,
    http: reqwest::Client,
}

impl Up<'_> {
    fn request(
        &self,
        connection: &str,
        user: Option<&str>,
        category: &str,
        event: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(self.daemon.url(upstream::FUNCTIONS_PATH))
            .header("X-ASRS-Connection-Id", connection)
            .header("X-ASRS-Hub", "notifications")
            .header("X-ASRS-Category", category)
            .header("X-ASRS-Event", event)
            .header("X-ASRS-Signature", upstream::signature(&[key], connection))
            .header("X-ASRS-Client-Query", "?hub=notifications");
        if let Some(u) = user {
            r = r.header("X-ASRS-User-Id", u);
        }
        r
    }

    async fn connected(&self, connection: &str, user: Option<&str>) -> StatusCode {
        self.request(connection, user, "connections", "connected", ACCESS_KEY)
            .header("content-type", "application/json")
            .body(r#"{"type":10}"#)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Invoke `target` as `connection`; the Completion the service would hand the client.
    async fn invoke(
        &self,
        connection: &str,
        user: Option<&str>,
        target: &str,
        args: Value,
    ) -> CompletionResult {
        let body = json!({"type": 1, "invocationId": "1", "target": target, "arguments": args});
        let response = self
            .request(connection, user, "messages", target, ACCESS_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(bytes.last(), Some(&0x1e), "framed: {bytes:?}");
        match hub_json::decode_frame(&bytes).unwrap().remove(0) {
            HubMessage::Completion {
                invocation_id,
                result,
                ..
            } => {
                assert_eq!(invocation_id, "1");
                result
            }
            other => panic!("not a Completion: {other:?}"),
        }
    }
}

fn error_of(result: CompletionResult) -> String {
    match result {
        CompletionResult::Error(e) => e,
        other => panic!("expected an error Completion, got {other:?}"),
    }
}

fn value_of(result: CompletionResult) -> Value {
    match result {
        CompletionResult::Value(v) => v,
        other => panic!("expected a result Completion, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_upstream_requests_are_verified_and_answered_with_completions() {
    let recorder = Recorder::start().await;
    let daemon = Daemon::start(
        &config(),
        &[(
            "AzureSignalRConnectionString",
            &recorder.connection_string(),
        )],
    );
    let up = Up {
        daemon: &daemon,
        http: reqwest::Client::new(),
    };
    let t = Duration::from_secs(20);

    // A retained status, delivered by the outbox.
    let posted: Value = up
        .http
        .post(daemon.url("/api/status"))
        .header("x-api-key", KEY)
        .json(&json!({"status": "degraded"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = posted["id"].as_str().unwrap().to_string();
    recorder.wait_for(1, t).await;

    // Wrong key, missing signature, another connection's signature: 401, nothing sent.
    let bad = up
        .request(
            "c1",
            Some("alice"),
            "connections",
            "connected",
            "not-the-key",
        )
        .body(r#"{"type":10}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let missing = up
        .http
        .post(daemon.url(upstream::FUNCTIONS_PATH))
        .header("X-ASRS-Connection-Id", "c1")
        .header("X-ASRS-Hub", "notifications")
        .header("X-ASRS-Category", "connections")
        .header("X-ASRS-Event", "connected")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let other = up
        .http
        .post(daemon.url(upstream::FUNCTIONS_PATH))
        .header("X-ASRS-Connection-Id", "c2")
        .header("X-ASRS-Hub", "notifications")
        .header("X-ASRS-Category", "connections")
        .header("X-ASRS-Event", "connected")
        .header("X-ASRS-Signature", upstream::signature(&[ACCESS_KEY], "c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        401,
        "a signature is bound to its connection id"
    );
    assert_eq!(recorder.sends().len(), 1, "a refused event sends nothing");

    // connected: the retained status goes to that connection before the answer.
    assert_eq!(up.connected("c1", Some("alice")).await, 200);
    let sends = recorder.sends();
    assert_eq!(sends.len(), 2, "{sends:?}");
    let to_c1 = &sends[1];
    assert!(
        to_c1.path.contains("/hubs/notifications/connections/c1"),
        "{}",
        to_c1.path
    );
    assert_eq!(to_c1.json()["target"], "statusUpdate");
    assert_eq!(to_c1.json()["arguments"], json!(["degraded"]));

    // ack: recorded, visible at /api/messages/{id} (negotiate's caller check), counted.
    let acked = value_of(up.invoke("c1", Some("alice"), "ack", json!([id])).await);
    assert_eq!(acked["acknowledged"], true);
    let unknown = error_of(up.invoke("c1", Some("alice"), "ack", json!(["nope"])).await);
    assert!(unknown.contains("not known"), "{unknown}");
    let acks: Value = up
        .http
        .get(daemon.url(&format!("/api/messages/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acks["id"], id.as_str());
    assert_eq!(acks["hub"], "notifications");
    assert_eq!(acks["acks"].as_array().unwrap().len(), 1, "{acks}");
    assert_eq!(acks["acks"][0]["user"], "alice");
    assert_eq!(acks["acks"][0]["connection"], "c1");
    assert!(acks["acks"][0]["time"].as_str().unwrap().ends_with('Z'));
    let none = up
        .http
        .get(daemon.url("/api/messages/unknown-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    let metrics = up
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_acks_total{route=\"route:status\"} 1")),
        "{metrics}"
    );

    // join / leave: REST group calls for the connection when the pattern allows the group.
    let joined = value_of(
        up.invoke("c1", Some("alice"), "join", json!(["orders-7"]))
            .await,
    );
    assert_eq!(joined["group"], "orders-7");
    let sends = recorder.sends();
    let last = sends.last().unwrap();
    assert_eq!(last.method, "PUT");
    assert!(
        last.path.contains("/groups/orders-7/connections/c1"),
        "{}",
        last.path
    );
    let refused = error_of(
        up.invoke("c1", Some("alice"), "join", json!(["admins"]))
            .await,
    );
    assert_eq!(refused, "group `admins` is not allowed");
    value_of(
        up.invoke("c1", Some("alice"), "leave", json!(["orders-7"]))
            .await,
    );
    assert_eq!(recorder.sends().last().unwrap().method, "DELETE");

    // `mine-{{ user }}`: only the caller's own group; never for anonymous callers.
    value_of(
        up.invoke("c1", Some("alice"), "mine", json!(["mine-alice"]))
            .await,
    );
    let count = recorder.sends().len();
    error_of(
        up.invoke("c1", Some("alice"), "mine", json!(["mine-bob"]))
            .await,
    );
    error_of(up.invoke("c9", None, "mine", json!(["mine-"])).await);
    assert_eq!(recorder.sends().len(), count, "refusals send nothing");

    // Not configured: refused, never dropped.
    let nope = error_of(up.invoke("c1", Some("alice"), "nope", json!([])).await);
    assert_eq!(nope, "method `nope` is not configured");

    // relay: rendered with args and user, sent to the group through the outbox.
    let relayed = value_of(
        up.invoke("c1", Some("alice"), "say", json!(["orders-7", "hi"]))
            .await,
    );
    assert!(relayed["id"].is_string());
    let sends = recorder.wait_for(count + 1, t).await;
    let chat = sends.last().unwrap();
    assert!(chat.path.contains("/groups/orders-7"), "{}", chat.path);
    assert_eq!(chat.json()["target"], "chat");
    assert_eq!(chat.json()["arguments"], json!(["alice", "hi"]));

    // Rate limits work per method, as for routes: the second shout in the minute is refused.
    value_of(
        up.invoke("c1", Some("alice"), "shout", json!(["x", "hey"]))
            .await,
    );
    let limited = error_of(
        up.invoke("c1", Some("alice"), "shout", json!(["x", "hey"]))
            .await,
    );
    assert!(
        limited.contains("method `shout` is over its rate limit"),
        "{limited}"
    );

    // MessagePack invocations get a MessagePack Completion.
    let mp = msgpack::encode(&HubMessage::Invocation {
        headers: Headers::new(),
        invocation_id: Some("5".into()),
        target: "join".into(),
        arguments: vec![json!("nope")],
        stream_ids: vec![],
    })
    .unwrap();
    let response = up
        .request("c1", Some("alice"), "messages", "join", ACCESS_KEY)
        .header("content-type", "application/x-msgpack")
        .body(mp[1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let back = msgpack::decode_frame(&response.bytes().await.unwrap()).unwrap();
    assert!(
        matches!(&back[0], HubMessage::Completion { invocation_id, result: CompletionResult::Error(e), .. }
            if invocation_id == "5" && e == "group `nope` is not allowed"),
        "{back:?}"
    );

    // Presence from connected/disconnected.
    assert_eq!(up.connected("c2", Some("alice")).await, 200);
    assert_eq!(up.connected("c3", None).await, 200);
    let presence = |daemon: &Daemon| {
        let url = daemon.url("/api/notifications/presence");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let p = presence(&daemon).await;
    assert_eq!(
        (p["connections"].as_u64(), p["users"].as_u64()),
        (Some(3), Some(1)),
        "{p}"
    );
    let gone = up
        .request("c3", None, "connections", "disconnected", ACCESS_KEY)
        .body(r#"{"Type":11,"Error":null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let p = presence(&daemon).await;
    assert_eq!(p["connections"], 2, "{p}");
}

/// The embedded service's config: the daemon points the service's upstream at itself.
fn embedded_config() -> String {
    format!(
        r#"
http:
  listen: 127.0.0.1:0
signalr:
  embedded:
    listen: 127.0.0.1:0
hubs:
  notifications:
    negotiate:
      user_id: {{ header: x-user }}
templates:
  status:
    target: statusUpdate
    arguments: ["{{{{ status }}}}"]
  order:
    target: orderUpdate
    arguments: ["{{{{ params.id }}}}", "{{{{ state }}}}"]
  chat:
    target: chat
    arguments: ["{{{{ user }}}}", "{{{{ args[1] }}}}"]
routes:
  status:
    path: /api/status
    hub: notifications
    template: status
    retain: true
    auth: {{ api_key: {KEY} }}
  order:
    path: /api/orders/{{id}}
    hub: notifications
    template: order
    to: {{ group: "orders-{{{{ params.id }}}}" }}
    auth: {{ api_key: {KEY} }}
events:
  notifications:
    connected: {{ send_retained: true }}
    methods:
      ack:   {{ ack: true }}
      join:  {{ join_group: "orders-*" }}
      leave: {{ leave_group: "orders-*" }}
      say:   {{ relay: {{ template: chat, to: {{ group: "{{{{ args[0] }}}}" }} }} }}
"#
    )
}

fn js_client(args: &[&str]) -> support::ClientProcess {
    let dir = support::clients_dir();
    assert!(
        dir.join("node_modules/@microsoft/signalr").exists(),
        "the JS clients are not installed: run `npm ci` in tests/clients (scripts/test does)"
    );
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dir.join("invoke.js")).args(args);
    support::ClientProcess::spawn(cmd, format!("invoke.js {}", args.join(" ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_js_client_gets_retained_status_acks_groups_relays_and_presence() {
    let daemon = Daemon::start(&embedded_config(), &[]);
    let http = reqwest::Client::new();
    let t = Duration::from_secs(20);

    let posted: Value = http
        .post(daemon.url("/api/status"))
        .header("x-api-key", KEY)
        .json(&json!({"status": "degraded"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = posted["id"].as_str().unwrap().to_string();
    // Wait until the broadcast itself was delivered (it is then in the hub's history), so
    // the only way the client can see it is the retained status on connect.
    let deadline = std::time::Instant::now() + t;
    loop {
        let h: Value = http
            .get(daemon.url("/api/notifications/history"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never delivered: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = daemon.url("/api");
    let ack = format!("ack={}", json!([id]));
    let mut client = tokio::task::spawn_blocking(move || {
        js_client(&[
            "--url",
            &url,
            "--header",
            "x-user=alice",
            "--target",
            "statusUpdate",
            "--target",
            "chat",
            "--target",
            "orderUpdate",
            "--invoke",
            &ack,
            "--invoke",
            r#"join=["orders-1"]"#,
            "--invoke",
            r#"join=["admins"]"#,
            "--invoke",
            r#"say=["orders-1","hi"]"#,
            "--invoke",
            r#"nope=[]"#,
        ])
    })
    .await
    .unwrap();
    let connection = tokio::task::block_in_place(|| client.connected()).expect("connection id");
    tokio::task::block_in_place(|| {
        client.wait_for(t, |v| v["event"] == "invoked");
    });
    let seen = client.seen.clone();
    // The retained status is the first message, right after connecting.
    let first = seen
        .iter()
        .find(|v| v["event"] == "message")
        .expect("a message");
    assert_eq!(first["target"], "statusUpdate", "{seen:#?}");
    assert_eq!(first["args"], json!(["degraded"]));
    let outcome = |method: &str| -> Vec<&Value> {
        seen.iter()
            .filter(|v| {
                v["method"] == method && (v["event"] == "result" || v["event"] == "refused")
            })
            .collect()
    };
    assert_eq!(outcome("ack")[0]["event"], "result", "{seen:#?}");
    let joins = outcome("join");
    assert_eq!(joins[0]["event"], "result", "{seen:#?}");
    assert_eq!(joins[1]["event"], "refused", "{seen:#?}");
    assert!(
        joins[1]["error"]
            .as_str()
            .unwrap()
            .contains("group `admins` is not allowed"),
        "{seen:#?}"
    );
    assert_eq!(outcome("say")[0]["event"], "result", "{seen:#?}");
    let nope = outcome("nope");
    assert!(
        nope[0]["error"]
            .as_str()
            .unwrap()
            .contains("method `nope` is not configured"),
        "{seen:#?}"
    );

    // The relay reached the group the client joined.
    let chat = tokio::task::block_in_place(|| client.message("chat", t));
    assert_eq!(chat["args"], json!(["alice", "hi"]));
    // A group message from a route reaches it too.
    let r = http
        .post(daemon.url("/api/orders/1"))
        .header("x-api-key", KEY)
        .json(&json!({"state": "shipped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let order = tokio::task::block_in_place(|| client.message("orderUpdate", t));
    assert_eq!(order["args"], json!(["1", "shipped"]));

    // The ack is visible, with the client's connection and user.
    let acks: Value = http
        .get(daemon.url(&format!("/api/messages/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acks["acks"][0]["connection"], connection.as_str(), "{acks}");
    assert_eq!(acks["acks"][0]["user"], "alice", "{acks}");

    // Presence shows the connection.
    let p: Value = http
        .get(daemon.url("/api/notifications/presence?user=alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["connections"], 1, "{p}");
    assert_eq!(p["users"], 1, "{p}");
    assert_eq!(p["user"]["connected"], true, "{p}");
    assert_eq!(p["source"], "service", "{p}");
    assert_eq!(p["groups"], 1, "the client joined orders-1: {p}");
}
