//! `--mode cache --max-memory`: the real binary holds its memory bound
//! under ten times the writes, reports evictions, hits and misses, and
//! reclaims expired keys nobody reads; `--mode store` answers Redis' OOM
//! error at the bound and keeps everything it acknowledged.

mod common;

use std::time::{Duration, Instant};

use common::{info_field, Node, RespConn};
use net::resp::Reply;

const VALUE_BYTES: usize = 1000;
/// Requests per pipelined round trip.
const PIPELINE: usize = 200;

/// The resident set of a process, from `/proc/PID/status` (anonymous
/// memory and mapped file pages alike).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib << 10
}

/// SETs keys `from..to` in pipelined rounds; returns the replies that
/// were not +OK.
fn set_range(c: &mut RespConn, from: usize, to: usize, value: &str, extra: &[&str]) -> Vec<(usize, Reply)> {
    let mut refused = Vec::new();
    let mut i = from;
    while i < to {
        let end = (i + PIPELINE).min(to);
        for k in i..end {
            let key = format!("key:{k}");
            let mut args = vec!["SET", key.as_str(), value];
            args.extend_from_slice(extra);
            c.send(&args);
        }
        for k in i..end {
            match c.reply() {
                Reply::Simple(ok) if &ok[..] == b"OK" => {}
                other => refused.push((k, other)),
            }
        }
        i = end;
    }
    refused
}

#[test]
fn cache_mode_holds_rss_within_the_bound_under_ten_times_the_writes() {
    let bound: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(dir.path(), &["--shards", "2", "--mode", "cache", "--max-memory", "32mb", "--fsync", "never"]);
    let pid = node.child.id();
    let mut c = RespConn::connect(node.resp);
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    let baseline = rss_bytes(pid);
    let value = "v".repeat(VALUE_BYTES);
    let keys = 10 * bound as usize / VALUE_BYTES;
    let mut rss_max = 0;
    let mut from = 0;
    while from < keys {
        let to = (from + 10_000).min(keys);
        let refused = set_range(&mut c, from, to, &value, &[]);
        assert!(refused.is_empty(), "cache mode refused writes: {:?}", &refused[..refused.len().min(3)]);
        rss_max = rss_max.max(rss_bytes(pid));
        from = to;
    }
    // The documented constant (docs/cache.md): the idle process plus 4 MiB
    // for connection buffers and allocator caches.
    let allowed = bound + baseline + (4 << 20);
    assert!(rss_max <= allowed, "RSS peaked at {rss_max} bytes; bound {bound}, idle {baseline}, allowed {allowed}");
    assert!(rss_max >= baseline + bound / 2, "the cache filled: RSS peaked at {rss_max}");
    let evicted = info_field(&mut c, "evicted_keys");
    assert!(evicted > keys as u64 / 2, "evicted {evicted} of {keys}");
    assert!(info_field(&mut c, "used_memory") <= bound);
    assert_eq!(info_field(&mut c, "maxmemory"), bound);
    // The newest keys are there; the oldest, never read, are gone.
    let last = format!("key:{}", keys - 1);
    assert_eq!(c.call(&["GET", &last]), Reply::Bulk(Some(value.clone().into())));
    assert_eq!(c.call(&["GET", "key:0"]), Reply::Bulk(None));
    assert_eq!(info_field(&mut c, "keyspace_hits"), 1);
    assert_eq!(info_field(&mut c, "keyspace_misses"), 1);
    let Reply::Array(Some(policy)) = c.call(&["CONFIG", "GET", "maxmemory-policy"]) else { panic!() };
    assert_eq!(policy[1], Reply::Bulk(Some("allkeys-lru".into())));
}

#[test]
fn store_mode_answers_oom_at_the_bound_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--max-memory", "8mb", "--fsync", "never"]);
    let mut c = RespConn::connect(node.resp);
    let value = "s".repeat(VALUE_BYTES);
    let attempted = 4 * (8 << 20) / VALUE_BYTES;
    let refused = set_range(&mut c, 0, attempted, &value, &[]);
    assert!(!refused.is_empty(), "the bound was never reached");
    for (_, reply) in &refused {
        assert_eq!(*reply, Reply::Error("OOM command not allowed when used memory > 'maxmemory'.".into()));
    }
    let refused_keys: std::collections::HashSet<usize> = refused.iter().map(|(k, _)| *k).collect();
    let mut kept = 0;
    for k in 0..attempted {
        let got = c.call(&["GET", &format!("key:{k}")]);
        if refused_keys.contains(&k) {
            assert_eq!(got, Reply::Bulk(None), "refused key {k} was stored");
        } else {
            assert_eq!(got, Reply::Bulk(Some(value.clone().into())), "acknowledged key {k} lost");
            kept += 1;
        }
    }
    assert!(kept > 1000, "kept {kept}");
    // Deleting still works at the bound.
    assert_eq!(c.call(&["DEL", "key:0"]), Reply::Int(1));
    assert_eq!(info_field(&mut c, "evicted_keys"), 0);
}

#[test]
fn expired_keys_are_reclaimed_without_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(dir.path(), &["--shards", "2", "--mode", "cache", "--max-memory", "64mb", "--fsync", "never"]);
    let mut c = RespConn::connect(node.resp);
    let n = 20_000;
    // Long enough that every key is still there when the writes end, even
    // on a loaded machine (the test checks DBSIZE then).
    let refused = set_range(&mut c, 0, n, "short-lived", &["PX", "3000"]);
    assert!(refused.is_empty());
    c.call(&["SET", "persistent", "stays"]);
    assert_eq!(c.call(&["DBSIZE"]), Reply::Int(n as i64 + 1));
    // Wait for the sweep, never reading an expired key: DBSIZE and INFO
    // only. Bounded: the sweep passes each segment at least once a second.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if c.call(&["DBSIZE"]) == Reply::Int(1) {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys still indexed: {:?}", c.call(&["DBSIZE"]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(info_field(&mut c, "expired_keys"), n as u64);
    assert_eq!(info_field(&mut c, "keyspace_hits") + info_field(&mut c, "keyspace_misses"), 0);
    assert_eq!(c.call(&["GET", "persistent"]), Reply::Bulk(Some("stays".into())));
}

/// Runs `ringkv serve` with flags that must be refused; returns stderr.
fn refused(data_dir: &std::path::Path, flags: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["serve", "--port", "0", "--resp-port", "0", "--no-pin", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{flags:?} was accepted");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn flags_that_cannot_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(refused(dir.path(), &["--mode", "cache"]).contains("needs --max-memory"));
    assert!(refused(dir.path(), &["--mode", "cache", "--max-memory", "64mb", "--fsync", "always"])
        .contains("--fsync always cannot hold"));
    assert!(refused(dir.path(), &["--max-memory", "12tb"]).contains("unknown unit"));
    // A cache never starts over a store's data.
    let node = Node::start(dir.path(), &["--shards", "1"]);
    assert!(node.stop().success());
    let err = refused(dir.path(), &["--shards", "1", "--mode", "cache", "--max-memory", "64mb"]);
    assert!(err.contains("holds segment files"), "{err}");
}
