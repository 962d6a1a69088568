//! Hot reload: each way an operator or platform edits the file (in-place write, rename-replace,
//! `sed -i`, a Kubernetes ConfigMap `..data` swap, SIGHUP) is picked up; an invalid edit keeps
//! the last good config running and `/healthz` names the error; a 1 s schedule fires exactly
//! once per second across reloads of unrelated keys; an added route answers right away.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::http::wait_until;
use support::{Daemon, DaemonYaml, Recorder, start_with_recorder_in};

const WAIT: Duration = Duration::from_secs(10);

/// The base config (Azure from the environment, an open `status` route) whose template
/// sends `text`, with `extra` written after the routes.
fn yaml(text: &str, extra: &str) -> String {
    DaemonYaml::azure()
        .open_route()
        .arguments(&format!("[\"{text}\"]"))
        .section(extra)
        .build()
}

async fn start(text: &str) -> (Recorder, Daemon) {
    support::start_with_recorder(&yaml(text, "")).await
}

/// POST the route and return the argument the service received.
async fn sent_text(rec: &Recorder, d: &Daemon) -> Value {
    let before = rec.sends().len();
    let r = reqwest::Client::new()
        .post(d.url("/api/status"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let sends = rec.wait_for(before + 1, WAIT).await;
    sends[before].json()["arguments"][0].clone()
}

async fn assert_reloaded(rec: &Recorder, d: &Daemon) {
    let h = d.wait_generation(2, WAIT).await;
    assert_eq!(h["config"]["last_reload"]["outcome"], "applied", "{h}");
    assert_eq!(sent_text(rec, d).await, "v2");
}

#[tokio::test]
async fn in_place_write_is_picked_up() {
    let (rec, d) = start("v1").await;
    assert_eq!(sent_text(&rec, &d).await, "v1");
    std::fs::write(&d.config_path, yaml("v2", "")).unwrap();
    assert_reloaded(&rec, &d).await;
}

#[tokio::test]
async fn rename_replace_is_picked_up_repeatedly() {
    let (rec, d) = start("v1").await;
    let tmp = d.dir.path().join(".notifications.yaml.swp");
    std::fs::write(&tmp, yaml("v2", "")).unwrap();
    std::fs::rename(&tmp, &d.config_path).unwrap();
    assert_reloaded(&rec, &d).await;
    // The watch survives the rename: a second replace is seen too.
    std::fs::write(&tmp, yaml("v3", "")).unwrap();
    std::fs::rename(&tmp, &d.config_path).unwrap();
    d.wait_generation(3, WAIT).await;
    assert_eq!(sent_text(&rec, &d).await, "v3");
}

#[tokio::test]
async fn sed_in_place_is_picked_up() {
    let (rec, d) = start("v1").await;
    let status = std::process::Command::new("sed")
        .args(["-i", "s/\"v1\"/\"v2\"/"])
        .arg(&d.config_path)
        .status()
        .unwrap();
    assert!(status.success());
    assert_reloaded(&rec, &d).await;
}

fn configmap_version(mount: &Path, name: &str, text: &str) {
    let dir = mount.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notifications.yaml"), yaml(text, "")).unwrap();
}

/// Point `..data` at `..<name>` atomically, as the kubelet does.
fn configmap_swap(mount: &Path, name: &str) {
    let tmp = mount.join("..data_tmp");
    std::os::unix::fs::symlink(name, &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir(&mount).unwrap();
    configmap_version(&mount, "..2026_01_01_00_00_00.1", "v1");
    configmap_swap(&mount, "..2026_01_01_00_00_00.1");
    std::os::unix::fs::symlink(
        "..data/notifications.yaml",
        mount.join("notifications.yaml"),
    )
    .unwrap();
    let path = mount.join("notifications.yaml");
    let (rec, d) = start_with_recorder_in(dir, path, &[]).await;
    assert_eq!(sent_text(&rec, &d).await, "v1");

    configmap_version(&mount, "..2026_01_01_00_01_00.2", "v2");
    configmap_swap(&mount, "..2026_01_01_00_01_00.2");
    std::fs::remove_dir_all(mount.join("..2026_01_01_00_00_00.1")).unwrap();
    assert_reloaded(&rec, &d).await;

    configmap_version(&mount, "..2026_01_01_00_02_00.3", "v3");
    configmap_swap(&mount, "..2026_01_01_00_02_00.3");
    d.wait_generation(3, WAIT).await;
    assert_eq!(sent_text(&rec, &d).await, "v3");
}

#[tokio::test]
async fn sighup_reloads_without_a_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifications.yaml");
    std::fs::write(&path, yaml("v1", "")).unwrap();
    let (rec, d) = start_with_recorder_in(dir, path, &["--no-watch"]).await;
    std::fs::write(&d.config_path, yaml("v2", "")).unwrap();
    // Without the watcher the edit waits for the signal.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(d.health().await["config"]["generation"], 1);
    assert_eq!(sent_text(&rec, &d).await, "v1");
    d.signal("HUP");
    assert_reloaded(&rec, &d).await;
}

#[tokio::test]
async fn invalid_edit_keeps_the_last_good_config() {
    let extra = "schedules:\n  tick:\n    cron: '* * * * * *'\n    hub: notifications\n    template: status\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifications.yaml");
    std::fs::write(&path, yaml("v1", extra)).unwrap();
    let (rec, d) = start_with_recorder_in(dir, path, &[]).await;

    let bad = yaml("v2", &extra.replace("'* * * * * *'", "bogus"));
    std::fs::write(&d.config_path, &bad).unwrap();
    let h = wait_outcome(&d, "rejected").await;
    assert_eq!(h["config"]["generation"], 1);
    let error = h["config"]["last_reload"]["errors"][0].as_str().unwrap();
    let expected = format!(
        "{}:16:11: invalid cron expression `bogus`",
        d.config_path.display()
    );
    assert!(error.starts_with(&expected), "{error}");
    // Routes still answer with the old template, and the schedule keeps firing.
    let before = rec.sends().len();
    let after = rec.wait_for(before + 2, WAIT).await;
    assert!(
        after.len() >= before + 2,
        "schedule stopped after an invalid edit"
    );
    assert_eq!(sent_text(&rec, &d).await, "v1");
    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_config_last_reload_successful 0"),
        "{metrics}"
    );

    // Fixing the file applies it.
    std::fs::write(&d.config_path, yaml("v2", extra)).unwrap();
    d.wait_generation(2, WAIT).await;
    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_config_last_reload_successful 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_second_schedule_is_undisturbed_by_ten_reloads() {
    let extra = "schedules:\n  tick:\n    cron: '* * * * * *'\n    hub: tick\n    template: tick\n";
    let text = |n: u32| {
        yaml(&format!("unrelated edit {n}"), extra)
            .replace(
                "hubs:\n  notifications: {}\n",
                "hubs:\n  notifications: {}\n  tick: {}\n",
            )
            .replace(
                "templates:\n",
                "templates:\n  tick:\n    target: tick\n    arguments: ['{{ now }}']\n",
            )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifications.yaml");
    std::fs::write(&path, text(0)).unwrap();
    let (rec, d) = start_with_recorder_in(dir, path, &[]).await;
    for n in 1..=10u64 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::fs::write(&d.config_path, text(n as u32)).unwrap();
        d.wait_generation(n + 1, WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut seconds: Vec<i64> = rec
        .sends()
        .iter()
        .filter(|s| s.path == "/api/hubs/tick/:send")
        .map(|s| {
            let t = s.json()["arguments"][0].as_str().unwrap().to_string();
            chrono::DateTime::parse_from_rfc3339(&t)
                .unwrap()
                .timestamp()
        })
        .collect();
    assert!(seconds.len() >= 8, "too few fires: {seconds:?}");
    let received = seconds.clone();
    seconds.sort_unstable();
    seconds.dedup();
    assert_eq!(
        seconds.len(),
        received.len(),
        "a second fired twice: {received:?}"
    );
    let (first, last) = (seconds[0], seconds[seconds.len() - 1]);
    assert_eq!(
        seconds.len() as i64,
        last - first + 1,
        "a second was skipped: {seconds:?}"
    );
}

#[tokio::test]
async fn a_route_added_by_an_edit_answers_right_after() {
    let (rec, d) = start("v1").await;
    let r = reqwest::Client::new()
        .post(d.url("/api/added"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let added = "  added:\n    path: /api/added\n    hub: notifications\n    template: status\n";
    std::fs::write(&d.config_path, yaml("v1", added)).unwrap();
    d.wait_generation(2, WAIT).await;
    let r = reqwest::Client::new()
        .post(d.url("/api/added"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let _ = rec.wait_for(1, WAIT).await;
}

#[test]
fn js_client_sees_changed_template_text_after_sed_and_in_place_write() {
    let yaml = |text: &str| {
        DaemonYaml::embedded()
            .open_route()
            .arguments(&format!("[\"{text}\"]"))
            .build()
    };
    let d = Daemon::start(&yaml("first text"), &[]);
    let mut client = support::ClientProcess::js(&["--url", &d.url("/api")]);
    client.connected();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = || {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(d.url("/api/status"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        })
    };
    post();
    client.wait_for(WAIT, |v| v["args"] == json!(["first text"]));

    let status = std::process::Command::new("sed")
        .args(["-i", "s/first text/second text/"])
        .arg(&d.config_path)
        .status()
        .unwrap();
    assert!(status.success());
    rt.block_on(d.wait_generation(2, WAIT));
    post();
    client.wait_for(WAIT, |v| v["args"] == json!(["second text"]));

    std::fs::write(&d.config_path, yaml("third text")).unwrap();
    rt.block_on(d.wait_generation(3, WAIT));
    post();
    client.wait_for(WAIT, |v| v["args"] == json!(["third text"]));
}

/// `/healthz` until the last reload's outcome is `outcome`.
async fn wait_outcome(d: &Daemon, outcome: &str) -> Value {
    wait_until(WAIT, format!("no {outcome} reload"), || async {
        let h = d.health().await;
        if h["config"]["last_reload"]["outcome"] == outcome {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .await
}

async fn metric_line(d: &Daemon, name: &str) -> String {
    let text = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

#[tokio::test]
async fn reverting_a_rejected_edit_clears_the_rejection_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifications.yaml");
    let good = yaml("v1", "");
    std::fs::write(&path, &good).unwrap();
    let (rec, d) = start_with_recorder_in(dir, path, &["--no-watch"]).await;
    assert_eq!(d.health().await["status"], "ok");

    std::fs::write(&d.config_path, yaml("v2", "  bogus_key: 1\n")).unwrap();
    d.signal("HUP");
    let h = wait_outcome(&d, "rejected").await;
    assert_eq!(h["status"], "degraded", "{h}");
    let reason = h["reason"].as_str().unwrap();
    assert!(reason.contains("rejected"), "{reason}");
    assert_eq!(
        metric_line(&d, "herald_config_last_reload_successful").await,
        "herald_config_last_reload_successful 0"
    );
    // The old config still serves: ready, and routes answer with it.
    let r = reqwest::get(d.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_text(&rec, &d).await, "v1");

    // Put the running content back: same hash as what runs, and still a successful reload.
    std::fs::write(&d.config_path, &good).unwrap();
    d.signal("HUP");
    let h = wait_outcome(&d, "restored").await;
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h.get("reason").is_none(), "{h}");
    assert_eq!(h["config"]["generation"], 1);
    assert_eq!(
        metric_line(&d, "herald_config_last_reload_successful").await,
        "herald_config_last_reload_successful 1"
    );
    // A further SIGHUP of the same content is simply unchanged.
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.health().await["config"]["last_reload"]["outcome"],
        "restored"
    );
}

#[tokio::test]
async fn reverting_with_the_watcher_clears_the_rejection() {
    let (_rec, d) = start("v1").await;
    let good = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(&d.config_path, yaml("v1", "  broken: [").as_str()).unwrap();
    wait_outcome(&d, "rejected").await;
    std::fs::write(&d.config_path, good).unwrap();
    let h = wait_outcome(&d, "restored").await;
    assert_eq!(h["status"], "ok", "{h}");
}

#[tokio::test]
async fn restart_only_keys_stay_pending_while_the_rest_applies() {
    let (rec, d) = start("v1").await;
    assert_eq!(d.health().await["restart_required"], json!([]));
    assert_eq!(
        metric_line(&d, "herald_config_restart_required").await,
        "herald_config_restart_required 0"
    );
    let slow = |text: &str| {
        yaml(text, "").replace(
            "  listen: 127.0.0.1:0\n",
            "  listen: 127.0.0.1:0\n  request_timeout: 9s\n",
        )
    };
    std::fs::write(&d.config_path, slow("v2")).unwrap();
    let h = d.wait_generation(2, WAIT).await;
    assert_eq!(
        h["restart_required"],
        json!(["http.request_timeout"]),
        "{h}"
    );
    assert_eq!(h["status"], "ok");
    assert_eq!(sent_text(&rec, &d).await, "v2", "the other keys apply");
    assert_eq!(
        metric_line(&d, "herald_config_restart_required").await,
        "herald_config_restart_required 1"
    );
    // Another edit does not forget the pending restart (it compares with the started config).
    std::fs::write(&d.config_path, slow("v3")).unwrap();
    let h = d.wait_generation(3, WAIT).await;
    assert_eq!(
        h["restart_required"],
        json!(["http.request_timeout"]),
        "{h}"
    );
    // Going back to the started value clears it.
    std::fs::write(&d.config_path, yaml("v4", "")).unwrap();
    let h = d.wait_generation(4, WAIT).await;
    assert_eq!(h["restart_required"], json!([]), "{h}");
    assert_eq!(
        metric_line(&d, "herald_config_restart_required").await,
        "herald_config_restart_required 0"
    );
}
