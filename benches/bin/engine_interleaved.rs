//! The engine's get and set loops against a `HashMap<Vec<u8>, Vec<u8>>`,
//! alternating one batch of each, so that a shared host's swings in memory
//! speed hit both alike. The loops are those of the criterion bench
//! `engine/k16_v*` (the same queries, the same reply copy, the same
//! compaction ticks after each batch of sets); criterion measures the two
//! sides seconds apart, and on this machine its ratio for 1 KiB gets moved
//! from 0.44x to 0.82x between two runs of one binary, while this one's
//! stayed within 0.57x-0.61x.
//!
//! ```text
//! engine_interleaved [keys] [value_len]     defaults: 1000000 keys, 32-byte values
//! ```

/// The allocator of the server and of the criterion bench.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Instant;

use engine::{FsyncPolicy, SetOptions, Store};
use ringkv_benches::{
    bench_config, drain_ticks, fill_value, populate, populate_map, query_keys, scratch_parent, settle, ScratchDir,
    BATCH_OPS, KEYS_DEFAULT, VALUE_SMALL_BYTES,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| match args.get(i) {
        None => Some(default),
        Some(s) => s.replace('_', "").parse().ok(),
    };
    let (Some(keys), Some(value_len)) = (num(0, KEYS_DEFAULT), num(1, VALUE_SMALL_BYTES as u64)) else {
        eprintln!("usage: engine_interleaved [keys] [value_len]");
        return ExitCode::from(2);
    };
    match interleaved(keys.max(1), value_len as usize) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("engine_interleaved: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Batches of each kind in `interleaved`, for each side.
const INTERLEAVED_BATCHES: usize = 2000;
/// Queries cycled through, as in the criterion bench.
const INTERLEAVED_QUERY_KEYS: usize = 1 << 16;
/// Compaction ticks after each batch of sets, as in the criterion bench.
const INTERLEAVED_SET_TICKS: usize = 64;

fn interleaved(keys: u64, value_len: usize) -> Result<(), Box<dyn std::error::Error>> {
    use std::time::Duration;
    let dir = ScratchDir::new_in(&scratch_parent(), "interleaved")?;
    let (mut store, _) = Store::open(dir.path(), bench_config(FsyncPolicy::Never))?;
    populate(&mut store, keys, value_len);
    settle(&mut store, keys);
    let mut map = populate_map(keys, value_len);
    let mut value = vec![0xa5u8; value_len];
    let queries = query_keys(keys, INTERLEAVED_QUERY_KEYS, 0x9e7);
    let batch = BATCH_OPS as usize;
    let batches = queries.chunks_exact(batch).cycle().take(INTERLEAVED_BATCHES);
    let mut reply = Vec::with_capacity(value_len);
    let (mut store_get, mut map_get) = (Duration::ZERO, Duration::ZERO);
    let mut bytes = 0;
    for (n, qs) in batches.clone().enumerate() {
        // A GET's value goes out in a reply: both copy it, as in the
        // criterion bench. Which side goes first alternates, so that
        // neither always runs just after the other.
        for side in [n % 2, 1 - n % 2] {
            let started = Instant::now();
            for k in qs {
                let v = if side == 0 { store.get(k) } else { map.get(k.as_slice()).map(Vec::as_slice) };
                if let Some(v) = v {
                    reply.clear();
                    reply.extend_from_slice(v);
                    bytes += reply.len();
                }
            }
            *(if side == 0 { &mut store_get } else { &mut map_get }) += started.elapsed();
        }
    }
    std::hint::black_box(bytes);
    let (mut store_set, mut map_set) = (Duration::ZERO, Duration::ZERO);
    let mut tag = keys;
    for qs in batches {
        // Sets overwrite; the store pays for its garbage in the batch.
        let started = Instant::now();
        for k in qs {
            tag += 1;
            fill_value(&mut value, tag);
            store.set(k, &value, SetOptions::default())?;
        }
        drain_ticks(&mut store, INTERLEAVED_SET_TICKS);
        store_set += started.elapsed();
        let started = Instant::now();
        for k in qs {
            tag += 1;
            fill_value(&mut value, tag);
            let v = map.get_mut(k.as_slice()).ok_or("a query key the map lacks")?;
            v.clear();
            v.extend_from_slice(&value);
        }
        map_set += started.elapsed();
    }
    let ops = (INTERLEAVED_BATCHES * batch) as f64;
    let rate = |d: Duration| ops / d.as_secs_f64();
    println!("keys: {keys}");
    println!("value_len_bytes: {value_len}");
    println!(
        "get: store {:.0}/s, hashmap {:.0}/s, ratio {:.3}",
        rate(store_get),
        rate(map_get),
        map_get.as_secs_f64() / store_get.as_secs_f64()
    );
    println!(
        "set: store {:.0}/s, hashmap {:.0}/s, ratio {:.3}",
        rate(store_set),
        rate(map_set),
        map_set.as_secs_f64() / store_set.as_secs_f64()
    );
    Ok(())
}
