//! Cache-mode hit ratio against an exact LRU, over one zipf trace.
//!
//! The workload is a read-through cache: each request reads a key and, on a
//! miss, writes it. Key popularity follows zipf(`exponent`) over `keys`
//! keys. Both caches get the same memory: the store in cache mode gets a
//! bound of `memory_max_bytes`; the LRU holds as many keys as that memory
//! holds at store mode's memory per key (index and records, measured by
//! loading every key into an unbounded store). So the LRU is the exact
//! policy with no space lost to segments, headroom or garbage, and the
//! comparison charges the store for all of those.

use std::collections::HashMap;

use engine::{Config, FsyncPolicy, Mode, SetOptions, Store};

use crate::{fill_value, key, SplitMix64};

/// A zipf sampler over ranks `0..n` by inverse transform on the CDF.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The requests: key numbers (ranks scattered over the key numbers so that
/// hot keys are not neighbours).
pub fn trace(keys: usize, requests: usize, exponent: f64, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(keys, exponent);
    let mut rng = SplitMix64::new(seed);
    (0..requests).map(|_| (zipf.sample(&mut rng) as u64).wrapping_mul(0x9e37_79b9) % keys as u64).collect()
}

/// Hit ratio of an exact LRU holding `capacity` keys, over the requests
/// after the first `warmup`.
pub fn lru_hit_ratio(trace: &[u64], capacity: usize, warmup: usize) -> f64 {
    // An intrusive doubly linked list over slots; `NIL` ends it.
    const NIL: usize = usize::MAX;
    let mut slot_of: HashMap<u64, usize> = HashMap::with_capacity(capacity);
    let (mut keys, mut prev, mut next) = (Vec::new(), Vec::new(), Vec::new());
    let (mut head, mut tail) = (NIL, NIL);
    let mut hits = 0u64;
    for (i, &k) in trace.iter().enumerate() {
        let slot = match slot_of.get(&k) {
            Some(&s) => {
                hits += u64::from(i >= warmup);
                // Unlink, then relink at the head below.
                let (p, n) = (prev[s], next[s]);
                if p != NIL {
                    next[p] = n
                } else {
                    head = n
                }
                if n != NIL {
                    prev[n] = p
                } else {
                    tail = p
                }
                s
            }
            None if keys.len() < capacity => {
                keys.push(k);
                prev.push(NIL);
                next.push(NIL);
                slot_of.insert(k, keys.len() - 1);
                keys.len() - 1
            }
            None => {
                // Evict the tail and reuse its slot.
                let s = tail;
                tail = prev[s];
                if tail != NIL {
                    next[tail] = NIL
                } else {
                    head = NIL
                }
                slot_of.remove(&keys[s]);
                keys[s] = k;
                slot_of.insert(k, s);
                s
            }
        };
        prev[slot] = NIL;
        next[slot] = head;
        if head != NIL {
            prev[head] = slot;
        }
        head = slot;
        if tail == NIL {
            tail = slot;
        }
    }
    hits as f64 / (trace.len() - warmup).max(1) as f64
}

/// What a replay against the store measured.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    pub hit_ratio: f64,
    /// The most memory the store used at any point, as its bound counts.
    pub memory_used_max_bytes: u64,
    /// Memory per key held at the end.
    pub bytes_per_key: f64,
    pub evicted_keys: u64,
}

/// Replays `trace` as a read-through cache against `store`.
pub fn replay(store: &mut Store, trace: &[u64], value_len: usize, warmup: usize) -> Replay {
    let mut value = vec![0x5au8; value_len];
    let (mut hits, mut used_max) = (0u64, 0u64);
    for (i, &k) in trace.iter().enumerate() {
        let key = key(k);
        if store.get(&key).is_some() {
            hits += u64::from(i >= warmup);
        } else {
            fill_value(&mut value, k);
            store.set(&key, &value, SetOptions::default()).expect("cache-mode set");
        }
        if i % 64 == 0 {
            store.tick().expect("tick");
        }
        used_max = used_max.max(store.memory_used_bytes());
    }
    let stats = store.stats();
    Replay {
        hit_ratio: hits as f64 / (trace.len() - warmup).max(1) as f64,
        memory_used_max_bytes: used_max,
        bytes_per_key: stats.memory_used_bytes as f64 / stats.keys.max(1) as f64,
        evicted_keys: stats.evicted_keys,
    }
}

/// Memory per key of an unbounded store-mode store holding `keys` keys.
pub fn store_bytes_per_key(dir: &std::path::Path, keys: u64, value_len: usize) -> f64 {
    let config = Config { fsync: FsyncPolicy::Never, ..Config::default() };
    let (mut store, _) = Store::open(dir, config).expect("open store");
    crate::populate(&mut store, keys, value_len);
    store.memory_used_bytes() as f64 / keys as f64
}

/// A cache-mode configuration bounded to `memory_max_bytes`.
pub fn cache_config(memory_max_bytes: u64) -> Config {
    Config {
        mode: Mode::Cache,
        memory_max_bytes: Some(memory_max_bytes),
        segment_size_bytes: engine::segment_size_for_memory(memory_max_bytes),
        fsync: FsyncPolicy::Never,
        ..Config::default()
    }
}

/// The whole comparison: the figures the goal is stated in.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub memory_max_bytes: u64,
    pub store_bytes_per_key: f64,
    pub lru_capacity_keys: usize,
    pub lru_hit_ratio: f64,
    pub cache: Replay,
}

/// Runs the comparison with a working set `ratio` times the bound.
pub fn compare(
    parent: &std::path::Path,
    keys: usize,
    requests: usize,
    value_len: usize,
    ratio: f64,
    exponent: f64,
) -> Comparison {
    let store_dir = crate::ScratchDir::new_in(parent, "lru-size").expect("scratch dir");
    let store_bytes_per_key = store_bytes_per_key(store_dir.path(), keys as u64, value_len);
    drop(store_dir);
    let memory_max_bytes = (keys as f64 * store_bytes_per_key / ratio) as u64;
    let lru_capacity_keys = (memory_max_bytes as f64 / store_bytes_per_key) as usize;
    let trace = trace(keys, requests, exponent, crate::SEED);
    let warmup = requests / 2;
    let lru_hit_ratio = lru_hit_ratio(&trace, lru_capacity_keys, warmup);
    let cache_dir = crate::ScratchDir::new_in(parent, "cache").expect("scratch dir");
    let (mut store, _) = Store::open(cache_dir.path(), cache_config(memory_max_bytes)).expect("open cache");
    let cache = replay(&mut store, &trace, value_len, warmup);
    Comparison { memory_max_bytes, store_bytes_per_key, lru_capacity_keys, lru_hit_ratio, cache }
}
