//! Cache mode keeps what is read: on a zipf(0.99) read-through workload
//! whose working set is four times the memory bound, its hit ratio is at
//! least an exact LRU's (given the same memory) minus two points, it never
//! uses more memory than the bound, and it holds a key in no more memory
//! than store mode does.

use ringkv_benches::cache_sim::compare;

#[test]
fn zipf_hit_ratio_is_within_two_points_of_exact_lru() {
    let dir = tempfile::tempdir().unwrap();
    let c = compare(dir.path(), 100_000, 600_000, 64, 4.0, 0.99);
    eprintln!("{c:#?}");
    assert!(c.cache.evicted_keys > 0, "the workload must overflow the cache");
    assert!(
        c.cache.memory_used_max_bytes <= c.memory_max_bytes,
        "used {} of {}",
        c.cache.memory_used_max_bytes,
        c.memory_max_bytes
    );
    assert!(
        c.cache.hit_ratio >= c.lru_hit_ratio - 0.02,
        "cache hit ratio {:.4}, exact LRU {:.4}",
        c.cache.hit_ratio,
        c.lru_hit_ratio
    );
}
