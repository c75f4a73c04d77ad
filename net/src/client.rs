//! The async client for the native protocol.
//!
//! - [`Connection`]: one socket, requests pipelined, replies in order.
//! - [`Client`]: shard-aware. It asks the server for its ring (RING), opens
//!   one connection per shard-aware port and sends each key straight to
//!   its owning shard; timeouts on every call; reads are retried with
//!   exponential backoff, writes never (a retried write could apply twice
//!   around another client's write).
//! - [`Pool`]: a bounded set of `Client`s shared by many tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use router::{Ring, RingDescription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};

use crate::native::{self, set_flags, FrameError, KeyOpWire, RequestBody, Response, Status};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("server closed the connection")]
    Closed,
    #[error("bad reply: {0}")]
    Protocol(#[from] FrameError),
    #[error("reply {got} does not answer request {expected}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("server error: {0}")]
    Server(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// The key belongs to another node (a cluster whose ring changed).
    #[error("key moved to {addr} (ring epoch {epoch})")]
    Moved { epoch: u64, addr: String },
    /// An earlier call on this connection failed half way (a timeout, a
    /// reply out of order): a reply still on its way could answer the next
    /// request, so the connection is not used again.
    #[error("connection unusable after an earlier error")]
    Broken,
}

impl ClientError {
    /// Errors after which the same request may succeed on a new attempt.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_)
                | ClientError::Timeout(_)
                | ClientError::Closed
                | ClientError::Connect { .. }
                | ClientError::Broken
        )
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts for idempotent requests (1 = no retry).
    pub attempts: u32,
    pub backoff_initial: Duration,
    pub password: Option<String>,
    /// Route keys to their owning shard's port.
    pub shard_aware: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            attempts: 3,
            backoff_initial: Duration::from_millis(20),
            password: None,
            shard_aware: true,
        }
    }
}

/// One pipelined connection.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    inbuf: BytesMut,
    outbuf: BytesMut,
    next_id: u32,
    /// Ids sent and not yet answered, oldest first.
    in_flight: std::collections::VecDeque<u32>,
    timeout: Duration,
    /// A send or a read failed half way: see `ClientError::Broken`.
    broken: bool,
}

impl Connection {
    pub async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Connection, ClientError> {
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(config.connect_timeout))?
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            addr,
            stream,
            inbuf: BytesMut::with_capacity(16 << 10),
            outbuf: BytesMut::with_capacity(16 << 10),
            next_id: 1,
            in_flight: Default::default(),
            timeout: config.request_timeout,
            broken: false,
        };
        if let Some(password) = &config.password {
            conn.call(&RequestBody::Auth(Bytes::from(password.clone()))).await?.ok()?;
        }
        Ok(conn)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a request without sending it.
    pub fn queue(&mut self, body: &RequestBody) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        native::put_request(&mut self.outbuf, id, body);
        self.in_flight.push_back(id);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.flush_by(deadline).await
    }

    /// Reads the reply to the oldest request in flight.
    pub async fn read(&mut self) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.read_by(deadline).await
    }

    /// Whether an earlier failure made this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends one request and reads its reply, within the request timeout.
    pub async fn call(&mut self, body: &RequestBody) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.queue(body);
        self.flush_by(deadline).await?;
        self.read_by(deadline).await
    }

    /// Sends all requests in one write and reads all replies, in order,
    /// within the request timeout.
    pub async fn pipeline(&mut self, bodies: &[RequestBody]) -> Result<Vec<Response>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        for b in bodies {
            self.queue(b);
        }
        self.flush_by(deadline).await?;
        let mut out = Vec::with_capacity(bodies.len());
        for _ in 0..bodies.len() {
            out.push(self.read_by(deadline).await?);
        }
        Ok(out)
    }

    async fn flush_by(&mut self, deadline: tokio::time::Instant) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let sent = tokio::time::timeout_at(deadline, self.stream.write_all(&self.outbuf)).await;
        let sent = sent.map_err(|_| ClientError::Timeout(self.timeout)).and_then(|r| r.map_err(ClientError::from));
        self.broken |= sent.is_err();
        sent?;
        self.outbuf.clear();
        Ok(())
    }

    async fn read_by(&mut self, deadline: tokio::time::Instant) -> Result<Response, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let read = self.read_inner(deadline).await;
        self.broken |= read.is_err();
        read
    }

    async fn read_inner(&mut self, deadline: tokio::time::Instant) -> Result<Response, ClientError> {
        let expected = self.in_flight.front().copied().ok_or(ClientError::Unexpected("nothing in flight".into()))?;
        loop {
            if let Some(resp) = native::decode_response(&mut self.inbuf, native::RESPONSE_MAX_BYTES)? {
                // An error about a malformed frame may carry id 0.
                if resp.id != expected && !(resp.id == 0 && resp.status == Status::Error) {
                    return Err(ClientError::OutOfOrder { expected, got: resp.id });
                }
                self.in_flight.pop_front();
                return Ok(resp);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.inbuf))
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

impl Response {
    /// Turns an error status into `ClientError::Server`.
    pub fn ok(self) -> Result<Response, ClientError> {
        match self.status {
            Status::Error => Err(ClientError::Server(String::from_utf8_lossy(&self.body).into_owned())),
            Status::Moved => {
                let mut body = self.body;
                if body.remaining() < 8 {
                    return Err(ClientError::Unexpected("MOVED reply too short".into()));
                }
                let epoch = body.get_u64_le();
                Err(ClientError::Moved { epoch, addr: String::from_utf8_lossy(&body).into_owned() })
            }
            _ => Ok(self),
        }
    }
}

/// Options of a SET.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetArgs {
    /// Relative expiry; 0 = none.
    pub ttl_ms: u64,
    pub only_if_absent: bool,
    pub only_if_present: bool,
}

/// A shard-aware client of one ringkv node.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    seed: SocketAddr,
    ring: Option<Arc<Ring>>,
    /// Shard index of each ring member.
    member_shard: Vec<usize>,
    /// One connection per shard-aware port, or just the seed connection.
    conns: Vec<Option<Connection>>,
    shard_addrs: Vec<SocketAddr>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, config: ClientConfig) -> Result<Client, ClientError> {
        let mut seed = Connection::connect(addr, &config).await?;
        let mut client = Client {
            config,
            seed: addr,
            ring: None,
            member_shard: Vec::new(),
            conns: Vec::new(),
            shard_addrs: Vec::new(),
        };
        if client.config.shard_aware {
            let ring = seed.call(&RequestBody::Ring).await?.ok()?;
            client.install_ring(ring.body, addr)?;
        }
        if client.conns.is_empty() {
            client.conns.push(Some(seed));
            client.shard_addrs.push(addr);
        }
        Ok(client)
    }

    fn install_ring(&mut self, mut body: Bytes, seed: SocketAddr) -> Result<(), ClientError> {
        let bad = |what: &str| ClientError::Unexpected(format!("RING reply: {what}"));
        if body.remaining() < 12 {
            return Err(bad("too short"));
        }
        let _epoch = body.get_u64_le();
        let n = body.get_u32_le() as usize;
        if body.remaining() < n * 2 {
            return Err(bad("port list"));
        }
        let ports: Vec<u16> = (0..n).map(|_| body.get_u16_le()).collect();
        let text = std::str::from_utf8(&body).map_err(|_| bad("not UTF-8"))?;
        let description = RingDescription::from_toml_str(text).map_err(|e| bad(&e.to_string()))?;
        let ring = Ring::new(description).map_err(|e| bad(&e.to_string()))?;
        self.member_shard = ring.members().iter().map(|m| m.id.shard as usize).collect();
        if self.member_shard.iter().any(|&s| s >= n) {
            return Err(bad("member without a port"));
        }
        self.shard_addrs = ports.iter().map(|&p| SocketAddr::new(seed.ip(), p)).collect();
        self.conns = (0..n).map(|_| None).collect();
        self.ring = Some(Arc::new(ring));
        Ok(())
    }

    /// The epoch of the ring this client routes by, if it routes.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_deref()
    }

    fn shard_for(&self, key: &[u8]) -> usize {
        match &self.ring {
            Some(ring) => self.member_shard[ring.owner_of_key(key).get()],
            None => 0,
        }
    }

    async fn conn(&mut self, shard: usize) -> Result<&mut Connection, ClientError> {
        if self.conns[shard].as_ref().is_none_or(Connection::is_broken) {
            let c = Connection::connect(self.shard_addrs[shard], &self.config).await?;
            self.conns[shard] = Some(c);
        }
        Ok(self.conns[shard].as_mut().expect("connected above"))
    }

    /// Sends one request to `shard`, retrying transient failures of
    /// idempotent requests with exponential backoff. When a shard's port
    /// refuses the connection, the node may have restarted with other
    /// ports (or shards): the ring is fetched again from the seed once and
    /// the request routed anew. It was never sent, so even a write may go
    /// again.
    async fn request(
        &mut self,
        mut shard: usize,
        body: RequestBody,
        idempotent: bool,
    ) -> Result<Response, ClientError> {
        let attempts = if idempotent { self.config.attempts.max(1) } else { 1 };
        let mut backoff = self.config.backoff_initial;
        let mut last = None;
        let mut refreshed = false;
        let mut attempt = 0;
        while attempt < attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            attempt += 1;
            let result = match self.conn(shard).await {
                Ok(conn) => conn.call(&body).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => return resp.ok(),
                Err(e @ ClientError::Connect { .. }) if self.ring.is_some() && !refreshed => {
                    refreshed = true;
                    match self.refresh_ring().await {
                        Ok(()) => {
                            shard = match &body {
                                RequestBody::Key(op) => self.shard_for(op.key()),
                                _ => 0,
                            };
                            // A free attempt: nothing was sent.
                            attempt -= 1;
                        }
                        // The seed refuses too (a restart under way): this
                        // attempt failed, the next ones may not.
                        Err(_) => {
                            self.conns[shard] = None;
                            last = Some(e);
                        }
                    }
                }
                Err(e) => {
                    // Whatever failed, the connection's state is unknown
                    // (a late reply would answer the next request): drop it.
                    self.conns[shard] = None;
                    if !e.is_transient() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    /// Fetches the ring from the seed again and routes by it from now on
    /// (every shard connection is made anew).
    pub async fn refresh_ring(&mut self) -> Result<(), ClientError> {
        let mut seed = Connection::connect(self.seed, &self.config).await?;
        let ring = seed.call(&RequestBody::Ring).await?.ok()?;
        self.install_ring(ring.body, self.seed)
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.request(0, RequestBody::Ping, true).await.map(|_| ())
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        let shard = self.shard_for(key);
        let resp = self.request(shard, RequestBody::Key(KeyOpWire::Get(Bytes::copy_from_slice(key))), true).await?;
        Ok((resp.status == Status::Ok).then_some(resp.body))
    }

    /// Stores a value; false when a condition (NX/XX) did not hold.
    pub async fn set(&mut self, key: &[u8], value: &[u8], args: SetArgs) -> Result<bool, ClientError> {
        let mut flags = 0;
        if args.only_if_absent {
            flags |= set_flags::NX;
        }
        if args.only_if_present {
            flags |= set_flags::XX;
        }
        let body = RequestBody::Key(KeyOpWire::Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ttl_ms: args.ttl_ms,
            flags,
        });
        let resp = self.request(self.shard_for(key), body, false).await?;
        Ok(resp.status == Status::Ok)
    }

    /// Deletes a key; true when it existed.
    pub async fn del(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let resp = self
            .request(self.shard_for(key), RequestBody::Key(KeyOpWire::Del(Bytes::copy_from_slice(key))), false)
            .await?;
        Ok(resp.status == Status::Ok)
    }

    pub async fn exists(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let resp = self
            .request(self.shard_for(key), RequestBody::Key(KeyOpWire::Exists(Bytes::copy_from_slice(key))), true)
            .await?;
        Ok(resp.status == Status::Ok)
    }

    /// Sets (`ttl_ms > 0`) or removes (0) a key's expiry; true when the
    /// key existed.
    pub async fn expire(&mut self, key: &[u8], ttl_ms: u64) -> Result<bool, ClientError> {
        let body = RequestBody::Key(KeyOpWire::Expire { key: Bytes::copy_from_slice(key), ttl_ms });
        let resp = self.request(self.shard_for(key), body, false).await?;
        Ok(resp.status == Status::Ok)
    }

    /// Remaining time to live in ms: -2 missing, -1 no expiry.
    pub async fn ttl_ms(&mut self, key: &[u8]) -> Result<i64, ClientError> {
        let mut resp = self
            .request(self.shard_for(key), RequestBody::Key(KeyOpWire::Ttl(Bytes::copy_from_slice(key))), true)
            .await?;
        if resp.body.remaining() < 8 {
            return Err(ClientError::Unexpected("short TTL reply".into()));
        }
        Ok(resp.body.get_i64_le())
    }

    /// Values of many keys, in argument order (one request; the server
    /// gathers across its shards).
    pub async fn mget(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>, ClientError> {
        let body = RequestBody::MGet(keys.iter().map(|k| Bytes::copy_from_slice(k)).collect());
        let mut resp = self.request(0, body, true).await?;
        let bad = || ClientError::Unexpected("malformed MGET reply".into());
        if resp.body.remaining() < 4 {
            return Err(bad());
        }
        let n = resp.body.get_u32_le() as usize;
        let mut out = Vec::with_capacity(n.min(keys.len()));
        for _ in 0..n {
            if !resp.body.has_remaining() {
                return Err(bad());
            }
            if resp.body.get_u8() == 1 {
                if resp.body.remaining() < 4 {
                    return Err(bad());
                }
                let len = resp.body.get_u32_le() as usize;
                if resp.body.remaining() < len {
                    return Err(bad());
                }
                out.push(Some(resp.body.split_to(len)));
            } else {
                out.push(None);
            }
        }
        Ok(out)
    }

    pub async fn mset(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), ClientError> {
        let body = RequestBody::MSet(
            pairs.iter().map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))).collect(),
        );
        self.request(0, body, false).await.map(|_| ())
    }

    /// The server's STATS as `(name, value)` pairs.
    pub async fn stats(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        let resp = self.request(0, RequestBody::Stats, true).await?;
        let text = String::from_utf8_lossy(&resp.body);
        Ok(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// The connection to the shard owning `key`, for pipelining.
    pub async fn connection_for(&mut self, key: &[u8]) -> Result<&mut Connection, ClientError> {
        let shard = self.shard_for(key);
        self.conn(shard).await
    }

    /// Which shard owns `key` (0 when not shard-aware).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.shard_for(key)
    }

    pub fn shard_count(&self) -> usize {
        self.conns.len()
    }

    /// The shard-aware addresses, by shard.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    pub fn seed(&self) -> SocketAddr {
        self.seed
    }
}

/// A bounded pool of clients shared by tasks.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    config: ClientConfig,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A client borrowed from a [`Pool`]; returned when dropped.
#[derive(Debug)]
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(addr: SocketAddr, config: ClientConfig, size_max: usize) -> Pool {
        Pool { addr, config, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(size_max.max(1))) }
    }

    /// Borrows a client, connecting a new one when none is idle; waits when
    /// `size_max` are out.
    pub async fn get(&self) -> Result<Pooled<'_>, ClientError> {
        let permit = self.permits.acquire().await.map_err(|_| ClientError::Closed)?;
        let idle = self.idle.lock().await.pop();
        let client = match idle {
            Some(c) => c,
            None => Client::connect(self.addr, self.config.clone()).await?,
        };
        Ok(Pooled { pool: self, client: Some(client), _permit: permit })
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if let Ok(mut idle) = self.pool.idle.try_lock() {
                idle.push(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A server that answers every GET with the key as the value, the
    /// first one only after `first_delay`.
    async fn echo_server(first_delay: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            let mut first = true;
            while let Ok((mut stream, _)) = listener.accept().await {
                let delay = std::mem::replace(&mut first, false).then_some(first_delay);
                tokio::task::spawn_local(async move {
                    let mut buf = BytesMut::new();
                    let mut delay = delay;
                    loop {
                        while let Ok(Some(request)) = native::decode_request(&mut buf, &crate::Limits::default()) {
                            if let Some(d) = delay.take() {
                                tokio::time::sleep(d).await;
                            }
                            let RequestBody::Key(KeyOpWire::Get(key)) = request.body else { return };
                            let mut out = BytesMut::new();
                            native::put_response(&mut out, Status::Ok, request.id, |o| o.extend_from_slice(&key));
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        addr
    }

    /// After a request times out, its late reply must not answer the next
    /// request (it did: the connection was kept, and the reply to the
    /// first GET came back as the value of the second).
    #[test]
    fn a_late_reply_never_answers_the_next_request() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let addr = echo_server(Duration::from_millis(300)).await;
            let config = ClientConfig {
                request_timeout: Duration::from_millis(100),
                attempts: 1,
                shard_aware: false,
                ..ClientConfig::default()
            };
            let mut client = Client::connect(addr, config).await.unwrap();
            // A pipeline on the client's own connection times out...
            let conn = client.connection_for(b"first").await.unwrap();
            let get = RequestBody::Key(KeyOpWire::Get(Bytes::from_static(b"first")));
            assert!(matches!(conn.pipeline(&[get]).await, Err(ClientError::Timeout(_))));
            assert!(conn.is_broken());
            assert!(matches!(conn.call(&RequestBody::Ping).await, Err(ClientError::Broken)));
            // ...and once its reply has come, the next request is answered
            // by its own reply, on a new connection.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(client.get(b"second").await.unwrap().as_deref(), Some(&b"second"[..]));
            assert_eq!(client.get(b"third").await.unwrap().as_deref(), Some(&b"third"[..]));
        });
    }

    #[test]
    fn moved_is_an_error_with_its_epoch_and_address() {
        let mut body = BytesMut::new();
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(b"10.0.0.2:7400");
        let resp = Response { id: 1, status: Status::Moved, body: body.freeze() };
        match resp.ok() {
            Err(ClientError::Moved { epoch, addr }) => assert_eq!((epoch, addr.as_str()), (7, "10.0.0.2:7400")),
            other => panic!("{other:?}"),
        }
    }
}
