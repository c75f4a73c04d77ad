//! The kernel advice on segment mappings follows the fsync policy: a store
//! that flushes every write must not append into large folios (each flush
//! would write them back whole), and the others want them. Read back from
//! the mappings' `VmFlags` in /proc/self/smaps (`rr` is `MADV_RANDOM`, `hg`
//! is `MADV_HUGEPAGE`).

use engine::{Config, FsyncPolicy, SetOptions, Store};

/// The `VmFlags` of every mapping of a segment file in `dir`.
fn segment_vm_flags(dir: &std::path::Path) -> Vec<Vec<String>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.to_str().unwrap();
    let mut found = Vec::new();
    let mut in_segment = false;
    for line in smaps.lines() {
        // A mapping's first line is "start-end perms offset dev inode path".
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            in_segment = fields.get(5).is_some_and(|p| p.starts_with(dir) && p.ends_with(".seg"));
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if in_segment {
                found.push(flags.split_whitespace().map(str::to_owned).collect());
            }
        }
    }
    found
}

fn check(fsync: FsyncPolicy, wanted: &str, unwanted: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { segment_size_bytes: 4 << 20, fsync, ..Config::default() };
    // Once as made, once as opened by recovery.
    for round in 0..2 {
        let (mut store, _) = Store::open(dir.path(), config.clone()).unwrap();
        store.set(b"key", b"value", SetOptions::default()).unwrap();
        let flags = segment_vm_flags(dir.path());
        assert!(!flags.is_empty(), "round {round}: no segment mapping found");
        for f in &flags {
            assert!(f.iter().any(|x| x == wanted), "{fsync:?}, round {round}: {wanted} missing from {f:?}");
            assert!(!f.iter().any(|x| x == unwanted), "{fsync:?}, round {round}: {unwanted} in {f:?}");
        }
        store.close().unwrap();
    }
}

#[test]
fn under_always_segments_are_advised_random_and_not_huge() {
    check(FsyncPolicy::Always, "rr", "hg");
}

#[test]
fn under_other_policies_segments_are_advised_huge_and_not_random() {
    check(FsyncPolicy::EverySec, "hg", "rr");
    check(FsyncPolicy::Never, "hg", "rr");
}
