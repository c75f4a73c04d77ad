//! Requests that are well formed, or nearly, but built to hurt: thousands
//! of empty commands in one read, glob patterns that explode a
//! backtracking matcher, a command whose arguments arrive a few bytes at a
//! time, a client that trickles half a request, TTLs past the end of time,
//! an MSET with one value over the limit. The server must answer each
//! correctly (or close that one connection) and stay up for everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{Node, RespConn};
use net::resp::Reply;

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
}

fn simple(s: &str) -> Reply {
    Reply::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn error_text(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("an error reply, got {other:?}"),
    }
}

#[test]
fn hostile_requests_are_answered_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--partial-request-timeout-ms", "300"]);
    let mut c = RespConn::connect(node.resp);
    assert_eq!(c.call(&["SET", "canary", "alive"]), simple("OK"));

    // Empty commands are skipped, as Redis skips them. Thousands in one
    // read recursed once each and overflowed the shard thread's stack.
    let mut flood = vec![b'\n'; 16384];
    flood.extend(b"*0\r\n".repeat(4096));
    flood.extend(b"*-1\r\n".repeat(4096));
    flood.extend(b"*1\r\n$4\r\nPING\r\n");
    c.send_raw(&flood);
    assert_eq!(c.reply(), simple("PONG"), "one reply, to the PING after the empty commands");

    // Glob patterns: 40,000 stars overflowed the recursive matcher's
    // stack; `*a` forty times then `x` took it exponential time.
    let stars = "*".repeat(40_000);
    let Reply::Array(Some(all)) = c.call(&["CONFIG", "GET", &stars]) else { panic!("CONFIG GET answers an array") };
    assert!(all.len() >= 2 && all.len() % 2 == 0, "every parameter matches a run of stars: {all:?}");
    let explosive = format!("{}x", "*a".repeat(40));
    assert_eq!(c.call(&["CONFIG", "GET", &explosive]), Reply::Array(Some(vec![])));
    let key = "a".repeat(200);
    assert_eq!(c.call(&["SET", &key, "1"]), simple("OK"));
    assert_eq!(c.call(&["KEYS", &explosive]), Reply::Array(Some(vec![])));
    // Ranges and negation, which the old matcher did not know.
    assert_eq!(c.call(&["KEYS", "c[a-c]nar[^x]"]), Reply::Array(Some(vec![bulk("canary")])));
    assert_eq!(c.call(&["KEYS", "c[^a]nary"]), Reply::Array(Some(vec![])));

    // A command whose arguments arrive a few bytes at a time is parsed
    // right (each read goes on where the last one stopped).
    let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let mut args = vec!["MSET"];
    for k in &keys {
        args.extend([k.as_str(), "v"]);
    }
    let mut encoded = bytes::BytesMut::new();
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    net::resp::put_command(&mut encoded, &refs);
    {
        let mut slow = TcpStream::connect(node.resp).unwrap();
        slow.set_nodelay(true).unwrap();
        for piece in encoded.chunks(61) {
            slow.write_all(piece).unwrap();
        }
        let mut reply = [0u8; 5];
        slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        slow.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(c.call(&del), Reply::Int(5000), "every key of the MSET sent in pieces was written");

    // A client trickling a byte at a time into half a request is closed
    // once it has held it for the timeout (300 ms here), however often it
    // sends: the deadline used to restart at every read.
    {
        let mut trickle = TcpStream::connect(node.resp).unwrap();
        trickle.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000000\r\n").unwrap();
        let closed = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            trickle.write_all(b"x").is_err()
        });
        assert!(closed, "a trickling client is closed within 5 s");
    }

    // A large value arriving slowly but steadily (64 KiB every 150 ms,
    // twice the timeout in all) is not cut off.
    {
        let value = vec![b'z'; 1 << 20];
        let mut encoded = bytes::BytesMut::new();
        net::resp::put_command(&mut encoded, &[b"SET", b"slow", &value]);
        let mut slow = TcpStream::connect(node.resp).unwrap();
        for piece in encoded.chunks(64 << 10) {
            slow.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
        let mut reply = [0u8; 5];
        slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        slow.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
        assert_eq!(c.call(&["STRLEN", "slow"]), Reply::Int(1 << 20));
    }

    // MSET checks every pair's size before it writes any.
    let too_big = "x".repeat((16 << 20) + 1);
    let err = error_text(&c.call(&["MSET", "first", "1", "second", &too_big]));
    assert!(err.contains("the limit is"), "{err}");
    assert_eq!(c.call(&["EXISTS", "first"]), Reply::Int(0), "no pair of a refused MSET was written");

    assert_eq!(c.call(&["GET", "canary"]), bulk("alive"));
    let status = node.stop();
    assert!(status.success(), "server survived all of it and shut down cleanly: {status:?}");
}

#[test]
fn native_ttls_past_the_end_of_time_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "1"]);
    let rt = common::runtime();
    let mut client = rt.block_on(node.client());
    // The longest ttl allowed reads back as a positive number of ms.
    let longest = net::native::TTL_MAX_MS;
    let args = net::client::SetArgs { ttl_ms: longest, ..Default::default() };
    rt.block_on(client.set(b"far", b"future", args)).unwrap();
    let ttl = rt.block_on(client.ttl_ms(b"far")).unwrap();
    assert!(ttl > 0 && ttl as u64 <= longest, "remaining ms, positive: {ttl}");

    // One more is malformed: an error reply, and that connection closes.
    for ttl_ms in [longest + 1, 1 << 63, u64::MAX] {
        let mut body = Vec::new();
        for field in [&b"k"[..], &b"v"[..]] {
            body.extend((field.len() as u32).to_le_bytes());
            body.extend(field);
        }
        body.extend(ttl_ms.to_le_bytes());
        let mut frame = ((6 + body.len()) as u32).to_le_bytes().to_vec();
        frame.extend([0x02, 0]);
        frame.extend(7u32.to_le_bytes());
        frame.extend(&body);
        let mut s = TcpStream::connect(node.native).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&frame).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(reply.len() >= 10 && reply[4] == 2, "ttl {ttl_ms}: an error reply: {reply:?}");
        assert!(String::from_utf8_lossy(&reply[10..]).contains("ttl too large"), "{reply:?}");
    }
    assert_eq!(rt.block_on(client.get(b"k")).unwrap(), None, "no refused SET was written");
    let status = node.stop();
    assert!(status.success(), "{status:?}");
}
