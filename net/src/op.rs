//! Operations a shard executes on its store, whichever protocol asked.
//! Multi-key requests are split into one operation per key by the
//! connection, routed to the owning shards, and their results combined.

use bytes::Bytes;
use engine::{Condition, SetExpiry, SetOptions, Store, Ttl};

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
    },
    Ttl {
        key: Bytes,
    },
}

impl KeyOp {
    pub fn key(&self) -> &Bytes {
        match self {
            KeyOp::Get { key }
            | KeyOp::Set { key, .. }
            | KeyOp::Del { key }
            | KeyOp::Exists { key }
            | KeyOp::ExpireAt { key, .. }
            | KeyOp::Ttl { key } => key,
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, KeyOp::Set { .. } | KeyOp::Del { .. } | KeyOp::ExpireAt { .. })
    }
}

/// Operations on a whole shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOp {
    Stats,
    FlushAll,
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
    Done,
    /// The store refused (poisoned, too large, out of memory).
    Error(String),
}

/// Runs one key operation.
pub fn execute(store: &mut Store, op: &KeyOp) -> OpResult {
    let result = match op {
        KeyOp::Get { key } => return OpResult::Value(store.get(key).map(Bytes::copy_from_slice)),
        KeyOp::Exists { key } => return OpResult::Existed(store.exists(key)),
        KeyOp::Ttl { key } => return OpResult::Ttl(store.ttl(key)),
        KeyOp::Set { key, value, expiry, condition, return_old } => store
            .set(key, value, SetOptions { expiry: *expiry, condition: *condition, return_old: *return_old })
            .map(|out| OpResult::Set { written: out.written, old: out.old.map(Bytes::from) }),
        KeyOp::Del { key } => store.delete(key).map(OpResult::Existed),
        KeyOp::ExpireAt { key, at_ms } => store.expire_at(key, *at_ms).map(OpResult::Existed),
    };
    result.unwrap_or_else(|err| OpResult::Error(err.to_string()))
}

/// Runs one shard-wide operation.
pub fn execute_shard(store: &mut Store, op: ShardOp) -> OpResult {
    match op {
        ShardOp::Stats => OpResult::Stats(Box::new(store.stats())),
        ShardOp::FlushAll => match store.flush_all() {
            Ok(()) => OpResult::Done,
            Err(err) => OpResult::Error(err.to_string()),
        },
    }
}
