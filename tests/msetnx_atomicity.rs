//! MSETNX and MSET are all or nothing across shards.
//!
//! MSETNX, against a concurrent writer and a concurrent reader. Each round,
//! on fresh keys spread over four shards: one client sends MSETNX k0..k5,
//! another SETNX k5 at the same moment, a third GETs them. Exactly one of
//! MSETNX and SETNX wins k5; when SETNX wins, none of k0..k4 exists. The
//! reader GETs k4, k3, ..., k0 one after the other: once it has seen one of
//! them set, every later GET sees its key set too (MGET is not used here:
//! across shards it is not a snapshot).
//!
//! MSET, against another MSET of the same keys at the same moment: one of
//! them is last on every key, never the one on some shards and the other
//! on the rest.

mod common;

use std::sync::{Arc, Barrier};

use bytes::Bytes;
use common::RespConn as Conn;
use net::resp::Reply;

const ROUNDS: usize = 300;
const KEYS: usize = 6;

fn keys(round: usize) -> Vec<String> {
    (0..KEYS).map(|i| format!("r{round}:k{i}")).collect()
}

#[test]
fn msetnx_is_all_or_nothing_against_a_concurrent_writer() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "4"]);
    let barrier = Arc::new(Barrier::new(3));
    let spawn = |f: fn(&mut Conn, usize) -> Reply| {
        let barrier = barrier.clone();
        let addr = node.resp;
        std::thread::spawn(move || {
            let mut c = Conn::connect(addr);
            (0..ROUNDS)
                .map(|round| {
                    barrier.wait();
                    f(&mut c, round)
                })
                .collect::<Vec<Reply>>()
        })
    };
    let msetnx = spawn(|c, round| {
        let ks = keys(round);
        let mut args = vec!["MSETNX"];
        for k in &ks {
            args.extend([k.as_str(), "m"]);
        }
        c.call(&args)
    });
    let writer = spawn(|c, round| c.call(&["SETNX", &keys(round)[KEYS - 1], "w"]));
    let reader = spawn(|c, round| {
        let ks = keys(round);
        Reply::Array(Some(ks[..KEYS - 1].iter().rev().map(|k| c.call(&["GET", k])).collect()))
    });
    let (msetnx, writer, reader) = (msetnx.join().unwrap(), writer.join().unwrap(), reader.join().unwrap());

    let mut check = Conn::connect(node.resp);
    let (mut m_won, mut w_won) = (0, 0);
    for round in 0..ROUNDS {
        let ks = keys(round);
        let mut args = vec!["MGET"];
        args.extend(ks.iter().map(String::as_str));
        let Reply::Array(Some(values)) = check.call(&args) else { panic!("array") };
        let m = Reply::Bulk(Some(Bytes::from("m")));
        match (&msetnx[round], &writer[round]) {
            (Reply::Int(1), Reply::Int(0)) => {
                m_won += 1;
                assert!(values.iter().all(|v| *v == m), "round {round}: MSETNX won, all its keys: {values:?}");
            }
            (Reply::Int(0), Reply::Int(1)) => {
                w_won += 1;
                assert!(values[..KEYS - 1].iter().all(|v| *v == Reply::Bulk(None)), "round {round}: {values:?}");
                assert_eq!(values[KEYS - 1], Reply::Bulk(Some(Bytes::from("w"))));
            }
            other => panic!("round {round}: exactly one wins k5, got {other:?}"),
        }
        let Reply::Array(Some(seen)) = &reader[round] else { panic!("array") };
        if let Some(first) = seen.iter().position(|v| *v == m) {
            assert!(seen[first..].iter().all(|v| *v == m), "round {round}: the reader saw a partial MSETNX: {seen:?}");
        }
    }
    eprintln!("MSETNX won {m_won} rounds, SETNX won {w_won}");
    assert_eq!(m_won + w_won, ROUNDS);
}

#[test]
fn two_msets_of_the_same_keys_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(dir.path(), &["--shards", "4"]);
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|value| {
            let barrier = barrier.clone();
            let addr = node.resp;
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                for round in 0..ROUNDS {
                    let ks = keys(round);
                    let mut args = vec!["MSET"];
                    for k in &ks {
                        args.extend([k.as_str(), value]);
                    }
                    barrier.wait();
                    assert_eq!(c.call(&args), Reply::Simple(Bytes::from("OK")));
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let mut check = Conn::connect(node.resp);
    for round in 0..ROUNDS {
        let ks = keys(round);
        let mut args = vec!["MGET"];
        args.extend(ks.iter().map(String::as_str));
        let Reply::Array(Some(values)) = check.call(&args) else { panic!("array") };
        assert!(values.iter().all(|v| *v == values[0]), "round {round}: the two MSETs interleaved: {values:?}");
        assert_ne!(values[0], Reply::Bulk(None));
    }
}
