//! Names of things on the ring: nodes, members (shards) and tokens.
//!
//! All three have a text form used in ring descriptions, in the CLI and in
//! JSON output, so that an operator can copy a name from one into another.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest node id accepted, in bytes. Node ids appear in every log line
/// and table the tools print, so they are kept short.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Why a piece of text is not a valid node id, member id or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A node id must have at least one character.
    #[error("node id is empty")]
    EmptyNodeId,
    /// A node id is longer than [`MAX_NODE_ID_BYTES`].
    #[error("node id {id:?} is {len_bytes} bytes long; the limit is {max_bytes}")]
    NodeIdTooLong {
        /// The offending id.
        id: String,
        /// Its length in bytes.
        len_bytes: usize,
        /// [`MAX_NODE_ID_BYTES`].
        max_bytes: usize,
    },
    /// A node id may only hold ASCII letters, digits, `-`, `_` and `.`, so
    /// that `/` can separate it from a shard index and `=` from an address.
    #[error("node id {id:?} holds {ch:?}; only ASCII letters, digits, '-', '_' and '.' are allowed")]
    NodeIdInvalidChar {
        /// The offending id.
        id: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// A member id is written `node/shard`, for example `n1/0`.
    #[error("member id {text:?} is not of the form NODE/SHARD (for example n1/0)")]
    MalformedMemberId {
        /// The offending text.
        text: String,
    },
    /// A token is written as `0x` followed by one to sixteen hex digits.
    #[error("token {text:?} is not 0x followed by 1 to 16 hex digits")]
    MalformedToken {
        /// The offending text.
        text: String,
    },
}

/// The id of a node (one server process), for example `n1`.
///
/// It is validated on construction, so holding a `NodeId` means the text is
/// short and free of the separators used by [`MemberId`] and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(IdError::EmptyNodeId);
        }
        if id.len() > MAX_NODE_ID_BYTES {
            return Err(IdError::NodeIdTooLong { len_bytes: id.len(), max_bytes: MAX_NODE_ID_BYTES, id });
        }
        if let Some(ch) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(IdError::NodeIdInvalidChar { id, ch });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<NodeId> for String {
    fn from(value: NodeId) -> Self {
        value.0
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of a ring member: shard `shard` of node `node`, written
/// `n1/0`. A member keeps its id for its whole life, across epochs, which is
/// what lets a [`Plan`](crate::Plan) name the same member in two rings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    /// The node the shard runs on.
    pub node: NodeId,
    /// The shard's index within its node, counting from 0.
    pub shard: u32,
}

impl MemberId {
    /// Builds the id of shard `shard` on node `node`.
    pub fn new(node: NodeId, shard: u32) -> Self {
        Self { node, shard }
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.shard)
    }
}

impl FromStr for MemberId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IdError::MalformedMemberId { text: s.to_owned() };
        let (node, shard) = s.rsplit_once('/').ok_or_else(malformed)?;
        let shard = shard.parse::<u32>().map_err(|_| malformed())?;
        Ok(Self::new(NodeId::new(node)?, shard))
    }
}

impl Serialize for MemberId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A point on the ring, the position of a virtual node.
///
/// Its text form is `0x` and sixteen hex digits (`0x8000000000000000`). Text
/// is used because TOML integers are signed 64-bit and cannot hold the upper
/// half of the ring, and because JSON readers often lose precision above
/// 2^53. Formats that are not human-readable (bincode and the like) carry the
/// plain `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl FromStr for Token {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IdError::MalformedToken { text: s.to_owned() };
        let digits = s.strip_prefix("0x").ok_or_else(malformed)?;
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        u64::from_str_radix(digits, 16).map(Token).map_err(|_| malformed())
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(deserializer).map(Token)
        }
    }
}
