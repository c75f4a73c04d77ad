//! `--metrics-port`: a Prometheus scrape reports what the server did.

mod common;

use common::{http_get, Node, RespConn};

/// The sum of a metric's samples across its labels.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn a_scrape_reports_commands_keys_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--metrics-port", "0"]);
    let metrics = node.metrics.expect("metrics address in the ready line");
    let mut c = RespConn::connect(node.resp);
    for i in 0..50 {
        c.call(&["SET", &format!("k{i}"), "v"]);
    }
    for i in 0..30 {
        c.call(&["GET", &format!("k{i}")]);
    }
    for i in 0..7 {
        c.call(&["GET", &format!("missing{i}")]);
    }
    // Writes that read the old value are not reads (Redis' lookupKeyWrite):
    // the hit and miss counts below stay those of the GETs.
    c.call(&["INCR", "counter"]);
    c.call(&["APPEND", "k0", "x"]);
    c.call(&["PERSIST", "k1"]);
    c.call(&["SETRANGE", "k2", "0", "y"]);
    c.call(&["NOSUCHCOMMAND"]);
    // A command only ever refused (wrong arity) still counts its errors.
    c.call(&["STRLEN"]);
    c.call(&["STRLEN"]);
    // A batch's commandstats reach the shard once its replies are written,
    // so the last reply above has been counted when it arrived.
    let text = http_get(metrics, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE ringkv_commands_total counter"));
    assert_eq!(total(&text, "ringkv_keys"), 51.0, "50 SETs and the counter: {text}");
    assert!(total(&text, "ringkv_commands_total") >= 92.0);
    assert_eq!(total(&text, "ringkv_connections"), 1.0, "the RESP client is connected");
    let sets = text.lines().find(|l| l.starts_with("ringkv_command_calls_total{protocol=\"resp\",command=\"set\"}"));
    assert_eq!(sets.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v), Some("50"), "{text}");
    let strlen =
        text.lines().find(|l| l.starts_with("ringkv_command_errors_total{protocol=\"resp\",command=\"strlen\"}"));
    assert_eq!(strlen.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v), Some("2"), "{text}");
    assert!(total(&text, "ringkv_live_bytes") > 0.0);
    assert!(total(&text, "ringkv_segments") >= 2.0, "one segment a shard at least");
    assert_eq!(total(&text, "ringkv_keyspace_hits_total"), 30.0, "{text}");
    assert_eq!(total(&text, "ringkv_keyspace_misses_total"), 7.0, "{text}");
    assert_eq!(total(&text, "ringkv_evicted_keys_total"), 0.0);
    assert!(total(&text, "ringkv_memory_used_bytes") > 0.0);

    let missing = http_get(metrics, "/other");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(node.stop().success());
}
