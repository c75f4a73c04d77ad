//! One-shot engine measurements that criterion's timing loop does not suit:
//! resident memory per key, and opening a large store after a crash and
//! after a clean close.
//!
//! ```text
//! engine_memory memory  <keys> [value_len]   store: RSS and index bytes per key
//! engine_memory hashmap <keys> [value_len]   HashMap<Vec<u8>, Vec<u8>> baseline
//! engine_memory restart <keys> [rounds]      crash-recovery scan and clean restart
//! ```
//!
//! Keys are 16 bytes from the benches' seeded generator; values default to
//! 32 bytes. Stores live under `RINGKV_BENCH_DIR` (default: the temporary
//! directory) and are deleted on exit. Each reading is a `name: value` line.

use std::process::ExitCode;
use std::time::Instant;

use engine::{FsyncPolicy, Store};
use ringkv_benches::{
    bench_config, copy_dir_files, mib, populate, populate_map, rss_bytes, scratch_parent, ScratchDir, VALUE_SMALL_BYTES,
};

/// Ticks run at most while waiting for index growth to finish; each tick
/// migrates 1024 entries, so this covers a table of 1G entries.
const SETTLE_TICKS_MAX: u64 = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| -> Option<u64> {
        match args.get(i) {
            None => Some(default),
            Some(s) => s.replace('_', "").parse().ok(),
        }
    };
    let (Some(keys), Some(third)) = (num(1, 1_000_000), num(2, 0)) else {
        return usage();
    };
    let result = match args.first().map(String::as_str) {
        Some("memory") => memory(keys, value_len(third)),
        Some("hashmap") => hashmap(keys, value_len(third)),
        Some("restart") => restart(keys, if third == 0 { 3 } else { third }),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("engine_memory: {err}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: engine_memory (memory|hashmap) <keys> [value_len] | restart <keys> [rounds]");
    ExitCode::from(2)
}

fn value_len(arg: u64) -> usize {
    if arg == 0 {
        VALUE_SMALL_BYTES
    } else {
        arg as usize
    }
}

type BoxResult = Result<(), Box<dyn std::error::Error>>;

/// Resident bytes split as `/proc/self/statm` does: all, and file-backed or
/// shared (the mapped segments).
fn statm() -> std::io::Result<(u64, u64)> {
    let total = rss_bytes()?;
    let text = std::fs::read_to_string("/proc/self/statm")?;
    let shared_pages: u64 = text.split_whitespace().nth(2).and_then(|f| f.parse().ok()).unwrap_or(0);
    let per_page = total / text.split_whitespace().nth(1).and_then(|f| f.parse::<u64>().ok()).unwrap_or(1).max(1);
    Ok((total, shared_pages * per_page))
}

fn memory(keys: u64, value_len: usize) -> BoxResult {
    let dir = ScratchDir::new_in(&scratch_parent(), "memory")?;
    let (rss_start, _) = statm()?;
    let (mut store, _) = Store::open(dir.path(), bench_config(FsyncPolicy::Never))?;
    let (rss_open, _) = statm()?;
    let started = Instant::now();
    populate(&mut store, keys, value_len);
    let load_s = started.elapsed().as_secs_f64();
    let (rss_loaded, file_loaded) = statm()?;
    let stats = store.stats();
    println!("keys: {keys}");
    println!("value_len_bytes: {value_len}");
    println!("load_s: {load_s:.3} ({:.0} sets/s)", keys as f64 / load_s);
    println!("rss_before_open_mib: {:.1}", mib(rss_start));
    println!("rss_after_open_mib: {:.1}", mib(rss_open));
    report_rss("loaded", keys, rss_start, rss_loaded, file_loaded, &stats);

    // The shard thread's ticks finish index growth between batches; a
    // store that has been idle for a moment holds one table, not two.
    // Each tick migrates 1024 entries, so keys / 1024 ticks finish any
    // growth; the loop stops early once the old table is freed.
    let mut ticks = 0;
    let ticks_max = (keys / 1024 + 16).min(SETTLE_TICKS_MAX);
    while ticks < ticks_max {
        let before = store.stats().index_bytes;
        store.tick()?;
        ticks += 1;
        if store.stats().index_bytes < before {
            break;
        }
    }
    let (rss_settled, file_settled) = statm()?;
    println!("settle_ticks: {ticks}");
    report_rss("settled", keys, rss_start, rss_settled, file_settled, &store.stats());
    drop(store);
    Ok(())
}

fn report_rss(stage: &str, keys: u64, start: u64, rss: u64, file: u64, stats: &engine::Stats) {
    let per_key = |b: u64| b as f64 / keys.max(1) as f64;
    println!(
        "{stage}: rss_mib {:.1}, rss_delta_per_key_bytes {:.1} (of which mapped log {:.1}), index_bytes {} ({:.1}/key), live_log_bytes {} ({:.1}/key), segments {}",
        mib(rss),
        per_key(rss.saturating_sub(start)),
        per_key(file),
        stats.index_bytes,
        per_key(stats.index_bytes),
        stats.live_bytes,
        per_key(stats.live_bytes),
        stats.segments,
    );
}

fn hashmap(keys: u64, value_len: usize) -> BoxResult {
    let (rss_start, _) = statm()?;
    let map = populate_map(keys, value_len);
    let (rss, _) = statm()?;
    println!("keys: {keys}");
    println!("value_len_bytes: {value_len}");
    println!(
        "hashmap: rss_mib {:.1}, rss_delta_per_key_bytes {:.1}, buckets {}",
        mib(rss),
        rss.saturating_sub(rss_start) as f64 / keys.max(1) as f64,
        map.capacity()
    );
    std::hint::black_box(&map);
    Ok(())
}

fn restart(keys: u64, rounds: u64) -> BoxResult {
    let config = bench_config(FsyncPolicy::Never);
    let image = ScratchDir::new_in(&scratch_parent(), "restart-image")?;
    {
        let (mut store, _) = Store::open(image.path(), config.clone())?;
        let started = Instant::now();
        populate(&mut store, keys, VALUE_SMALL_BYTES);
        println!("keys: {keys}");
        println!("load_s: {:.3}", started.elapsed().as_secs_f64());
        println!("log_segments: {}", store.stats().segments);
        // A crash: no close, so nothing is sealed and there is no hint.
        drop(store);
    }
    for round in 0..rounds {
        let work = ScratchDir::new_in(&scratch_parent(), "restart")?;
        copy_dir_files(image.path(), work.path())?;
        // Clean, cached pages: the open then measures the scan, not
        // write-back of the copy.
        for entry in std::fs::read_dir(work.path())? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        let started = Instant::now();
        let (store, report) = Store::open(work.path(), config.clone())?;
        let open_s = started.elapsed().as_secs_f64();
        if report.hint_used || store.len() as u64 != keys {
            return Err(format!("recovery found {} keys, hint_used {}", store.len(), report.hint_used).into());
        }
        println!(
            "round {round}: crash_open_s {open_s:.3}, scanned_mib {:.1}, records {}, scan_rate_mib_s {:.0}",
            mib(report.bytes_scanned),
            report.records,
            mib(report.bytes_scanned) / open_s
        );
        let started = Instant::now();
        store.close()?;
        let close_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (store, report) = Store::open(work.path(), config.clone())?;
        let clean_s = started.elapsed().as_secs_f64();
        if !report.hint_used || store.len() as u64 != keys {
            return Err(format!("clean open: hint_used {}, {:?}", report.hint_used, report.hint_rejected).into());
        }
        println!("round {round}: close_s {close_s:.3}, clean_open_s {clean_s:.3}");
        drop(store);
    }
    Ok(())
}
