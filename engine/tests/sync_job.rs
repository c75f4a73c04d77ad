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
