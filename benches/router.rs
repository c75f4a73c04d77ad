//! Router benches: lookup time at 3, 10 and 100 members x 256 tokens (bucket
//! table, plain binary search, Ketama tokens, and jump consistent hash as a
//! reference), and, printed before the timings, the balance and data-movement
//! figures of the balanced placement beside Ketama-style random tokens.
//!
//! Run: `cargo bench -p ringkv-benches --bench router -- --quick`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use router::{plan, InitConfig, NodeId, Placement, Ring, RingDescription};

/// Hashes looked up per iteration batch: enough to defeat branch prediction
/// and to touch the whole token array, as real traffic does.
const LOOKUP_BATCH: usize = 4096;

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).expect("valid node id")
}

fn ring(members: usize, tokens: u32, placement: Placement) -> Ring {
    let config = InitConfig {
        nodes: (1..=members).map(|i| (node(i), format!("127.0.0.1:{}", 7000 + i))).collect(),
        shards_per_node: 1,
        tokens_per_weight: tokens,
        placement,
    };
    Ring::new(RingDescription::init(&config).expect("init")).expect("valid")
}

fn join(ring: &Ring, id: usize) -> Ring {
    let description = ring.description().add_node(node(id), "127.0.0.1:1".into(), None, 1).expect("join");
    Ring::new(description).expect("valid")
}

fn remove(ring: &Ring, id: &NodeId) -> Ring {
    let description = ring.description().remove_node(id).expect("remove");
    Ring::new(description).expect("valid")
}

/// Jump consistent hash (Lamping and Veach, 2014), the reference for lookup
/// speed: no memory at all, but it cannot weight members or name ranges.
fn jump_consistent_hash(mut key: u64, buckets: i64) -> i64 {
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b
}

fn name(placement: Placement) -> &'static str {
    match placement {
        Placement::Balanced => "balanced",
        Placement::Ketama => "ketama",
    }
}

/// Prints balance and movement figures; they are the point of the placement,
/// so they are printed with the timings rather than hidden in a test.
fn print_figures() {
    eprintln!("== max/mean ownership (1.0 is perfect) ==");
    eprintln!("{:>8} {:>7} {:>12} {:>12} {:>16}", "members", "tokens", "balanced", "ketama", "balanced (keys)");
    for members in [3, 10, 100] {
        for tokens in [16, 64, 256] {
            let balanced = ring(members, tokens, Placement::Balanced);
            let ketama = ring(members, tokens, Placement::Ketama);
            eprintln!(
                "{members:>8} {tokens:>7} {:>12.6} {:>12.6} {:>16.6}",
                balanced.balance().max_over_mean,
                ketama.balance().max_over_mean,
                balanced.balance_with_keys(1_000_000).keys.expect("sampled").max_over_mean,
            );
        }
    }

    eprintln!("== data moved by adding member N+1 and then removing member 1, 256 tokens ==");
    eprintln!(
        "{:>8} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "members", "ideal", "balanced", "ketama", "remove b.", "remove k."
    );
    for members in [3, 10, 100] {
        let mut row = Vec::new();
        for placement in [Placement::Balanced, Placement::Ketama] {
            let before = ring(members, 256, placement);
            let after = join(&before, members + 1);
            row.push(plan(&before, &after).moved_fraction);
            let removed = remove(&after, &node(1));
            row.push(plan(&after, &removed).moved_fraction);
        }
        eprintln!(
            "{members:>8} {:>9.6} {:>10.6} {:>10.6} {:>10.6} {:>10.6}",
            1.0 / (members as f64 + 1.0),
            row[0],
            row[2],
            row[1],
            row[3]
        );
    }

    eprintln!("== max/mean after 20 joins and 20 removals, interleaved ==");
    for members in [3, 10, 100] {
        for tokens in [16, 64, 256] {
            for placement in [Placement::Balanced, Placement::Ketama] {
                let mut current = ring(members, tokens, placement);
                let mut worst: f64 = current.balance().max_over_mean;
                for step in 0..20 {
                    current = join(&current, 1000 + step);
                    worst = worst.max(current.balance().max_over_mean);
                    // A spread of old and new nodes, deterministically.
                    let victim = current.nodes()[(step * 7919) % current.nodes().len()].id.clone();
                    current = remove(&current, &victim);
                    worst = worst.max(current.balance().max_over_mean);
                }
                let most_tokens = current.members().iter().map(|m| m.tokens).max().unwrap_or(0);
                eprintln!(
                    "{members:>4} members x {tokens:>3} tokens, {:>8}: worst max/mean {worst:.6}, most tokens on a member {most_tokens}",
                    name(placement)
                );
            }
        }
    }
}

fn lookups(c: &mut Criterion) {
    let hashes: Vec<u64> = (0..LOOKUP_BATCH as u64).map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())).collect();
    let mut group = c.benchmark_group("router_lookup");
    group.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    for members in [3_usize, 10, 100] {
        let balanced = ring(members, 256, Placement::Balanced);
        let ketama = ring(members, 256, Placement::Ketama);
        group.bench_with_input(BenchmarkId::new("table", members), &balanced, |b, ring| {
            b.iter(|| {
                let mut sum = 0_u64;
                for &hash in &hashes {
                    sum += u64::from(ring.owner(black_box(hash)).0);
                }
                sum
            })
        });
        group.bench_with_input(BenchmarkId::new("binary_search", members), &balanced, |b, ring| {
            b.iter(|| {
                let mut sum = 0_u64;
                for &hash in &hashes {
                    sum += u64::from(ring.owner_by_binary_search(black_box(hash)).0);
                }
                sum
            })
        });
        group.bench_with_input(BenchmarkId::new("table_ketama", members), &ketama, |b, ring| {
            b.iter(|| {
                let mut sum = 0_u64;
                for &hash in &hashes {
                    sum += u64::from(ring.owner(black_box(hash)).0);
                }
                sum
            })
        });
        // Each hash depends on the previous answer, so lookups cannot
        // overlap: this is latency, where the loops above measure throughput.
        group.bench_with_input(BenchmarkId::new("table_dependent", members), &balanced, |b, ring| {
            b.iter(|| {
                let mut owner = 0_u32;
                for &hash in &hashes {
                    owner = ring.owner(black_box(hash ^ u64::from(owner))).0;
                }
                owner
            })
        });
        group.bench_with_input(BenchmarkId::new("jump", members), &members, |b, &members| {
            b.iter(|| {
                let mut sum = 0_i64;
                for &hash in &hashes {
                    sum += jump_consistent_hash(black_box(hash), members as i64);
                }
                sum
            })
        });
    }
    group.finish();
}

fn main() {
    print_figures();
    let mut criterion = Criterion::default().configure_from_args();
    lookups(&mut criterion);
    criterion.final_summary();
}
