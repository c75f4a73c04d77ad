//! The engine's errors. Callers react by variant; operators read the message.

use std::io;
use std::path::PathBuf;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An earlier flush to disk failed, so nothing written since can be
    /// promised durable. The store refuses writes until it is reopened.
    #[error("store is poisoned after a failed flush ({cause}); restart to recover")]
    Poisoned { cause: String },

    /// Flushing a segment failed; the store poisons itself on this.
    #[error("flush of {path} failed: {source}")]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("key is {len} bytes, the limit is {limit}")]
    KeyTooLarge { len: usize, limit: usize },

    #[error("value is {len} bytes, the limit is {limit}")]
    ValueTooLarge { len: usize, limit: usize },

    /// The store holds as much as its configured bound allows.
    #[error("store is full: {used_bytes} bytes used of {limit_bytes}")]
    OutOfMemory { used_bytes: u64, limit_bytes: u64 },

    /// The log's segment slots (`Config::log_max_bytes`, at most what the
    /// index can address) are in use, but for those kept for deletes,
    /// compaction and the next open.
    #[error("log is full: its {slots} segments are in use or kept for deletes and compaction")]
    LogFull { slots: u32 },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("segment {path}: {problem}")]
    BadSegment { path: PathBuf, problem: String },

    #[error("segment {path} was written with segment size {found} bytes, the store is configured for {expected}")]
    SegmentSizeMismatch { path: PathBuf, found: u64, expected: u64 },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
