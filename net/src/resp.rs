//! RESP2: the parser, the encoder and the command table, so that redis-cli,
//! redis-benchmark and every Redis client library work unchanged.
//!
//! Replies and error texts follow Redis 7 word for word where clients look
//! at them (`-ERR wrong number of arguments for 'get' command`, ...).

use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use engine::{Condition, SetExpiry, Ttl};

use crate::conn::{Job, Protocol};
use crate::limits::Limits;
use crate::native_server::{constant_time_eq, stats_text};
use crate::op::{KeyOp, OpResult, ShardOp};
use crate::shard::Shard;

/// Longest inline command line (Redis: 64 KiB).
pub const INLINE_MAX_BYTES: usize = 64 << 10;

/// Why bytes are not a RESP request (Redis closes the connection on these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("Protocol error: invalid multibulk length")]
    BadArrayLength,
    #[error("Protocol error: invalid bulk length")]
    BadBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Parses one command (its arguments) from the front of `buf`.
/// `Ok(None)`: incomplete; nothing is consumed or allocated until the
/// whole command is present.
pub fn parse_command(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, RespError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first != b'*' {
        return parse_inline(buf);
    }
    // First pass: check that the whole command is there, without copying.
    let mut at = 0;
    let Some(count) = read_int_line(buf, &mut at, 1 << 31)? else { return Ok(None) };
    let count = match count {
        n if n <= 0 => {
            buf.advance(at);
            return Ok(Some(Vec::new()));
        }
        n if n as usize > limits.args_max => return Err(RespError::BadArrayLength),
        n => n as usize,
    };
    let mut spans = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let Some(&marker) = buf.get(at) else { return Ok(None) };
        if marker != b'$' {
            return Err(RespError::ExpectedBulk(marker as char));
        }
        at += 1;
        let len = match read_int_line(buf, &mut at, limits.frame_max_bytes as i64)? {
            None => return Ok(None),
            Some(n) if n < 0 => return Err(RespError::BadBulkLength),
            Some(n) => n as usize,
        };
        if buf.len() < at + len + 2 {
            buf.reserve(at + len + 2 - buf.len());
            return Ok(None);
        }
        spans.push((at, len));
        at += len + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(spans.into_iter().map(|(start, len)| frame.slice(start..start + len)).collect()))
}

/// Reads `<int>\r\n` after a type marker at `*at` (which skips the marker
/// for arrays). Refuses values outside `-1..=max`.
fn read_int_line(buf: &[u8], at: &mut usize, max: i64) -> Result<Option<i64>, RespError> {
    let start = if buf.get(*at) == Some(&b'*') { *at + 1 } else { *at };
    let Some(nl) = buf[start..].iter().take(24).position(|&b| b == b'\n') else {
        return if buf.len() - start > 24 { Err(RespError::BadBulkLength) } else { Ok(None) };
    };
    let line = &buf[start..start + nl];
    let line = line.strip_suffix(b"\r").ok_or(RespError::BadBulkLength)?;
    let text = std::str::from_utf8(line).map_err(|_| RespError::BadBulkLength)?;
    let value: i64 = text.parse().map_err(|_| RespError::BadBulkLength)?;
    if value > max || value < -1 {
        return Err(if buf.get(*at) == Some(&b'*') { RespError::BadArrayLength } else { RespError::BadBulkLength });
    }
    *at = start + nl + 1;
    Ok(Some(value))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_MAX_BYTES { Err(RespError::InlineTooLong) } else { Ok(None) };
    };
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut args = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    for &b in line {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), b) => current.get_or_insert_with(Vec::new).push(b),
            (None, b'"' | b'\'') => {
                quote = Some(b);
                current.get_or_insert_with(Vec::new);
            }
            (None, b' ' | b'\t') => {
                if let Some(arg) = current.take() {
                    args.push(Bytes::from(arg));
                }
            }
            (None, b) => current.get_or_insert_with(Vec::new).push(b),
        }
    }
    if quote.is_some() {
        return Err(RespError::UnbalancedQuotes);
    }
    if let Some(arg) = current {
        args.push(Bytes::from(arg));
    }
    Ok(Some(args))
}

/// A reply as a RESP client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Reply>>),
}

/// Parses one reply from the front of `buf` (client side). `Ok(None)`:
/// incomplete, nothing consumed.
pub fn parse_reply(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Reply>, RespError> {
    let mut at = 0;
    match parse_reply_at(buf, &mut at, limits, 0)? {
        Some(reply) => {
            buf.advance(at);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// Nesting deeper than this is refused rather than recursed into.
const REPLY_DEPTH_MAX: usize = 16;

fn parse_reply_at(buf: &[u8], at: &mut usize, limits: &Limits, depth: usize) -> Result<Option<Reply>, RespError> {
    let Some(&marker) = buf.get(*at) else { return Ok(None) };
    let line_end = |from: usize| buf[from..].iter().position(|&b| b == b'\n').map(|p| from + p);
    let Some(nl) = line_end(*at + 1) else { return Ok(None) };
    let line = &buf[*at + 1..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let int = || -> Result<i64, RespError> {
        std::str::from_utf8(line).ok().and_then(|t| t.parse().ok()).ok_or(RespError::BadBulkLength)
    };
    let after = nl + 1;
    let reply = match marker {
        b'+' => Reply::Simple(Bytes::copy_from_slice(line)),
        b'-' => Reply::Error(Bytes::copy_from_slice(line)),
        b':' => Reply::Int(int()?),
        b'$' => {
            let n = int()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let n = n as usize;
                if n > limits.frame_max_bytes {
                    return Err(RespError::BadBulkLength);
                }
                if buf.len() < after + n + 2 {
                    return Ok(None);
                }
                *at = after + n + 2;
                return Ok(Some(Reply::Bulk(Some(Bytes::copy_from_slice(&buf[after..after + n])))));
            }
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                if n as usize > limits.args_max || depth >= REPLY_DEPTH_MAX {
                    return Err(RespError::BadArrayLength);
                }
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut pos = after;
                for _ in 0..n {
                    match parse_reply_at(buf, &mut pos, limits, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                *at = pos;
                return Ok(Some(Reply::Array(Some(items))));
            }
        }
        other => return Err(RespError::ExpectedBulk(other as char)),
    };
    *at = after;
    Ok(Some(reply))
}

/// Writes a command as an array of bulk strings (client side).
pub fn put_command(out: &mut BytesMut, args: &[&[u8]]) {
    put::array(out, args.len());
    for a in args {
        put::bulk(out, a);
    }
}

/// Writers for RESP replies.
pub mod put {
    use bytes::{BufMut, BytesMut};

    pub fn simple(out: &mut BytesMut, s: &str) {
        out.put_u8(b'+');
        out.put_slice(s.as_bytes());
        out.put_slice(b"\r\n");
    }
    pub fn error(out: &mut BytesMut, s: &str) {
        out.put_u8(b'-');
        out.put_slice(s.as_bytes());
        out.put_slice(b"\r\n");
    }
    pub fn int(out: &mut BytesMut, n: i64) {
        out.put_u8(b':');
        out.put_slice(itoa::Buffer::new().format(n).as_bytes());
        out.put_slice(b"\r\n");
    }
    pub fn bulk(out: &mut BytesMut, b: &[u8]) {
        out.put_u8(b'$');
        out.put_slice(itoa::Buffer::new().format(b.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(b);
        out.put_slice(b"\r\n");
    }
    pub fn nil(out: &mut BytesMut) {
        out.put_slice(b"$-1\r\n");
    }
    pub fn opt_bulk(out: &mut BytesMut, b: Option<&[u8]>) {
        match b {
            Some(b) => bulk(out, b),
            None => nil(out),
        }
    }
    pub fn array(out: &mut BytesMut, n: usize) {
        out.put_u8(b'*');
        out.put_slice(itoa::Buffer::new().format(n).as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Per-connection RESP state.
#[derive(Debug, Default)]
pub struct Resp {
    authenticated: bool,
    name: Option<Bytes>,
    id: u64,
}

impl Resp {
    pub fn new(id: u64) -> Resp {
        Resp { id, ..Resp::default() }
    }
}

/// How a RESP job's results are rendered.
#[derive(Debug)]
pub enum Shape {
    Simple(&'static str),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Bytes>),
    /// GET, GETSET, SET..GET: the value or nil.
    Value,
    /// SET: OK, or nil when a condition failed; with GET, the old value.
    Set {
        get: bool,
    },
    /// SETNX, MSETNX: 1 when written.
    SetNx,
    /// DEL, EXISTS, UNLINK: how many keys existed.
    CountExisted,
    /// EXPIRE and friends, PERSIST: 1 when the key existed.
    Existed,
    Ttl {
        millis: bool,
    },
    /// MGET: an array of values.
    Values,
    /// MSET: OK.
    Ok,
    Info {
        sections: Vec<String>,
    },
    DbSize,
    Flushed,
}

fn wrong_args(name: &str) -> Shape {
    Shape::Error(format!("ERR wrong number of arguments for '{name}' command"))
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl Protocol for Resp {
    type Shape = Shape;

    fn parse(&mut self, buf: &mut BytesMut, shard: &Shard) -> Option<Job<Shape>> {
        let args = match parse_command(buf, &shard.shared.limits) {
            Ok(Some(args)) => args,
            Ok(None) => return None,
            Err(err) => {
                tracing::info!(error = %err, "bad RESP request; closing connection");
                buf.clear();
                return Some(Job::ReplyAndClose(Shape::Error(format!("ERR {err}"))));
            }
        };
        if args.is_empty() {
            // Redis ignores empty commands (*0, blank inline lines).
            return self.parse(buf, shard);
        }
        Some(self.plan(args, shard))
    }

    fn render(&mut self, shape: &Shape, results: &[OpResult], shard: &Shard, out: &mut BytesMut) {
        if let Some(err) = results.iter().find_map(|r| match r {
            OpResult::Error(e) => Some(e),
            _ => None,
        }) {
            return put::error(out, &store_error(err));
        }
        match shape {
            Shape::Simple(s) => put::simple(out, s),
            Shape::Error(e) => put::error(out, e),
            Shape::Int(n) => put::int(out, *n),
            Shape::Bulk(b) => put::opt_bulk(out, b.as_deref()),
            Shape::Array(items) => {
                put::array(out, items.len());
                items.iter().for_each(|i| put::bulk(out, i));
            }
            Shape::Value => match results.first() {
                Some(OpResult::Value(v)) => put::opt_bulk(out, v.as_deref()),
                Some(OpResult::Set { old, .. }) => put::opt_bulk(out, old.as_deref()),
                _ => put::nil(out),
            },
            Shape::Set { get } => match results.first() {
                Some(OpResult::Set { old, .. }) if *get => put::opt_bulk(out, old.as_deref()),
                Some(OpResult::Set { written: true, .. }) => put::simple(out, "OK"),
                _ => put::nil(out),
            },
            Shape::SetNx => {
                put::int(out, i64::from(matches!(results.first(), Some(OpResult::Set { written: true, .. }))))
            }
            Shape::CountExisted => {
                put::int(out, results.iter().filter(|r| matches!(r, OpResult::Existed(true))).count() as i64)
            }
            Shape::Existed => put::int(out, i64::from(matches!(results.first(), Some(OpResult::Existed(true))))),
            Shape::Ttl { millis } => put::int(
                out,
                match results.first() {
                    Some(OpResult::Ttl(Ttl::Remaining { ms })) => {
                        if *millis {
                            *ms as i64
                        } else {
                            ms.div_ceil(1000) as i64
                        }
                    }
                    Some(OpResult::Ttl(Ttl::Persistent)) => -1,
                    _ => -2,
                },
            ),
            Shape::Values => {
                put::array(out, results.len());
                for r in results {
                    match r {
                        OpResult::Value(v) => put::opt_bulk(out, v.as_deref()),
                        _ => put::nil(out),
                    }
                }
            }
            Shape::Ok | Shape::Flushed => put::simple(out, "OK"),
            Shape::DbSize => put::int(
                out,
                results
                    .iter()
                    .map(|r| match r {
                        OpResult::Stats(s) => s.keys as i64,
                        _ => 0,
                    })
                    .sum(),
            ),
            Shape::Info { sections } => put::bulk(out, info_text(shard, results, sections).as_bytes()),
        }
    }

    fn render_borrowed_get(&mut self, shape: &Shape, value: Option<&[u8]>, out: &mut BytesMut) -> bool {
        match shape {
            Shape::Value => {
                put::opt_bulk(out, value);
                true
            }
            _ => false,
        }
    }
}

/// Store errors in Redis words where Redis has them.
fn store_error(err: &str) -> String {
    if err.contains("store is full") {
        format!("OOM command not allowed when used memory > 'maxmemory' ({err})")
    } else {
        format!("ERR {err}")
    }
}

impl Resp {
    fn plan(&mut self, args: Vec<Bytes>, shard: &Shard) -> Job<Shape> {
        // Lower-cased on the stack: every command pays this.
        let mut lower = [0u8; 24];
        let raw = &args[0];
        let name = match lower.get_mut(..raw.len()) {
            Some(dst) => {
                dst.iter_mut().zip(raw.iter()).for_each(|(d, s)| *d = s.to_ascii_lowercase());
                std::str::from_utf8(dst).unwrap_or("")
            }
            None => "",
        };
        let argc = args.len();
        let reply = |shape| Job::Reply(shape);
        if shard.shared.requirepass.is_some()
            && !self.authenticated
            && !matches!(name, "auth" | "hello" | "quit" | "ping")
        {
            return reply(Shape::Error("NOAUTH Authentication required.".into()));
        }
        let now = || shard.with_store(|s| s.now_ms());
        let key = |i: usize| args[i].clone();
        match name {
            "ping" => match argc {
                1 => reply(Shape::Simple("PONG")),
                2 => reply(Shape::Bulk(Some(key(1)))),
                _ => reply(wrong_args("ping")),
            },
            "echo" if argc == 2 => reply(Shape::Bulk(Some(key(1)))),
            "quit" => Job::ReplyAndClose(Shape::Simple("OK")),
            "select" if argc == 2 => reply(match parse_i64(&args[1]) {
                Some(0) => Shape::Simple("OK"),
                Some(_) => Shape::Error("ERR DB index is out of range".into()),
                None => Shape::Error(NOT_INTEGER.into()),
            }),
            "auth" if argc == 2 || argc == 3 => {
                let given = &args[argc - 1];
                reply(match &shard.shared.requirepass {
                    None => Shape::Error(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
                    ),
                    Some(secret) if constant_time_eq(given, secret.as_bytes()) && (argc == 2 || &args[1][..] == b"default") => {
                        self.authenticated = true;
                        Shape::Simple("OK")
                    }
                    Some(_) => Shape::Error("WRONGPASS invalid username-password pair or user is disabled.".into()),
                })
            }
            "hello" => self.hello(&args, shard),
            "get" if argc == 2 => Job::Key(KeyOp::Get { key: key(1) }, Shape::Value),
            "set" if argc >= 3 => self.set(&args, now()),
            "setnx" if argc == 3 => {
                Job::Key(set_op(key(1), key(2), SetExpiry::None, Condition::IfAbsent, false), Shape::SetNx)
            }
            "setex" | "psetex" if argc == 4 => {
                let unit = if name == "setex" { 1000 } else { 1 };
                match parse_i64(&args[2]) {
                    Some(t) if t > 0 => Job::Key(
                        set_op(
                            key(1),
                            key(3),
                            SetExpiry::At(now().saturating_add((t as u64).saturating_mul(unit))),
                            Condition::Always,
                            false,
                        ),
                        Shape::Ok,
                    ),
                    Some(_) => reply(Shape::Error(format!("ERR invalid expire time in '{name}' command"))),
                    None => reply(Shape::Error(NOT_INTEGER.into())),
                }
            }
            "getset" if argc == 3 => {
                Job::Key(set_op(key(1), key(2), SetExpiry::None, Condition::Always, true), Shape::Value)
            }
            "mget" if argc >= 2 => {
                Job::Keys(args[1..].iter().map(|k| KeyOp::Get { key: k.clone() }).collect(), Shape::Values)
            }
            "mset" if argc >= 3 && argc % 2 == 1 => Job::Keys(
                args[1..]
                    .chunks_exact(2)
                    .map(|p| set_op(p[0].clone(), p[1].clone(), SetExpiry::None, Condition::Always, false))
                    .collect(),
                Shape::Ok,
            ),
            "del" | "unlink" if argc >= 2 => {
                Job::Keys(args[1..].iter().map(|k| KeyOp::Del { key: k.clone() }).collect(), Shape::CountExisted)
            }
            "exists" if argc >= 2 => {
                Job::Keys(args[1..].iter().map(|k| KeyOp::Exists { key: k.clone() }).collect(), Shape::CountExisted)
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" if argc == 3 => {
                let Some(n) = parse_i64(&args[2]) else { return reply(Shape::Error(NOT_INTEGER.into())) };
                let at_ms = match name {
                    "expire" => (now() as i64).saturating_add(n.saturating_mul(1000)),
                    "pexpire" => (now() as i64).saturating_add(n),
                    "expireat" => n.saturating_mul(1000),
                    _ => n,
                };
                Job::Key(KeyOp::ExpireAt { key: key(1), at_ms: Some(at_ms.max(0) as u64) }, Shape::Existed)
            }
            "persist" if argc == 2 => Job::Key(KeyOp::ExpireAt { key: key(1), at_ms: None }, Shape::Existed),
            "ttl" | "pttl" if argc == 2 => Job::Key(KeyOp::Ttl { key: key(1) }, Shape::Ttl { millis: name == "pttl" }),
            "dbsize" if argc == 1 => Job::Shards(ShardOp::Stats, Shape::DbSize),
            "flushdb" | "flushall" => Job::Shards(ShardOp::FlushAll, Shape::Flushed),
            "info" => Job::Shards(
                ShardOp::Stats,
                Shape::Info {
                    sections: args[1..].iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect(),
                },
            ),
            "command" => reply(Shape::Array(Vec::new())),
            "config" if argc >= 3 && args[1].eq_ignore_ascii_case(b"get") => {
                reply(Shape::Array(config_get(&args[2..], shard)))
            }
            "client" if argc >= 2 => self.client(&args),
            _ => {
                let known = [
                    "ping",
                    "echo",
                    "select",
                    "auth",
                    "get",
                    "set",
                    "setnx",
                    "setex",
                    "psetex",
                    "getset",
                    "mget",
                    "mset",
                    "del",
                    "unlink",
                    "exists",
                    "expire",
                    "pexpire",
                    "expireat",
                    "pexpireat",
                    "persist",
                    "ttl",
                    "pttl",
                    "dbsize",
                    "config",
                    "client",
                    "echo",
                ];
                if known.contains(&name) {
                    reply(wrong_args(name))
                } else {
                    let shown: Vec<String> =
                        args[1..].iter().take(8).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                    reply(Shape::Error(format!(
                        "ERR unknown command '{}', with args beginning with: {}",
                        String::from_utf8_lossy(&args[0]),
                        shown.join(" ")
                    )))
                }
            }
        }
    }

    fn set(&mut self, args: &[Bytes], now: u64) -> Job<Shape> {
        let mut expiry = SetExpiry::None;
        let mut condition = Condition::Always;
        let mut get = false;
        let mut expiry_given = false;
        let mut i = 3;
        let syntax = || Job::Reply(Shape::Error(SYNTAX.into()));
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            match opt.as_slice() {
                b"NX" if condition == Condition::Always => condition = Condition::IfAbsent,
                b"XX" if condition == Condition::Always => condition = Condition::IfPresent,
                b"GET" => get = true,
                b"KEEPTTL" if !expiry_given => {
                    expiry = SetExpiry::Keep;
                    expiry_given = true;
                }
                b"EX" | b"PX" | b"EXAT" | b"PXAT" if !expiry_given && i + 1 < args.len() => {
                    let Some(n) = parse_i64(&args[i + 1]) else { return Job::Reply(Shape::Error(NOT_INTEGER.into())) };
                    if n <= 0 {
                        return Job::Reply(Shape::Error("ERR invalid expire time in 'set' command".into()));
                    }
                    let n = n as u64;
                    expiry = SetExpiry::At(match opt.as_slice() {
                        b"EX" => now.saturating_add(n.saturating_mul(1000)),
                        b"PX" => now.saturating_add(n),
                        b"EXAT" => n.saturating_mul(1000),
                        _ => n,
                    });
                    expiry_given = true;
                    i += 1;
                }
                _ => return syntax(),
            }
            i += 1;
        }
        Job::Key(set_op(args[1].clone(), args[2].clone(), expiry, condition, get), Shape::Set { get })
    }

    fn hello(&mut self, args: &[Bytes], shard: &Shard) -> Job<Shape> {
        if let Some(version) = args.get(1) {
            match parse_i64(version) {
                Some(2) => {}
                Some(3) => return Job::Reply(Shape::Error("NOPROTO unsupported protocol version".into())),
                _ => return Job::Reply(Shape::Error("NOPROTO unsupported protocol version".into())),
            }
        }
        let mut i = 2;
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            match opt.as_slice() {
                b"AUTH" if i + 2 < args.len() => {
                    let ok =
                        shard.shared.requirepass.as_ref().is_some_and(|s| constant_time_eq(&args[i + 2], s.as_bytes()));
                    if !ok {
                        return Job::Reply(Shape::Error(
                            "WRONGPASS invalid username-password pair or user is disabled.".into(),
                        ));
                    }
                    self.authenticated = true;
                    i += 3;
                }
                b"SETNAME" if i + 1 < args.len() => {
                    self.name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => return Job::Reply(Shape::Error(SYNTAX.into())),
            }
        }
        if shard.shared.requirepass.is_some() && !self.authenticated {
            return Job::Reply(Shape::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
        }
        // HELLO's reply is a map; in RESP2 a flat array of pairs.
        let pairs: Vec<Bytes> = [
            ("server", "redis".to_string()),
            ("version", "7.0.0".to_string()),
            ("proto", "2".to_string()),
            ("id", self.id.to_string()),
            ("mode", "standalone".to_string()),
            ("role", "master".to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [Bytes::from(k), Bytes::from(v)])
        .collect();
        Job::Reply(Shape::Array(pairs))
    }

    fn client(&mut self, args: &[Bytes]) -> Job<Shape> {
        let sub = args[1].to_ascii_lowercase();
        Job::Reply(match (sub.as_slice(), args.len()) {
            (b"setname", 3) => {
                self.name = Some(args[2].clone());
                Shape::Simple("OK")
            }
            (b"getname", 2) => Shape::Bulk(self.name.clone()),
            (b"id", 2) => Shape::Int(self.id as i64),
            (b"setinfo", 4) => Shape::Simple("OK"),
            _ => Shape::Error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        })
    }
}

fn set_op(key: Bytes, value: Bytes, expiry: SetExpiry, condition: Condition, return_old: bool) -> KeyOp {
    KeyOp::Set { key, value, expiry, condition, return_old }
}

/// CONFIG GET for the parameters clients and benchmarks ask about.
fn config_get(patterns: &[Bytes], shard: &Shard) -> Vec<Bytes> {
    let fsync = match shard.shared.fsync {
        engine::FsyncPolicy::Always => "always",
        engine::FsyncPolicy::EverySec => "everysec",
        engine::FsyncPolicy::Never => "no",
    };
    let params = [
        ("save", String::new()),
        ("appendonly", "yes".to_string()),
        ("appendfsync", fsync.to_string()),
        ("maxmemory", "0".to_string()),
        ("maxmemory-policy", "noeviction".to_string()),
        ("databases", "1".to_string()),
        ("port", shard.shared.resp_port.unwrap_or(0).to_string()),
        ("proto-max-bulk-len", shard.shared.limits.value_max_bytes.to_string()),
    ];
    let mut out = Vec::new();
    for pattern in patterns {
        let pattern = String::from_utf8_lossy(pattern).to_ascii_lowercase();
        for (name, value) in &params {
            if glob_match(pattern.as_bytes(), name.as_bytes()) && !out.iter().any(|o: &Bytes| o == name.as_bytes()) {
                out.push(Bytes::from(*name));
                out.push(Bytes::from(value.clone()));
            }
        }
    }
    out
}

/// Redis-style glob matching (`*`, `?`, `[...]` without ranges), used by
/// CONFIG GET and later by SCAN MATCH and KEYS.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pattern[1..], s) || (!s.is_empty() && glob_match(pattern, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &s[1..]),
        (Some(b'['), Some(c)) => match pattern.iter().position(|&b| b == b']') {
            Some(end) => pattern[1..end].contains(c) && glob_match(&pattern[end + 1..], &s[1..]),
            None => pattern[0] == *c && glob_match(&pattern[1..], &s[1..]),
        },
        (Some(b'\\'), Some(c)) if pattern.len() > 1 => pattern[1] == *c && glob_match(&pattern[2..], &s[1..]),
        (Some(p), Some(c)) => p == c && glob_match(&pattern[1..], &s[1..]),
        _ => false,
    }
}

/// INFO text: Redis's section layout, with `total_commands_processed`
/// counting every operation served on either protocol.
fn info_text(shard: &Shard, results: &[OpResult], sections: &[String]) -> String {
    let want = |name: &str| {
        sections.is_empty() || sections.iter().any(|s| s == name || s == "all" || s == "everything" || s == "default")
    };
    let shared = &shard.shared;
    let stats = stats_text(shard, results);
    let field = |name: &str| -> String {
        stats.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).unwrap_or("0").to_string()
    };
    let mut out = String::new();
    if want("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:7.0.0\r\nringkv_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nshards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            shared.resp_port.unwrap_or(0),
            shared.started.elapsed().as_secs(),
            shared.counters.len(),
        ));
    }
    if want("clients") {
        out.push_str(&format!("# Clients\r\nconnected_clients:{}\r\n\r\n", field("connected_clients")));
    }
    if want("memory") {
        let used =
            field("segment_bytes").parse::<u64>().unwrap_or(0) + field("index_bytes").parse::<u64>().unwrap_or(0);
        out.push_str(&format!(
            "# Memory\r\nused_memory:{used}\r\nused_memory_index:{}\r\nused_memory_live_data:{}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
            field("index_bytes"),
            field("live_bytes"),
        ));
    }
    if want("persistence") {
        out.push_str(&format!(
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nsyncs:{}\r\ncompactions:{}\r\ndead_bytes:{}\r\n\r\n",
            field("syncs"),
            field("compactions"),
            field("dead_bytes"),
        ));
    }
    if want("stats") {
        out.push_str(&format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nexpired_keys:{}\r\ncross_shard_hops:{}\r\nused_cpu_ms:{}\r\n\r\n",
            field("total_connections_received"),
            shared.total_commands(),
            field("total_net_input_bytes"),
            field("total_net_output_bytes"),
            field("expired_reclaimed"),
            field("cross_shard_hops"),
            field("process_cpu_ms"),
        ));
    }
    if want("cpu") {
        let (user, sys) = crate::native_server::process_cpu_split_ms();
        out.push_str(&format!(
            "# CPU\r\nused_cpu_sys:{:.6}\r\nused_cpu_user:{:.6}\r\n\r\n",
            sys as f64 / 1000.0,
            user as f64 / 1000.0
        ));
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        let keys = field("keys");
        if keys != "0" {
            out.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
    }
    let _ = shard.counters().commands.load(Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, RespError> {
        parse_command(&mut BytesMut::from(bytes), &Limits::default())
    }

    #[test]
    fn parses_arrays_and_waits_for_partial_ones() {
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        let args = parse(full).unwrap().unwrap();
        assert_eq!(args, vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("value")]);
    }

    #[test]
    fn parses_inline_commands_with_quotes() {
        assert_eq!(
            parse(b"set k \"hello world\"\r\n").unwrap().unwrap(),
            vec![Bytes::from("set"), Bytes::from("k"), Bytes::from("hello world")]
        );
        assert_eq!(parse(b"PING\n").unwrap().unwrap(), vec![Bytes::from("PING")]);
        assert_eq!(parse(b"set 'a"), Ok(None));
        assert_eq!(parse(b"set 'a\r\n"), Err(RespError::UnbalancedQuotes));
    }

    #[test]
    fn refuses_hostile_lengths() {
        assert_eq!(parse(b"*2147483648\r\n"), Err(RespError::BadArrayLength));
        assert_eq!(parse(b"*1\r\n$-5\r\n"), Err(RespError::BadBulkLength));
        assert_eq!(parse(b"*1\r\n$99999999999\r\n"), Err(RespError::BadBulkLength));
        assert_eq!(parse(b"*1\r\n:5\r\n"), Err(RespError::ExpectedBulk(':')));
        assert_eq!(parse(b"*1\r\n$abc\r\n"), Err(RespError::BadBulkLength));
        assert!(parse(&[b'x'; INLINE_MAX_BYTES + 1]).is_err());
    }

    #[test]
    fn parses_replies_and_waits_for_partial_ones() {
        let bytes = b"*3\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n-ERR no\r\n";
        for cut in 0..19 {
            let mut b = BytesMut::from(&bytes[..cut]);
            assert_eq!(parse_reply(&mut b, &Limits::default()), Ok(None), "cut {cut}");
        }
        let mut b = BytesMut::from(&bytes[..]);
        let l = Limits::default();
        assert_eq!(
            parse_reply(&mut b, &l).unwrap().unwrap(),
            Reply::Array(Some(vec![Reply::Bulk(Some(Bytes::from("abc"))), Reply::Bulk(None), Reply::Int(42)]))
        );
        assert_eq!(parse_reply(&mut b, &l).unwrap().unwrap(), Reply::Simple(Bytes::from("OK")));
        assert_eq!(parse_reply(&mut b, &l).unwrap().unwrap(), Reply::Error(Bytes::from("ERR no")));
        assert!(b.is_empty());
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"max*", b"maxmemory"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(!glob_match(b"save", b"saver"));
    }
}
