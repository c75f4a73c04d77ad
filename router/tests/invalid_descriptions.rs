//! Invalid ring descriptions from `testdata/invalid_descriptions.txt` are
//! refused, and the error names the problem and where it is (node, shard or
//! token index). The first case is valid, so that the harness itself is shown
//! to accept good input.

use router::RingDescription;

const CASES: &str = include_str!("../testdata/invalid_descriptions.txt");

#[test]
fn invalid_descriptions_are_refused_naming_the_problem() {
    let mut checked = 0;
    for case in CASES.split("\n=== ").skip(1) {
        let (name, rest) = case.split_once('\n').expect("a case has a name line");
        let (toml, expected) =
            rest.split_once("--- error\n").unwrap_or_else(|| panic!("case {name:?} has no `--- error` line"));
        let expected = expected.trim();
        match (RingDescription::from_toml_str(toml), expected) {
            (Ok(_), "(none)") => {}
            (Ok(_), _) => panic!("case {name:?}: accepted, expected {expected:?}"),
            (Err(e), "(none)") => panic!("case {name:?}: refused with {e}"),
            (Err(e), _) => {
                assert!(e.to_string().contains(expected), "case {name:?}: error {e} does not contain {expected:?}")
            }
        }
        checked += 1;
    }
    assert!(checked >= 16, "testdata lost cases: {checked}");
}

#[test]
fn an_older_epoch_is_refused_as_a_successor() {
    let text = CASES
        .split("\n=== ")
        .nth(1)
        .and_then(|case| case.split_once('\n'))
        .and_then(|(_, rest)| rest.split_once("--- error"))
        .map(|(toml, _)| toml)
        .expect("the first case is the valid ring");
    let current = RingDescription::from_toml_str(text).expect("valid");
    let mut stale = current.clone();
    stale.epoch = 0;
    let error = stale.check_successor_of(&current).expect_err("a lower epoch must be refused");
    assert_eq!(error.to_string(), "epoch 0 is lower than the current epoch 1");

    let mut reused = current.clone();
    reused.shards[0].weight = 2;
    assert!(reused.check_successor_of(&current).is_err());
    assert!(current.check_successor_of(&current).is_ok());
    let mut newer = reused;
    newer.epoch = 2;
    assert!(newer.check_successor_of(&current).is_ok());
}

/// A weight is refused up front when its tokens (`tokens_per_weight` each,
/// and a weight's worth to spare) would exceed a member's limit, naming
/// the largest weight allowed: with 256 tokens per weight, 255 (257 passed
/// the check and failed after placement, with a message about a member's
/// token count).
#[test]
fn a_weight_whose_tokens_cannot_fit_is_refused_up_front() {
    use router::{ChangeError, InitConfig, NodeId, Placement};
    let config = InitConfig {
        nodes: (1..=3).map(|i| (NodeId::new(format!("n{i}")).unwrap(), format!("127.0.0.1:{}", 7000 + i))).collect(),
        shards_per_node: 1,
        tokens_per_weight: 256,
        placement: Placement::Balanced,
    };
    let ring = RingDescription::init(&config).unwrap();
    let n4 = NodeId::new("n4").unwrap();
    for weight in [256, 257, 1024] {
        let refused = ring.add_node(n4.clone(), "127.0.0.1:7004".into(), None, weight);
        assert!(matches!(refused, Err(ChangeError::WeightOutOfRange { max: 255, .. })), "{refused:?}");
    }
    let added = ring.add_node(n4, "127.0.0.1:7004".into(), None, 255).expect("the largest weight that fits");
    router::Ring::new(added).expect("valid");
}
