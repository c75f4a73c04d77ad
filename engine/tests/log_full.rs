//! A log bounded to a few segments (`Config::log_max_bytes`, the 32 GiB
//! reach of the index's locations by default) fills up with live data:
//! writes are refused with a clear error, while deletes still go through,
//! compaction then makes room, and the store opens again, full or not.

mod common;
use common::compact_fully;
use engine::{Config, Error, FsyncPolicy, SetOptions, Store};

const SEGMENT_BYTES: u64 = 64 << 10;
const SEGMENTS: u64 = 8;
const VALUE: [u8; 1000] = [7; 1000];

fn config() -> Config {
    Config {
        segment_size_bytes: SEGMENT_BYTES,
        log_max_bytes: SEGMENTS * SEGMENT_BYTES,
        fsync: FsyncPolicy::Never,
        ..Config::default()
    }
}

fn key(n: u32) -> Vec<u8> {
    format!("key{n:05}").into_bytes()
}

/// Writes distinct keys until the log refuses one; returns how many went in.
fn fill(store: &mut Store) -> u32 {
    for n in 0..10_000 {
        match store.set(&key(n), &VALUE, SetOptions::default()) {
            Ok(_) => {}
            Err(Error::LogFull { slots }) => {
                assert_eq!(u64::from(slots), SEGMENTS);
                return n;
            }
            Err(err) => panic!("unexpected error at key {n}: {err}"),
        }
    }
    panic!("a log of {SEGMENTS} segments took 10,000 values of 1000 bytes");
}

#[test]
fn a_full_log_takes_deletes_and_makes_room_for_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    let written = fill(&mut store);
    // Two segments' room is kept: six hold the values.
    assert_eq!(store.stats().segments, SEGMENTS - 2);
    assert!(written > 300, "only {written} values went in");
    // Deletes still go through, the last of them into a kept segment.
    for n in 0..written / 2 {
        assert!(store.delete(&key(n)).unwrap(), "key{n} was there");
    }
    assert!(matches!(store.set(b"more", &VALUE, SetOptions::default()), Err(Error::LogFull { .. })));
    compact_fully(&mut store, 32 << 10);
    assert!(store.stats().segments < SEGMENTS - 2, "compaction freed segments");
    for n in 0..written / 4 {
        store.set(&key(100_000 + n), &VALUE, SetOptions::default()).unwrap();
    }
    // After a crash, every key as it was left.
    drop(store);
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    for n in 0..written {
        let expected = if n < written / 2 { None } else { Some(&VALUE[..]) };
        assert_eq!(store.get(&key(n)), expected, "key{n}");
    }
    for n in 0..written / 4 {
        assert_eq!(store.get(&key(100_000 + n)), Some(&VALUE[..]));
    }
}

/// An open makes a new segment: a full log keeps the slot for it, even
/// after deletes took the one kept for them, and then takes deletes again.
/// With no slot left, an open goes on in the newest segment.
#[test]
fn a_full_log_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    let written = fill(&mut store);
    // Deletes until one's tombstone takes the slot kept for them.
    let mut deleted = 0;
    while store.stats().segments < SEGMENTS - 1 {
        assert!(deleted < written, "no delete needed a new segment");
        assert!(store.delete(&key(deleted)).unwrap());
        deleted += 1;
    }
    drop(store);
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.stats().segments, SEGMENTS);
    assert_eq!(store.get(&key(deleted - 1)), None);
    assert_eq!(store.get(&key(written - 1)), Some(&VALUE[..]));
    assert!(store.delete(&key(deleted)).unwrap());
    assert!(matches!(store.set(b"more", &VALUE, SetOptions::default()), Err(Error::LogFull { .. })));
    // Every slot is taken now: the next opens go on in the newest segment,
    // after a clean close (it was sealed) and after a crash.
    store.close().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.get(&key(deleted)), None);
    assert!(store.delete(&key(deleted + 1)).unwrap());
    drop(store);
    let (store, _) = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.stats().segments, SEGMENTS);
    assert_eq!(store.get(&key(deleted)), None);
    assert_eq!(store.get(&key(deleted + 1)), None);
    assert_eq!(store.get(&key(deleted + 2)), Some(&VALUE[..]));
    assert_eq!(store.get(&key(written - 1)), Some(&VALUE[..]));
}

#[test]
fn a_log_bound_under_four_segments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { log_max_bytes: 3 * SEGMENT_BYTES, ..config() };
    let err = Store::open(dir.path(), config).unwrap_err();
    assert!(err.to_string().contains("log bound"), "{err}");
}
