//! ringkv's shard store: a log-structured, memory-mapped key-value engine.
//!
//! A [`Store`] owns one directory of fixed-size segment files. Writes are
//! appended to the active segment through its memory mapping; a compact
//! in-memory [index](index) maps each key's hash to its newest record, and
//! reads return values borrowed straight from the mapping.
//!
//! **Architecture Invariant:** the engine does no networking and starts no
//! threads. The shard thread that owns a store calls it, batches writes,
//! calls [`Store::sync`] before acknowledging them under
//! [`FsyncPolicy::Always`], and calls [`Store::tick`] between batches for
//! periodic syncs, compaction and index growth.
//!
//! The on-disk format is drawn in `docs/format.md`.

mod compaction;
mod crc;
mod error;
mod expiry;
mod hint;
mod histogram;
pub mod index;
mod log;
mod marks;
mod memory;
pub mod record;
mod recovery;
mod scan;
mod segment;
mod store;

pub use error::{Error, Result};
pub use histogram::{
    histogram_bound_seconds, histogram_bucket, Histogram, HISTOGRAM_BOUNDED_BUCKETS, HISTOGRAM_BUCKETS,
};
pub use log::LOG_ADDRESS_SPACE_BYTES;
pub use recovery::{Damage, RecoveryReport};
pub use store::{
    key_hash, remove_doomed, segment_size_for_memory, Clock, Condition, Config, Entry, FsyncPolicy, KeyHash, Mode,
    PrepareJob, PreparedSegment, SetExpiry, SetOptions, SetOutcome, Stats, Store, SyncJob, Ttl, COMPACTION_STEP_BYTES,
    MEMORY_BOUND_MIN_SEGMENTS, SEGMENT_SIZE_DEFAULT_BYTES, SEGMENT_SIZE_MAX_BYTES, SEGMENT_SIZE_MIN_BYTES,
    SWEEP_STEP_BYTES, VALUE_LEN_DEFAULT_MAX_BYTES,
};
