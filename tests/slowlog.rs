//! `--slowlog-ms` and SLOWLOG: slow batches are kept with their first
//! command, newest first, Redis' reply layout; the log can be read, counted,
//! reset and turned off, and the metrics export request durations.

mod common;

use common::{Node, RespConn};
use net::resp::Reply;

fn int(r: Reply) -> i64 {
    match r {
        Reply::Int(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn every_request_is_slow_at_threshold_zero() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--slowlog-ms", "0", "--slowlog-max-len", "3"]);
    let mut c = RespConn::connect(node.resp);
    assert_eq!(c.call(&["CLIENT", "SETNAME", "tester"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["SLOWLOG", "RESET"]), Reply::Simple("OK".into()));
    c.call(&["SET", "k1", "v1"]);
    c.call(&["GET", "k1"]);
    let Reply::Array(Some(entries)) = c.call(&["SLOWLOG", "GET"]) else { panic!("an array") };
    // RESET, SET and GET, newest first (this GET is not in yet: its batch
    // ends after the reply is written).
    assert_eq!(entries.len(), 3, "{entries:?}");
    let Reply::Array(Some(newest)) = &entries[0] else { panic!() };
    assert_eq!(newest.len(), 6);
    assert_eq!(newest[3], Reply::Array(Some(vec![Reply::Bulk(Some("GET".into())), Reply::Bulk(Some("k1".into()))])));
    assert!(matches!(newest[1], Reply::Int(t) if t > 1_700_000_000), "a Unix timestamp: {:?}", newest[1]);
    assert!(matches!(newest[2], Reply::Int(us) if us >= 0));
    let client = format!("{}", c.local_addr());
    assert_eq!(newest[4], Reply::Bulk(Some(client.into())));
    assert_eq!(newest[5], Reply::Bulk(Some("tester".into())));
    let (Reply::Array(Some(a)), Reply::Array(Some(b))) = (&entries[0], &entries[1]) else { panic!() };
    assert!(int(a[0].clone()) > int(b[0].clone()), "ids grow");
    // Bounded by --slowlog-max-len.
    for _ in 0..10 {
        c.call(&["PING"]);
    }
    assert_eq!(int(c.call(&["SLOWLOG", "LEN"])), 3);
    let Reply::Array(Some(one)) = c.call(&["SLOWLOG", "GET", "1"]) else { panic!() };
    assert_eq!(one.len(), 1);
    c.call(&["SLOWLOG", "RESET"]);
    assert!(int(c.call(&["SLOWLOG", "LEN"])) <= 1, "only the RESET itself");
}

#[test]
fn off_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "1", "--slowlog-ms", "off", "--metrics-port", "0"]);
    let mut c = RespConn::connect(node.resp);
    for i in 0..20 {
        c.call(&["SET", &format!("k{i}"), "v"]);
    }
    assert_eq!(int(c.call(&["SLOWLOG", "LEN"])), 0);
    let metrics = common::http_get(node.metrics.unwrap(), "/metrics");
    let count = metrics
        .lines()
        .find(|l| l.starts_with("ringkv_request_duration_seconds_count{shard=\"0\"}"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .expect("request duration histogram");
    assert!(count >= 20, "{count}");
    assert!(metrics.contains("ringkv_request_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    assert!(metrics.contains("# TYPE ringkv_fsync_duration_seconds histogram"));
}
