//! Process figures from `/proc`: CPU time (`/proc/PID/stat`) and resident memory
//! (`/proc/PID/status`), for the server under test and the load tool itself.

use anyhow::{Context, Result, bail};

/// Linux `USER_HZ`; 100 on every mainstream architecture (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;

/// User + system CPU seconds used so far by `pid` (`self` for this process).
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let Some(close) = text.rfind(')') else {
        bail!("{path}: no `)` after the command name");
    };
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    let tick = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .with_context(|| format!("{path}: field {} missing", i + 3))?
            .parse::<f64>()
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    Ok((tick(11)? + tick(12)?) / CLK_TCK)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib
                .parse()
                .with_context(|| format!("{path}: VmRSS `{kib}` is not a number"));
        }
    }
    bail!("{path}: no VmRSS line")
}

/// A CPU-time reading to diff against later.
pub struct CpuMark {
    pid: String,
    cpu: f64,
    at: std::time::Instant,
}

impl CpuMark {
    pub fn now(pid: &str) -> Result<Self> {
        Ok(Self {
            pid: pid.to_owned(),
            cpu: cpu_seconds(pid)?,
            at: std::time::Instant::now(),
        })
    }

    /// CPU used since the mark, in percent of one core, and the CPU seconds themselves.
    pub fn since(&self) -> Result<(f64, f64)> {
        let used = cpu_seconds(&self.pid)? - self.cpu;
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        Ok((100.0 * used / wall, used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").expect("stat") >= 0.0);
        assert!(rss_kib("self").expect("status") > 0);
    }
}
