//! `--metrics-port`: Prometheus text exposition over HTTP (`GET /metrics`).
//!
//! A thread of its own serves it, so a scrape never runs on a shard's
//! thread: counters are read from the shards' atomics, and each store's
//! figures are asked for through the shard's inbox like any other request.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::op::{OpResult, ShardOp};
use crate::resp::COMMANDS;
use crate::shard::{Shared, Work};

/// Longest HTTP request head read before answering.
const REQUEST_MAX_BYTES: usize = 8 << 10;
/// How long a client may take to send its request, and to take the
/// response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most metrics connections open at once; more are closed at once.
const CONNECTIONS_MAX: usize = 64;

/// Counts an open metrics connection while it lives.
struct OpenConnection(std::rc::Rc<std::cell::Cell<usize>>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Serves scrapes until the server shuts down.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|&s| s) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(err) => {
                // Out of descriptors and the like: back off (retrying at
                // once spun a core until descriptors came back).
                tracing::warn!(error = %err, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_MAX {
            tracing::warn!(%peer, "too many metrics connections; closing a new one");
            continue;
        }
        open.set(open.get() + 1);
        let guard = OpenConnection(open.clone());
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let _open = guard;
            let mut head = Vec::with_capacity(1024);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_MAX_BYTES {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                tracing::debug!(%peer, "metrics request not received in time; closing");
                return;
            }
            let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                let body = render(&shared).await;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\nConnection: close\r\n\r\nonly /metrics is here\n"
                    .to_string()
            };
            // A client that does not read its response is dropped too.
            let sent = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(response.as_bytes())).await;
            if matches!(sent, Ok(Ok(()))) {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.shutdown()).await;
            }
        });
    }
}

/// The exposition text.
pub async fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(16 << 10);
    // Histogram families, appended after the others.
    let mut histograms = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let latencies: Vec<(usize, engine::Histogram)> =
        shared.counters.iter().map(|c| c.latency.snapshot()).enumerate().collect();
    histogram(
        &mut histograms,
        "ringkv_request_duration_seconds",
        "Requests by time from reading their batch to writing its replies (pipelined requests count their batch's).",
        &latencies,
    );
    let per_shard = |f: &dyn Fn(&crate::shard::ShardCounters) -> u64| -> Vec<(String, f64)> {
        shared.counters.iter().enumerate().map(|(i, c)| (format!("{{shard=\"{i}\"}}"), f(c) as f64)).collect()
    };
    family(
        "ringkv_commands_total",
        "counter",
        "Operations served on either protocol, by the shard that parsed them.",
        per_shard(&|c| c.commands.load(Ordering::Relaxed)),
    );
    family(
        "ringkv_connections",
        "gauge",
        "Open client connections.",
        per_shard(&|c| c.connections.load(Ordering::Relaxed)),
    );
    family(
        "ringkv_connections_received_total",
        "counter",
        "Client connections accepted.",
        per_shard(&|c| c.connections_total.load(Ordering::Relaxed)),
    );
    family(
        "ringkv_net_input_bytes_total",
        "counter",
        "Bytes read from clients.",
        per_shard(&|c| c.bytes_in.load(Ordering::Relaxed)),
    );
    family(
        "ringkv_net_output_bytes_total",
        "counter",
        "Bytes written to clients.",
        per_shard(&|c| c.bytes_out.load(Ordering::Relaxed)),
    );
    family(
        "ringkv_cross_shard_hops_total",
        "counter",
        "Requests (or groups of keys) sent to another shard's inbox.",
        per_shard(&|c| c.cross_shard_hops.load(Ordering::Relaxed)),
    );
    let mut calls = Vec::new();
    let mut usec = Vec::new();
    let mut failed = Vec::new();
    for (i, (name, _)) in COMMANDS.iter().enumerate() {
        let sum = |f: &dyn Fn(&crate::resp::CommandCounter) -> u64| -> u64 {
            shared.counters.iter().filter_map(|c| c.commandstats.get(i)).map(f).sum()
        };
        let n = sum(&|c| c.calls.load(Ordering::Relaxed));
        let errors = sum(&|c| c.failed.load(Ordering::Relaxed)) + sum(&|c| c.rejected.load(Ordering::Relaxed));
        // A command only ever refused (wrong arity, NOAUTH) has no calls
        // but its errors count.
        if n == 0 && errors == 0 {
            continue;
        }
        let label = format!("{{protocol=\"resp\",command=\"{name}\"}}");
        calls.push((label.clone(), n as f64));
        usec.push((label.clone(), sum(&|c| c.usec.load(Ordering::Relaxed)) as f64 / 1e6));
        failed.push((label, errors as f64));
    }
    family("ringkv_command_calls_total", "counter", "RESP commands by name.", calls);
    family("ringkv_command_seconds_total", "counter", "Time RESP commands took, as clients saw it.", usec);
    family("ringkv_command_errors_total", "counter", "RESP commands answered with an error.", failed);

    // Store figures come from each shard's own thread.
    let waits: Vec<_> = shared.mailboxes.iter().map(|m| m.send(Work::Shard(ShardOp::Stats))).collect();
    let mut stats = Vec::new();
    for (shard, rx) in waits.into_iter().enumerate() {
        if let Ok(Ok(results)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
            if let Some(OpResult::Stats(s)) = results.into_iter().next() {
                stats.push((shard, s));
            }
        }
    }
    let store = |f: &dyn Fn(&engine::Stats) -> u64| -> Vec<(String, f64)> {
        stats.iter().map(|(i, s)| (format!("{{shard=\"{i}\"}}"), f(s) as f64)).collect()
    };
    family("ringkv_keys", "gauge", "Keys in the index (expired ones until reclaimed).", store(&|s| s.keys));
    family("ringkv_live_bytes", "gauge", "Bytes of records the index points at.", store(&|s| s.live_bytes));
    family("ringkv_dead_bytes", "gauge", "Bytes of superseded records not yet compacted.", store(&|s| s.dead_bytes));
    family("ringkv_segments", "gauge", "Segment files.", store(&|s| s.segments));
    family("ringkv_segment_bytes", "gauge", "Bytes of segment files (mapped).", store(&|s| s.segment_bytes));
    family("ringkv_segments_ready", "gauge", "Segments made ahead of need.", store(&|s| s.segments_ready));
    family("ringkv_rolls_waited_total", "counter", "Rolls that waited for the disk.", store(&|s| s.rolls_waited));
    family(
        "ringkv_segments_recycled_total",
        "counter",
        "Segments made from a compacted or evicted segment's pages.",
        store(&|s| s.segments_recycled),
    );
    family("ringkv_segments_spare", "gauge", "Removed segments kept to be recycled.", store(&|s| s.segments_spare));
    family("ringkv_index_bytes", "gauge", "Bytes of index memory.", store(&|s| s.index_bytes));
    family(
        "ringkv_record_marks_bytes",
        "gauge",
        "Bytes of the segments' record marks (a bit per 8 bytes of log).",
        store(&|s| s.marks_bytes),
    );
    family("ringkv_syncs_total", "counter", "Flushes of the log to disk.", store(&|s| s.syncs));
    family("ringkv_compactions_total", "counter", "Segments freed by compaction.", store(&|s| s.compactions));
    family(
        "ringkv_compactions_from_index_total",
        "counter",
        "Segments freed by compaction from the index (almost all garbage) rather than by a walk.",
        store(&|s| s.compactions_from_index),
    );
    family("ringkv_compacted_bytes_total", "counter", "Bytes examined by compaction.", store(&|s| s.compacted_bytes));
    family("ringkv_expired_total", "counter", "Expired keys reclaimed.", store(&|s| s.expired_reclaimed));
    family("ringkv_keyspace_hits_total", "counter", "Reads that found their key.", store(&|s| s.hits));
    family("ringkv_keyspace_misses_total", "counter", "Reads that did not find their key.", store(&|s| s.misses));
    family("ringkv_evicted_keys_total", "counter", "Keys evicted to stay under the bound.", store(&|s| s.evicted_keys));
    family("ringkv_evicted_segments_total", "counter", "Segments evicted.", store(&|s| s.evicted_segments));
    family(
        "ringkv_memory_used_bytes",
        "gauge",
        "Index plus resident segment bytes, as the memory bound counts them.",
        store(&|s| s.memory_used_bytes),
    );
    family("ringkv_memory_max_bytes", "gauge", "The shard's memory bound (0: none).", store(&|s| s.memory_max_bytes));
    let syncs: Vec<(usize, engine::Histogram)> = stats.iter().map(|(i, s)| (*i, s.sync_durations.clone())).collect();
    histogram(&mut histograms, "ringkv_fsync_duration_seconds", "Flushes of the log to disk, by duration.", &syncs);
    family(
        "ringkv_poisoned",
        "gauge",
        "1 when a failed flush made the store refuse writes.",
        store(&|s| u64::from(s.poisoned)),
    );
    family(
        "ringkv_process_cpu_seconds_total",
        "counter",
        "CPU time used by the process.",
        vec![(String::new(), crate::native_server::process_cpu_ms() as f64 / 1000.0)],
    );
    out.push_str(&histograms);
    out
}

/// Writes a histogram family, one series a shard, cumulative buckets.
fn histogram(out: &mut String, name: &str, help: &str, series: &[(usize, engine::Histogram)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (shard, h) in series {
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = engine::histogram_bound_seconds(i).map_or_else(|| "+Inf".to_string(), |s| s.to_string());
            let _ = writeln!(out, "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"}} {}", h.sum_micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", h.count);
    }
}

/// Binds the metrics listener (plain socket; served on its own thread).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
