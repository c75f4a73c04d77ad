//! Starting and stopping a server: one thread per shard, each pinned to a
//! core and running its own single-threaded tokio runtime over its own
//! store.
//!
//! Listening: every shard accepts on the shared native port and the shared
//! RESP port (SO_REUSEPORT: the kernel spreads connections over the
//! shards), and on a native port of its own (shard-aware port, as
//! ScyllaDB's): a client that knows the ring connects to the owning shard
//! there and its requests cross no thread. A request on any port may name
//! any key; keys owned elsewhere travel through the owner's inbox.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{FsyncPolicy, Store};
use router::{InitConfig, NodeId, Ring, RingDescription};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::limits::Limits;
use crate::native_server::Native;
use crate::resp::Resp;
use crate::shard::{Envelope, Mailbox, Shard, ShardCounters, Shared};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: IpAddr,
    /// Shared native port; 0 picks a free one.
    pub port: u16,
    /// Shared RESP port; `None` serves no RESP.
    pub resp_port: Option<u16>,
    /// Prometheus metrics port (`GET /metrics`); `None` serves none.
    pub metrics_port: Option<u16>,
    /// First shard-aware port (shard i listens on base + i); 0 picks free
    /// ports.
    pub shard_port_base: u16,
    pub shards: usize,
    /// Shard i keeps its store in `data_dir/shard-i`.
    pub data_dir: PathBuf,
    /// Store settings applied to every shard, except that
    /// `memory_max_bytes` is the node's bound: each shard gets an equal
    /// share of it.
    pub store: engine::Config,
    pub limits: Limits,
    pub requirepass: Option<String>,
    /// Pin shard i to CPU i (modulo the CPUs available).
    pub pin_cores: bool,
    /// How long shutdown waits for connections to finish in-flight work.
    pub shutdown_grace: Duration,
    /// Batches slower than this go to the slow log; `None`: no slow log.
    pub slowlog_threshold: Option<Duration>,
    pub slowlog_max_len: usize,
}

pub const PORT_DEFAULT: u16 = 7400;
pub const RESP_PORT_DEFAULT: u16 = 6380;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: PORT_DEFAULT,
            resp_port: Some(RESP_PORT_DEFAULT),
            metrics_port: None,
            shard_port_base: PORT_DEFAULT + 1,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            data_dir: PathBuf::from("ringkv-data"),
            store: engine::Config::default(),
            limits: Limits::default(),
            requirepass: None,
            pin_cores: true,
            shutdown_grace: Duration::from_secs(10),
            slowlog_threshold: Some(crate::slowlog::SLOWLOG_DEFAULT_THRESHOLD),
            slowlog_max_len: crate::slowlog::SLOWLOG_DEFAULT_MAX_LEN,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("shard {shard}: {source}")]
    Store { shard: usize, source: engine::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("shard thread {0} died")]
    ThreadDied(usize),
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    pub native_addr: SocketAddr,
    pub resp_addr: Option<SocketAddr>,
    pub shard_addrs: Vec<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<(), ServerError>>>,
}

impl ServerHandle {
    /// Asks every shard to stop: stop accepting, finish in-flight requests,
    /// sync and write the index checkpoint.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> Result<(), ServerError> {
        let mut result = Ok(());
        for (i, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(ServerError::ThreadDied(i)),
            }
        }
        result
    }

    pub fn total_commands(&self) -> u64 {
        self.shared.total_commands()
    }
}

fn listener(addr: SocketAddr, reuse_port: bool) -> Result<std::net::TcpListener, ServerError> {
    use socket2::{Domain, Socket, Type};
    let bind_err = |source| ServerError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(bind_err)?;
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(1024).map_err(bind_err)?;
    Ok(socket.into())
}

/// Binds one socket per shard on the same port (SO_REUSEPORT).
fn shared_listeners(
    bind: IpAddr,
    port: u16,
    shards: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), ServerError> {
    let first = listener(SocketAddr::new(bind, port), true)?;
    let addr = first.local_addr().map_err(|source| ServerError::Bind { addr: SocketAddr::new(bind, port), source })?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(listener(addr, true)?);
    }
    Ok((all, addr))
}

/// Opens every shard's store and starts serving. Returns once every shard
/// has recovered and listens.
pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    let shards = config.shards;
    if shards == 0 || shards > 1024 {
        return Err(ServerError::Config(format!("shards must be 1..=1024, not {shards}")));
    }
    let (native, native_addr) = shared_listeners(config.bind, config.port, shards)?;
    let (resp, resp_addr) = match config.resp_port {
        Some(port) => {
            let (l, a) = shared_listeners(config.bind, port, shards)?;
            (l.into_iter().map(Some).collect(), Some(a))
        }
        None => ((0..shards).map(|_| None).collect::<Vec<_>>(), None),
    };
    let mut own = Vec::with_capacity(shards);
    for i in 0..shards {
        let port = match config.shard_port_base {
            0 => 0,
            base => u16::try_from(i).ok().and_then(|i| base.checked_add(i)).ok_or_else(|| {
                ServerError::Config(format!("shard ports {base}.. run past 65535 with {shards} shards"))
            })?,
        };
        own.push(listener(SocketAddr::new(config.bind, port), false)?);
    }
    // Every port is bound before any shard starts: a port in use fails the
    // start with nothing running.
    let metrics_listener = match config.metrics_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            Some(crate::metrics::bind(addr).map_err(|source| ServerError::Bind { addr, source })?)
        }
        None => None,
    };
    let shard_addrs: Vec<SocketAddr> = own.iter().map(|l| l.local_addr().expect("bound")).collect();

    let ring = local_ring(native_addr, shards)?;
    let member_shard = ring.members().iter().map(|m| m.id.shard as usize).collect();
    let mut inboxes = Vec::new();
    let mut mailboxes = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = crossbeam::channel::unbounded::<Envelope>();
        mailboxes.push(Mailbox { tx, wake: Arc::new(tokio::sync::Notify::new()) });
        inboxes.push(rx);
    }
    let shared = Arc::new(Shared {
        ring,
        member_shard,
        mailboxes,
        counters: (0..shards).map(|_| ShardCounters::default()).collect(),
        limits: config.limits.clone(),
        requirepass: config.requirepass.clone(),
        fsync: config.store.fsync,
        mode: config.store.mode,
        memory_max_bytes: config.store.memory_max_bytes.unwrap_or(0),
        slowlog: crate::slowlog::SlowLog::new(config.slowlog_threshold, config.slowlog_max_len),
        shard_ports: shard_addrs.iter().map(SocketAddr::port).collect(),
        started: Instant::now(),
        shutdown: watch::Sender::new(false),
        open_connections: Default::default(),
        tcp_port: native_addr.port(),
        resp_port: resp_addr.map(|a| a.port()),
    });

    // For stopping what started when the start fails part way (`shared`
    // itself is shadowed by each thread's clone below).
    let node = shared.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, ServerError>>();
    let mut threads = Vec::new();
    let allowed_cpus = cpu_list();
    for ((((id, inbox), native), resp), own) in inboxes.into_iter().enumerate().zip(native).zip(resp).zip(own) {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let dir = config.data_dir.join(format!("shard-{id}"));
        let store_config = engine::Config {
            memory_max_bytes: config.store.memory_max_bytes.map(|node| node / shards as u64),
            ..config.store.clone()
        };
        // The i-th CPU the process may use, not CPU i: under a cpuset or
        // `taskset` those differ.
        let pin = config.pin_cores.then(|| allowed_cpus.get(id % allowed_cpus.len().max(1)).copied()).flatten();
        let grace = config.shutdown_grace;
        let thread = std::thread::Builder::new().name(format!("shard-{id}")).spawn(move || {
            // The blocking pool's threads (flushes, segment files) are
            // started by this thread and would inherit its pin: they
            // get the process's CPUs back, so that a flush does not
            // take this shard's core from its requests.
            let unpinned = pin.and_then(|_| affinity());
            if let Some(cpu) = pin {
                let mut set = empty_cpu_set();
                // SAFETY: `set` is a valid cpu_set_t; `cpu` is below the
                // CPU count, within CPU_SETSIZE.
                unsafe { libc::CPU_SET(cpu, &mut set) };
                if !set_affinity(&set) {
                    tracing::warn!(cpu, "could not pin shard thread");
                }
            }
            let store = match Store::open(&dir, store_config) {
                Ok((store, report)) => {
                    tracing::info!(
                        shard = id,
                        keys = store.len(),
                        hint = report.hint_used,
                        ms = report.duration.as_millis() as u64,
                        "store opened"
                    );
                    store
                }
                Err(source) => {
                    let _ = ready.send(Err(ServerError::Store { shard: id, source }));
                    return Ok(());
                }
            };
            run_shard(id, shared, store, inbox, native, resp, own, ready, grace, unpinned)
        });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                return Err(stop_started(&node, threads, ServerError::Config(format!("spawn shard thread: {e}"))))
            }
        }
    }
    drop(ready_tx);
    for _ in 0..shards {
        let failed = match ready_rx.recv() {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e,
            // Every sender is gone and a shard never said: its thread died.
            Err(_) => ServerError::ThreadDied(threads.iter().position(|t| t.is_finished()).unwrap_or(0)),
        };
        return Err(stop_started(&node, threads, failed));
    }
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let addr = SocketAddr::new(config.bind, config.metrics_port.unwrap_or(0));
            let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
            let shared = shared.clone();
            let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ServerError::Config(format!("metrics runtime: {e}")))?;
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async {
                    match TcpListener::from_std(listener) {
                        Ok(l) => crate::metrics::serve(l, shared).await,
                        Err(e) => tracing::error!(error = %e, "metrics listener"),
                    }
                });
                Ok(())
            });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let error = ServerError::Config(format!("spawn metrics thread: {e}"));
                    return Err(stop_started(&node, threads, error));
                }
            }
            Some(bound)
        }
        None => None,
    };
    tracing::info!(%native_addr, ?resp_addr, ?metrics_addr, shards, "ringkv serving");
    Ok(ServerHandle { native_addr, resp_addr, shard_addrs, metrics_addr, shared, threads })
}

/// A start that failed part way: the shards that did start stop again,
/// their stores closed, before `error` is returned, so that nothing keeps
/// running and no data directory stays locked.
fn stop_started(
    shared: &Shared,
    threads: Vec<std::thread::JoinHandle<Result<(), ServerError>>>,
    error: ServerError,
) -> ServerError {
    shared.shutdown.send_replace(true);
    for thread in threads {
        let _ = thread.join();
    }
    error
}

/// The ring of this node's shards (one node, `shards` members).
fn local_ring(addr: SocketAddr, shards: usize) -> Result<Ring, ServerError> {
    let node = NodeId::new("local").map_err(|e| ServerError::Config(e.to_string()))?;
    let description = RingDescription::init(&InitConfig {
        nodes: vec![(node, addr.to_string())],
        shards_per_node: shards as u32,
        ..InitConfig::default()
    })
    .map_err(|e| ServerError::Config(e.to_string()))?;
    Ring::new(description).map_err(|e| ServerError::Config(e.to_string()))
}

fn empty_cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data, all zeros is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The CPUs the calling thread may run on, in order.
fn cpu_list() -> Vec<usize> {
    let Some(set) = affinity() else { return Vec::new() };
    // SAFETY: CPU_ISSET reads `set`, a valid cpu_set_t, below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// The calling thread's allowed CPUs.
fn affinity() -> Option<libc::cpu_set_t> {
    let mut set = empty_cpu_set();
    // SAFETY: sched_getaffinity writes at most the size given into `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (rc == 0).then_some(set)
}

/// Restricts the calling thread to `set`; false when the kernel refused.
fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: sched_setaffinity reads the size given from `set`.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

#[allow(clippy::too_many_arguments)]
fn run_shard(
    id: usize,
    shared: Arc<Shared>,
    store: Store,
    inbox: crossbeam::channel::Receiver<Envelope>,
    native: std::net::TcpListener,
    resp: Option<std::net::TcpListener>,
    own: std::net::TcpListener,
    ready: std::sync::mpsc::Sender<Result<usize, ServerError>>,
    grace: Duration,
    unpinned: Option<libc::cpu_set_t>,
) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A current-thread runtime starts threads only for its blocking pool
        // (flushes, segments made ahead, deletions): named after the shard,
        // so that `ringkv bench` counts their CPU as the server's.
        .thread_name(format!("shard-{id}-io"))
        .on_thread_start(move || {
            if let Some(set) = &unpinned {
                set_affinity(set);
            }
        })
        .build()
        .map_err(|e| ServerError::Config(format!("runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let shard = Rc::new(Shard::new(id, shared.clone(), store));
    local.block_on(&runtime, async {
        let to_tokio = |l: std::net::TcpListener| TcpListener::from_std(l).expect("listener registers");
        tokio::task::spawn_local(shard.clone().sync_loop());
        tokio::task::spawn_local(shard.clone().inbox_loop(inbox));
        tokio::task::spawn_local(shard.clone().maintenance_loop());
        let mut acceptors = vec![
            tokio::task::spawn_local(accept_loop(shard.clone(), to_tokio(native), Kind::Native)),
            tokio::task::spawn_local(accept_loop(shard.clone(), to_tokio(own), Kind::Native)),
        ];
        if let Some(resp) = resp {
            acceptors.push(tokio::task::spawn_local(accept_loop(shard.clone(), to_tokio(resp), Kind::Resp)));
        }
        let _ = ready.send(Ok(id));
        drop(ready);
        let mut shutdown = shared.shutdown.subscribe();
        let _ = shutdown.wait_for(|&s| s).await;
        for a in acceptors {
            a.abort();
        }
        // Finish in-flight requests: wait until connections on every shard
        // are gone (they may still need this shard's inbox), bounded.
        let deadline = tokio::time::Instant::now() + grace;
        while shared.open_connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A segment still being made would be left out of the checkpoint
        // (the next open would then scan the log instead of loading it).
        let deadline = tokio::time::Instant::now() + grace;
        while shard.preparing.get() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let store = shard.store.borrow_mut().take();
    if let Some(store) = store {
        let policy = store.config().fsync;
        match store.close() {
            Ok(()) => tracing::info!(shard = id, ?policy, "store closed cleanly"),
            Err(e) => {
                tracing::error!(shard = id, error = %e, "closing the store failed");
                return Err(ServerError::Store { shard: id, source: e });
            }
        }
    }
    let _ = FsyncPolicy::Never;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Native,
    Resp,
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: Kind) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.connections.get() >= shard.shared.limits.connections_per_shard_max {
            tracing::warn!(%peer, limit = shard.shared.limits.connections_per_shard_max, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        }
        let shared = &shard.shared;
        shared.open_connections.fetch_add(1, Ordering::AcqRel);
        shard.connections.set(shard.connections.get() + 1);
        shard.counters().connections.fetch_add(1, Ordering::Relaxed);
        let conn_id = shard.counters().connections_total.fetch_add(1, Ordering::Relaxed) * 1024 + shard.id as u64;
        let shard = shard.clone();
        tokio::task::spawn_local(async move {
            match kind {
                Kind::Native => crate::conn::serve(shard.clone(), stream, Native::default()).await,
                Kind::Resp => crate::conn::serve(shard.clone(), stream, Resp::new(conn_id)).await,
            }
            shard.connections.set(shard.connections.get() - 1);
            shard.counters().connections.fetch_sub(1, Ordering::Relaxed);
            shard.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
