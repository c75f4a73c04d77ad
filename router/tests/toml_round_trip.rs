//! Ring descriptions round-trip through TOML (as text and through an atomic
//! save and load) and through JSON, unchanged, for any ring the tools can
//! produce; a failed save leaves the old file in place.

mod common;

use proptest::prelude::*;
use router::{Placement, RingDescription};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn descriptions_round_trip(
        nodes in 1_usize..10,
        tokens in 1_u32..40,
        ketama in any::<bool>(),
        joins in 0_usize..3,
    ) {
        let placement = if ketama { Placement::Ketama } else { Placement::Balanced };
        let mut ring = common::ring(nodes, tokens, placement);
        for j in 0..joins {
            ring = common::changed(&ring, |d| {
                d.add_node(common::node(100 + j), "[::1]:7000".into(), Some(2), 1)
            });
        }
        let description = ring.description().clone();

        let text = description.to_toml_string().expect("encode");
        prop_assert_eq!(&RingDescription::from_toml_str(&text).expect("decode"), &description);

        let json = serde_json::to_string(&description).expect("json");
        prop_assert_eq!(&serde_json::from_str::<RingDescription>(&json).expect("json"), &description);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ring.toml");
        description.save(&path).expect("save");
        prop_assert_eq!(&RingDescription::load(&path).expect("load"), &description);
        // Only the ring file is left: the temporary file was renamed.
        prop_assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}

#[test]
fn an_invalid_description_is_not_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ring.toml");
    let good = common::balanced(3, 8).description().clone();
    good.save(&path).expect("save");
    let before = std::fs::read(&path).expect("read");

    let mut bad = good.clone();
    bad.shards[1].weight = 0;
    let error = bad.save(&path).expect_err("an invalid ring must not be saved");
    assert!(error.to_string().contains("has weight 0"), "{error}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}
