//! The fan-out run: connect N clients, then for each phase publish at a paced rate over HTTP,
//! each message carrying `seq` and a send timestamp `t` (µs since the epoch), and count what
//! every client receives: deliveries/s in the publishing window, loss, duplicates, latency
//! (HDR), server CPU, and server RSS per connection (before and after connecting).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, watch};

use crate::procstat::{self, CpuMark};
use crate::proto::{self, Frame, Proto};

/// Latency histogram shards (clients record into `index % SHARDS`).
const SHARDS: usize = 32;
/// Idle keep-alive connections the negotiating client keeps per host.
const CONNECT_POOL: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every message to every client.
    Broadcast,
    /// Every message to one group of `--group-size` clients (herald only).
    Group,
    /// Every message to one user, one connection each (herald only).
    User,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server label written into the results (herald, lean, ws, socketio).
    #[arg(long)]
    pub server: String,
    #[arg(long, value_enum)]
    pub proto: Proto,
    /// herald's negotiate URL (SignalR), or the WebSocket URL.
    #[arg(long)]
    pub connect: String,
    /// The URL messages are POSTed to (herald: a status route).
    #[arg(long)]
    pub publish: String,
    /// Sent as X-API-Key with every publish.
    #[arg(long, default_value = "")]
    pub api_key: String,
    #[arg(long, value_enum, default_value = "broadcast")]
    pub scenario: Scenario,
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Group size for `--scenario group`.
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// Phases as RATE:SECONDS (messages per second asked), comma-separated, run in order on
    /// the same connections, e.g. `20:10,200:10`.
    #[arg(long, default_value = "20:10")]
    pub phases: String,
    /// Size of the published JSON message in bytes (padded with a `p` field).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// PID of the server process, for CPU and RSS.
    #[arg(long)]
    pub pid: String,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub publish_concurrency: usize,
    /// The embedded service's base URL and access key (group membership for `group`).
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    pub service: String,
    #[arg(long, default_value = "")]
    pub access_key: String,
    #[arg(long, default_value = "notifications")]
    pub hub: String,
    /// Results file (JSON lines, appended).
    #[arg(long)]
    pub out: String,
    /// Extra label (e.g. `sweep`), written into the results.
    #[arg(long, default_value = "")]
    pub tag: String,
    /// herald's `/metrics` URL: after the phases, record how late its schedules fired and
    /// how many config reloads it took during the run (an `under_load` record).
    #[arg(long)]
    pub metrics: Option<String>,
}

struct Phase {
    rate: f64,
    secs: f64,
    /// First seq of the phase; seqs of phase p are `base .. base + planned`.
    base: u64,
    planned: u64,
}

/// Counters shared by the clients for one phase.
struct PhaseStats {
    unique: AtomicU64,
    dups: AtomicU64,
    in_window: AtomicU64,
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
    last_us: AtomicU64,
    hist: Vec<std::sync::Mutex<Histogram<u64>>>,
    /// Send to answer (the 202) of every accepted publish, in µs.
    answers: Arc<std::sync::Mutex<Histogram<u64>>>,
}

struct Shared {
    proto: Proto,
    phases: Vec<Phase>,
    stats: Vec<PhaseStats>,
    total_seqs: u64,
    disconnects: AtomicU64,
    closed_by_server: AtomicU64,
    stop: AtomicBool,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn parse_phases(text: &str) -> Result<Vec<Phase>> {
    let mut phases = Vec::new();
    let mut base = 0;
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (rate, secs) = part
            .split_once(':')
            .with_context(|| format!("phase `{part}`: write RATE:SECONDS"))?;
        let rate: f64 = rate
            .parse()
            .with_context(|| format!("phase `{part}`: rate"))?;
        let secs: f64 = secs
            .parse()
            .with_context(|| format!("phase `{part}`: seconds"))?;
        if rate <= 0.0 || secs <= 0.0 {
            bail!("phase `{part}`: rate and seconds must be positive");
        }
        let planned = (rate * secs).ceil() as u64;
        phases.push(Phase {
            rate,
            secs,
            base,
            planned,
        });
        base += planned;
    }
    if phases.is_empty() {
        bail!("no phases given");
    }
    Ok(phases)
}

pub async fn run(args: Args) -> Result<()> {
    let phases = parse_phases(&args.phases)?;
    let total_seqs = phases.iter().map(|p| p.planned).sum();
    let stats = phases
        .iter()
        .map(|_| PhaseStats {
            unique: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            answers: Arc::new(std::sync::Mutex::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            )),
            hist: (0..SHARDS)
                .map(|_| {
                    std::sync::Mutex::new(
                        Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
                    )
                })
                .collect(),
        })
        .collect();
    let shared = Arc::new(Shared {
        proto: args.proto,
        phases,
        stats,
        total_seqs,
        disconnects: AtomicU64::new(0),
        closed_by_server: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    // Negotiates get their own client that keeps few idle connections, as a browser's one
    // negotiate per page does not leave a pool behind: otherwise the server's RSS per
    // WebSocket connection would count the tool's idle keep-alive HTTP connections (hyper
    // keeps about 25 KiB of buffers for each; ~400 of them with a 1024-connection pool).
    let connect_http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECT_POOL)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;

    // Connect.
    let rss_before = procstat::rss_kib(&args.pid)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let connect_errors = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let members: Arc<Mutex<Vec<(usize, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut connecting = Vec::with_capacity(args.clients);
    let mut clients = Vec::with_capacity(args.clients);
    let (client_tx, mut client_rx) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..args.clients {
        let permit = gate.clone().acquire_owned().await.context("connect gate")?;
        let (http, shared, first_error, connect_errors, connected, members, client_tx) = (
            connect_http.clone(),
            shared.clone(),
            first_error.clone(),
            connect_errors.clone(),
            connected.clone(),
            members.clone(),
            client_tx.clone(),
        );
        let url = args.connect.clone();
        let stop_rx = stop_rx.clone();
        let user = (args.scenario == Scenario::User).then(|| format!("u{index}"));
        connecting.push(tokio::spawn(async move {
            let result = proto::connect(shared.proto, &url, user.as_deref(), &http).await;
            drop(permit);
            match result {
                Ok(conn) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = conn.connection_id.clone() {
                        members.lock().await.push((index, id));
                    }
                    let handle = tokio::spawn(client(index, conn.ws, shared, stop_rx));
                    let _ = client_tx.send(handle);
                }
                Err(e) => {
                    connect_errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = first_error.lock().await;
                    if first.is_none() {
                        *first = Some(format!("{e:#}"));
                    }
                }
            }
        }));
    }
    for c in connecting {
        c.await.context("connect task")?;
    }
    drop(client_tx);
    while let Some(handle) = client_rx.recv().await {
        clients.push(handle);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connected = connected.load(Ordering::Relaxed) as usize;
    let connect_errors = connect_errors.load(Ordering::Relaxed);
    let first_error = first_error.lock().await.clone();
    eprintln!(
        "[{}] {connected}/{} connected in {connect_secs:.1} s ({connect_errors} errors{})",
        args.server,
        args.clients,
        first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );

    // Group membership: connection i joins group g{i / group_size}.
    if args.scenario == Scenario::Group {
        let members = members.lock().await.clone();
        let gate = Arc::new(Semaphore::new(64));
        let mut joins = Vec::new();
        for (index, id) in members {
            let permit = gate.clone().acquire_owned().await.context("join gate")?;
            let group = format!("g{}", index / args.group_size);
            let path = format!("/api/hubs/{}/groups/{group}/connections/{id}", args.hub);
            let url = format!("{}{path}?api-version=2022-06-01", args.service);
            let token = rest_token(&args.service, &path, &args.access_key)?;
            let http = http.clone();
            joins.push(tokio::spawn(async move {
                let r = http.put(&url).bearer_auth(token).send().await;
                drop(permit);
                r.map_err(anyhow::Error::from)
                    .and_then(|r| r.error_for_status().map_err(anyhow::Error::from))
            }));
        }
        for j in joins {
            j.await
                .context("join task")?
                .context("adding a connection to its group")?;
        }
    }
    drop(connect_http);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = procstat::rss_kib(&args.pid)?;

    // Phases.
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out))?;
    for (p, phase) in shared.phases.iter().enumerate() {
        let stats = &shared.stats[p];
        let server_cpu = CpuMark::now(&args.pid)?;
        let tool_cpu = CpuMark::now("self")?;
        let (accepted, errors, sent_secs, first_publish_error) =
            publish(&args, phase, stats, connected, &http).await?;
        let (server_cpu_pct, server_cpu_window) = server_cpu.since()?;
        let (tool_cpu_pct, _) = tool_cpu.since()?;
        // Drain: wait until deliveries stop growing for a second (at most 10 s).
        let mut last = stats.unique.load(Ordering::Relaxed);
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = stats.unique.load(Ordering::Relaxed);
            if now == last && now > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if stats.unique.load(Ordering::Relaxed) == now {
                    break;
                }
            }
            last = now;
        }
        let (_, server_cpu_total) = server_cpu.since()?;
        let recipients = match args.scenario {
            Scenario::Broadcast => connected as u64,
            Scenario::Group => args.group_size.min(connected) as u64,
            Scenario::User => 1,
        };
        let expected = accepted * recipients;
        let unique = stats.unique.load(Ordering::Relaxed);
        let in_window = stats.in_window.load(Ordering::Relaxed);
        let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
        for shard in &stats.hist {
            if let Ok(h) = shard.lock() {
                hist.add(&*h).context("merging histograms")?;
            }
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let answer_ms = |q: f64| {
            stats
                .answers
                .lock()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
                .unwrap_or(f64::NAN)
        };
        let window = (stats.window_end_us.load(Ordering::Relaxed) as f64
            - stats.window_start_us.load(Ordering::Relaxed) as f64)
            / 1e6;
        let record = json!({
            "kind": "fanout",
            "server": args.server,
            "proto": args.proto,
            "scenario": args.scenario,
            "tag": args.tag,
            "clients": args.clients,
            "connected": connected,
            "connect_errors": connect_errors,
            "connect_error": first_error,
            "connect_secs": connect_secs,
            "rate_asked": phase.rate,
            "deliveries_asked_per_s": phase.rate * recipients as f64,
            "secs": phase.secs,
            "payload": args.payload,
            "published": accepted,
            "publish_errors": errors,
            "publish_error": first_publish_error,
            "published_per_s": accepted as f64 / sent_secs.max(1e-9),
            "expected": expected,
            "unique": unique,
            "lost": expected.saturating_sub(unique),
            "dups": stats.dups.load(Ordering::Relaxed),
            "deliveries_per_s": in_window as f64 / window.max(1e-9),
            "disconnects": shared.disconnects.load(Ordering::Relaxed),
            "closed_by_server": shared.closed_by_server.load(Ordering::Relaxed),
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "max_ms": hist.max() as f64 / 1000.0,
            "answer_p50_ms": answer_ms(0.5), "answer_p99_ms": answer_ms(0.99),
            "answer_max_ms": answer_ms(1.0),
            "server_cpu_pct": server_cpu_pct,
            "server_cpu_us_per_delivery": 1e6 * server_cpu_total / (unique.max(1) as f64),
            "server_cpu_window_s": server_cpu_window,
            "tool_cpu_pct": tool_cpu_pct,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_per_conn_kib": (rss_after as f64 - rss_before as f64) / (connected.max(1) as f64),
        });
        eprintln!(
            "[{}] {} rate {} x {}: {:.0} deliveries/s, lost {}, dups {}, p99 {:.1} ms, server CPU {:.0}%, tool CPU {:.0}%, disconnects {}",
            args.server,
            serde_json::to_string(&args.scenario).unwrap_or_default(),
            phase.rate,
            recipients,
            record["deliveries_per_s"].as_f64().unwrap_or(0.0),
            record["lost"],
            record["dups"],
            ms(0.99),
            server_cpu_pct,
            tool_cpu_pct,
            record["disconnects"],
        );
        use std::io::Write;
        writeln!(out, "{record}").with_context(|| format!("writing {}", args.out))?;
    }
    if let Some(url) = &args.metrics {
        let text = http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("reading /metrics")?
            .text()
            .await
            .context("reading /metrics")?;
        let sample = |series: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let lag = "herald_schedule_fire_lag_seconds";
        // The status route's time to answer, which is mostly its fsynced commit: requests
        // over 10 ms show the disk stalling under the run.
        let route = "herald_http_request_duration_seconds";
        let route_requests = sample(&format!("{route}_count{{route=\"broadcast\""));
        let route_within_10ms = sample(&format!(
            "{route}_bucket{{route=\"broadcast\",method=\"POST\",le=\"0.01\"}}"
        ));
        let record = json!({
            "kind": "under_load",
            "server": args.server,
            "tag": args.tag,
            "clients": args.clients,
            "schedule_fires": sample(&format!("{lag}_count")),
            "schedule_within_1ms": sample(&format!("{lag}_bucket{{schedule=\"tick\",le=\"0.001\"}}")),
            "schedule_within_5ms": sample(&format!("{lag}_bucket{{schedule=\"tick\",le=\"0.005\"}}")),
            "schedule_within_10ms": sample(&format!("{lag}_bucket{{schedule=\"tick\",le=\"0.01\"}}")),
            "reloads": sample("herald_config_reloads_total"),
            "route_requests": route_requests,
            "route_over_10ms": route_requests - route_within_10ms,
            "disconnects": shared.disconnects.load(Ordering::Relaxed),
            "closed_by_server": shared.closed_by_server.load(Ordering::Relaxed),
        });
        eprintln!(
            "[{}] under load: {} schedule fires, {} within 5 ms; {} reloads; {} disconnects",
            args.server,
            record["schedule_fires"],
            record["schedule_within_5ms"],
            record["reloads"],
            record["disconnects"]
        );
        use std::io::Write;
        writeln!(out, "{record}").with_context(|| format!("writing {}", args.out))?;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    Ok(())
}

/// Publishes one phase at its paced rate. Returns (accepted, errors, seconds spent sending,
/// first error).
async fn publish(
    args: &Args,
    phase: &Phase,
    stats: &PhaseStats,
    connected: usize,
    http: &reqwest::Client,
) -> Result<(u64, u64, f64, Option<String>)> {
    let gate = Arc::new(Semaphore::new(args.publish_concurrency));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let start = Instant::now();
    let start_us = now_us();
    stats.window_start_us.store(start_us, Ordering::Relaxed);
    stats
        .window_end_us
        .store(start_us + (phase.secs * 1e6) as u64, Ordering::Relaxed);
    let groups = connected.div_ceil(args.group_size.max(1)).max(1);
    for i in 0..phase.planned {
        let due = start + Duration::from_secs_f64(i as f64 / phase.rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = gate.clone().acquire_owned().await.context("publish gate")?;
        let seq = phase.base + i;
        let mut body = match args.scenario {
            Scenario::Broadcast => json!({}),
            Scenario::User => json!({ "user": format!("u{}", seq % connected.max(1) as u64) }),
            Scenario::Group => json!({ "group": format!("g{}", seq % groups as u64) }),
        };
        let t = now_us();
        body["seq"] = seq.into();
        body["t"] = t.into();
        body["p"] = "".into();
        let len = body.to_string().len();
        body["p"] = "x".repeat(args.payload.saturating_sub(len)).into();
        let (http, url, key) = (http.clone(), args.publish.clone(), args.api_key.clone());
        let (accepted, errors, first_error) =
            (accepted.clone(), errors.clone(), first_error.clone());
        let answers = stats.answers.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let mut req = http.post(&url).json(&body);
            if !key.is_empty() {
                req = req.header("x-api-key", key);
            }
            let r = req
                .send()
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.error_for_status().map_err(anyhow::Error::from));
            // Count before the permit goes back: the phase ends when every permit is back.
            match r {
                Ok(_) => {
                    if let Ok(mut h) = answers.lock() {
                        let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock()
                        && first.is_none()
                    {
                        *first = Some(format!("{e:#}"));
                    }
                }
            }
            drop(permit);
        });
    }
    let sent_secs = start.elapsed().as_secs_f64();
    // Wait for the publishes in flight.
    let _all = gate
        .acquire_many(args.publish_concurrency as u32)
        .await
        .context("publish gate")?;
    let first = first_error.lock().ok().and_then(|f| f.clone());
    Ok((
        accepted.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        sent_secs,
        first,
    ))
}

/// One client: reads frames, records deliveries, answers and sends keep-alives.
async fn client(index: usize, ws: proto::Ws, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let words = shared.total_seqs.div_ceil(64) as usize;
    let mut seen = vec![0u64; words];
    let (mut tx, mut rx) = ws.split();
    let mut keepalive = tokio::time::interval(Duration::from_secs(10));
    keepalive.tick().await;
    let mut frame = Frame::default();
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { break };
                let data = msg.into_data();
                frame.deliveries.clear();
                frame.reply = None;
                proto::decode(shared.proto, &data, &mut frame);
                if !frame.deliveries.is_empty() {
                    let now = now_us();
                    for &(seq, t) in &frame.deliveries {
                        record(&shared, &mut seen, index, seq, t, now);
                    }
                }
                if let Some(reply) = frame.reply
                    && tx.send(tokio_tungstenite::tungstenite::Message::text(reply)).await.is_err()
                {
                    break;
                }
                if frame.closed {
                    shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            _ = keepalive.tick() => {
                if let Some(ping) = proto::keepalive(shared.proto)
                    && tx.send(ping).await.is_err()
                {
                    break;
                }
            }
            _ = stop.changed() => {
                let _ = tx.close().await;
                return;
            }
        }
    }
    if !shared.stop.load(Ordering::Relaxed) {
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn record(shared: &Shared, seen: &mut [u64], index: usize, seq: u64, t: u64, now: u64) {
    let Some(p) = shared
        .phases
        .iter()
        .position(|ph| seq >= ph.base && seq < ph.base + ph.planned)
    else {
        return;
    };
    let stats = &shared.stats[p];
    let (word, bit) = ((seq / 64) as usize, seq % 64);
    if seen[word] & (1 << bit) != 0 {
        stats.dups.fetch_add(1, Ordering::Relaxed);
        return;
    }
    seen[word] |= 1 << bit;
    stats.unique.fetch_add(1, Ordering::Relaxed);
    if now >= stats.window_start_us.load(Ordering::Relaxed)
        && now <= stats.window_end_us.load(Ordering::Relaxed)
    {
        stats.in_window.fetch_add(1, Ordering::Relaxed);
    }
    stats.last_us.fetch_max(now, Ordering::Relaxed);
    if let Ok(mut h) = stats.hist[index % SHARDS].lock() {
        let _ = h.record(now.saturating_sub(t).max(1));
    }
}

/// An HS256 REST token for the embedded service: audience = the URL without port or query.
pub fn rest_token(service: &str, path: &str, key: &str) -> Result<String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use hmac::{Hmac, Mac};
    let (scheme, rest) = service
        .split_once("://")
        .with_context(|| format!("service URL `{service}` has no scheme"))?;
    let host = rest.split(['/', ':']).next().unwrap_or(rest);
    let aud = format!("{scheme}://{host}{path}");
    let exp = now_us() / 1_000_000 + 3600;
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = B64.encode(json!({ "aud": aud, "exp": exp }).to_string());
    let signing = format!("{header}.{claims}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).context("HMAC key")?;
    mac.update(signing.as_bytes());
    Ok(format!(
        "{signing}.{}",
        B64.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_numbered_back_to_back() {
        let p = parse_phases("20:10,200:5").expect("phases");
        assert_eq!((p[0].base, p[0].planned), (0, 200));
        assert_eq!((p[1].base, p[1].planned), (200, 1000));
        assert!(parse_phases("20").is_err());
        assert!(parse_phases("0:1").is_err());
    }
}
