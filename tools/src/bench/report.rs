//! The results table, the JSON report, and the CPU accounting.

use std::time::Duration;

use serde_json::json;

use super::driver::{OpStats, Results};

/// CPU seconds and operation counts of a server over the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerUsage {
    pub cpu_seconds: f64,
    /// Operations the server itself counted.
    pub commands: u64,
}

fn pct(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(name: &str, s: &OpStats, secs: f64) -> String {
    let h = &s.latency_us;
    format!(
        "{:<8}{:>13.0}{:>12.0}{:>12.0}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>12.1}",
        name,
        s.count as f64 / secs,
        s.hits as f64 / secs,
        s.misses as f64 / secs,
        h.mean() / 1000.0,
        pct(h, 0.50),
        pct(h, 0.90),
        pct(h, 0.99),
        pct(h, 0.999),
        h.max() as f64 / 1000.0,
        s.bytes as f64 / secs / 1024.0,
    )
}

/// The human-readable table.
pub fn table(results: &Results) -> String {
    let secs = results.elapsed.as_secs_f64().max(1e-9);
    let mut total = results.set.clone();
    total.merge(&results.get);
    let header = format!(
        "{:<8}{:>13}{:>12}{:>12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "Type",
        "Ops/sec",
        "Hits/sec",
        "Misses/sec",
        "Avg ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "Max ms",
        "KB/sec"
    );
    let rule = "-".repeat(header.len());
    let mut out = vec![header, rule];
    out.push(row("Sets", &results.set, secs));
    out.push(row("Gets", &results.get, secs));
    out.push(row("Totals", &total, secs));
    out.join("\n")
}

fn op_json(s: &OpStats, secs: f64) -> serde_json::Value {
    let h = &s.latency_us;
    json!({
        "count": s.count,
        "ops_per_sec": s.count as f64 / secs,
        "hits": s.hits,
        "misses": s.misses,
        "errors": s.errors,
        "bytes": s.bytes,
        "latency_ms": {
            "mean": h.mean() / 1000.0,
            "p50": pct(h, 0.50),
            "p90": pct(h, 0.90),
            "p99": pct(h, 0.99),
            "p99_9": pct(h, 0.999),
            "max": h.max() as f64 / 1000.0,
        },
    })
}

/// Everything as one JSON object.
pub fn json(
    settings: serde_json::Value,
    results: &Results,
    server: Option<ServerUsage>,
    client_cpu_seconds: f64,
) -> serde_json::Value {
    let secs = results.elapsed.as_secs_f64().max(1e-9);
    let mut total = results.set.clone();
    total.merge(&results.get);
    let ops = total.count;
    json!({
        "settings": settings,
        "elapsed_seconds": secs,
        "total_operations": ops,
        "total_errors": total.errors,
        "ops_per_sec": ops as f64 / secs,
        "operations": { "set": op_json(&results.set, secs), "get": op_json(&results.get, secs), "total": op_json(&total, secs) },
        "server": server.map(|s| json!({
            "cpu_seconds": s.cpu_seconds,
            "commands": s.commands,
            "ops_per_cpu_second": per_cpu_second(s.commands, s.cpu_seconds),
        })),
        "client": {
            "cpu_seconds": client_cpu_seconds,
            "cpu_us_per_op": if ops > 0 { client_cpu_seconds * 1e6 / ops as f64 } else { 0.0 },
        },
    })
}

pub fn per_cpu_second(ops: u64, cpu_seconds: f64) -> f64 {
    if cpu_seconds > 0.0 {
        ops as f64 / cpu_seconds
    } else {
        0.0
    }
}

/// CPU seconds used so far by this process's threads whose name starts
/// with `prefix` (from /proc/self/task/*/stat).
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ticks = clock_ticks();
    let mut total = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            if let Some(t) = std::fs::read_to_string(task.path().join("stat")).ok().and_then(|s| stat_cpu_ticks(&s)) {
                total += t as f64 / ticks;
            }
        }
    }
    total
}

/// utime + stime from a /proc stat line (fields 14 and 15, after the
/// parenthesised command name, which may contain spaces).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")" the fields start at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn fmt_duration(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_spaces_in_names() {
        let line = "1234 (shard 0 x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(stat_cpu_ticks(line), Some(300));
    }
}
