//! The shard store.
