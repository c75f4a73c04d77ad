//! `--max-disk`: a node whose logs reach their bound refuses writes with a
//! clear error, keeps serving and deleting what it acknowledged, makes
//! room again once keys are deleted, and restarts with everything intact.

mod common;

use std::time::{Duration, Instant};

use common::{info_field, Node, RespConn};
use net::resp::Reply;

/// 100 KiB values: 1 MiB segments hold 10 of them.
const VALUE_BYTES: usize = 100 << 10;
const ARGS: [&str; 8] = ["--shards", "1", "--segment-mb", "1", "--max-disk", "8mb", "--fsync", "never"];

fn is_log_full(text: &[u8]) -> bool {
    text.starts_with(b"ERR log is full")
}

/// SETs `key:0..` until one is refused; returns how many were stored and
/// the refusal.
fn fill(c: &mut RespConn, value: &str) -> (usize, Reply) {
    for k in 0..1000 {
        match c.call(&["SET", &format!("key:{k}"), value]) {
            Reply::Simple(ok) if &ok[..] == b"OK" => {}
            other => return (k, other),
        }
    }
    panic!("8 MiB of segments took 1000 values of 100 KiB");
}

#[test]
fn a_node_at_its_disk_bound_refuses_writes_and_takes_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let value = "d".repeat(VALUE_BYTES);
    let node = Node::start(dir.path(), &ARGS);
    let mut c = RespConn::connect(node.resp);
    let (stored, refusal) = fill(&mut c, &value);
    let Reply::Error(text) = refusal else { panic!("a write over the bound answers an error, not {refusal:?}") };
    assert!(is_log_full(&text), "{text:?}");
    // Five of the eight 1 MiB segments hold values; three are kept from
    // writes.
    assert!((40..=60).contains(&stored), "stored {stored}");
    assert_eq!(c.call(&["GET", "key:0"]), Reply::Bulk(Some(value.clone().into())));
    // Deletes go through; compaction then makes room for new writes.
    for k in 0..stored / 2 {
        assert_eq!(c.call(&["DEL", &format!("key:{k}")]), Reply::Int(1), "key:{k}");
    }
    // Compaction (after each batch, and on the shard's timer) frees the
    // segments the deletes emptied.
    let deadline = Instant::now() + Duration::from_secs(20);
    while info_field(&mut c, "compactions") < 2 {
        assert!(Instant::now() < deadline, "compaction freed no segment");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut written = 0;
    while written < stored / 4 {
        assert_eq!(c.call(&["SET", &format!("new:{written}"), &value]), Reply::Simple("OK".into()), "new:{written}");
        written += 1;
    }
    assert_eq!(written, stored / 4, "the deleted keys' room came back");
    assert_eq!(node.stop().code(), Some(0));
    let node = Node::start(dir.path(), &ARGS);
    let mut c = RespConn::connect(node.resp);
    for k in 0..stored {
        let expected = if k < stored / 2 { Reply::Bulk(None) } else { Reply::Bulk(Some(value.clone().into())) };
        assert_eq!(c.call(&["GET", &format!("key:{k}")]), expected, "key:{k}");
    }
    for k in 0..written {
        assert_eq!(c.call(&["GET", &format!("new:{k}")]), Reply::Bulk(Some(value.clone().into())), "new:{k}");
    }
}
