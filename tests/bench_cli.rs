//! `ringkv bench` end to end: against its embedded server and against a
//! real redis-server, it completes without errors and the operation count
//! it reports matches what the server itself counted. An open-loop run
//! sends at the requested rate.

mod common;

use std::process::{Command, Stdio};

/// The short workload both count checks run.
const WORKLOAD: &[&str] = &["--requests", "20000", "--clients", "8", "--pipeline", "4"];

fn bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let status = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("bench")
        .args(args)
        .arg("--json-out")
        .arg(&out)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ringkv bench {args:?} failed: {status:?}");
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

fn counts(json: &serde_json::Value) -> (u64, u64, u64) {
    (
        json["total_operations"].as_u64().unwrap(),
        json["total_errors"].as_u64().unwrap(),
        json["server"]["commands"].as_u64().unwrap(),
    )
}

#[test]
fn embedded_run_counts_match_the_server() {
    for protocol in ["native", "resp"] {
        let json = bench(&[&["--protocol", protocol, "--shards", "2"], WORKLOAD].concat());
        let (ops, errors, server) = counts(&json);
        assert_eq!(ops, 20000, "{protocol}");
        assert_eq!(errors, 0, "{protocol}");
        assert_eq!(server, ops, "{protocol}: the server counted what the bench sent");
        let get = &json["operations"]["get"];
        assert!(get["count"].as_u64().unwrap() > 15000, "1:10 ratio");
        assert!(json["operations"]["total"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn open_loop_sends_at_the_requested_rate() {
    let json = bench(&["--rate", "2000", "--test-time", "2", "--clients", "4"]);
    let (ops, errors, _) = counts(&json);
    assert_eq!(errors, 0);
    assert!((3400..=4200).contains(&ops), "2000/s for 2 s sent {ops}");
}

#[test]
fn run_against_a_real_redis_server() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        // .ci/run installs redis-server; a developer machine may lack it.
        eprintln!("redis-server not installed; skipping");
        return;
    }
    let (_redis, port) = common::start_redis().expect("start redis-server");
    let port = port.to_string();
    let json = bench(&[&["-s", "127.0.0.1", "-p", &port, "--protocol", "redis"], WORKLOAD].concat());
    let (ops, errors, server) = counts(&json);
    assert_eq!((ops, errors), (20000, 0));
    assert_eq!(server, ops, "Redis counted what the bench sent");
}
