//! Helpers shared by the engine's integration tests.

use engine::Store;

/// Runs compaction in steps of `step_bytes` until no victim is left,
/// failing the test if it never gets there.
pub fn compact_fully(store: &mut Store, step_bytes: usize) {
    for _ in 0..10_000 {
        if !store.compact_step(step_bytes).unwrap() {
            return;
        }
    }
    panic!("compaction did not finish");
}
