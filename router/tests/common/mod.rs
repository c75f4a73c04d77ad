//! Helpers shared by the router's integration tests.

#![allow(dead_code)]

use router::{InitConfig, NodeId, Placement, Ring, RingDescription};

/// The id of node `i`, `n{i}`.
pub fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).expect("n<number> is a valid node id")
}

/// A balanced ring of nodes `n1..=n{nodes}`, one shard each.
pub fn balanced(nodes: usize, tokens_per_weight: u32) -> Ring {
    ring(nodes, tokens_per_weight, Placement::Balanced)
}

/// A ring of nodes `n1..=n{nodes}`, one shard each.
pub fn ring(nodes: usize, tokens_per_weight: u32, placement: Placement) -> Ring {
    let config = InitConfig {
        nodes: (1..=nodes).map(|i| (node(i), format!("127.0.0.1:{}", 7000 + i))).collect(),
        shards_per_node: 1,
        tokens_per_weight,
        placement,
    };
    Ring::new(RingDescription::init(&config).expect("init")).expect("valid")
}

/// Applies `change` to `ring`'s description and compiles the result.
pub fn changed(
    ring: &Ring,
    change: impl FnOnce(&RingDescription) -> Result<RingDescription, router::ChangeError>,
) -> Ring {
    Ring::new(change(ring.description()).expect("change")).expect("valid")
}
