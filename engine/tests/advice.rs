//! The kernel advice on segment mappings follows the fsync policy and the
//! write rate: a store that flushes every write must not append into large
//! folios (each flush would write them back whole), and a store written
//! slowly must not either (each periodic flush would write a 2 MiB folio
//! back for a few records); a store written fast wants them. Read back
//! from the mappings' `VmFlags` in /proc/self/smaps (`rr` is `MADV_RANDOM`,
//! `hg` is `MADV_HUGEPAGE`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Clock, Config, FsyncPolicy, SetOptions, Store};

/// The file name and `VmFlags` of every mapping of a segment file in `dir`.
fn segment_vm_flags(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.canonicalize().unwrap();
    let mut found = Vec::new();
    let mut segment = None;
    for line in smaps.lines() {
        // A mapping's first line is "start-end perms offset dev inode path",
        // the path last and possibly holding spaces.
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            let path = std::path::Path::new(fields.get(5).map_or("", |p| p.trim_start()));
            segment = (path.parent() == Some(dir.as_path()) && path.extension().is_some_and(|e| e == "seg"))
                .then(|| path.file_name().unwrap().to_string_lossy().into_owned());
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(name) = segment.take() {
                found.push((name, flags.split_whitespace().map(str::to_owned).collect()));
            }
        }
    }
    found.sort();
    found
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

const SEGMENT_BYTES: u64 = 4 << 20;

fn check(fsync: FsyncPolicy, wanted: &str, unwanted: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { segment_size_bytes: SEGMENT_BYTES, fsync, ..Config::default() };
    // Once as made, once as opened by recovery.
    for round in 0..2 {
        let (mut store, _) = Store::open(dir.path(), config.clone()).unwrap();
        store.set(b"key", b"value", SetOptions::default()).unwrap();
        let flags = segment_vm_flags(dir.path());
        assert!(!flags.is_empty(), "round {round}: no segment mapping found");
        for (name, f) in &flags {
            assert!(has(f, wanted), "{fsync:?}, round {round}, {name}: {wanted} missing from {f:?}");
            assert!(!has(f, unwanted), "{fsync:?}, round {round}, {name}: {unwanted} in {f:?}");
        }
        store.close().unwrap();
    }
}

#[test]
fn under_always_segments_are_advised_random_and_not_huge() {
    check(FsyncPolicy::Always, "rr", "hg");
}

#[test]
fn under_other_policies_segments_start_huge_and_not_random() {
    check(FsyncPolicy::EverySec, "hg", "rr");
    check(FsyncPolicy::Never, "hg", "rr");
}

/// A second of fast writes keeps new segments in 2 MiB folios; a second
/// of slow ones moves the appends to a segment without them, and the
/// segments after it stay so until writes come fast again.
#[test]
fn a_slow_writer_leaves_the_huge_segment_and_a_fast_one_gets_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let config = Config {
        segment_size_bytes: SEGMENT_BYTES,
        fsync: FsyncPolicy::Never,
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let second = |store: &mut Store| {
        clock.fetch_add(1000, Ordering::Relaxed);
        store.tick().unwrap();
    };
    let huge = |store: &Store| -> Vec<bool> {
        let _ = store;
        segment_vm_flags(dir.path()).iter().map(|(_, f)| has(f, "hg")).collect()
    };
    // Fast: 9 MiB in a second, over three 4 MiB segments.
    let value = vec![7u8; 64 << 10];
    for i in 0..144u32 {
        store.set(format!("fast-{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    second(&mut store);
    let after_fast = huge(&store);
    assert!(after_fast.len() >= 3 && after_fast.iter().all(|&h| h), "fast writes: {after_fast:?}");
    // Slow: one small write in a second. The active segment is left.
    store.set(b"slow", b"1", SetOptions::default()).unwrap();
    second(&mut store);
    let after_slow = huge(&store);
    assert_eq!(after_slow.len(), after_fast.len() + 1, "a new segment: {after_slow:?}");
    assert_eq!(after_slow.iter().filter(|&&h| !h).count(), 1, "the new one only is not huge: {after_slow:?}");
    // Still slow: nothing changes.
    store.set(b"slow", b"2", SetOptions::default()).unwrap();
    second(&mut store);
    assert_eq!(huge(&store), after_slow);
    // Fast again: the segments made from now on are huge again.
    for i in 0..144u32 {
        store.set(format!("fast-{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    second(&mut store);
    for i in 0..144u32 {
        store.set(format!("again-{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    let at_last = segment_vm_flags(dir.path());
    assert!(at_last.iter().filter(|(_, f)| has(f, "hg")).count() > after_slow.len(), "{at_last:?}");
    // Every value written is still served.
    assert_eq!(store.get(b"slow"), Some(&b"2"[..]));
    assert_eq!(store.get(b"again-143").map(<[u8]>::len), Some(value.len()));
    drop(store);
}
