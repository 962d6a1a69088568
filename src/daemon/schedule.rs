//! The scheduler: one task that sleeps until the earliest next fire, fires each due schedule on
//! its wall-clock second (computing the next instant at once, so an instant never fires twice),
//! and reconciles with each new config snapshot by name and timing: unchanged schedules keep
//! their next fire time, changed ones are rescheduled, removed ones stop, new ones start.
//! Each schedule exports its next and last fire instants and how late each fire ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, live::LiveConfig, render_message};
use crate::daemon::outbox::Outbox;
use crate::message::Message;
use crate::store::{Accept, Accepted, Fire, NewMessage, RetainKey};
use crate::systemd::{HEARTBEAT_EVERY, Heartbeat};
use crate::telemetry::metrics as m;
use crate::template::TemplateError;

/// One schedule's timing state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    /// Expression and time zone: when these are unchanged, `next` is kept.
    key: (String, String),
    next: DateTime<Utc>,
}

/// Render the message of schedule `name` for the fire instant `at`. Also used by the Functions
/// timer trigger, where the host owns time.
pub fn render_schedule(
    cfg: &Config,
    name: &str,
    at: DateTime<Utc>,
    id: &str,
) -> Option<Result<Message, TemplateError>> {
    let s = cfg.schedules.get(name)?;
    let vars = serde_json::json!({
        "now": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "schedule": name,
        "id": id,
    });
    Some(render_message(&s.hub, &s.template, s.to.as_ref(), &vars))
}

/// Bring `jobs` in line with `cfg` at time `now`; returns the names to fire at once
/// (`run_on_startup` schedules that are new: all of them at start, added ones on reload).
fn reconcile(jobs: &mut BTreeMap<String, Job>, cfg: &Config, now: DateTime<Utc>) -> Vec<String> {
    let mut fire_now = Vec::new();
    jobs.retain(|name, _| cfg.schedules.contains_key(name));
    for (name, s) in &cfg.schedules {
        let key = s.timing_key();
        match jobs.get(name) {
            Some(job) if job.key == key => {}
            existing => {
                let is_new = existing.is_none();
                match s.cron.next_after(now) {
                    Some(next) => {
                        if is_new {
                            tracing::info!(schedule = %name, next = %next.to_rfc3339(), "schedule started");
                        } else {
                            tracing::info!(schedule = %name, next = %next.to_rfc3339(), "schedule rescheduled");
                        }
                        set_next_fire(name, next);
                        jobs.insert(name.clone(), Job { key, next });
                    }
                    None => {
                        tracing::warn!(schedule = %name, "schedule has no future fire time");
                        jobs.remove(name);
                    }
                }
                if is_new && s.run_on_startup {
                    fire_now.push(name.clone());
                }
            }
        }
    }
    fire_now
}

/// tokio's timer counts whole milliseconds and never fires early, so a sleep to the second
/// ends up to a millisecond after it. The loop wakes this much before a fire and sleeps the
/// rest on the thread (`nanosleep`, microseconds): it has the thread to itself.
const TIMER_GRAIN: Duration = Duration::from_millis(2);

/// Run until `shutdown`. Sends are spawned on `sends`, so shutdown can wait for them;
/// `heartbeat` beats on every turn of the loop (at least every second) for the watchdog.
///
/// `main` is the runtime the fired sends run on: the daemon runs this loop on a thread of its
/// own (see `daemon::run`), so that a fan-out burst keeping the main runtime's workers busy
/// does not delay a fire, and hands each fire's storing back to `main`.
pub async fn run(
    live: LiveConfig,
    outbox: Outbox,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
    sends: TaskTracker,
    main: tokio::runtime::Handle,
) {
    let mut changes = live.subscribe();
    let mut cfg = live.current();
    let mut jobs = BTreeMap::new();
    for name in reconcile(&mut jobs, &cfg, Utc::now()) {
        fire(&cfg, &outbox, (&sends, &main), &name, Utc::now(), None);
    }
    loop {
        heartbeat.beat();
        let earliest = jobs.values().map(|j| j.next).min();
        let wait = match earliest {
            Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => HEARTBEAT_EVERY,
        }
        .min(HEARTBEAT_EVERY);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                cfg = live.current();
                for name in reconcile(&mut jobs, &cfg, Utc::now()) {
                    fire(&cfg, &outbox, (&sends, &main), &name, Utc::now(), None);
                }
            }
            _ = tokio::time::sleep(wait.saturating_sub(TIMER_GRAIN)) => {
                // The last stretch to the instant on the thread's own clock (see `TIMER_GRAIN`).
                if let Some(rest) = earliest
                    .and_then(|t| (t - Utc::now()).to_std().ok())
                    .filter(|rest| *rest <= TIMER_GRAIN)
                {
                    std::thread::sleep(rest);
                }
                let now = Utc::now();
                for (name, job) in jobs.iter_mut() {
                    let Some(s) = cfg.schedules.get(name) else { continue };
                    let due = due_instants(job, &s.cron, now, name);
                    for &instant in &due {
                        fire(&cfg, &outbox, (&sends, &main), name, instant, Some(instant));
                        tracing::info!(schedule = %name, at = %instant.to_rfc3339(), next = %job.next.to_rfc3339(), "schedule fired");
                    }
                    if !due.is_empty() {
                        set_next_fire(name, job.next);
                    }
                }
            }
        }
    }
    tracing::debug!("scheduler stopped");
}

/// How late a fire may still be sent. A loop stalled for a moment (CPU starvation, a long
/// pause) catches up every instant it missed inside this window, each once and in order;
/// instants older than this (a suspended machine, a clock jump) are skipped and counted in
/// `herald_schedule_misses_total`, so a wake-up never releases a long burst.
pub const LATE_GRACE: Duration = Duration::from_secs(10);

/// The instants of `job` due at `now`, in order, and advance `job.next` past them.
fn due_instants(
    job: &mut Job,
    cron: &crate::cron::CronSchedule,
    now: DateTime<Utc>,
    name: &str,
) -> Vec<DateTime<Utc>> {
    let mut due = Vec::new();
    if job.next > now {
        return due;
    }
    let grace = chrono::Duration::from_std(LATE_GRACE).unwrap_or(chrono::Duration::MAX);
    if now - job.next > grace {
        metrics::counter!(m::SCHEDULE_MISSES, "schedule" => name.to_string()).increment(1);
        tracing::warn!(schedule = %name, missed_from = %job.next.to_rfc3339(),
            "schedule was late by more than {}s; skipped the fires missed before that", LATE_GRACE.as_secs());
        job.next = cron
            .next_after(now - grace)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }
    while job.next <= now {
        due.push(job.next);
        job.next = match cron.next_after(job.next) {
            Some(n) => n,
            None => {
                tracing::warn!(schedule = %name, "schedule has no future fire time");
                DateTime::<Utc>::MAX_UTC
            }
        };
    }
    due
}

/// Export `name`'s next fire instant.
fn set_next_fire(name: &str, next: DateTime<Utc>) {
    if next < DateTime::<Utc>::MAX_UTC {
        metrics::gauge!(m::SCHEDULE_NEXT_FIRE, "schedule" => name.to_string())
            .set(unix_seconds(next));
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Render one fire of `name` and store it in the outbox, in the background (tracked by
/// `sends`). A cron instant is stored at most once, also across restarts (`instant`); a fire
/// on startup or on being added has no instant and always fires.
fn fire(
    cfg: &Arc<Config>,
    outbox: &Outbox,
    (sends, main): (&TaskTracker, &tokio::runtime::Handle),
    name: &str,
    at: DateTime<Utc>,
    instant: Option<DateTime<Utc>>,
) {
    let lag = (Utc::now() - at).to_std().unwrap_or(Duration::ZERO);
    metrics::counter!(m::SCHEDULE_FIRES, "schedule" => name.to_string()).increment(1);
    metrics::gauge!(m::SCHEDULE_LAST_FIRE, "schedule" => name.to_string()).set(unix_seconds(at));
    metrics::histogram!(m::SCHEDULE_FIRE_LAG, "schedule" => name.to_string())
        .record(lag.as_secs_f64());
    let id = uuid::Uuid::now_v7().to_string();
    let message = match render_schedule(cfg, name, at, &id) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            tracing::error!(schedule = %name, error = %e, at = %e.at, "schedule template failed to render");
            metrics::counter!(m::MESSAGES, "hub" => "", "to" => "", "source" => "schedule", "outcome" => "render_failed").increment(1);
            return;
        }
        None => return,
    };
    if let Err(e) = crate::signalr::rest::check_sendable(&message) {
        tracing::error!(schedule = %name, error = %e, "scheduled message cannot be sent");
        return;
    }
    let retain = cfg.schedules.get(name).is_some_and(|s| s.retain);
    let source = format!("schedule:{name}");
    let accept = Accept {
        messages: vec![NewMessage {
            id,
            retain: retain.then(|| RetainKey {
                source: source.clone(),
                key: String::new(),
            }),
            for_acks: cfg.acks_in(&message.hub),
            source,
            message,
        }],
        idempotency: None,
        fire: instant.map(|i| Fire {
            schedule: name.to_string(),
            instant_ms: i.timestamp_millis(),
        }),
    };
    let outbox = outbox.clone();
    let name = name.to_string();
    sends.spawn_on(
        async move {
        match outbox.accept(accept).await {
            Ok(Accepted::FireSeen) => {
                tracing::info!(schedule = %name, "this fire was stored by an earlier run; not again");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(schedule = %name, error = %e, "scheduled message could not be stored"),
        }
    },
        main,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        crate::config::load_str(Path::new("t.yaml"), text, &|_| None).unwrap()
    }

    const BASE: &str = "hubs: {h: {}}\ntemplates: {t: {target: x, arguments: ['{{ now }}']}}\n";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reconcile_keeps_unchanged_and_reschedules_changed() {
        let a = cfg(&format!(
            "{BASE}schedules:\n  keep: {{cron: '0 */30 * * * *', hub: h, template: t}}\n  change: {{cron: '0 0 * * * *', hub: h, template: t}}\n  drop: {{cron: '* * * * * *', hub: h, template: t}}\n"
        ));
        let mut jobs = BTreeMap::new();
        assert!(reconcile(&mut jobs, &a, utc("2026-01-01T10:05:00Z")).is_empty());
        let keep_before = jobs["keep"].clone();
        assert_eq!(keep_before.next, utc("2026-01-01T10:30:00Z"));

        let b = cfg(&format!(
            "{BASE}schedules:\n  keep: {{cron: '0 */30 * * * *', hub: h, template: t}}\n  change: {{cron: '0 15 * * * *', hub: h, template: t}}\n  new: {{cron: '0 0 12 * * *', hub: h, template: t, run_on_startup: true}}\n"
        ));
        let fire = reconcile(&mut jobs, &b, utc("2026-01-01T10:20:00Z"));
        assert_eq!(fire, ["new"]);
        assert_eq!(
            jobs["keep"], keep_before,
            "unchanged schedule keeps its next fire"
        );
        assert_eq!(jobs["change"].next, utc("2026-01-01T11:15:00Z"));
        assert!(!jobs.contains_key("drop"));
        assert_eq!(jobs["new"].next, utc("2026-01-01T12:00:00Z"));
    }

    #[test]
    fn late_fires_catch_up_within_grace_and_skip_beyond() {
        let cron = crate::cron::CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let key = ("* * * * * *".to_string(), "UTC".to_string());
        let mut job = Job {
            key: key.clone(),
            next: utc("2026-01-01T10:00:00Z"),
        };
        // A 2.5 s stall: every missed second is fired once, in order.
        let due = due_instants(&mut job, &cron, utc("2026-01-01T10:00:02.500Z"), "s");
        assert_eq!(
            due,
            [
                utc("2026-01-01T10:00:00Z"),
                utc("2026-01-01T10:00:01Z"),
                utc("2026-01-01T10:00:02Z")
            ]
        );
        assert_eq!(job.next, utc("2026-01-01T10:00:03Z"));
        assert!(due_instants(&mut job, &cron, utc("2026-01-01T10:00:02.900Z"), "s").is_empty());
        // An hour asleep: only the last ten seconds are caught up.
        let mut job = Job {
            key,
            next: utc("2026-01-01T10:00:00Z"),
        };
        let due = due_instants(&mut job, &cron, utc("2026-01-01T11:00:00.500Z"), "s");
        assert_eq!(due.len(), 10);
        assert_eq!(due[0], utc("2026-01-01T10:59:51Z"));
        assert_eq!(job.next, utc("2026-01-01T11:00:01Z"));
    }

    #[test]
    fn render_uses_the_fire_instant() {
        let c = cfg(&format!(
            "{BASE}schedules:\n  s: {{cron: '* * * * * *', hub: h, template: t}}\n"
        ));
        let m = render_schedule(&c, "s", utc("2026-01-01T10:00:07Z"), "m1")
            .unwrap()
            .unwrap();
        assert_eq!(
            m.arguments,
            vec![serde_json::json!("2026-01-01T10:00:07.000Z")]
        );
        assert!(render_schedule(&c, "nope", Utc::now(), "m1").is_none());
    }
}
