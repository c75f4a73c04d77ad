//! Recycled segments: a compacted segment's file becomes a later segment
//! with its old records still in it. Those records must never be served
//! again, after a crash or a clean restart, whichever thread made the
//! segment; and the files leave nothing behind.

mod common;
use common::compact_fully;
use engine::{Config, FsyncPolicy, SetOptions, Store};

const SEGMENT_BYTES: usize = 64 << 10;
/// Enough live keys for a log of more than four segments, which keeps
/// spares.
const KEYS: u32 = 3000;

fn config() -> Config {
    Config {
        segment_size_bytes: SEGMENT_BYTES as u64,
        fsync: FsyncPolicy::Never,
        compaction_garbage_ratio_min: 0.2,
        ..Config::default()
    }
}

/// Every record is the same size (16-byte keys, 100-byte values), so that
/// the old records of a recycled file start exactly where new records do:
/// the worst case, where a stale record could pass for the next new one.
fn key(i: u32) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn write(store: &mut Store, keys: std::ops::Range<u32>, v: u8) {
    for i in keys {
        store.set(&key(i), &[v; 100], SetOptions::default()).unwrap();
    }
}

fn files(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(suffix)).count()
}

/// Writes keys 0..KEYS with value 1 (several segments), overwrites them
/// all with value 2, compacts the first segments away (one kept as the
/// spare), then writes a few records of other keys: with small segments
/// the log rolls into the recycled file, whose old records of keys
/// 0..KEYS (value 1) then lie right after the new ones.
fn store_with_a_recycled_head(dir: &std::path::Path, plan_elsewhere: bool) -> Store {
    let (mut store, _) = Store::open(dir, config()).unwrap();
    if plan_elsewhere {
        store.plan_flushes_elsewhere();
    }
    write(&mut store, 0..KEYS, 1);
    write(&mut store, 0..KEYS, 2);
    let mut rounds = 0;
    while store.stats().segments_recycled == 0 {
        rounds += 1;
        assert!(rounds < 100, "no segment was recycled: {:?}", store.stats());
        compact_fully(&mut store, 1 << 20);
        if plan_elsewhere {
            // What the server does: flushes and preparations on another
            // thread, as the store asks.
            if let Some(job) = store.begin_sync().unwrap() {
                let took = job.run();
                store.finish_sync(job, took).unwrap();
            }
            if let Some(job) = store.begin_prepare() {
                let made = std::thread::spawn(move || job.run()).join().unwrap();
                store.finish_prepare(made);
            }
        }
        write(&mut store, 1_000_000..1_000_100, 3);
    }
    store
}

fn check(store: &Store) {
    for i in 0..KEYS {
        assert_eq!(store.get(&key(i)), Some(&[2u8; 100][..]), "key {i}");
    }
}

#[test]
fn old_records_of_a_recycled_file_never_come_back_after_a_crash() {
    for plan_elsewhere in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_recycled_head(dir.path(), plan_elsewhere);
        check(&store);
        drop(store);
        let (store, report) = Store::open(dir.path(), config()).unwrap();
        assert!(report.corrupt.is_empty() && report.torn.is_empty() && report.quarantined.is_empty(), "{report:?}");
        check(&store);
        assert_eq!(files(dir.path(), ".doomed"), 0, "the spare left by the crash is deleted at open");
    }
}

#[test]
fn a_clean_close_deletes_the_spare_and_the_checkpoint_matches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_a_recycled_head(dir.path(), false);
    // Another victim, kept as the spare this time.
    write(&mut store, 2_000_000..2_001_000, 4);
    write(&mut store, 2_000_000..2_001_000, 5);
    compact_fully(&mut store, 1 << 20);
    assert_eq!(store.stats().segments_spare, 1, "{:?}", store.stats());
    store.close().unwrap();
    assert_eq!(files(dir.path(), ".doomed"), 0);
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.hint_used, "{report:?}");
    check(&store);
    for i in 2_000_000..2_001_000 {
        assert_eq!(store.get(&key(i)), Some(&[5u8; 100][..]), "key {i}");
    }
}

/// A segment written by a build before keyed checksums (format version 1)
/// is read, served, and compacted into keyed segments.
#[test]
fn version_1_segments_are_read_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = vec![0u8; SEGMENT_BYTES];
    seg[0..8].copy_from_slice(b"RINGKVSG");
    seg[8..10].copy_from_slice(&1u16.to_le_bytes());
    seg[10] = 16; // 2^16 bytes
    seg[11] = 0; // unsealed
    seg[12..16].copy_from_slice(&0u32.to_le_bytes());
    seg[16..24].copy_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&seg[..28]);
    seg[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut at = 32;
    for i in 0..100 {
        let k = key(i);
        let value = [7u8; 100];
        let spec = engine::record::RecordSpec { key: &k, value: &value, expires_at_ms: None, tombstone: false };
        let len = spec.encoded_len();
        spec.encode_into(&mut seg[at..at + len], 0);
        at += len;
    }
    std::fs::write(dir.path().join("000000.seg"), &seg).unwrap();
    let (mut store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.corrupt.is_empty() && report.torn.is_empty() && report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.records, 100);
    // Half the keys overwritten: the old segment is worth compacting, and
    // its live half moves to a keyed segment.
    write(&mut store, 0..50, 8);
    write(&mut store, 5_000_000..5_000_600, 9);
    compact_fully(&mut store, 1 << 20);
    assert!(store.stats().compactions >= 1, "{:?}", store.stats());
    let check = |store: &Store| {
        for i in 0..100 {
            let want = if i < 50 { [8u8; 100] } else { [7u8; 100] };
            assert_eq!(store.get(&key(i)), Some(&want[..]), "key {i}");
        }
    };
    check(&store);
    drop(store);
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert!(report.corrupt.is_empty() && report.torn.is_empty(), "{report:?}");
    check(&store);
}

/// Under `always`, a segment opened at startup is never recycled: the
/// recovery scan read it ahead into large folios, and appends into those
/// would make every flush write back whole folios. Segments made since
/// are recycled as usual.
#[test]
fn under_always_segments_opened_at_startup_are_not_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { fsync: FsyncPolicy::Always, ..config() };
    let (mut store, _) = Store::open(dir.path(), config.clone()).unwrap();
    write(&mut store, 0..KEYS, 1);
    store.close().unwrap();

    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let at_start = store.stats().segments;
    assert!(at_start > 4, "the test needs a log that keeps spares: {:?}", store.stats());
    // Overwritten, every segment from before the restart is garbage and
    // compacted away; none of them may come back as a new segment.
    write(&mut store, 0..KEYS, 2);
    compact_fully(&mut store, 1 << 20);
    write(&mut store, 1_000_000..1_000_100, 3);
    assert_eq!(store.stats().segments_recycled, 0, "a segment opened at startup was recycled");
    // Segments made since the restart are recycled once compacted.
    let mut rounds = 0;
    while store.stats().segments_recycled == 0 {
        rounds += 1;
        assert!(rounds < 100, "no segment made since the restart was recycled: {:?}", store.stats());
        write(&mut store, 0..KEYS, 4);
        compact_fully(&mut store, 1 << 20);
        write(&mut store, 1_000_000..1_000_100, 5);
    }
    for i in 0..KEYS {
        assert_eq!(store.get(&key(i)), Some(&[4u8; 100][..]), "key {i}");
    }
}
