//! Torn tails: the newest segment is damaged from a random offset to its
//! end, as a crash in the middle of writing leaves it. Recovery must come
//! back to exactly the state after some prefix of the writes (never a mix,
//! never a damaged value), and later writes must not bring back stale bytes.

use std::fs;
use std::path::{Path, PathBuf};

use engine::{Config, FsyncPolicy, SetOptions, Store};
use proptest::prelude::*;

const KEYS: u32 = 40;

fn config() -> Config {
    Config {
        segment_size_bytes: 64 << 10,
        value_len_max_bytes: 8 << 10,
        fsync: FsyncPolicy::Never,
        ..Config::default()
    }
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let bytes = fs::read(&path).unwrap();
            let seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
            if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                best = Some((seq, path));
            }
        }
    }
    best.unwrap().1
}

fn state(store: &Store) -> Vec<Option<Vec<u8>>> {
    (0..KEYS).map(|k| store.get(format!("k{k}").as_bytes()).map(<[u8]>::to_vec)).collect()
}

fn run(writes: usize, cut_permille: u32, garbage: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), config()).unwrap();
    let mut snapshots = vec![state(&store)];
    for i in 0..writes {
        let key = format!("k{}", i as u32 % KEYS);
        let value = vec![(i % 251) as u8; 100 + (i * 37) % 900];
        if i % 9 == 8 {
            store.delete(key.as_bytes()).unwrap();
        } else {
            store.set(key.as_bytes(), &value, SetOptions::default()).unwrap();
        }
        snapshots.push(state(&store));
    }
    drop(store);

    let path = newest_segment(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 1;
    let cut = 32 + (used.saturating_sub(32)) * cut_permille as usize / 1000;
    for (i, b) in bytes[cut..used.max(cut)].iter_mut().enumerate() {
        *b = if garbage { (i as u8).wrapping_mul(31) ^ 0x5a } else { 0 };
    }
    fs::write(&path, &bytes).unwrap();

    let (mut store, report) = Store::open(dir.path(), config()).unwrap();
    let recovered = state(&store);
    let prefix = snapshots.iter().rposition(|s| *s == recovered);
    assert!(prefix.is_some(), "recovered state is no prefix of the writes; report {report:?}");

    // New writes after the cut, then a crash: the stale bytes past the cut
    // must stay dead.
    store.set(b"k0", b"after", SetOptions::default()).unwrap();
    let mut expected = recovered.clone();
    expected[0] = Some(b"after".to_vec());
    drop(store);
    let (store, report) = Store::open(dir.path(), config()).unwrap();
    assert_eq!(state(&store), expected, "{report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn recovery_keeps_a_prefix(writes in 1usize..400, cut in 0u32..1000, garbage in any::<bool>()) {
        run(writes, cut, garbage);
    }
}
