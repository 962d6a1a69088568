//! Scale-out on Redis: three `herald run` nodes, each with its own embedded service and state
//! directory, share one real `redis-server` (started per test on a free port, killed at the
//! end) through `cluster: {redis: ...}`. Official JS clients connect to each node.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::signalr::ServiceEndpoint;
use herald::signalr::rest::{RestClient, RestOptions};
use serde_json::{Value, json};
use support::{ClientProcess, Daemon};

const KEY: &str = "cluster-test-api-key-0123456789abcdef";
const ACCESS_KEY: &str = "cluster-access-key-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);

/// A `redis-server` on its own port, killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: support::free_port(),
            child: None,
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (scripts/test installs it with apt-get)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(redis: &Redis, schedule: bool) -> String {
    let schedules = if schedule {
        "schedules:\n  tick: {cron: '* * * * * *', hub: notifications, template: tick}\n"
    } else {
        ""
    };
    format!(
        r#"
signalr:
  embedded:
    listen: 127.0.0.1:0
    access_key: {ACCESS_KEY}
http:
  listen: 127.0.0.1:0
cluster:
  redis: "{url}"
hubs:
  notifications:
    negotiate:
      user_id: {{header: x-user}}
templates:
  status:
    target: statusUpdate
    arguments: ["{{{{ status }}}}"]
  tick:
    target: tick
    arguments: ["{{{{ now }}}}"]
routes:
  status:
    path: /api/status
    hub: notifications
    template: status
    auth: {{api_key: {KEY}}}
  user:
    path: /api/users/{{name}}
    hub: notifications
    template: status
    to: {{user: "{{{{ params.name }}}}"}}
    auth: {{api_key: {KEY}}}
  retained:
    path: /api/retained/{{name}}
    hub: notifications
    template: status
    retain: true
    auth: {{api_key: {KEY}}}
  group:
    path: /api/groups/{{name}}
    hub: notifications
    template: status
    to: {{group: "{{{{ params.name }}}}"}}
    auth: {{api_key: {KEY}}}
{schedules}"#,
        url = redis.url()
    )
}

fn nodes(redis: &Redis, n: usize, schedule: bool) -> Vec<Daemon> {
    (0..n)
        .map(|_| Daemon::start(&config(redis, schedule), &[]))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn post(d: &Daemon, path: &str, status: &str) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(d.url(path))
            .header("X-API-Key", KEY)
            .json(&json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    });
}

fn get_json(d: &Daemon, path: &str) -> Value {
    runtime().block_on(async {
        reqwest::get(d.url(path))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

/// GET `path` as the user `user` (the hub's `x-user` header).
fn get_json_as(d: &Daemon, path: &str, user: &str) -> Value {
    runtime().block_on(async {
        reqwest::Client::new()
            .get(d.url(path))
            .header("x-user", user)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

/// Poll `probe` until `done` holds of its answer; the last answer.
fn poll(what: &str, mut probe: impl FnMut() -> Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never came: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until every node's `/readyz` says `cluster: want`.
fn wait_cluster(nodes: &[&Daemon], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for d in nodes {
        loop {
            let r = get_json(d, "/readyz");
            if r["cluster"] == want {
                assert_eq!(r["ready"], true, "{r}");
                break;
            }
            assert!(Instant::now() < deadline, "cluster never {want}: {r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn client(d: &Daemon, extra: &[&str]) -> ClientProcess {
    let base = d.url("/api");
    let mut args = vec!["--url", base.as_str()];
    args.extend_from_slice(extra);
    let mut c = ClientProcess::js(&args);
    c.connected();
    c
}

fn rest(d: &Daemon) -> RestClient {
    herald::install_crypto();
    let addr = d.service_addr.expect("embedded service");
    let endpoint = ServiceEndpoint::new(
        &format!("http://{}", addr.ip()),
        Some(addr.port()),
        ACCESS_KEY,
    )
    .unwrap();
    RestClient::new(endpoint, RestOptions::default()).unwrap()
}

fn statuses(c: &mut ClientProcess) -> Vec<Value> {
    c.messages()
        .into_iter()
        .filter(|m| m["target"] == "statusUpdate")
        .map(|m| m["args"][0].clone())
        .collect()
}

#[test]
fn a_status_post_on_node_1_reaches_clients_on_all_three_once() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    let mut clients: Vec<ClientProcess> = n.iter().map(|d| client(d, &[])).collect();
    post(&n[0], "/api/status", "one");
    post(&n[0], "/api/status", "two");
    for c in &mut clients {
        c.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "two");
        // In order, and each once: the origin does not deliver its own echo again.
        assert_eq!(statuses(c), vec![json!("one"), json!("two")], "{}", c.name);
    }
    let health = get_json(&n[1], "/healthz");
    assert_eq!(health["cluster"]["redis"], "up", "{health}");
    assert_eq!(health["cluster"]["nodes"], 3, "{health}");
}

#[test]
fn a_user_on_node_3_gets_a_message_sent_through_node_2() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    let mut carol = client(&n[2], &["--header", "x-user=carol"]);
    let mut dave = client(&n[0], &["--header", "x-user=dave"]);
    post(&n[1], "/api/users/carol", "for carol");
    post(&n[1], "/api/status", "for all");
    carol.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0] == "for all"
    });
    assert_eq!(
        statuses(&mut carol),
        vec![json!("for carol"), json!("for all")]
    );
    dave.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0] == "for all"
    });
    assert_eq!(statuses(&mut dave), vec![json!("for all")]);
}

#[test]
fn a_group_joined_on_node_1_receives_a_send_from_node_3() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    let mut member = client(&n[0], &[]);
    let member_id = member.connected().expect("connection id");
    let mut far = client(&n[0], &[]);
    let far_id = far.connected().expect("connection id");
    let mut other = client(&n[2], &[]);
    runtime().block_on(async {
        // Through node 1's service, where the connection is.
        rest(&n[0])
            .add_connection_to_group("notifications", "ops", &member_id)
            .await
            .unwrap();
        // Through node 2's service, which forwards it to the node that has the connection.
        rest(&n[1])
            .add_connection_to_group("notifications", "far", &far_id)
            .await
            .unwrap();
    });
    // The forwarded add travels through Redis: send until it has arrived.
    let deadline = Instant::now() + WAIT;
    post(&n[2], "/api/groups/ops", "ops from node 3");
    member.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0] == "ops from node 3"
    });
    loop {
        post(&n[2], "/api/groups/far", "far from node 3");
        std::thread::sleep(Duration::from_millis(300));
        if !statuses(&mut far).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarded group add never applied"
        );
    }
    post(&n[2], "/api/status", "all");
    other.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "all");
    member.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "all");
    assert_eq!(
        statuses(&mut other),
        vec![json!("all")],
        "not a member of either"
    );
    assert_eq!(
        statuses(&mut member),
        vec![json!("ops from node 3"), json!("all")]
    );
    assert!(
        statuses(&mut far).iter().all(|s| s != "ops from node 3"),
        "far is not in ops"
    );
}

#[test]
fn a_schedule_on_all_three_fires_once_per_second_in_total() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, true);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    let mut clients: Vec<ClientProcess> =
        n.iter().map(|d| client(d, &["--target", "tick"])).collect();
    // Let every node's scheduler see a couple of instants, then count over ~5 s.
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    for c in &mut clients {
        c.messages();
        c.seen.clear();
    }
    std::thread::sleep(Duration::from_millis(5200));
    let mut per_client = Vec::new();
    for c in &mut clients {
        let ticks: Vec<String> = c
            .messages()
            .into_iter()
            .filter(|m| m["target"] == "tick")
            .map(|m| m["args"][0].as_str().unwrap_or_default().to_string())
            .collect();
        let mut unique = ticks.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ticks.len(),
            "{}: an instant arrived twice: {ticks:?}",
            c.name
        );
        assert!(
            (4..=7).contains(&ticks.len()),
            "{}: {} ticks in {:?}: {ticks:?}",
            c.name,
            ticks.len(),
            start.elapsed()
        );
        for t in &ticks {
            assert!(
                t.ends_with(":00.000Z") || t.ends_with(".000Z"),
                "whole seconds: {t}"
            );
        }
        per_client.push(ticks);
    }
    // Every client saw the same instants (allowing the window's edges).
    let common = per_client[0]
        .iter()
        .filter(|t| per_client.iter().all(|p| p.contains(t)))
        .count();
    assert!(common >= 3, "{per_client:?}");
}

#[test]
fn redis_away_keeps_local_delivery_and_cross_node_delivery_resumes() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2, false);
    let both = [&n[0], &n[1]];
    wait_cluster(&both, "ok");
    let mut a = client(&n[0], &[]);
    let mut b = client(&n[1], &[]);
    post(&n[0], "/api/status", "before");
    b.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0] == "before"
    });

    redis.stop();
    wait_cluster(&both, "degraded");
    let health = get_json(&n[0], "/healthz");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["cluster"]["redis"], "down", "{health}");
    post(&n[0], "/api/status", "during");
    a.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0] == "during"
    });
    let metrics = runtime().block_on(async {
        reqwest::get(n[0].url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(metrics.contains("herald_cluster_redis_up 0"), "{metrics}");

    redis.restart();
    wait_cluster(&both, "ok");
    post(&n[0], "/api/status", "after");
    b.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "after");
    a.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "after");
    assert_eq!(
        statuses(&mut a),
        vec![json!("before"), json!("during"), json!("after")]
    );
    let logs = n[0]
        .logs_with("cluster: Redis is away; serving local connections only, retrying with backoff");
    assert_eq!(logs.len(), 1, "logged once per outage");
}

#[test]
fn history_and_retained_answer_the_same_on_every_node() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    post(&n[0], "/api/status", "one");
    post(&n[1], "/api/status", "two");
    post(&n[1], "/api/users/alice", "for alice");
    post(&n[1], "/api/retained/db", "db first");
    post(&n[0], "/api/retained/db", "db second");
    post(&n[1], "/api/retained/web", "web up");
    // Each node delivers (and keeps) what it accepted; wait until all six are kept.
    let history = "/api/notifications/history";
    poll(
        "six kept messages",
        || get_json_as(&n[2], history, "alice"),
        |v| v["messages"].as_array().is_some_and(|m| m.len() == 6),
    );
    let alice: Vec<Value> = n.iter().map(|d| get_json_as(d, history, "alice")).collect();
    for (i, answer) in alice.iter().enumerate() {
        assert_eq!(answer["source"], "cluster", "node {}: {answer}", i + 1);
        assert_eq!(answer, &alice[0], "node {} differs from node 1", i + 1);
    }
    let mut args: Vec<Value> = alice[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["arguments"][0].clone())
        .collect();
    args.sort_by_key(|a| a.to_string());
    let mut want = vec![
        json!("one"),
        json!("two"),
        json!("for alice"),
        json!("db first"),
        json!("db second"),
        json!("web up"),
    ];
    want.sort_by_key(|a| a.to_string());
    assert_eq!(args, want);
    // Another user does not see alice's message, on any node; `after` works the same.
    let first = alice[0]["messages"][0]["id"].as_str().unwrap().to_string();
    let after = format!("{history}?after={first}");
    let bob: Vec<Value> = n.iter().map(|d| get_json_as(d, &after, "bob")).collect();
    assert_eq!(
        bob[0]["messages"].as_array().map(Vec::len),
        Some(4),
        "{}",
        bob[0]
    );
    assert!(bob[0].get("reset").is_none(), "{}", bob[0]);
    for answer in &bob {
        assert_eq!(answer, &bob[0]);
    }
    // The retained status is the latest one, whichever node accepted it.
    let db: Vec<Value> = n.iter().map(|d| get_json(d, "/api/retained/db")).collect();
    for answer in &db {
        assert_eq!(answer["arguments"], json!(["db second"]), "{answer}");
        assert_eq!(answer["source"], "cluster", "{answer}");
        assert_eq!(answer, &db[0]);
    }
    let web = get_json(&n[0], "/api/retained/web");
    assert_eq!(web["arguments"], json!(["web up"]), "{web}");
    // The status page's list, too.
    let page: Vec<Value> = n
        .iter()
        .map(|d| get_json(d, "/status-page/retained?hub=notifications"))
        .collect();
    for answer in &page {
        assert_eq!(answer["source"], "cluster", "{answer}");
        assert_eq!(
            answer["retained"].as_array().map(Vec::len),
            Some(2),
            "{answer}"
        );
        assert_eq!(answer, &page[0]);
    }
}

#[test]
fn history_falls_back_to_the_local_store_while_redis_is_away() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    post(&n[0], "/api/status", "kept");
    let history = "/api/notifications/history";
    poll(
        "a kept message on node 2",
        || get_json(&n[1], history),
        |v| v["messages"].as_array().is_some_and(|m| m.len() == 1),
    );
    redis.stop();
    wait_cluster(&[&n[0], &n[1]], "degraded");
    // Node 1 delivered it and has it; node 2 only had it through Redis.
    let one = get_json(&n[0], history);
    assert_eq!(one["source"], "local", "{one}");
    assert_eq!(one["messages"][0]["arguments"], json!(["kept"]), "{one}");
    let two = get_json(&n[1], history);
    assert_eq!(two["source"], "local", "{two}");
    assert_eq!(two["messages"], json!([]), "{two}");
}

#[test]
fn presence_on_any_node_counts_the_clients_of_all_three() {
    let redis = Redis::start();
    let n = nodes(&redis, 3, false);
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    let _clients = [
        client(&n[0], &["--header", "x-user=alice"]),
        client(&n[1], &["--header", "x-user=bob"]),
        client(&n[2], &["--header", "x-user=carol"]),
        client(&n[2], &["--header", "x-user=carol"]),
    ];
    for (i, d) in n.iter().enumerate() {
        let p = poll(
            "four connections in the cluster",
            || get_json(d, "/api/notifications/presence"),
            |v| v["connections"] == 4,
        );
        assert_eq!(p["source"], "cluster", "node {}: {p}", i + 1);
        assert_eq!(p["nodes"], 3, "{p}");
        // Three distinct users: carol's two connections are on one node.
        assert_eq!(p["users"], 3, "{p}");
        assert_eq!(p["users_upper_bound"], true, "{p}");
        let own = [1, 1, 2][i];
        assert_eq!(p["node"]["connections"], own, "node {}: {p}", i + 1);
    }
}

#[test]
fn a_new_connection_on_node_3_gets_statuses_retained_through_nodes_1_and_2() {
    let redis = Redis::start();
    let events = "events:\n  notifications:\n    connected: {send_retained: true}\n";
    let n: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start(&format!("{}{events}", config(&redis, false)), &[]))
        .collect();
    wait_cluster(&n.iter().collect::<Vec<_>>(), "ok");
    post(&n[0], "/api/retained/web", "web up");
    post(&n[1], "/api/retained/db", "db up");
    poll(
        "both statuses retained in the cluster",
        || get_json(&n[2], "/status-page/retained?hub=notifications"),
        |v| v["retained"].as_array().is_some_and(|r| r.len() == 2),
    );
    let mut c = client(&n[2], &[]);
    c.wait_for(WAIT, |v| v["event"] == "message" && v["args"][0] == "db up");
    let mut got = statuses(&mut c);
    got.sort_by_key(|a| a.to_string());
    assert_eq!(got, vec![json!("db up"), json!("web up")]);
}
