//! A clean shutdown (SIGTERM) exits 0 and a restart over the same data
//! directory serves the same data.

mod common;

use common::{runtime, Node, RespConn};
use net::client::SetArgs;
use net::resp::Reply;

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

/// Segments fill, the next ones are made ahead of need on the blocking
/// pool, compaction removes old ones: a clean stop still leaves exactly the
/// files its checkpoint describes, so the next open loads it instead of
/// scanning the log.
#[test]
fn a_stop_while_segments_roll_leaves_a_usable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shards", "1", "--segment-mb", "1", "--fsync", "never"];
    let node = Node::start(dir.path(), &flags);
    let value = |round: u8| vec![round; 1000];
    let mut info = RespConn::connect(node.resp);
    let persistence = |info: &mut RespConn| match info.call(&["INFO", "persistence"]) {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    // A segment made ahead of need is waiting, and compaction has run.
    let ready = |info: &mut RespConn| {
        let stats = persistence(info);
        stats.contains("segments_ready:1") && !stats.contains("compactions:0\r")
    };
    runtime().block_on(async {
        let mut c = node.client().await;
        for round in 0..3u8 {
            for i in 0..1500 {
                c.set(format!("k{i}").as_bytes(), &value(round), SetArgs::default()).await.unwrap();
            }
        }
        // Until the next segment is ready (the active one is half full and
        // the maintenance loop made it), so that the stop finds one.
        let mut i = 0;
        while !ready(&mut info) {
            assert!(i < 100_000, "no segment made ahead of need, or no compaction: {}", persistence(&mut info));
            c.set(format!("k{}", i % 1500).as_bytes(), &value(2), SetArgs::default()).await.unwrap();
            i += 1;
        }
    });
    assert!(node.stop().success());
    let shard = dir.path().join("shard-0");
    let names: Vec<String> =
        std::fs::read_dir(&shard).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".doomed")), "removed files deleted at the stop: {names:?}");
    let config = engine::Config { segment_size_bytes: 1 << 20, ..engine::Config::default() };
    let (store, report) = engine::Store::open(&shard, config).unwrap();
    assert!(report.hint_used, "{report:?}");
    for i in 0..1500 {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&value(2)[..]), "k{i}");
    }
}

/// Pinned shard threads start the blocking pool's threads (flushes,
/// segment files), which would inherit the pin and take their shard's core
/// from its requests: they run on any of the process's CPUs instead.
#[test]
fn flush_threads_are_not_pinned_to_their_shard_core() {
    let cpus_of = |status: &str| -> String {
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or_default().trim().to_string()
    };
    let process = cpus_of(&std::fs::read_to_string("/proc/self/status").unwrap());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one CPU ({process}): a pinned thread and a free one look the same; nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_pinned(dir.path(), &["--shards", "1", "--fsync", "always"]);
    runtime().block_on(async {
        let mut c = node.client().await;
        // A durable write: the group commit flushes on the blocking pool.
        c.set(b"k", b"v", SetArgs::default()).await.unwrap();
    });
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", node.child.id())).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap().trim().to_string();
        let cpus = cpus_of(&std::fs::read_to_string(task.path().join("status")).unwrap());
        threads.push((comm, cpus));
    }
    // Shard 0 takes the first CPU the process may use.
    let first = process.split(['-', ',']).next().unwrap_or_default();
    let shard = threads.iter().find(|(c, _)| c == "shard-0").expect("shard thread");
    assert_eq!(shard.1, first, "the shard thread is pinned: {threads:?}");
    let pool: Vec<_> = threads.iter().filter(|(c, _)| c.starts_with("shard-0-io")).collect();
    assert!(!pool.is_empty(), "the flush ran on the blocking pool: {threads:?}");
    for (_, cpus) in pool {
        assert_eq!(cpus, &process, "a blocking thread keeps the CPUs of the process: {threads:?}");
    }
    assert!(node.stop().success());
}

/// A SIGTERM sent the moment the ready line is out is a clean shutdown
/// too: the handler is in place before the server starts (the default
/// action used to kill the process, exit 143, no checkpoint).
#[test]
fn sigterm_right_after_the_ready_line_is_a_clean_shutdown() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["serve", "--port", "0", "--resp-port", "0", "--shards", "2", "--no-pin", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "{line:?}");
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        for shard in ["shard-0", "shard-1"] {
            let hint = dir.path().join(shard).join("index.hint");
            assert!(hint.exists(), "the clean shutdown wrote {}", hint.display());
        }
    }
}

/// A start that fails part way (here the metrics port is taken) leaves
/// nothing running: every shard that had opened its store closes it, so
/// the next start over the same directory works (the shards kept running,
/// holding their directories' locks).
#[test]
fn a_failed_start_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = |metrics_port| net::ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        resp_port: None,
        metrics_port,
        shard_port_base: 0,
        shards: 2,
        data_dir: dir.path().to_path_buf(),
        pin_cores: false,
        ..net::ServerConfig::default()
    };
    let failed = net::start(config(Some(taken.local_addr().unwrap().port())));
    assert!(matches!(failed, Err(net::ServerError::Bind { .. })), "{failed:?}");
    let handle = net::start(config(None)).expect("a second start over the same directory");
    handle.shutdown();
    handle.join().unwrap();
}

/// A shard-aware client keeps working across a restart that gives the
/// shards other ports: the refused shard port makes it fetch the ring
/// from the seed again (it kept the old ports, and every request to them
/// failed).
#[test]
fn a_client_follows_a_restart_onto_new_shard_ports() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = || net::ServerConfig {
        bind: "127.0.0.1".parse().unwrap(),
        port,
        resp_port: None,
        metrics_port: None,
        shard_port_base: 0,
        shards: 2,
        data_dir: dir.path().to_path_buf(),
        pin_cores: false,
        ..net::ServerConfig::default()
    };
    let rt = runtime();
    let first = net::start(config()).unwrap();
    let old_ports = first.shard_addrs.clone();
    let mut client = rt.block_on(net::client::Client::connect(first.native_addr, Default::default())).unwrap();
    for i in 0..20 {
        rt.block_on(client.set(format!("k{i}").as_bytes(), b"v", SetArgs::default())).unwrap();
    }
    first.shutdown();
    first.join().unwrap();
    let second = net::start(config()).unwrap();
    if second.shard_addrs == old_ports {
        // The kernel handed out the same ports again: nothing to follow.
        eprintln!("the shards got their old ports back; the refresh is not exercised this time");
    }
    for i in 0..20 {
        let got = rt.block_on(client.get(format!("k{i}").as_bytes())).unwrap();
        assert_eq!(got.as_deref(), Some(&b"v"[..]), "k{i}");
    }
    assert_eq!(client.shard_addrs(), &second.shard_addrs[..]);
    second.shutdown();
    second.join().unwrap();
}
