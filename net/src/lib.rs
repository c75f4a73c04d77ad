//! ringkv's network layer: the native binary protocol and RESP2, the
//! thread-per-core server, and the client library.
//!
//! **Architecture Invariant:** `net` is the only crate that knows sockets
//! and threads. It drives `engine` stores and consults the `router` ring;
//! neither of them knows `net` exists.

pub mod client;
pub mod conn;
pub mod glob;
pub mod limits;
pub mod metrics;
pub mod native;
pub mod native_server;
pub mod op;
pub mod repeated;
pub mod resp;
pub mod server;
pub mod shard;
pub mod slowlog;
pub mod txn;

pub use limits::Limits;
pub use server::{start, ServerConfig, ServerError, ServerHandle};
