//! RESP2: the parser, the encoder and the command table, so that redis-cli,
//! redis-benchmark and every Redis client library work unchanged.
//!
//! Replies and error texts follow Redis 7 word for word where clients look
//! at them (`-ERR wrong number of arguments for 'get' command`, ...).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use engine::{Condition, SetExpiry, Ttl};

use crate::conn::{Cut, Job, Protocol};
use crate::glob::Glob;
use crate::limits::Limits;
use crate::native_server::{constant_time_eq, stats_text};
use crate::op::{ExpireCondition, GetExExpiry, KeyOp, OpResult, ShardOp};
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
    parse_command_resuming(buf, limits, &mut Progress::default())
}

/// How far [`parse_command_resuming`] checked an incomplete command at
/// the front of the buffer, so that the next call, with more bytes, goes on
/// from there. Checking the whole command again at every read made a
/// command that arrives slowly quadratic: `*1048576\r\n` then a million
/// empty arguments in 64-byte reads cost minutes of a shard's CPU.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Where the first argument not yet checked starts (an array), or how
    /// many bytes hold no newline (an inline command); 0: nothing checked.
    at: usize,
    /// Arguments checked (an array).
    args: usize,
}

/// [`parse_command`] for a buffer whose front only grows between calls
/// while the command there is incomplete: `progress` carries what the last
/// call checked. It is reset whenever a command leaves the buffer (or
/// an error clears it); a caller that takes bytes from the front itself
/// must reset it too.
pub fn parse_command_resuming(
    buf: &mut BytesMut,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<Option<Vec<Bytes>>, RespError> {
    let resumed = std::mem::take(progress);
    let Some(&first) = buf.first() else { return Ok(None) };
    if first != b'*' {
        return parse_inline(buf, resumed.at, progress);
    }
    // First pass: check that the whole command is there, without copying.
    let mut at = 1;
    let Some(count) = read_int_line(buf, &mut at, 1 << 31, true)? else { return Ok(None) };
    let count = match count {
        n if n <= 0 => {
            buf.advance(at);
            return Ok(Some(Vec::new()));
        }
        n if n as usize > limits.args_max => return Err(RespError::BadArrayLength),
        n => n as usize,
    };
    let header_end = at;
    let mut checked = 0;
    if resumed.at > header_end && resumed.at <= buf.len() && resumed.args < count {
        (at, checked) = (resumed.at, resumed.args);
    }
    for arg in checked..count {
        let Some(&marker) = buf.get(at) else {
            *progress = Progress { at, args: arg };
            return Ok(None);
        };
        if marker != b'$' {
            return Err(RespError::ExpectedBulk(marker as char));
        }
        let start = at;
        at += 1;
        let len = match read_int_line(buf, &mut at, limits.frame_max_bytes as i64, false)? {
            None => {
                *progress = Progress { at: start, args: arg };
                return Ok(None);
            }
            Some(n) if n < 0 => return Err(RespError::BadBulkLength),
            Some(n) => n as usize,
        };
        if buf.len() < at + len + 2 {
            crate::limits::reserve_ahead(buf, at + len + 2);
            *progress = Progress { at: start, args: arg };
            return Ok(None);
        }
        at += len + 2;
    }
    // Second pass over the checked frame: slice the arguments out of it
    // (no list of spans to allocate on the way). It checks its bounds
    // again rather than trust the first pass's, resumed or not.
    let frame = buf.split_to(at).freeze();
    let mut args = Vec::with_capacity(count);
    let mut at = header_end;
    for _ in 0..count {
        at += 1;
        let len = read_int_line(&frame, &mut at, i64::MAX, false).ok().flatten().unwrap_or(0) as usize;
        let arg = frame.get(at..at + len).ok_or(RespError::BadBulkLength)?;
        args.push(frame.slice_ref(arg));
        at += len + 2;
    }
    Ok(Some(args))
}

/// A GET or a SET without options, found by [`parse_get_set`].
#[derive(Debug, PartialEq, Eq)]
pub struct GetSet {
    pub set: bool,
    /// Where the key and the value (empty for GET) are in the buffer.
    pub key: std::ops::Range<usize>,
    pub value: std::ops::Range<usize>,
    /// Where the request ends.
    pub end: usize,
}

/// GET key and SET key value without options, exactly as client libraries
/// and redis-benchmark encode them (`*2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n`,
/// any case): recognized in one pass, without the argument list and the
/// command lookup of the general way. Anything else, an incomplete
/// request included, is `None` and left to [`parse_command`], which
/// decides what it is.
pub fn parse_get_set(buf: &[u8], frame_max: usize) -> Option<GetSet> {
    let set = match buf.get(..8)? {
        b"*2\r\n$3\r\n" => false,
        b"*3\r\n$3\r\n" => true,
        _ => return None,
    };
    let name = buf.get(8..13)?;
    let expected: &[u8; 3] = if set { b"set" } else { b"get" };
    if !name[..3].eq_ignore_ascii_case(expected) || &name[3..] != b"\r\n" {
        return None;
    }
    let mut at = 13;
    let key = bulk_span(buf, &mut at, frame_max)?;
    let value = if set { bulk_span(buf, &mut at, frame_max)? } else { at..at };
    Some(GetSet { set, key, value, end: at })
}

/// `$<n>\r\n<n bytes>\r\n` at `*at`, complete and well formed.
fn bulk_span(buf: &[u8], at: &mut usize, frame_max: usize) -> Option<std::ops::Range<usize>> {
    if *buf.get(*at)? != b'$' {
        return None;
    }
    let mut i = *at + 1;
    let mut len = 0usize;
    while let d @ b'0'..=b'9' = *buf.get(i)? {
        len = len * 10 + usize::from(d - b'0');
        i += 1;
        if i - *at > 11 {
            return None;
        }
    }
    if i == *at + 1 || len > frame_max || buf.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    let start = i + 2;
    if buf.get(start + len..start + len + 2)? != b"\r\n" {
        return None;
    }
    *at = start + len + 2;
    Some(start..start + len)
}

/// Reads `<int>\r\n` at `*at` (just after its type marker): an array's
/// length when `array`, a bulk string's otherwise. Refuses values outside
/// `-1..=max`.
///
/// One pass, digit by digit: this runs twice per argument of every
/// command (it was 5% of a shard's CPU under `redis-benchmark -P 16` as
/// a search for the newline followed by a parse).
fn read_int_line(buf: &[u8], at: &mut usize, max: i64, array: bool) -> Result<Option<i64>, RespError> {
    // Redis' words for either: "invalid multibulk length", "invalid bulk
    // length".
    let bad = if array { RespError::BadArrayLength } else { RespError::BadBulkLength };
    let start = *at;
    let negative = buf.get(start) == Some(&b'-');
    let digits = start + usize::from(negative);
    let mut i = digits;
    let mut magnitude = 0i64;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(&d @ b'0'..=b'9') if i - digits < 19 => {
                magnitude = magnitude.saturating_mul(10).saturating_add(i64::from(d - b'0'));
                i += 1;
            }
            Some(b'\r') if i > digits => break,
            Some(_) => return Err(bad),
        }
    }
    match buf.get(i + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(bad),
    }
    let value = if negative { -magnitude } else { magnitude };
    if value > max || value < -1 {
        return Err(bad);
    }
    *at = i + 2;
    Ok(Some(value))
}

/// An inline command; the first `scanned` bytes are known to hold no
/// newline.
fn parse_inline(buf: &mut BytesMut, scanned: usize, progress: &mut Progress) -> Result<Option<Vec<Bytes>>, RespError> {
    let from = scanned.min(buf.len());
    let Some(nl) = buf[from..].iter().position(|&b| b == b'\n').map(|i| from + i) else {
        if buf.len() > INLINE_MAX_BYTES {
            return Err(RespError::InlineTooLong);
        }
        *progress = Progress { at: buf.len(), args: 0 };
        return Ok(None);
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
    /// The batch's first command, kept for the slow log while it is on.
    first: crate::slowlog::FirstRequest,
    /// What is checked of the incomplete command at the front of the
    /// connection's buffer (`parse_command_resuming`).
    progress: Progress,
    /// commandstats of the current batch, added to the shard's counters
    /// once per batch: per command, atomics and clock reads would cost
    /// more than a pipelined GET (measured: 5% of a shard's CPU).
    batch: BatchStats,
}

/// Counts of one batch of requests, by command.
#[derive(Debug, Default)]
struct BatchStats {
    /// (command, calls, failed, rejected), one entry per command seen.
    counts: Vec<(u8, u32, u32, u32)>,
    /// When the batch started, and how much of its time (µs) was already
    /// added to the counters (by an INFO in the middle of it).
    started: Option<std::time::Instant>,
    counted_usec: u64,
}

impl BatchStats {
    fn entry(&mut self, command: u8) -> &mut (u8, u32, u32, u32) {
        let i = match self.counts.iter().position(|c| c.0 == command) {
            Some(i) => i,
            None => {
                self.counts.push((command, 0, 0, 0));
                self.counts.len() - 1
            }
        };
        &mut self.counts[i]
    }

    /// Adds the batch's calls so far to the shard's counters; its wall
    /// time up to now (`until_usec` since it started, timed by the
    /// connection), less what an earlier flush of the batch counted, is
    /// shared among them, so `usec` includes waits for other shards and
    /// for the group commit, as a client sees them.
    fn flush(&mut self, shard: &Shard, until_usec: u64) {
        let usec = until_usec.saturating_sub(self.counted_usec);
        self.counted_usec = self.counted_usec.max(until_usec);
        let calls: u64 = self.counts.iter().map(|c| u64::from(c.1)).sum();
        for (command, n, failed, rejected) in self.counts.drain(..) {
            if let Some(counter) = shard.counters().commandstats.get(usize::from(command)) {
                counter.calls.fetch_add(u64::from(n), Ordering::Relaxed);
                counter.failed.fetch_add(u64::from(failed), Ordering::Relaxed);
                counter.rejected.fetch_add(u64::from(rejected), Ordering::Relaxed);
                if let Some(share) = (usec * u64::from(n)).checked_div(calls) {
                    counter.usec.fetch_add(share, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Resp {
    pub fn new(id: u64) -> Resp {
        Resp { id, ..Resp::default() }
    }
}

/// How a RESP job's results are rendered, and what INFO commandstats
/// counts for it.
#[derive(Debug)]
pub struct Shape {
    pub form: Form,
    /// The command's index in [`COMMANDS`]; `None` for unknown commands
    /// and protocol errors, which Redis does not count either.
    command: Option<u8>,
    /// Refused before running (arity, NOAUTH): `rejected_calls`.
    rejected: bool,
}

/// The reply a RESP command gives.
#[derive(Debug)]
pub enum Form {
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
    /// MSETNX: 1 when every pair was written, 0 when a key existed.
    MSetNx,
    /// TYPE: `string` for a key that exists (every value is a string, so
    /// WRONGTYPE never happens), `none` otherwise.
    Type,
    /// INCR and friends, APPEND, SETRANGE, STRLEN: the integer result.
    Int64,
    /// GETRANGE: always a bulk string (empty when the key is missing).
    Range,
    /// One SCAN step on shard `shard` of `shards`.
    Scan {
        shard: usize,
        shards: usize,
        pattern: Option<Bytes>,
        /// `TYPE` asked for something other than `string`.
        no_keys: bool,
    },
    /// KEYS: every shard's keys matching `pattern`.
    Keys {
        pattern: Bytes,
    },
    /// A reply encoded when planned (SLOWLOG GET's nested arrays).
    Raw(Bytes),
}

/// Every command this server knows, with Redis's arity (positive: exactly
/// that many arguments with the name; negative: at least that many). The
/// index is the command's slot in [`CommandStats`]; hot commands first,
/// since the name is looked up by a linear search.
pub const COMMANDS: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("mget", -2),
    ("mset", -3),
    ("incr", 2),
    ("del", -2),
    ("exists", -2),
    ("ping", -1),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("getex", -2),
    ("msetnx", -3),
    ("unlink", -2),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("persist", 2),
    ("ttl", 2),
    ("pttl", 2),
    ("type", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("append", 3),
    ("strlen", 2),
    ("getrange", 4),
    ("setrange", 4),
    ("scan", -2),
    ("keys", 2),
    ("dbsize", 1),
    ("flushdb", -1),
    ("flushall", -1),
    ("info", -1),
    ("command", -1),
    ("config", -2),
    ("slowlog", -2),
    ("client", -2),
    ("echo", 2),
    ("quit", -1),
    ("select", 2),
    ("auth", -2),
    ("hello", -1),
];

/// Bits of a SCAN cursor that name the shard: `cursor = engine << 10 |
/// shard`. The engine's cursor has at most 33 bits, so the whole cursor
/// fits 43 bits; 0 starts (shard 0, engine cursor 0) and ends.
pub const SCAN_SHARD_BITS: u32 = 10;
/// SCAN's COUNT when none is given (Redis's default).
pub const SCAN_DEFAULT_COUNT: usize = 10;

/// INFO commandstats counters of one shard, one slot per [`COMMANDS`]
/// entry. Only the shard's own thread writes them (relaxed adds on its own
/// cache lines); INFO on any shard reads them all.
#[derive(Debug)]
pub struct CommandStats(Box<[CommandCounter]>);

#[derive(Debug, Default)]
pub struct CommandCounter {
    pub calls: AtomicU64,
    pub usec: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats(COMMANDS.iter().map(|_| CommandCounter::default()).collect())
    }
}

impl CommandStats {
    pub fn get(&self, command: usize) -> Option<&CommandCounter> {
        self.0.get(command)
    }
}

/// GET's and SET's slots in [`COMMANDS`].
const GET: usize = 0;
const SET: usize = 1;

fn command_index(name: &str) -> Option<usize> {
    // The two commands of nearly every workload skip the map (a SipHash
    // of the name); a test keeps these slots equal to the table's.
    match name {
        "get" => return Some(GET),
        "set" => return Some(SET),
        _ => {}
    }
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static str, usize>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect()).get(name).copied()
}

/// Redis's words for a client name with a space, a newline or another
/// byte outside `!`..=`~` (CLIENT LIST could not be parsed).
const CLIENT_NAME_INVALID: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn wrong_args(name: &str) -> Form {
    Form::Error(format!("ERR wrong number of arguments for '{name}' command"))
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Integers in arguments are read as strictly as Redis reads them.
fn parse_i64(b: &[u8]) -> Option<i64> {
    crate::op::parse_redis_i64(b)
}

/// Redis's `invalid expire time in '<name>' command`.
fn invalid_expire(name: &str) -> Form {
    Form::Error(format!("ERR invalid expire time in '{name}' command"))
}

/// An absolute expiry in ms from SET/GETEX's `EX|PX|EXAT|PXAT n`, with
/// Redis's checks: `n > 0`, and no overflow converting or adding `now`.
fn expiry_ms(unit: &[u8], n: i64, now: u64) -> Option<u64> {
    if n <= 0 {
        return None;
    }
    let ms = match unit {
        b"EX" | b"EXAT" => n.checked_mul(1000)?,
        _ => n,
    };
    let at = match unit {
        b"EX" | b"PX" => ms.checked_add(i64::try_from(now).ok()?)?,
        _ => ms,
    };
    u64::try_from(at).ok()
}

impl Shape {
    fn new(form: Form, command: Option<usize>, rejected: bool) -> Shape {
        Shape { form, command: command.map(|c| c as u8), rejected }
    }
}

fn wrap(job: Job<Form>, command: Option<usize>, rejected: bool) -> Job<Shape> {
    let shape = |form| Shape::new(form, command, rejected);
    match job {
        Job::Reply(f) => Job::Reply(shape(f)),
        Job::ReplyAndClose(f) => Job::ReplyAndClose(shape(f)),
        Job::Key(op, f) => Job::Key(op, shape(f)),
        Job::Keys(ops, f) => Job::Keys(ops, shape(f)),
        Job::Shards(op, f) => Job::Shards(op, shape(f)),
        Job::Shard(i, op, f) => Job::Shard(i, op, shape(f)),
        Job::MSet { pairs, only_if_absent, local, shape: f } => {
            Job::MSet { pairs, only_if_absent, local, shape: shape(f) }
        }
        Job::Cut(at, f) => Job::Cut(at, shape(f)),
    }
}

impl Protocol for Resp {
    type Shape = Shape;

    fn parse(&mut self, buf: &mut BytesMut, shard: &Shard) -> Option<Job<Shape>> {
        // (A limit below SET's three arguments leaves it to the general
        // way, which refuses it.)
        if let Some((cut, shape)) = self.parse_cut(buf, shard) {
            return Some(Job::Key(crate::conn::cut_get_set(buf, cut), shape));
        }
        let limits = shard.shared.request_limits(self.authenticated);
        let args = loop {
            match parse_command_resuming(buf, &limits, &mut self.progress) {
                // Redis ignores empty commands (*0, blank inline lines).
                // (A loop, not a recursive call: thousands of them in one
                // read overflowed the shard thread's stack.) Each one
                // consumed at least a byte, so the loop ends.
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => break args,
                Ok(None) => return None,
                Err(err) => {
                    tracing::info!(error = %err, "bad RESP request; closing connection");
                    buf.clear();
                    return Some(Job::ReplyAndClose(Shape::new(Form::Error(format!("ERR {err}")), None, false)));
                }
            }
        };
        if !self.first.is_kept() && shard.shared.slowlog.enabled() {
            self.first.keep(args.iter().map(|a| &a[..]));
        }
        Some(self.plan(args, shard))
    }

    /// GET and SET without options the short way (see [`parse_get_set`]):
    /// the same shape the general way gives them.
    fn parse_cut(&mut self, buf: &[u8], shard: &Shard) -> Option<(Cut, Shape)> {
        // (A limit below SET's three arguments leaves it to the general
        // way, which refuses it.)
        if !(self.authenticated || shard.shared.requirepass.is_none()) || shard.shared.limits.args_max < 3 {
            return None;
        }
        let GetSet { set, key, value, end } = parse_get_set(buf, shard.shared.limits.frame_max_bytes)?;
        // The bytes at the front leave the buffer: what was checked of them
        // is no longer there.
        self.progress = Progress::default();
        if !self.first.is_kept() && shard.shared.slowlog.enabled() {
            let (name, key, value) = (&buf[8..11], &buf[key.clone()], &buf[value.clone()]);
            self.first.keep([name, key, value].into_iter().take(if set { 3 } else { 2 }));
        }
        let shape = if set {
            Shape::new(Form::Set { get: false }, Some(SET), false)
        } else {
            Shape::new(Form::Value, Some(GET), false)
        };
        Some((Cut { key, value: set.then_some(value), end }, shape))
    }

    fn render(&mut self, shape: &Shape, results: &[OpResult], shard: &Shard, out: &mut BytesMut) {
        if let Some(command) = shape.command {
            let entry = self.batch.entry(command);
            if shape.rejected {
                entry.3 += 1;
            } else {
                entry.1 += 1;
            }
        }
        if matches!(shape.form, Form::Info { .. }) {
            // INFO shows this connection's earlier commands too.
            let usec = self.batch.started.map_or(0, |s| s.elapsed().as_micros() as u64);
            self.batch.flush(shard, usec);
        }
        let at = out.len();
        render_form(&shape.form, results, shard, out);
        if let (Some(command), false) = (shape.command, shape.rejected) {
            if out.get(at) == Some(&b'-') {
                self.batch.entry(command).2 += 1;
            }
        }
    }

    fn render_borrowed_get(&mut self, shape: &Shape, value: Option<&[u8]>, out: &mut BytesMut) -> bool {
        match shape.form {
            Form::Value => {
                put::opt_bulk(out, value);
                if let Some(command) = shape.command {
                    self.batch.entry(command).1 += 1;
                }
                true
            }
            _ => false,
        }
    }

    fn begin_batch(&mut self, started: std::time::Instant) {
        self.batch.started = Some(started);
        self.batch.counted_usec = 0;
        self.first.forget();
    }

    fn end_batch(&mut self, shard: &Shard, elapsed: std::time::Duration) {
        self.batch.flush(shard, elapsed.as_micros() as u64);
    }

    fn first_request(&self) -> (Vec<Bytes>, Bytes) {
        (self.first.entry_args(), self.name.clone().unwrap_or_default())
    }
}

fn render_form(form: &Form, results: &[OpResult], shard: &Shard, out: &mut BytesMut) {
    if let Some(err) = results.iter().find_map(|r| match r {
        OpResult::Error(e) => Some(e),
        _ => None,
    }) {
        return put::error(out, &store_error(err));
    }
    match form {
        Form::Simple(s) => put::simple(out, s),
        Form::Error(e) => put::error(out, e),
        Form::Int(n) => put::int(out, *n),
        Form::Bulk(b) => put::opt_bulk(out, b.as_deref()),
        Form::Array(items) => {
            put::array(out, items.len());
            items.iter().for_each(|i| put::bulk(out, i));
        }
        Form::Value => match results.first() {
            Some(OpResult::Value(v)) => put::opt_bulk(out, v.as_deref()),
            Some(OpResult::Set { old, .. }) => put::opt_bulk(out, old.as_deref()),
            _ => put::nil(out),
        },
        Form::Set { get } => match results.first() {
            Some(OpResult::Set { old, .. }) if *get => put::opt_bulk(out, old.as_deref()),
            Some(OpResult::Set { written: true, .. }) => put::simple(out, "OK"),
            _ => put::nil(out),
        },
        Form::SetNx => put::int(out, i64::from(matches!(results.first(), Some(OpResult::Set { written: true, .. })))),
        Form::MSetNx => put::int(out, i64::from(matches!(results.first(), Some(OpResult::Existed(false))))),
        Form::CountExisted => {
            put::int(out, results.iter().filter(|r| matches!(r, OpResult::Existed(true))).count() as i64)
        }
        Form::Existed => put::int(out, i64::from(matches!(results.first(), Some(OpResult::Existed(true))))),
        Form::Type => {
            put::simple(out, if matches!(results.first(), Some(OpResult::Existed(true))) { "string" } else { "none" })
        }
        Form::Int64 => put::int(
            out,
            match results.first() {
                Some(OpResult::Int(n)) => *n,
                _ => 0,
            },
        ),
        Form::Range => match results.first() {
            Some(OpResult::Value(Some(v))) => put::bulk(out, v),
            _ => put::bulk(out, b""),
        },
        Form::Ttl { millis } => put::int(
            out,
            match results.first() {
                Some(OpResult::Ttl(Ttl::Remaining { ms })) => {
                    let n = if *millis {
                        *ms
                    } else {
                        // Redis rounds to the nearest second.
                        ms.saturating_add(500) / 1000
                    };
                    i64::try_from(n).unwrap_or(i64::MAX)
                }
                Some(OpResult::Ttl(Ttl::Persistent)) => -1,
                _ => -2,
            },
        ),
        Form::Values => {
            put::array(out, results.len());
            for r in results {
                match r {
                    OpResult::Value(v) => put::opt_bulk(out, v.as_deref()),
                    _ => put::nil(out),
                }
            }
        }
        Form::Ok | Form::Flushed => put::simple(out, "OK"),
        Form::DbSize => put::int(
            out,
            results
                .iter()
                .map(|r| match r {
                    OpResult::Stats(s) => s.keys as i64,
                    _ => 0,
                })
                .sum(),
        ),
        Form::Info { sections } => put::bulk(out, info_text(shard, results, sections).as_bytes()),
        Form::Scan { shard: at, shards, pattern, no_keys } => {
            let (keys, engine_cursor) = match results.first() {
                Some(OpResult::Keys { keys, cursor }) => (&keys[..], *cursor),
                _ => (&[][..], 0),
            };
            let next = if engine_cursor != 0 {
                (engine_cursor << SCAN_SHARD_BITS) | *at as u64
            } else if at + 1 < *shards {
                (*at + 1) as u64
            } else {
                0
            };
            let glob = pattern.as_deref().map(Glob::new);
            let matching: Vec<&Bytes> =
                keys.iter().filter(|k| !*no_keys && glob.is_none_or(|g| g.matches(k))).collect();
            put::array(out, 2);
            put::bulk(out, itoa::Buffer::new().format(next).as_bytes());
            put::array(out, matching.len());
            matching.into_iter().for_each(|k| put::bulk(out, k));
        }
        Form::Raw(bytes) => out.extend_from_slice(bytes),
        Form::Keys { pattern } => {
            let glob = Glob::new(pattern);
            let matching: Vec<&Bytes> = results
                .iter()
                .flat_map(|r| match r {
                    OpResult::Keys { keys, .. } => &keys[..],
                    _ => &[][..],
                })
                .filter(|k| glob.matches(k))
                .collect();
            put::array(out, matching.len());
            matching.into_iter().for_each(|k| put::bulk(out, k));
        }
    }
}

/// Whether AUTH's or HELLO's user (the default one when not given) and
/// password are right. As in Redis 7, the only user is `default`, and with
/// no password configured it takes any (it is `nopass`). The password is
/// compared in constant time.
fn credentials_ok(shard: &Shard, user: Option<&Bytes>, password: &[u8]) -> bool {
    let default_user = user.is_none_or(|u| &u[..] == b"default");
    let password_ok = shard.shared.requirepass.as_ref().is_none_or(|s| constant_time_eq(password, s.as_bytes()));
    default_user && password_ok
}

/// Store errors in Redis words where Redis has them.
fn store_error(err: &str) -> String {
    if err.contains("store is full") {
        // Redis' words exactly: clients match on them.
        "OOM command not allowed when used memory > 'maxmemory'.".to_string()
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
        let Some(command) = command_index(name) else {
            return wrap(Job::Reply(unknown_command(&args)), None, false);
        };
        let argc = args.len();
        let arity = COMMANDS[command].1;
        if (arity > 0 && argc as i32 != arity) || argc < arity.unsigned_abs() as usize {
            return wrap(Job::Reply(wrong_args(name)), Some(command), true);
        }
        if shard.shared.requirepass.is_some()
            && !self.authenticated
            && !matches!(name, "auth" | "hello" | "quit" | "ping")
        {
            return wrap(Job::Reply(Form::Error("NOAUTH Authentication required.".into())), Some(command), true);
        }
        let job = self.plan_known(name, &args, shard);
        wrap(job, Some(command), false)
    }

    /// Plans a known command whose arity has been checked.
    fn plan_known(&mut self, name: &str, args: &[Bytes], shard: &Shard) -> Job<Form> {
        let argc = args.len();
        let reply = |form| Job::Reply(form);
        let now = || shard.with_store(|s| s.now_ms());
        let key = |i: usize| args[i].clone();
        match name {
            "ping" => match argc {
                1 => reply(Form::Simple("PONG")),
                2 => reply(Form::Bulk(Some(key(1)))),
                _ => reply(wrong_args("ping")),
            },
            "echo" => reply(Form::Bulk(Some(key(1)))),
            "quit" => Job::ReplyAndClose(Form::Simple("OK")),
            "select" => reply(match parse_i64(&args[1]) {
                Some(0) => Form::Simple("OK"),
                Some(_) => Form::Error("ERR DB index is out of range".into()),
                None => Form::Error(NOT_INTEGER.into()),
            }),
            "auth" if argc <= 3 => {
                let given = &args[argc - 1];
                let user = (argc == 3).then(|| &args[1]);
                reply(if user.is_none() && shard.shared.requirepass.is_none() {
                    Form::Error(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
                    )
                } else if credentials_ok(shard, user, given) {
                    self.authenticated = true;
                    Form::Simple("OK")
                } else {
                    Form::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
                })
            }
            "auth" => reply(Form::Error(SYNTAX.into())),
            "hello" => self.hello(args, shard),
            "get" => Job::Key(KeyOp::Get { key: key(1) }, Form::Value),
            "set" => self.set(args, now),
            "setnx" => Job::Key(set_op(key(1), key(2), SetExpiry::None, Condition::IfAbsent, false), Form::SetNx),
            "setex" | "psetex" => match parse_i64(&args[2]) {
                Some(t) => match expiry_ms(if name == "setex" { b"EX" } else { b"PX" }, t, now()) {
                    Some(at) => Job::Key(set_op(key(1), key(3), SetExpiry::At(at), Condition::Always, false), Form::Ok),
                    None => reply(invalid_expire(name)),
                },
                None => reply(Form::Error(NOT_INTEGER.into())),
            },
            "getset" => Job::Key(set_op(key(1), key(2), SetExpiry::None, Condition::Always, true), Form::Value),
            "getdel" => Job::Key(KeyOp::GetDel { key: key(1) }, Form::Value),
            "getex" => self.getex(args, now()),
            "mget" => Job::Keys(args[1..].iter().map(|k| KeyOp::Get { key: k.clone() }).collect(), Form::Values),
            "mset" | "msetnx" if argc.is_multiple_of(2) => reply(wrong_args(name)),
            "mset" | "msetnx" => {
                // Every pair is checked before any is written, on every
                // shard (`txn`).
                let only_if_absent = name == "msetnx";
                Job::MSet {
                    pairs: args[1..].chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
                    only_if_absent,
                    local: false,
                    shape: if only_if_absent { Form::MSetNx } else { Form::Ok },
                }
            }
            "del" | "unlink" => {
                Job::Keys(args[1..].iter().map(|k| KeyOp::Del { key: k.clone() }).collect(), Form::CountExisted)
            }
            "exists" => {
                Job::Keys(args[1..].iter().map(|k| KeyOp::Exists { key: k.clone() }).collect(), Form::CountExisted)
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                // Options first, then the time, in Redis' order of errors.
                let condition = match expire_condition(&args[3..]) {
                    Ok(c) => c,
                    Err(form) => return reply(form),
                };
                let Some(n) = parse_i64(&args[2]) else { return reply(Form::Error(NOT_INTEGER.into())) };
                // Redis: negative times are allowed (they delete); only
                // overflow is refused.
                let base = if name == "expire" || name == "pexpire" { now() as i64 } else { 0 };
                let ms = if name == "expire" || name == "expireat" { n.checked_mul(1000) } else { Some(n) };
                let Some(at_ms) = ms.and_then(|ms| ms.checked_add(base)) else { return reply(invalid_expire(name)) };
                Job::Key(KeyOp::ExpireAt { key: key(1), at_ms: Some(at_ms.max(0) as u64), condition }, Form::Existed)
            }
            "persist" => Job::Key(KeyOp::Persist { key: key(1) }, Form::Existed),
            "ttl" | "pttl" => Job::Key(KeyOp::Ttl { key: key(1) }, Form::Ttl { millis: name == "pttl" }),
            "type" => Job::Key(KeyOp::Exists { key: key(1) }, Form::Type),
            "incr" | "decr" | "incrby" | "decrby" => {
                let delta = match name {
                    "incr" => 1,
                    "decr" => -1,
                    _ => match parse_i64(&args[2]) {
                        Some(i64::MIN) if name == "decrby" => {
                            return reply(Form::Error("ERR decrement would overflow".into()))
                        }
                        Some(n) if name == "decrby" => -n,
                        Some(n) => n,
                        None => return reply(Form::Error(NOT_INTEGER.into())),
                    },
                };
                Job::Key(KeyOp::IncrBy { key: key(1), delta }, Form::Int64)
            }
            "append" => Job::Key(KeyOp::Append { key: key(1), value: key(2) }, Form::Int64),
            "strlen" => Job::Key(KeyOp::StrLen { key: key(1) }, Form::Int64),
            "getrange" => match (parse_i64(&args[2]), parse_i64(&args[3])) {
                (Some(start), Some(end)) => Job::Key(KeyOp::GetRange { key: key(1), start, end }, Form::Range),
                _ => reply(Form::Error(NOT_INTEGER.into())),
            },
            "setrange" => match parse_i64(&args[2]) {
                Some(offset) if offset >= 0 => {
                    Job::Key(KeyOp::SetRange { key: key(1), offset: offset as u64, value: key(3) }, Form::Int64)
                }
                Some(_) => reply(Form::Error("ERR offset is out of range".into())),
                None => reply(Form::Error(NOT_INTEGER.into())),
            },
            "scan" => scan(args, shard),
            "keys" => Job::Shards(ShardOp::Keys, Form::Keys { pattern: key(1) }),
            "dbsize" => Job::Shards(ShardOp::Stats, Form::DbSize),
            "flushdb" | "flushall" => Job::Shards(ShardOp::FlushAll, Form::Flushed),
            "info" => Job::Shards(
                ShardOp::Stats,
                Form::Info {
                    sections: args[1..].iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect(),
                },
            ),
            "command" => reply(Form::Array(Vec::new())),
            "config" if argc >= 3 && args[1].eq_ignore_ascii_case(b"get") => {
                reply(Form::Array(config_get(&args[2..], shard)))
            }
            "config" if args[1].eq_ignore_ascii_case(b"get") => reply(wrong_args("config|get")),
            // CONFIG SET, REWRITE and RESETSTAT are not served: the
            // configuration is the command line's.
            "config" => reply(Form::Error(format!(
                "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(&args[1])
            ))),
            "client" => self.client(args),
            "slowlog" => reply(slowlog(args, shard)),
            _ => reply(wrong_args(name)),
        }
    }

    /// GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]. Options are
    /// checked now; the time only when the key exists (as Redis does).
    fn getex(&mut self, args: &[Bytes], now: u64) -> Job<Form> {
        let mut expiry = GetExExpiry::Leave;
        let mut given = false;
        let mut i = 2;
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            match opt.as_slice() {
                b"PERSIST" if !given => expiry = GetExExpiry::Persist,
                b"EX" | b"PX" | b"EXAT" | b"PXAT" if !given && i + 1 < args.len() => {
                    i += 1;
                    expiry = match parse_i64(&args[i]) {
                        None => GetExExpiry::Invalid(crate::op::NOT_INTEGER),
                        Some(n) => match expiry_ms(&opt, n, now) {
                            Some(at) => GetExExpiry::At(at),
                            None => GetExExpiry::Invalid("invalid expire time in 'getex' command"),
                        },
                    };
                }
                _ => return Job::Reply(Form::Error(SYNTAX.into())),
            }
            given = true;
            i += 1;
        }
        Job::Key(KeyOp::GetEx { key: args[1].clone(), expiry }, Form::Value)
    }

    /// SET's options; the clock is read only when an expiry needs it.
    fn set(&mut self, args: &[Bytes], now: impl Fn() -> u64) -> Job<Form> {
        let mut expiry = SetExpiry::None;
        let mut condition = Condition::Always;
        let mut get = false;
        let mut expiry_given = false;
        let mut i = 3;
        let syntax = || Job::Reply(Form::Error(SYNTAX.into()));
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
                    let Some(n) = parse_i64(&args[i + 1]) else { return Job::Reply(Form::Error(NOT_INTEGER.into())) };
                    let Some(at) = expiry_ms(&opt, n, now()) else { return Job::Reply(invalid_expire("set")) };
                    expiry = SetExpiry::At(at);
                    expiry_given = true;
                    i += 1;
                }
                _ => return syntax(),
            }
            i += 1;
        }
        Job::Key(set_op(args[1].clone(), args[2].clone(), expiry, condition, get), Form::Set { get })
    }

    fn hello(&mut self, args: &[Bytes], shard: &Shard) -> Job<Form> {
        if let Some(version) = args.get(1) {
            match parse_i64(version) {
                Some(2) => {}
                Some(3) => return Job::Reply(Form::Error("NOPROTO unsupported protocol version".into())),
                _ => return Job::Reply(Form::Error("NOPROTO unsupported protocol version".into())),
            }
        }
        let mut i = 2;
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            match opt.as_slice() {
                b"AUTH" if i + 2 < args.len() => {
                    if !credentials_ok(shard, Some(&args[i + 1]), &args[i + 2]) {
                        return Job::Reply(Form::Error(
                            "WRONGPASS invalid username-password pair or user is disabled.".into(),
                        ));
                    }
                    self.authenticated = true;
                    i += 3;
                }
                b"SETNAME" if i + 1 < args.len() && !valid_client_name(&args[i + 1]) => {
                    return Job::Reply(Form::Error(CLIENT_NAME_INVALID.into()));
                }
                b"SETNAME" if i + 1 < args.len() => {
                    self.name = Some(Bytes::copy_from_slice(&args[i + 1]));
                    i += 2;
                }
                _ => return Job::Reply(Form::Error(SYNTAX.into())),
            }
        }
        if shard.shared.requirepass.is_some() && !self.authenticated {
            return Job::Reply(Form::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
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
        Job::Reply(Form::Array(pairs))
    }

    fn client(&mut self, args: &[Bytes]) -> Job<Form> {
        let sub = args[1].to_ascii_lowercase();
        Job::Reply(match (sub.as_slice(), args.len()) {
            (b"setname", 3) if !valid_client_name(&args[2]) => Form::Error(CLIENT_NAME_INVALID.into()),
            (b"setname", 3) => {
                // An empty name removes the name, as in Redis.
                self.name = (!args[2].is_empty()).then(|| Bytes::copy_from_slice(&args[2]));
                Form::Simple("OK")
            }
            (b"getname", 2) => Form::Bulk(self.name.clone()),
            (b"id", 2) => Form::Int(self.id as i64),
            (b"setinfo", 4) => Form::Simple("OK"),
            _ => Form::Error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        })
    }
}

/// Redis's unknown-command error, word for word: each argument quoted
/// and followed by a space, until the list reaches 128 bytes.
fn unknown_command(args: &[Bytes]) -> Form {
    let mut shown = String::new();
    for a in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        shown.push_str(&format!("'{}' ", String::from_utf8_lossy(&a[..a.len().min(room)])));
    }
    let name = &args[0][..args[0].len().min(128)];
    let text = format!("ERR unknown command '{}', with args beginning with: {shown}", String::from_utf8_lossy(name));
    // An error reply is one line.
    Form::Error(text.replace(['\r', '\n'], " "))
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]: one step on the shard
/// the cursor names (see [`SCAN_SHARD_BITS`]).
fn scan(args: &[Bytes], shard: &Shard) -> Job<Form> {
    let error = |e: &str| Job::Reply(Form::Error(e.into()));
    let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|c| c.parse::<u64>().ok()) else {
        return error("ERR invalid cursor");
    };
    let mut pattern = None;
    let mut count = SCAN_DEFAULT_COUNT;
    let mut no_keys = false;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else { return error(SYNTAX) };
        match args[i].to_ascii_lowercase().as_slice() {
            b"match" => pattern = (&value[..] != b"*").then(|| value.clone()),
            b"count" => match parse_i64(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return error(SYNTAX),
                None => return error(NOT_INTEGER),
            },
            b"type" => no_keys = !value.eq_ignore_ascii_case(b"string"),
            _ => return error(SYNTAX),
        }
        i += 2;
    }
    let shards = shard.shared.mailboxes.len();
    let at = (cursor & ((1 << SCAN_SHARD_BITS) - 1)) as usize;
    if shards > 1 << SCAN_SHARD_BITS || at >= shards {
        // Not a cursor this server gave out: the iteration is over.
        return Job::Reply(Form::Scan { shard: shards, shards, pattern: None, no_keys: true });
    }
    Job::Shard(
        at,
        ShardOp::Scan { cursor: cursor >> SCAN_SHARD_BITS, count },
        Form::Scan { shard: at, shards, pattern, no_keys },
    )
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
        ("maxmemory", shard.shared.memory_max_bytes.to_string()),
        ("maxmemory-policy", shard.shared.maxmemory_policy().to_string()),
        ("databases", "1".to_string()),
        ("port", shard.shared.resp_port.unwrap_or(0).to_string()),
        ("proto-max-bulk-len", shard.shared.limits.value_max_bytes.to_string()),
    ];
    let mut out = Vec::new();
    for pattern in patterns {
        let pattern = String::from_utf8_lossy(pattern).to_ascii_lowercase();
        let glob = Glob::new(pattern.as_bytes());
        for (name, value) in &params {
            if glob.matches(name.as_bytes()) && !out.iter().any(|o: &Bytes| o == name.as_bytes()) {
                out.push(Bytes::from(*name));
                out.push(Bytes::from(value.clone()));
            }
        }
    }
    out
}

/// EXPIRE's NX, XX, GT and LT, checked as Redis 7 checks them.
fn expire_condition(opts: &[Bytes]) -> Result<ExpireCondition, Form> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in opts {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return Err(Form::Error(format!("ERR Unsupported option {}", String::from_utf8_lossy(opt)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Form::Error("ERR NX and XX, GT or LT options at the same time are not compatible".into()));
    }
    if gt && lt {
        return Err(Form::Error("ERR GT and LT options at the same time are not compatible".into()));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpireCondition::Nx,
        (_, _, true, _) => ExpireCondition::Gt,
        (_, true, _, true) => ExpireCondition::XxLt,
        (_, _, _, true) => ExpireCondition::Lt,
        (_, true, ..) => ExpireCondition::Xx,
        _ => ExpireCondition::Always,
    })
}

/// SLOWLOG GET [count] | LEN | RESET | HELP, with Redis 7's replies.
fn slowlog(args: &[Bytes], shard: &Shard) -> Form {
    let log = &shard.shared.slowlog;
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("get", 2 | 3) => {
            let count = match args.get(2).map(|a| parse_i64(a)) {
                None => 10,
                Some(Some(-1)) => usize::MAX,
                Some(Some(n)) if n >= 0 => n as usize,
                Some(_) => return Form::Error("ERR count should be greater than or equal to -1".into()),
            };
            let entries = log.get(count);
            let mut out = BytesMut::new();
            put::array(&mut out, entries.len());
            for e in entries {
                put::array(&mut out, 6);
                put::int(&mut out, e.id as i64);
                put::int(&mut out, e.at_unix_s as i64);
                put::int(&mut out, i64::try_from(e.duration_us).unwrap_or(i64::MAX));
                put::array(&mut out, e.args.len());
                e.args.iter().for_each(|a| put::bulk(&mut out, a));
                put::bulk(&mut out, e.client.as_bytes());
                put::bulk(&mut out, &e.client_name);
            }
            Form::Raw(out.freeze())
        }
        ("get", _) => Form::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(&args[1])
        )),
        ("len" | "reset" | "help", n) if n > 2 => {
            Form::Error(format!("ERR wrong number of arguments for 'slowlog|{sub}' command"))
        }
        ("len", _) => Form::Int(log.len() as i64),
        ("reset", _) => {
            log.reset();
            Form::Simple("OK")
        }
        ("help", _) => {
            let lines = [
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Prints this help.",
            ];
            let mut out = BytesMut::new();
            put::array(&mut out, lines.len());
            lines.iter().for_each(|l| put::simple(&mut out, l));
            Form::Raw(out.freeze())
        }
        _ => Form::Error(format!("ERR unknown subcommand '{}'. Try SLOWLOG HELP.", String::from_utf8_lossy(&args[1]))),
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
        out.push_str(&format!(
            "# Memory\r\nused_memory:{}\r\nused_memory_index:{}\r\nused_memory_live_data:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\nringkv_mode:{}\r\nevicted_segments:{}\r\n\r\n",
            field("memory_used_bytes"),
            field("index_bytes"),
            field("live_bytes"),
            shared.memory_max_bytes,
            shared.maxmemory_policy(),
            field("mode"),
            field("evicted_segments"),
        ));
    }
    if want("persistence") {
        out.push_str(&format!(
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nsyncs:{}\r\ncompactions:{}\r\ndead_bytes:{}\r\nsegments_ready:{}\r\nrolls_waited:{}\r\nsegments_recycled:{}\r\nsegments_spare:{}\r\n\r\n",
            field("syncs"),
            field("compactions"),
            field("dead_bytes"),
            field("segments_ready"),
            field("rolls_waited"),
            field("segments_recycled"),
            field("segments_spare"),
        ));
    }
    if want("stats") {
        out.push_str(&format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ncross_shard_hops:{}\r\nused_cpu_ms:{}\r\n\r\n",
            field("total_connections_received"),
            shared.total_commands(),
            field("total_net_input_bytes"),
            field("total_net_output_bytes"),
            field("expired_reclaimed"),
            field("evicted_keys"),
            field("hits"),
            field("misses"),
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
    // Not in the default set, as in Redis: only when named, or all.
    if sections.iter().any(|s| s == "commandstats" || s == "all" || s == "everything") {
        out.push_str("# Commandstats\r\n");
        for (i, (name, _)) in COMMANDS.iter().enumerate() {
            let sum = |f: fn(&CommandCounter) -> &AtomicU64| -> u64 {
                shared.counters.iter().filter_map(|c| c.commandstats.get(i)).map(|c| f(c).load(Ordering::Relaxed)).sum()
            };
            let (calls, usec, rejected, failed) =
                (sum(|c| &c.calls), sum(|c| &c.usec), sum(|c| &c.rejected), sum(|c| &c.failed));
            if calls + rejected + failed == 0 {
                continue;
            }
            let per_call = if calls == 0 { 0.0 } else { usec as f64 / calls as f64 };
            out.push_str(&format!(
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n"
            ));
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command fed a byte at a time parses to what it parses to whole,
    /// and each call checks only what is new: the progress never goes back.
    #[test]
    fn a_command_arriving_in_pieces_resumes_where_it_stopped() {
        let limits = Limits::default();
        for whole in [
            &b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$11\r\nhello world\r\n"[..],
            b"*4\r\n$0\r\n\r\n$0\r\n\r\n$2\r\nab\r\n$0\r\n\r\n",
            b"SET inline 'quoted value'\r\n",
        ] {
            let expected = parse_command(&mut BytesMut::from(whole), &limits).unwrap().unwrap();
            let mut buf = BytesMut::new();
            let mut progress = Progress::default();
            let mut parsed = None;
            for (i, &byte) in whole.iter().enumerate() {
                buf.extend_from_slice(&[byte]);
                let before = progress;
                match parse_command_resuming(&mut buf, &limits, &mut progress).unwrap() {
                    Some(args) => {
                        assert_eq!(i, whole.len() - 1, "complete only with its last byte");
                        parsed = Some(args);
                    }
                    None => assert!(
                        progress.at >= before.at && progress.args >= before.args,
                        "{before:?} then {progress:?}"
                    ),
                }
            }
            assert_eq!(parsed, Some(expected));
            assert!(buf.is_empty());
            assert_eq!(progress, Progress::default(), "reset once the command left the buffer");
        }
    }

    /// Progress left over from another command (a caller that forgot to
    /// reset it) must not make the parser slice out of bounds.
    #[test]
    fn stale_progress_never_panics() {
        let limits = Limits::default();
        for at in 0..40 {
            for args in 0..4 {
                let mut buf = BytesMut::from(&b"*3\r\n$1\r\na\r\n$2\r\nbc\r\n$3\r\ndef\r\n"[..]);
                let mut progress = Progress { at, args };
                let _ = parse_command_resuming(&mut buf, &limits, &mut progress);
            }
        }
    }

    #[test]
    fn every_command_name_finds_its_own_slot() {
        for (i, (name, _)) in COMMANDS.iter().enumerate() {
            assert_eq!(command_index(name), Some(i), "{name}");
        }
        assert_eq!(command_index("nosuch"), None);
    }

    #[test]
    fn the_short_way_agrees_with_the_general_parser() {
        let requests: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n",
            b"*2\r\n$3\r\ngEt\r\n$0\r\n\r\n",
            b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$7\r\nva\r\nlue\r\n",
            b"*3\r\n$3\r\nSET\r\n$02\r\nab\r\n$0\r\n\r\n",
        ];
        for request in requests {
            let mut buf = BytesMut::from(&request[..]);
            buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            let fast = parse_get_set(&buf, 1 << 20).expect("recognized");
            let mut args = vec![&buf[8..11], &buf[fast.key.clone()]];
            if fast.set {
                args.push(&buf[fast.value.clone()]);
            }
            let mut general = buf.clone();
            let expected = parse(&general.split_to(request.len())).unwrap().unwrap();
            assert_eq!(args, expected.iter().map(|a| &a[..]).collect::<Vec<_>>());
            assert_eq!(fast.end, request.len());
            // A request cut anywhere is left to the general way, which waits.
            for cut in 0..request.len() {
                assert_eq!(parse_get_set(&request[..cut], 1 << 20), None, "cut at {cut}");
            }
            // Any one byte changed: what the short way still takes, the
            // general parser reads the same.
            for at in 0..request.len() {
                for byte in [b'0', b'3', b'9', b'\r', b'\n', b'$', b'*', b'x', b'S', b'-', 0xff] {
                    let mut changed = request.to_vec();
                    changed[at] = byte;
                    let Some(fast) = parse_get_set(&changed, 1 << 20) else { continue };
                    let mut general = BytesMut::from(&changed[..]);
                    let args = parse_command(&mut general, &Limits::default()).unwrap().unwrap();
                    assert_eq!(&args[1][..], &changed[fast.key.clone()]);
                    assert_eq!(changed.len() - general.len(), fast.end);
                    if fast.set {
                        assert_eq!(&args[2][..], &changed[fast.value]);
                    }
                }
            }
        }
        // Other commands, options, odd framing and lengths go the general way.
        let others: &[&[u8]] = &[
            b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n",
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n",
            b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"*2\r\n$3\r\nGET\r\n$2\r\nk\r\n",
            b"*2\r\n$3\r\nGET\r\n$-1\r\n",
            b"*2\r\n$3\r\nGET\r\n$\r\n\r\n",
            b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
            b"GET k\r\n",
        ];
        for request in others {
            assert_eq!(parse_get_set(request, 1 << 20), None, "{}", String::from_utf8_lossy(request));
        }
        assert_eq!(parse_get_set(b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n", 4), None);
    }

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
        assert_eq!(parse(b"*1\r\n$*5\r\nhello\r\n"), Err(RespError::BadBulkLength));
        assert_eq!(parse(b"**1\r\n$1\r\nx\r\n"), Err(RespError::BadArrayLength));
        assert_eq!(parse(b"*x\r\n"), Err(RespError::BadArrayLength));
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
}
