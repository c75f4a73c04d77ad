//! Rebalance plans: which hash ranges change owner between two rings.
//!
//! **Architecture Invariant:** planning is a pure function of two rings. It
//! does not know how data is streamed; the caller carries the plan out.

use serde::Serialize;

use crate::id::{MemberId, Token};
use crate::placement::RING_POINTS;
use crate::ring::{HashRange, Ownership, Ring};

/// One range that changes owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The hashes that move, `(start, end]`.
    pub range: HashRange,
    /// The owner in the old ring.
    pub from: MemberId,
    /// The owner in the new ring.
    pub to: MemberId,
}

/// The total moved from one member to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transfer {
    /// The old owner.
    pub from: MemberId,
    /// The new owner.
    pub to: MemberId,
    /// The fraction of the ring that moves from `from` to `to`.
    pub fraction: f64,
    /// In how many ranges.
    pub ranges: usize,
}

/// Everything that moves between two rings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The old ring's epoch.
    pub from_epoch: u64,
    /// The new ring's epoch.
    pub to_epoch: u64,
    /// The moves, ascending by range end, adjacent moves with the same
    /// owners merged (also across the top of the ring).
    pub moves: Vec<Move>,
    /// The number of hashes that change owner.
    #[serde(skip)]
    pub moved_points: u128,
    /// `moved_points / 2^64`.
    pub moved_fraction: f64,
}

/// The ranges that change owner from `old` to `new`. Members are matched by
/// [`MemberId`], so a member present in both rings keeps what it owns in
/// both.
pub fn plan(old: &Ring, new: &Ring) -> Plan {
    // Between two consecutive points of the merged token lists neither ring
    // has a token, so each ring has one owner for the whole arc: the owner
    // of the arc's end.
    let mut points: Vec<u64> = old.tokens().map(|(t, _)| t).collect();
    points.extend(new.tokens().map(|(t, _)| t));
    points.sort_unstable();
    points.dedup();
    let mut moves: Vec<Move> = Vec::new();
    let mut moved_points = 0_u128;
    for (index, &end) in points.iter().enumerate() {
        let start = if index == 0 { points[points.len() - 1] } else { points[index - 1] };
        let from = &old.member(old.owner(end)).id;
        let to = &new.member(new.owner(end)).id;
        if from == to {
            continue;
        }
        let range = HashRange { start: Token(start), end: Token(end) };
        moved_points += range.len_points();
        match moves.last_mut() {
            Some(last) if last.range.end.0 == start && &last.from == from && &last.to == to => {
                last.range.end = Token(end);
            }
            _ => moves.push(Move { range, from: from.clone(), to: to.clone() }),
        }
    }
    // The first and last moves may be one range across the top of the ring.
    if moves.len() > 1 {
        let (first, last) = (&moves[0], &moves[moves.len() - 1]);
        if last.range.end == first.range.start && first.from == last.from && first.to == last.to {
            let last = moves.pop().expect("more than one move");
            moves[0].range.start = last.range.start;
        }
    }
    Plan {
        from_epoch: old.epoch(),
        to_epoch: new.epoch(),
        moves,
        moved_points,
        moved_fraction: moved_points as f64 / RING_POINTS as f64,
    }
}

impl Plan {
    /// The ownership that results from carrying the plan out on `old`:
    /// every moved range goes to its new owner, everything else stays. For
    /// `plan(old, new)` this equals `new.ownership()`.
    pub fn apply(&self, old: &Ring) -> Ownership {
        let mut ends: Vec<(u64, Option<&MemberId>)> = Vec::new();
        for (token, owner) in old.tokens() {
            ends.push((token, Some(&old.member(owner).id)));
        }
        for m in &self.moves {
            ends.push((m.range.start.0, None));
            ends.push((m.range.end.0, None));
        }
        ends.sort_by_key(|&(point, _)| point);
        ends.dedup_by_key(|&mut (point, _)| point);
        let arcs = ends
            .iter()
            .map(|&(point, _)| {
                let owner = self
                    .moves
                    .iter()
                    .find(|m| m.range.contains(point))
                    .map_or_else(|| old.member(old.owner(point)).id.clone(), |m| m.to.clone());
                (point, owner)
            })
            .collect();
        Ownership::from_arc_ends(arcs)
    }

    /// What moves per `(from, to)` pair, sorted by pair.
    pub fn transfers(&self) -> Vec<Transfer> {
        let mut pairs: std::collections::BTreeMap<(MemberId, MemberId), (u128, usize)> =
            std::collections::BTreeMap::new();
        for m in &self.moves {
            let entry = pairs.entry((m.from.clone(), m.to.clone())).or_default();
            entry.0 += m.range.len_points();
            entry.1 += 1;
        }
        pairs
            .into_iter()
            .map(|((from, to), (points, ranges))| Transfer {
                from,
                to,
                fraction: points as f64 / RING_POINTS as f64,
                ranges,
            })
            .collect()
    }
}
