//! Closed-loop HTTP load: `--concurrency` workers POST to one URL for `--secs`, counting
//! 2xx answers per second and the latency of each (HDR), with the server's CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::fanout::now_us;
use crate::procstat::CpuMark;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server label written into the results.
    #[arg(long)]
    pub server: String,
    /// What is measured (negotiate, status), written into the results.
    #[arg(long)]
    pub what: String,
    #[arg(long)]
    pub url: String,
    /// Send a `{seq, t, p}` JSON body (a status route); otherwise an empty POST.
    #[arg(long)]
    pub body: bool,
    #[arg(long, default_value = "")]
    pub api_key: String,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    #[arg(long)]
    pub pid: String,
    #[arg(long)]
    pub out: String,
}

pub async fn run(args: Args) -> Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let first_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs_f64(args.secs);
    let cpu = CpuMark::now(&args.pid)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, ok, errors, seq, first_error) = (
            http.clone(),
            ok.clone(),
            errors.clone(),
            seq.clone(),
            first_error.clone(),
        );
        let (url, key, body) = (args.url.clone(), args.api_key.clone(), args.body);
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            while Instant::now() < deadline {
                let mut req = http.post(&url);
                if body {
                    let s = seq.fetch_add(1, Ordering::Relaxed);
                    req = req.json(&json!({ "seq": s, "t": now_us(), "p": "xxxxxxxxxxxx" }));
                }
                if !key.is_empty() {
                    req = req.header("x-api-key", &key);
                }
                let t0 = Instant::now();
                let r = match req.send().await {
                    Ok(r) => match r.error_for_status() {
                        Ok(r) => r.bytes().await.map_err(anyhow::Error::from),
                        Err(e) => Err(e.into()),
                    },
                    Err(e) => Err(e.into()),
                };
                match r {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
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
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for w in workers {
        hist.add(w.await.context("worker")?)
            .context("merging histograms")?;
    }
    let wall = started.elapsed().as_secs_f64();
    let (server_cpu_pct, _) = cpu.since()?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let ok = ok.load(Ordering::Relaxed);
    let record = json!({
        "kind": "http",
        "server": args.server,
        "what": args.what,
        "concurrency": args.concurrency,
        "secs": wall,
        "ok": ok,
        "errors": errors.load(Ordering::Relaxed),
        "error": first_error.lock().ok().and_then(|f| f.clone()),
        "per_s": ok as f64 / wall,
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
        "server_cpu_pct": server_cpu_pct,
    });
    eprintln!(
        "[{}] {}: {:.0}/s ok, {} errors, p99 {:.2} ms, server CPU {:.0}%",
        args.server,
        args.what,
        record["per_s"].as_f64().unwrap_or(0.0),
        record["errors"],
        ms(0.99),
        server_cpu_pct
    );
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out))?;
    writeln!(out, "{record}").with_context(|| format!("writing {}", args.out))?;
    Ok(())
}
