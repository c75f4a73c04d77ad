//! The next segment made ahead of need on another thread
//! (`begin_prepare`): the roll takes it, one that arrives too late is
//! discarded, and neither leaves anything a restart trips on.

use engine::{Config, FsyncPolicy, SetOptions, Store};

fn config() -> Config {
    Config { segment_size_bytes: 64 << 10, fsync: FsyncPolicy::Never, ..Config::default() }
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".seg")).count()
}

/// Writes `n` keys from `from`, 100-byte values.
fn write(store: &mut Store, from: u32, n: u32, v: u8) {
    for i in from..from + n {
        store.set(format!("k{i}").as_bytes(), &[v; 100], SetOptions::default()).unwrap();
    }
}

fn check(store: &Store, n: u32, v: u8) {
    for i in 0..n {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&[v; 100][..]), "k{i}");
    }
}

/// A store whose owner makes segments ahead, its active segment half full
/// of `k0`..`k299` (value 1), and the preparation it then plans: none
/// until an eighth of the segment is written.
fn half_full() -> (tempfile::TempDir, Store, engine::PrepareJob) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    store.plan_flushes_elsewhere();
    assert!(store.begin_prepare().is_none(), "the active segment is empty");
    // 40 records of 112 bytes: 4.4 KiB of the 64 KiB segment.
    write(&mut store, 0, 40, 1);
    assert!(store.begin_prepare().is_none(), "not an eighth of the active segment is written yet");
    write(&mut store, 40, 260, 1);
    let job = store.begin_prepare().expect("half full");
    (dir, store, job)
}

#[test]
fn the_roll_takes_the_prepared_segment() {
    let (dir, mut store, job) = half_full();
    assert!(store.begin_prepare().is_none(), "one at a time");
    let made = std::thread::spawn(move || job.run()).join().unwrap();
    store.finish_prepare(made);
    assert_eq!(segment_files(dir.path()), 2, "the prepared file exists before the roll");
    let before = store.stats().segments;
    write(&mut store, 300, 300, 1);
    assert_eq!(store.stats().segments, before + 1, "rolled once");
    assert_eq!(segment_files(dir.path()), 2, "into the prepared file, no other made");
    // A crash: the prepared segment's records come back like any other's.
    drop(store);
    let (mut store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.corrupt.is_empty() && report.torn.is_empty(), "{report:?}");
    check(&store, 600, 1);
    // A clean close with a prepared segment not yet taken: the checkpoint
    // still matches the files.
    store.plan_flushes_elsewhere();
    write(&mut store, 0, 300, 2);
    let job = store.begin_prepare().expect("half full");
    let made = job.run();
    store.finish_prepare(made);
    store.close().unwrap();
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.hint_used, "{report:?}");
    for i in 300..600 {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&[1u8; 100][..]));
    }
    for i in 0..300 {
        assert_eq!(store.get(format!("k{i}").as_bytes()), Some(&[2u8; 100][..]));
    }
}

#[test]
fn a_segment_made_too_late_is_discarded() {
    let (dir, mut store, job) = half_full();
    // The log rolls before the job is done: the roll makes its own, newer
    // segment.
    write(&mut store, 300, 600, 1);
    let files = segment_files(dir.path());
    let made = job.run();
    assert_eq!(segment_files(dir.path()), files + 1);
    store.finish_prepare(made);
    assert_eq!(segment_files(dir.path()), files, "discarded: renamed out of the way");
    write(&mut store, 900, 600, 1);
    // Overwritten, then a crash: the log is scanned, and the newest
    // versions are in the newest segments only if no record went into an
    // older one.
    write(&mut store, 0, 1500, 2);
    drop(store);
    let (mut store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(!report.hint_used && report.corrupt.is_empty(), "{report:?}");
    check(&store, 1500, 2);
    store.plan_flushes_elsewhere();
    write(&mut store, 0, 100, 3);
    store.close().unwrap();
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.hint_used, "{report:?}");
    check(&store, 100, 3);
}

/// A preparation still out when the store closes (the server's shutdown
/// grace ran out) finishes after the store was opened again: it must not
/// replace a file the new store made, nor lose a record.
#[test]
fn a_preparation_outliving_its_store_harms_nothing() {
    let (dir, store, job) = half_full();
    store.close().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    // The new store rolls at open and writes: its files take the slots.
    write(&mut store, 0, 600, 2);
    let _late = job.run();
    check(&store, 600, 2);
    drop(store);
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.corrupt.is_empty() && report.quarantined.is_empty(), "{report:?}");
    check(&store, 600, 2);
}
