//! Every native operation end to end against the real binary: two shards,
//! keys spread over both, the shard-aware client and plain connections
//! (which cross shards), pipelines from 1 to 1024 deep, many clients.

mod common;

use bytes::Bytes;
use common::{runtime, Node};
use net::client::{ClientConfig, Connection, SetArgs};
use net::native::{KeyOpWire, RequestBody, Status};

#[test]
fn every_operation_works() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    runtime().block_on(async {
        let mut c = node.client().await;
        assert_eq!(c.shard_count(), 2, "shard-aware: one connection per shard");
        c.ping().await.unwrap();
        assert_eq!(c.get(b"missing").await.unwrap(), None);
        assert!(c.set(b"k", b"v1", SetArgs::default()).await.unwrap());
        assert_eq!(c.get(b"k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(!c.set(b"k", b"v2", SetArgs { only_if_absent: true, ..SetArgs::default() }).await.unwrap());
        assert!(c.set(b"k", b"v3", SetArgs { only_if_present: true, ..SetArgs::default() }).await.unwrap());
        assert!(!c.set(b"nope", b"x", SetArgs { only_if_present: true, ..SetArgs::default() }).await.unwrap());
        assert_eq!(c.get(b"k").await.unwrap().as_deref(), Some(&b"v3"[..]));
        assert!(c.exists(b"k").await.unwrap());
        assert_eq!(c.ttl_ms(b"k").await.unwrap(), -1);
        assert_eq!(c.ttl_ms(b"missing").await.unwrap(), -2);
        assert!(c.expire(b"k", 100_000).await.unwrap());
        let ttl = c.ttl_ms(b"k").await.unwrap();
        assert!((99_000..=100_000).contains(&ttl), "ttl {ttl}");
        assert!(c.expire(b"k", 0).await.unwrap(), "persist");
        assert_eq!(c.ttl_ms(b"k").await.unwrap(), -1);
        assert!(c.del(b"k").await.unwrap());
        assert!(!c.del(b"k").await.unwrap());
        assert!(!c.exists(b"k").await.unwrap());

        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key:{i}").into_bytes()).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &k[..])).collect();
        c.mset(&pairs).await.unwrap();
        let mut wanted: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        wanted.push(b"absent");
        let got = c.mget(&wanted).await.unwrap();
        assert_eq!(got.len(), 201);
        for (k, v) in keys.iter().zip(&got) {
            assert_eq!(v.as_deref(), Some(&k[..]), "MGET keeps argument order");
        }
        assert_eq!(got[200], None);
        let on_shard0 = keys.iter().filter(|k| c.shard_of(k) == 0).count();
        assert!(on_shard0 > 50 && on_shard0 < 150, "keys spread over both shards: {on_shard0}/200");

        let stats: std::collections::HashMap<_, _> = c.stats().await.unwrap().into_iter().collect();
        assert_eq!(stats["keys"], "200");
        assert_eq!(stats["shards"], "2");
        assert!(stats["total_commands_processed"].parse::<u64>().unwrap() >= 20);
    });
}

#[test]
fn pipelines_from_1_to_1024_deep_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    runtime().block_on(async {
        // The shared port: about half the keys belong to the other shard,
        // so replies from two shards must still come back in order.
        let mut conn = Connection::connect(node.native, &ClientConfig::default()).await.unwrap();
        for depth in [1usize, 2, 7, 16, 100, 512, 1024] {
            let sets: Vec<RequestBody> = (0..depth)
                .map(|i| {
                    RequestBody::Key(KeyOpWire::Set {
                        key: Bytes::from(format!("p{depth}:{i}")),
                        value: Bytes::from(format!("v{i}")),
                        ttl_ms: 0,
                        flags: 0,
                    })
                })
                .collect();
            for r in conn.pipeline(&sets).await.unwrap() {
                assert_eq!(r.status, Status::Ok);
            }
            let gets: Vec<RequestBody> =
                (0..depth).map(|i| RequestBody::Key(KeyOpWire::Get(Bytes::from(format!("p{depth}:{i}"))))).collect();
            let replies = conn.pipeline(&gets).await.unwrap();
            for (i, r) in replies.iter().enumerate() {
                assert_eq!(r.body, Bytes::from(format!("v{i}")), "depth {depth}, reply {i}");
            }
        }
        let mut c = node.client().await;
        let stats: std::collections::HashMap<_, _> = c.stats().await.unwrap().into_iter().collect();
        assert!(stats["cross_shard_hops"].parse::<u64>().unwrap() > 0, "the shared port forwarded keys");
    });
}

#[test]
fn many_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..64 {
            let addr = node.native;
            tasks.push(tokio::spawn(async move {
                let mut c = net::client::Client::connect(addr, ClientConfig::default()).await.unwrap();
                for i in 0..50 {
                    let key = format!("c{t}:{i}");
                    c.set(key.as_bytes(), key.as_bytes(), SetArgs::default()).await.unwrap();
                    assert_eq!(c.get(key.as_bytes()).await.unwrap().as_deref(), Some(key.as_bytes()));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut c = node.client().await;
        let stats: std::collections::HashMap<_, _> = c.stats().await.unwrap().into_iter().collect();
        assert_eq!(stats["keys"], "3200");
    });
}
