//! A flush planned with `begin_sync` and run elsewhere: it covers what was
//! written before it was planned, leaves later writes pending, and a failed
//! one poisons the store exactly as an inline `sync` would.

use engine::{Config, Error, FsyncPolicy, SetOptions, Store};

fn config() -> Config {
    Config { segment_size_bytes: 64 << 10, fsync: FsyncPolicy::EverySec, ..Config::default() }
}

#[test]
fn a_job_covers_what_was_written_before_it_was_planned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    assert!(store.begin_sync().unwrap().is_none(), "nothing written yet");
    // Enough to roll segments, so sealed segments are in the job too.
    for i in 0..2000u32 {
        store.set(format!("k{i}").as_bytes(), &[7u8; 100], SetOptions::default()).unwrap();
    }
    let job = store.begin_sync().unwrap().expect("writes to flush");
    store.set(b"later", b"x", SetOptions::default()).unwrap();
    let outcome = std::thread::spawn(move || {
        let outcome = job.run();
        (job, outcome)
    })
    .join()
    .unwrap();
    store.finish_sync(outcome.0, outcome.1).unwrap();
    assert!(store.needs_sync(), "the write after planning is still pending");
    let job = store.begin_sync().unwrap().expect("the later write");
    let took = job.run();
    store.finish_sync(job, took).unwrap();
    assert!(!store.needs_sync());
    assert!(store.begin_sync().unwrap().is_none());
    assert_eq!(store.stats().sync_durations.count, 2);
}

#[test]
fn a_failed_job_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    store.set(b"k", b"v", SetOptions::default()).unwrap();
    let job = store.begin_sync().unwrap().expect("a write to flush");
    let failed = store.finish_sync(job, Err(std::io::Error::other("disk on fire")));
    assert!(matches!(failed, Err(Error::Poisoned { .. })));
    assert!(matches!(store.set(b"k2", b"v", SetOptions::default()), Err(Error::Poisoned { .. })));
    assert_eq!(store.get(b"k"), Some(&b"v"[..]), "reads still work");
    assert!(store.stats().poisoned);
}

/// The policies under which full segments wait for a flush instead of
/// flushing when they roll: `everysec` always, `never` when the owner runs
/// the flushes (`plan_flushes_elsewhere`, as the server does).
const DEFERRING: [FsyncPolicy; 2] = [FsyncPolicy::EverySec, FsyncPolicy::Never];

fn open_deferring(dir: &std::path::Path, config: Config) -> (Store, engine::RecoveryReport) {
    let fsync = config.fsync;
    let (mut store, report) = Store::open(dir, config).unwrap();
    if fsync == FsyncPolicy::Never {
        store.plan_flushes_elsewhere();
    }
    (store, report)
}

/// Plans a flush, runs it, records it.
fn flush(store: &mut Store) {
    let job = store.begin_sync().unwrap().expect("something to flush");
    let took = job.run();
    store.finish_sync(job, took).unwrap();
}

/// Compaction steps until there is nothing more to do now (bounded).
fn compact(store: &mut Store) {
    for _ in 0..1000 {
        if !store.compact_step(1 << 20).unwrap() {
            break;
        }
    }
}

/// Runs `test` with a fresh store under each deferring policy; compaction
/// takes segments with a fifth of garbage.
fn under_each_deferring(test: fn(FsyncPolicy, &std::path::Path, Config, Store)) {
    for fsync in DEFERRING {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { compaction_garbage_ratio_min: 0.2, fsync, ..config() };
        let (store, _) = open_deferring(dir.path(), config.clone());
        test(fsync, dir.path(), config, store);
    }
}

/// A full segment is sealed only once a flush has made its records durable
/// (a roll waits for no disk); until then it is not compacted, and a crash
/// leaves it to recovery's torn-tail rule.
#[test]
fn full_segments_are_sealed_after_their_flush() {
    under_each_deferring(full_segments_are_sealed_after_their_flush_under);
}

fn full_segments_are_sealed_after_their_flush_under(
    fsync: FsyncPolicy,
    dir: &std::path::Path,
    config: Config,
    mut store: Store,
) {
    for round in 0..3u32 {
        for i in 0..600u32 {
            store.set(format!("k{i}").as_bytes(), &round.to_le_bytes().repeat(25), SetOptions::default()).unwrap();
        }
    }
    assert!(store.stats().segments >= 4, "{:?}", store.stats());
    assert!(!store.compact_step(1 << 20).unwrap(), "nothing sealed, nothing to compact yet");
    assert!(store.sync_due(), "full segments wait for a flush ({fsync:?})");
    // A crash now: every record is back (the page cache has them all).
    drop(store);
    let (mut store, report) = open_deferring(dir, config.clone());
    assert!(report.corrupt.is_empty() && report.torn.is_empty(), "{report:?}");
    for i in 0..600u32 {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&2u32.to_le_bytes().repeat(25)[..]));
    }
    // Recovery sealed what it found; new full segments wait for a flush.
    for i in 0..600u32 {
        store.set(format!("k{i}").as_bytes(), &9u32.to_le_bytes().repeat(25), SetOptions::default()).unwrap();
    }
    flush(&mut store);
    flush(&mut store);
    compact(&mut store);
    assert!(store.stats().compactions > 0, "{fsync:?}: {:?}", store.stats());
    store.close().unwrap();
    let (store, report) = Store::open(dir, config).unwrap();
    assert!(report.hint_used, "a clean close seals everything: {report:?}");
    for i in 0..600u32 {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&9u32.to_le_bytes().repeat(25)[..]));
    }
}

/// A compacted segment is deleted only once a flush has made the copies of
/// its live records durable, and the store says it wants that flush.
#[test]
fn a_victim_waits_for_the_flush_of_its_copies() {
    under_each_deferring(a_victim_waits_for_the_flush_of_its_copies_under);
}

fn a_victim_waits_for_the_flush_of_its_copies_under(
    fsync: FsyncPolicy,
    _: &std::path::Path,
    _: Config,
    mut store: Store,
) {
    copy_a_victim(fsync, &mut store);
    flush(&mut store);
    compact(&mut store);
    assert!(store.stats().compactions >= 1, "{:?}", store.stats());
    check_copied(&store);
}

/// Writes `k0`..`k1199`, overwrites half of them (the old segments are
/// half garbage, half live records that compaction must copy) and
/// compacts: the victims are copied and wait for the flush of the copies.
fn copy_a_victim(fsync: FsyncPolicy, store: &mut Store) {
    for i in 0..1200u32 {
        store.set(format!("k{i}").as_bytes(), &[1u8; 100], SetOptions::default()).unwrap();
    }
    for i in (0..1200u32).step_by(2) {
        store.set(format!("k{i}").as_bytes(), &[2u8; 100], SetOptions::default()).unwrap();
    }
    flush(store);
    flush(store);
    compact(store);
    assert_eq!(store.stats().compactions, 0, "copies not yet durable: the victim stays ({fsync:?})");
    assert!(store.sync_due(), "the victim waits for a flush ({fsync:?})");
}

/// The keys `copy_a_victim` wrote have their newest values.
fn check_copied(store: &Store) {
    for i in 0..1200u32 {
        let want = if i % 2 == 0 { 2u8 } else { 1u8 };
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&[want; 100][..]), "k{i}");
    }
}

/// A victim copied while compaction ran (an idle tick) is removed by the
/// flush that makes its copies durable, even once writes have resumed that
/// leave compaction unwanted (garbage below the live data): it must not
/// stay, holding its file and asking for a flush every tick.
#[test]
fn a_waiting_victim_goes_with_its_flush_while_writes_go_on() {
    under_each_deferring(a_waiting_victim_goes_with_its_flush_while_writes_go_on_under);
}

fn a_waiting_victim_goes_with_its_flush_while_writes_go_on_under(
    fsync: FsyncPolicy,
    _: &std::path::Path,
    _: Config,
    mut store: Store,
) {
    copy_a_victim(fsync, &mut store);
    // Writes resume: new keys only, no garbage, so compaction is not
    // wanted and nothing but the flush can remove the victims.
    for i in 0..300u32 {
        store.set(format!("new{i}").as_bytes(), &[3u8; 100], SetOptions::default()).unwrap();
        store.compact_owed().unwrap();
        assert!(!store.tick().unwrap(), "no compaction while it is not wanted");
    }
    flush(&mut store);
    assert!(store.stats().compactions >= 1, "the flush removed the waiting victims: {:?}", store.stats());
    // Their removal rides on the next flush; then nothing is due.
    flush(&mut store);
    assert!(!store.sync_due(), "no flush asked for once the victims are gone ({fsync:?}): {:?}", store.stats());
    check_copied(&store);
}

/// A compacted segment's removal is durable only after a directory flush.
/// Until then it may come back after a crash, so a tombstone that hides
/// one of its keys must not be dropped by the compaction of a newer
/// segment: here the newer segment goes without any flush in between
/// (nothing of it was copied), and a crash may keep its removal while
/// losing the older one's.
#[test]
fn tombstones_outlive_removals_not_yet_durable() {
    under_each_deferring(tombstones_outlive_removals_not_yet_durable_under);
}

fn tombstones_outlive_removals_not_yet_durable_under(
    fsync: FsyncPolicy,
    dir: &std::path::Path,
    config: Config,
    mut store: Store,
) {
    let set =
        |store: &mut Store, key: String, v: u8| store.set(key.as_bytes(), &[v; 100], SetOptions::default()).unwrap();
    let fill_segment = |store: &mut Store, prefix: &str, v: u8| {
        let segments = store.stats().segments;
        let mut keys = Vec::new();
        while store.stats().segments == segments {
            let key = format!("{prefix}{}", keys.len());
            set(store, key.clone(), v);
            keys.push(key);
        }
        keys
    };
    // Segment 0: the key, then fillers. Segment 1: its tombstone, then
    // fillers. Then every filler is overwritten: both are all garbage but
    // for the tombstone.
    set(&mut store, "gone".into(), 1);
    let mut keys = fill_segment(&mut store, "a", 1);
    assert!(store.delete(b"gone").unwrap());
    keys.extend(fill_segment(&mut store, "b", 1));
    for key in &keys {
        set(&mut store, key.clone(), 2);
    }
    flush(&mut store);
    flush(&mut store);
    // No flush from here on: segment 0 goes first (all garbage), then
    // segment 1.
    compact(&mut store);
    assert_eq!(store.stats().compactions, 1, "{fsync:?}: segment 1 waits for the flush of the tombstone's copy");
    assert!(store.sync_due(), "{fsync:?}: the removal waits for a directory flush");
    // A crash that lost segment 0's removal (a rename in the directory).
    let first = dir.join("000000.seg");
    assert!(!first.exists(), "{fsync:?}: slot 0 not reused");
    let doomed = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".seg.0."))
        .expect("segment 0 renamed, not yet deleted");
    std::fs::rename(doomed, &first).unwrap();
    drop(store);
    let (store, _) = open_deferring(dir, config);
    assert_eq!(store.get(b"gone"), None, "{fsync:?}: a deleted key came back");
    for key in &keys {
        assert_eq!(store.get(key.as_bytes()), Some(&[2u8; 100][..]), "{fsync:?}: {key}");
    }
}

/// The directory flush that makes removals durable comes with the next
/// flush, planned (`SyncJob`) or inline (`sync`, which `tick` runs for an
/// engine-only caller), even when nothing else is left to flush, and then
/// nothing more is due.
#[test]
fn removals_settle_with_the_next_flush() {
    for fsync in DEFERRING {
        for planned in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            // Only segments without a live record are victims: removing
            // them copies nothing, so the removal is all there is to flush.
            let config = Config { compaction_garbage_ratio_min: 0.99, fsync, ..config() };
            let (mut store, _) = open_deferring(dir.path(), config);
            for round in 0..3u8 {
                for i in 0..600u32 {
                    store.set(format!("k{i}").as_bytes(), &[round; 100], SetOptions::default()).unwrap();
                }
            }
            flush(&mut store);
            flush(&mut store);
            assert!(!store.needs_sync(), "{fsync:?}: all durable");
            compact(&mut store);
            assert!(store.stats().compactions > 0, "{fsync:?}: {:?}", store.stats());
            assert!(store.sync_due() && store.needs_sync(), "{fsync:?}: a removal waits for the directory flush");
            if planned {
                flush(&mut store);
            } else {
                store.sync().unwrap();
            }
            assert!(!store.sync_due() && !store.needs_sync(), "{fsync:?}, planned {planned}: settled");
        }
    }
}

/// `everysec` asks for its flush once a second by the store's clock, and
/// at once when that clock steps back (else none would come until it
/// caught up with the last flush).
#[test]
fn everysec_is_due_after_a_second_and_when_the_clock_steps_back() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(AtomicU64::new(10_000_000));
    let config = Config { clock: engine::Clock::Manual(clock.clone()), ..config() };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    store.set(b"k", b"v", SetOptions::default()).unwrap();
    store.sync().unwrap();
    assert!(!store.sync_due(), "just flushed");
    clock.fetch_add(999, Ordering::Relaxed);
    assert!(!store.sync_due(), "not a second yet");
    clock.fetch_add(1, Ordering::Relaxed);
    assert!(store.sync_due(), "a second since the flush");
    store.sync().unwrap();
    clock.fetch_sub(3_600_000, Ordering::Relaxed);
    assert!(store.sync_due(), "the clock stepped back an hour");
    store.sync().unwrap();
    assert!(!store.sync_due(), "flushed at the new time");
}
