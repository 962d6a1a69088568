//! `herald-bench report`: reads the JSON-lines results of one `bench/run.sh` and writes the
//! tables between `<!-- bench:PROFILE:begin -->` and `<!-- bench:PROFILE:end -->` in
//! BENCHMARKS.md, and an SVG plot of deliveries/s and p99 against connection count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Results file written by the fanout and http commands.
    #[arg(long)]
    pub results: String,
    /// Marker name in BENCHMARKS.md (e.g. `2core`, `16core`).
    #[arg(long)]
    pub profile: String,
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub markdown: String,
    /// SVG to write, and the path BENCHMARKS.md links it by.
    #[arg(long)]
    pub svg: String,
    #[arg(long)]
    pub svg_link: String,
    /// Rate (messages/s) of the latency phase and of the saturated phase.
    #[arg(long, default_value_t = 20.0)]
    pub latency_rate: f64,
    #[arg(long, default_value_t = 200.0)]
    pub saturated_rate: f64,
}

const SERVERS: [&str; 4] = ["lean", "herald", "ws", "socketio"];
const COLORS: [&str; 4] = ["#555555", "#d62728", "#1f77b4", "#2ca02c"];

fn label(server: &str) -> &str {
    match server {
        "lean" => "lean tokio broadcast (practical limit)",
        "herald" => "**herald** (status route → REST → embedded service)",
        "ws" => "`ws` (npm), raw broadcast",
        "socketio" => "Socket.IO 4.8 (npm)",
        other => other,
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The median (the mean of the middle two for an even count); NaN for none.
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn ms(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2} ms")
    } else {
        format!("{x:.0} ms")
    }
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results))?;
    let mut records = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", args.results, n + 1))?;
        records.push(v);
    }
    let fan = |tag: &str, server: &str, rate: f64| {
        records.iter().find(|r| {
            s(r, "kind") == "fanout"
                && s(r, "tag") == tag
                && s(r, "server") == server
                && (f(r, "rate_asked") - rate).abs() < 1e-9
        })
    };
    let mut md = String::new();
    if let Some(c) = records.iter().find(|r| s(r, "kind") == "conditions") {
        writeln!(
            md,
            "Run of {} on `{}`: {} CPUs, server on CPU(s) {}, load tool on CPU(s) {}, open-file limit {}, load average before the run {}. {}\n",
            s(c, "date"),
            s(c, "host"),
            s(c, "cpus"),
            s(c, "server_cpus"),
            s(c, "tool_cpus"),
            s(c, "nofile"),
            s(c, "loadavg"),
            s(c, "note")
        )?;
    }

    // Headline table.
    writeln!(md, "#### Broadcast, 2,000 clients, 64-byte payloads\n")?;
    writeln!(
        md,
        "| server | deliveries/s, saturated ({} msgs/s × 2,000 asked) | lost / dups / closed, saturated | p99 at {} msgs/s | lost at {} msgs/s | server CPU at {} msgs/s | RSS per connection |",
        args.saturated_rate, args.latency_rate, args.latency_rate, args.latency_rate
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |")?;
    let mut ratio = BTreeMap::new();
    for server in SERVERS {
        let (sat, lat) = (
            fan("main", server, args.saturated_rate),
            fan("main", server, args.latency_rate),
        );
        if sat.is_none() && lat.is_none() {
            continue;
        }
        let any = sat.or(lat).context("a record")?;
        let sat_d = sat.map(|r| f(r, "deliveries_per_s")).unwrap_or(f64::NAN);
        let lat_p99 = lat.map(|r| f(r, "p99_ms")).unwrap_or(f64::NAN);
        ratio.insert(server, (sat_d, lat_p99));
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.1} KiB |",
            label(server),
            thousands(sat_d),
            sat.map(|r| format!(
                "{} / {} / {}",
                thousands(u(r, "lost") as f64),
                u(r, "dups"),
                u(r, "disconnects")
            ))
            .unwrap_or_default(),
            ms(lat_p99),
            lat.map(|r| thousands(u(r, "lost") as f64))
                .unwrap_or_default(),
            lat.map(|r| format!("{:.0}%", f(r, "server_cpu_pct")))
                .unwrap_or_default(),
            f(any, "rss_per_conn_kib"),
        )?;
    }
    if let (Some(h), Some(l)) = (ratio.get("herald"), ratio.get("lean")) {
        writeln!(
            md,
            "\nherald / lean in this run: saturated deliveries/s **{:.2}x** (target ≥ 1.0x), p99 at {} msgs/s **{:.2}x** (target ≤ 1.25x).",
            h.0 / l.0,
            args.latency_rate,
            h.1 / l.1
        )?;
    }

    // The latency phase again, lean and herald alternating: this host's speed drifts from
    // minute to minute, so one pair is one sample of the ratio; the median is the steadier one.
    let latency_runs = |server: &str| -> Vec<f64> {
        records
            .iter()
            .filter(|r| {
                s(r, "kind") == "fanout"
                    && s(r, "server") == server
                    && (f(r, "rate_asked") - args.latency_rate).abs() < 1e-9
                    && (s(r, "tag") == "main" || s(r, "tag") == "latency-repeat")
            })
            .map(|r| f(r, "p99_ms"))
            .collect()
    };
    let (lean_p99, herald_p99) = (latency_runs("lean"), latency_runs("herald"));
    if lean_p99.len() > 1 && herald_p99.len() > 1 {
        writeln!(
            md,
            "\n#### p99 at {} msgs/s, lean and herald alternating (the main run first)\n",
            args.latency_rate
        )?;
        // herald's status-route answers over 10 ms in each of its runs (the main run's
        // count includes its saturated phase): its fsynced commits meeting a stalling disk.
        let slow_commits: Vec<String> = records
            .iter()
            .filter(|r| {
                s(r, "kind") == "under_load"
                    && s(r, "server") == "herald"
                    && (s(r, "tag") == "main" || s(r, "tag") == "latency-repeat")
            })
            .map(|r| match r.get("route_over_10ms").and_then(Value::as_f64) {
                // The main run's saturated phase queues requests on purpose.
                Some(n) if s(r, "tag") == "main" => {
                    format!(
                        "{n:.0} of {:.0}, with the saturated phase",
                        f(r, "route_requests")
                    )
                }
                Some(n) => format!("{n:.0} of {:.0}", f(r, "route_requests")),
                None => "–".into(),
            })
            .collect();
        writeln!(
            md,
            "| pair | lean p99 | herald p99 | herald / lean | herald's status-route answers over 10 ms |"
        )?;
        writeln!(md, "| --- | --- | --- | --- | --- |")?;
        let mut ratios = Vec::new();
        for (i, (l, h)) in lean_p99.iter().zip(&herald_p99).enumerate() {
            ratios.push(h / l);
            writeln!(
                md,
                "| {} | {} | {} | {:.2}x | {} |",
                i + 1,
                ms(*l),
                ms(*h),
                h / l,
                slow_commits.get(i).map_or("–", String::as_str)
            )?;
        }
        writeln!(
            md,
            "\nMedian of the {} pairs: **{:.2}x** (target ≤ 1.25x).",
            ratios.len(),
            median(&mut ratios)
        )?;
    }

    // Azure per-unit table.
    let per_unit = |r: Option<&Value>| {
        r.map(|r| thousands(1000.0 * f(r, "deliveries_per_s") / (u(r, "connected").max(1) as f64)))
            .unwrap_or_else(|| "–".into())
    };
    let tagged = |tag: &str, server: &str| {
        records
            .iter()
            .find(|r| s(r, "kind") == "fanout" && s(r, "tag") == tag && s(r, "server") == server)
    };
    writeln!(
        md,
        "\n#### Azure's per-unit format: deliveries/s per 1,000 connections\n"
    )?;
    writeln!(
        md,
        "Azure SignalR publishes 2,000 broadcast deliveries/s per unit (1,000 connections). Group sends: groups of {} connections; user sends: one connection per user; both through status routes with `to:`.\n",
        tagged("group", "herald")
            .map(|r| u(r, "expected") / u(r, "published").max(1))
            .unwrap_or(0)
    )?;
    writeln!(
        md,
        "| server | broadcast | group | user | group: lost / asked msgs/s | user: lost / asked msgs/s |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
    for server in SERVERS {
        let b = fan("main", server, args.saturated_rate);
        let (g, us) = (tagged("group", server), tagged("user", server));
        if b.is_none() {
            continue;
        }
        let detail = |r: Option<&Value>| {
            r.map(|r| {
                format!(
                    "{} / {}",
                    thousands(u(r, "lost") as f64),
                    f(r, "rate_asked")
                )
            })
            .unwrap_or_else(|| "–".into())
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            label(server),
            per_unit(b),
            per_unit(g),
            per_unit(us),
            detail(g),
            detail(us)
        )?;
    }

    // Sweep.
    let mut sweep: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| s(r, "kind") == "fanout" && s(r, "tag") == "sweep")
    {
        sweep.entry(s(r, "server")).or_default().push(r);
    }
    writeln!(
        md,
        "\n#### Connection-count sweep (broadcast, 400k deliveries/s asked at every count)\n"
    )?;
    writeln!(
        md,
        "| server | connections asked | connected | deliveries/s | lost / closed | p99 | server CPU µs per delivery | RSS per connection |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    for server in SERVERS {
        let Some(rows) = sweep.get_mut(server) else {
            continue;
        };
        rows.sort_by_key(|r| u(r, "clients"));
        for r in rows.iter() {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} / {} | {} | {:.2} | {:.1} KiB |",
                label(server),
                thousands(u(r, "clients") as f64),
                thousands(u(r, "connected") as f64),
                thousands(f(r, "deliveries_per_s")),
                thousands(u(r, "lost") as f64),
                u(r, "disconnects"),
                ms(f(r, "p99_ms")),
                f(r, "server_cpu_us_per_delivery"),
                f(r, "rss_per_conn_kib")
            )?;
        }
    }
    writeln!(
        md,
        "\n![deliveries/s and p99 against connection count]({})",
        args.svg_link
    )?;

    // User sends against connection count: O(recipients), not O(connections).
    let users: Vec<&Value> = records
        .iter()
        .filter(|r| s(r, "kind") == "fanout" && s(r, "tag") == "user-scale")
        .collect();
    if !users.is_empty() {
        writeln!(
            md,
            "\n#### Sends to one user against connection count (one connection per user, same rate)\n"
        )?;
        writeln!(
            md,
            "| connections | msgs/s asked | deliveries/s | lost | p99 | server CPU µs per delivery |"
        )?;
        writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
        for r in users {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} |",
                thousands(u(r, "connected") as f64),
                thousands(f(r, "rate_asked")),
                thousands(f(r, "deliveries_per_s")),
                u(r, "lost"),
                ms(f(r, "p99_ms")),
                f(r, "server_cpu_us_per_delivery")
            )?;
        }
    }

    // Schedules and a reload during herald's main run.
    if let Some(r) = records.iter().find(|r| s(r, "kind") == "under_load") {
        writeln!(
            md,
            "\n#### Under the fan-out load (herald's main run: a schedule every second, one reload)\n"
        )?;
        writeln!(
            md,
            "| schedule fires | within 1 ms | within 5 ms | within 10 ms | reloads taken | connections dropped |"
        )?;
        writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            f(r, "schedule_fires"),
            f(r, "schedule_within_1ms"),
            f(r, "schedule_within_5ms"),
            f(r, "schedule_within_10ms"),
            f(r, "reloads"),
            u(r, "disconnects") + u(r, "closed_by_server")
        )?;
    }

    // HTTP.
    writeln!(md, "\n#### Request rates (one core, closed loop)\n")?;
    writeln!(
        md,
        "| server | endpoint | concurrency | accepted/s | p50 | p99 | errors | server CPU |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let http: Vec<&Value> = records.iter().filter(|r| s(r, "kind") == "http").collect();
    for r in &http {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            label(s(r, "server")),
            s(r, "what"),
            u(r, "concurrency"),
            thousands(f(r, "per_s")),
            ms(f(r, "p50_ms")),
            ms(f(r, "p99_ms")),
            u(r, "errors"),
            f(r, "server_cpu_pct")
        )?;
    }

    // Repeated endpoints (the status route runs several times): their median.
    let mut by_what: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for r in &http {
        by_what
            .entry((s(r, "server"), s(r, "what")))
            .or_default()
            .push(f(r, "per_s"));
    }
    for ((server, what), mut rates) in by_what {
        if rates.len() > 1 {
            writeln!(
                md,
                "\n{what} ({server}): median of {} runs **{}/s** (each: {}).",
                rates.len(),
                thousands(median(&mut rates.clone())),
                rates
                    .iter_mut()
                    .map(|r| thousands(*r))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }

    // Errors worth reading.
    let errors: Vec<String> = records
        .iter()
        .filter_map(|r| {
            let e = [s(r, "connect_error"), s(r, "publish_error"), s(r, "error")]
                .into_iter()
                .find(|e| !e.is_empty())?;
            Some(format!(
                "- {} {} {}: {}",
                s(r, "server"),
                s(r, "tag"),
                s(r, "what"),
                e
            ))
        })
        .collect();
    if !errors.is_empty() {
        writeln!(
            md,
            "\nFirst error of each run that had one:\n\n{}",
            errors.join("\n")
        )?;
    }

    let doc = std::fs::read_to_string(&args.markdown)
        .with_context(|| format!("reading {}", args.markdown))?;
    let begin = format!("<!-- bench:{}:begin -->", args.profile);
    let end = format!("<!-- bench:{}:end -->", args.profile);
    let (Some(b), Some(e)) = (doc.find(&begin), doc.find(&end)) else {
        bail!("{}: markers `{begin}` … `{end}` not found", args.markdown);
    };
    let updated = format!("{}{begin}\n{md}\n{}", &doc[..b], &doc[e..]);
    std::fs::write(&args.markdown, updated)
        .with_context(|| format!("writing {}", args.markdown))?;
    std::fs::write(&args.svg, svg(&sweep)).with_context(|| format!("writing {}", args.svg))?;
    Ok(())
}

/// Two panels: deliveries/s and p99 (log scale) against connection count (log scale).
fn svg(sweep: &BTreeMap<&str, Vec<&Value>>) -> String {
    let (w, h, pad) = (460.0, 300.0, 60.0);
    let xs: Vec<f64> = sweep
        .values()
        .flatten()
        .map(|r| u(r, "clients") as f64)
        .collect();
    let (x0, x1) = (
        xs.iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .max(1.0)
            .log10(),
        xs.iter().cloned().fold(1.0, f64::max).log10(),
    );
    let x1 = if x1 <= x0 { x0 + 1.0 } else { x1 };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * w,
        h + 40.0
    );
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let panels: [(&str, &str, bool); 2] = [
        ("deliveries_per_s", "deliveries/s", false),
        ("p99_ms", "p99 latency (ms, log)", true),
    ];
    for (p, (key, title, log)) in panels.iter().enumerate() {
        let ox = p as f64 * w;
        let ys: Vec<f64> = sweep
            .values()
            .flatten()
            .map(|r| f(r, key))
            .filter(|y| y.is_finite() && *y > 0.0)
            .collect();
        let ymax = ys.iter().cloned().fold(1.0, f64::max);
        let ymin = ys.iter().cloned().fold(f64::INFINITY, f64::min);
        let (y0, y1) = if *log {
            (ymin.max(0.01).log10().floor(), ymax.log10().ceil())
        } else {
            (0.0, ymax * 1.1)
        };
        let y1 = if y1 <= y0 { y0 + 1.0 } else { y1 };
        let px = |x: f64| ox + pad + (x.log10() - x0) / (x1 - x0) * (w - 1.5 * pad);
        let py = |y: f64| {
            let v = if *log { y.max(1e-3).log10() } else { y };
            20.0 + (h - pad) - (v - y0) / (y1 - y0) * (h - pad - 10.0)
        };
        let _ = write!(
            out,
            r#"<text x="{}" y="14" font-size="13">{title} vs connections</text>"#,
            ox + pad
        );
        let _ = write!(
            out,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/><line x1="{0}" y1="30" x2="{0}" y2="{1}" stroke="black"/>"#,
            ox + pad,
            20.0 + h - pad,
            ox + w - pad / 2.0
        );
        for x in xs
            .iter()
            .map(|x| *x as u64)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                px(x as f64),
                35.0 + h - pad,
                thousands(x as f64)
            );
        }
        for i in 0..=4 {
            let v = y0 + (y1 - y0) * i as f64 / 4.0;
            let (y, label) = if *log {
                (
                    py(10f64.powf(v)),
                    format!("{:.3}", 10f64.powf(v))
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string(),
                )
            } else {
                (py(v), thousands(v))
            };
            let _ = write!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end">{label}</text><line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#eeeeee"/>"##,
                ox + pad - 4.0,
                y + 4.0,
                ox + pad,
                ox + w - pad / 2.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">connections (log)</text>"#,
            ox + w / 2.0,
            h + 32.0
        );
        for (i, server) in SERVERS.iter().enumerate() {
            let Some(rows) = sweep.get(server) else {
                continue;
            };
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (u(r, "clients") as f64, f(r, key)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                COLORS[i],
                path.join(" ")
            );
            for (x, y) in &pts {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    px(*x),
                    py(*y),
                    COLORS[i]
                );
            }
            if p == 0 {
                let ly = 40.0 + 14.0 * i as f64;
                let _ = write!(
                    out,
                    r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{server}</text>"#,
                    ox + w - 110.0,
                    ly - 9.0,
                    COLORS[i],
                    ox + w - 95.0,
                    ly
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ms(1.234), "1.23 ms");
        assert_eq!(ms(f64::NAN), "–");
    }
}
