//! Named limits on what a client may send. Each is checked before any
//! allocation is sized from untrusted input.

/// Limits a server enforces, with safe defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest native frame (after its length prefix) or RESP request.
    pub frame_max_bytes: usize,
    /// Longest key.
    pub key_max_bytes: usize,
    /// Longest value.
    pub value_max_bytes: usize,
    /// Most arguments (RESP) or keys (native MGET/MSET) in one request.
    pub args_max: usize,
    /// Open connections per shard; more are accepted and closed at once.
    pub connections_per_shard_max: usize,
    /// Requests parsed from one read before replies are written: bounds the
    /// memory a deep pipeline can pin.
    pub pipeline_batch_max: usize,
    /// How long a connection may hold half a request: a client that stalls
    /// mid-frame is closed after this, so it cannot pin a buffer forever.
    pub partial_request_timeout: std::time::Duration,
}

pub const FRAME_DEFAULT_MAX_BYTES: usize = 64 << 20;
pub const KEY_DEFAULT_MAX_BYTES: usize = engine::record::KEY_LEN_MAX_BYTES;
pub const VALUE_DEFAULT_MAX_BYTES: usize = engine::VALUE_LEN_DEFAULT_MAX_BYTES;
pub const ARGS_DEFAULT_MAX: usize = 1 << 20;
pub const CONNECTIONS_PER_SHARD_DEFAULT_MAX: usize = 10_000;
pub const PIPELINE_BATCH_DEFAULT_MAX: usize = 1024;
pub const PARTIAL_REQUEST_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most a decoder reserves ahead for a frame whose length it has read but
/// whose bytes have not all arrived. A declared length then costs nothing
/// before its bytes come: a 17-byte RESP header declaring a 64 MiB bulk
/// string reserved 64 MiB at once, on every connection that sent one. The
/// buffer still grows as the bytes arrive (it at least doubles each time it
/// grows), so a large value is copied a bounded number of times.
pub const RESERVE_AHEAD_MAX_BYTES: usize = 1 << 20;

/// Makes room in `buf` towards a frame that ends at `frame_end`, at most
/// [`RESERVE_AHEAD_MAX_BYTES`] past what is there.
pub fn reserve_ahead(buf: &mut bytes::BytesMut, frame_end: usize) {
    buf.reserve(frame_end.saturating_sub(buf.len()).min(RESERVE_AHEAD_MAX_BYTES));
}

/// Largest request (a native frame, a RESP bulk string) and most RESP
/// arguments a connection may send before it authenticates, when a
/// password is set: it may only PING and AUTH, and a password is short.
/// Redis limits such connections the same way (16 KiB bulk strings, 10
/// arguments: CVE-2021-32675), so that connections that never authenticate
/// cannot make the server hold large buffers.
pub const UNAUTHENTICATED_FRAME_MAX_BYTES: usize = 16 << 10;
pub const UNAUTHENTICATED_ARGS_MAX: usize = 10;

impl Limits {
    /// These limits as they apply before AUTH (see
    /// [`UNAUTHENTICATED_FRAME_MAX_BYTES`]), with room for an AUTH of a
    /// password `password_bytes` long.
    pub fn unauthenticated(&self, password_bytes: usize) -> Limits {
        let frame_max_bytes = UNAUTHENTICATED_FRAME_MAX_BYTES.max(password_bytes.saturating_add(1024));
        Limits {
            frame_max_bytes: self.frame_max_bytes.min(frame_max_bytes),
            args_max: self.args_max.min(UNAUTHENTICATED_ARGS_MAX),
            ..self.clone()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max_bytes: FRAME_DEFAULT_MAX_BYTES,
            key_max_bytes: KEY_DEFAULT_MAX_BYTES,
            value_max_bytes: VALUE_DEFAULT_MAX_BYTES,
            args_max: ARGS_DEFAULT_MAX,
            connections_per_shard_max: CONNECTIONS_PER_SHARD_DEFAULT_MAX,
            pipeline_batch_max: PIPELINE_BATCH_DEFAULT_MAX,
            partial_request_timeout: PARTIAL_REQUEST_DEFAULT_TIMEOUT,
        }
    }
}
