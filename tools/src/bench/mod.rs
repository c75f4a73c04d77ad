//! `ringkv bench`: the bundled load generator. memtier_benchmark's flag
//! names where the idea is the same; ringkv's native protocol (shard-aware)
//! or RESP (Redis, or ringkv's RESP port); with no address, an embedded
//! ringkv started in-process over a temporary directory.

mod driver;
mod keys;
mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use net::client::{Client, ClientConfig};
use net::resp::{self, Reply};

use driver::{Progress, Protocol, Routing, Stop, Workload};
use keys::KeyPattern;
use report::ServerUsage;

/// Arguments of `ringkv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server host; none starts an embedded ringkv in this process.
    #[arg(short = 's', long)]
    server: Option<String>,
    /// Server port (default: 7400 native, 6379 RESP).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Wire protocol: `native` (ringkv, shard-aware) or `resp` (alias
    /// `redis`: Redis or ringkv's RESP port).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
    /// Native protocol only: send every request to the given port instead
    /// of the owning shard's port (requests then cross shards).
    #[arg(long)]
    no_shard_aware: bool,
    /// Connections per thread.
    #[arg(short = 'c', long, default_value_t = 50)]
    clients: usize,
    /// Load threads (default: half the cores, at least one).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// SET:GET ratio.
    #[arg(long, default_value = "1:10")]
    ratio: String,
    #[arg(long, default_value = "memtier-")]
    key_prefix: String,
    #[arg(long, default_value_t = 0)]
    key_minimum: u64,
    #[arg(long, default_value_t = 99_999)]
    key_maximum: u64,
    /// uniform, gaussian, zipf[:EXPONENT] (default 0.99) or sequential.
    #[arg(long, default_value = "uniform")]
    key_pattern: KeyPattern,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 32)]
    data_size: usize,
    /// Value sizes drawn uniformly from MIN-MAX (overrides --data-size).
    #[arg(long)]
    data_size_range: Option<String>,
    /// Seconds to run (default 10 unless --requests is given).
    #[arg(long)]
    test_time: Option<f64>,
    /// Total requests to send, instead of a time.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Total requests per second (open loop; latency counts from each
    /// request's scheduled time).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// SET every key in the range once before the run.
    #[arg(long)]
    prefill: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write all results as JSON here.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Exit non-zero when more requests than this fail.
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
    #[arg(short = 'a', long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    authenticate: Option<String>,
    /// Embedded server only: shards (default: half the cores).
    #[arg(long)]
    shards: Option<usize>,
    /// Embedded server only: fsync policy.
    #[arg(long, default_value = "never", value_parser = ["always", "everysec", "never"])]
    fsync: String,
}

/// The server under test.
enum Target {
    Embedded(Embedded),
    External { addr: SocketAddr },
}

/// The server `ringkv bench` runs for itself when given no `--server`,
/// over a temporary directory. It is stopped and joined when the run ends,
/// or when the run fails part way (then before its directory is removed).
struct Embedded {
    handle: Option<net::ServerHandle>,
    _dir: tempfile::TempDir,
}

impl Embedded {
    fn handle(&self) -> &net::ServerHandle {
        self.handle.as_ref().expect("running until stopped")
    }

    /// Stops the server and waits for its shards to close their stores.
    fn stop(&mut self) -> Result<(), net::ServerError> {
        match self.handle.take() {
            Some(handle) => {
                handle.shutdown();
                handle.join()
            }
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("embedded server: {e}");
        }
    }
}

fn half_cores() -> usize {
    (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1)
}

pub fn run(args: BenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringkv bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_pair(s: &str, what: &str, sep: char) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(sep).ok_or_else(|| format!("{what} must look like A{sep}B, not {s:?}"))?;
    let a = a.trim().parse().map_err(|_| format!("bad {what} {s:?}"))?;
    let b = b.trim().parse().map_err(|_| format!("bad {what} {s:?}"))?;
    Ok((a, b))
}

fn run_inner(args: BenchArgs) -> Result<ExitCode, String> {
    let (sets, gets) = parse_pair(&args.ratio, "--ratio", ':')?;
    if sets + gets == 0 || sets + gets > u64::from(u32::MAX) {
        return Err("--ratio needs at least one SET or GET".into());
    }
    let (data_min, data_max) = match &args.data_size_range {
        Some(r) => {
            let (a, b) = parse_pair(r, "--data-size-range", '-')?;
            if a > b {
                return Err("--data-size-range MIN is above MAX".into());
            }
            (a as usize, b as usize)
        }
        None => (args.data_size, args.data_size),
    };
    if args.clients == 0 || args.pipeline == 0 {
        return Err("--clients and --pipeline must be at least 1".into());
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    keys::KeyGen::new(args.key_minimum, args.key_maximum, args.key_pattern, 0)?;
    let threads = args.threads.unwrap_or_else(half_cores).max(1);

    let target = match &args.server {
        None => {
            let dir = tempfile::Builder::new().prefix("ringkv-bench-").tempdir().map_err(|e| e.to_string())?;
            let config = net::ServerConfig {
                port: 0,
                resp_port: Some(0),
                shard_port_base: 0,
                shards: args.shards.unwrap_or_else(half_cores),
                data_dir: dir.path().to_path_buf(),
                pin_cores: false,
                requirepass: args.authenticate.clone(),
                store: engine::Config {
                    fsync: match args.fsync.as_str() {
                        "always" => engine::FsyncPolicy::Always,
                        "everysec" => engine::FsyncPolicy::EverySec,
                        _ => engine::FsyncPolicy::Never,
                    },
                    ..engine::Config::default()
                },
                ..net::ServerConfig::default()
            };
            let handle = net::start(config).map_err(|e| format!("embedded server: {e}"))?;
            Target::Embedded(Embedded { handle: Some(handle), _dir: dir })
        }
        Some(host) => {
            let port = args.port.unwrap_or(match args.protocol {
                Protocol::Native => net::server::PORT_DEFAULT,
                Protocol::Resp => 6379,
            });
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host} has no address"))?;
            Target::External { addr }
        }
    };
    let addr = match (&target, args.protocol) {
        (Target::Embedded(e), Protocol::Native) => e.handle().native_addr,
        (Target::Embedded(e), Protocol::Resp) => e.handle().resp_addr.ok_or("embedded server without RESP")?,
        (Target::External { addr }, _) => *addr,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let routing = if args.protocol == Protocol::Native && !args.no_shard_aware {
        let client = rt
            .block_on(Client::connect(
                addr,
                ClientConfig { password: args.authenticate.clone(), ..ClientConfig::default() },
            ))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        client.ring().map(|ring| Routing {
            ring: ring.clone(),
            member_shard: ring.members().iter().map(|m| m.id.shard as usize).collect(),
            shard_addrs: client.shard_addrs().to_vec(),
        })
    } else {
        None
    };
    let workload = Workload {
        protocol: args.protocol,
        addr,
        routing,
        threads,
        clients_per_thread: args.clients,
        pipeline: args.pipeline,
        sets: sets as u32,
        gets: gets as u32,
        key_prefix: args.key_prefix.clone(),
        key_min: args.key_minimum,
        key_max: args.key_maximum,
        pattern: args.key_pattern,
        data_size_min: data_min,
        data_size_max: data_max,
        seed: args.seed,
        rate: args.rate,
        password: args.authenticate.clone(),
    };
    let target_name = match &target {
        Target::Embedded(e) => format!("embedded ringkv, {} shards, {addr}", e.handle().shard_addrs.len()),
        Target::External { .. } => format!("{addr}"),
    };
    let shard_aware = if workload.routing.is_some() { ", shard-aware" } else { "" };
    eprintln!(
        "ringkv bench: {:?}{shard_aware} -> {target_name}; {threads} thread(s) x {} clients, pipeline {}, SET:GET {sets}:{gets}, keys {}..={} {}, values {}",
        args.protocol,
        args.clients,
        args.pipeline,
        args.key_minimum,
        args.key_maximum,
        args.key_pattern,
        if data_min == data_max { format!("{data_min} B") } else { format!("{data_min}-{data_max} B") },
    );

    if args.prefill {
        let started = Instant::now();
        // One connection (per shard) writing every key once, in order.
        let fill = Workload {
            threads: 1,
            clients_per_thread: 1,
            pipeline: 64,
            sets: 1,
            gets: 0,
            pattern: KeyPattern::Sequential,
            rate: None,
            ..workload.clone()
        };
        let n = args.key_maximum - args.key_minimum + 1;
        let results = driver::run(Arc::new(fill), Stop::Requests(n), Progress::new());
        if let Some(e) = &results.first_error {
            return Err(format!("prefill failed: {e}"));
        }
        eprintln!("prefilled {n} keys in {}", report::fmt_duration(started.elapsed()));
    }
    run_measured(args, workload, target, addr)
}

fn run_measured(args: BenchArgs, workload: Workload, target: Target, addr: SocketAddr) -> Result<ExitCode, String> {
    let workload = Arc::new(workload);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    if args.warmup > 0.0 {
        driver::run(workload.clone(), Stop::Time(Duration::from_secs_f64(args.warmup)), Progress::new());
    }
    let stop = match (args.requests, args.test_time) {
        (Some(n), _) => Stop::Requests(n),
        (None, Some(t)) => Stop::Time(Duration::from_secs_f64(t)),
        (None, None) => Stop::Time(Duration::from_secs(10)),
    };
    let server_before = server_usage(&rt, &target, addr, &args)?;
    let progress = Progress::new();
    let runner = {
        let workload = workload.clone();
        let progress = progress.clone();
        std::thread::spawn(move || driver::run(workload, stop, progress))
    };
    show_progress(&runner, &progress);
    let results = runner.join().map_err(|_| "load threads panicked".to_string())?;
    let client_cpu = results.client_cpu_seconds;
    let server_after = server_usage(&rt, &target, addr, &args)?;
    // An external server also counted the first STATS/INFO request, which
    // asked for the starting figures.
    let own_requests = u64::from(matches!(target, Target::External { .. }));
    let server = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(ServerUsage {
            cpu_seconds: a.cpu_seconds - b.cpu_seconds,
            commands: a.commands.saturating_sub(b.commands).saturating_sub(own_requests),
        }),
        _ => None,
    };

    println!("{}", report::table(&results));
    let total_ops = results.set.count + results.get.count;
    let errors = results.set.errors + results.get.errors;
    if let Some(s) = server {
        println!(
            "Server: {:.0} ops per CPU-second ({} operations counted by the server, {:.2} CPU-s)",
            report::per_cpu_second(s.commands, s.cpu_seconds),
            s.commands,
            s.cpu_seconds
        );
    }
    if total_ops > 0 {
        println!(
            "Client: {:.2} us CPU per operation ({:.2} CPU-s); {total_ops} operations in {}, {errors} errors",
            client_cpu * 1e6 / total_ops as f64,
            client_cpu,
            report::fmt_duration(results.elapsed)
        );
    }
    if let Some(e) = &results.first_error {
        eprintln!("first error: {e}");
    }
    if results.clients_failed > 0 {
        eprintln!(
            "{} of {} clients stopped early on an error",
            results.clients_failed,
            workload.threads * workload.clients_per_thread
        );
    }
    if let Some(path) = &args.json_out {
        let settings = serde_json::json!({
            "protocol": workload.protocol,
            "server": args.server,
            "addr": addr.to_string(),
            "threads": workload.threads,
            "clients": workload.clients_per_thread,
            "pipeline": workload.pipeline,
            "ratio": args.ratio,
            "key_prefix": workload.key_prefix,
            "key_minimum": workload.key_min,
            "key_maximum": workload.key_max,
            "key_pattern": workload.pattern.to_string(),
            "data_size_min": workload.data_size_min,
            "data_size_max": workload.data_size_max,
            "rate": workload.rate,
            "seed": workload.seed,
            "shard_aware": workload.routing.is_some(),
            "warmup": args.warmup,
        });
        let doc = report::json(settings, &results, server, client_cpu);
        std::fs::write(path, serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let mut failed = results.clients_failed > 0 || (results.first_error.is_some() && total_ops == 0);
    if let Target::Embedded(mut embedded) = target {
        if let Err(e) = embedded.stop() {
            eprintln!("embedded server: {e}");
            failed = true;
        }
    }
    Ok(if errors > args.max_errors || failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn show_progress(runner: &std::thread::JoinHandle<driver::Results>, progress: &Progress) {
    use std::io::IsTerminal;
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"));
        bar
    });
    let started = Instant::now();
    let mut last_ops = 0;
    let mut last_at = Instant::now();
    while !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(bar) = &bar {
            let ops = progress.ops.load(Ordering::Relaxed);
            let rate = (ops - last_ops) as f64 / last_at.elapsed().as_secs_f64();
            let p99 = progress.live.lock().map_or(0, |mut h| {
                let v = h.value_at_quantile(0.99);
                h.reset();
                v
            });
            bar.set_message(format!("{rate:>10.0} ops/s   p99 {:.3} ms   {ops} ops", p99 as f64 / 1000.0));
            bar.tick();
            last_ops = ops;
            last_at = Instant::now();
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let _ = started;
}

/// CPU seconds and commands counted so far by the server, when it says.
fn server_usage(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    addr: SocketAddr,
    args: &BenchArgs,
) -> Result<Option<ServerUsage>, String> {
    match target {
        Target::Embedded(e) => Ok(Some(ServerUsage {
            cpu_seconds: report::threads_cpu_seconds("shard-"),
            commands: e.handle().total_commands(),
        })),
        Target::External { .. } => rt.block_on(async {
            match args.protocol {
                Protocol::Native => {
                    let config = ClientConfig {
                        shard_aware: false,
                        password: args.authenticate.clone(),
                        ..ClientConfig::default()
                    };
                    let mut c = Client::connect(addr, config).await.map_err(|e| e.to_string())?;
                    let stats = c.stats().await.map_err(|e| e.to_string())?;
                    let get = |k: &str| stats.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.parse::<f64>().ok());
                    Ok(match (get("process_cpu_ms"), get("total_commands_processed")) {
                        (Some(cpu), Some(cmds)) => {
                            Some(ServerUsage { cpu_seconds: cpu / 1000.0, commands: cmds as u64 })
                        }
                        _ => None,
                    })
                }
                Protocol::Resp => resp_info(addr, args.authenticate.as_deref()).await,
            }
        }),
    }
}

/// Reads CPU and command counts from INFO (Redis or ringkv's RESP port).
async fn resp_info(addr: SocketAddr, password: Option<&str>) -> Result<Option<ServerUsage>, String> {
    use driver::within_reply_timeout as timeout;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = timeout("INFO connection", tokio::net::TcpStream::connect(addr)).await?;
    let mut out = BytesMut::new();
    let mut replies = 1;
    if let Some(p) = password {
        resp::put_command(&mut out, &[b"AUTH", p.as_bytes()]);
        replies += 1;
    }
    resp::put_command(&mut out, &[b"INFO"]);
    timeout("INFO", stream.write_all(&out)).await?;
    let mut inbuf = BytesMut::new();
    let limits = net::Limits::default();
    let mut text = None;
    while replies > 0 {
        match resp::parse_reply(&mut inbuf, &limits).map_err(|e| e.to_string())? {
            Some(reply) => {
                replies -= 1;
                if let Reply::Bulk(Some(b)) = reply {
                    text = Some(String::from_utf8_lossy(&b).into_owned());
                }
            }
            None => {
                let n = timeout("INFO", stream.read_buf(&mut inbuf)).await?;
                if n == 0 {
                    return Err("INFO: server closed the connection".into());
                }
            }
        }
    }
    let Some(text) = text else { return Ok(None) };
    let field =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok());
    Ok(match (field("used_cpu_user"), field("used_cpu_sys"), field("total_commands_processed")) {
        (Some(u), Some(s), Some(c)) => Some(ServerUsage { cpu_seconds: u + s, commands: c as u64 }),
        _ => None,
    })
}
