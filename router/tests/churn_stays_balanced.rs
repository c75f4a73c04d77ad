//! Any sequence of joins, removals and weight changes keeps every member
//! within 1% of its fair share (the goal is max/mean <= 1.01), keeps every
//! plan exact, and keeps token counts bounded instead of growing with churn.

mod common;

use proptest::prelude::*;
use router::{plan, MemberId};

#[derive(Debug, Clone)]
enum Op {
    Join { weight: u32 },
    Remove { pick: prop::sample::Index },
    Weight { pick: prop::sample::Index, weight: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1_u32..3).prop_map(|weight| Op::Join { weight }),
        any::<prop::sample::Index>().prop_map(|pick| Op::Remove { pick }),
        (any::<prop::sample::Index>(), 1_u32..4).prop_map(|(pick, weight)| Op::Weight { pick, weight }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn churn_keeps_the_ring_balanced(
        nodes in 3_usize..16,
        tokens in prop::sample::select(vec![16_u32, 64]),
        ops in prop::collection::vec(op(), 1..12),
    ) {
        let mut ring = common::balanced(nodes, tokens);
        let mut next_node = nodes + 1;
        for op in ops {
            let next = match op {
                Op::Join { weight } => {
                    next_node += 1;
                    common::changed(&ring, |d| {
                        d.add_node(common::node(next_node), "127.0.0.1:1".into(), None, weight)
                    })
                }
                Op::Remove { pick } => {
                    if ring.nodes().len() <= 3 {
                        continue;
                    }
                    let victim = ring.nodes()[pick.index(ring.nodes().len())].id.clone();
                    common::changed(&ring, |d| d.remove_node(&victim))
                }
                Op::Weight { pick, weight } => {
                    let member: MemberId = ring.members()[pick.index(ring.members().len())].id.clone();
                    common::changed(&ring, |d| d.set_weight(&member, weight))
                }
            };
            let plan = plan(&ring, &next);
            prop_assert_eq!(plan.apply(&ring), next.ownership());
            ring = next;
            let report = ring.balance();
            prop_assert!(report.max_over_mean <= 1.01, "max/mean {}", report.max_over_mean);
            let max_tokens_per_weight = ring
                .members()
                .iter()
                .map(|m| m.tokens as f64 / f64::from(m.weight))
                .fold(0.0, f64::max);
            // Generous: token counts stay near tokens x weight.
            prop_assert!(
                max_tokens_per_weight <= 3.0 * f64::from(tokens) + 32.0,
                "{max_tokens_per_weight} tokens per weight"
            );
        }
    }
}
