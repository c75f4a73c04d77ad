//! ringkv's consistent-hash ring: which shard owns every key, how to change
//! the ring while moving as little data as possible, and what moves.
//!
//! **Architecture Invariant:** the router is a pure library. Rings go in,
//! ownership and plans come out; it opens no sockets and starts no threads.
//! The only I/O is [`RingDescription::load`] and [`RingDescription::save`].
//!
//! * [`RingDescription`] is the serialisable ring (TOML on disk, any serde
//!   format on the wire): epoch, nodes, members with weights and tokens.
//!   Changes ([`RingDescription::add_node`], [`RingDescription::remove_node`],
//!   [`RingDescription::set_weight`]) return a new description with the epoch
//!   raised, placing tokens so every member owns exactly its fair share.
//! * [`Ring`] is a validated description compiled for lookups:
//!   [`Ring::owner`] maps a hash to a [`MemberIndex`] in a few nanoseconds.
//! * [`plan`] lists the ranges that change owner between two rings.
//!
//! The format, the placement algorithm and the JSON output of the tools are
//! described in docs/ring.md.

mod balance;
mod description;
mod id;
mod placement;
mod plan;
mod ring;

pub use balance::{BalanceReport, KeyBalance, MemberBalance, MAX_SAMPLE_KEYS};
pub use description::{
    DescriptionError, FileError, NodeEntry, Placement, RingDescription, ShardEntry, MAX_EPOCH, MAX_MEMBERS,
    MAX_SHARDS_PER_NODE, MAX_TOKENS_PER_MEMBER, MAX_TOKENS_PER_WEIGHT, MAX_TOKENS_TOTAL, MAX_WEIGHT,
};
pub use id::{IdError, MemberId, NodeId, Token, MAX_NODE_ID_BYTES};
pub use placement::{ChangeError, InitConfig, BALANCE_TOLERANCE_POINTS};
pub use plan::{plan, Move, Plan, Transfer};
pub use ring::{hash_key, HashRange, Member, MemberIndex, Node, NodeIndex, Ownership, Ring};
