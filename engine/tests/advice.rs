//! The kernel advice on segment mappings follows the fsync policy and the
//! write rate: a store that flushes every write must not append into large
//! folios (each flush would write them back whole), and a store written
//! slowly must not either (each periodic flush would write a 2 MiB folio
//! back for a few records); a store written fast wants them. A new file is
//! also random while it takes appends, so that a first touch zero-fills no
//! more than its own folio. Read back from the mappings' `VmFlags` in
//! /proc/self/smaps (`rr` is `MADV_RANDOM`, `hg` is `MADV_HUGEPAGE`).

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

/// The flags of each segment mapping after a store in `dir` was opened
/// (once as made, once as opened by recovery) and took one write; the
/// first round's segment is `000000.seg`, opened at startup in the second.
fn rounds(fsync: FsyncPolicy, mut each: impl FnMut(usize, &str, &[String])) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { segment_size_bytes: SEGMENT_BYTES, fsync, ..Config::default() };
    for round in 0..2 {
        let (mut store, _) = Store::open(dir.path(), config.clone()).unwrap();
        store.set(b"key", b"value", SetOptions::default()).unwrap();
        let flags = segment_vm_flags(dir.path());
        assert!(!flags.is_empty(), "round {round}: no segment mapping found");
        for (name, f) in &flags {
            each(round, name, f);
        }
        store.close().unwrap();
    }
}

#[test]
fn under_always_segments_are_advised_random_and_not_huge() {
    rounds(FsyncPolicy::Always, |round, name, f| {
        assert!(has(f, "rr") && !has(f, "hg"), "round {round}, {name}: {f:?}");
    });
}

/// Huge, and a new file random too: no folio read ahead (zero-filled)
/// beyond the one an append touches. A segment opened at startup takes no
/// appends and keeps the kernel's read-ahead for cold walks.
#[test]
fn under_other_policies_segments_start_huge_and_new_files_random() {
    for fsync in [FsyncPolicy::EverySec, FsyncPolicy::Never] {
        let (mut made, mut opened) = (0, 0);
        rounds(fsync, |round, name, f| {
            let opened_at_startup = round == 1 && name == "000000.seg";
            assert!(has(f, "hg"), "{fsync:?}, round {round}, {name}: {f:?}");
            assert_eq!(has(f, "rr"), !opened_at_startup, "{fsync:?}, round {round}, {name}: {f:?}");
            *if opened_at_startup { &mut opened } else { &mut made } += 1;
        });
        assert!(made >= 2 && opened == 1, "{fsync:?}: {made} made, {opened} opened at startup");
    }
}

/// A full segment gets the kernel's read-ahead back: the random advice is
/// for the first touches of appends only.
#[test]
fn a_full_segment_is_no_longer_random() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { segment_size_bytes: SEGMENT_BYTES, fsync: FsyncPolicy::Never, ..Config::default() };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let value = [7u8; 1000];
    // A little over one segment of records: the log rolls once.
    for i in 0..(SEGMENT_BYTES / 1000 + 100) {
        store.set(format!("key{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    let flags = segment_vm_flags(dir.path());
    assert_eq!(flags.len(), 2, "{flags:?}");
    let (full, active) = (&flags[0], &flags[1]);
    assert!(has(&full.1, "hg") && !has(&full.1, "rr"), "{full:?}");
    assert!(has(&active.1, "hg") && has(&active.1, "rr"), "{active:?}");
}

/// So is a segment made for a slow writer, without 2 MiB folios: random
/// while it takes appends (a first touch would otherwise zero-fill the
/// disk's whole read-ahead window), read ahead again once full.
#[test]
fn a_slow_writers_new_segment_is_random_until_full() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let config = Config {
        segment_size_bytes: SEGMENT_BYTES,
        fsync: FsyncPolicy::Never,
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    // A second with one small write: slow, so the store leaves its first
    // segment (in 2 MiB folios) for one without.
    store.set(b"slow", b"1", SetOptions::default()).unwrap();
    clock.fetch_add(1000, Ordering::Relaxed);
    store.tick().unwrap();
    let flags = segment_vm_flags(dir.path());
    assert_eq!(flags.len(), 2, "{flags:?}");
    assert!(!has(&flags[1].1, "hg") && has(&flags[1].1, "rr"), "the slow writer's segment: {flags:?}");
    // Filled (no second passes, so it stays slow): full, it reads ahead.
    let value = [7u8; 1000];
    for i in 0..(SEGMENT_BYTES / 1000 + 100) {
        store.set(format!("key{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    let flags = segment_vm_flags(dir.path());
    assert_eq!(flags.len(), 3, "{flags:?}");
    assert!(!has(&flags[1].1, "hg") && !has(&flags[1].1, "rr"), "full: {flags:?}");
    assert!(!has(&flags[2].1, "hg") && has(&flags[2].1, "rr"), "the next: {flags:?}");
}

/// A second of fast writes keeps new segments in 2 MiB folios, and so does
/// one at half that rate; a second of slow ones moves the appends to a
/// segment without them, and the segments after it stay so until writes
/// come fast again. Nothing written is lost on the way, nor after a
/// reopen.
fn slow_writer_leaves_the_huge_segment(fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    // No compaction: it would remove and recycle segments, whose mappings
    // then go by their removed names.
    let config = Config {
        segment_size_bytes: SEGMENT_BYTES,
        fsync,
        clock: Clock::Manual(clock.clone()),
        compaction_garbage_ratio_min: 1.0,
        ..Config::default()
    };
    let (mut store, _) = Store::open(dir.path(), config.clone()).unwrap();
    let second = |store: &mut Store| {
        clock.fetch_add(1000, Ordering::Relaxed);
        store.tick().unwrap();
    };
    let huge = || -> Vec<bool> { segment_vm_flags(dir.path()).iter().map(|(_, f)| has(f, "hg")).collect() };
    let value = vec![7u8; 64 << 10];
    let write = |store: &mut Store, prefix: &str, mib: u32| {
        for i in 0..mib * 16 {
            store.set(format!("{prefix}-{i}").as_bytes(), &value, SetOptions::default()).unwrap();
        }
    };
    // Fast: 9 MiB in a second, over three 4 MiB segments.
    write(&mut store, "fast", 9);
    second(&mut store);
    let after_fast = huge();
    assert!(after_fast.len() >= 3 && after_fast.iter().all(|&h| h), "{fsync:?}, fast writes: {after_fast:?}");
    // 3 MiB in a second: below the line to start, above the one to stop.
    write(&mut store, "middle", 3);
    second(&mut store);
    let after_middle = huge();
    assert!(after_middle.iter().all(|&h| h), "{fsync:?}, 3 MiB/s: {after_middle:?}");
    // Slow: one small write in a second. The active segment is left.
    store.set(b"slow", b"1", SetOptions::default()).unwrap();
    second(&mut store);
    let after_slow = huge();
    assert_eq!(after_slow.len(), after_middle.len() + 1, "{fsync:?}, a new segment: {after_slow:?}");
    assert_eq!(
        after_slow.iter().filter(|&&h| !h).count(),
        1,
        "{fsync:?}, only the new one is not huge: {after_slow:?}"
    );
    // Still slow, and 3 MiB/s is not enough to start again: nothing changes
    // but the segments the 3 MiB fill, which are not huge.
    store.set(b"slow", b"2", SetOptions::default()).unwrap();
    second(&mut store);
    assert_eq!(huge(), after_slow, "{fsync:?}");
    write(&mut store, "middle-again", 3);
    second(&mut store);
    let after_middle_again = huge();
    assert_eq!(
        after_middle_again.iter().filter(|&&h| h).count(),
        after_slow.iter().filter(|&&h| h).count(),
        "{fsync:?}, 3 MiB/s while slow: {after_middle_again:?}"
    );
    // The clock steps back: nothing breaks, nothing is decided.
    clock.fetch_sub(10_000, Ordering::Relaxed);
    store.tick().unwrap();
    // Fast again: the segments made from now on are huge again. (New keys
    // throughout, so that no garbage makes compaction remove segments.)
    write(&mut store, "fast2", 9);
    second(&mut store);
    write(&mut store, "again", 9);
    let at_last = huge();
    assert!(
        at_last.iter().filter(|&&h| h).count() > after_middle_again.iter().filter(|&&h| h).count(),
        "{fsync:?}: {at_last:?}"
    );
    let check = |store: &Store| {
        assert_eq!(store.get(b"slow"), Some(&b"2"[..]), "{fsync:?}");
        for prefix in ["fast", "middle", "middle-again", "fast2", "again"] {
            let n = if prefix.starts_with("middle") { 3 * 16 } else { 9 * 16 };
            for i in 0..n {
                let key = format!("{prefix}-{i}");
                assert_eq!(store.get(key.as_bytes()), Some(&value[..]), "{fsync:?}: {key}");
            }
        }
    };
    check(&store);
    store.close().unwrap();
    let (store, report) = Store::open(dir.path(), config).unwrap();
    assert!(report.corrupt.is_empty() && report.torn.is_empty(), "{fsync:?}: {report:?}");
    check(&store);
}

#[test]
fn a_slow_writer_leaves_the_huge_segment_and_a_fast_one_gets_them_back() {
    slow_writer_leaves_the_huge_segment(FsyncPolicy::Never);
    slow_writer_leaves_the_huge_segment(FsyncPolicy::EverySec);
}

/// A caller that makes segments ahead (`begin_prepare`, as the server's
/// shards do) leaves a segment in 2 MiB folios through one made ahead, not
/// in 2 MiB folios, instead of making a file on its own thread; one planned
/// while writes came fast is discarded, not taken.
#[test]
fn a_slow_writer_that_prepares_ahead_leaves_through_a_prepared_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let config = Config {
        segment_size_bytes: SEGMENT_BYTES,
        fsync: FsyncPolicy::EverySec,
        clock: Clock::Manual(clock.clone()),
        compaction_garbage_ratio_min: 1.0,
        ..Config::default()
    };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let prepare = |store: &mut Store| -> bool {
        let Some(job) = store.begin_prepare() else { return false };
        store.finish_prepare(job.run());
        true
    };
    let value = vec![7u8; 64 << 10];
    // Fast, and past half the active segment: a segment is made ahead, in
    // 2 MiB folios.
    for i in 0..(3 * 16 + 8) {
        store.set(format!("fast-{i}").as_bytes(), &value, SetOptions::default()).unwrap();
    }
    clock.fetch_add(1000, Ordering::Relaxed);
    store.tick().unwrap();
    assert!(prepare(&mut store), "half full: a segment is made ahead");
    let before = segment_vm_flags(dir.path());
    assert!(before.iter().all(|(_, f)| has(f, "hg")), "{before:?}");
    // Slow: the roll waits for a segment made ahead; the huge one is dropped.
    store.set(b"slow", b"1", SetOptions::default()).unwrap();
    clock.fetch_add(1000, Ordering::Relaxed);
    store.tick().unwrap();
    let waiting = segment_vm_flags(dir.path());
    assert_eq!(waiting.len(), before.len() - 1, "the huge segment made ahead is gone: {waiting:?}");
    assert!(waiting.iter().all(|(_, f)| has(f, "hg")), "no roll yet: {waiting:?}");
    assert!(prepare(&mut store), "a segment is made ahead at once, though the active one is not half full");
    store.tick().unwrap();
    let after = segment_vm_flags(dir.path());
    assert_eq!(after.len(), waiting.len() + 1, "{after:?}");
    assert_eq!(after.iter().filter(|(_, f)| !has(f, "hg")).count(), 1, "the new active segment: {after:?}");
    assert_eq!(store.stats().rolls_waited, 1, "only the roll at open made its file inline");
    store.set(b"slow", b"2", SetOptions::default()).unwrap();
    assert_eq!(store.get(b"slow"), Some(&b"2"[..]));
    assert_eq!(store.get(b"fast-55").map(<[u8]>::len), Some(value.len()));
}
