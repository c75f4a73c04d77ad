//! Protocols, the shard server and the client.
