//! redis-benchmark runs its string tests (SET, GET, INCR, MSET) against
//! ringkv to the end and reports a rate for each. Skipped, with a message,
//! when redis-benchmark is not installed (CI installs it).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn redis_benchmark_completes_its_string_tests() {
    if Command::new("redis-benchmark").arg("--version").output().is_err() {
        eprintln!("redis-benchmark not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "2"]);
    let port = node.resp.port().to_string();
    let mut child = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "set,get,incr,mset", "-n", "2000", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-benchmark");
    // Bounded: a server that stops answering fails the test, never hangs it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("redis-benchmark did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark failed: {stdout}\n{stderr}");
    assert!(!stdout.contains("ERR") && !stderr.contains("ERR"), "error replies: {stdout}\n{stderr}");
    for test in ["SET", "GET", "INCR", "MSET (10 keys)"] {
        let line = stdout
            .split(['\r', '\n'])
            .rfind(|l| l.starts_with(&format!("{test}: ")) && l.contains("requests per second"))
            .unwrap_or_else(|| panic!("no {test} result in {stdout:?}"));
        let rate: f64 = line[test.len() + 2..].split_whitespace().next().unwrap().parse().unwrap();
        assert!(rate > 0.0, "{line}");
        eprintln!("{line}");
    }
}
