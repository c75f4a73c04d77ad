//! The memory bound, eviction and expiry: cache mode holds its bound under
//! any write load and never serves a wrong, deleted or expired value; store
//! mode refuses writes at the bound and loses nothing; expired keys are
//! reclaimed without being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Clock, Config, Error, FsyncPolicy, Mode, SetExpiry, SetOptions, Store, Ttl};
use proptest::prelude::*;

const BOUND_BYTES: u64 = 2 << 20;

fn bounded(mode: Mode, clock: &Arc<AtomicU64>) -> Config {
    Config {
        mode,
        memory_max_bytes: Some(BOUND_BYTES),
        segment_size_bytes: engine::segment_size_for_memory(BOUND_BYTES),
        fsync: FsyncPolicy::Never,
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:010}").into_bytes()
}

fn value(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8).collect()
}

fn with_ttl(at: u64) -> SetOptions {
    SetOptions { expiry: SetExpiry::At(at), ..SetOptions::default() }
}

#[test]
fn cache_mode_holds_its_bound_under_ten_times_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Cache, &clock)).unwrap();
    let mut written = 0u64;
    let mut i = 0u64;
    // Value sizes from tiny to a quarter of a segment, some keys with
    // TTLs, some overwritten, ticks between batches.
    while written < 10 * BOUND_BYTES {
        let len = [8usize, 100, 1000, 7000][(i % 4) as usize];
        let k = if i.is_multiple_of(5) { i / 2 } else { i };
        let opts =
            if i.is_multiple_of(3) { with_ttl(clock.load(Ordering::Relaxed) + 500) } else { SetOptions::default() };
        store.set(&key(k), &value(k, len), opts).unwrap();
        written += len as u64;
        let used = store.memory_used_bytes();
        assert!(used <= BOUND_BYTES, "after {written} bytes: {used} used of {BOUND_BYTES}");
        if i.is_multiple_of(100) {
            store.tick().unwrap();
            clock.fetch_add(7, Ordering::Relaxed);
            // Reading some keys marks them; they must still be right.
            for back in 1..20 {
                if let Some(v) = store.get(&key(i.saturating_sub(back))) {
                    let k = i.saturating_sub(back);
                    let len = [8usize, 100, 1000, 7000][(k % 4) as usize];
                    assert!(v == value(k, len) || v == value(k * 2, [8usize, 100, 1000, 7000][(k * 2 % 4) as usize]));
                }
            }
        }
        i += 1;
    }
    let stats = store.stats();
    assert!(stats.evicted_segments > 0 && stats.evicted_keys > 0, "{stats:?}");
    assert!(stats.memory_used_bytes > BOUND_BYTES / 2, "the bound is used, not just respected: {stats:?}");
}

#[test]
fn eviction_keeps_keys_that_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Cache, &clock)).unwrap();
    // 200 hot keys written first, then read all along while 10x the bound
    // of cold keys streams through.
    for h in 0..200 {
        store.set(&key(h), &value(h, 100), SetOptions::default()).unwrap();
    }
    for c in 0..(10 * BOUND_BYTES / 100) {
        store.set(&key(1_000_000 + c), &value(c, 100), SetOptions::default()).unwrap();
        if c % 50 == 0 {
            for h in 0..200 {
                assert_eq!(store.get(&key(h)), Some(&value(h, 100)[..]), "hot key {h} evicted after {c} cold writes");
            }
        }
    }
    assert!(store.stats().evicted_keys > 10_000);
}

/// Writes `key(0..)` with 500-byte values until the store refuses one
/// for want of memory: how many it took, and the refusal.
fn fill_until_refused(store: &mut Store) -> (u64, Error) {
    let mut acknowledged = 0u64;
    let refused = loop {
        match store.set(&key(acknowledged), &value(acknowledged, 500), SetOptions::default()) {
            Ok(_) => acknowledged += 1,
            Err(err) => break err,
        }
        assert!(acknowledged < 10 * BOUND_BYTES / 500, "never refused");
    };
    assert!(matches!(refused, Error::OutOfMemory { .. }), "{refused}");
    (acknowledged, refused)
}

#[test]
fn store_mode_refuses_writes_at_the_bound_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Store, &clock)).unwrap();
    let (acknowledged, refused) = fill_until_refused(&mut store);
    assert!(refused.to_string().contains("store is full"), "{refused}");
    assert!(store.memory_used_bytes() <= BOUND_BYTES);
    for i in 0..acknowledged {
        assert_eq!(store.get(&key(i)), Some(&value(i, 500)[..]), "key {i}");
    }
    // A later expiry is a new copy of the record: refused like a SET, again
    // and again, without the log growing. One in the past is a delete and
    // goes through.
    let used = store.memory_used_bytes();
    let now = clock.load(Ordering::Relaxed);
    for n in 0..1000 {
        let later = store.expire_at(&key(0), Some(now + 10_000 + n));
        assert!(matches!(later, Err(Error::OutOfMemory { .. })), "{later:?}");
    }
    assert!(matches!(store.expire_at(&key(0), None), Ok(true)), "no expiry to remove: unchanged");
    assert!(store.memory_used_bytes() <= used + 4096, "{} -> {}", used, store.memory_used_bytes());
    assert_eq!(store.get(&key(0)), Some(&value(0, 500)[..]));
    assert!(store.expire_at(&key(1), Some(now - 1)).unwrap());
    assert_eq!(store.get(&key(1)), None);
    // Deletes still work at the bound, and once compaction frees their
    // space, writes do too.
    for i in (0..acknowledged / 2).filter(|&i| i != 1) {
        assert!(store.delete(&key(i)).unwrap());
    }
    for _ in 0..10_000 {
        if !store.tick().unwrap() {
            break;
        }
    }
    store.set(&key(u64::MAX), b"fits again", SetOptions::default()).unwrap();
    for i in acknowledged / 2..acknowledged {
        assert_eq!(store.get(&key(i)), Some(&value(i, 500)[..]), "key {i}");
    }
    assert!(store.stats().evicted_keys == 0);
}

#[test]
fn expired_keys_are_reclaimed_without_reads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let config = Config { segment_size_bytes: 64 << 10, ..bounded(Mode::Store, &clock) };
    let config = Config { memory_max_bytes: None, ..config };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let n = 5000;
    let now = clock.load(Ordering::Relaxed);
    for i in 0..n {
        store.set(&key(i), &value(i, 200), with_ttl(now + 100 + i % 50)).unwrap();
    }
    store.set(b"persistent", b"stays", SetOptions::default()).unwrap();
    let before = store.stats();
    assert_eq!(before.keys, n + 1);
    clock.fetch_add(150, Ordering::Relaxed);
    // Only ticks: nothing reads the expired keys.
    for _ in 0..10_000 {
        store.tick().unwrap();
        if store.stats().keys == 1 && store.stats().segments <= 2 {
            break;
        }
    }
    let after = store.stats();
    assert_eq!(after.keys, 1, "{after:?}");
    assert_eq!(after.expired_reclaimed, n);
    assert!(after.memory_used_bytes < before.memory_used_bytes / 4, "before {before:?}\nafter {after:?}");
    assert_eq!(after.hits + after.misses, 0, "nothing was read");
    assert_eq!(store.get(b"persistent"), Some(&b"stays"[..]));
}

/// Room held for writes to come (an MSET across shards between its
/// prepare and its commit) stays free: other writes are refused before
/// they take it, and the held writes fit once it is released.
#[test]
fn room_held_for_writes_to_come_stays_free() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Store, &clock)).unwrap();
    let held = 256 << 10;
    store.hold_room(held).unwrap();
    let (n, _) = fill_until_refused(&mut store);
    store.release_room(held);
    // What was held: 200 KiB of records, with room to spare for headers.
    for i in 0..200u64 {
        store.set(format!("held:{i}").as_bytes(), &value(i, 1000), SetOptions::default()).unwrap();
    }
    for i in 0..n {
        assert_eq!(store.get(&key(i)), Some(&value(i, 500)[..]), "key {i}");
    }
}

/// A clock that steps back does not hold up the reclaiming of keys that
/// expire after the step: a segment swept just before it was not swept
/// again until the clock caught up with the last sweep.
#[test]
fn a_clock_step_back_does_not_hold_up_reclaiming() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000_000));
    let config = Config { memory_max_bytes: None, ..bounded(Mode::Store, &clock) };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let reclaim = |store: &mut Store, first: u64, expected: u64| {
        let now = clock.load(Ordering::Relaxed);
        for i in first..first + 100 {
            store.set(&key(i), &value(i, 100), with_ttl(now + 100)).unwrap();
        }
        clock.store(now + 200, Ordering::Relaxed);
        for _ in 0..1000 {
            store.tick().unwrap();
            if store.stats().expired_reclaimed == expected {
                break;
            }
        }
        assert_eq!(store.stats().expired_reclaimed, expected, "{:?}", store.stats());
    };
    reclaim(&mut store, 0, 100);
    // An hour back.
    clock.fetch_sub(3_600_000, Ordering::Relaxed);
    reclaim(&mut store, 100, 200);
}

#[test]
fn ttls_have_millisecond_precision() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Cache, &clock)).unwrap();
    let now = clock.load(Ordering::Relaxed);
    store.set(b"k", b"v", with_ttl(now + 50)).unwrap();
    clock.store(now + 49, Ordering::Relaxed);
    assert_eq!(store.ttl(b"k"), Ttl::Remaining { ms: 1 });
    assert_eq!(store.get(b"k"), Some(&b"v"[..]));
    clock.store(now + 50, Ordering::Relaxed);
    assert_eq!(store.get(b"k"), None);
    assert_eq!(store.ttl(b"k"), Ttl::Missing);
}

#[derive(Debug, Clone)]
enum Op {
    Set { key: u8, len: u16, ttl_ms: Option<u16> },
    Delete { key: u8 },
    Get { key: u8 },
    Advance { ms: u16 },
    Tick,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<u8>(), 0u16..9000, proptest::option::weighted(0.2, 1u16..3000))
            .prop_map(|(key, len, ttl_ms)| Op::Set { key, len, ttl_ms }),
        2 => any::<u8>().prop_map(|key| Op::Delete { key }),
        6 => any::<u8>().prop_map(|key| Op::Get { key }),
        1 => (0u16..1000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Tick),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// A value and its expiry, as last written.
type Written = (Vec<u8>, Option<u64>);

/// A cache may forget a key, but whatever it serves is the last value
/// written, never a deleted, overwritten or expired one, before and after
/// crashes; and it never passes its bound.
/// Returns the keys evicted.
fn run_cache_model(ops: Vec<Op>) -> u64 {
    let mut evicted = 0;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let config = || Config {
        memory_max_bytes: Some(MODEL_BOUND_BYTES),
        segment_size_bytes: 64 << 10,
        ..bounded(Mode::Cache, &clock)
    };
    let mut store = Some(Store::open(dir.path(), config()).unwrap().0);
    // The last write of each key; None after a delete.
    let mut model: std::collections::HashMap<u8, Option<Written>> = Default::default();
    for (step, op) in ops.into_iter().enumerate() {
        let now = clock.load(Ordering::Relaxed);
        let s = store.as_mut().unwrap();
        match op.clone() {
            Op::Set { key: k, len, ttl_ms } => {
                let v = value(step as u64, len as usize);
                let at = ttl_ms.map(|t| now + u64::from(t));
                let opts = at.map_or(SetOptions::default(), with_ttl);
                s.set(&key(u64::from(k)), &v, opts).unwrap();
                model.insert(k, Some((v, at)));
            }
            Op::Delete { key: k } => {
                s.delete(&key(u64::from(k))).unwrap();
                model.insert(k, None);
            }
            // Reads mark keys, which changes what eviction keeps; the
            // check below reads every key anyway.
            Op::Get { key: k } => {
                s.get(&key(u64::from(k)));
            }
            Op::Tick => {
                s.tick().unwrap();
            }
            Op::Advance { ms } => {
                clock.fetch_add(u64::from(ms), Ordering::Relaxed);
            }
            Op::Reopen => {
                evicted += s.stats().evicted_keys;
                store.take().unwrap().close().unwrap();
                store = Some(Store::open(dir.path(), config()).unwrap().0);
            }
            Op::Crash => {
                evicted += s.stats().evicted_keys;
                drop(store.take());
                store = Some(Store::open(dir.path(), config()).unwrap().0);
            }
        }
        let s = store.as_mut().unwrap();
        assert!(s.memory_used_bytes() <= MODEL_BOUND_BYTES, "after {op:?}: {:?}", s.stats());
        let now = clock.load(Ordering::Relaxed);
        for (k, want) in &model {
            let got = s.get_entry(&key(u64::from(*k)));
            let Some(got) = got else { continue };
            match want {
                Some((v, at)) if at.is_none_or(|at| at > now) => {
                    assert_eq!(got.value, &v[..], "key {k}");
                    assert_eq!(got.expires_at_ms, *at, "key {k}");
                }
                _ => panic!("key {k} served {} bytes after it was deleted or expired", got.value.len()),
            }
        }
    }
    evicted + store.map_or(0, |s| s.stats().evicted_keys)
}

/// Eight segments of 64 KiB: the smallest bound they allow.
const MODEL_BOUND_BYTES: u64 = 512 << 10;

#[test]
fn long_cache_run_with_evictions_and_crashes() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ops = (0..3000u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 256) as u8;
            match i % 40 {
                5 => Op::Delete { key },
                10 => Op::Tick,
                15 if i % 600 == 15 => Op::Crash,
                20 if i % 600 == 20 => Op::Reopen,
                25 => Op::Advance { ms: (x % 400) as u16 },
                30..=34 => Op::Get { key },
                _ => Op::Set { key, len: (x % 5000) as u16, ttl_ms: (i % 9 == 0).then_some(300) },
            }
        })
        .collect();
    let evicted = run_cache_model(ops);
    assert!(evicted > 200, "evicted {evicted} keys");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn cache_serves_only_the_last_write(ops in proptest::collection::vec(op(), 1..600)) {
        run_cache_model(ops);
    }
}

/// Store mode under a memory bound, small keys (the index is a large part
/// of the memory), overwrites paced as the server paces them: compaction
/// must start before a write would be refused, so no write is, although
/// the live data is well under the bound.
#[test]
fn overwrites_under_a_bound_are_never_refused_while_garbage_can_go() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let (mut store, _) = Store::open(dir.path(), bounded(Mode::Store, &clock)).unwrap();
    let keys = 30_000u64;
    for round in 0..30u64 {
        for batch in 0..keys / 16 {
            for i in batch * 16..batch * 16 + 16 {
                let k = (i * 7919 + round) % keys;
                store.set(&key(k), &value(k, 8), SetOptions::default()).unwrap_or_else(|e| {
                    panic!("round {round}: {e}: {:?}", store.stats());
                });
            }
            store.compact_owed().unwrap();
        }
        store.tick().unwrap();
    }
    let stats = store.stats();
    assert!(stats.compactions > 0, "{stats:?}");
    assert!(stats.memory_used_bytes <= BOUND_BYTES, "{stats:?}");
}
