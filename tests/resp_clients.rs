//! Real Redis clients nobody here wrote: the `redis` crate, and redis-cli
//! when it is installed (.ci/run installs it).

mod common;

use common::Node;
use redis::AsyncCommands;

#[test]
fn the_redis_crate_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    common::runtime().block_on(async {
        let client = redis::Client::open(format!("redis://{}/", node.resp)).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = con.set("greeting", "hello").await.unwrap();
        let v: String = con.get("greeting").await.unwrap();
        assert_eq!(v, "hello");
        let missing: Option<String> = con.get("missing").await.unwrap();
        assert_eq!(missing, None);
        let _: () = con.set_ex("session", "abc", 100).await.unwrap();
        let ttl: i64 = con.ttl("session").await.unwrap();
        assert!((99..=100).contains(&ttl), "ttl {ttl}");
        let _: () = redis::cmd("MSET").arg(&["a", "1", "b", "2", "c", "3"]).query_async(&mut con).await.unwrap();
        let values: Vec<Option<String>> = con.mget(&["a", "nope", "c", "b"]).await.unwrap();
        assert_eq!(values, vec![Some("1".into()), None, Some("3".into()), Some("2".into())]);
        let deleted: i64 = con.del(&["a", "b", "nope"]).await.unwrap();
        assert_eq!(deleted, 2);
        let n: i64 = con.exists(&["c", "a"]).await.unwrap();
        assert_eq!(n, 1);
        let nx: bool = con.set_nx("c", "other").await.unwrap();
        assert!(!nx);
        let old: Option<String> = redis::cmd("SET").arg("c").arg("new").arg("GET").query_async(&mut con).await.unwrap();
        assert_eq!(old.as_deref(), Some("3"));
        let info: String = redis::cmd("INFO").arg("stats").query_async(&mut con).await.unwrap();
        let processed: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO stats has total_commands_processed");
        assert!(processed >= 10, "{info}");
        let err = redis::cmd("NOSUCHCOMMAND").query_async::<()>(&mut con).await.unwrap_err();
        assert!(err.to_string().contains("unknown command"), "{err}");
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
        assert_eq!(size, 3, "greeting, session and c remain");
    });
}

#[test]
fn redis_cli_works_unchanged() {
    let Ok(out) = std::process::Command::new("redis-cli").arg("--version").output() else {
        // .ci/run installs redis-tools; a developer machine may lack it.
        eprintln!("redis-cli not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2"]);
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "k", "v"]), "OK");
    assert_eq!(cli(&["GET", "k"]), "v");
    assert_eq!(cli(&["DEL", "k"]), "1");
    assert_eq!(cli(&["GET", "k"]), "");
    assert!(cli(&["INFO"]).contains("total_commands_processed:"));
}
