//! Token placement: how a ring description changes when members join, leave
//! or change weight.
//!
//! The balanced placement keeps every member's ownership equal to its fair
//! share (`weight / total weight` of the 2^64 points) while moving only the
//! data that must move:
//!
//! * **init** spaces `tokens_per_weight x weight` tokens per member evenly
//!   around the ring, interleaving members round by round in a seeded order,
//!   so every arc has the same length;
//! * **join / weight increase**: the members with the largest excess over
//!   their new fair share each give up pieces of their largest arcs to the
//!   members short of theirs. An arc can be split anywhere, so the pieces are
//!   exact and data moves only to the members that gained share;
//! * **removal / weight decrease**: the members over their share hand whole
//!   arcs to a ring neighbour that is short (which merges two tokens into
//!   one, keeping token counts from growing), then split what is left among
//!   the members most under their share. Only the shrinking members' ranges
//!   move.
//!
//! Everything is integer arithmetic on `u128` point counts and ties are
//! broken by member order, so a change is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;

use xxhash_rust::xxh3::xxh3_64;

use crate::description::{
    DescriptionError, NodeEntry, Placement, RingDescription, ShardEntry, MAX_EPOCH, MAX_SHARDS_PER_NODE,
    MAX_TOKENS_PER_MEMBER, MAX_TOKENS_PER_WEIGHT, MAX_WEIGHT,
};
use crate::id::{MemberId, NodeId, Token};

/// The number of points on the ring: hashes are `u64`.
pub(crate) const RING_POINTS: u128 = 1 << 64;

/// How far from its fair share a member may stay, in points, before the
/// balanced placement moves data for it: 2^34 points is 2^-30 (about one
/// billionth) of the ring. Without a tolerance, rounding differences of a few
/// points between evenly spaced arcs would create tokens owning a handful of
/// points.
pub const BALANCE_TOLERANCE_POINTS: u128 = 1 << 34;

/// Parameters of a new ring.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// The nodes and their addresses, in the order they will be listed.
    pub nodes: Vec<(NodeId, String)>,
    /// Shards on each node; every shard starts with weight 1.
    pub shards_per_node: u32,
    /// Tokens per member of weight 1.
    pub tokens_per_weight: u32,
    /// Placement used now and for later changes.
    pub placement: Placement,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self { nodes: Vec::new(), shards_per_node: 1, tokens_per_weight: 256, placement: Placement::Balanced }
    }
}

/// Why a change to a ring description was refused. The description it was
/// applied to is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A ring needs at least one node.
    #[error("a ring needs at least one node")]
    NoNodes,
    /// The node is already in the ring.
    #[error("node {id} is already in the ring")]
    NodeExists {
        /// The node.
        id: NodeId,
    },
    /// The node is not in the ring.
    #[error("node {id} is not in the ring")]
    UnknownNode {
        /// The node.
        id: NodeId,
    },
    /// The member is not in the ring.
    #[error("member {member} is not in the ring")]
    UnknownMember {
        /// The member.
        member: MemberId,
    },
    /// Removing the node would leave the ring without members.
    #[error("node {id} is the last node; a ring cannot be empty")]
    LastNode {
        /// The node.
        id: NodeId,
    },
    /// A weight outside `1..=MAX_WEIGHT`, or with more tokens than a member
    /// may have (`MAX_TOKENS_PER_MEMBER / tokens_per_weight`).
    #[error("weight {weight} is out of range; it must be between 1 and {max}")]
    WeightOutOfRange {
        /// The weight asked for.
        weight: u32,
        /// [`MAX_WEIGHT`].
        max: u32,
    },
    /// A shard count outside `1..=MAX_SHARDS_PER_NODE`.
    #[error("{shards} shards per node is out of range; it must be between 1 and {max}")]
    ShardsOutOfRange {
        /// The count asked for.
        shards: u32,
        /// [`MAX_SHARDS_PER_NODE`].
        max: u32,
    },
    /// A token count outside `1..=MAX_TOKENS_PER_WEIGHT`.
    #[error("{tokens} tokens per weight is out of range; it must be between 1 and {max}")]
    TokensOutOfRange {
        /// The count asked for.
        tokens: u32,
        /// [`MAX_TOKENS_PER_WEIGHT`].
        max: u32,
    },
    /// The epoch cannot be raised any further.
    #[error("epoch {epoch} cannot be raised further")]
    EpochExhausted {
        /// The current epoch.
        epoch: u64,
    },
    /// The changed description breaks a limit (too many members or tokens).
    #[error(transparent)]
    Invalid(#[from] DescriptionError),
}

/// One member while a change is being computed.
#[derive(Debug, Clone)]
struct Slot {
    id: MemberId,
    /// The member's weight after the change; 0 means it is leaving.
    weight: u32,
    tokens: Vec<u64>,
}

impl RingDescription {
    /// Builds a ring at epoch 1 from `config`.
    pub fn init(config: &InitConfig) -> Result<Self, ChangeError> {
        if config.nodes.is_empty() {
            return Err(ChangeError::NoNodes);
        }
        check_shards(config.shards_per_node)?;
        if config.tokens_per_weight == 0 || config.tokens_per_weight > MAX_TOKENS_PER_WEIGHT {
            return Err(ChangeError::TokensOutOfRange { tokens: config.tokens_per_weight, max: MAX_TOKENS_PER_WEIGHT });
        }
        let mut seen = HashSet::new();
        for (id, _) in &config.nodes {
            if !seen.insert(id) {
                return Err(ChangeError::NodeExists { id: id.clone() });
            }
        }
        let nodes: Vec<NodeEntry> =
            config.nodes.iter().map(|(id, address)| NodeEntry { id: id.clone(), address: address.clone() }).collect();
        let slots = nodes
            .iter()
            .flat_map(|node| {
                (0..config.shards_per_node).map(|shard| Slot {
                    id: MemberId::new(node.id.clone(), shard),
                    weight: 1,
                    tokens: Vec::new(),
                })
            })
            .collect();
        let template = RingDescription {
            epoch: 0,
            placement: config.placement,
            tokens_per_weight: config.tokens_per_weight,
            shards_per_node: config.shards_per_node,
            nodes: Vec::new(),
            shards: Vec::new(),
        };
        template.finish(nodes, slots)
    }

    /// Adds node `id` at `address` with `shards` shards (the ring's
    /// `shards_per_node` when `None`), each of weight `weight`.
    pub fn add_node(&self, id: NodeId, address: String, shards: Option<u32>, weight: u32) -> Result<Self, ChangeError> {
        if self.nodes.iter().any(|node| node.id == id) {
            return Err(ChangeError::NodeExists { id });
        }
        let shards = shards.unwrap_or(self.shards_per_node);
        check_shards(shards)?;
        check_weight(weight, self.tokens_per_weight)?;
        let mut slots = self.slots();
        slots.extend((0..shards).map(|shard| Slot {
            id: MemberId::new(id.clone(), shard),
            weight,
            tokens: Vec::new(),
        }));
        let mut nodes = self.nodes.clone();
        nodes.push(NodeEntry { id, address });
        self.finish(nodes, slots)
    }

    /// Removes node `id` and all its shards; only their ranges move.
    pub fn remove_node(&self, id: &NodeId) -> Result<Self, ChangeError> {
        if !self.nodes.iter().any(|node| &node.id == id) {
            return Err(ChangeError::UnknownNode { id: id.clone() });
        }
        if self.nodes.iter().all(|node| &node.id == id) {
            return Err(ChangeError::LastNode { id: id.clone() });
        }
        let mut slots = self.slots();
        for slot in &mut slots {
            if &slot.id.node == id {
                slot.weight = 0;
            }
        }
        let nodes = self.nodes.iter().filter(|node| &node.id != id).cloned().collect();
        self.finish(nodes, slots)
    }

    /// Sets the weight of `member`; data moves only to it (when it grows)
    /// or only from it (when it shrinks).
    pub fn set_weight(&self, member: &MemberId, weight: u32) -> Result<Self, ChangeError> {
        check_weight(weight, self.tokens_per_weight)?;
        let mut slots = self.slots();
        let slot = slots
            .iter_mut()
            .find(|slot| &slot.id == member)
            .ok_or_else(|| ChangeError::UnknownMember { member: member.clone() })?;
        slot.weight = weight;
        self.finish(self.nodes.clone(), slots)
    }

    fn slots(&self) -> Vec<Slot> {
        self.shards
            .iter()
            .map(|shard| Slot {
                id: shard.member_id(),
                weight: shard.weight,
                tokens: shard.tokens.iter().map(|token| token.0).collect(),
            })
            .collect()
    }

    /// Places tokens for `slots`, drops leaving members and returns the
    /// description with the epoch raised.
    fn finish(&self, nodes: Vec<NodeEntry>, slots: Vec<Slot>) -> Result<Self, ChangeError> {
        let epoch = self
            .epoch
            .checked_add(1)
            .filter(|&epoch| epoch <= MAX_EPOCH)
            .ok_or(ChangeError::EpochExhausted { epoch: self.epoch })?;
        let total_tokens: u64 =
            slots.iter().map(|slot| u64::from(slot.weight) * u64::from(self.tokens_per_weight)).sum();
        if total_tokens > crate::description::MAX_TOKENS_TOTAL as u64 {
            return Err(DescriptionError::TooManyTokensTotal {
                count: usize::try_from(total_tokens).unwrap_or(usize::MAX),
                max: crate::description::MAX_TOKENS_TOTAL,
            }
            .into());
        }
        let slots = match self.placement {
            Placement::Balanced => place_balanced(slots, self.tokens_per_weight),
            Placement::Ketama => place_ketama(slots, self.tokens_per_weight),
        };
        // Shards are listed node by node, in node order, so that the file
        // reads naturally and diffs between epochs stay small.
        let mut shards: Vec<ShardEntry> = Vec::with_capacity(slots.len());
        for node in &nodes {
            let mut on_node: Vec<&Slot> = slots.iter().filter(|s| s.id.node == node.id).collect();
            on_node.sort_by_key(|slot| slot.id.shard);
            shards.extend(on_node.into_iter().map(|slot| ShardEntry {
                node: slot.id.node.clone(),
                shard: slot.id.shard,
                weight: slot.weight,
                tokens: slot.tokens.iter().copied().map(Token).collect(),
            }));
        }
        let description = RingDescription {
            epoch,
            placement: self.placement,
            tokens_per_weight: self.tokens_per_weight,
            shards_per_node: self.shards_per_node,
            nodes,
            shards,
        };
        description.validate()?;
        Ok(description)
    }
}

/// A weight in `1..=MAX_WEIGHT` whose tokens (`tokens_per_weight` each,
/// and one weight's worth to spare: a member that takes arcs from others
/// gets a token more than its share from each donor) fit
/// [`MAX_TOKENS_PER_MEMBER`]: with 256 tokens per weight, weights up to
/// 255. (A larger one passed this check and failed after placement, with
/// a message about a member's token count.)
fn check_weight(weight: u32, tokens_per_weight: u32) -> Result<(), ChangeError> {
    let tokens_max = u32::try_from(MAX_TOKENS_PER_MEMBER).unwrap_or(u32::MAX);
    let max = MAX_WEIGHT.min((tokens_max / tokens_per_weight.max(1)).saturating_sub(1).max(1));
    if weight == 0 || weight > max {
        return Err(ChangeError::WeightOutOfRange { weight, max });
    }
    Ok(())
}

fn check_shards(shards: u32) -> Result<(), ChangeError> {
    if shards == 0 || shards > MAX_SHARDS_PER_NODE {
        return Err(ChangeError::ShardsOutOfRange { shards, max: MAX_SHARDS_PER_NODE });
    }
    Ok(())
}

/// The fair share of each member in points: `weight / total` of the ring,
/// rounded down, with the leftover points (fewer than the member count)
/// given one each to the first members so the shares sum to the ring.
pub(crate) fn fair_points(weights: &[u32]) -> Vec<u128> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    assert!(total > 0, "a ring must keep at least one weighted member");
    let mut fair: Vec<u128> = weights.iter().map(|&w| RING_POINTS * u128::from(w) / total).collect();
    let mut rest = RING_POINTS - fair.iter().sum::<u128>();
    for (share, &weight) in fair.iter_mut().zip(weights) {
        if rest == 0 {
            break;
        }
        if weight > 0 {
            *share += 1;
            rest -= 1;
        }
    }
    fair
}

fn place_balanced(mut slots: Vec<Slot>, tokens_per_weight: u32) -> Vec<Slot> {
    let mut ring: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, slot) in slots.iter().enumerate() {
        ring.extend(slot.tokens.iter().map(|&token| (token, index)));
    }
    if ring.is_empty() {
        ring = evenly_spaced(&slots, tokens_per_weight);
    }
    let weights: Vec<u32> = slots.iter().map(|slot| slot.weight).collect();
    balance(&mut ring, &weights, tokens_per_weight);
    for slot in &mut slots {
        slot.tokens.clear();
    }
    for (&token, &owner) in &ring {
        slots[owner].tokens.push(token);
    }
    slots.retain(|slot| {
        assert!(slot.weight > 0 || slot.tokens.is_empty(), "a leaving member kept tokens");
        slot.weight > 0
    });
    slots
}

/// Spaces `tokens_per_weight x weight` tokens per member evenly around the
/// ring. Member `i`'s `k`-th token goes to relative position
/// `(2k + 1) / (2 c_i)` so that heavier members are spread evenly too; ties
/// (all members of equal weight tie in every round) are broken by a hash of
/// the member id and round, so that the order differs from round to round
/// and a member's successors on the ring are many different members.
fn evenly_spaced(slots: &[Slot], tokens_per_weight: u32) -> BTreeMap<u64, usize> {
    let mut items: Vec<(u128, u128, u64, usize)> = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let count = u64::from(slot.weight) * u64::from(tokens_per_weight);
        let id = slot.id.to_string();
        for k in 0..count {
            let tiebreak = xxh3_64(format!("{id}#{k}").as_bytes());
            items.push((u128::from(2 * k + 1), u128::from(2 * count), tiebreak, index));
        }
    }
    items.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    let total = items.len() as u128;
    items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let token = (position as u128 + 1) * RING_POINTS / total - 1;
            (token as u64, item.3)
        })
        .collect()
}

fn predecessor(ring: &BTreeMap<u64, usize>, token: u64) -> u64 {
    ring.range(..token)
        .next_back()
        .or_else(|| ring.iter().next_back())
        .map(|(&t, _)| t)
        .expect("the ring is never empty while balancing")
}

fn successor(ring: &BTreeMap<u64, usize>, token: u64) -> u64 {
    ring.range((Bound::Excluded(token), Bound::Unbounded))
        .next()
        .or_else(|| ring.iter().next())
        .map(|(&t, _)| t)
        .expect("the ring is never empty while balancing")
}

/// The length in points of the arc `(predecessor, token]`.
fn arc_len(ring: &BTreeMap<u64, usize>, token: u64) -> u128 {
    let previous = predecessor(ring, token);
    if previous == token {
        RING_POINTS
    } else {
        u128::from(token.wrapping_sub(previous))
    }
}

/// Moves ownership until every member is within
/// [`BALANCE_TOLERANCE_POINTS`] of its fair share and members of weight 0
/// own nothing. Data only leaves members above their share and only reaches
/// members below it.
fn balance(ring: &mut BTreeMap<u64, usize>, weights: &[u32], tokens_per_weight: u32) {
    let members = weights.len();
    let fair = fair_points(weights);
    let mut own = vec![0_u128; members];
    for &token in ring.keys() {
        own[ring[&token]] += arc_len(ring, token);
    }
    let excess = |own: &[u128], m: usize| own[m] as i128 - fair[m] as i128;
    let must_give =
        |own: &[u128], m: usize| (weights[m] == 0 && own[m] > 0) || excess(own, m) > BALANCE_TOLERANCE_POINTS as i128;

    // Phase 1: hand whole arcs to a neighbour that is short, merging the two
    // tokens into one. This is what removal mostly does.
    for donor in 0..members {
        if !must_give(&own, donor) {
            continue;
        }
        let held: Vec<u64> = ring.iter().filter(|&(_, &owner)| owner == donor).map(|(&token, _)| token).collect();
        for token in held {
            if ring.len() < 2 || !must_give(&own, donor) {
                break;
            }
            let len = arc_len(ring, token);
            if len as i128 > excess(&own, donor) {
                continue;
            }
            let next = successor(ring, token);
            let next_owner = ring[&next];
            if next_owner != donor && -excess(&own, next_owner) >= len as i128 {
                ring.remove(&token);
                own[donor] -= len;
                own[next_owner] += len;
                continue;
            }
            let previous = predecessor(ring, token);
            let previous_owner = ring[&previous];
            if previous_owner != donor && -excess(&own, previous_owner) >= len as i128 {
                ring.remove(&previous);
                ring.insert(token, previous_owner);
                own[donor] -= len;
                own[previous_owner] += len;
            }
        }
    }

    // Phase 2: the member most over its share gives a piece of its largest
    // arc to the member most under its share. The piece is at most the
    // receiver's target arc length, so the receiver ends up with about
    // `tokens_per_weight x weight` tokens spread over many donors.
    let mut arcs: Vec<BTreeSet<(u128, u64)>> = vec![BTreeSet::new(); members];
    for (&token, &owner) in ring.iter() {
        arcs[owner].insert((arc_len(ring, token), token));
    }
    let target_tokens: u128 = weights.iter().map(|&w| u128::from(w) * u128::from(tokens_per_weight)).sum();
    // Every step exhausts a donor or a receiver, hands over a whole arc, or
    // moves a full target-sized piece; this bounds the loop.
    let max_steps = 4 * (ring.len() as u128 + members as u128 + target_tokens) + 64;
    let mut steps = 0_u128;
    loop {
        steps += 1;
        assert!(steps <= max_steps, "balancing did not converge");
        let donor = (0..members)
            .filter(|&m| must_give(&own, m))
            .max_by_key(|&m| (weights[m] == 0, excess(&own, m), std::cmp::Reverse(m)));
        let Some(donor) = donor else { break };
        let receiver = (0..members)
            .filter(|&m| weights[m] > 0)
            .max_by_key(|&m| (-excess(&own, m), std::cmp::Reverse(m)))
            .expect("a ring keeps at least one weighted member");
        let deficit = -excess(&own, receiver);
        assert!(deficit > 0, "a donor exists, so some member is short");
        let piece_target = (fair[receiver] / (u128::from(weights[receiver]) * u128::from(tokens_per_weight))).max(1);
        let amount = (excess(&own, donor) as u128).min(deficit as u128).min(piece_target);
        let &(len, token) = arcs[donor].last().expect("a member above its share owns an arc");
        arcs[donor].remove(&(len, token));
        if amount >= len {
            ring.insert(token, receiver);
            arcs[receiver].insert((len, token));
            own[donor] -= len;
            own[receiver] += len;
        } else {
            let previous = predecessor(ring, token);
            // `amount < len`, so the new token lies strictly inside the arc
            // `(previous, token)`, where there is no other token.
            let split = previous.wrapping_add(amount as u64);
            ring.insert(split, receiver);
            arcs[donor].insert((len - amount, token));
            arcs[receiver].insert((amount, split));
            own[donor] -= amount;
            own[receiver] += amount;
        }
    }
}

/// Ketama-style placement: member `m`'s tokens are `xxh3_64("m#i")` for
/// `i = 0, 1, ...`, skipping any value already taken. Members whose token
/// count already matches their weight keep their tokens; the others get the
/// first `tokens_per_weight x weight` of their sequence, so raising a weight
/// only adds tokens.
fn place_ketama(mut slots: Vec<Slot>, tokens_per_weight: u32) -> Vec<Slot> {
    slots.retain(|slot| slot.weight > 0);
    let wanted = |slot: &Slot| (u64::from(slot.weight) * u64::from(tokens_per_weight)) as usize;
    let mut taken: HashSet<u64> = slots
        .iter()
        .filter(|slot| slot.tokens.len() == wanted(slot))
        .flat_map(|slot| slot.tokens.iter().copied())
        .collect();
    for slot in &mut slots {
        let count = wanted(slot);
        if slot.tokens.len() == count {
            continue;
        }
        let id = slot.id.to_string();
        let mut tokens = Vec::with_capacity(count);
        // Collisions between 64-bit hashes are rare enough that twice the
        // count plus a margin is never reached in practice.
        for i in 0..(2 * count + 64) {
            if tokens.len() == count {
                break;
            }
            let token = xxh3_64(format!("{id}#{i}").as_bytes());
            if taken.insert(token) {
                tokens.push(token);
            }
        }
        assert_eq!(tokens.len(), count, "too many ketama token collisions");
        tokens.sort_unstable();
        slot.tokens = tokens;
    }
    slots
}
