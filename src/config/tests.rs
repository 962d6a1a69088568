//! Config loading tests: each validation error, references, the endpoint table.

use std::path::Path;

use axum::http::Method;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(Path::new("n.yaml"), text, &no_env)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("config should be invalid:\n{text}"),
        Err(e) => e.diagnostics.iter().map(|d| d.to_string()).collect(),
    }
}

const BASE: &str = "\
hubs:
  notifications: {}
templates:
  system-status:
    target: statusUpdate
    arguments:
      - timestamp: '{{ now }}'
        status: \"{{ status | default('System operational') }}\"
";

#[test]
fn minimal_config_has_defaults() {
    let c = load(BASE).unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:7071");
    assert_eq!(c.http.body_limit, 65_536);
    assert!(
        matches!(c.signalr, SignalrConfig::Embedded { listen, .. } if listen.to_string() == "127.0.0.1:8888")
    );
    let hub = &c.hubs["notifications"];
    assert_eq!(hub.negotiate_path, "/api/negotiate");
    assert_eq!(hub.token_ttl, Duration::from_secs(3600));
    assert_eq!(c.content_hash.len(), 64);
}

#[test]
fn negotiate_paths_default_per_hub_when_several() {
    let c = load("hubs:\n  a: {}\n  b:\n    negotiate: {path: /custom}\n").unwrap();
    assert_eq!(c.hubs["a"].negotiate_path, "/api/a/negotiate");
    assert_eq!(c.hubs["b"].negotiate_path, "/custom");
    assert_eq!(
        c.endpoints.lookup(&Method::POST, "/api/a/negotiate"),
        EndpointMatch::Negotiate("a")
    );
    assert_eq!(
        c.endpoints.lookup(&Method::GET, "/custom"),
        EndpointMatch::Negotiate("b")
    );
}

#[test]
fn bad_cron_points_at_the_expression() {
    let text = format!(
        "{BASE}schedules:\n  broadcast:\n    cron: \"61 * * * * *\"\n    hub: notifications\n    template: system-status\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("n.yaml:11:11: invalid cron expression `61 * * * * *`"),
        "{e:?}"
    );
}

#[test]
fn unknown_references_are_named_with_hints() {
    let text = format!(
        "{BASE}schedules:\n  s:\n    cron: '0 * * * * *'\n    hub: notification\n    template: system-staus\n"
    );
    let e = errors(&text);
    assert_eq!(
        e,
        [
            "n.yaml:12:10: unknown hub `notification`; did you mean `notifications`?",
            "n.yaml:13:15: unknown template `system-staus`; did you mean `system-status`?",
        ]
    );
}

#[test]
fn all_errors_are_collected() {
    let text = format!(
        "{BASE}http:\n  listen: nowhere\n  body_limit: lots\n  request_timeout: 10 parsecs\n\
schedules:\n  s:\n    cron: '* * *'\n    time_zone: Mars/Base\n    hub: h\n    template: t\n\
routes:\n  r:\n    method: BREW\n    path: api\n    hub: notifications\n    template: system-status\n"
    );
    let e = errors(&text);
    let joined = e.join("\n");
    for needle in [
        "invalid listen address `nowhere`",
        "invalid size `lots`",
        "unknown unit `parsecs`",
        "unknown time zone `Mars/Base`",
        "unknown hub `h`",
        "unknown template `t`",
        "unsupported method `BREW`",
        "path `api` must start with `/`",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
}

#[test]
fn bad_time_zone_and_cron_report_separately() {
    let text = format!(
        "{BASE}schedules:\n  s:\n    cron: '0 0 9 * * *'\n    time_zone: Europe/Berln\n    hub: notifications\n    template: system-status\n"
    );
    let e = errors(&text);
    assert_eq!(
        e,
        [
            "n.yaml:12:16: unknown time zone `Europe/Berln` (use an IANA name such as `Europe/Berlin` or `UTC`)"
        ]
    );
}

#[test]
fn duplicate_routes_and_negotiate_clashes() {
    let route = |name: &str, path: &str| {
        format!(
            "  {name}:\n    path: {path}\n    hub: notifications\n    template: system-status\n"
        )
    };
    let text = format!(
        "{BASE}routes:\n{}{}{}{}",
        route("a", "/api/status"),
        route("b", "/api/status"),
        route("c", "/api/negotiate"),
        route("d", "/healthz")
    );
    let e = errors(&text).join("\n");
    assert!(
        e.contains("another route already answers POST /api/status"),
        "{e}"
    );
    assert!(
        e.contains("clashes with the negotiate endpoint of hub `notifications`"),
        "{e}"
    );
    assert!(e.contains("`/healthz` is reserved"), "{e}");
}

#[test]
fn routes_match_params_and_methods() {
    let text = format!(
        "{BASE}routes:\n  order:\n    path: /api/orders/{{id}}/status\n    hub: notifications\n    template: system-status\n    to: {{group: 'order-{{{{ params.id }}}}'}}\n"
    );
    let c = load(&text).unwrap();
    match c.endpoints.lookup(&Method::POST, "/api/orders/42/status") {
        EndpointMatch::Route { index, params } => {
            assert_eq!(c.routes[index].name, "order");
            assert_eq!(params["id"], "42");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.endpoints.lookup(&Method::GET, "/api/orders/42/status"),
        EndpointMatch::MethodNotAllowed(vec![Method::POST])
    );
    assert_eq!(
        c.endpoints.lookup(&Method::POST, "/nope"),
        EndpointMatch::NotFound
    );
}

#[test]
fn templates_that_fail_to_compile_are_located() {
    let text = "hubs: {h: {}}\ntemplates:\n  t:\n    target: x\n    arguments:\n      - ok\n      - status: '{{ status '\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("n.yaml:7:17: template does not compile"),
        "{e:?}"
    );
}

#[test]
fn to_needs_exactly_one_recipient() {
    let text = format!(
        "{BASE}schedules:\n  s:\n    cron: '0 * * * * *'\n    hub: notifications\n    template: system-status\n    to: {{user: a, group: b}}\n"
    );
    let e = errors(&text);
    assert!(
        e[0].contains("`to` needs exactly one of `user`, `group` or `connection`"),
        "{e:?}"
    );
}

#[test]
fn auth_rules() {
    let text = format!(
        "{BASE}routes:\n  r:\n    path: /s\n    hub: notifications\n    template: system-status\n    auth: {{api_key: short}}\n"
    );
    let c = load(&text).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("shorter than 32"))
    );
    assert!(
        !format!("{:?}", c.routes[0].auth).contains("short"),
        "secret leaked in Debug"
    );
    let text = format!(
        "{BASE}routes:\n  r:\n    path: /s\n    hub: notifications\n    template: system-status\n    auth: {{}}\n"
    );
    assert!(errors(&text)[0].contains("exactly one of `api_key` or `bearer`"));
    let text = format!(
        "{BASE}routes:\n  r:\n    path: /s\n    hub: notifications\n    template: system-status\n    auth: {{bearer: {{public_key: not-a-pem}}}}\n"
    );
    assert!(errors(&text)[0].contains("not an RSA public key"));
}

#[test]
fn connection_string_is_validated_and_env_fallback_works() {
    let text = format!("{BASE}signalr:\n  connection_string: 'Endpoint=ftp://x;AccessKey=k'\n");
    let e = errors(&text);
    assert!(
        e[0].starts_with("n.yaml:10:22: invalid connection string"),
        "{e:?}"
    );
    assert!(!e[0].contains("AccessKey=k"), "key leaked: {e:?}");

    let env = |name: &str| {
        (name == "AzureSignalRConnectionString").then(|| {
            "Endpoint=https://x.service.signalr.net;AccessKey=abc;Version=1.0;".to_string()
        })
    };
    let c = load_str(Path::new("n.yaml"), BASE, &env).unwrap();
    assert!(matches!(c.signalr, SignalrConfig::Azure(_)));
    // An empty value in the file also falls back to the environment.
    let text = format!("{BASE}signalr:\n  connection_string: ''\n");
    let c = load_str(Path::new("n.yaml"), &text, &env).unwrap();
    assert!(matches!(c.signalr, SignalrConfig::Azure(_)));
}

#[test]
fn render_message_keeps_types_and_targets() {
    let text = format!(
        "{BASE}routes:\n  r:\n    path: /s/{{who}}\n    hub: notifications\n    template: system-status\n    to: {{user: '{{{{ params.who }}}}'}}\n"
    );
    let c = load(&text).unwrap();
    let r = &c.routes[0];
    let vars = serde_json::json!({"now": "2026-01-01T00:00:00Z", "params": {"who": "alice"}});
    let m = render_message(&r.hub, &r.template, r.to.as_ref(), &vars).unwrap();
    assert_eq!(m.to, Recipient::User("alice".into()));
    assert_eq!(m.target, "statusUpdate");
    assert_eq!(
        m.arguments,
        vec![
            serde_json::json!({"timestamp": "2026-01-01T00:00:00Z", "status": "System operational"})
        ]
    );
}

#[test]
fn repository_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("notifications.yaml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            files.push(p);
        }
    }
    assert!(files.len() >= 3);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let env = |name: &str| match name {
            "STATUS_API_KEY" | "ORDERS_API_KEY" | "JWT_SECRET" => Some("k".repeat(40)),
            _ => None,
        };
        if let Err(e) = load_str(&f, &text, &env) {
            panic!("{} is invalid:\n{}", f.display(), e.render());
        }
    }
}

#[test]
fn every_remaining_validation_error_is_reported_at_its_key() {
    // (YAML appended to a valid base, expected `line:col: message` prefix after `n.yaml:`)
    let cases: &[(&str, &str)] = &[
        ("hubs:\n  9lives: {}\n", "2:3: invalid hub name `9lives`"),
        (
            "hubs:\n  h:\n    negotiate: {token_ttl: forever}\n",
            "3:28: invalid duration `forever`",
        ),
        (
            "hubs:\n  h:\n    negotiate: {token_ttl: 30d}\n",
            "3:28: token_ttl must be between 1s and 7d",
        ),
        (
            "hubs:\n  h:\n    negotiate: {path: negotiate}\n",
            "3:23: path `negotiate` must start with `/`",
        ),
        (
            "hubs:\n  h:\n    negotiate:\n      user_id: {required: true}\n",
            "4:16: user_id needs exactly one of `header` or `bearer`",
        ),
        (
            "hubs:\n  h:\n    negotiate:\n      user_id: {header: 'bad header'}\n",
            "4:25: invalid header name `bad header`",
        ),
        (
            "hubs:\n  h:\n    negotiate:\n      user_id: {bearer: {secret: s, public_key: p}}\n",
            "4:25: bearer needs exactly one of",
        ),
        (
            "http:\n  cors: {allowed_origins: ['app.example.com']}\n",
            "2:28: invalid origin `app.example.com`",
        ),
        (
            "http:\n  body_limit: 0\n",
            "2:15: body_limit must be above 0",
        ),
        (
            "http:\n  request_timeout: 30\n",
            "2:20: duration `30` needs a unit",
        ),
        (
            "logging:\n  level: 'herald=[loud'\n",
            "2:10: invalid log level",
        ),
        (
            "signalr:\n  embedded: {access_key: short}\n",
            "2:26: access_key must be at least 16 characters",
        ),
        (
            "signalr:\n  embedded: {max_connections: 0}\n",
            "2:31: max_connections must be at least 1",
        ),
        (
            "signalr:\n  embedded: {listen: 'localhost'}\n",
            "2:22: invalid listen address `localhost`",
        ),
        (
            "templates:\n  t: {target: ''}\n",
            "2:15: target must not be empty",
        ),
    ];
    let base = "hubs:\n  h: {}\n";
    for (extra, expected) in cases {
        // Each case replaces the base's hubs when it defines its own.
        let text = if extra.starts_with("hubs:") {
            extra.to_string()
        } else {
            format!("{base}{extra}")
        };
        let offset = if extra.starts_with("hubs:") { 0 } else { 2 };
        let (pos, message) = expected.split_once(": ").unwrap();
        let (line, col) = pos.split_once(':').unwrap();
        let want = format!(
            "n.yaml:{}:{col}: {message}",
            line.parse::<usize>().unwrap() + offset
        );
        let got = errors(&text);
        assert!(
            got.iter().any(|e| e.starts_with(&want)),
            "case {extra:?}: want `{want}`, got {got:#?}"
        );
    }
    // A size may be a plain number of bytes.
    let c = load("hubs: {h: {}}\nhttp: {body_limit: 1000}\n").unwrap();
    assert_eq!(c.http.body_limit, 1000);
    let text = "hubs: {h: {}}\ntemplates: {t: {target: x}}\nroutes:\n  r:\n    path: /r\n    hub: h\n    template: t\n    rate_limit: {requests: 0}\n";
    assert!(
        errors(text)[0].starts_with("n.yaml:8:17: rate_limit needs requests ≥ 1"),
        "{:?}",
        errors(text)
    );
}

#[test]
fn listener_timeouts_and_api_version_are_checked_at_their_keys() {
    let cases: &[(&str, &str)] = &[
        (
            "http:\n  header_read_timeout: 0s\n",
            "2:24: header_read_timeout must be above 0",
        ),
        (
            "http:\n  idle_timeout: soon\n",
            "2:17: invalid duration `soon`",
        ),
        (
            "signalr:\n  embedded: {header_read_timeout: 10}\n",
            "2:35: duration `10` needs a unit",
        ),
        (
            "signalr:\n  embedded: {idle_timeout: 0ms}\n",
            "2:28: idle_timeout must be above 0",
        ),
        (
            "signalr:\n  api_version: '2023-01-01'\n",
            "2:16: `signalr.api_version`: unknown value `2023-01-01`; use one of `2022-06-01`, `v1`",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("hubs:\n  h: {{}}\n{extra}");
        let (pos, message) = expected.split_once(": ").unwrap();
        let (line, col) = pos.split_once(':').unwrap();
        let want = format!(
            "n.yaml:{}:{col}: {message}",
            line.parse::<usize>().unwrap() + 2
        );
        let got = errors(&text);
        assert_eq!(got.len(), 1, "case {extra:?}: {got:#?}");
        assert!(
            got[0].starts_with(&want),
            "case {extra:?}: want `{want}`, got {got:#?}"
        );
    }
    // Defaults, and values that parse.
    let c = load("hubs: {h: {}}\n").unwrap();
    assert_eq!(c.http.timeouts, ListenerTimeouts::default());
    assert_eq!(c.api_version, crate::signalr::rest::ApiVersion::V2022_06_01);
    let c = load(
        "hubs: {h: {}}\nhttp: {header_read_timeout: 3s, idle_timeout: 1m}\nsignalr:\n  api_version: v1\n  embedded: {header_read_timeout: 500ms, idle_timeout: 2m}\n",
    )
    .unwrap();
    assert_eq!(
        c.http.timeouts,
        ListenerTimeouts {
            header_read: Duration::from_secs(3),
            idle: Duration::from_secs(60),
        }
    );
    assert_eq!(c.api_version, crate::signalr::rest::ApiVersion::V1);
    match c.signalr {
        SignalrConfig::Embedded { timeouts, .. } => assert_eq!(
            timeouts,
            ListenerTimeouts {
                header_read: Duration::from_millis(500),
                idle: Duration::from_secs(120),
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_key_does_not_hide_other_errors() {
    // The four mistakes of issue 10: a misspelt key, a bad duration, a misspelt time zone
    // and a bad hub name, all in one pass.
    let text = "hubs:\n  9lives: {}\n  h: {}\ntemplates:\n  t: {target: x}\nhttp:\n  lisen: 127.0.0.1:1\n  request_timeout: 10 parsecs\nschedules:\n  s:\n    cron: '0 0 9 * * *'\n    time_zone: Europe/Berln\n    hub: h\n    template: t\n";
    let e = errors(text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("n.yaml:2:3: invalid hub name `9lives`"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("n.yaml:7:3: unknown key `lisen` in `http`"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("n.yaml:8:20: unknown unit `parsecs`"),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with("n.yaml:12:16: unknown time zone `Europe/Berln`"),
        "{e:#?}"
    );
}

#[test]
fn a_value_of_the_wrong_type_does_not_hide_other_errors() {
    // `run_on_startup` is reported as a type error; the schedule's bad cron and the route's
    // unknown hub are still found. A template left out for a type error is not "unknown".
    let text = format!(
        "{BASE}  broken:\n    target: [1]\nschedules:\n  s:\n    cron: '61 * * * * *'\n    hub: notifications\n    template: broken\n    run_on_startup: sometimes\nroutes:\n  r:\n    path: /r\n    hub: nowhere\n    template: system-status\n"
    );
    let e = errors(&text);
    let joined = e.join("\n");
    assert_eq!(e.len(), 4, "{joined}");
    for needle in [
        "n.yaml:10:13: `templates.broken.target`",
        "n.yaml:13:11: invalid cron expression `61 * * * * *`",
        "n.yaml:16:21: `schedules.s.run_on_startup`",
        "n.yaml:20:10: unknown hub `nowhere`",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
    assert!(!joined.contains("unknown template"), "{joined}");
}

#[test]
fn a_failed_variable_is_reported_once() {
    // `${NOPE}` is reported where it is written; the listen check stays silent there.
    let text = "hubs: {h: {}}\nhttp:\n  listen: ${NOPE}\n  body_limit: 0\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].contains("environment variable `NOPE` is not set"),
        "{e:#?}"
    );
    assert!(e[1].contains("body_limit must be above 0"), "{e:#?}");
}

#[test]
fn many_unknown_references_stay_cheap_and_short() {
    // Past `SUGGEST_LIMIT` defined names there is no suggestion, and the message counts the
    // names instead of listing them.
    let mut text = String::from("templates: {t: {target: x}}\nhubs:\n");
    for i in 0..300 {
        text.push_str(&format!("  h{i}: {{}}\n"));
    }
    text.push_str("schedules:\n  s: {cron: '0 * * * * *', hub: h1x, template: t}\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].ends_with("unknown hub `h1x`; 300 hubs are defined"),
        "{e:#?}"
    );
}

#[test]
fn signalr_endpoints_compile_with_roles_and_names() {
    let text = format!(
        "{BASE}signalr:
  endpoints:
    - name: east
      connection_string: 'Endpoint=https://east.service.signalr.net;AccessKey=k1;Version=1.0;'
    - name: west
      role: secondary
      connection_string: 'Endpoint=https://west.service.signalr.net;AccessKey=k2;Version=1.0;'
"
    );
    let env = |name: &str| {
        (name == "AzureSignalRConnectionString")
            .then(|| "Endpoint=https://env.service.signalr.net;AccessKey=e;".to_string())
    };
    // The list wins over the environment, as a file's connection_string does.
    let c = load_str(Path::new("n.yaml"), &text, &env).unwrap();
    let set = c.signalr.azure_endpoints().unwrap();
    use crate::signalr::endpoints::EndpointRole;
    assert_eq!(
        set.iter()
            .map(|e| (e.name.as_str(), e.role))
            .collect::<Vec<_>>(),
        [
            ("east", EndpointRole::Primary),
            ("west", EndpointRole::Secondary)
        ]
    );
    assert_eq!(
        c.signalr.azure_primary().unwrap().rest_base(),
        "https://east.service.signalr.net"
    );
    // A lone connection string is one primary named `default`.
    let c = load_str(Path::new("n.yaml"), BASE, &env).unwrap();
    let set = c.signalr.azure_endpoints().unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].name, "default");
    assert_eq!(set[0].role, EndpointRole::Primary);
}

#[test]
fn signalr_endpoints_errors_are_all_named() {
    let both = format!(
        "{BASE}signalr:
  connection_string: 'Endpoint=https://x;AccessKey=k'
  endpoints:
    - name: a
      connection_string: 'Endpoint=https://a;AccessKey=k'
"
    );
    let e = errors(&both);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("signalr.connection_string and signalr.endpoints are both set"),
        "{e:?}"
    );

    let empty = format!("{BASE}signalr:\n  endpoints: []\n");
    assert!(errors(&empty)[0].contains("at least one endpoint"));

    let bad = format!(
        "{BASE}signalr:
  endpoints:
    - name: a
      role: secondary
      connection_string: 'Endpoint=ftp://a;AccessKey=secretkey'
    - name: a
      role: secondary
      connection_string: 'Endpoint=https://b;AccessKey=k'
"
    );
    let e = errors(&bad);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.starts_with("n.yaml:13:26: invalid connection string")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("endpoint name `a` is used twice")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("at least one endpoint with `role: primary`")),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|m| m.contains("secretkey")),
        "key leaked: {e:?}"
    );

    let unknown_role = format!(
        "{BASE}signalr:\n  endpoints:\n    - {{name: a, role: tertiary, connection_string: 'Endpoint=https://a;AccessKey=k'}}\n"
    );
    assert!(!errors(&unknown_role).is_empty());
}

#[test]
fn events_compile_with_methods_patterns_and_relays() {
    let text = format!(
        r#"{BASE}  chat:
    target: chat
    arguments: ['{{{{ args[1] }}}}']
events:
  notifications:
    connected: {{ send_retained: true }}
    methods:
      ack: {{ ack: true }}
      Join: {{ join_group: 'orders-*' }}
      mine: {{ join_group: 'orders-{{{{ user }}}}' }}
      say: {{ relay: {{ template: chat, to: {{ group: '{{{{ args[0] }}}}' }} }}, rate_limit: {{ requests: 5, per: 1s }} }}
"#
    );
    let c = load(&text).unwrap();
    let e = c.events_of("NOTIFICATIONS").unwrap();
    assert!(e.send_retained);
    assert!(matches!(e.method("ACK").unwrap().action, EventAction::Ack));
    let EventAction::JoinGroup(p) = &e.method("join").unwrap().action else {
        panic!("join_group");
    };
    assert!(p.matches("orders-7", None) && !p.matches("order-7", None));
    let EventAction::JoinGroup(mine) = &e.method("mine").unwrap().action else {
        panic!("join_group");
    };
    assert!(mine.matches("orders-alice", Some("alice")));
    assert!(!mine.matches("orders-bob", Some("alice")));
    assert!(
        !mine.matches("orders-", None),
        "anonymous callers have no own group"
    );
    let say = e.method("say").unwrap();
    assert!(matches!(say.action, EventAction::Relay { .. }));
    assert!(say.rate_limit.is_some());
}

#[test]
fn group_patterns_glob_and_bind_the_user() {
    let p = GroupPattern::parse("a*b*c").unwrap();
    assert!(p.matches("abc", None) && p.matches("a-b-c", None) && p.matches("abbbc", None));
    assert!(!p.matches("ab", None) && !p.matches("acb", None) && !p.matches("abcx", None));
    let star = GroupPattern::parse("*").unwrap();
    assert!(star.matches("anything", None));
    let u = GroupPattern::parse("{{user}}-*").unwrap();
    assert!(u.matches("bob-1", Some("bob")) && !u.matches("bobby-1", Some("bob")));
    // A user id with `*` in it is literal text, never a wildcard.
    let lit = GroupPattern::parse("x-{{ user }}").unwrap();
    assert!(lit.matches("x-*", Some("*")) && !lit.matches("x-a", Some("*")));
    assert!(GroupPattern::parse("{{ now }}").is_err());
    assert!(GroupPattern::parse("a{{ user").is_err());
    assert!(GroupPattern::parse("").is_err());
}

#[test]
fn events_errors_are_all_reported_at_their_keys() {
    let text = format!(
        r#"{BASE}events:
  nope: {{}}
  notifications:
    methods:
      both: {{ ack: true, join_group: 'a-*' }}
      none: {{}}
      bad: {{ join_group: 'a-{{{{ now }}}}' }}
      relay: {{ relay: {{ template: missing }} }}
      off: {{ ack: false }}
"#
    );
    let errs = errors(&text);
    let all = errs.join("\n");
    assert!(all.contains("events for unknown hub `nope`"), "{all}");
    assert!(all.contains("method `both` needs exactly one of"), "{all}");
    assert!(all.contains("method `none` needs exactly one of"), "{all}");
    assert!(all.contains("only `{{ user }}` may appear"), "{all}");
    assert!(all.contains("unknown template `missing`"), "{all}");
    assert!(all.contains("write `ack: true`"), "{all}");
    assert_eq!(errs.len(), 6, "{all}");
}
