//! The compiled ring: lookups from a hash to its owner.
//!
//! Lookup is the hot path of every request, so the ring keeps the tokens in
//! one sorted array with a parallel array of owners, and a bucket table
//! indexed by the top bits of the hash that narrows the search to the one or
//! two tokens in the hash's bucket. Measured in benches/router.rs: the table
//! makes a lookup at 100 members x 256 tokens several times faster than a
//! plain binary search, whose probes miss the cache.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::description::{DescriptionError, RingDescription};
use crate::id::{MemberId, NodeId};
use crate::placement::RING_POINTS;

/// The hash that places a key on the ring: `xxh3_64(key)`.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The most bits of bucket table: 2^20 entries of 4 bytes is 4 MiB, reached
/// only by rings near [`MAX_TOKENS_TOTAL`](crate::MAX_TOKENS_TOTAL).
const MAX_TABLE_BITS: u32 = 20;

/// A member's position in [`Ring::members`]; what lookups return. It is only
/// meaningful for the ring that produced it: across epochs, use
/// [`MemberId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberIndex(pub u32);

impl MemberIndex {
    /// The index as a `usize`, for indexing per-member arrays.
    #[inline]
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// A node's position in [`Ring::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIndex(pub u32);

impl NodeIndex {
    /// The index as a `usize`.
    #[inline]
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// A node of a compiled ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id.
    pub id: NodeId,
    /// Where the node listens, `host:port`.
    pub address: String,
}

/// A member (shard) of a compiled ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id, stable across epochs.
    pub id: MemberId,
    /// The node it runs on.
    pub node: NodeIndex,
    /// Its weight.
    pub weight: u32,
    /// How many tokens it holds.
    pub tokens: usize,
}

/// A range of hashes `(start, end]`, going clockwise and wrapping past
/// `u64::MAX` to 0 when `end < start`. `start == end` is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashRange {
    /// The exclusive start.
    pub start: crate::Token,
    /// The inclusive end.
    pub end: crate::Token,
}

impl HashRange {
    /// The number of hashes in the range (2^64 for the whole ring).
    pub fn len_points(&self) -> u128 {
        if self.start == self.end {
            RING_POINTS
        } else {
            u128::from(self.end.0.wrapping_sub(self.start.0))
        }
    }

    /// Whether `hash` is in the range.
    pub fn contains(&self, hash: u64) -> bool {
        // Offsets measured from `start`: the range is offsets 1..=len.
        let offset = u128::from(hash.wrapping_sub(self.start.0));
        let offset = if offset == 0 { RING_POINTS } else { offset };
        offset <= self.len_points()
    }

    /// The fraction of the ring the range covers.
    pub fn fraction(&self) -> f64 {
        self.len_points() as f64 / RING_POINTS as f64
    }
}

/// A validated ring, ready for lookups. Build it with [`Ring::new`]; it is
/// immutable, and a new epoch means a new `Ring`.
#[derive(Debug, Clone)]
pub struct Ring {
    description: RingDescription,
    nodes: Vec<Node>,
    members: Vec<Member>,
    /// All tokens, ascending.
    tokens: Box<[u64]>,
    /// `owners[i]` owns the arc ending at `tokens[i]`.
    owners: Box<[u32]>,
    /// `table[b]` is the index of the first token whose top bits are `>= b`;
    /// it has `2^bits + 1` entries so that `table[b + 1]` always exists.
    table: Box<[u32]>,
    /// `64 - bits`: how far a hash is shifted to get its bucket.
    shift: u32,
}

impl Ring {
    /// Validates `description` and compiles it for lookups.
    pub fn new(description: RingDescription) -> Result<Self, DescriptionError> {
        description.validate()?;
        let nodes: Vec<Node> =
            description.nodes.iter().map(|node| Node { id: node.id.clone(), address: node.address.clone() }).collect();
        let node_index: HashMap<&NodeId, u32> =
            nodes.iter().enumerate().map(|(index, node)| (&node.id, index as u32)).collect();
        let mut members = Vec::with_capacity(description.shards.len());
        let mut pairs: Vec<(u64, u32)> = Vec::new();
        for (index, shard) in description.shards.iter().enumerate() {
            members.push(Member {
                id: shard.member_id(),
                // `validate` checked that every shard's node is listed.
                node: NodeIndex(node_index[&shard.node]),
                weight: shard.weight,
                tokens: shard.tokens.len(),
            });
            pairs.extend(shard.tokens.iter().map(|token| (token.0, index as u32)));
        }
        pairs.sort_unstable();
        let tokens: Box<[u64]> = pairs.iter().map(|&(token, _)| token).collect();
        let owners: Box<[u32]> = pairs.iter().map(|&(_, owner)| owner).collect();

        // About one token per bucket: fewer buckets leave several tokens to
        // search, more make the table itself miss the cache.
        let bits = (usize::BITS - tokens.len().leading_zeros()).clamp(1, MAX_TABLE_BITS);
        let shift = 64 - bits;
        let buckets = 1_usize << bits;
        let mut table = Vec::with_capacity(buckets + 1);
        let mut next = 0_usize;
        for bucket in 0..buckets as u64 {
            let bucket_start = bucket << shift;
            while next < tokens.len() && tokens[next] < bucket_start {
                next += 1;
            }
            table.push(next as u32);
        }
        table.push(tokens.len() as u32);

        Ok(Self { description, nodes, members, tokens, owners, table: table.into_boxed_slice(), shift })
    }

    /// The index into [`Ring::tokens`] of the token whose arc holds `hash`.
    #[inline]
    fn token_index(&self, hash: u64) -> usize {
        let bucket = (hash >> self.shift) as usize;
        let start = self.table[bucket] as usize;
        let end = self.table[bucket + 1] as usize;
        // The first token at or after `hash` is in this bucket, or it is the
        // first token of a later bucket, which is `tokens[end]`; past the
        // last token the ring wraps to the first.
        let index = start + self.tokens[start..end].partition_point(|&token| token < hash);
        if index == self.tokens.len() {
            0
        } else {
            index
        }
    }

    /// The member that owns `hash`: the owner of the first token at or after
    /// `hash`, wrapping past the top of the ring.
    #[inline]
    pub fn owner(&self, hash: u64) -> MemberIndex {
        MemberIndex(self.owners[self.token_index(hash)])
    }

    /// The member that owns `key`, that is `owner(xxh3_64(key))`.
    #[inline]
    pub fn owner_of_key(&self, key: &[u8]) -> MemberIndex {
        self.owner(hash_key(key))
    }

    /// [`Ring::owner`] by plain binary search over all tokens, without the
    /// bucket table. Kept for the benches and as a reference in tests.
    #[doc(hidden)]
    pub fn owner_by_binary_search(&self, hash: u64) -> MemberIndex {
        let index = self.tokens.partition_point(|&token| token < hash);
        let index = if index == self.tokens.len() { 0 } else { index };
        MemberIndex(self.owners[index])
    }

    /// The ring's epoch.
    pub fn epoch(&self) -> u64 {
        self.description.epoch
    }

    /// The description the ring was built from, for saving or sending.
    pub fn description(&self) -> &RingDescription {
        &self.description
    }

    /// The members, in description order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// One member.
    ///
    /// # Panics
    /// If `index` did not come from this ring.
    pub fn member(&self, index: MemberIndex) -> &Member {
        &self.members[index.get()]
    }

    /// The nodes, in description order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    ///
    /// # Panics
    /// If `index` did not come from this ring.
    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.nodes[index.get()]
    }

    /// The node a member runs on.
    pub fn node_of(&self, member: MemberIndex) -> &Node {
        self.node(self.member(member).node)
    }

    /// Finds a member by id.
    pub fn member_index(&self, id: &MemberId) -> Option<MemberIndex> {
        self.members.iter().position(|member| &member.id == id).map(|index| MemberIndex(index as u32))
    }

    /// Finds a node by id.
    pub fn node_index(&self, id: &NodeId) -> Option<NodeIndex> {
        self.nodes.iter().position(|node| &node.id == id).map(|index| NodeIndex(index as u32))
    }

    /// The address of node `id`, if it is in the ring.
    pub fn address_of(&self, id: &NodeId) -> Option<&str> {
        self.node_index(id).map(|index| self.node(index).address.as_str())
    }

    /// The number of tokens on the ring.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The sorted tokens with their owners.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, MemberIndex)> + '_ {
        self.tokens.iter().zip(self.owners.iter()).map(|(&token, &owner)| (token, MemberIndex(owner)))
    }

    /// The length of the arc ending at `tokens[index]`.
    fn arc_len(&self, index: usize) -> u128 {
        if self.tokens.len() == 1 {
            return RING_POINTS;
        }
        let previous = if index == 0 { self.tokens[self.tokens.len() - 1] } else { self.tokens[index - 1] };
        u128::from(self.tokens[index].wrapping_sub(previous))
    }

    /// How many of the 2^64 hashes each member owns, by member index.
    pub fn owned_points(&self) -> Vec<u128> {
        let mut points = vec![0_u128; self.members.len()];
        for (index, &owner) in self.owners.iter().enumerate() {
            points[owner as usize] += self.arc_len(index);
        }
        points
    }

    /// The ranges `member` owns, ascending by end, with adjacent ranges
    /// merged (including across the top of the ring).
    pub fn owned_ranges(&self, member: MemberIndex) -> Vec<HashRange> {
        self.ownership()
            .segments()
            .into_iter()
            .filter(|(_, owner)| owner == &self.member(member).id)
            .map(|(range, _)| range)
            .collect()
    }

    /// Who owns what, as a canonical list of maximal ranges: two rings with
    /// the same ownership have equal `Ownership` whatever their tokens.
    pub fn ownership(&self) -> Ownership {
        let ends = self
            .tokens
            .iter()
            .zip(self.owners.iter())
            .map(|(&token, &owner)| (token, self.members[owner as usize].id.clone()));
        Ownership::from_arc_ends(ends.collect())
    }

    /// The replica list of `hash`: its owner, then the next members
    /// clockwise that are on nodes not already in the list, up to `count`
    /// members (fewer if the ring has fewer nodes).
    pub fn replicas(&self, hash: u64, count: usize) -> Vec<MemberIndex> {
        let mut out = Vec::with_capacity(count.min(self.nodes.len()));
        self.replicas_into(hash, count, &mut out);
        out
    }

    /// [`Ring::replicas`] into a caller's buffer, which is cleared first, so
    /// that the server can reuse one allocation.
    pub fn replicas_into(&self, hash: u64, count: usize, out: &mut Vec<MemberIndex>) {
        out.clear();
        let wanted = count.min(self.nodes.len());
        if wanted == 0 {
            return;
        }
        let start = self.token_index(hash);
        // One lap of the ring visits every member, so it is the bound.
        for step in 0..self.tokens.len() {
            let owner = MemberIndex(self.owners[(start + step) % self.tokens.len()]);
            let node = self.member(owner).node;
            if out.iter().all(|&m| self.member(m).node != node) {
                out.push(owner);
                if out.len() == wanted {
                    return;
                }
            }
        }
    }
}

/// Canonical ownership of the ring: maximal ranges with their owner.
///
/// Stored as the end points where ownership changes, each with the owner of
/// the range ending there; a ring with one owner is stored as the single
/// point `u64::MAX`, so that equal ownership gives equal values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    ends: Vec<(u64, MemberId)>,
}

impl Ownership {
    /// Builds the canonical form from arc ends: `(end, owner)` pairs sorted
    /// by `end`, each owning `(previous end, end]`.
    pub(crate) fn from_arc_ends(arcs: Vec<(u64, MemberId)>) -> Self {
        let count = arcs.len();
        assert!(count > 0, "ownership of an empty ring");
        // Keep an end only where the next arc (clockwise) has another owner.
        let ends: Vec<(u64, MemberId)> =
            (0..count).filter(|&i| arcs[i].1 != arcs[(i + 1) % count].1).map(|i| arcs[i].clone()).collect();
        if ends.is_empty() {
            return Self { ends: vec![(u64::MAX, arcs[0].1.clone())] };
        }
        Self { ends }
    }

    /// The maximal ranges with their owners, ascending by end.
    pub fn segments(&self) -> Vec<(HashRange, MemberId)> {
        let count = self.ends.len();
        (0..count)
            .map(|i| {
                let start = self.ends[(i + count - 1) % count].0;
                let range = HashRange { start: crate::Token(start), end: crate::Token(self.ends[i].0) };
                (range, self.ends[i].1.clone())
            })
            .collect()
    }

    /// The owner of `hash`.
    pub fn owner(&self, hash: u64) -> &MemberId {
        let index = self.ends.partition_point(|(end, _)| *end < hash);
        let index = if index == self.ends.len() { 0 } else { index };
        &self.ends[index].1
    }
}
