//! Starting the real `ringkv` binary for end-to-end tests: ephemeral ports
//! on 127.0.0.1, readiness by the `ready` line and then a PING answered,
//! never by sleeping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use net::client::{Client, ClientConfig};
use net::limits::Limits;
use net::resp::Reply;

/// A running `ringkv serve` process, killed when dropped.
pub struct Node {
    pub child: Child,
    pub native: SocketAddr,
    pub resp: SocketAddr,
    pub shards: Vec<SocketAddr>,
    /// The metrics listener, when started with `--metrics-port`.
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// Starts a node over `data_dir` with extra flags, shard threads not
    /// pinned (tests share the machine).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_with(data_dir, &[&["--no-pin"], extra].concat())
    }

    /// Starts a node with its shard threads pinned to cores, as in
    /// production.
    pub fn start_pinned(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_with(data_dir, extra)
    }

    fn start_with(data_dir: &Path, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["serve", "--port", "0", "--resp-port", "0", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ringkv");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP_TIMEOUT).expect("ringkv printed its ready line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        let native = field("native").parse().expect("native address");
        let resp = field("resp").parse().expect("resp address");
        let shards = field("shards").split(',').map(|s| s.parse().expect("shard address")).collect();
        let metrics = field("metrics").parse().ok();
        let node = Node { child, native, resp, shards, metrics, data_dir: data_dir.to_path_buf() };
        node.wait_ready();
        node
    }

    /// Ready means it answers PING.
    fn wait_ready(&self) {
        let rt = runtime();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ok = rt.block_on(async {
                // Not shard-aware: PING is all it sends (a node with
                // --requirepass answers nothing else before AUTH).
                let config = ClientConfig { attempts: 1, shard_aware: false, ..ClientConfig::default() };
                let mut c = Client::connect(self.native, config).await?;
                c.ping().await
            });
            match ok {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("ringkv never answered PING: {e}"),
                // The process already printed its ready line, so a refused
                // attempt is rare; retry at once, bounded by the deadline.
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(30));
        std::mem::forget(self);
        status
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.native, ClientConfig::default()).await.expect("client connects")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringkv did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A blocking RESP connection for tests: raw commands out, parsed replies in.
pub struct RespConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RespConn {
    pub fn connect(addr: SocketAddr) -> RespConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        RespConn { stream, buf: BytesMut::new() }
    }

    pub fn send(&mut self, args: &[&str]) {
        let mut out = BytesMut::new();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        net::resp::put_command(&mut out, &refs);
        self.stream.write_all(&out).expect("send");
    }

    /// Writes bytes as they are, in one write.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn reply(&mut self) -> Reply {
        loop {
            if let Some(r) = net::resp::parse_reply(&mut self.buf, &Limits::default()).expect("valid reply") {
                return r;
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk).expect("a reply within 20 s");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.reply()
    }

    /// The client side's address, as the server sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }
}

/// A numeric field of `INFO all`.
#[allow(dead_code)]
pub fn info_field(c: &mut RespConn, name: &str) -> u64 {
    let Reply::Bulk(Some(text)) = c.call(&["INFO", "all"]) else { panic!("INFO answers a bulk string") };
    let text = String::from_utf8_lossy(&text).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {name} in INFO"))
        .trim()
        .parse()
        .unwrap()
}

/// One HTTP GET over a fresh connection; the whole response, head included.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

/// A `redis-server` on a free loopback port, killed when dropped.
pub struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts redis-server (no persistence) and waits until it answers PING;
/// `None` when redis-server is not installed (.ci/run installs it).
pub fn start_redis() -> Option<(Redis, u16)> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let redis = Redis(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if TcpStream::connect(addr).is_ok() {
            let mut c = RespConn::connect(addr);
            if matches!(c.call(&["PING"]), Reply::Simple(ref s) if &s[..] == b"PONG") {
                return Some((redis, port));
            }
        }
        assert!(Instant::now() < deadline, "redis-server never answered PING");
        // Before its socket listens there is no readiness signal to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}
