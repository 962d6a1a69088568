//! The official clients against herald's default set-up (the embedded service): the JS client
//! `@microsoft/signalr` on WebSockets, Server-Sent Events and long polling, with JSON and with
//! MessagePack, and `pysignalr`, each given the base URL `http://HOST/api` and receiving a
//! status POST; user and group targeting through `herald token`, `herald send` and the REST API.

mod support;

use std::time::Duration;

use herald::message::{Message, Recipient};
use herald::signalr::ServiceEndpoint;
use herald::signalr::rest::{RestClient, RestOptions};
use serde_json::json;
use support::http::post_accepted_blocking;
use support::{ClientProcess, Daemon, DaemonYaml};

const KEY: &str = support::API_KEY;
const ACCESS_KEY: &str = "interop-access-key-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

fn config() -> String {
    DaemonYaml::embedded()
        .embedded_extra(&format!("    access_key: {ACCESS_KEY}\n"))
        .arguments(
            r#"
      - timestamp: "{{ now }}"
        status: "{{ status | default('System operational') }}""#,
        )
        .routes(&format!(
            r#"  group:
    path: /api/groups/{{name}}
    hub: notifications
    template: status
    to: {{group: "{{{{ params.name }}}}"}}
    auth: {{api_key: {KEY}}}
"#
        ))
        .build()
}

fn post_status(d: &Daemon, path: &str, status: &str) {
    post_accepted_blocking(&d.url(path), Some(KEY), &json!({ "status": status }));
}

#[test]
fn js_client_receives_a_status_post_on_every_transport_and_protocol() {
    let d = Daemon::start(&config(), &[]);
    let base = d.url("/api");
    let variants: [&[&str]; 4] = [
        &["--transport", "WebSockets"],
        &["--transport", "ServerSentEvents"],
        &["--transport", "LongPolling"],
        &["--transport", "WebSockets", "--protocol", "messagepack"],
    ];
    let mut clients: Vec<ClientProcess> = variants
        .iter()
        .map(|extra| {
            let mut args = vec!["--url", base.as_str()];
            args.extend_from_slice(extra);
            ClientProcess::js(&args)
        })
        .collect();
    for c in &mut clients {
        assert!(c.connected().is_some());
    }
    post_status(&d, "/api/status", "Degraded");
    for c in &mut clients {
        let m = c.message("statusUpdate", WAIT);
        assert_eq!(m["args"][0]["status"], "Degraded", "{}", c.name);
        assert!(m["args"][0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn pysignalr_receives_a_status_post() {
    let d = Daemon::start(&config(), &[]);
    let mut py = ClientProcess::python(&[&d.url("/api"), "statusUpdate"]);
    py.connected();
    // pysignalr reports "open" when the socket opens; the handshake completes right after.
    // Post until the first message arrives (each post is an independent broadcast).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        post_status(&d, "/api/status", "From Python");
        let got = py.messages();
        if let Some(m) = got.first() {
            assert_eq!(m["args"][0]["status"], "From Python");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pysignalr got nothing: {:?}",
            py.seen
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn user_targeted_send_reaches_only_that_user() {
    // `herald token` and `herald send` read the same file, so the service needs a fixed port.
    let port = support::free_port();
    let yaml = config().replace(
        "listen: 127.0.0.1:0\n    access_key",
        &format!("listen: 127.0.0.1:{port}\n    access_key"),
    );
    let d = Daemon::start(&yaml, &[]);
    let cfg = d.config_path.to_str().unwrap().to_string();
    let state = d.dir.path().join("state");
    let env = [("XDG_STATE_HOME", state.to_str().unwrap())];
    let token = |user: &str| -> (String, String) {
        let (code, out, err) = support::herald(
            &[
                "token",
                "-c",
                &cfg,
                "--hub",
                "notifications",
                "--user",
                user,
            ],
            &env,
        );
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        (
            v["url"].as_str().unwrap().to_string(),
            v["accessToken"].as_str().unwrap().to_string(),
        )
    };
    let (url_a, tok_a) = token("alice");
    let (url_b, tok_b) = token("bob");
    assert_eq!(
        url_a,
        format!(
            "http://{}/client/?hub=notifications",
            d.service_addr.unwrap()
        )
    );
    let mut alice = ClientProcess::js(&["--url", &url_a, "--token", &tok_a, "--target", "notify"]);
    let mut bob = ClientProcess::js(&["--url", &url_b, "--token", &tok_b, "--target", "notify"]);
    alice.connected();
    bob.connected();

    let send = |args: &[&str]| {
        let mut all = vec![
            "send",
            "-c",
            cfg.as_str(),
            "--hub",
            "notifications",
            "--target",
            "notify",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = support::herald(&all, &env);
        assert_eq!(code, Some(0), "{out}{err}");
    };
    send(&["--user", "alice", "\"for alice\""]);
    send(&["\"for everyone\""]);
    let first = alice.message("notify", WAIT);
    assert_eq!(first["args"], json!(["for alice"]));
    alice.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"] == json!(["for everyone"])
    });
    // Bob's connection receives in order: once the later broadcast is there, the user message
    // would have been too.
    bob.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"] == json!(["for everyone"])
    });
    let bob_got: Vec<_> = bob
        .messages()
        .into_iter()
        .map(|m| m["args"].clone())
        .collect();
    assert_eq!(bob_got, vec![json!(["for everyone"])]);
}

#[test]
fn group_message_reaches_only_members_after_a_rest_group_add() {
    herald::install_crypto();
    let d = Daemon::start(&config(), &[]);
    let base = d.url("/api");
    let mut member = ClientProcess::js(&["--url", &base]);
    let mut other = ClientProcess::js(&["--url", &base]);
    let member_id = member.connected().expect("connection id");
    other.connected();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoint = ServiceEndpoint::new(
            &format!("http://{}", d.service_addr.unwrap().ip()),
            Some(d.service_addr.unwrap().port()),
            ACCESS_KEY,
        )
        .unwrap();
        let rest = RestClient::new(endpoint, RestOptions::default()).unwrap();
        rest.add_connection_to_group("notifications", "ops", &member_id)
            .await
            .unwrap();
        assert!(rest.group_exists("notifications", "ops").await.unwrap());
        // Direct REST send to the group as well as the route below.
        rest.send(&Message {
            hub: "notifications".into(),
            to: Recipient::Group("ops".into()),
            target: "statusUpdate".into(),
            arguments: vec![json!({"status": "rest group"})],
            excluded: vec![],
        })
        .await
        .unwrap();
    });
    post_status(&d, "/api/groups/ops", "route group");
    post_status(&d, "/api/status", "everyone");
    member.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0]["status"] == "everyone"
    });
    let member_got: Vec<_> = member
        .messages()
        .into_iter()
        .map(|m| m["args"][0]["status"].clone())
        .collect();
    assert_eq!(
        member_got,
        vec![json!("rest group"), json!("route group"), json!("everyone")]
    );
    other.wait_for(WAIT, |v| {
        v["event"] == "message" && v["args"][0]["status"] == "everyone"
    });
    let other_got: Vec<_> = other
        .messages()
        .into_iter()
        .map(|m| m["args"][0]["status"].clone())
        .collect();
    assert_eq!(other_got, vec![json!("everyone")]);
}

#[test]
fn herald_service_prints_a_working_connection_string() {
    use std::io::{BufRead, BufReader};
    herald::install_crypto();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["service", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint =
        ServiceEndpoint::from_connection_string(line.trim()).expect("a connection string");
    assert!(
        line.starts_with("Endpoint=http://127.0.0.1;Port="),
        "{line}"
    );
    assert!(endpoint.access_key().len() >= 32, "a generated key");

    let token = herald::signalr::token::mint_client(
        endpoint.access_key(),
        &endpoint.client_audience("chat"),
        None,
        Duration::from_secs(600),
    )
    .unwrap();
    let mut client = ClientProcess::js(&[
        "--url",
        &endpoint.client_url("chat"),
        "--token",
        &token,
        "--target",
        "hello",
    ]);
    client.connected();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rest = RestClient::new(endpoint.clone(), RestOptions::default()).unwrap();
        rest.health().await.unwrap();
        rest.send(&Message {
            hub: "chat".into(),
            to: Recipient::All,
            target: "hello".into(),
            arguments: vec![json!("from the REST API")],
            excluded: vec![],
        })
        .await
        .unwrap();
    });
    let m = client.message("hello", WAIT);
    assert_eq!(m["args"], json!(["from the REST API"]));
    let _ = child.kill();
    let _ = child.wait();
}
