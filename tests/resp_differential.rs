//! RESP replies are Redis 7's, byte for byte: every command of
//! `testdata/resp_script.txt` (each string command ringkv serves, with
//! wrong arity, syntax errors, non-integers, overflow, bad expiry times,
//! negative GETRANGE indexes, SETRANGE padding...) goes to a real
//! redis-server and to ringkv, and the two raw replies must be equal.
//!
//! Skipped, with a message, when redis-server is not installed (CI
//! installs it). Replies that legitimately differ (INFO, SCAN cursors,
//! HELLO, CLIENT ID) are tested on ringkv alone in `resp_commands`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use net::limits::Limits;

const SCRIPT: &str = include_str!("testdata/resp_script.txt");

/// A blocking RESP connection that returns each reply's raw bytes.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn connect(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    fn call(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        net::resp::put_command(&mut out, &refs);
        self.stream.write_all(&out).expect("send");
        let limits = Limits::default();
        loop {
            let before = self.buf.clone();
            if net::resp::parse_reply(&mut self.buf, &limits).expect("a valid reply").is_some() {
                let used = before.len() - self.buf.len();
                return before[..used].to_vec();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("a reply within 10 s (no hang)");
            assert!(n > 0, "connection closed while waiting for a reply to {:?}", show(args));
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Splits a script line: spaces separate arguments, "double quotes" keep
/// spaces, \xNN is a byte.
fn split(line: &str) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut quoted = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                quoted = !quoted;
                current.get_or_insert_with(Vec::new);
            }
            b' ' if !quoted => {
                if let Some(a) = current.take() {
                    args.push(a);
                }
            }
            b'\\' if bytes.get(i + 1) == Some(&b'x') => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex");
                current.get_or_insert_with(Vec::new).push(u8::from_str_radix(hex, 16).expect("hex byte"));
                i += 3;
            }
            _ => current.get_or_insert_with(Vec::new).push(b),
        }
        i += 1;
    }
    assert!(!quoted, "unbalanced quotes in {line:?}");
    args.extend(current);
    args
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

#[test]
fn every_scripted_reply_matches_redis_byte_for_byte() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!("redis-server not installed; skipping the differential test");
        return;
    }
    let (_redis, port) = common::start_redis().expect("start redis-server");
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "2"]);
    let mut redis = Conn::connect(&format!("127.0.0.1:{port}")).unwrap();
    let mut ringkv = Conn::connect(&node.resp.to_string()).unwrap();
    let mut mismatches = Vec::new();
    let mut commands = 0;
    for (n, line) in SCRIPT.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let args = split(line);
        let expected = redis.call(&args);
        let got = ringkv.call(&args);
        commands += 1;
        if expected != got {
            mismatches.push(format!(
                "line {}: {line}\n  redis:  {:?}\n  ringkv: {:?}",
                n + 1,
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(commands > 150, "the script covers every command ({commands} lines)");
    assert!(mismatches.is_empty(), "{} replies differ:\n{}", mismatches.len(), mismatches.join("\n"));
}
