//! Shared helpers for the benches and the measurement binaries: a seeded
//! key generator (so every run and every baseline sees the same keys),
//! store set-up, scratch directories and resident-memory readings.
//!
//! Nothing here is timed; the benches decide what goes inside the timing
//! loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use engine::{Config, FsyncPolicy, SetOptions, Store};

#[path = "cache_sim.rs"]
pub mod cache_sim;

/// Key length the engine goals are stated for.
pub const KEY_LEN_BYTES: usize = 16;
/// Small and large value lengths the engine goals are stated for.
pub const VALUE_SMALL_BYTES: usize = 32;
pub const VALUE_LARGE_BYTES: usize = 1024;
/// Keys in the store the throughput benches run against.
pub const KEYS_DEFAULT: u64 = 1_000_000;
/// Keys in short mode (`RINGKV_BENCH_SHORT=1`): enough to exercise every
/// path, small enough for a CI smoke run.
pub const KEYS_SHORT: u64 = 10_000;
/// Operations per criterion iteration; throughput is reported per element.
pub const BATCH_OPS: u64 = 1000;
/// Segment size every bench uses (the engine's default, stated explicitly
/// so that a change of default does not silently change the figures).
pub const SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Seed of every key stream; fixed so that runs are comparable.
pub const SEED: u64 = 0x5eed_2026_c0ff_ee00;

/// True when `RINGKV_BENCH_SHORT` is set to anything but `0` or empty.
pub fn short_mode() -> bool {
    std::env::var("RINGKV_BENCH_SHORT").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Keys to pre-populate: `RINGKV_BENCH_KEYS` if set, else 10 000 in short
/// mode and 1 000 000 otherwise.
pub fn keys_from_env() -> u64 {
    if let Some(n) = std::env::var("RINGKV_BENCH_KEYS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if short_mode() {
        KEYS_SHORT
    } else {
        KEYS_DEFAULT
    }
}

/// splitmix64: a tiny, well-mixed generator. Good enough to pick keys
/// uniformly; not a cryptographic source.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias for `n` far
    /// below 2^64 is negligible for benchmarking).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`th key of the data set: 16 pseudo-random bytes, a pure function
/// of `i`, so no key list has to be held in memory (which would inflate the
/// resident-memory figures).
pub fn key(i: u64) -> [u8; KEY_LEN_BYTES] {
    let a = mix(SEED ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let b = mix(a ^ 0x6a09_e667_f3bc_c908);
    let mut k = [0u8; KEY_LEN_BYTES];
    k[..8].copy_from_slice(&a.to_le_bytes());
    k[8..].copy_from_slice(&b.to_le_bytes());
    k
}

/// `count` keys drawn uniformly from `key(0..keys)` by a seeded generator:
/// the query stream of the get and set benches, identical for the store
/// and the baseline.
pub fn query_keys(keys: u64, count: usize, seed: u64) -> Vec<[u8; KEY_LEN_BYTES]> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| key(rng.below(keys))).collect()
}

/// A value of `len` bytes whose first bytes carry `tag`, so that successive
/// writes of one key differ.
pub fn fill_value(buf: &mut [u8], tag: u64) {
    let tag = tag.to_le_bytes();
    let n = buf.len().min(tag.len());
    buf[..n].copy_from_slice(&tag[..n]);
}

/// The configuration every bench uses.
pub fn bench_config(fsync: FsyncPolicy) -> Config {
    Config { segment_size_bytes: SEGMENT_SIZE_BYTES, fsync, ..Default::default() }
}

/// Writes `key(0..keys)` with `value_len`-byte values.
pub fn populate(store: &mut Store, keys: u64, value_len: usize) {
    let mut value = vec![0xa5u8; value_len];
    for i in 0..keys {
        fill_value(&mut value, i);
        store.set(&key(i), &value, SetOptions::default()).expect("populate");
    }
}

/// The baseline of the get and set benches: `key(0..keys)` with the same
/// values `populate` writes, in a `HashMap` of owned vectors.
pub fn populate_map(keys: u64, value_len: usize) -> std::collections::HashMap<Vec<u8>, Vec<u8>> {
    let mut map = std::collections::HashMap::new();
    let mut value = vec![0xa5u8; value_len];
    for i in 0..keys {
        fill_value(&mut value, i);
        map.insert(key(i).to_vec(), value.clone());
    }
    map
}

/// Lets the index finish any growth in progress, as the shard thread's
/// ticks would between batches, so reads see the steady-state table.
pub fn settle(store: &mut Store, keys: u64) {
    for _ in 0..keys / 1024 + 16 {
        store.tick().expect("tick");
    }
}

/// Runs `tick` until compaction reports no more work, at most `ticks_max`
/// times. Returns the number of ticks run.
pub fn drain_ticks(store: &mut Store, ticks_max: usize) -> usize {
    for n in 0..ticks_max {
        if !store.tick().expect("tick") {
            return n + 1;
        }
    }
    ticks_max
}

/// A directory removed (with everything in it) when dropped. Used instead
/// of `tempfile` so that the measurement binaries need no dev-dependency.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh, uniquely named directory under `parent`.
    pub fn new_in(parent: &Path, label: &str) -> std::io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("ringkv-bench-{label}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {err}", self.path.display());
        }
    }
}

/// Where the benches put stores that need no real disk:
/// `RINGKV_BENCH_DIR`, else the system temporary directory.
pub fn scratch_parent() -> PathBuf {
    std::env::var_os("RINGKV_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// Where the durable-write bench puts its store. It must be a real disk
/// (fsync on tmpfs is free), so it is `RINGKV_BENCH_DISK_DIR`, falling back
/// to [`scratch_parent`] with a warning.
pub fn disk_parent() -> PathBuf {
    match std::env::var_os("RINGKV_BENCH_DISK_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!("RINGKV_BENCH_DISK_DIR is not set; durable writes go to {}", scratch_parent().display());
            scratch_parent()
        }
    }
}

/// Copies every regular file of `from` into the (existing, empty) `to`:
/// restores a crash image before each recovery measurement.
pub fn copy_dir_files(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            bytes += std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(bytes)
}

/// Resident set size of this process in bytes, from `/proc/self/statm`
/// (anonymous memory and mapped file pages alike, so the log's mapped
/// segments count).
pub fn rss_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected /proc/self/statm: {statm:?}")))?;
    Ok(pages * page_size_bytes())
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

/// Bytes in a human unit, for printed reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_stable() {
        let set: std::collections::HashSet<_> = (0..10_000).map(key).collect();
        assert_eq!(set.len(), 10_000);
        assert_eq!(key(7), key(7));
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!((0..10_000).all(|_| rng.below(17) < 17));
    }
}
