//! Cache mode against an exact LRU on a zipf read-through workload (see
//! `ringkv_benches::cache_sim` for how both get the same memory).
//!
//! ```text
//! cache_hit_ratio [keys] [requests] [value_len] [ratio] [exponent]
//! ```
//!
//! Defaults: 1 000 000 keys, 20 000 000 requests, 64-byte values, a
//! working set 4 times the bound, zipf 0.99. Prints `name: value` lines.

use ringkv_benches::cache_sim::compare;
use ringkv_benches::scratch_parent;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> f64 {
        args.get(i).map_or(default, |s| s.replace('_', "").parse().expect("a number"))
    };
    let (keys, requests, value_len) = (arg(0, 1e6) as usize, arg(1, 2e7) as usize, arg(2, 64.0) as usize);
    let (ratio, exponent) = (arg(3, 4.0), arg(4, 0.99));
    let started = std::time::Instant::now();
    let c = compare(&scratch_parent(), keys, requests, value_len, ratio, exponent);
    println!("keys: {keys}\nrequests: {requests}\nvalue_len: {value_len}\nworking_set_over_bound: {ratio}");
    println!("zipf_exponent: {exponent}\nmemory_max_bytes: {}", c.memory_max_bytes);
    println!("store_mode_bytes_per_key: {:.1}", c.store_bytes_per_key);
    println!("lru_capacity_keys: {}\nlru_hit_ratio: {:.4}", c.lru_capacity_keys, c.lru_hit_ratio);
    println!("cache_hit_ratio: {:.4}", c.cache.hit_ratio);
    println!("cache_bytes_per_key: {:.1}", c.cache.bytes_per_key);
    println!("cache_memory_used_max_bytes: {}", c.cache.memory_used_max_bytes);
    println!("cache_evicted_keys: {}", c.cache.evicted_keys);
    println!("seconds: {:.1}", started.elapsed().as_secs_f64());
}
