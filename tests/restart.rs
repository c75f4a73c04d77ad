//! A clean shutdown (SIGTERM) exits 0 and a restart over the same data
//! directory serves the same data.

mod common;

use common::{runtime, Node};
use net::client::SetArgs;

#[test]
fn sigterm_exits_zero_and_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    runtime().block_on(async {
        let mut c = node.client().await;
        for i in 0..2000 {
            c.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), SetArgs::default()).await.unwrap();
        }
        c.set(b"ttl", b"x", SetArgs { ttl_ms: 3_600_000, ..SetArgs::default() }).await.unwrap();
        c.del(b"k7").await.unwrap();
    });
    let status = node.stop();
    assert!(status.success(), "exit status {status:?}");
    for shard in 0..2 {
        assert!(dir.path().join(format!("shard-{shard}/index.hint")).exists(), "checkpoint written for shard {shard}");
    }

    let node = Node::start(dir.path(), &["--shards", "2"]);
    runtime().block_on(async {
        let mut c = node.client().await;
        for i in 0..2000 {
            let want = (i != 7).then(|| format!("v{i}").into_bytes());
            assert_eq!(c.get(format!("k{i}").as_bytes()).await.unwrap().map(|b| b.to_vec()), want, "k{i}");
        }
        let ttl = c.ttl_ms(b"ttl").await.unwrap();
        assert!(ttl > 3_500_000, "expiry survives restart: {ttl}");
    });
    assert!(node.stop().success());
}
