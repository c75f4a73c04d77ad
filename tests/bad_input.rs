//! Hostile bytes on both ports: each gets an error reply or the closing of
//! that one connection, never a panic, and another client keeps being
//! served correctly throughout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{runtime, Node};
use net::client::SetArgs;

/// Sends bytes and reads until the server closes or 2 s pass; returns what
/// came back and whether the connection was closed.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

fn native_frame(len: u32, op: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut f = len.to_le_bytes().to_vec();
    f.push(op);
    f.push(0);
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn hostile_input_never_disturbs_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--partial-request-timeout-ms", "300"]);
    let rt = runtime();
    let mut good = rt.block_on(node.client());
    rt.block_on(good.set(b"canary", b"alive", SetArgs::default())).unwrap();
    let mut check_good = |what: &str| {
        let v = rt.block_on(good.get(b"canary")).unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(v.as_deref(), Some(&b"alive"[..]), "after {what}");
    };

    // Native port.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xde\xad\xbe\xef garbage garbage garbage".to_vec()),
        ("zero-length frame", 0u32.to_le_bytes().to_vec()),
        ("4 GiB length", u32::MAX.to_le_bytes().to_vec()),
        ("unknown opcode", native_frame(6, 0x7f, 11, &[])),
        ("key length past the frame", native_frame(10, 0x01, 13, &1000u32.to_le_bytes())),
    ];
    for (what, bytes) in &cases {
        let (reply, closed) = send_raw(node.native, bytes);
        let error_reply = reply.len() >= 10 && reply[4] == 2;
        assert!(error_reply && closed, "{what}: an error reply, then the close: {reply:?} closed={closed}");
        check_good(what);
    }

    // RESP port.
    let resp_cases: Vec<(&str, &[u8], &str)> = vec![
        ("array of 2^31 elements", b"*2147483648\r\n", "-ERR Protocol error: invalid multibulk length"),
        ("negative bulk length", b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"),
        ("not a bulk string", b"*1\r\n:5\r\n", "-ERR Protocol error: expected '$'"),
        ("binary garbage", b"\x00\x01\x02\xff\r\n", "-ERR unknown command"),
        ("wrong arity", b"*1\r\n$3\r\nGET\r\n", "-ERR wrong number of arguments for 'get' command"),
        ("unknown command", b"*1\r\n$7\r\nFOOBARX\r\n", "-ERR unknown command 'FOOBARX'"),
    ];
    for (what, bytes, want) in resp_cases {
        let (reply, _closed) = send_raw(node.resp, bytes);
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with(want), "{what}: got {text:?}");
        check_good(what);
    }

    // A client that vanishes mid-frame, and one that sends half a frame and
    // waits: neither holds up anyone else.
    {
        let mut s = TcpStream::connect(node.native).unwrap();
        s.write_all(&native_frame(1000, 0x02, 1, b"partial")).unwrap();
    }
    let mut slow = TcpStream::connect(node.resp).unwrap();
    slow.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\n").unwrap();
    check_good("a vanished and a slow client");
    // The stalled client is closed once it has held half a request for
    // longer than the configured 300 ms (the read below waits up to 5 s).
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(slow.read(&mut buf).unwrap_or(usize::MAX), 0, "stalled client closed by the server");
    // A truncated native frame gets the same treatment.
    let (reply, closed) = send_raw(node.native, &native_frame(100, 0x01, 12, b"\x05\0\0\0ab"));
    assert!(reply.is_empty() && closed, "truncated frame: closed without reply");
    check_good("stalled clients");
    let status = node.stop();
    assert!(status.success(), "server survived all of it and shut down cleanly: {status:?}");
}
