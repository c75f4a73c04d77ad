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
