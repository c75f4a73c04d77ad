//! Engine benches (criterion, in-process): get and set throughput against a
//! `HashMap<Vec<u8>, Vec<u8>>` baseline measured in the same run, durable
//! writes under `FsyncPolicy::Always` at several batch sizes, and opening a
//! store after a crash (full log scan) and after a clean close (hint file).
//!
//! Memory per key and the 10M-key restart figures come from the
//! `engine_memory` binary instead (`benches/bin/engine_memory.rs`), because
//! they are one-shot readings rather than timings. `engine_interleaved`
//! (`benches/bin/engine_interleaved.rs`) runs this file's get and set loops
//! against the `HashMap` one batch of each at a time, for a ratio that the
//! host's swings in memory speed do not move.
//!
//! Knobs (environment):
//! - `RINGKV_BENCH_SHORT=1`: 10 000 keys instead of 1 000 000, for smoke runs;
//! - `RINGKV_BENCH_KEYS=n`: pre-populate `n` keys;
//! - `RINGKV_BENCH_SET_TICKS=n`: compaction ticks after each batch of sets
//!   (default 64; 0 leaves compaction out);
//! - `RINGKV_BENCH_DIR`: where stores live (default: the temporary directory);
//! - `RINGKV_BENCH_DISK_DIR`: where the durable-write store lives; it must be
//!   a real disk, since fsync on tmpfs costs nothing.
//!
//! Run: `cargo bench -p ringkv-benches --bench engine -- --measurement-time 3 --warm-up-time 1`.

/// The server's allocator, for the store and the `HashMap` baseline alike:
/// with glibc's (and transparent huge pages, `always` on this machine) the
/// baseline's throughput swung 2.3x between sessions on the same code.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests per prefetched window in `get/store_prefetched` and
/// `set/store_prefetched`: a pipeline depth of 16, as in the end-to-end
/// runs.
const PREFETCH_WINDOW: usize = 16;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use engine::{FsyncPolicy, KeyHash, SetOptions, Store};
use ringkv_benches::{
    bench_config, copy_dir_files, disk_parent, drain_ticks, fill_value, key, keys_from_env, populate, populate_map,
    query_keys, scratch_parent, settle, ScratchDir, SplitMix64, BATCH_OPS, KEY_LEN_BYTES, VALUE_LARGE_BYTES,
    VALUE_SMALL_BYTES,
};

/// Queries drawn once and cycled through, 1000 per iteration. 64 Ki keys
/// (1 MiB) span far more of the data set than a cache can hold hot.
const QUERY_POOL_KEYS: usize = 1 << 16;
/// Bound on the compaction ticks run after each batch of sets: 64 ticks
/// examine up to 16 MiB, several times what a 1000-set batch writes.
/// `RINGKV_BENCH_SET_TICKS` overrides it (0 measures appends alone, with
/// no compaction and an ever-growing log).
const TICKS_PER_BATCH_MAX: usize = 64;

fn ticks_per_batch() -> usize {
    std::env::var("RINGKV_BENCH_SET_TICKS").ok().and_then(|v| v.parse().ok()).unwrap_or(TICKS_PER_BATCH_MAX)
}

type Key = [u8; KEY_LEN_BYTES];

/// The next `BATCH_OPS` queries of the pool, wrapping around.
fn next_batch<'a>(pool: &'a [Key], at: &mut usize) -> &'a [Key] {
    let batch = BATCH_OPS as usize;
    if *at + batch > pool.len() {
        *at = 0;
    }
    let slice = &pool[*at..*at + batch];
    *at += batch;
    slice
}

/// What the server does for a pipelined batch before running it: hashes
/// its keys once (into `hashes`), then prefetches their index slots, then
/// the records those point at (`Store::prefetch`).
fn prefetch_window(store: &Store, window: &[Key], hashes: &mut Vec<KeyHash>) {
    hashes.clear();
    hashes.extend(window.iter().map(|k| store.hash_of(k)));
    for stage in 0..2 {
        hashes.iter().for_each(|&h| store.prefetch(h, stage));
    }
}

fn get_and_set(c: &mut Criterion) {
    let keys = keys_from_env();
    for value_len in [VALUE_SMALL_BYTES, VALUE_LARGE_BYTES] {
        let dir = ScratchDir::new_in(&scratch_parent(), "getset").expect("scratch dir");
        let (mut store, _) = Store::open(dir.path(), bench_config(FsyncPolicy::Never)).expect("open");
        populate(&mut store, keys, value_len);
        settle(&mut store, keys);
        let mut map = populate_map(keys, value_len);
        let mut value = vec![0xa5u8; value_len];
        let queries = query_keys(keys, QUERY_POOL_KEYS, 0x9e7);
        // Every query must hit in both, or the comparison is of misses.
        for k in &queries {
            assert_eq!(store.get(k).map(<[u8]>::len), Some(value_len));
            assert_eq!(map.get(k.as_slice()).map(Vec::len), Some(value_len));
        }

        let mut group = c.benchmark_group(format!("engine/k16_v{value_len}"));
        group.throughput(Throughput::Elements(BATCH_OPS));
        let mut at = 0;
        // A GET's value goes out in a reply: both sides copy it into a
        // reused buffer, as the server does (otherwise the baseline never
        // touches a value's bytes while the store checks their CRC).
        let mut reply = Vec::with_capacity(value_len);
        group.bench_function("get/store", |b| {
            b.iter(|| {
                let mut bytes = 0;
                for k in next_batch(&queries, &mut at) {
                    if let Some(v) = store.get(k) {
                        reply.clear();
                        reply.extend_from_slice(v);
                        bytes += reply.len();
                    }
                }
                bytes
            })
        });
        // The server's way: a pipelined batch prefetched, then run.
        let mut hashes = Vec::with_capacity(PREFETCH_WINDOW);
        group.bench_function("get/store_prefetched", |b| {
            b.iter(|| {
                let mut bytes = 0;
                for window in next_batch(&queries, &mut at).chunks(PREFETCH_WINDOW) {
                    prefetch_window(&store, window, &mut hashes);
                    for (k, &h) in window.iter().zip(&hashes) {
                        if let Some(v) = store.get_hashed(k, h) {
                            reply.clear();
                            reply.extend_from_slice(v);
                            bytes += reply.len();
                        }
                    }
                }
                bytes
            })
        });
        group.bench_function("get/hashmap", |b| {
            b.iter(|| {
                let mut bytes = 0;
                for k in next_batch(&queries, &mut at) {
                    if let Some(v) = map.get(k.as_slice()) {
                        reply.clear();
                        reply.extend_from_slice(v);
                        bytes += reply.len();
                    }
                }
                bytes
            })
        });

        // Sets overwrite existing keys. The store pays for its garbage in
        // the same loop: each batch is followed by the compaction ticks a
        // shard thread would run, so the figure is sustainable throughput.
        let mut tag = keys;
        let ticks = ticks_per_batch();
        group.bench_function("set/store", |b| {
            b.iter(|| {
                for k in next_batch(&queries, &mut at) {
                    tag += 1;
                    fill_value(&mut value, tag);
                    store.set(k, &value, SetOptions::default()).expect("set");
                }
                drain_ticks(&mut store, ticks)
            })
        });
        // The server's way again: the records prefetched are the old
        // versions, whose headers an overwrite reads.
        group.bench_function("set/store_prefetched", |b| {
            b.iter(|| {
                for window in next_batch(&queries, &mut at).chunks(PREFETCH_WINDOW) {
                    prefetch_window(&store, window, &mut hashes);
                    for (k, &h) in window.iter().zip(&hashes) {
                        tag += 1;
                        fill_value(&mut value, tag);
                        store.set_hashed(k, &value, SetOptions::default(), h).expect("set");
                    }
                }
                drain_ticks(&mut store, ticks)
            })
        });
        // The baseline overwrites in place, reusing the value's allocation:
        // the fastest a map of owned vectors can do.
        group.bench_function("set/hashmap", |b| {
            b.iter(|| {
                for k in next_batch(&queries, &mut at) {
                    tag += 1;
                    fill_value(&mut value, tag);
                    match map.get_mut(k.as_slice()) {
                        Some(v) => {
                            v.clear();
                            v.extend_from_slice(&value);
                        }
                        None => {
                            map.insert(k.to_vec(), value.clone());
                        }
                    }
                }
            })
        });
        group.finish();
        let stats = store.stats();
        eprintln!(
            "after set/store (v{value_len}): keys {} live {} MiB dead {} MiB segments {} compactions {} index {} MiB rolls made inline {} recycled {}",
            stats.keys,
            stats.live_bytes >> 20,
            stats.dead_bytes >> 20,
            stats.segments,
            stats.compactions,
            stats.index_bytes >> 20,
            stats.rolls_waited,
            stats.segments_recycled,
        );
    }
}

fn durable_writes(c: &mut Criterion) {
    let keys = keys_from_env();
    let mut group = c.benchmark_group("engine/durable_always");
    for batch in [1u64, 8, 64] {
        let dir = ScratchDir::new_in(&disk_parent(), "durable").expect("scratch dir");
        let (mut store, _) = Store::open(dir.path(), bench_config(FsyncPolicy::Always)).expect("open");
        let mut rng = SplitMix64::new(batch);
        let mut value = vec![0x5au8; VALUE_SMALL_BYTES];
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("set_then_sync", batch), &batch, |b, &batch| {
            b.iter(|| {
                for _ in 0..batch {
                    let n = rng.next_u64();
                    fill_value(&mut value, n);
                    store.set(&key(n % keys.max(1)), &value, SetOptions::default()).expect("set");
                }
                store.sync().expect("sync");
            })
        });
        drop(store);
    }
    group.finish();
}

/// A copy of the crash image in a fresh directory, every file fsynced so
/// that the timed open finds clean pages in the page cache (as after a
/// process crash whose writes had been flushed) and writes nothing back.
fn restore(image: &Path) -> ScratchDir {
    let work = ScratchDir::new_in(&scratch_parent(), "recover").expect("scratch dir");
    copy_dir_files(image, work.path()).expect("copy crash image");
    for entry in std::fs::read_dir(work.path()).expect("list copy") {
        let path = entry.expect("entry").path();
        std::fs::File::open(&path).and_then(|f| f.sync_all()).expect("sync copy");
    }
    work
}

fn recovery(c: &mut Criterion) {
    let keys = keys_from_env();
    let config = bench_config(FsyncPolicy::Never);
    let image = ScratchDir::new_in(&scratch_parent(), "crash-image").expect("scratch dir");
    {
        let (mut store, _) = Store::open(image.path(), config.clone()).expect("open");
        populate(&mut store, keys, VALUE_SMALL_BYTES);
        // A crash: no close, so no seal and no hint file.
        drop(store);
    }
    let scanned_bytes = {
        let work = restore(image.path());
        let (store, report) = Store::open(work.path(), config.clone()).expect("recover");
        assert!(!report.hint_used && report.corrupt.is_empty() && report.torn.is_empty());
        assert_eq!(store.len() as u64, keys);
        report.bytes_scanned
    };

    let mut group = c.benchmark_group("engine/open");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Bytes(scanned_bytes));
    group.bench_function(BenchmarkId::new("after_crash_scan", keys), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let work = restore(image.path());
                let started = Instant::now();
                let (store, report) = Store::open(work.path(), config.clone()).expect("recover");
                total += started.elapsed();
                assert_eq!(report.bytes_scanned, scanned_bytes);
                black_box(store);
            }
            total
        })
    });
    group.throughput(Throughput::Elements(keys));
    group.bench_function(BenchmarkId::new("after_close_hint", keys), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let work = restore(image.path());
                let (store, _) = Store::open(work.path(), config.clone()).expect("recover");
                store.close().expect("close");
                let started = Instant::now();
                let (store, report) = Store::open(work.path(), config.clone()).expect("reopen");
                total += started.elapsed();
                assert!(report.hint_used, "clean restart used the hint: {:?}", report.hint_rejected);
                black_box(store);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, get_and_set, durable_writes, recovery);
criterion_main!(benches);
