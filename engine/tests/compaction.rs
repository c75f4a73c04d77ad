//! Compaction gives back the space of overwritten, deleted and expired
//! records while keeping every live key with its newest value, across a
//! reopen from the checkpoint and across a crash, when removing a
//! compacted segment's file fails, and when making the segment its copies
//! need fails in the middle of a victim.

mod common;
use common::compact_fully;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Clock, Config, FsyncPolicy, SetExpiry, SetOptions, Store};

fn config(clock: &Arc<AtomicU64>) -> Config {
    Config {
        segment_size_bytes: 64 << 10,
        fsync: FsyncPolicy::Never,
        // Low, so that every segment holding garbage is compacted here.
        compaction_garbage_ratio_min: 0.2,
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    }
}

#[test]
fn reclaims_garbage_and_keeps_newest_values() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let value = |k: u32, round: u32| format!("{k}:{round}:").repeat(20).into_bytes();
    for round in 0..5 {
        for k in 0..2000u32 {
            store.set(format!("key{k}").as_bytes(), &value(k, round), SetOptions::default()).unwrap();
        }
    }
    for k in (0..2000u32).step_by(3) {
        store.delete(format!("key{k}").as_bytes()).unwrap();
    }
    for k in 2000..2500u32 {
        let opts = SetOptions { expiry: SetExpiry::At(10_500), ..SetOptions::default() };
        store.set(format!("key{k}").as_bytes(), b"short-lived", opts).unwrap();
    }
    clock.store(11_000, Ordering::Relaxed);
    let before = store.stats();
    compact_fully(&mut store, 32 << 10);
    let after = store.stats();
    assert!(after.compactions > 0);
    assert!(after.segments * 2 < before.segments, "segments {} -> {}", before.segments, after.segments);
    assert!(after.dead_bytes < before.dead_bytes / 4, "dead {} -> {}", before.dead_bytes, after.dead_bytes);
    assert_eq!(after.live_bytes, before.live_bytes - 500 * 32, "expired records (32 bytes each) no longer live");
    assert_eq!(after.expired_reclaimed, 500);

    let check = |store: &Store| {
        for k in 0..2500u32 {
            let got = store.get(format!("key{k}").as_bytes());
            if k >= 2000 || k % 3 == 0 {
                assert_eq!(got, None, "key{k} should be gone");
            } else {
                assert_eq!(got, Some(&value(k, 4)[..]), "key{k}");
            }
        }
    };
    check(&store);
    store.close().unwrap();
    let (store, report) = Store::open(dir.path(), config(&clock)).unwrap();
    assert!(report.hint_used);
    check(&store);
    drop(store);
    let (store, report) = Store::open(dir.path(), config(&clock)).unwrap();
    assert!(!report.hint_used && report.corrupt.is_empty());
    check(&store);
}

/// Old versions in the first segments (the first and some of the second);
/// their deletes land later, amid filler that is then overwritten, so the
/// tombstones' segments become victims while the old versions' files may
/// survive.
fn write_old_versions_then_delete_them(store: &mut Store) {
    for k in 0..300u32 {
        store.set(format!("old{k}").as_bytes(), &[7u8; 150], SetOptions::default()).unwrap();
    }
    for k in 0..300u32 {
        store.delete(format!("old{k}").as_bytes()).unwrap();
        store.set(format!("filler{k}").as_bytes(), &[1u8; 200], SetOptions::default()).unwrap();
    }
    for k in 0..300u32 {
        store.set(format!("filler{k}").as_bytes(), &[2u8; 200], SetOptions::default()).unwrap();
    }
}

/// What `write_old_versions_then_delete_them` leaves: no old key, the
/// newest filler.
fn check_old_versions_deleted(store: &Store) {
    for k in 0..300u32 {
        assert_eq!(store.get(format!("old{k}").as_bytes()), None, "old{k} came back");
        assert_eq!(store.get(format!("filler{k}").as_bytes()), Some(&[2u8; 200][..]));
    }
}

#[test]
fn deleted_keys_stay_deleted_after_their_tombstones_segment_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    write_old_versions_then_delete_them(&mut store);
    compact_fully(&mut store, 32 << 10);
    drop(store);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    check_old_versions_deleted(&store);
}

/// 300 records of 270 bytes under `prefix`: more than a 64 KiB segment
/// holds.
fn fill(store: &mut Store, prefix: &str, byte: u8) {
    for i in 0..300u32 {
        store.set(format!("{prefix}{i}").as_bytes(), &[byte; 250], SetOptions::default()).unwrap();
    }
}

/// Key `k`: an old version in the first segment, which stays (all live),
/// and a new one expiring at 10 500 ms in a later segment, which `fill(..,
/// "junk", ..)` makes garbage.
fn write_an_old_version_and_an_expiring_one(store: &mut Store) {
    store.set(b"k", b"old value", SetOptions::default()).unwrap();
    fill(store, "keep", 1);
    let expiring = SetOptions { expiry: SetExpiry::At(10_500), ..SetOptions::default() };
    store.set(b"k", b"new value", expiring).unwrap();
    fill(store, "junk", 2);
    fill(store, "more", 3);
}

/// Compacts the expiring version's segment, then checks that `k` stays
/// gone, before and after a crash.
fn compact_then_check_the_expired_key_stays_gone(dir: &Path, clock: &Arc<AtomicU64>, mut store: Store) {
    fill(&mut store, "junk", 4);
    let before = store.stats().compactions;
    compact_fully(&mut store, 32 << 10);
    assert!(store.stats().compactions > before);
    assert_eq!(store.get(b"k"), None);
    // A crash (no close), then the full scan of the next open.
    drop(store);
    let (store, _) = Store::open(dir, config(clock)).unwrap();
    assert_eq!(store.get(b"k"), None, "the old version came back");
    assert_eq!(store.get(b"keep7"), Some(&[1u8; 250][..]));
}

/// A record that the expiry sweep reclaims was its key's newest. When its
/// segment is compacted while an older one holds an older version of the
/// key, a tombstone must take its place, or the older version comes back
/// at the next open. (Compaction drops most dead records without looking
/// their keys up: those were overwritten or deleted, and a newer record of
/// their key hides the older ones. A swept segment is marked as holding
/// orphans, so that its records are looked up.)
#[test]
fn a_swept_key_stays_gone_after_its_segment_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    write_an_old_version_and_an_expiring_one(&mut store);
    clock.store(11_000, Ordering::Relaxed);
    for _ in 0..1000 {
        store.tick().unwrap();
        if store.stats().expired_reclaimed == 1 {
            break;
        }
    }
    assert_eq!(store.stats().expired_reclaimed, 1, "the sweep reclaimed the expired key");
    assert_eq!(store.stats().compactions, 0, "by the sweep, not by compaction");
    compact_then_check_the_expired_key_stays_gone(dir.path(), &clock, store);
}

/// The same for a key found expired at the open (never indexed): what
/// happened before an open is unknown, so every segment opened holds
/// orphans.
#[test]
fn a_key_expired_at_the_open_stays_gone_after_its_segment_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    write_an_old_version_and_an_expiring_one(&mut store);
    drop(store);
    clock.store(11_000, Ordering::Relaxed);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    assert_eq!(store.get(b"k"), None);
    compact_then_check_the_expired_key_stays_gone(dir.path(), &clock, store);
}

/// Directories named as the first segment's file would be once removed
/// (`000000.seg.<seq>.doomed`): a rename onto a directory fails, even for
/// root.
fn block_first_segments_removal(dir: &Path, block: bool) {
    for seq in 0..16u64 {
        let path = dir.join(format!("000000.seg.{seq}.doomed"));
        if block {
            std::fs::create_dir(&path).unwrap();
        } else {
            std::fs::remove_dir(&path).unwrap();
        }
    }
}

/// A compacted segment whose file cannot be renamed out of the way (a full
/// disk; here, a directory where its new name would go) stays in the log:
/// the tombstones that hide its records are kept, so no deleted key comes
/// back at the next open, and the removal is tried again until it works.
/// (The segment used to leave the log before its rename: compaction then
/// forgot the file and dropped the tombstones, and a reopen found the old
/// records again.)
#[test]
fn a_failed_removal_keeps_the_segment_and_the_tombstones_that_hide_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    write_old_versions_then_delete_them(&mut store);
    block_first_segments_removal(dir.path(), true);
    let mut failures = 0;
    for _ in 0..10_000 {
        match store.compact_step(32 << 10) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                assert!(err.to_string().contains("rename"), "{err}");
                failures += 1;
                if failures == 20 {
                    break;
                }
            }
        }
    }
    assert!(failures > 0, "the blocked removal failed");
    // A crash (no close), and the obstacle gone by the next start.
    drop(store);
    block_first_segments_removal(dir.path(), false);
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    check_old_versions_deleted(&store);
    // Nothing in the way now: compaction finishes, and every key is still
    // right, before and after another reopen.
    let before = store.stats().segments;
    compact_fully(&mut store, 32 << 10);
    assert!(store.stats().segments < before, "segments {before} -> {}", store.stats().segments);
    check_old_versions_deleted(&store);
    drop(store);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    check_old_versions_deleted(&store);
}

/// Tombstones must be copied while older segments exist. A segment made of
/// them is not garbage: compacting it would write another such segment,
/// forever (this once looped until the test gave up).
#[test]
fn segments_of_tombstones_do_not_compact_into_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    // A cold segment that stays, then many keys deleted.
    for k in 0..200u32 {
        store.set(format!("cold{k}").as_bytes(), &[7u8; 200], SetOptions::default()).unwrap();
    }
    for k in 0..4000u32 {
        store.set(format!("key{k}").as_bytes(), &[1u8; 100], SetOptions::default()).unwrap();
    }
    for k in 0..4000u32 {
        assert!(store.delete(format!("key{k}").as_bytes()).unwrap());
    }
    compact_fully(&mut store, 32 << 10);
    let stats = store.stats();
    assert!(stats.compactions < 40, "{stats:?}");
    assert!(stats.compacted_bytes < 8 << 20, "{stats:?}");
    for k in 0..200u32 {
        assert_eq!(store.get(format!("cold{k}").as_bytes()), Some(&[7u8; 200][..]));
    }
    for k in 0..4000u32 {
        assert_eq!(store.get(format!("key{k}").as_bytes()), None);
    }
}

/// Removed segment files still in `dir` (renamed, not yet deleted).
fn doomed_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".doomed")).count()
}

/// A compacted segment's file is renamed out of the way at once and
/// deleted later (by whoever takes it, or by `tick`), but for one kept as
/// the spare to recycle; one left behind by a crash is deleted at the next
/// open and never read as a segment.
#[test]
fn removed_segment_files_are_deleted_later_or_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    for round in 0..4u32 {
        for k in 0..1500u32 {
            store.set(format!("key{k}").as_bytes(), &round.to_le_bytes().repeat(30), SetOptions::default()).unwrap();
        }
    }
    compact_fully(&mut store, 32 << 10);
    let pending = store.take_doomed_files();
    assert!(!pending.is_empty(), "compaction removed segments");
    let spare = store.stats().segments_spare as usize;
    assert_eq!(spare, 1, "one removed segment is kept to be recycled");
    assert_eq!(doomed_files(dir.path()), pending.len() + spare, "renamed, not yet deleted");
    // A crash before they are deleted: the next open deletes them.
    drop(store);
    let (store, report) = Store::open(dir.path(), config(&clock)).unwrap();
    assert_eq!(doomed_files(dir.path()), 0);
    assert!(report.corrupt.is_empty() && report.quarantined.is_empty(), "{report:?}");
    for k in 0..1500u32 {
        assert_eq!(store.get(format!("key{k}").as_bytes()), Some(&3u32.to_le_bytes().repeat(30)[..]));
    }
}

/// `tick` deletes the removed files that nobody took, unless the owner
/// plans its flushes (`plan_flushes_elsewhere`, as a shard does): then it
/// leaves every one to the owner's `take_doomed_files`, since deleting one
/// can hold the thread on the disk (a synchronous discard).
#[test]
fn tick_leaves_removed_files_to_an_owner_that_plans_its_flushes() {
    for planned in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(10_000));
        let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
        if planned {
            store.plan_flushes_elsewhere();
        }
        for round in 0..4u32 {
            for k in 0..1500u32 {
                let value = round.to_le_bytes().repeat(30);
                store.set(format!("key{k}").as_bytes(), &value, SetOptions::default()).unwrap();
            }
        }
        // Compaction as a shard runs it: ticks, and the flushes that the
        // removals wait for.
        for _ in 0..1000 {
            if let Some(job) = store.begin_sync().unwrap() {
                let took = job.run();
                store.finish_sync(job, took).unwrap();
            }
            if !store.tick().unwrap() && !store.sync_due() {
                break;
            }
        }
        // A tick deletes before it compacts: one more for what the last
        // one removed.
        store.tick().unwrap();
        let stats = store.stats();
        assert!(stats.compactions >= 2, "{stats:?}");
        let spares = stats.segments_spare as usize;
        let left = store.take_doomed_files();
        if planned {
            assert!(!left.is_empty(), "every removed file but the spares is left to the owner: {stats:?}");
        } else {
            assert!(left.is_empty(), "tick deleted them: {left:?}");
        }
        assert_eq!(doomed_files(dir.path()), left.len() + spares, "planned: {planned}");
    }
}

/// Compaction keeps pace with writes when each batch pays what it owes
/// (`compact_owed`, as the server calls it after every batch) and nothing
/// else runs: the log stays within a small multiple of the live data
/// however long the overwrites go on. Without it the log only grows.
#[test]
fn writes_that_pay_for_their_garbage_keep_the_log_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let config = Config { compaction_garbage_ratio_min: 0.5, ..config(&clock) };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let keys = 2000u32;
    let value = [9u8; 200];
    let mut peak_segments = 0;
    for round in 0..40u32 {
        for batch in 0..keys / 16 {
            for k in batch * 16..batch * 16 + 16 {
                // Scattered overwrites, so that garbage is spread.
                let k = (k * 7919 + round) % keys;
                store.set(format!("key{k}").as_bytes(), &value, SetOptions::default()).unwrap();
            }
            store.compact_owed().unwrap();
        }
        peak_segments = peak_segments.max(store.stats().segments);
    }
    let stats = store.stats();
    let live_segments = stats.live_bytes.div_ceil(64 << 10);
    assert!(stats.compactions > 50, "{stats:?}");
    // Garbage at most the live data, plus the victims in progress.
    assert!(
        peak_segments <= 2 * live_segments + 4,
        "peak {peak_segments} segments for {live_segments} live: {stats:?}"
    );
    for k in 0..keys {
        assert_eq!(store.get(format!("key{k}").as_bytes()), Some(&value[..]), "key {k}");
    }
}

/// Segment 0 holds `k`'s first version (kept by live `keep` records);
/// `newest` writes its newest record (a value or a tombstone) amid junk,
/// in a later segment that the junk's rewrite then makes almost all
/// garbage: a victim compacted from the index rather than walked, were it
/// not for the record `newest` leaves.
fn an_old_version_under_a_segment_of_junk(store: &mut Store, newest: impl FnOnce(&mut Store)) {
    store.set(b"k", b"old value", SetOptions::default()).unwrap();
    fill(store, "keep", 1);
    fill(store, "junk_a", 2);
    newest(store);
    fill(store, "junk_b", 2);
    fill(store, "junk_a", 3);
    fill(store, "junk_b", 3);
}

/// Compacts everything there is to compact, crashes, reopens, and checks
/// that `k` has not come back.
/// `from_index`: whether some victim was compacted from the index.
fn compact_crash_and_check_k_is_gone(dir: &Path, clock: &Arc<AtomicU64>, mut store: Store, from_index: bool) {
    let before = store.stats().compactions;
    compact_fully(&mut store, 32 << 10);
    let stats = store.stats();
    assert!(stats.compactions > before, "{stats:?}");
    assert_eq!(stats.compactions_from_index > 0, from_index, "{stats:?}");
    assert_eq!(store.get(b"k"), None);
    drop(store);
    let (store, _) = Store::open(dir, config(clock)).unwrap();
    assert_eq!(store.get(b"k"), None, "the old version came back");
    for i in 0..300u32 {
        assert_eq!(store.get(format!("keep{i}").as_bytes()), Some(&[1u8; 250][..]));
        assert_eq!(store.get(format!("junk_b{i}").as_bytes()), Some(&[3u8; 250][..]));
    }
}

/// A pass over the index sees no dead record: a victim holding a
/// tombstone that hides an older segment's version is walked instead, and
/// the tombstone is kept.
#[test]
fn a_tombstone_in_a_victim_almost_all_garbage_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    an_old_version_under_a_segment_of_junk(&mut store, |s| assert!(s.delete(b"k").unwrap()));
    compact_crash_and_check_k_is_gone(dir.path(), &clock, store, false);
}

/// A key that expired in such a victim but is still indexed (no sweep has
/// reached it) leaves a tombstone when the pass reclaims it.
#[test]
fn a_key_expired_in_a_victim_almost_all_garbage_leaves_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let expiring = SetOptions { expiry: SetExpiry::At(10_500), ..SetOptions::default() };
    an_old_version_under_a_segment_of_junk(&mut store, |s| {
        s.set(b"k", b"new value", expiring).unwrap();
    });
    clock.store(11_000, Ordering::Relaxed);
    compact_crash_and_check_k_is_gone(dir.path(), &clock, store, true);
}

/// A key the expiry sweep reclaimed from such a victim left the index as
/// its key's newest record: the victim is walked, and the key looked up.
#[test]
fn a_key_swept_from_a_victim_almost_all_garbage_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let expiring = SetOptions { expiry: SetExpiry::At(10_500), ..SetOptions::default() };
    store.set(b"k", b"old value", SetOptions::default()).unwrap();
    fill(&mut store, "keep", 1);
    fill(&mut store, "junk_a", 2);
    store.set(b"k", b"new value", expiring).unwrap();
    fill(&mut store, "junk_b", 2);
    clock.store(11_000, Ordering::Relaxed);
    for _ in 0..1000 {
        if store.stats().expired_reclaimed == 1 {
            break;
        }
        store.tick().unwrap();
    }
    assert_eq!(store.stats().expired_reclaimed, 1, "the sweep reclaimed the expired key");
    assert_eq!(store.stats().compactions, 0, "by the sweep, not by compaction");
    fill(&mut store, "junk_a", 3);
    fill(&mut store, "junk_b", 3);
    compact_crash_and_check_k_is_gone(dir.path(), &clock, store, false);
}

/// Hot keys rewritten over and over leave victims almost all garbage,
/// compacted from the index: every key keeps its newest value, before and
/// after a crash.
#[test]
fn victims_compacted_from_the_index_keep_every_newest_value() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    for round in 0..60u8 {
        for i in 0..40u32 {
            store.set(format!("hot{i}").as_bytes(), &[round; 250], SetOptions::default()).unwrap();
        }
        // Every ten rounds, by when the segments of the six rounds before
        // are all garbage (compacted after each round, one was walked at
        // two thirds garbage).
        if round % 10 == 9 {
            compact_fully(&mut store, 8 << 10);
        }
    }
    let check = |store: &Store| {
        for i in 0..40u32 {
            assert_eq!(store.get(format!("hot{i}").as_bytes()), Some(&[59u8; 250][..]));
        }
    };
    check(&store);
    let stats = store.stats();
    assert!(stats.compactions_from_index >= 5, "{stats:?}");
    assert!(stats.segments <= 3, "{stats:?}");
    drop(store);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    check(&store);
}
/// Directories where the files of segments not yet made would go: making
/// one fails (a file cannot be created, nor a spare linked, over a
/// directory), as it would on a full disk. Returns them, for
/// `unblock_new_segments`.
fn block_new_segments(dir: &Path) -> Vec<PathBuf> {
    (0..64u32)
        .map(|slot| dir.join(format!("{slot:06}.seg")))
        .filter(|path| !path.exists())
        .inspect(|path| std::fs::create_dir(path).unwrap())
        .collect()
}

fn unblock_new_segments(blocked: Vec<PathBuf>) {
    blocked.iter().for_each(|path| std::fs::remove_dir(path).unwrap());
}

/// Every key's newest value; `None` for a deleted key.
fn check_values(store: &Store, expected: &HashMap<String, Option<u8>>) {
    for (key, &byte) in expected {
        assert_eq!(store.get(key.as_bytes()), byte.map(|b| [b; 250]).as_ref().map(|v| &v[..]), "{key}");
    }
}

/// Writes fillers until the log rolls to a new segment, then until that
/// one has less than 2 KiB left: the first victim's copies will need
/// another segment before any victim frees its slot.
fn fill_the_active_segment_almost(store: &mut Store, expected: &mut HashMap<String, Option<u8>>) {
    let mut put = |store: &mut Store, n: u32| {
        let key = format!("filler{n:04}");
        let live = store.stats().live_bytes;
        store.set(key.as_bytes(), &[9; 250], SetOptions::default()).unwrap();
        expected.insert(key, Some(9));
        store.stats().live_bytes - live
    };
    let segments = store.stats().segments;
    let mut n = 0;
    while store.stats().segments == segments {
        put(store, n);
        n += 1;
    }
    // The record that rolled is the new segment's first.
    let capacity = (64 << 10) - 32;
    let len = put(store, n);
    let mut used = 2 * len;
    while used + len + (2 << 10) <= capacity {
        n += 1;
        used += put(store, n);
    }
}

/// Compacts with no new segment to be had until a step fails in the middle
/// of the victims' copies; checks every value then, and again once
/// segments can be made and compaction has finished, and after a crash.
fn compaction_stopped_short_of_a_segment_resumes(
    dir: &Path,
    clock: &Arc<AtomicU64>,
    mut store: Store,
    expected: &mut HashMap<String, Option<u8>>,
    from_index: bool,
) {
    fill_the_active_segment_almost(&mut store, expected);
    let blocked = block_new_segments(dir);
    let failed = (0..10_000).find_map(|_| match store.compact_step(4 << 10) {
        Ok(true) => None,
        Ok(false) => panic!("compaction finished without a new segment: {:?}", store.stats()),
        Err(err) => Some(err),
    });
    assert!(failed.is_some(), "compaction never needed a new segment");
    check_values(&store, expected);
    // Stopped again while still blocked, nothing lost or doubled.
    assert!(store.compact_step(4 << 10).is_err());
    check_values(&store, expected);
    unblock_new_segments(blocked);
    compact_fully(&mut store, 4 << 10);
    check_values(&store, expected);
    let stats = store.stats();
    assert_eq!(stats.keys, expected.values().flatten().count() as u64, "{stats:?}");
    assert_eq!(stats.compactions_from_index > 0, from_index, "{stats:?}");
    assert!(stats.dead_bytes < stats.live_bytes / 2, "compaction got its garbage back: {stats:?}");
    drop(store);
    let (store, _) = Store::open(dir, config(clock)).unwrap();
    check_values(&store, expected);
}

/// Victims half garbage, walked record by record.
#[test]
fn a_walk_stopped_short_of_a_segment_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let mut expected = HashMap::new();
    for round in 1..=2u8 {
        for i in 0..1200u32 {
            // The first round's odd keys are overwritten and one in four
            // of the others deleted: over half of each of its segments is
            // garbage, and the tombstones must stay while it does.
            let key = format!("key{i}");
            if round == 1 || i % 2 == 1 {
                store.set(key.as_bytes(), &[round; 250], SetOptions::default()).unwrap();
                expected.insert(key, Some(round));
            } else if i % 8 == 0 {
                assert!(store.delete(key.as_bytes()).unwrap());
                expected.insert(key, None);
            }
        }
    }
    compaction_stopped_short_of_a_segment_resumes(dir.path(), &clock, store, &mut expected, false);
}

/// A victim whose only records to keep are tombstones (their keys' old
/// values sit in an older segment that stays): every append its walk
/// makes is a tombstone, so the one that finds no segment is a
/// tombstone's. Resumed, the walk writes the rest, and no deleted key
/// comes back after a crash.
#[test]
fn a_walk_of_tombstones_stopped_short_of_a_segment_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let mut expected = HashMap::new();
    let mut set = |store: &mut Store, key: String, byte: u8| {
        store.set(key.as_bytes(), &[byte; 250], SetOptions::default()).unwrap();
        expected.insert(key, Some(byte));
    };
    // The first segment: 150 short values deleted later (6% of it) and
    // values that stay, so that it is never a victim and the tombstones
    // must be kept.
    for i in 0..150u32 {
        store.set(format!("del{i:03}").as_bytes(), &[7; 8], SetOptions::default()).unwrap();
    }
    let first = store.stats().segments;
    let mut n = 0;
    while store.stats().segments == first {
        set(&mut store, format!("keep{n:04}"), 1);
        n += 1;
    }
    // The second: the tombstones, then junk rewritten in the third.
    for i in 0..150u32 {
        assert!(store.delete(format!("del{i:03}").as_bytes()).unwrap());
    }
    for round in [2u8, 3] {
        for i in 0..240u32 {
            set(&mut store, format!("junk{i:03}"), round);
        }
    }
    let stats = store.stats();
    assert_eq!(stats.compactions, 0, "{stats:?}");
    compaction_stopped_short_of_a_segment_resumes(dir.path(), &clock, store, &mut expected, false);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    for i in 0..150u32 {
        assert_eq!(store.get(format!("del{i:03}").as_bytes()), None, "del{i:03} came back");
    }
}

/// Victims almost all garbage, compacted from the index.
#[test]
fn an_index_pass_stopped_short_of_a_segment_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let mut expected = HashMap::new();
    for n in 0..6000u32 {
        // One record in twelve stays; the others rewrite 50 hot keys.
        let key = if n % 12 == 0 { format!("stay{n}") } else { format!("hot{}", n % 50) };
        let byte = (n % 251) as u8;
        store.set(key.as_bytes(), &[byte; 250], SetOptions::default()).unwrap();
        expected.insert(key, Some(byte));
    }
    compaction_stopped_short_of_a_segment_resumes(dir.path(), &clock, store, &mut expected, true);
}

/// The expiry sweep reclaims keys from a victim that an index pass has
/// begun: the pass can no longer tell that those keys need tombstones, so
/// it turns into a walk, and no old version comes back after a crash.
#[test]
fn a_sweep_in_the_middle_of_an_index_pass_leaves_no_key_to_come_back() {
    const KEYS: u32 = 20;
    let short = |store: &mut Store, prefix: &str, count: u32, byte: u8| {
        for i in 0..count {
            store.set(format!("{prefix}{i}").as_bytes(), &[byte; 8], SetOptions::default()).unwrap();
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(10_000));
    let (mut store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    short(&mut store, "k", KEYS, 0);
    short(&mut store, "keep", 3000, 1);
    short(&mut store, "junk_a", 6000, 2);
    // The new versions amid 100 keys that stay: the pass finds them in
    // batches of 32 live records in hash order (the index's hash has a
    // random seed), so one batch holding all 20 is out of the question.
    let expiring = SetOptions { expiry: SetExpiry::At(10_500), ..SetOptions::default() };
    for i in 0..KEYS {
        store.set(format!("k{i}").as_bytes(), b"new value", expiring).unwrap();
        short(&mut store, &format!("stay{i}_"), 5, 5);
    }
    short(&mut store, "junk_b", 6000, 2);
    short(&mut store, "bulk", 5000, 4);
    short(&mut store, "junk_a", 6000, 3);
    short(&mut store, "junk_b", 6000, 3);
    clock.store(11_000, Ordering::Relaxed);
    // Steps until the pass over the victim holding the k's has reclaimed
    // some of them (its first batch), not all.
    for _ in 0..10_000 {
        if store.stats().expired_reclaimed > 0 {
            break;
        }
        assert!(store.compact_step(1).unwrap(), "compaction finished first");
    }
    let first = store.stats().expired_reclaimed;
    assert!(first > 0 && first < u64::from(KEYS), "the first batch reclaimed {first} of {KEYS}");
    // The sweep reclaims the rest; then compaction goes on.
    for _ in 0..200 {
        store.tick().unwrap();
    }
    compact_fully(&mut store, 32 << 10);
    for i in 0..KEYS {
        assert_eq!(store.get(format!("k{i}").as_bytes()), None);
    }
    drop(store);
    let (store, _) = Store::open(dir.path(), config(&clock)).unwrap();
    let back: Vec<u32> = (0..KEYS).filter(|i| store.get(format!("k{i}").as_bytes()).is_some()).collect();
    assert!(back.is_empty(), "old versions came back after a crash: {back:?}");
}
