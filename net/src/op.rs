//! Operations a shard executes on its store, whichever protocol asked.
//! Multi-key requests are split into one operation per key by the
//! connection, routed to the owning shards, and their results combined.
//!
//! Every read-modify-write command (INCRBY, APPEND, SETRANGE, GETDEL,
//! GETEX) is one [`KeyOp`]: it runs start to finish inside [`execute`] on
//! the owning shard's thread, so no other operation on that key can come
//! between its read and its write.

use bytes::Bytes;
use engine::{Condition, SetExpiry, SetOptions, Store, Ttl};

/// Error texts (without Redis's `ERR ` prefix, which the RESP renderer
/// adds to every store-side error).
pub const NOT_INTEGER: &str = "value is not an integer or out of range";
pub const OVERFLOW: &str = "increment or decrement would overflow";
pub const STRING_TOO_LONG: &str = "string exceeds maximum allowed size (proto-max-bulk-len)";

/// One operation on one key of one shard.
#[derive(Debug, Clone)]
pub enum KeyOp {
    Get {
        key: Bytes,
    },
    Set {
        key: Bytes,
        value: Bytes,
        expiry: SetExpiry,
        condition: Condition,
        return_old: bool,
    },
    Del {
        key: Bytes,
    },
    Exists {
        key: Bytes,
    },
    /// `None` removes the expiry (PERSIST).
    ExpireAt {
        key: Bytes,
        at_ms: Option<u64>,
        /// EXPIRE's NX/XX/GT/LT.
        condition: ExpireCondition,
    },
    Ttl {
        key: Bytes,
    },
    /// PERSIST as Redis has it: true only when a key with an expiry lost it
    /// (`ExpireAt { at_ms: None }` is true for any existing key).
    Persist {
        key: Bytes,
    },
    /// GETDEL: the value, and the key is gone.
    GetDel {
        key: Bytes,
    },
    /// GETEX: the value, and its expiry changed as asked.
    GetEx {
        key: Bytes,
        expiry: GetExExpiry,
    },
    /// INCR, DECR, INCRBY, DECRBY: the value as a decimal i64 plus `delta`;
    /// a missing key counts as 0; the expiry is kept.
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    /// APPEND: creates the key when missing; the expiry is kept.
    Append {
        key: Bytes,
        value: Bytes,
    },
    StrLen {
        key: Bytes,
    },
    /// GETRANGE with Redis's index rules (negative counts from the end,
    /// both ends inclusive).
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    /// SETRANGE: overwrites from `offset`, padding with zero bytes.
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
}

/// What GETEX does to the expiry of a key that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExExpiry {
    Leave,
    Persist,
    At(u64),
    /// Redis checks the time only once it found the key: a missing key
    /// answers nil even when the time is bad. This carries the error text.
    Invalid(&'static str),
}

/// When EXPIRE and friends change a key's expiry (Redis 7's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCondition {
    #[default]
    Always,
    /// Only if the key has no expiry.
    Nx,
    /// Only if it has one.
    Xx,
    /// Only if the new expiry is later (no expiry counts as never).
    Gt,
    /// Only if the new expiry is earlier.
    Lt,
    /// XX and LT: only if it has one and the new one is earlier. (XX and
    /// GT is GT: no expiry is never earlier.)
    XxLt,
}

impl ExpireCondition {
    /// Whether a key whose expiry is `current` (`None`: never) gets one
    /// at `at_ms`.
    pub fn holds(self, current: Option<u64>, at_ms: u64) -> bool {
        match (self, current) {
            (ExpireCondition::Always, _) => true,
            (ExpireCondition::Nx, current) => current.is_none(),
            (ExpireCondition::Xx, current) => current.is_some(),
            (ExpireCondition::Gt, None) => false,
            (ExpireCondition::Gt, Some(c)) => at_ms > c,
            (ExpireCondition::Lt, None) => true,
            (ExpireCondition::Lt | ExpireCondition::XxLt, Some(c)) => at_ms < c,
            (ExpireCondition::XxLt, None) => false,
        }
    }
}

impl KeyOp {
    /// A plain GET (`value` is `None`) or a SET without options.
    pub fn get_or_set(key: Bytes, value: Option<Bytes>) -> KeyOp {
        match value {
            None => KeyOp::Get { key },
            Some(value) => {
                KeyOp::Set { key, value, expiry: SetExpiry::None, condition: Condition::Always, return_old: false }
            }
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            KeyOp::Get { key }
            | KeyOp::Set { key, .. }
            | KeyOp::Del { key }
            | KeyOp::Exists { key }
            | KeyOp::ExpireAt { key, .. }
            | KeyOp::Ttl { key }
            | KeyOp::Persist { key }
            | KeyOp::GetDel { key }
            | KeyOp::GetEx { key, .. }
            | KeyOp::IncrBy { key, .. }
            | KeyOp::Append { key, .. }
            | KeyOp::StrLen { key }
            | KeyOp::GetRange { key, .. }
            | KeyOp::SetRange { key, .. } => key,
        }
    }

    pub fn is_write(&self) -> bool {
        match self {
            KeyOp::Set { .. }
            | KeyOp::Del { .. }
            | KeyOp::ExpireAt { .. }
            | KeyOp::Persist { .. }
            | KeyOp::GetDel { .. }
            | KeyOp::IncrBy { .. }
            | KeyOp::Append { .. }
            | KeyOp::SetRange { .. } => true,
            KeyOp::GetEx { expiry, .. } => matches!(expiry, GetExExpiry::Persist | GetExExpiry::At(_)),
            KeyOp::Get { .. }
            | KeyOp::Exists { .. }
            | KeyOp::Ttl { .. }
            | KeyOp::StrLen { .. }
            | KeyOp::GetRange { .. } => false,
        }
    }
}

/// Operations on a whole shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOp {
    Stats,
    FlushAll,
    /// One SCAN step on this shard: about `count` index entries from the
    /// engine cursor `cursor`.
    Scan {
        cursor: u64,
        count: usize,
    },
    /// Every live key of the shard (KEYS; the pattern is applied by the
    /// connection, so that this op stays `Copy`).
    Keys,
}

/// What an operation gave.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    Value(Option<Bytes>),
    Set {
        written: bool,
        old: Option<Bytes>,
    },
    /// DEL, EXISTS, EXPIRE: whether the key existed.
    Existed(bool),
    Ttl(Ttl),
    Stats(Box<engine::Stats>),
    /// INCRBY's new value, APPEND's and SETRANGE's new length, STRLEN.
    Int(i64),
    /// SCAN and KEYS: keys, and the engine cursor to continue from (0:
    /// this shard is done).
    Keys {
        keys: Vec<Bytes>,
        cursor: u64,
    },
    Done,
    /// The store refused (poisoned, too large, out of memory), or the
    /// command's own error (not an integer, overflow).
    Error(String),
}

/// Parses an integer exactly as Redis's `string2ll` does: no sign but
/// `-`, no leading zeros, no spaces, at most 20 bytes.
pub fn parse_redis_i64(b: &[u8]) -> Option<i64> {
    match b {
        [] => None,
        [b'0'] => Some(0),
        _ if b.len() > 20 => None,
        [b'-', rest @ ..] => match rest.first() {
            Some(b'1'..=b'9') => rest.iter().try_fold(0i64, |n, &d| {
                d.is_ascii_digit().then_some(())?;
                n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))
            }),
            _ => None,
        },
        [b'1'..=b'9', ..] => b.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then_some(())?;
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        }),
        _ => None,
    }
}

/// Runs one key operation.
pub fn execute(store: &mut Store, op: &KeyOp) -> OpResult {
    execute_hashed(store, op, None)
}

/// Most bytes of values one request's reads gather (an MGET), over all
/// the shards it reaches: past it the request is answered with an error.
/// An MGET naming one 16 MiB key a thousand times copied 16 GB into its
/// reply.
pub const REPLY_VALUES_MAX_BYTES: usize = 512 << 20;

/// The share of [`REPLY_VALUES_MAX_BYTES`] for each of a request's `parts`
/// (the shards its keys fall on). With the whole budget on every shard, an
/// MGET over 16 shards could gather 8 GiB.
pub fn part_budget(parts: usize) -> usize {
    REPLY_VALUES_MAX_BYTES / parts.max(1)
}

/// The operations of one multi-key request that fall on one shard, in
/// order, within `values_max_bytes` of values read (`part_budget`): past it
/// the first result is an error (which the reply reports) and the reads
/// stop.
pub fn execute_all(store: &mut Store, ops: &[KeyOp], values_max_bytes: usize) -> Vec<OpResult> {
    let mut gathered = 0usize;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = execute(store, op);
        if let OpResult::Value(Some(v)) = &result {
            gathered += v.len();
            if gathered > values_max_bytes {
                let mut refused = vec![OpResult::Value(None); ops.len()];
                refused[0] = OpResult::Error(format!("reply larger than {values_max_bytes} bytes"));
                return refused;
            }
        }
        results.push(result);
    }
    results
}

/// `execute`, with the key's index hash when the caller has it (GET and
/// SET then hash nothing).
pub fn execute_hashed(store: &mut Store, op: &KeyOp, hash: Option<engine::KeyHash>) -> OpResult {
    let result = match op {
        KeyOp::Get { key } => return execute_get_set(store, key, None, hash),
        KeyOp::Exists { key } => return OpResult::Existed(store.exists(key)),
        KeyOp::Ttl { key } => return OpResult::Ttl(store.ttl(key)),
        KeyOp::StrLen { key } => return OpResult::Int(store.get(key).map_or(0, |v| v.len() as i64)),
        KeyOp::GetRange { key, start, end } => {
            let value = store.get(key).unwrap_or_default();
            return OpResult::Value(Some(Bytes::copy_from_slice(get_range(value, *start, *end))));
        }
        KeyOp::Set { key, value, expiry, condition, return_old } => {
            let opts = SetOptions { expiry: *expiry, condition: *condition, return_old: *return_old };
            let hash = hash.unwrap_or_else(|| store.hash_of(key));
            store.set_hashed(key, value, opts, hash).map(set_result)
        }
        KeyOp::Del { key } => store.delete(key).map(OpResult::Existed),
        KeyOp::ExpireAt { key, at_ms, condition: ExpireCondition::Always } => {
            store.expire_at(key, *at_ms).map(OpResult::Existed)
        }
        KeyOp::ExpireAt { key, at_ms, condition } => match store.expiry_of(key) {
            None => Ok(OpResult::Existed(false)),
            Some(current) if !at_ms.is_some_and(|at| condition.holds(current, at)) => Ok(OpResult::Existed(false)),
            Some(_) => store.expire_at(key, *at_ms).map(OpResult::Existed),
        },
        KeyOp::Persist { key } => match store.expiry_of(key) {
            Some(Some(_)) => store.expire_at(key, None).map(OpResult::Existed),
            Some(None) | None => Ok(OpResult::Existed(false)),
        },
        KeyOp::GetDel { key } => {
            let Some(value) = store.get(key).map(Bytes::copy_from_slice) else { return OpResult::Value(None) };
            store.delete(key).map(|_| OpResult::Value(Some(value)))
        }
        KeyOp::GetEx { key, expiry } => {
            let Some(value) = store.get(key).map(Bytes::copy_from_slice) else { return OpResult::Value(None) };
            let changed = match expiry {
                GetExExpiry::Leave => Ok(true),
                GetExExpiry::Invalid(err) => return OpResult::Error((*err).to_string()),
                GetExExpiry::Persist => store.expire_at(key, None),
                GetExExpiry::At(at) => store.expire_at(key, Some(*at)),
            };
            changed.map(|_| OpResult::Value(Some(value)))
        }
        KeyOp::IncrBy { key, delta } => {
            let (old, keep) = read_for_rewrite(store, key);
            let current = match old {
                None => 0,
                Some(v) => match parse_redis_i64(v) {
                    Some(n) => n,
                    None => return OpResult::Error(NOT_INTEGER.into()),
                },
            };
            let Some(new) = current.checked_add(*delta) else { return OpResult::Error(OVERFLOW.into()) };
            let text = itoa::Buffer::new().format(new).as_bytes().to_vec();
            store.set(key, &text, keep).map(|_| OpResult::Int(new))
        }
        KeyOp::Append { key, value } => {
            let (old, keep) = read_for_rewrite(store, key);
            let old = old.unwrap_or_default();
            let total = old.len().saturating_add(value.len());
            if total > store.value_len_max_bytes() {
                return OpResult::Error(STRING_TOO_LONG.into());
            }
            let mut new = Vec::with_capacity(total);
            new.extend_from_slice(old);
            new.extend_from_slice(value);
            store.set(key, &new, keep).map(|_| OpResult::Int(total as i64))
        }
        KeyOp::SetRange { key, offset, value } => {
            let (old, keep) = read_for_rewrite(store, key);
            if value.is_empty() {
                // Redis answers the current length and creates nothing.
                return OpResult::Int(old.map_or(0, |v| v.len() as i64));
            }
            let end = usize::try_from(*offset).ok().and_then(|o| o.checked_add(value.len()));
            let Some(end) = end.filter(|&e| e <= store.value_len_max_bytes()) else {
                return OpResult::Error(STRING_TOO_LONG.into());
            };
            let old = old.unwrap_or_default();
            let mut new = Vec::with_capacity(old.len().max(end));
            new.extend_from_slice(old);
            if new.len() < end {
                new.resize(end, 0);
            }
            new[end - value.len()..end].copy_from_slice(value);
            let len = new.len() as i64;
            store.set(key, &new, keep).map(|_| OpResult::Int(len))
        }
    };
    result.unwrap_or_else(|err| OpResult::Error(err.to_string()))
}

/// A value read for INCR, APPEND or SETRANGE, and the options that write
/// its new version with the expiry it was read with. Read once: with
/// `SetExpiry::Keep` the write looked the key up again, and when its own
/// eviction had just taken the key's segment (cache mode), or the clock
/// had passed its expiry in between, the new value lost its TTL.
fn read_for_rewrite<'s>(store: &'s Store, key: &[u8]) -> (Option<&'s [u8]>, SetOptions) {
    let (value, expires_at) = match store.peek_with_expiry(key) {
        Some((v, at)) => (Some(v), at),
        None => (None, None),
    };
    let expiry = expires_at.map_or(SetExpiry::None, SetExpiry::At);
    (value, SetOptions { expiry, condition: Condition::Always, return_old: false })
}

/// A plain GET (`value` is `None`) or a SET without options, of bytes
/// borrowed from a read buffer (`conn`'s cut requests): what
/// `execute_hashed` does for `KeyOp::Get` and such a `KeyOp::Set`.
pub fn execute_get_set(store: &mut Store, key: &[u8], value: Option<&[u8]>, hash: Option<engine::KeyHash>) -> OpResult {
    let hash = hash.unwrap_or_else(|| store.hash_of(key));
    match value {
        None => OpResult::Value(store.get_hashed(key, hash).map(Bytes::copy_from_slice)),
        Some(value) => store
            .set_hashed(key, value, SetOptions::default(), hash)
            .map_or_else(|err| OpResult::Error(err.to_string()), set_result),
    }
}

fn set_result(out: engine::SetOutcome) -> OpResult {
    OpResult::Set { written: out.written, old: out.old.map(Bytes::from) }
}

/// GETRANGE's slice, following Redis 7's `getrangeCommand` step by step.
pub fn get_range(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let start = if start < 0 { len.saturating_add(start) } else { start }.max(0);
    let end = if end < 0 { len.saturating_add(end) } else { end }.max(0).min(len - 1);
    if start > end || len == 0 {
        return &[];
    }
    &value[start as usize..=end as usize]
}

/// Runs one shard-wide operation.
pub fn execute_shard(store: &mut Store, op: ShardOp) -> OpResult {
    match op {
        ShardOp::Stats => OpResult::Stats(Box::new(store.stats())),
        ShardOp::FlushAll => match store.flush_all() {
            Ok(()) => OpResult::Done,
            Err(err) => OpResult::Error(err.to_string()),
        },
        ShardOp::Scan { cursor, count } => {
            let mut keys = Vec::new();
            let cursor = store.scan(cursor, count, |k| keys.push(Bytes::copy_from_slice(k)));
            OpResult::Keys { keys, cursor }
        }
        ShardOp::Keys => {
            let mut keys = Vec::new();
            // One pass with no limit: nothing changes the index meanwhile,
            // since this runs on the shard's thread start to finish.
            store.scan(0, usize::MAX, |k| keys.push(Bytes::copy_from_slice(k)));
            OpResult::Keys { keys, cursor: 0 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_string2ll() {
        assert_eq!(parse_redis_i64(b"0"), Some(0));
        assert_eq!(parse_redis_i64(b"-12"), Some(-12));
        assert_eq!(parse_redis_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_redis_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"+1", b"01", b"-0", b" 1", b"1 ", b"9223372036854775808", b"1.0", b"-", b"abc"] {
            assert_eq!(parse_redis_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn get_range_follows_redis() {
        let v = b"This is a string";
        assert_eq!(get_range(v, 0, 3), b"This");
        assert_eq!(get_range(v, -3, -1), b"ing");
        assert_eq!(get_range(v, 0, -1), v);
        assert_eq!(get_range(v, 10, 100), b"string");
        assert_eq!(get_range(v, -1, -5), b"");
        assert_eq!(get_range(v, 5, 3), b"");
        assert_eq!(get_range(b"", 0, -1), b"");
        assert_eq!(get_range(v, -100, 2), b"Thi");
        assert_eq!(get_range(v, i64::MIN, i64::MAX), v);
    }

    /// The reads of one request stop with an error once their values pass
    /// the budget; below it every value is there.
    #[test]
    fn a_request_reading_more_than_its_budget_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = engine::Config { fsync: engine::FsyncPolicy::Never, ..engine::Config::default() };
        let (mut store, _) = Store::open(dir.path(), config).unwrap();
        store.set(b"big", &[7u8; 1000], SetOptions::default()).unwrap();
        let gets = |n| vec![KeyOp::Get { key: Bytes::from_static(b"big") }; n];
        let fits = execute_all(&mut store, &gets(10), 10_000);
        assert!(fits.iter().all(|r| matches!(r, OpResult::Value(Some(v)) if v.len() == 1000)), "{fits:?}");
        let refused = execute_all(&mut store, &gets(11), 10_000);
        assert_eq!(refused.len(), 11);
        assert!(matches!(&refused[0], OpResult::Error(e) if e.contains("reply larger")), "{:?}", refused[0]);
    }

    /// A request's parts share one budget: over many shards together they
    /// gather no more than one request may.
    #[test]
    fn the_parts_of_a_request_share_its_budget() {
        assert_eq!(part_budget(0), REPLY_VALUES_MAX_BYTES);
        assert_eq!(part_budget(1), REPLY_VALUES_MAX_BYTES);
        for parts in 2..=256 {
            assert!(part_budget(parts) * parts <= REPLY_VALUES_MAX_BYTES, "{parts} parts");
            assert!(part_budget(parts) < REPLY_VALUES_MAX_BYTES);
        }
    }
}
