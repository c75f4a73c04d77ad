//! Lookups are deterministic and every point of the ring has exactly one
//! owner: the bucket-table lookup agrees with a plain binary search and with
//! the canonical ownership, and the members' owned ranges tile the ring.

mod common;

use proptest::prelude::*;
use router::{hash_key, MemberIndex, Placement};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_point_has_exactly_one_owner(
        nodes in 1_usize..12,
        tokens in 1_u32..48,
        ketama in any::<bool>(),
        hashes in prop::collection::vec(any::<u64>(), 64),
    ) {
        let placement = if ketama { Placement::Ketama } else { Placement::Balanced };
        let ring = common::ring(nodes, tokens, placement);
        let ownership = ring.ownership();
        let ranges: Vec<_> = (0..ring.members().len())
            .map(|m| ring.owned_ranges(MemberIndex(m as u32)))
            .collect();
        let total: u128 = ranges.iter().flatten().map(|r| r.len_points()).sum();
        prop_assert_eq!(total, 1_u128 << 64);

        // The edges of every token's arc, and random points.
        let mut points: Vec<u64> = hashes;
        for (token, _) in ring.tokens() {
            points.extend([token, token.wrapping_add(1), token.wrapping_sub(1)]);
        }
        points.extend([0, u64::MAX]);
        for hash in points {
            let owner = ring.owner(hash);
            prop_assert_eq!(owner, ring.owner(hash), "not deterministic");
            prop_assert_eq!(owner, ring.owner_by_binary_search(hash));
            prop_assert_eq!(&ring.member(owner).id, ownership.owner(hash));
            let holders: Vec<usize> = (0..ranges.len())
                .filter(|&m| ranges[m].iter().any(|r| r.contains(hash)))
                .collect();
            prop_assert_eq!(holders, vec![owner.get()]);
        }
    }
}

#[test]
fn a_key_is_owned_by_the_owner_of_its_hash() {
    let ring = common::balanced(10, 256);
    for i in 0..1000 {
        let key = format!("key:{i}");
        assert_eq!(ring.owner_of_key(key.as_bytes()), ring.owner(xxhash_rust::xxh3::xxh3_64(key.as_bytes())));
        assert_eq!(hash_key(key.as_bytes()), xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
    }
}
