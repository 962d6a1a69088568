//! `herald check` and `herald schema` driven as a user runs them: the built binary, real files.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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

/// Run `herald check -c FILE` with `env` set (and the example variables unset), failing the
/// test if it takes longer than `limit`: output goes to files, so nothing blocks on a pipe.
fn check_within(file: &Path, env: &[(&str, String)], limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["check", "-c"])
        .arg(file)
        .env_remove("AzureSignalRConnectionString")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for var in EXAMPLE_VARIABLES {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run herald");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "herald check -c {} still running after {limit:?}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// Variables the examples may name; unset for every run so only what a file names is set.
const EXAMPLE_VARIABLES: &[&str] = &["STATUS_API_KEY", "ORDERS_API_KEY", "JWT_SECRET"];

/// A bound for runs that must end "at once": generous, for a debug build on a loaded 2-core
/// machine running tests in parallel (100,000 unknown keys take about 4.5 s of CPU in a debug
/// build and a small fraction of that in release; work per key is constant, measured at 25k,
/// 50k and 100k keys). A file that is read without bound or checked quadratically blows far
/// past it.
const PROMPTLY: Duration = Duration::from_secs(30);

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let f = dir.path().join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn unknown_key_does_not_hide_an_invalid_cron() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "n.yaml",
        "hubs:\n  h: {}\ntemplates:\n  t: {target: x}\nschedules:\n  s:\n    cron: \"61 * * * * *\"\n    hub: h\n    template: t\n    colour: blue\n",
    );
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = f.display();
    assert!(
        stderr.contains(&format!("{p}:7:11: invalid cron expression `61 * * * * *`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}:10:5: unknown key `colour` in `schedules.s`")),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors found"), "{stderr}");
}

#[test]
fn four_kinds_of_mistake_are_reported_in_one_pass() {
    // A misspelt key, a bad duration, a misspelt time zone and a bad hub name.
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "n.yaml",
        "hubs:\n  9lives: {}\n  h: {}\ntemplates:\n  t: {target: x}\nhttp:\n  lisen: 127.0.0.1:1\n  request_timeout: 10 parsecs\nschedules:\n  s:\n    cron: '0 0 9 * * *'\n    time_zone: Europe/Berln\n    hub: h\n    template: t\n",
    );
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = f.display();
    for want in [
        format!("{p}:2:3: invalid hub name `9lives`"),
        format!("{p}:7:3: unknown key `lisen` in `http`; did you mean `listen`?"),
        format!("{p}:8:20: unknown unit `parsecs`"),
        format!("{p}:12:16: unknown time zone `Europe/Berln`"),
    ] {
        assert!(stderr.contains(&want), "missing `{want}` in:\n{stderr}");
    }
    assert!(stderr.contains("4 errors found"), "{stderr}");
}

#[test]
fn a_hundred_thousand_unknown_keys_are_rejected_promptly_with_a_capped_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("hubs:\n  h: {}\n");
    for i in 0..100_000 {
        yaml.push_str(&format!("k{i}: 1\n"));
    }
    let f = write(&dir, "many.yaml", &yaml);
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\n... and 99950 more errors\n"), "{stderr}");
    assert!(stderr.ends_with("100000 errors found\n"), "{stderr}");
    // The first 50, in file order, each with its line.
    let shown: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&*f.to_string_lossy()))
        .collect();
    assert_eq!(shown.len(), 50, "{stderr}");
    assert!(shown[0].contains(":3:1: unknown key `k0`"), "{}", shown[0]);
    assert!(
        shown[49].contains(":52:1: unknown key `k49`"),
        "{}",
        shown[49]
    );
}

#[test]
fn the_same_keys_on_one_line_are_rejected_promptly_too() {
    // JSON is YAML: one line with every key on it must not cost a scan per key.
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\": 1")).collect();
    let f = write(
        &dir,
        "many.json",
        &format!("{{\"hubs\": {{\"h\": {{}}}}, {}}}\n", keys.join(", ")),
    );
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("... and 99950 more errors"),
        "{stderr:.2000}"
    );
    // Snippets of a long line show a window, not the whole line.
    assert!(stderr.len() < 50 * 1000, "{} bytes of report", stderr.len());
}

#[test]
fn a_device_is_refused_at_once() {
    let out = check_within(Path::new("/dev/zero"), &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("/dev/zero: not a config file: it is a character device"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let out = check_within(&fifo, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}: not a config file: it is a FIFO",
            fifo.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_file_over_four_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("hubs:\n  h: {}\n");
    while yaml.len() <= 5 * 1024 * 1024 {
        yaml.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let f = write(&dir, "big.yaml", &yaml);
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}: config file is larger than 4 MiB",
            f.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_yaml_syntax_error_names_its_position_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "n.yaml", "hubs:\n  h: {}\nhttp:\n  listen: [1, 2\n");
    let out = check_within(&f, &[], PROMPTLY);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("{}:4:11: invalid YAML: unclosed bracket '['", f.display())
    );
}

/// The variables an example's leading comment says to export (`#   export NAME=...`).
fn exported_variables(yaml: &str) -> Vec<String> {
    yaml.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn every_example_passes_check_with_exactly_the_variables_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("notifications.yaml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            files.push(p);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let yaml = std::fs::read_to_string(&f).unwrap();
        let names = exported_variables(&yaml);
        let env: Vec<(&str, String)> = names.iter().map(|n| (n.as_str(), "k".repeat(40))).collect();
        let out = check_within(&f, &env, PROMPTLY);
        assert!(
            out.status.success(),
            "{} with {names:?} exported:\n{}",
            f.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": valid (sha256 "),
            "{}",
            text(&out.stdout)
        );
        // Each named variable is really needed: without it, check names it.
        for missing in &names {
            let fewer: Vec<(&str, String)> =
                env.iter().filter(|(n, _)| n != missing).cloned().collect();
            let out = check_within(&f, &fewer, PROMPTLY);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{} without {missing}",
                f.display()
            );
            assert!(
                text(&out.stderr).contains(&format!("environment variable `{missing}` is not set")),
                "{}",
                text(&out.stderr)
            );
        }
    }
}

/// The `HERALD_` overlay, in a child process so no test changes this process's environment
/// (a variable set here would leak into every parse running in parallel).
#[test]
fn environment_overrides_are_layered_and_their_unknown_keys_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "e.yaml",
        "hubs:\n  h: {}\nhttp:\n  listen: 127.0.0.1:1\n",
    );
    let out = check_within(
        &file,
        &[("HERALD_HTTP__LISTEN", "0.0.0.0:9999".to_string())],
        PROMPTLY,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("http: 0.0.0.0:9999"),
        "{}",
        text(&out.stdout)
    );
    let out = check_within(
        &file,
        &[("HERALD_HTTP__LISTN", "0.0.0.0:9999".to_string())],
        PROMPTLY,
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains(
            "env HERALD_HTTP__LISTN: unknown key `listn` in `http`; did you mean `listen`?"
        ),
        "{all}"
    );
}
