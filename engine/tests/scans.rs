//! Cursor scans (SCAN) visit every key present for the whole scan, and hash
//! range scans (moving ranges between shards) return exactly the keys whose
//! hash falls in the range.

use std::collections::HashSet;

use engine::{key_hash, Config, FsyncPolicy, SetOptions, Store};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config { segment_size_bytes: 1 << 20, fsync: FsyncPolicy::Never, ..Config::default() }).unwrap().0
}

#[test]
fn cursor_scan_visits_every_key_even_while_the_store_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    for k in 0..5000u32 {
        store.set(format!("k{k}").as_bytes(), b"v", SetOptions::default()).unwrap();
    }
    let mut seen = HashSet::new();
    let mut cursor = 0;
    for round in 0..100_000 {
        let mut batch = Vec::new();
        cursor = store.scan(cursor, 100, |k| batch.push(k.to_vec()));
        seen.extend(batch);
        if round == 10 {
            for k in 5000..20_000u32 {
                store.set(format!("k{k}").as_bytes(), b"v", SetOptions::default()).unwrap();
            }
        }
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "scan finished");
    for k in 0..5000u32 {
        assert!(seen.contains(format!("k{k}").as_bytes()), "k{k} missed");
    }
}

#[test]
fn hash_range_scan_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let keys: Vec<Vec<u8>> = (0..3000u32).map(|k| format!("key:{k}").into_bytes()).collect();
    for k in &keys {
        store.set(k, k, SetOptions::default()).unwrap();
    }
    for (start, end) in [(0u64, u64::MAX / 3), (u64::MAX / 2, u64::MAX / 4), (17, 17 + (1 << 62))] {
        let inside = |h: u64| if start < end { h > start && h <= end } else { h > start || h <= end };
        let want: HashSet<&[u8]> = keys.iter().map(|k| &k[..]).filter(|k| inside(key_hash(k))).collect();
        let mut got = HashSet::new();
        let mut cursor = Some(0);
        let mut batches = 0;
        while let Some(c) = cursor {
            batches += 1;
            assert!(batches < 1000);
            cursor = store.scan_hash_range(start, end, c, 128, |r| {
                assert_eq!(r.key, r.value);
                assert!(got.insert(r.key.to_vec()), "visited twice");
            });
        }
        let got: HashSet<&[u8]> = got.iter().map(|k| &k[..]).collect();
        assert_eq!(got, want);
        assert!(batches > 1, "the scan came in batches");
    }
}

#[test]
fn a_record_larger_than_a_segment_is_refused_with_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { segment_size_bytes: 64 << 10, fsync: FsyncPolicy::Never, ..Config::default() };
    let (mut store, _) = Store::open(dir.path(), config).unwrap();
    let key = vec![b'k'; 60 << 10];
    let err = store.set(&key, &[0u8; 5000], SetOptions::default()).unwrap_err();
    match err {
        engine::Error::ValueTooLarge { len, limit } => {
            assert_eq!(len, 5000);
            assert!(limit < 5000, "limit {limit} leaves room for the key");
        }
        other => panic!("unexpected {other}"),
    }
    // Nothing was half-written: the store still works.
    store.set(b"small", b"v", SetOptions::default()).unwrap();
    assert_eq!(store.get(b"small"), Some(&b"v"[..]));
}
