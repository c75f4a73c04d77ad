//! With `--fsync always`, a write acknowledged to the client survives
//! `kill -9` of the server in the middle of concurrent writes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::Node;
use net::client::{Client, ClientConfig, SetArgs};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--fsync", "always"]);
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = node.native;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = acked.clone();
            rt.spawn(async move {
                let config = ClientConfig { attempts: 1, ..ClientConfig::default() };
                let Ok(mut c) = Client::connect(addr, config).await else { return };
                // Bounded: stops at the kill, or after 5000 writes.
                for i in 0..5000u32 {
                    let key = format!("w{w}:{}", i % 300);
                    let value = format!("{w}-{i}");
                    match c.set(key.as_bytes(), value.as_bytes(), SetArgs::default()).await {
                        Ok(true) => {
                            acked.lock().unwrap().insert(key, value);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of writes is acknowledged (bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 1500 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    node.kill9();
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1500, "writes were acknowledged before the kill: {}", acked.len());

    let node = Node::start(dir.path(), &["--shards", "2"]);
    common::runtime().block_on(async {
        let mut c = node.client().await;
        let mut lost = Vec::new();
        for (key, value) in &acked {
            // The newest acknowledged value, or a newer one written before
            // the kill whose acknowledgement did not arrive.
            let got = c.get(key.as_bytes()).await.unwrap();
            let got = got.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
            let ok = match &got {
                Some(g) => {
                    let seq = |v: &str| v.split('-').nth(1).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
                    seq(g) >= seq(value)
                }
                None => false,
            };
            if !ok {
                lost.push((key.clone(), value.clone(), got));
            }
        }
        assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    });
}
