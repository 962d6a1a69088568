//! The config loader on arbitrary input: whatever an operator saves, `load` answers with a
//! config or with located errors, and never panics.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Text built from YAML-ish pieces, so the parser gets deep into real structures.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: ".to_string()),
        Just("${HOME}".to_string()),
        Just("${".to_string()),
        Just("{{ x }}".to_string()),
        Just("{% if %}".to_string()),
        prop::sample::select(vec![
            "hubs",
            "templates",
            "schedules",
            "routes",
            "http",
            "signalr",
            "cron",
            "hub",
            "template",
            "target",
            "arguments",
            "to",
            "user",
            "path",
            "method",
            "auth",
            "api_key",
            "time_zone",
            "listen",
            "negotiate",
            "embedded",
            "rate_limit",
            "requests",
            "per",
        ])
        .prop_map(str::to_string),
        "[a-z0-9*/ ]{1,8}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|parts| parts.concat())
}

proptest! {
    // A failing case is kept in `tests/config_props.proptest-regressions`, next to this file
    // (commit it: proptest replays it first on every later run).
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn loading_never_panics(text in yamlish()) {
        let env = |name: &str| (name == "HOME").then(|| "/home/x".to_string());
        match herald::config::load_str(Path::new("f.yaml"), &text, &env) {
            Ok(_) => {}
            Err(errors) => prop_assert!(!errors.diagnostics.is_empty()),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = herald::config::load_str(Path::new("f.yaml"), &text, &|_| None);
    }
}
