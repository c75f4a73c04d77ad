//! The native binary protocol, specified in docs/protocol.md.
//!
//! ```text
//! request:  | len u32 | op u8     | flags u8 | id u32 | body (len - 6 bytes) |
//! response: | len u32 | status u8 | flags u8 | id u32 | body (len - 6 bytes) |
//! ```
//! All integers are little-endian. `len` counts the bytes after itself.
//! Byte strings in bodies are `u32 length` then the bytes. A partial frame
//! is `Ok(None)` (wait for more bytes); a frame that can never be valid is
//! an error, answered and followed by closing the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use engine::{Condition, SetExpiry, Ttl};

use crate::limits::Limits;
use crate::op::{ExpireCondition, KeyOp, OpResult};

/// Bytes of the fixed part after the length prefix.
pub const HEADER_BYTES: usize = 6;
/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;

/// Operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Get = 0x01,
    Set = 0x02,
    Del = 0x03,
    Exists = 0x04,
    Expire = 0x05,
    Ttl = 0x06,
    MGet = 0x07,
    MSet = 0x08,
    Ping = 0x09,
    Stats = 0x0a,
    Auth = 0x0b,
    Ring = 0x0c,
}

impl Opcode {
    /// The operation's name, as the slow log shows it.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Get => "GET",
            Opcode::Set => "SET",
            Opcode::Del => "DEL",
            Opcode::Exists => "EXISTS",
            Opcode::Expire => "EXPIRE",
            Opcode::Ttl => "TTL",
            Opcode::MGet => "MGET",
            Opcode::MSet => "MSET",
            Opcode::Ping => "PING",
            Opcode::Stats => "STATS",
            Opcode::Auth => "AUTH",
            Opcode::Ring => "RING",
        }
    }

    pub fn from_u8(b: u8) -> Option<Opcode> {
        use Opcode::*;
        Some(match b {
            0x01 => Get,
            0x02 => Set,
            0x03 => Del,
            0x04 => Exists,
            0x05 => Expire,
            0x06 => Ttl,
            0x07 => MGet,
            0x08 => MSet,
            0x09 => Ping,
            0x0a => Stats,
            0x0b => Auth,
            0x0c => Ring,
            _ => return None,
        })
    }
}

/// SET flags.
pub mod set_flags {
    /// Only if the key does not exist.
    pub const NX: u8 = 1;
    /// Only if the key exists.
    pub const XX: u8 = 2;
    /// Return the previous value.
    pub const GET: u8 = 4;
    /// Keep the existing expiry (the body's ttl must be 0).
    pub const KEEPTTL: u8 = 8;
}

/// Reply status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    Error = 2,
    /// The key belongs to another node; body: epoch u64, address bytes.
    Moved = 3,
    /// A conditional SET whose condition did not hold.
    NotStored = 4,
}

impl Status {
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Error,
            3 => Status::Moved,
            4 => Status::NotStored,
            _ => return None,
        })
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u32,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    Key(KeyOpWire),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    Ping,
    Stats,
    Auth(Bytes),
    Ring,
}

impl RequestBody {
    pub fn opcode(&self) -> Opcode {
        match self {
            RequestBody::Key(KeyOpWire::Get(_)) => Opcode::Get,
            RequestBody::Key(KeyOpWire::Set { .. }) => Opcode::Set,
            RequestBody::Key(KeyOpWire::Del(_)) => Opcode::Del,
            RequestBody::Key(KeyOpWire::Exists(_)) => Opcode::Exists,
            RequestBody::Key(KeyOpWire::Expire { .. }) => Opcode::Expire,
            RequestBody::Key(KeyOpWire::Ttl(_)) => Opcode::Ttl,
            RequestBody::MGet(_) => Opcode::MGet,
            RequestBody::MSet(_) => Opcode::MSet,
            RequestBody::Ping => Opcode::Ping,
            RequestBody::Stats => Opcode::Stats,
            RequestBody::Auth(_) => Opcode::Auth,
            RequestBody::Ring => Opcode::Ring,
        }
    }

    /// The request as the slow log shows it: the operation's name and its
    /// first key, if any (never a value or a secret), borrowed.
    pub fn summary(&self) -> impl Iterator<Item = &[u8]> {
        let key = match self {
            RequestBody::Key(op) => Some(op.key()),
            RequestBody::MGet(keys) => keys.first(),
            RequestBody::MSet(pairs) => pairs.first().map(|(k, _)| k),
            RequestBody::Ping | RequestBody::Stats | RequestBody::Auth(_) | RequestBody::Ring => None,
        };
        std::iter::once(self.opcode().name().as_bytes()).chain(key.map(|k| &k[..]))
    }
}

/// A single-key operation with relative TTLs, as it travels.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyOpWire {
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        ttl_ms: u64,
        flags: u8,
    },
    Del(Bytes),
    Exists(Bytes),
    /// ttl 0 removes the expiry.
    Expire {
        key: Bytes,
        ttl_ms: u64,
    },
    Ttl(Bytes),
}

impl KeyOpWire {
    pub fn key(&self) -> &Bytes {
        match self {
            KeyOpWire::Get(k) | KeyOpWire::Del(k) | KeyOpWire::Exists(k) | KeyOpWire::Ttl(k) => k,
            KeyOpWire::Set { key, .. } | KeyOpWire::Expire { key, .. } => key,
        }
    }

    /// True when turning this into an operation needs the clock.
    pub fn needs_clock(&self) -> bool {
        matches!(self, KeyOpWire::Set { ttl_ms: 1.., .. } | KeyOpWire::Expire { ttl_ms: 1.., .. })
    }

    /// The operation with absolute expiries, for the store.
    pub fn into_op(self, now_ms: u64) -> KeyOp {
        match self {
            KeyOpWire::Get(key) => KeyOp::Get { key },
            KeyOpWire::Set { key, value, ttl_ms, flags } => KeyOp::Set {
                key,
                value,
                expiry: if flags & set_flags::KEEPTTL != 0 {
                    SetExpiry::Keep
                } else if ttl_ms > 0 {
                    SetExpiry::At(now_ms.saturating_add(ttl_ms))
                } else {
                    SetExpiry::None
                },
                condition: if flags & set_flags::NX != 0 {
                    Condition::IfAbsent
                } else if flags & set_flags::XX != 0 {
                    Condition::IfPresent
                } else {
                    Condition::Always
                },
                return_old: flags & set_flags::GET != 0,
            },
            KeyOpWire::Del(key) => KeyOp::Del { key },
            KeyOpWire::Exists(key) => KeyOp::Exists { key },
            KeyOpWire::Expire { key, ttl_ms } => KeyOp::ExpireAt {
                key,
                at_ms: (ttl_ms > 0).then(|| now_ms.saturating_add(ttl_ms)),
                condition: ExpireCondition::Always,
            },
            KeyOpWire::Ttl(key) => KeyOp::Ttl { key },
        }
    }
}

/// Longest response frame (after its length prefix) a server sends and
/// the client library takes; a longer one is replaced by an error.
pub const RESPONSE_MAX_BYTES: usize = 512 << 20;

/// Longest ttl a SET or an EXPIRE may give (2^62 ms, 146 million years):
/// the expiry it sets, now plus the ttl, and so every TTL reply, stay
/// within an i64. (2^63 stored an expiry that TTL then reported as a
/// negative number of ms.)
pub const TTL_MAX_MS: u64 = 1 << 62;

/// Why bytes are not a valid request. After any of these the connection
/// is answered with an error and closed: framing cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("frame of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("malformed body for {op:?}: {problem}")]
    Malformed { op: Opcode, problem: &'static str },
    #[error("key of {len} bytes exceeds the limit of {limit}")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("value of {len} bytes exceeds the limit of {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("{count} keys exceed the limit of {limit}")]
    TooManyKeys { count: usize, limit: usize },
}

/// Decodes one request from the front of `buf`, consuming it. `Ok(None)`
/// means more bytes are needed; nothing is allocated until the whole frame
/// is present.
/// A complete plain GET or SET frame at the front of a buffer, as
/// `decode_get_set` finds it: positions in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSet {
    pub id: u32,
    pub set: bool,
    pub key: std::ops::Range<usize>,
    /// Empty for a GET.
    pub value: std::ops::Range<usize>,
    /// Where the frame ends.
    pub end: usize,
}

/// Recognizes the two requests that make up most traffic, a GET and a SET
/// with no flags and no TTL, complete, within the limits and exactly as
/// long as their fields, in one pass over the header and without moving a
/// request through `RequestBody`: the fast path of the connection loop.
/// Anything else (an incomplete frame included) is `None`, for
/// `decode_request` to decide.
pub fn decode_get_set(buf: &[u8], limits: &Limits) -> Option<GetSet> {
    let le32 = |at: usize| buf.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let len = le32(0)?;
    let end = LEN_BYTES.checked_add(len)?;
    if len > limits.frame_max_bytes || buf.len() < end {
        return None;
    }
    let (op, flags) = (*buf.get(LEN_BYTES)?, *buf.get(LEN_BYTES + 1)?);
    let id = le32(LEN_BYTES + 2)? as u32;
    let set = match op {
        x if x == Opcode::Get as u8 => false,
        x if x == Opcode::Set as u8 => true,
        _ => return None,
    };
    if flags != 0 {
        return None;
    }
    let key_at = LEN_BYTES + HEADER_BYTES + 4;
    let key_len = le32(key_at - 4)?;
    if key_len > limits.key_max_bytes {
        return None;
    }
    let key = key_at..key_at.checked_add(key_len)?;
    if !set {
        return (key.end == end).then_some(GetSet { id, set, value: key.end..key.end, key, end });
    }
    let value_len = le32(key.end)?;
    if value_len > limits.value_max_bytes {
        return None;
    }
    let value = key.end + 4..(key.end + 4).checked_add(value_len)?;
    let ttl = buf.get(value.end..value.end.checked_add(8)?)?;
    if value.end + 8 != end || ttl.iter().any(|&b| b != 0) {
        return None;
    }
    Some(GetSet { id, set, key, value, end })
}

pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, (u32, FrameError)> {
    let Some(len_bytes) = buf.get(..LEN_BYTES) else { return Ok(None) };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > limits.frame_max_bytes {
        return Err((0, FrameError::TooLarge { len, limit: limits.frame_max_bytes }));
    }
    if len < HEADER_BYTES {
        return Err((0, FrameError::TooShort { len }));
    }
    if buf.len() < LEN_BYTES + len {
        crate::limits::reserve_ahead(buf, LEN_BYTES + len);
        return Ok(None);
    }
    buf.advance(LEN_BYTES);
    let mut frame = buf.split_to(len).freeze();
    let op_byte = frame.get_u8();
    let flags = frame.get_u8();
    let id = frame.get_u32_le();
    let op = Opcode::from_u8(op_byte).ok_or((id, FrameError::UnknownOpcode(op_byte)))?;
    let body = decode_body(op, flags, &mut frame, limits).map_err(|e| (id, e))?;
    if frame.has_remaining() {
        return Err((id, FrameError::Malformed { op, problem: "trailing bytes" }));
    }
    Ok(Some(Request { id, body }))
}

fn decode_body(op: Opcode, flags: u8, f: &mut Bytes, limits: &Limits) -> Result<RequestBody, FrameError> {
    let bad = |problem| FrameError::Malformed { op, problem };
    let key = |f: &mut Bytes| -> Result<Bytes, FrameError> {
        let k = get_bytes(f).ok_or(bad("truncated key"))?;
        if k.len() > limits.key_max_bytes {
            return Err(FrameError::KeyTooLarge { len: k.len(), limit: limits.key_max_bytes });
        }
        Ok(k)
    };
    let value = |f: &mut Bytes| -> Result<Bytes, FrameError> {
        let v = get_bytes(f).ok_or(bad("truncated value"))?;
        if v.len() > limits.value_max_bytes {
            return Err(FrameError::ValueTooLarge { len: v.len(), limit: limits.value_max_bytes });
        }
        Ok(v)
    };
    let u64_field = |f: &mut Bytes| if f.remaining() >= 8 { Ok(f.get_u64_le()) } else { Err(bad("truncated u64")) };
    let count = |f: &mut Bytes| -> Result<usize, FrameError> {
        if f.remaining() < 4 {
            return Err(bad("truncated count"));
        }
        let n = f.get_u32_le() as usize;
        if n > limits.args_max {
            return Err(FrameError::TooManyKeys { count: n, limit: limits.args_max });
        }
        // Each key needs at least its 4-byte length: a count the frame
        // cannot hold is refused before anything is allocated for it.
        if n > f.remaining() / 4 {
            return Err(bad("count larger than the frame"));
        }
        Ok(n)
    };
    Ok(match op {
        Opcode::Get => RequestBody::Key(KeyOpWire::Get(key(f)?)),
        Opcode::Set => {
            let (k, v, ttl_ms) = (key(f)?, value(f)?, u64_field(f)?);
            if flags & set_flags::NX != 0 && flags & set_flags::XX != 0 {
                return Err(bad("NX and XX together"));
            }
            if flags & set_flags::KEEPTTL != 0 && ttl_ms != 0 {
                return Err(bad("KEEPTTL with a ttl"));
            }
            if ttl_ms > TTL_MAX_MS {
                return Err(bad("ttl too large"));
            }
            RequestBody::Key(KeyOpWire::Set { key: k, value: v, ttl_ms, flags })
        }
        Opcode::Del => RequestBody::Key(KeyOpWire::Del(key(f)?)),
        Opcode::Exists => RequestBody::Key(KeyOpWire::Exists(key(f)?)),
        Opcode::Expire => {
            let (key, ttl_ms) = (key(f)?, u64_field(f)?);
            if ttl_ms > TTL_MAX_MS {
                return Err(bad("ttl too large"));
            }
            RequestBody::Key(KeyOpWire::Expire { key, ttl_ms })
        }
        Opcode::Ttl => RequestBody::Key(KeyOpWire::Ttl(key(f)?)),
        Opcode::MGet => {
            let n = count(f)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(key(f)?);
            }
            RequestBody::MGet(keys)
        }
        Opcode::MSet => {
            let n = count(f)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                pairs.push((key(f)?, value(f)?));
            }
            RequestBody::MSet(pairs)
        }
        Opcode::Ping => RequestBody::Ping,
        Opcode::Stats => RequestBody::Stats,
        Opcode::Auth => RequestBody::Auth(get_bytes(f).ok_or(bad("truncated secret"))?),
        Opcode::Ring => RequestBody::Ring,
    })
}

fn get_bytes(f: &mut Bytes) -> Option<Bytes> {
    if f.remaining() < 4 {
        return None;
    }
    let n = f.get_u32_le() as usize;
    (f.remaining() >= n).then(|| f.split_to(n))
}

/// Appends a `u32 length` then the bytes.
pub fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

/// Writes a response frame whose body `body` writes.
pub fn put_response(out: &mut BytesMut, status: Status, id: u32, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(status as u8);
    out.put_u8(0);
    out.put_u32_le(id);
    body(out);
    let len = out.len() - start - LEN_BYTES;
    if len > RESPONSE_MAX_BYTES {
        // An MGET of many large values: its length would not fit the
        // prefix (past 4 GiB it was cut to 32 bits, and the stream with
        // it), and no client would take it.
        out.truncate(start);
        return put_error(out, id, &format!("reply of {len} bytes exceeds the limit of {RESPONSE_MAX_BYTES}"));
    }
    finish_frame(out, start);
}

pub fn put_error(out: &mut BytesMut, id: u32, message: &str) {
    put_response(out, Status::Error, id, |o| o.put_slice(message.as_bytes()));
}

/// Encodes a GET reply straight from a borrowed value.
pub fn put_value(out: &mut BytesMut, id: u32, value: Option<&[u8]>) {
    match value {
        Some(v) => put_response(out, Status::Ok, id, |o| o.put_slice(v)),
        None => put_response(out, Status::NotFound, id, |_| {}),
    }
}

/// Encodes the reply to a single-key operation.
pub fn put_result(out: &mut BytesMut, id: u32, result: &OpResult) {
    match result {
        OpResult::Value(v) => put_value(out, id, v.as_deref()),
        OpResult::Set { written, old } => {
            let status = if *written { Status::Ok } else { Status::NotStored };
            put_response(out, status, id, |o| {
                if let Some(old) = old {
                    o.put_u8(1);
                    put_bytes(o, old);
                }
            })
        }
        OpResult::Existed(true) | OpResult::Done => put_response(out, Status::Ok, id, |_| {}),
        OpResult::Existed(false) => put_response(out, Status::NotFound, id, |_| {}),
        OpResult::Ttl(ttl) => put_response(out, Status::Ok, id, |o| {
            o.put_i64_le(match ttl {
                Ttl::Missing => -2,
                Ttl::Persistent => -1,
                Ttl::Remaining { ms } => i64::try_from(*ms).unwrap_or(i64::MAX),
            })
        }),
        OpResult::Stats(_) => put_error(out, id, "stats are not a key result"),
        // RESP-only operations; the native protocol never asks for them.
        OpResult::Int(_) | OpResult::Keys { .. } => put_error(out, id, "not a native result"),
        OpResult::Error(message) => put_error(out, id, message),
    }
}

/// Starts a request frame; `finish_frame` fills in its length.
fn start_frame(out: &mut BytesMut, op: Opcode, flags: u8, id: u32) -> usize {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(op as u8);
    out.put_u8(flags);
    out.put_u32_le(id);
    start
}

fn finish_frame(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - LEN_BYTES) as u32;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_le_bytes());
}

/// Encodes a GET without building a [`RequestBody`] (the load generator's
/// hot path).
pub fn put_get(out: &mut BytesMut, id: u32, key: &[u8]) {
    let start = start_frame(out, Opcode::Get, 0, id);
    put_bytes(out, key);
    finish_frame(out, start);
}

/// Encodes a SET without building a [`RequestBody`].
pub fn put_set(out: &mut BytesMut, id: u32, key: &[u8], value: &[u8], ttl_ms: u64, flags: u8) {
    let start = start_frame(out, Opcode::Set, flags, id);
    put_bytes(out, key);
    put_bytes(out, value);
    out.put_u64_le(ttl_ms);
    finish_frame(out, start);
}

/// Encodes a request (used by the client and by tests).
pub fn put_request(out: &mut BytesMut, id: u32, body: &RequestBody) {
    match body {
        RequestBody::Key(KeyOpWire::Get(k)) => return put_get(out, id, k),
        RequestBody::Key(KeyOpWire::Set { key, value, ttl_ms, flags }) => {
            return put_set(out, id, key, value, *ttl_ms, *flags)
        }
        _ => {}
    }
    let start = start_frame(out, body.opcode(), 0, id);
    match body {
        RequestBody::Key(KeyOpWire::Del(k) | KeyOpWire::Exists(k) | KeyOpWire::Ttl(k)) => put_bytes(out, k),
        RequestBody::Key(KeyOpWire::Expire { key, ttl_ms }) => {
            put_bytes(out, key);
            out.put_u64_le(*ttl_ms);
        }
        RequestBody::MGet(keys) => {
            out.put_u32_le(keys.len() as u32);
            keys.iter().for_each(|k| put_bytes(out, k));
        }
        RequestBody::MSet(pairs) => {
            out.put_u32_le(pairs.len() as u32);
            for (k, v) in pairs {
                put_bytes(out, k);
                put_bytes(out, v);
            }
        }
        RequestBody::Auth(secret) => put_bytes(out, secret),
        RequestBody::Key(KeyOpWire::Get(_) | KeyOpWire::Set { .. })
        | RequestBody::Ping
        | RequestBody::Stats
        | RequestBody::Ring => {}
    }
    finish_frame(out, start);
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u32,
    pub status: Status,
    pub body: Bytes,
}

/// Decodes one response (client side).
pub fn decode_response(buf: &mut BytesMut, frame_max_bytes: usize) -> Result<Option<Response>, FrameError> {
    let Some(len_bytes) = buf.get(..LEN_BYTES) else { return Ok(None) };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > frame_max_bytes {
        return Err(FrameError::TooLarge { len, limit: frame_max_bytes });
    }
    if len < HEADER_BYTES {
        return Err(FrameError::TooShort { len });
    }
    if buf.len() < LEN_BYTES + len {
        crate::limits::reserve_ahead(buf, LEN_BYTES + len);
        return Ok(None);
    }
    buf.advance(LEN_BYTES);
    let mut frame = buf.split_to(len).freeze();
    let status_byte = frame.get_u8();
    let _flags = frame.get_u8();
    let id = frame.get_u32_le();
    let status = Status::from_u8(status_byte).ok_or(FrameError::UnknownOpcode(status_byte))?;
    Ok(Some(Response { id, status, body: frame }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(body: RequestBody) {
        let mut buf = BytesMut::new();
        put_request(&mut buf, 42, &body);
        // Every proper prefix is incomplete, never an error.
        for cut in 0..buf.len() {
            let mut partial = BytesMut::from(&buf[..cut]);
            assert_eq!(decode_request(&mut partial, &Limits::default()), Ok(None), "cut {cut}");
        }
        let decoded = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(decoded, Request { id: 42, body });
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_round_trip() {
        let k = Bytes::from_static(b"key");
        roundtrip(RequestBody::Key(KeyOpWire::Get(k.clone())));
        roundtrip(RequestBody::Key(KeyOpWire::Set {
            key: k.clone(),
            value: Bytes::from_static(b"v"),
            ttl_ms: 5,
            flags: set_flags::NX | set_flags::GET,
        }));
        roundtrip(RequestBody::MGet(vec![k.clone(), Bytes::new()]));
        roundtrip(RequestBody::MSet(vec![(k.clone(), Bytes::from_static(b"1"))]));
        roundtrip(RequestBody::Ping);
        roundtrip(RequestBody::Auth(Bytes::from_static(b"secret")));
    }

    /// What the short way makes of a frame, as the general way would
    /// have it: `Some` only for a plain GET or SET.
    fn as_general(buf: &[u8], g: &GetSet) -> Request {
        let body = if g.set {
            KeyOpWire::Set {
                key: Bytes::copy_from_slice(&buf[g.key.clone()]),
                value: Bytes::copy_from_slice(&buf[g.value.clone()]),
                ttl_ms: 0,
                flags: 0,
            }
        } else {
            KeyOpWire::Get(Bytes::copy_from_slice(&buf[g.key.clone()]))
        };
        Request { id: g.id, body: RequestBody::Key(body) }
    }

    /// The short way agrees with the general way on every frame it takes,
    /// including every one-byte change of valid GET and SET frames and
    /// every cut, and takes the plain ones.
    #[test]
    fn the_short_way_agrees_with_decode_request() {
        let limits = Limits { key_max_bytes: 300, value_max_bytes: 300, ..Limits::default() };
        let mut frames = Vec::new();
        for (key, value) in [(&b"k"[..], &b"v"[..]), (b"", b""), (&[7u8; 300][..], &[9u8; 200][..])] {
            let mut f = BytesMut::new();
            put_get(&mut f, 3, key);
            frames.push((f, true));
            let mut f = BytesMut::new();
            put_set(&mut f, 4, key, value, 0, 0);
            frames.push((f, true));
            let mut f = BytesMut::new();
            put_set(&mut f, 5, key, value, 9, 0);
            frames.push((f, false));
            let mut f = BytesMut::new();
            put_set(&mut f, 6, key, value, 0, set_flags::NX);
            frames.push((f, false));
        }
        let agree = |bytes: &[u8]| {
            let Some(g) = decode_get_set(bytes, &limits) else { return };
            assert_eq!(g.end, u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize + LEN_BYTES);
            let mut general = BytesMut::from(bytes);
            let decoded = decode_request(&mut general, &limits).expect("valid").expect("complete");
            assert_eq!(decoded, as_general(bytes, &g), "{bytes:?}");
            assert_eq!(general.len(), bytes.len() - g.end, "the same frame length");
        };
        for (frame, plain) in &frames {
            assert_eq!(decode_get_set(frame, &limits).is_some(), *plain, "{frame:?}");
            for cut in 0..frame.len() {
                assert_eq!(decode_get_set(&frame[..cut], &limits), None, "cut at {cut}");
            }
            for at in 0..frame.len() {
                for bits in [0x01u8, 0x80, 0xff] {
                    let mut changed = frame.to_vec();
                    changed[at] ^= bits;
                    agree(&changed);
                }
            }
        }
        // A key or value over the limit is the general way's to refuse.
        let mut f = BytesMut::new();
        put_get(&mut f, 1, &[0u8; 301]);
        assert_eq!(decode_get_set(&f, &limits), None);
    }

    /// The example in docs/protocol.md, byte for byte.
    #[test]
    fn documented_example_bytes() {
        let mut out = BytesMut::new();
        put_set(&mut out, 7, b"k", b"v", 0, 0);
        put_get(&mut out, 8, b"k");
        let expected: Vec<u8> = [
            "18 00 00 00 02 00 07 00 00 00 01 00 00 00 6b 01 00 00 00 76 00 00 00 00 00 00 00 00",
            "0b 00 00 00 01 00 08 00 00 00 01 00 00 00 6b",
        ]
        .join(" ")
        .split(' ')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
        assert_eq!(&out[..], &expected[..]);
        let mut replies = BytesMut::new();
        put_response(&mut replies, Status::Ok, 7, |_| {});
        put_value(&mut replies, 8, Some(b"v"));
        assert_eq!(&replies[..], &[6, 0, 0, 0, 0, 0, 7, 0, 0, 0, 7, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0x76]);
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating() {
        let limits = Limits::default();
        let mut huge = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(matches!(decode_request(&mut huge, &limits), Err((_, FrameError::TooLarge { .. }))));
        let mut zero = BytesMut::from(&0u32.to_le_bytes()[..]);
        assert!(matches!(decode_request(&mut zero, &limits), Err((_, FrameError::TooShort { len: 0 }))));
        let mut unknown = BytesMut::new();
        unknown.put_u32_le(6);
        unknown.put_u8(0xee);
        unknown.put_u8(0);
        unknown.put_u32_le(9);
        assert_eq!(decode_request(&mut unknown, &limits), Err((9, FrameError::UnknownOpcode(0xee))));
        // An MGET claiming 2^30 keys in a 10-byte body.
        let mut mget = BytesMut::new();
        mget.put_u32_le(10);
        mget.put_u8(Opcode::MGet as u8);
        mget.put_u8(0);
        mget.put_u32_le(1);
        mget.put_u32_le(1 << 19);
        assert!(matches!(decode_request(&mut mget, &limits), Err((1, FrameError::Malformed { .. }))));
    }
}
