//! `--requirepass` on both ports: until AUTH succeeds a connection may only
//! PING and AUTH (anything else gets NOAUTH and the connection stays open);
//! a wrong password gets WRONGPASS and changes nothing; once in, a later
//! wrong AUTH does not log the connection out. Before AUTH requests must be
//! small (16 KiB, 10 arguments), as Redis has them. RESP's AUTH and HELLO
//! take the `default` user, as Redis 7 does, and no other.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{runtime, Node, RespConn};
use net::client::{Client, ClientConfig};
use net::native::{self, KeyOpWire, RequestBody, Status};
use net::resp::Reply;

const SECRET: &str = "s3cret";

fn simple(s: &str) -> Reply {
    Reply::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn error_starting(reply: Reply, prefix: &str) {
    match reply {
        Reply::Error(e) if e.starts_with(prefix.as_bytes()) => {}
        other => panic!("an error starting {prefix:?}, got {other:?}"),
    }
}

/// A native connection driven by hand, one request at a time.
struct Native {
    stream: TcpStream,
    buf: BytesMut,
    id: u32,
}

impl Native {
    fn connect(addr: std::net::SocketAddr) -> Native {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Native { stream, buf: BytesMut::new(), id: 0 }
    }

    fn call(&mut self, body: RequestBody) -> native::Response {
        self.id += 1;
        let mut out = BytesMut::new();
        native::put_request(&mut out, self.id, &body);
        self.stream.write_all(&out).unwrap();
        loop {
            if let Some(r) = native::decode_response(&mut self.buf, native::RESPONSE_MAX_BYTES).unwrap() {
                assert_eq!(r.id, self.id);
                return r;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn get(key: &str) -> RequestBody {
    RequestBody::Key(KeyOpWire::Get(Bytes::copy_from_slice(key.as_bytes())))
}

#[test]
fn requirepass_guards_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--shards", "2", "--requirepass", SECRET]);

    // RESP.
    let mut c = RespConn::connect(node.resp);
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    for args in [&["GET", "k"][..], &["SET", "k", "v"], &["KEYS", "*"], &["CONFIG", "GET", "*"]] {
        error_starting(c.call(args), "NOAUTH");
    }
    error_starting(c.call(&["HELLO", "2"]), "NOAUTH");
    error_starting(c.call(&["AUTH", "wrong"]), "WRONGPASS");
    error_starting(c.call(&["AUTH", "someone", SECRET]), "WRONGPASS");
    error_starting(c.call(&["GET", "k"]), "NOAUTH");
    assert_eq!(c.call(&["AUTH", SECRET]), simple("OK"));
    assert_eq!(c.call(&["SET", "k", "v"]), simple("OK"));
    error_starting(c.call(&["AUTH", "wrong"]), "WRONGPASS");
    assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(Some(Bytes::from("v"))), "a wrong AUTH does not log out");

    let mut d = RespConn::connect(node.resp);
    assert_eq!(d.call(&["AUTH", "default", SECRET]), simple("OK"));
    assert_eq!(d.call(&["GET", "k"]), Reply::Bulk(Some(Bytes::from("v"))));
    let mut h = RespConn::connect(node.resp);
    error_starting(h.call(&["HELLO", "2", "AUTH", "default", "wrong"]), "WRONGPASS");
    error_starting(h.call(&["GET", "k"]), "NOAUTH");
    assert!(matches!(h.call(&["HELLO", "2", "AUTH", "default", SECRET]), Reply::Array(Some(_))));
    assert_eq!(h.call(&["GET", "k"]), Reply::Bulk(Some(Bytes::from("v"))));

    // Before AUTH, requests are small (as Redis limits them): a large one
    // is refused and that connection closed.
    for bytes in [b"*11\r\n".to_vec(), format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", 20 << 10).into_bytes()] {
        let mut s = TcpStream::connect(node.resp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(reply.starts_with(b"-ERR Protocol error"), "{:?}", String::from_utf8_lossy(&reply));
    }
    {
        let mut s = TcpStream::connect(node.native).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut frame = BytesMut::new();
        native::put_request(&mut frame, 1, &RequestBody::Auth(Bytes::from(vec![b'x'; 20 << 10])));
        s.write_all(&frame).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(reply.len() >= 10 && reply[4] == Status::Error as u8, "{reply:?}");
    }
    // Once in, the full limits apply.
    let big = "y".repeat(100 << 10);
    assert_eq!(c.call(&["SET", "big", &big]), simple("OK"));
    assert_eq!(c.call(&["STRLEN", "big"]), Reply::Int(100 << 10));

    // Native, by hand.
    let mut n = Native::connect(node.native);
    assert_eq!(n.call(RequestBody::Ping).status, Status::Ok);
    for body in [get("k"), RequestBody::Stats, RequestBody::Ring] {
        let r = n.call(body);
        assert_eq!(r.status, Status::Error);
        assert!(r.body.starts_with(b"NOAUTH"), "{:?}", r.body);
    }
    let r = n.call(RequestBody::Auth(Bytes::from("wrong")));
    assert!(r.status == Status::Error && r.body.starts_with(b"WRONGPASS"), "{r:?}");
    assert_eq!(n.call(get("k")).status, Status::Error, "still not in");
    assert_eq!(n.call(RequestBody::Auth(Bytes::from(SECRET))).status, Status::Ok);
    let r = n.call(get("k"));
    assert_eq!((r.status, &r.body[..]), (Status::Ok, &b"v"[..]));

    // The client library, which authenticates every connection it opens
    // (one per shard), and fails clearly without the password.
    let rt = runtime();
    let config = ClientConfig { password: Some(SECRET.into()), ..ClientConfig::default() };
    let mut client = rt.block_on(Client::connect(node.native, config)).unwrap();
    for i in 0..20 {
        let key = format!("key{i}");
        rt.block_on(client.set(key.as_bytes(), b"x", Default::default())).unwrap();
        assert_eq!(rt.block_on(client.get(key.as_bytes())).unwrap().as_deref(), Some(&b"x"[..]));
    }
    let refused = rt.block_on(Client::connect(node.native, ClientConfig::default()));
    assert!(refused.is_err_and(|e| e.to_string().contains("NOAUTH")), "a client without the password is refused");

    let status = node.stop();
    assert!(status.success(), "{status:?}");
}
