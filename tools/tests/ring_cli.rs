//! Drives the real `ringkv ring` binary: init, add, remove, weight, show
//! --json and plan --json produce what docs/ring.md promises, and wrong
//! input exits non-zero with a one-line reason, leaving the file unchanged.

use std::path::Path;
use std::process::{Command, Output};

fn ringkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv")).arg("ring").args(args).output().expect("the ringkv binary runs")
}

fn ok(args: &[&str]) -> String {
    let output = ringkv(args);
    assert!(output.status.success(), "ringkv ring {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("one JSON object")
}

/// Runs a command that must fail; checks the one-line reason and that
/// `file` is byte-for-byte unchanged.
fn refused(args: &[&str], file: &Path, reason: &str) {
    let before = std::fs::read(file).ok();
    let output = ringkv(args);
    assert!(!output.status.success(), "ringkv ring {args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.contains(reason), "{stderr:?} lacks {reason:?}");
    assert_eq!(std::fs::read(file).ok(), before, "the file changed");
}

#[test]
fn init_add_remove_show_and_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("ring.toml");
    let v1 = dir.path().join("v1.toml");
    let v2 = dir.path().join("v2.toml");
    let file = ring.to_str().expect("utf-8 path");

    ok(&[
        "init",
        "--file",
        file,
        "--node",
        "n1=127.0.0.1:7001",
        "--node",
        "n2=127.0.0.1:7002",
        "--node",
        "n3=127.0.0.1:7003",
    ]);
    std::fs::copy(&ring, &v1).expect("copy");
    let shown = json(&["show", "--file", file, "--json"]);
    assert_eq!(shown["epoch"], 1);
    assert_eq!(shown["members"].as_array().expect("members").len(), 3);
    assert_eq!(shown["members"][0]["member"], "n1/0");
    assert_eq!(shown["members"][0]["tokens"], 256);
    assert!(shown["max_over_mean"].as_f64().expect("number") <= 1.01);
    assert!(shown["keys"]["max_over_mean"].as_f64().expect("number") < 1.1);

    ok(&["add", "--file", file, "--node", "n4=127.0.0.1:7004"]);
    std::fs::copy(&ring, &v2).expect("copy");
    let shown = json(&["show", "--file", file, "--json"]);
    assert_eq!(shown["epoch"], 2);
    assert_eq!(shown["members"].as_array().expect("members").len(), 4);
    assert!(shown["max_over_mean"].as_f64().expect("number") <= 1.01);

    let plan = json(&["plan", "--from", v1.to_str().expect("path"), "--to", v2.to_str().expect("path"), "--json"]);
    assert_eq!(plan["from_epoch"], 1);
    assert_eq!(plan["to_epoch"], 2);
    let moved = plan["moved_fraction"].as_f64().expect("number");
    assert!((moved - 0.25).abs() < 1e-6, "moved {moved}");
    for m in plan["moves"].as_array().expect("moves") {
        assert_eq!(m["to"], "n4/0");
    }
    let transferred: f64 =
        plan["transfers"].as_array().expect("transfers").iter().map(|t| t["fraction"].as_f64().expect("number")).sum();
    assert!((transferred - moved).abs() < 1e-9);

    // The table: the transfers, then the first ranges and how many more.
    let text = ok(&["plan", "--from", v1.to_str().expect("path"), "--to", v2.to_str().expect("path"), "--ranges", "3"]);
    assert!(text.contains("25.0000% of the hash space moves in"), "{text}");
    let ranges: Vec<&str> = text.lines().filter(|l| l.starts_with("0x")).collect();
    assert_eq!(ranges.len(), 3, "{text}");
    assert!(ranges.iter().all(|l| l.split_whitespace().nth(3) == Some("n4/0")), "{text}");
    let total = plan["moves"].as_array().expect("moves").len();
    assert!(text.contains(&format!("... {} more ranges", total - 3)), "{text}");

    ok(&["remove", "--file", file, "--node", "n2"]);
    let plan = json(&["plan", "--from", v2.to_str().expect("path"), "--to", file, "--json"]);
    assert_eq!(plan["to_epoch"], 3);
    assert!((plan["moved_fraction"].as_f64().expect("number") - 0.25).abs() < 1e-6);
    for m in plan["moves"].as_array().expect("moves") {
        assert_eq!(m["from"], "n2/0");
    }

    ok(&["weight", "--file", file, "--member", "n1/0", "--weight", "2"]);
    let shown = json(&["show", "--file", file, "--json", "--keys", "0"]);
    assert_eq!(shown["epoch"], 4);
    assert_eq!(shown["members"][0]["weight"], 2);
    assert!((shown["members"][0]["share"].as_f64().expect("number") - 0.5).abs() < 1e-6);
    assert!(shown.get("keys").is_none());

    let table = ok(&["show", "--file", file]);
    assert!(table.contains("max/mean 1.000000"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("member")), "{table}");
}

#[test]
fn bad_input_exits_non_zero_and_leaves_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("ring.toml");
    let file = ring.to_str().expect("utf-8 path");
    ok(&["init", "--file", file, "--node", "n1=h:1", "--node", "n2=h:2", "--shards-per-node", "2"]);

    refused(&["remove", "--file", file, "--node", "n9"], &ring, "node n9 is not in the ring");
    refused(&["add", "--file", file, "--node", "n1=h:3"], &ring, "node n1 is already in the ring");
    refused(&["add", "--file", file, "--node", "n3=h:3", "--weight", "0"], &ring, "weight 0");
    refused(&["weight", "--file", file, "--member", "n7/0", "--weight", "2"], &ring, "member n7/0 is not in the ring");
    refused(&["init", "--file", file, "--node", "n5=h:5"], &ring, "already exists");
    let missing = dir.path().join("missing.toml");
    refused(&["show", "--file", missing.to_str().expect("path")], &missing, "cannot read");
    refused(&["add", "--file", missing.to_str().expect("path"), "--node", "n3=h:3"], &missing, "cannot read");

    // A corrupt file is refused, named, and left alone.
    std::fs::write(&ring, "epoch = 1\nnodes = [").expect("write");
    refused(&["add", "--file", file, "--node", "n3=h:3"], &ring, "cannot parse");

    // Removing the last node would leave an empty ring.
    let single = dir.path().join("single.toml");
    let single_file = single.to_str().expect("path");
    ok(&["init", "--file", single_file, "--node", "n1=h:1"]);
    refused(&["remove", "--file", single_file, "--node", "n1"], &single, "last node");
}

/// Edits run at the same time are applied one after the other: each one
/// succeeds and raises the epoch, none is lost (two edits that both read
/// epoch N both wrote N+1, one over the other).
#[test]
fn concurrent_edits_are_all_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("ring.toml");
    let file = ring.to_str().expect("utf-8 path");
    ok(&["init", "--file", file, "--node", "n1=127.0.0.1:7001", "--node", "n2=127.0.0.1:7002"]);
    const ROUNDS: u32 = 8;
    for round in 0..ROUNDS {
        let edits: Vec<_> = ["n1/0", "n2/0"]
            .iter()
            .map(|member| {
                let weight = (2 + round).to_string();
                Command::new(env!("CARGO_BIN_EXE_ringkv"))
                    .args(["ring", "weight", "--file", file, "--member", member, "--weight", &weight])
                    .spawn()
                    .expect("the ringkv binary runs")
            })
            .collect();
        for mut edit in edits {
            assert!(edit.wait().expect("wait").success(), "round {round}: an edit failed");
        }
    }
    let shown = json(&["show", "--file", file, "--json"]);
    assert_eq!(shown["epoch"], 1 + 2 * ROUNDS, "every edit raised the epoch once");
    for member in shown["members"].as_array().expect("members") {
        assert_eq!(member["weight"], 1 + ROUNDS, "{member}");
    }
}

/// `init --force` over an existing ring writes a successor: its epoch goes
/// past the old one's (it was reset to 1, and a node that knew epoch 2
/// would have taken the new ring for an older one).
#[test]
fn init_over_a_ring_raises_its_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("ring.toml");
    let file = ring.to_str().expect("utf-8 path");
    ok(&["init", "--file", file, "--node", "n1=127.0.0.1:7001", "--node", "n2=127.0.0.1:7002"]);
    ok(&["weight", "--file", file, "--member", "n1/0", "--weight", "2"]);
    assert_eq!(json(&["show", "--file", file, "--json"])["epoch"], 2);
    ok(&["init", "--file", file, "--force", "--node", "n3=127.0.0.1:7003"]);
    let shown = json(&["show", "--file", file, "--json"]);
    assert_eq!(shown["epoch"], 3);
    assert_eq!(shown["members"].as_array().expect("members").len(), 1);
}
