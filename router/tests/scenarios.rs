//! Data-driven ring scenarios from `testdata/scenarios.txt`: sequences of
//! joins, removals and weight changes with expectations on balance, on how
//! much moved and on who it moved between. Every change is also checked to
//! have an exact plan: applying it to the old ring gives the new ownership.

use router::{plan, InitConfig, MemberId, NodeId, Placement, Plan, Ring, RingDescription};

const SCENARIOS: &str = include_str!("../testdata/scenarios.txt");

struct State {
    ring: Option<Ring>,
    last_plan: Option<Plan>,
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("scenario node names are valid")
}

/// Parses `key=value` options after the positional words.
fn option<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words.iter().find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn change(state: &mut State, new: RingDescription, context: &str) {
    let old = state.ring.take().expect("init comes first");
    let new = Ring::new(new).unwrap_or_else(|e| panic!("{context}: invalid ring: {e}"));
    let plan = plan(&old, &new);
    assert_eq!(plan.apply(&old), new.ownership(), "{context}: the plan does not turn the old ring into the new one");
    assert!(new.epoch() > old.epoch(), "{context}: epoch not raised");
    state.last_plan = Some(plan);
    state.ring = Some(new);
}

fn run(name: &str, lines: &[(usize, &str)]) {
    let mut state = State { ring: None, last_plan: None };
    for &(line_number, line) in lines {
        let context = format!("scenario {name:?}, line {line_number}: {line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["init", rest @ ..] => {
                let count: usize = option(rest, "nodes").expect("nodes=").parse().unwrap();
                let config = InitConfig {
                    nodes: (1..=count).map(|i| (node(&format!("n{i}")), format!("127.0.0.1:{}", 7000 + i))).collect(),
                    shards_per_node: option(rest, "shards").map_or(1, |s| s.parse().unwrap()),
                    tokens_per_weight: option(rest, "tokens").map_or(256, |s| s.parse().unwrap()),
                    placement: match option(rest, "placement") {
                        Some("ketama") => Placement::Ketama,
                        _ => Placement::Balanced,
                    },
                };
                let description = RingDescription::init(&config).expect(&context);
                state.ring = Some(Ring::new(description).expect(&context));
            }
            ["add", id, rest @ ..] => {
                let current = state.ring.as_ref().expect("init comes first").description();
                let weight = option(rest, "weight").map_or(1, |s| s.parse().unwrap());
                let shards = option(rest, "shards").map(|s| s.parse().unwrap());
                let new = current.add_node(node(id), "127.0.0.1:9999".into(), shards, weight).expect(&context);
                change(&mut state, new, &context);
            }
            ["remove", id] => {
                let current = state.ring.as_ref().expect("init comes first").description();
                let new = current.remove_node(&node(id)).expect(&context);
                change(&mut state, new, &context);
            }
            ["weight", member, weight] => {
                let current = state.ring.as_ref().expect("init comes first").description();
                let member: MemberId = member.parse().expect(&context);
                let new = current.set_weight(&member, weight.parse().unwrap()).expect(&context);
                change(&mut state, new, &context);
            }
            ["expect", what, rest @ ..] => check(&state, what, rest, &context),
            _ => panic!("{context}: unknown command"),
        }
    }
}

fn check(state: &State, what: &str, rest: &[&str], context: &str) {
    let ring = state.ring.as_ref().expect("init comes first");
    let number = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("{context}: bad number")) };
    let compare = |actual: f64| match rest {
        ["<=", limit] => assert!(actual <= number(limit), "{context}: got {actual}"),
        ["~", expected] => assert!((actual - number(expected)).abs() < 1e-6, "{context}: got {actual}"),
        [expected] => assert_eq!(actual, number(expected), "{context}"),
        _ => panic!("{context}: bad comparison"),
    };
    let last_plan = || state.last_plan.as_ref().expect("a change comes first");
    match what {
        "max_over_mean" => compare(ring.balance().max_over_mean),
        "moved_fraction" => compare(last_plan().moved_fraction),
        "members" => compare(ring.members().len() as f64),
        "max_tokens_per_weight" => {
            compare(ring.members().iter().map(|m| m.tokens as f64 / f64::from(m.weight)).fold(0.0, f64::max))
        }
        "moves_to" | "moves_from" => {
            let plan = last_plan();
            assert!(!plan.moves.is_empty(), "{context}: nothing moved");
            let [id] = rest else { panic!("{context}: expected a node") };
            for m in &plan.moves {
                let end = if what == "moves_to" { &m.to } else { &m.from };
                assert_eq!(end.node.as_str(), *id, "{context}: move {m:?}");
            }
        }
        _ => panic!("{context}: unknown expectation"),
    }
}

#[test]
fn scenarios_from_testdata() {
    let mut scenarios: Vec<(String, Vec<(usize, &str)>)> = Vec::new();
    for (index, line) in SCENARIOS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("scenario ") {
            scenarios.push((name.to_owned(), Vec::new()));
        } else {
            scenarios.last_mut().expect("a command before the first scenario").1.push((index + 1, line));
        }
    }
    assert!(scenarios.len() >= 9, "testdata lost scenarios");
    for (name, lines) in &scenarios {
        run(name, lines);
    }
}
