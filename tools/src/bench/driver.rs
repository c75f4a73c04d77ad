//! The load: client threads, each a single-threaded runtime driving its
//! connections in a closed loop (send a batch, read its replies) or an
//! open loop (`--rate`: batches leave at scheduled times and latency counts
//! from the scheduled time, so a slow server cannot hide its queueing:
//! no coordinated omission).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use net::limits::Limits;
use net::native::{self, Status};
use net::resp::{self, Reply};
use router::Ring;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::keys::{KeyGen, KeyPattern};

/// Wire protocol of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ringkv's binary protocol.
    Native,
    /// RESP2, for Redis or ringkv's RESP port.
    #[value(alias = "redis")]
    Resp,
}

/// Routing for shard-aware native clients.
#[derive(Debug, Clone)]
pub struct Routing {
    pub ring: Ring,
    pub member_shard: Vec<usize>,
    pub shard_addrs: Vec<SocketAddr>,
}

/// Everything a client task needs to generate load.
#[derive(Debug, Clone)]
pub struct Workload {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub routing: Option<Routing>,
    pub threads: usize,
    pub clients_per_thread: usize,
    pub pipeline: usize,
    pub sets: u32,
    pub gets: u32,
    pub key_prefix: String,
    pub key_min: u64,
    pub key_max: u64,
    pub pattern: KeyPattern,
    pub data_size_min: usize,
    pub data_size_max: usize,
    pub seed: u64,
    /// Total requests per second over all clients (open loop).
    pub rate: Option<f64>,
    pub password: Option<String>,
}

/// When the run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Time(Duration),
    Requests(u64),
}

/// Counts and latencies of one operation type.
#[derive(Debug, Clone)]
pub struct OpStats {
    pub count: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// Request plus reply bytes.
    pub bytes: u64,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
}

pub const LATENCY_MAX_US: u64 = 60_000_000;

impl OpStats {
    pub fn new() -> OpStats {
        OpStats {
            count: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            bytes: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("histogram bounds"),
        }
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.count += other.count;
        self.hits += other.hits;
        self.misses += other.misses;
        self.errors += other.errors;
        self.bytes += other.bytes;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Results {
    pub set: OpStats,
    pub get: OpStats,
    pub elapsed: Duration,
    pub first_error: Option<String>,
    /// Clients stopped early by an error (a refused connection, a reset, a
    /// server silent for `REPLY_TIMEOUT`): their requests are lost, so a
    /// run with any is a failed run.
    pub clients_failed: usize,
    /// CPU seconds the load threads used.
    pub client_cpu_seconds: f64,
}

/// Shared progress, read by the progress line.
#[derive(Debug)]
pub struct Progress {
    pub ops: AtomicU64,
    pub live: Mutex<Histogram<u64>>,
    pub stop: AtomicBool,
    /// Requests left to issue under `Stop::Requests`.
    pub budget: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            ops: AtomicU64::new(0),
            live: Mutex::new(Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("histogram bounds")),
            stop: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Get,
}

/// What one load thread measured.
struct ThreadStats {
    set: OpStats,
    get: OpStats,
    first_error: Option<String>,
    clients_failed: usize,
    cpu_seconds: f64,
}

/// What one client (connection set) measured.
struct ClientStats {
    set: OpStats,
    get: OpStats,
    /// Latencies since the last publication to the progress line.
    interval: Histogram<u64>,
    last_publish: Instant,
}

/// One socket of a client and what it awaits.
struct Conn {
    stream: TcpStream,
    inbuf: BytesMut,
    outbuf: BytesMut,
    expected: VecDeque<Op>,
    next_id: u32,
}

/// Runs the workload until `stop`; `progress.stop` ends it early.
pub fn run(workload: Arc<Workload>, stop: Stop, progress: Arc<Progress>) -> Results {
    let started = Instant::now();
    if let Stop::Requests(n) = stop {
        progress.budget.store(n, Ordering::Relaxed);
    }
    let deadline = match stop {
        Stop::Time(d) => Some(started + d),
        Stop::Requests(_) => None,
    };
    let handles: Vec<_> = (0..workload.threads)
        .map(|t| {
            let workload = workload.clone();
            let progress = progress.clone();
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || thread_main(t, workload, progress, deadline))
                .expect("spawn bench thread")
        })
        .collect();
    let mut results = Results {
        set: OpStats::new(),
        get: OpStats::new(),
        elapsed: Duration::ZERO,
        first_error: None,
        clients_failed: 0,
        client_cpu_seconds: 0.0,
    };
    for h in handles {
        if let Ok(t) = h.join() {
            results.set.merge(&t.set);
            results.get.merge(&t.get);
            results.first_error = results.first_error.or(t.first_error);
            results.clients_failed += t.clients_failed;
            results.client_cpu_seconds += t.cpu_seconds;
        }
    }
    results.elapsed = started.elapsed();
    results
}

fn thread_main(t: usize, workload: Arc<Workload>, progress: Arc<Progress>, deadline: Option<Instant>) -> ThreadStats {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("bench runtime");
    let local = tokio::task::LocalSet::new();
    let mut stats = ThreadStats {
        set: OpStats::new(),
        get: OpStats::new(),
        first_error: None,
        clients_failed: 0,
        cpu_seconds: 0.0,
    };
    local.block_on(&rt, async {
        let tasks: Vec<_> = (0..workload.clients_per_thread)
            .map(|c| {
                let id = t * workload.clients_per_thread + c;
                tokio::task::spawn_local(client(id, workload.clone(), progress.clone(), deadline))
            })
            .collect();
        for task in tasks {
            match task.await {
                Ok((client, error)) => {
                    stats.set.merge(&client.set);
                    stats.get.merge(&client.get);
                    publish(&progress, &client.interval);
                    if let Some(e) = error {
                        stats.first_error.get_or_insert(e);
                        stats.clients_failed += 1;
                    }
                }
                Err(e) => {
                    stats.first_error.get_or_insert(format!("client task failed: {e}"));
                    stats.clients_failed += 1;
                }
            }
        }
    });
    stats.cpu_seconds = thread_cpu_seconds();
    stats
}

/// CPU time the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes a timespec into the pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn publish(progress: &Progress, interval: &Histogram<u64>) {
    if let Ok(mut live) = progress.live.lock() {
        let _ = live.add(interval);
    }
}

async fn connect(addr: SocketAddr, workload: &Workload) -> Result<Conn, String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = Conn {
        stream,
        inbuf: BytesMut::with_capacity(64 << 10),
        outbuf: BytesMut::with_capacity(64 << 10),
        expected: VecDeque::new(),
        next_id: 1,
    };
    if let Some(password) = &workload.password {
        match workload.protocol {
            Protocol::Native => native::put_request(
                &mut conn.outbuf,
                0,
                &native::RequestBody::Auth(bytes::Bytes::from(password.clone())),
            ),
            Protocol::Resp => resp::put_command(&mut conn.outbuf, &[b"AUTH", password.as_bytes()]),
        }
        within_reply_timeout("AUTH", conn.stream.write_all(&conn.outbuf)).await?;
        conn.outbuf.clear();
        conn.expected.push_back(Op::Set);
        let mut dummy = OpStats::new();
        read_reply(&mut conn, workload.protocol, &mut dummy, &mut OpStats::new(), Instant::now(), None).await?;
        if dummy.errors > 0 {
            return Err("AUTH refused".into());
        }
    }
    Ok(conn)
}

/// One client: runs until the end and returns what it measured, and the
/// error that stopped it early, if any.
async fn client(
    id: usize,
    workload: Arc<Workload>,
    progress: Arc<Progress>,
    deadline: Option<Instant>,
) -> (ClientStats, Option<String>) {
    let mut stats = ClientStats {
        set: OpStats::new(),
        get: OpStats::new(),
        interval: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("histogram bounds"),
        last_publish: Instant::now(),
    };
    let error = drive(id, &workload, &progress, deadline, &mut stats).await.err();
    (stats, error)
}

async fn drive(
    id: usize,
    workload: &Workload,
    progress: &Progress,
    deadline: Option<Instant>,
    stats: &mut ClientStats,
) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = match (&workload.routing, workload.protocol) {
        (Some(r), Protocol::Native) => r.shard_addrs.clone(),
        _ => vec![workload.addr],
    };
    let mut conns = Vec::with_capacity(addrs.len());
    for a in &addrs {
        conns.push(connect(*a, workload).await?);
    }
    let seed = workload.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut keys = KeyGen::new(workload.key_min, workload.key_max, workload.pattern, seed)?;
    let value = vec![b'x'; workload.data_size_max];
    let mut key = Vec::with_capacity(workload.key_prefix.len() + 20);
    let cycle = workload.sets + workload.gets;
    let mut tick: u64 = id as u64;
    let clients = (workload.threads * workload.clients_per_thread) as f64;
    let batch_interval = workload.rate.map(|r| Duration::from_secs_f64(workload.pipeline as f64 * clients / r));
    let mut next_send = Instant::now();
    let mut batch_ops = Vec::with_capacity(workload.pipeline);
    loop {
        if progress.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        let mut n = workload.pipeline as u64;
        if progress.budget.load(Ordering::Relaxed) != u64::MAX {
            let left =
                progress.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
            match left {
                Ok(0) | Err(_) => return Ok(()),
                Ok(before) => n = n.min(before),
            }
        }
        let t0 = match batch_interval {
            Some(every) => {
                send_at(next_send).await;
                let intended = next_send;
                next_send += every;
                intended
            }
            None => Instant::now(),
        };
        batch_ops.clear();
        for _ in 0..n {
            let op = if (tick % u64::from(cycle)) < u64::from(workload.sets) { Op::Set } else { Op::Get };
            tick += 1;
            key.clear();
            key.extend_from_slice(workload.key_prefix.as_bytes());
            key.extend_from_slice(itoa::Buffer::new().format(keys.next_id()).as_bytes());
            let shard = match &workload.routing {
                Some(r) if conns.len() > 1 => r.member_shard[r.ring.owner_of_key(&key).get()],
                _ => 0,
            };
            let conn = &mut conns[shard];
            let before = conn.outbuf.len();
            match (workload.protocol, op) {
                (Protocol::Native, Op::Get) => native::put_get(&mut conn.outbuf, conn.next_id, &key),
                (Protocol::Native, Op::Set) => {
                    let size = keys.size_in(workload.data_size_min, workload.data_size_max);
                    native::put_set(&mut conn.outbuf, conn.next_id, &key, &value[..size], 0, 0)
                }
                (Protocol::Resp, Op::Get) => resp::put_command(&mut conn.outbuf, &[b"GET", &key]),
                (Protocol::Resp, Op::Set) => {
                    let size = keys.size_in(workload.data_size_min, workload.data_size_max);
                    resp::put_command(&mut conn.outbuf, &[b"SET", &key, &value[..size]])
                }
            }
            conn.next_id = conn.next_id.wrapping_add(1);
            conn.expected.push_back(op);
            batch_ops.push((op, (conn.outbuf.len() - before) as u64));
        }
        for conn in conns.iter_mut().filter(|c| !c.outbuf.is_empty()) {
            within_reply_timeout("write", conn.stream.write_all(&conn.outbuf)).await?;
            conn.outbuf.clear();
        }
        for (op, bytes) in &batch_ops {
            match op {
                Op::Set => stats.set.bytes += bytes,
                Op::Get => stats.get.bytes += bytes,
            }
        }
        for conn in conns.iter_mut() {
            while !conn.expected.is_empty() {
                read_reply(conn, workload.protocol, &mut stats.set, &mut stats.get, t0, Some(&mut stats.interval))
                    .await?;
            }
        }
        progress.ops.fetch_add(n, Ordering::Relaxed);
        if stats.last_publish.elapsed() > Duration::from_millis(200) {
            publish(progress, &stats.interval);
            stats.interval.reset();
            stats.last_publish = Instant::now();
        }
    }
}

/// Waits until `at` precisely: tokio's timers fire on a 1 ms wheel, so the
/// timer only covers the wait up to the last millisecond and the rest is
/// spent yielding to the thread's other clients. Open-loop latency counts
/// from `at`, so a late send would be charged to the server.
async fn send_at(at: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(1);
    if let Some(early) = at.checked_sub(TIMER_SLACK) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// How long a client waits for the server to take a request or send a
/// reply before it gives up with an error: a server that stopped, or a
/// lost reply, ends the run instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `io`, failed after `REPLY_TIMEOUT`.
pub async fn within_reply_timeout<T>(
    what: &str,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REPLY_TIMEOUT, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {REPLY_TIMEOUT:?}")),
    }
}

/// Reads the reply to the oldest request on `conn` and records it.
async fn read_reply(
    conn: &mut Conn,
    protocol: Protocol,
    set: &mut OpStats,
    get: &mut OpStats,
    t0: Instant,
    interval: Option<&mut Histogram<u64>>,
) -> Result<(), String> {
    let limits = Limits::default();
    let op = conn.expected.pop_front().ok_or("no request in flight")?;
    let (outcome, bytes) = loop {
        let before = conn.inbuf.len();
        let decoded = match protocol {
            Protocol::Native => native::decode_response(&mut conn.inbuf, limits.frame_max_bytes)
                .map_err(|e| e.to_string())?
                .map(|r| match r.status {
                    Status::Ok | Status::NotStored => Outcome::Hit,
                    Status::NotFound => Outcome::Miss,
                    _ => Outcome::Error(String::from_utf8_lossy(&r.body).into_owned()),
                }),
            Protocol::Resp => {
                resp::parse_reply(&mut conn.inbuf, &limits).map_err(|e| e.to_string())?.map(|r| match r {
                    Reply::Bulk(None) => Outcome::Miss,
                    Reply::Error(e) => Outcome::Error(String::from_utf8_lossy(&e).into_owned()),
                    _ => Outcome::Hit,
                })
            }
        };
        if let Some(outcome) = decoded {
            break (outcome, (before - conn.inbuf.len()) as u64);
        }
        let n = within_reply_timeout("read", conn.stream.read_buf(&mut conn.inbuf)).await?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
    };
    let latency_us = (t0.elapsed().as_micros() as u64).clamp(1, LATENCY_MAX_US);
    let stats = match op {
        Op::Set => set,
        Op::Get => get,
    };
    stats.count += 1;
    stats.bytes += bytes;
    let _ = stats.latency_us.record(latency_us);
    if let Some(interval) = interval {
        let _ = interval.record(latency_us);
    }
    match outcome {
        Outcome::Hit => stats.hits += 1,
        Outcome::Miss => stats.misses += 1,
        Outcome::Error(e) => {
            stats.errors += 1;
            tracing::debug!(error = %e, "error reply");
        }
    }
    Ok(())
}

enum Outcome {
    Hit,
    Miss,
    Error(String),
}
