//! Adding a node moves hash ranges only to the new node's shards, moves
//! exactly its fair share (so at most 1.05 x 1/(N+1) for equal weights), and
//! leaves every member within 1% of its fair share.

mod common;

use proptest::prelude::*;
use router::plan;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_join_moves_data_only_to_the_newcomer(
        nodes in 1_usize..24,
        tokens in 1_u32..64,
        weight in 1_u32..4,
        shards in 1_u32..3,
    ) {
        let old = common::balanced(nodes, tokens);
        let new = common::changed(&old, |d| {
            d.add_node(common::node(999), "127.0.0.1:9999".into(), Some(shards), weight)
        });
        let plan = plan(&old, &new);
        prop_assert_eq!(plan.apply(&old), new.ownership());
        prop_assert!(!plan.moves.is_empty());
        for m in &plan.moves {
            prop_assert_eq!(&m.to.node, &common::node(999));
            prop_assert!(old.member_index(&m.from).is_some());
        }
        let new_weight = f64::from(weight * shards);
        let fair = new_weight / (nodes as f64 + new_weight);
        prop_assert!(plan.moved_fraction <= fair * 1.000_001, "{} > {}", plan.moved_fraction, fair);
        prop_assert!(plan.moved_fraction <= 1.05 * fair);
        prop_assert!(new.balance().max_over_mean <= 1.01);
    }
}
