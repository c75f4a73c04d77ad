//! Removing a node moves only the ranges its shards owned, exactly their
//! share, to members that were under their new fair share; everyone else
//! keeps every hash they owned.

mod common;

use proptest::prelude::*;
use router::{plan, MemberIndex};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_removal_moves_only_the_removed_ranges(
        nodes in 2_usize..24,
        tokens in 1_u32..64,
        victim in any::<prop::sample::Index>(),
    ) {
        let old = common::balanced(nodes, tokens);
        let victim = common::node(victim.index(nodes) + 1);
        let new = common::changed(&old, |d| d.remove_node(&victim));
        let plan = plan(&old, &new);
        prop_assert_eq!(plan.apply(&old), new.ownership());
        let removed = old
            .member_index(&router::MemberId::new(victim.clone(), 0))
            .expect("the victim was a member");
        let removed_points = old.owned_points()[removed.get()];
        prop_assert_eq!(plan.moved_points, removed_points);
        for m in &plan.moves {
            prop_assert_eq!(&m.from.node, &victim);
        }
        // Every range a survivor owned is still its own.
        for (index, member) in old.members().iter().enumerate() {
            if member.id.node == victim {
                continue;
            }
            let now = new.member_index(&member.id).expect("survivor");
            for range in old.owned_ranges(MemberIndex(index as u32)) {
                prop_assert_eq!(new.owner(range.end.0), now);
            }
        }
        prop_assert!(new.balance().max_over_mean <= 1.01);
    }
}
