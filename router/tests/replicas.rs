//! Replica lists: the owner first, then the next members clockwise on nodes
//! not yet in the list, never more than the ring has nodes.

mod common;

use proptest::prelude::*;
use router::{InitConfig, Placement, Ring, RingDescription};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn replicas_start_at_the_owner_and_use_distinct_nodes(
        nodes in 1_usize..8,
        shards in 1_u32..4,
        count in 1_usize..6,
        hash in any::<u64>(),
    ) {
        let config = InitConfig {
            nodes: (1..=nodes).map(|i| (common::node(i), format!("10.0.0.{i}:7000"))).collect(),
            shards_per_node: shards,
            tokens_per_weight: 16,
            placement: Placement::Balanced,
        };
        let ring = Ring::new(RingDescription::init(&config).expect("init")).expect("valid");
        let replicas = ring.replicas(hash, count);
        prop_assert_eq!(replicas.len(), count.min(nodes));
        prop_assert_eq!(replicas[0], ring.owner(hash));
        let mut seen: Vec<_> = replicas.iter().map(|&m| ring.member(m).node).collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), replicas.len(), "two replicas on one node");

        // Each replica after the first is the first member clockwise, after
        // the previous one, whose node is new to the list.
        let tokens: Vec<_> = ring.tokens().collect();
        let start = tokens.iter().position(|&(t, _)| t >= hash).unwrap_or(0);
        let mut expected = Vec::new();
        for step in 0..tokens.len() {
            let owner = tokens[(start + step) % tokens.len()].1;
            if expected.iter().all(|&m| ring.member(m).node != ring.member(owner).node) {
                expected.push(owner);
            }
        }
        expected.truncate(count);
        prop_assert_eq!(replicas, expected);
    }
}
