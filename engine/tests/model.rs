//! Model-based test: random operations against the store and a `BTreeMap`
//! model over a small key space (so operations collide), with clean
//! reopens, crashes (the store dropped without `close`), compaction and
//! clock jumps. After every step the store must answer exactly as the model.
//! The same runs over a log bounded to a few segments (`log_max_bytes`)
//! meet `LogFull`: a refused operation changes nothing, and opens, crashes,
//! FLUSHALL and compaction keep working at the bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Clock, Condition, Config, Error, FsyncPolicy, SetExpiry, SetOptions, Store, Ttl};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Set { key: u8, value_len: u16, ttl_ms: Option<u16>, condition: u8 },
    Delete { key: u8 },
    Expire { key: u8, ttl_ms: Option<u16> },
    Advance { ms: u16 },
    Compact,
    Reopen,
    Crash,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..24, 0u16..3000, proptest::option::weighted(0.3, 1u16..2000), 0u8..3)
            .prop_map(|(key, value_len, ttl_ms, condition)| Op::Set { key, value_len, ttl_ms, condition }),
        3 => (0u8..24).prop_map(|key| Op::Delete { key }),
        2 => (0u8..24, proptest::option::of(1u16..2000)).prop_map(|(key, ttl_ms)| Op::Expire { key, ttl_ms }),
        2 => (0u16..1500).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Flush),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Modeled {
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key:{k}").into_bytes()
}

fn value_of(k: u8, len: u16, step: usize) -> Vec<u8> {
    (0..len as usize).map(|i| (i + step + k as usize) as u8).collect()
}

/// Segments a bounded run's log may use, the fewest allowed: two for
/// writes, which the 24 keys' values (up to 72 KB live) and their garbage
/// often fill between compactions.
const BOUNDED_SEGMENTS: u64 = 5;

fn config(clock: &Arc<AtomicU64>, bounded: bool) -> Config {
    let segment_size_bytes = 64 << 10;
    Config {
        // Small segments so that rolls, sealing and compaction happen often.
        segment_size_bytes,
        value_len_max_bytes: 16 << 10,
        fsync: FsyncPolicy::Never,
        compaction_garbage_ratio_min: 0.2,
        clock: Clock::Manual(clock.clone()),
        log_max_bytes: if bounded { BOUNDED_SEGMENTS * segment_size_bytes } else { Config::default().log_max_bytes },
        ..Config::default()
    }
}

/// What a bounded run met.
#[derive(Debug, Default)]
struct Outcome {
    compactions: u64,
    refused: u64,
}

fn check(store: &Store, model: &BTreeMap<u8, Modeled>, now: u64) {
    for k in 0u8..24 {
        let live = model.get(&k).filter(|m| m.expires_at_ms.is_none_or(|at| at > now));
        let got = store.get_entry(&key_of(k));
        match (live, got) {
            (None, None) => {}
            (Some(m), Some(e)) => {
                assert_eq!(e.value, &m.value[..], "value of key {k}");
                assert_eq!(e.expires_at_ms, m.expires_at_ms, "expiry of key {k}");
                let ttl = store.ttl(&key_of(k));
                match m.expires_at_ms {
                    None => assert_eq!(ttl, Ttl::Persistent),
                    Some(at) => assert_eq!(ttl, Ttl::Remaining { ms: at - now }),
                }
            }
            (want, got) => panic!("key {k}: model {want:?}, store {got:?}"),
        }
        assert_eq!(store.exists(&key_of(k)), live.is_some());
    }
}

/// Runs the operations, over a bounded log if `bounded`; returns how many
/// segments compaction freed and how many operations the full log refused.
fn run(ops: Vec<Op>, bounded: bool) -> Outcome {
    let mut outcome = Outcome::default();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let mut store = Some(Store::open(dir.path(), config(&clock, bounded)).unwrap().0);
    let mut model: BTreeMap<u8, Modeled> = BTreeMap::new();
    // A refusal of a full log changes nothing; any other error fails.
    let mut refused = |err: Error| {
        assert!(bounded && matches!(err, Error::LogFull { .. }), "unexpected error: {err}");
        outcome.refused += 1;
    };
    for (step, op) in ops.into_iter().enumerate() {
        let now = clock.load(Ordering::Relaxed);
        let s = store.as_mut().unwrap();
        // Expired keys are gone from the model's point of view.
        model.retain(|_, m| m.expires_at_ms.is_none_or(|at| at > now));
        match op {
            Op::Set { key, value_len, ttl_ms, condition } => {
                let value = value_of(key, value_len, step);
                let condition = [Condition::Always, Condition::IfAbsent, Condition::IfPresent][condition as usize];
                let expiry = ttl_ms.map_or(SetExpiry::None, |t| SetExpiry::At(now + u64::from(t)));
                match s.set(&key_of(key), &value, SetOptions { expiry, condition, return_old: true }) {
                    Ok(out) => {
                        let exists = model.contains_key(&key);
                        let should = match condition {
                            Condition::Always => true,
                            Condition::IfAbsent => !exists,
                            Condition::IfPresent => exists,
                        };
                        assert_eq!(out.written, should, "condition {condition:?}");
                        assert_eq!(out.old.as_deref(), model.get(&key).map(|m| &m.value[..]));
                        if should {
                            let expires_at_ms = ttl_ms.map(|t| now + u64::from(t));
                            model.insert(key, Modeled { value, expires_at_ms });
                        }
                    }
                    Err(err) => refused(err),
                }
            }
            Op::Delete { key } => match s.delete(&key_of(key)) {
                Ok(existed) => assert_eq!(existed, model.remove(&key).is_some()),
                Err(err) => refused(err),
            },
            Op::Expire { key, ttl_ms } => {
                let at = ttl_ms.map(|t| now + u64::from(t));
                match s.expire_at(&key_of(key), at) {
                    Ok(existed) => {
                        assert_eq!(existed, model.contains_key(&key));
                        if let Some(m) = model.get_mut(&key) {
                            m.expires_at_ms = at;
                        }
                    }
                    Err(err) => refused(err),
                }
            }
            Op::Advance { ms } => {
                clock.fetch_add(u64::from(ms), Ordering::Relaxed);
            }
            // A bounded run compacts at one in four of its chances, so that
            // its log fills.
            Op::Compact if bounded && step % 4 != 0 => {}
            Op::Compact => {
                for _ in 0..64 {
                    match s.compact_step(16 << 10) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(err) => {
                            refused(err);
                            break;
                        }
                    }
                }
            }
            Op::Reopen => {
                outcome.compactions += s.stats().compactions;
                store.take().unwrap().close().unwrap();
                let (reopened, report) = Store::open(dir.path(), config(&clock, bounded)).unwrap();
                assert!(report.hint_used, "clean shutdown leaves a usable checkpoint: {report:?}");
                store = Some(reopened);
            }
            Op::Crash => {
                outcome.compactions += s.stats().compactions;
                drop(store.take());
                let (reopened, report) = Store::open(dir.path(), config(&clock, bounded)).unwrap();
                assert!(!report.hint_used);
                assert!(report.corrupt.is_empty() && report.torn.is_empty(), "{report:?}");
                store = Some(reopened);
            }
            Op::Flush => {
                s.flush_all().unwrap();
                model.clear();
            }
        }
        check(store.as_ref().unwrap(), &model, clock.load(Ordering::Relaxed));
    }
    outcome.compactions += store.map_or(0, |s| s.stats().compactions);
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, false);
    }

    #[test]
    fn a_bounded_store_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, true);
    }
}

/// A deterministic long run: enough writes to fill and compact many
/// segments, checked against the model at every step.
fn long_mixed_run() -> Vec<Op> {
    let mut ops = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..4000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = (x % 24) as u8;
        ops.push(match i % 50 {
            10 => Op::Compact,
            20 => Op::Delete { key },
            30 if i % 1000 == 30 => Op::Crash,
            40 if i % 1000 == 40 => Op::Reopen,
            45 => Op::Advance { ms: (x % 700) as u16 },
            _ => Op::Set { key, value_len: (x % 2500) as u16, ttl_ms: (i % 7 == 0).then_some(500), condition: 0 },
        });
    }
    ops
}

#[test]
fn long_mixed_run_with_many_compactions() {
    let outcome = run(long_mixed_run(), false);
    assert!(outcome.compactions >= 10, "compaction ran {} times", outcome.compactions);
}

#[test]
fn long_mixed_run_at_a_log_bound() {
    let outcome = run(long_mixed_run(), true);
    assert!(outcome.refused > 0, "the log never filled: {outcome:?}");
    assert!(outcome.compactions >= 10, "{outcome:?}");
}
