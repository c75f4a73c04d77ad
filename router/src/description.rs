//! The ring description: the serialisable source of truth for a ring.
//!
//! A description is what operators edit (through `ringkv ring`), what is
//! stored in `ring.toml`, and what the server sends to clients. A
//! [`Ring`](crate::Ring) is compiled from a validated description and is what
//! lookups run against.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::{MemberId, NodeId, Token};

/// The most members (shards) a ring may have. Member indices are `u32`
/// internally and the balance loop is quadratic in members, so a bound keeps
/// every change well under a second.
pub const MAX_MEMBERS: usize = 4096;

/// The most tokens one member may hold. Placement keeps members near
/// `tokens_per_weight x weight`; this is a sanity bound against corrupt files.
pub const MAX_TOKENS_PER_MEMBER: usize = 1 << 16;

/// The most tokens the whole ring may hold. The lookup arrays are
/// `12 bytes x tokens` plus a table, so this caps a ring at about 20 MiB.
pub const MAX_TOKENS_TOTAL: usize = 1 << 20;

/// The largest weight of one member. Weights are small integers (relative
/// capacities); a bound keeps `tokens_per_weight x weight` within limits.
pub const MAX_WEIGHT: u32 = 1024;

/// The most tokens per unit of weight that may be asked for.
pub const MAX_TOKENS_PER_WEIGHT: u32 = 4096;

/// The most shards one node may run.
pub const MAX_SHARDS_PER_NODE: u32 = 256;

/// The largest epoch: TOML integers are signed 64-bit.
pub const MAX_EPOCH: u64 = i64::MAX as u64;

/// How tokens are chosen when members join, leave or change weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Tokens are placed so that every member owns exactly its fair share
    /// (see docs/ring.md). This is the default.
    #[default]
    Balanced,
    /// Tokens are `xxh3_64("node/shard#i")`, as in Ketama. Kept for
    /// comparison: its balance is much worse.
    Ketama,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Balanced => "balanced",
            Placement::Ketama => "ketama",
        })
    }
}

/// A complete ring: its epoch, its placement parameters, its nodes and its
/// members with their tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingDescription {
    /// Raised by one with every change, so that a server or client holding
    /// two descriptions knows which is newer and can refuse to go back.
    pub epoch: u64,
    /// The algorithm used for future changes. Stored so that `ring add`
    /// keeps using the algorithm the ring was created with.
    #[serde(default)]
    pub placement: Placement,
    /// Tokens a member of weight 1 should hold; placement aims at
    /// `tokens_per_weight x weight` tokens per member.
    pub tokens_per_weight: u32,
    /// Shards a newly added node gets unless told otherwise.
    pub shards_per_node: u32,
    /// The nodes, with the address clients and peers connect to.
    pub nodes: Vec<NodeEntry>,
    /// The members (shards) with their weights and tokens.
    pub shards: Vec<ShardEntry>,
}

/// One node of a ring description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's id, unique in the ring.
    pub id: NodeId,
    /// Where the node listens, as `host:port`. The router does not parse it:
    /// it is passed to the network layer as it is.
    pub address: String,
}

/// One member (shard) of a ring description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// The node the shard runs on; it must be listed in `nodes`.
    pub node: NodeId,
    /// The shard's index on that node.
    pub shard: u32,
    /// The shard's relative capacity; its fair share of the hash space is
    /// `weight / total weight`.
    pub weight: u32,
    /// The shard's tokens, strictly ascending. The member owns the arc
    /// `(previous token on the ring, token]` for each of them.
    pub tokens: Vec<Token>,
}

impl ShardEntry {
    /// The member id of this shard.
    pub fn member_id(&self) -> MemberId {
        MemberId::new(self.node.clone(), self.shard)
    }
}

/// Why a ring description is refused. Every variant names where the problem
/// is, so that an operator can find it in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// A ring needs at least one member to own the hash space.
    #[error("the ring has no members")]
    NoMembers,
    /// The ring has more members than [`MAX_MEMBERS`].
    #[error("the ring has {count} members; the limit is {max}")]
    TooManyMembers {
        /// Members in the description.
        count: usize,
        /// [`MAX_MEMBERS`].
        max: usize,
    },
    /// The ring has more tokens than [`MAX_TOKENS_TOTAL`].
    #[error("the ring has {count} tokens; the limit is {max}")]
    TooManyTokensTotal {
        /// Tokens in the description.
        count: usize,
        /// [`MAX_TOKENS_TOTAL`].
        max: usize,
    },
    /// The epoch does not fit a TOML integer.
    #[error("epoch {epoch} is above the limit {max}")]
    EpochTooLarge {
        /// The epoch in the description.
        epoch: u64,
        /// [`MAX_EPOCH`].
        max: u64,
    },
    /// `tokens_per_weight` is 0 or above [`MAX_TOKENS_PER_WEIGHT`].
    #[error("tokens_per_weight is {value}; it must be between 1 and {max}")]
    TokensPerWeightOutOfRange {
        /// The value in the description.
        value: u32,
        /// [`MAX_TOKENS_PER_WEIGHT`].
        max: u32,
    },
    /// `shards_per_node` is 0 or above [`MAX_SHARDS_PER_NODE`].
    #[error("shards_per_node is {value}; it must be between 1 and {max}")]
    ShardsPerNodeOutOfRange {
        /// The value in the description.
        value: u32,
        /// [`MAX_SHARDS_PER_NODE`].
        max: u32,
    },
    /// Two nodes share an id.
    #[error("duplicate node id {id} (nodes[{first}] and nodes[{second}])")]
    DuplicateNode {
        /// The repeated id.
        id: NodeId,
        /// Index of its first entry in `nodes`.
        first: usize,
        /// Index of the repeated entry.
        second: usize,
    },
    /// A node has an empty address.
    #[error("node {id} (nodes[{index}]) has an empty address")]
    EmptyAddress {
        /// The node.
        id: NodeId,
        /// Its index in `nodes`.
        index: usize,
    },
    /// A node has no shards, so it would own nothing.
    #[error("node {id} (nodes[{index}]) has no shards")]
    NodeWithoutShards {
        /// The node.
        id: NodeId,
        /// Its index in `nodes`.
        index: usize,
    },
    /// A shard names a node that is not in `nodes`.
    #[error("shard {member} (shards[{index}]) is on unknown node {node}")]
    UnknownNode {
        /// The shard.
        member: MemberId,
        /// Its index in `shards`.
        index: usize,
        /// The node it names.
        node: NodeId,
    },
    /// Two shards share a (node, shard) id.
    #[error("duplicate member {member} (shards[{first}] and shards[{second}])")]
    DuplicateMember {
        /// The repeated id.
        member: MemberId,
        /// Index of its first entry in `shards`.
        first: usize,
        /// Index of the repeated entry.
        second: usize,
    },
    /// A shard has weight 0; it would have no fair share.
    #[error("member {member} (shards[{index}]) has weight 0")]
    ZeroWeight {
        /// The shard.
        member: MemberId,
        /// Its index in `shards`.
        index: usize,
    },
    /// A shard's weight is above [`MAX_WEIGHT`].
    #[error("member {member} (shards[{index}]) has weight {weight}; the limit is {max}")]
    WeightTooLarge {
        /// The shard.
        member: MemberId,
        /// Its index in `shards`.
        index: usize,
        /// Its weight.
        weight: u32,
        /// [`MAX_WEIGHT`].
        max: u32,
    },
    /// A shard has no tokens, so it would own nothing.
    #[error("member {member} (shards[{index}]) has no tokens")]
    NoTokens {
        /// The shard.
        member: MemberId,
        /// Its index in `shards`.
        index: usize,
    },
    /// A shard has more than [`MAX_TOKENS_PER_MEMBER`] tokens.
    #[error("member {member} has {count} tokens; the limit is {max}")]
    TooManyTokens {
        /// The shard.
        member: MemberId,
        /// Its token count.
        count: usize,
        /// [`MAX_TOKENS_PER_MEMBER`].
        max: usize,
    },
    /// A shard's tokens are not ascending.
    #[error("member {member}: token {token} at index {token_index} is below the previous token {previous}")]
    UnsortedTokens {
        /// The shard.
        member: MemberId,
        /// Index of the out-of-order token in the shard's `tokens`.
        token_index: usize,
        /// The out-of-order token.
        token: Token,
        /// The token before it.
        previous: Token,
    },
    /// A shard lists the same token twice.
    #[error("member {member}: token {token} at index {token_index} repeats the previous token")]
    DuplicateToken {
        /// The shard.
        member: MemberId,
        /// Index of the repeated token in the shard's `tokens`.
        token_index: usize,
        /// The repeated token.
        token: Token,
    },
    /// Two shards hold the same token, so the point would have two owners.
    #[error("token {token} is held by both {first} (index {first_index}) and {second} (index {second_index})")]
    TokenCollision {
        /// The shared token.
        token: Token,
        /// The first member holding it.
        first: MemberId,
        /// Its index in that member's `tokens`.
        first_index: usize,
        /// The second member holding it.
        second: MemberId,
        /// Its index in that member's `tokens`.
        second_index: usize,
    },
    /// A description is older than the one it would replace.
    #[error("epoch {proposed} is lower than the current epoch {current}")]
    EpochRegressed {
        /// The epoch in force.
        current: u64,
        /// The epoch of the refused description.
        proposed: u64,
    },
    /// A different description reuses the current epoch.
    #[error("epoch {epoch} is already in use by a different ring description")]
    EpochReused {
        /// The shared epoch.
        epoch: u64,
    },
}

/// Why a ring file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a well-formed ring description.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but describes an invalid ring.
    #[error("invalid ring in {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: DescriptionError,
    },
    /// The description could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The description could not be turned into TOML.
    #[error("cannot encode the ring as TOML: {message}")]
    Encode {
        /// The encoder's message.
        message: String,
    },
}

impl RingDescription {
    /// Checks every rule of a valid description (see docs/ring.md) and
    /// reports the first problem found, naming where it is.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        if self.epoch > MAX_EPOCH {
            return Err(DescriptionError::EpochTooLarge { epoch: self.epoch, max: MAX_EPOCH });
        }
        if self.tokens_per_weight == 0 || self.tokens_per_weight > MAX_TOKENS_PER_WEIGHT {
            return Err(DescriptionError::TokensPerWeightOutOfRange {
                value: self.tokens_per_weight,
                max: MAX_TOKENS_PER_WEIGHT,
            });
        }
        if self.shards_per_node == 0 || self.shards_per_node > MAX_SHARDS_PER_NODE {
            return Err(DescriptionError::ShardsPerNodeOutOfRange {
                value: self.shards_per_node,
                max: MAX_SHARDS_PER_NODE,
            });
        }
        if self.shards.is_empty() {
            return Err(DescriptionError::NoMembers);
        }
        if self.shards.len() > MAX_MEMBERS {
            return Err(DescriptionError::TooManyMembers { count: self.shards.len(), max: MAX_MEMBERS });
        }

        let mut node_index: HashMap<&NodeId, usize> = HashMap::with_capacity(self.nodes.len());
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(&first) = node_index.get(&node.id) {
                return Err(DescriptionError::DuplicateNode { id: node.id.clone(), first, second: index });
            }
            if node.address.trim().is_empty() {
                return Err(DescriptionError::EmptyAddress { id: node.id.clone(), index });
            }
            node_index.insert(&node.id, index);
        }

        let mut shards_on_node = vec![0_usize; self.nodes.len()];
        let mut member_index: HashMap<MemberId, usize> = HashMap::with_capacity(self.shards.len());
        let mut tokens_total = 0_usize;
        for (index, shard) in self.shards.iter().enumerate() {
            let member = shard.member_id();
            let Some(&node) = node_index.get(&shard.node) else {
                return Err(DescriptionError::UnknownNode { member, index, node: shard.node.clone() });
            };
            shards_on_node[node] += 1;
            if let Some(&first) = member_index.get(&member) {
                return Err(DescriptionError::DuplicateMember { member, first, second: index });
            }
            if shard.weight == 0 {
                return Err(DescriptionError::ZeroWeight { member, index });
            }
            if shard.weight > MAX_WEIGHT {
                return Err(DescriptionError::WeightTooLarge { member, index, weight: shard.weight, max: MAX_WEIGHT });
            }
            if shard.tokens.is_empty() {
                return Err(DescriptionError::NoTokens { member, index });
            }
            if shard.tokens.len() > MAX_TOKENS_PER_MEMBER {
                return Err(DescriptionError::TooManyTokens {
                    member,
                    count: shard.tokens.len(),
                    max: MAX_TOKENS_PER_MEMBER,
                });
            }
            for (token_index, pair) in shard.tokens.windows(2).enumerate() {
                let (previous, token) = (pair[0], pair[1]);
                if token == previous {
                    return Err(DescriptionError::DuplicateToken { member, token_index: token_index + 1, token });
                }
                if token < previous {
                    return Err(DescriptionError::UnsortedTokens {
                        member,
                        token_index: token_index + 1,
                        token,
                        previous,
                    });
                }
            }
            tokens_total += shard.tokens.len();
            member_index.insert(member, index);
        }
        if tokens_total > MAX_TOKENS_TOTAL {
            return Err(DescriptionError::TooManyTokensTotal { count: tokens_total, max: MAX_TOKENS_TOTAL });
        }
        if let Some(index) = shards_on_node.iter().position(|&count| count == 0) {
            return Err(DescriptionError::NodeWithoutShards { id: self.nodes[index].id.clone(), index });
        }

        // Collisions across members: sort (token, shard, index) triples and
        // compare neighbours. Within a member, order was checked above.
        let mut all: Vec<(u64, usize, usize)> = Vec::with_capacity(tokens_total);
        for (shard_index, shard) in self.shards.iter().enumerate() {
            all.extend(shard.tokens.iter().enumerate().map(|(token_index, token)| (token.0, shard_index, token_index)));
        }
        all.sort_unstable();
        for pair in all.windows(2) {
            let ((token, a, a_index), (next, b, b_index)) = (pair[0], pair[1]);
            if token == next {
                return Err(DescriptionError::TokenCollision {
                    token: Token(token),
                    first: self.shards[a].member_id(),
                    first_index: a_index,
                    second: self.shards[b].member_id(),
                    second_index: b_index,
                });
            }
        }
        Ok(())
    }

    /// Checks that `self` may replace `current`: its epoch is higher, or it
    /// is the very same description. A lower epoch means a stale writer.
    pub fn check_successor_of(&self, current: &RingDescription) -> Result<(), DescriptionError> {
        if self.epoch < current.epoch {
            return Err(DescriptionError::EpochRegressed { current: current.epoch, proposed: self.epoch });
        }
        if self.epoch == current.epoch && self != current {
            return Err(DescriptionError::EpochReused { epoch: self.epoch });
        }
        Ok(())
    }

    /// Parses and validates a description from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, FileError> {
        Self::parse(text, Path::new("<string>"))
    }

    /// Encodes the description as TOML.
    pub fn to_toml_string(&self) -> Result<String, FileError> {
        let body = toml::to_string(self).map_err(|e| FileError::Encode { message: e.to_string() })?;
        Ok(format!("# ringkv ring description; see docs/ring.md. Edit with `ringkv ring`.\n{body}"))
    }

    /// Reads, parses and validates the description in `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        let description: RingDescription = toml::from_str(text).map_err(|e| FileError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })?;
        description.validate().map_err(|source| FileError::Invalid { path: path.to_owned(), source })?;
        Ok(description)
    }

    /// Validates the description and writes it to `path` atomically: to a
    /// temporary file in the same directory, fsynced, renamed over `path`,
    /// and then the directory is fsynced so that the rename itself is
    /// durable. A crash leaves either the old file or the new one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), FileError> {
        let path = path.as_ref();
        self.validate().map_err(|source| FileError::Invalid { path: path.to_owned(), source })?;
        let text = self.to_toml_string()?;
        let write_err = |source| FileError::Write { path: path.to_owned(), source };
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name =
            path.file_name().ok_or_else(|| write_err(std::io::Error::other("the path has no file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);

        let result = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, path)?;
            fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            // The temporary file is garbage if anything failed; the target
            // was either not touched or fully replaced.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }

    /// The member ids in description order.
    pub fn member_ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.shards.iter().map(ShardEntry::member_id)
    }

    /// The address of node `id`, if it is in the ring.
    pub fn address_of(&self, id: &NodeId) -> Option<&str> {
        self.nodes.iter().find(|node| &node.id == id).map(|node| node.address.as_str())
    }
}

/// Turns a byte span of a TOML error into " (line L, column C)".
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(" (line {line}, column {column})")
}
