//! `herald check` and `herald schema` driven as a user runs them: the built binary, real files.

use std::path::Path;
use std::process::{Command, Output};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("AzureSignalRConnectionString")
        .env_remove("STATUS_API_KEY")
        .output()
        .expect("run herald")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn repository_config_is_valid_and_lists_half_hour_fires() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("notifications.yaml");
    let out = herald(&["check", "-c", cfg.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("notifications  negotiate GET|POST /api/negotiate"),
        "{stdout}"
    );
    assert!(stdout.contains("POST /api/status"), "{stdout}");
    let fires: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("next: "))
        .collect();
    assert_eq!(fires.len(), 3, "{stdout}");
    for f in fires {
        let minute_second = &f[14..19];
        assert!(minute_second == "00:00" || minute_second == "30:00", "{f}");
    }
}

#[test]
fn misspelt_section_names_line_column_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n.yaml");
    std::fs::write(&f, "hubs:\n  notifications: {}\nshedules:\n  x: {}\n").unwrap();
    let out = herald(&["check", "-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:1: unknown key `shedules`; did you mean `schedules`?",
            f.display()
        )),
        "{stderr}"
    );
}

#[test]
fn bad_cron_and_unknown_template_exit_1_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n.yaml");
    std::fs::write(
        &f,
        "hubs:\n  h: {}\ntemplates:\n  t: {target: x}\nschedules:\n  a:\n    cron: \"61 * * * * *\"\n    hub: h\n    template: t\n  b:\n    cron: \"0 * * * * *\"\n    hub: h\n    template: missing\n",
    )
    .unwrap();
    let out = herald(&["check", "-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = f.display();
    assert!(
        stderr.contains(&format!("{p}:7:11: invalid cron expression `61 * * * * *`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}:13:15: unknown template `missing`")),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors found"), "{stderr}");
}

#[test]
fn schema_command_matches_committed_file() {
    let out = herald(&["schema"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/notifications.schema.json"),
    )
    .unwrap();
    assert_eq!(text(&out.stdout), committed);
}

#[test]
fn usage_errors_exit_2() {
    let out = herald(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = herald(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("herald "));
}
