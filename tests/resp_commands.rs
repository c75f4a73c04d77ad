//! RESP commands whose replies cannot be compared with Redis byte for
//! byte: SCAN over every shard with resumable cursors, MATCH, COUNT and
//! TYPE; KEYS; INFO commandstats; unknown commands answered (never a hang);
//! MSETNX followed in the same pipeline by a read of its keys; a pipeline
//! mixing plain GETs and SETs (served from the read buffer) with other
//! commands, cut at awkward places.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::RespConn as Conn;
use net::resp::Reply;

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
}

fn scan_all(node: &common::Node, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        // A new connection for every step: the cursor alone carries the
        // position.
        let mut c = Conn::connect(node.resp);
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let Reply::Array(Some(parts)) = c.call(&args) else { panic!("SCAN answers an array") };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(batch))] = &parts[..] else {
            panic!("[cursor, keys]: {parts:?}")
        };
        for k in batch {
            let Reply::Bulk(Some(k)) = k else { panic!("a key") };
            keys.push(String::from_utf8(k.to_vec()).unwrap());
        }
        calls += 1;
        assert!(calls < 100_000, "SCAN terminates");
        cursor = String::from_utf8(next.to_vec()).unwrap();
        if cursor == "0" {
            return (keys, calls);
        }
    }
}

#[test]
fn scan_keys_info_and_unknown_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "3"]);
    let mut c = Conn::connect(node.resp);
    let expected: BTreeSet<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    for k in &expected {
        c.send(&["SET", k, "v"]);
    }
    for _ in &expected {
        assert_eq!(c.reply(), Reply::Simple(Bytes::from("OK")));
    }

    // Every key, across all shards, each step resumed from the cursor.
    let (keys, calls) = scan_all(&node, &["COUNT", "50"]);
    let seen: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(seen, expected, "SCAN visits every key present for the whole scan");
    assert!(calls > 3, "COUNT 50 over 1000 keys takes many steps, not one");
    let (matched, _) = scan_all(&node, &["MATCH", "key:1?", "COUNT", "1000"]);
    let matched: BTreeSet<String> = matched.into_iter().collect();
    assert_eq!(matched, (10..20).map(|i| format!("key:{i}")).collect());
    assert_eq!(scan_all(&node, &["TYPE", "string"]).0.len(), keys.len());
    assert!(scan_all(&node, &["TYPE", "list"]).0.is_empty());
    assert_eq!(c.call(&["SCAN", "abc"]), Reply::Error(Bytes::from("ERR invalid cursor")));
    assert_eq!(c.call(&["SCAN", "0", "COUNT", "0"]), Reply::Error(Bytes::from("ERR syntax error")));
    assert_eq!(c.call(&["SCAN", "0", "MATCH"]), Reply::Error(Bytes::from("ERR syntax error")));
    // A cursor naming a shard this node does not have ends the scan.
    assert_eq!(c.call(&["SCAN", "1023"]), Reply::Array(Some(vec![bulk("0"), Reply::Array(Some(vec![]))])));

    // KEYS gathers every shard.
    let Reply::Array(Some(all)) = c.call(&["KEYS", "*"]) else { panic!("array") };
    assert_eq!(all.len(), 1000);
    let Reply::Array(Some(some)) = c.call(&["KEYS", "key:99?"]) else { panic!("array") };
    assert_eq!(some.len(), 10);

    // INFO commandstats, summed over the shards' counters.
    for _ in 0..5 {
        c.call(&["INCR", "counter"]);
    }
    c.call(&["INCR", "key:1"]); // not an integer: a failed call
    c.call(&["GET"]); // wrong arity: a rejected call
    c.call(&["GET", "key:1"]);
    let Reply::Bulk(Some(info)) = c.call(&["INFO", "commandstats"]) else { panic!("bulk") };
    let info = String::from_utf8(info.to_vec()).unwrap();
    assert!(info.starts_with("# Commandstats\r\n"), "{info}");
    let line = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {info}"))
            .to_string()
    };
    assert!(line("set").starts_with("cmdstat_set:calls=1000,usec="), "{}", line("set"));
    assert!(line("incr").starts_with("cmdstat_incr:calls=6,"), "{}", line("incr"));
    assert!(line("incr").ends_with(",rejected_calls=0,failed_calls=1"), "{}", line("incr"));
    assert!(line("get").starts_with("cmdstat_get:calls=1,"), "{}", line("get"));
    assert!(line("get").ends_with(",rejected_calls=1,failed_calls=0"), "{}", line("get"));
    assert!(line("scan").contains("usec_per_call="));
    let Reply::Bulk(Some(default)) = c.call(&["INFO"]) else { panic!("bulk") };
    assert!(!String::from_utf8_lossy(&default).contains("cmdstat_"), "commandstats only when asked, as in Redis");

    // Unsupported commands answer at once, and the connection still works.
    assert_eq!(
        c.call(&["LPUSH", "list", "a"]),
        Reply::Error(Bytes::from("ERR unknown command 'LPUSH', with args beginning with: 'list' 'a' "))
    );
    assert_eq!(
        c.call(&["EXPIRE", "counter", "10", "BOGUS"]),
        Reply::Error(Bytes::from("ERR Unsupported option BOGUS"))
    );
    assert_eq!(c.call(&["PING"]), Reply::Simple(Bytes::from("PONG")));

    // MSETNX, then in the same pipeline a read of its keys: the read comes
    // after it, whichever shards own the keys.
    c.send(&["MSETNX", "p:a", "1", "p:b", "2", "p:c", "3", "p:d", "4"]);
    c.send(&["MGET", "p:a", "p:b", "p:c", "p:d"]);
    c.send(&["MSETNX", "p:e", "5", "p:a", "x"]);
    c.send(&["MGET", "p:e", "p:a"]);
    assert_eq!(c.reply(), Reply::Int(1));
    assert_eq!(c.reply(), Reply::Array(Some(vec![bulk("1"), bulk("2"), bulk("3"), bulk("4")])));
    assert_eq!(c.reply(), Reply::Int(0));
    assert_eq!(c.reply(), Reply::Array(Some(vec![Reply::Bulk(None), bulk("1")])));
}

/// Plain GETs and SETs are served from the read buffer, other requests
/// split off it (`Protocol::parse_cut`): a pipeline mixing both, over three
/// shards (so that some cut requests go to another shard), written in
/// pieces that end in the middle of requests, must answer every request in
/// order.
#[test]
fn mixed_pipeline_cut_mid_request_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "3"]);
    let mut c = Conn::connect(node.resp);
    let mut wire = bytes::BytesMut::new();
    let mut expected = Vec::new();
    let mut command = |args: &[&str], reply: Reply| {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        net::resp::put_command(&mut wire, &refs);
        expected.push(reply);
    };
    let ok = || Reply::Simple(Bytes::from("OK"));
    let mut counter = 0;
    for i in 0..60 {
        let (k, v, w) = (format!("k{i}"), format!("v{i}"), format!("w{i}"));
        command(&["SET", &k, &v], ok());
        command(&["GET", &k], bulk(&v));
        if i % 5 == 0 {
            command(&["SET", &k, &w, "EX", "100"], ok());
            command(&["get", &k], bulk(&w));
        }
        if i % 7 == 0 {
            counter += 1;
            command(&["INCR", "n"], Reply::Int(counter));
        }
        if i % 11 == 0 {
            command(&["PING"], Reply::Simple(Bytes::from("PONG")));
        }
        command(&["GET", &format!("missing{i}")], Reply::Bulk(None));
        if i % 13 == 0 {
            let now = if i % 5 == 0 { &w } else { &v };
            command(&["MGET", &k, "missing"], Reply::Array(Some(vec![bulk(now), Reply::Bulk(None)])));
        }
    }
    // One request as an inline command (telnet's form), at the request
    // boundary nearest the middle.
    let inline = b"PING\r\n";
    let mut rest = bytes::BytesMut::from(&wire[..]);
    let (mut boundary, mut replies_before) = (0, 0);
    while boundary < wire.len() / 2 {
        let before = rest.len();
        net::resp::parse_command(&mut rest, &net::limits::Limits::default()).unwrap().expect("a whole command");
        boundary += before - rest.len();
        replies_before += 1;
    }
    let mut stream = wire[..boundary].to_vec();
    stream.extend_from_slice(inline);
    stream.extend_from_slice(&wire[boundary..]);
    expected.insert(replies_before, Reply::Simple(Bytes::from("PONG")));
    // Written in pieces of 97 bytes: most end in the middle of a request.
    for piece in stream.chunks(97) {
        c.send_raw(piece);
    }
    for (n, want) in expected.iter().enumerate() {
        assert_eq!(&c.reply(), want, "reply {n}");
    }
    assert_eq!(c.call(&["DBSIZE"]), Reply::Int(61));
}
