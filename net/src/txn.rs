//! MSET and MSETNX across shards, all or nothing, with no lock shared
//! between shards: a two-phase exchange through the shard inboxes.
//!
//! 1. **Prepare**, one owning shard at a time in shard order: the shard
//!    checks that its keys can be written (their sizes; for MSETNX, that
//!    they are absent) and not reserved, then *reserves* them and keeps
//!    their values. A prepare that meets a key reserved by another one
//!    waits (parked) until that one commits or aborts.
//! 2. **Commit** (every shard agreed) writes the kept values and releases
//!    the reservations; **Abort** only releases them.
//!
//! While a key is reserved, every other request that touches it, read or
//! write, is parked on its shard and runs right after the commit or abort,
//! in arrival order. So no one sees the new keys on one shard and not yet
//! on another, no write slips between the check and the write, and two
//! MSETs of the same keys never interleave (one's values on one shard and
//! the other's on another), as Redis's MSET never does.
//! Prepares go in shard order, so a chain of waiting transactions always
//! waits on higher shard indexes: no cycle, no deadlock.
//!
//! The normal request path pays one `is_empty` check: a shard with no
//! reservation executes local requests directly, as before; a shard with
//! some sends its own connections' requests through its own inbox, where
//! the parking happens.
//!
//! Keys owned by a single shard need no exchange: one `Apply` step checks
//! and writes in one go on the shard's thread, and a connection whose
//! shard owns them all and holds no reservation runs that step itself
//! (`apply`), in line with its other requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use engine::{Condition, SetExpiry, SetOptions};
use tokio::sync::oneshot;

use crate::op::{self, KeyOp, OpResult, ShardOp};
use crate::shard::{Envelope, Shard, Work};

/// A step of an MSET or MSETNX, executed by the owning shard.
#[derive(Debug)]
pub enum TxnStep {
    /// Reserve these keys for `txn` if all can be written (and, with
    /// `only_if_absent`, all are absent); answers `Existed(true)` when one
    /// exists, an error when one cannot be written (nothing reserved).
    Prepare { txn: u64, pairs: Vec<(Bytes, Bytes)>, only_if_absent: bool },
    /// Write what `txn` reserved here and release it.
    Commit { txn: u64 },
    /// Release what `txn` reserved here.
    Abort { txn: u64 },
    /// Keys of a single shard: check and write in one step.
    Apply { pairs: Vec<(Bytes, Bytes)>, only_if_absent: bool },
}

/// One shard's reservations and the requests waiting on them.
#[derive(Debug, Default)]
pub struct Reservations {
    /// Reserved key to the MSETNX holding it.
    held: HashMap<Bytes, u64>,
    /// What each prepared MSETNX will write here.
    values: HashMap<u64, Vec<(Bytes, Bytes)>>,
    /// Envelopes that touch a reserved key, in arrival order.
    parked: VecDeque<Envelope>,
    /// Numbers this shard's MSETNXs (the shard id is in the low bits).
    next_txn: u64,
}

/// Most envelopes parked on one shard; more means a coordinator is gone
/// for good, and the newest are refused rather than kept forever.
pub const PARKED_MAX: usize = 1 << 16;

impl Reservations {
    /// No reservation: requests may run directly.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `work` must wait for a reservation to end.
    fn blocks(&self, work: &Work) -> bool {
        if self.held.is_empty() {
            return false;
        }
        match work {
            Work::Keys(ops, _) => ops.iter().any(|o| self.held.contains_key(o.key())),
            Work::Shard(_) => false,
            Work::Txn(TxnStep::Prepare { txn, pairs, .. }) => {
                pairs.iter().any(|(k, _)| self.held.get(k).is_some_and(|holder| holder != txn))
            }
            Work::Txn(TxnStep::Apply { pairs, .. }) => pairs.iter().any(|(k, _)| self.held.contains_key(k)),
            Work::Txn(TxnStep::Commit { .. } | TxnStep::Abort { .. }) => false,
        }
    }

    fn release(&mut self, txn: u64) -> Option<Vec<(Bytes, Bytes)>> {
        self.held.retain(|_, holder| *holder != txn);
        self.values.remove(&txn)
    }
}

/// Runs (or parks) one envelope on `shard`'s thread; what ran goes into
/// `done` to be answered after the batch is durable. A commit or abort
/// runs the envelopes that waited on it.
pub fn run_envelope(
    shard: &Shard,
    envelope: Envelope,
    wrote: &mut bool,
    done: &mut Vec<(Vec<OpResult>, oneshot::Sender<Vec<OpResult>>)>,
) {
    let mut released = false;
    {
        let mut res = shard.reservations.borrow_mut();
        if res.blocks(&envelope.work) {
            if res.parked.len() >= PARKED_MAX {
                tracing::error!(shard = shard.id, "too many requests waiting on MSET reservations; refusing");
                let _ = envelope.reply.send(vec![OpResult::Error("MSET reservations stuck".into())]);
            } else {
                res.parked.push_back(envelope);
            }
            return;
        }
    }
    let results = match &envelope.work {
        Work::Keys(ops, budget) => {
            *wrote |= ops.iter().any(KeyOp::is_write);
            shard.with_store(|s| op::execute_all(s, ops, *budget))
        }
        Work::Shard(sop) => {
            *wrote |= *sop == ShardOp::FlushAll;
            vec![shard.with_store(|s| op::execute_shard(s, *sop))]
        }
        Work::Txn(step) => {
            let (result, wrote_here, released_here) = run_step(shard, step);
            *wrote |= wrote_here;
            released = released_here;
            vec![result]
        }
    };
    done.push((results, envelope.reply));
    if released {
        let parked = std::mem::take(&mut shard.reservations.borrow_mut().parked);
        for envelope in parked {
            run_envelope(shard, envelope, wrote, done);
        }
    }
}

/// Executes one MSET or MSETNX step: (result, wrote, released
/// reservations).
fn run_step(shard: &Shard, step: &TxnStep) -> (OpResult, bool, bool) {
    match step {
        TxnStep::Prepare { txn, pairs, only_if_absent } => {
            if let Some(err) = shard.with_store(|s| refuse_sizes(s, pairs)) {
                return (err, false, false);
            }
            let exists = *only_if_absent && shard.with_store(|s| pairs.iter().any(|(k, _)| s.exists(k)));
            if !exists {
                // The room the commit will need stays free until then.
                if let Err(e) = shard.with_store(|s| s.hold_room(record_bytes(pairs))) {
                    return (OpResult::Error(e.to_string()), false, false);
                }
                let mut res = shard.reservations.borrow_mut();
                for (k, _) in pairs {
                    res.held.insert(k.clone(), *txn);
                }
                res.values.insert(*txn, pairs.clone());
            }
            (OpResult::Existed(exists), false, false)
        }
        TxnStep::Commit { txn } => {
            let pairs = shard.reservations.borrow_mut().release(*txn).unwrap_or_default();
            // Checked at prepare, and the room held since; a store that
            // fails now (poisoned) is the one case that leaves a partial
            // write.
            let result = shard.with_store(|s| {
                s.release_room(record_bytes(&pairs));
                write_all(s, &pairs)
            });
            (result.map_or(OpResult::Done, OpResult::Error), !pairs.is_empty(), true)
        }
        TxnStep::Abort { txn } => {
            if let Some(pairs) = shard.reservations.borrow_mut().release(*txn) {
                shard.with_store(|s| s.release_room(record_bytes(&pairs)));
            }
            (OpResult::Done, false, true)
        }
        TxnStep::Apply { pairs, only_if_absent } => {
            let result = shard.with_store(|s| apply(s, pairs, *only_if_absent));
            let wrote = matches!(result, OpResult::Existed(false));
            (result, wrote, false)
        }
    }
}

/// Writes pairs that all belong to `store`, all or none (as far as the
/// store's own checks go): `Existed(false)` once written, `Existed(true)`
/// when `only_if_absent` and one exists, or the error that refused them.
/// The `Apply` step, and what a connection runs itself when its shard owns
/// every key and holds no reservation.
pub fn apply(store: &mut engine::Store, pairs: &[(Bytes, Bytes)], only_if_absent: bool) -> OpResult {
    if let Some(err) = refuse(store, pairs) {
        return err;
    }
    if only_if_absent && pairs.iter().any(|(k, _)| store.exists(k)) {
        return OpResult::Existed(true);
    }
    write_all(store, pairs).map_or(OpResult::Existed(false), OpResult::Error)
}

/// Sets every pair, stopping at the first error (returned as text).
fn write_all(store: &mut engine::Store, pairs: &[(Bytes, Bytes)]) -> Option<String> {
    let set = SetOptions { expiry: SetExpiry::None, condition: Condition::Always, return_old: false };
    pairs.iter().map(|(k, v)| store.set(k, v, set)).find_map(Result::err).map(|e| e.to_string())
}

/// Refuses up front what the store would refuse when the pairs are
/// written: a key or value too long, a poisoned store, and (over a store's
/// memory bound) the room for all of them.
fn refuse(store: &mut engine::Store, pairs: &[(Bytes, Bytes)]) -> Option<OpResult> {
    refuse_sizes(store, pairs)
        .or_else(|| store.reserve_room(record_bytes(pairs)).err().map(|e| OpResult::Error(e.to_string())))
}

/// `refuse` without the room, which a prepare holds instead.
fn refuse_sizes(store: &engine::Store, pairs: &[(Bytes, Bytes)]) -> Option<OpResult> {
    pairs.iter().find_map(|(k, v)| store.check_writable(k, v.len()).err()).map(|e| OpResult::Error(e.to_string()))
}

/// The log bytes the pairs' records take, as the engine lays them out.
fn record_bytes(pairs: &[(Bytes, Bytes)]) -> u64 {
    pairs
        .iter()
        .map(|(key, value)| {
            let record = engine::record::RecordSpec { key, value, expires_at_ms: None, tombstone: false };
            record.encoded_len() as u64
        })
        .sum()
}

/// Coordinates one MSET (`only_if_absent` false) or MSETNX from the
/// connection's shard and sends the result (`Existed(false)`: written,
/// `Existed(true)`: a key existed, or an error) on `reply`. Runs as its own
/// task so the connection only awaits `reply`.
pub async fn mset(
    shard: Rc<Shard>,
    pairs: Vec<(Bytes, Bytes)>,
    only_if_absent: bool,
    reply: oneshot::Sender<Vec<OpResult>>,
) {
    let mut groups: BTreeMap<usize, Vec<(Bytes, Bytes)>> = BTreeMap::new();
    for (k, v) in pairs {
        groups.entry(shard.shared.shard_of(&k)).or_default().push((k, v));
    }
    let mailboxes = &shard.shared.mailboxes;
    let ask = |owner: usize, step: TxnStep| {
        let rx = mailboxes[owner].send(Work::Txn(step));
        async move { rx.await.ok().and_then(|mut r| r.pop()).unwrap_or_else(|| OpResult::Error("shard unavailable".into())) }
    };
    if groups.len() == 1 {
        let (owner, pairs) = groups.into_iter().next().expect("one group");
        let _ = reply.send(vec![ask(owner, TxnStep::Apply { pairs, only_if_absent }).await]);
        return;
    }
    let txn = {
        let mut res = shard.reservations.borrow_mut();
        res.next_txn += 1;
        (res.next_txn << 10) | shard.id as u64
    };
    // Phase 1, in shard order (see the module doc for why).
    let mut prepared = Vec::new();
    let mut outcome = OpResult::Existed(false);
    for (owner, pairs) in groups {
        match ask(owner, TxnStep::Prepare { txn, pairs, only_if_absent }).await {
            OpResult::Existed(false) => prepared.push(owner),
            other => {
                outcome = other;
                break;
            }
        }
    }
    // Phase 2, on every prepared shard at once.
    let commit = outcome == OpResult::Existed(false);
    let mut answers = Vec::with_capacity(prepared.len());
    for owner in prepared {
        answers.push(ask(owner, if commit { TxnStep::Commit { txn } } else { TxnStep::Abort { txn } }));
    }
    for answer in answers {
        if let OpResult::Error(e) = answer.await {
            outcome = OpResult::Error(e);
        }
    }
    let _ = reply.send(vec![outcome]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Config, FsyncPolicy, Store};

    /// Near a store's memory bound, an MSET whose pairs do not all fit is
    /// refused whole (it wrote the first pairs, then failed).
    #[test]
    fn an_mset_at_the_bound_writes_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            segment_size_bytes: 8 << 20,
            fsync: FsyncPolicy::Never,
            memory_max_bytes: Some(64 << 20),
            ..Config::default()
        };
        let (mut store, _) = Store::open(dir.path(), config).unwrap();
        let big = Bytes::from(vec![b'b'; 2 << 20]);
        // Fill until a small write still fits but 2 MiB more do not.
        let mut n = 0u32;
        while store.reserve_room(big.len() as u64 + 64).is_ok() {
            store.set(format!("fill{n}").as_bytes(), &[b'f'; 4000], SetOptions::default()).unwrap();
            n += 1;
            assert!(n < 100_000, "the bound was never reached");
        }
        let pairs = vec![(Bytes::from("small"), Bytes::from("s")), (Bytes::from("big"), big)];
        let refused = apply(&mut store, &pairs, false);
        assert!(matches!(&refused, OpResult::Error(e) if e.contains("store is full")), "{refused:?}");
        assert_eq!(store.get(b"small"), None, "no pair of the refused MSET was written");
        assert_eq!(store.get(b"big"), None);
        // What fits is written.
        let fits = vec![(Bytes::from("small"), Bytes::from("s"))];
        assert_eq!(apply(&mut store, &fits, false), OpResult::Existed(false));
        assert_eq!(store.get(b"small"), Some(&b"s"[..]));
    }

    /// In cache mode an MSET larger than the bound is written pair by
    /// pair, each evicting what it needs, as Redis's LRU does (making room
    /// for all of it first emptied the cache, then failed).
    #[test]
    fn a_cache_takes_an_mset_larger_than_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let bound = 16 << 20;
        let config = Config {
            mode: engine::Mode::Cache,
            memory_max_bytes: Some(bound),
            segment_size_bytes: engine::segment_size_for_memory(bound),
            fsync: FsyncPolicy::Never,
            ..Config::default()
        };
        let (mut store, _) = Store::open(dir.path(), config).unwrap();
        let value = Bytes::from(vec![b'v'; 100 << 10]);
        let pairs: Vec<(Bytes, Bytes)> = (0..200).map(|i| (Bytes::from(format!("k{i}")), value.clone())).collect();
        assert_eq!(apply(&mut store, &pairs, false), OpResult::Existed(false));
        assert_eq!(store.get(b"k199").map(<[u8]>::len), Some(100 << 10), "the last pairs are there");
        assert!(store.memory_used_bytes() <= bound);
    }
}
