//! `ringkv serve`: runs a node until SIGINT or SIGTERM, then shuts down
//! cleanly (in-flight requests finished, stores synced, index checkpoints
//! written) and exits 0.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use engine::FsyncPolicy;
use net::server::{PORT_DEFAULT, RESP_PORT_DEFAULT};
use net::{Limits, ServerConfig};

/// Arguments of `ringkv serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory for the shards' segment files (one subdirectory a shard).
    #[arg(long, default_value = "ringkv-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Native protocol port, shared by all shards (0: any free port).
    #[arg(long, default_value_t = PORT_DEFAULT)]
    port: u16,
    /// RESP port, shared by all shards (0: any free port; `off`: none).
    #[arg(long, default_value_t = RESP_PORT_DEFAULT.to_string())]
    resp_port: String,
    /// Prometheus metrics port, `GET /metrics` (0: any free port; `off`).
    #[arg(long, default_value = "off")]
    metrics_port: String,
    /// First shard-aware native port: shard i listens on it plus i
    /// (0: any free ports). Defaults to --port + 1.
    #[arg(long)]
    shard_port_base: Option<u16>,
    /// Number of shards (threads); default one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// When writes reach the disk: `always` acknowledges a write only once
    /// it is durable (group commit), `everysec` loses at most about a
    /// second, `never` leaves it to the OS.
    #[arg(long, value_enum, default_value_t = Fsync::Everysec)]
    fsync: Fsync,
    /// Password clients must give (AUTH) before anything but PING.
    #[arg(long, env = "RINGKV_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// `store` keeps everything and refuses writes with an out-of-memory
    /// error at --max-memory; `cache` evicts what is least read instead.
    #[arg(long, value_enum, default_value_t = Mode::Store)]
    mode: Mode,
    /// Memory bound of the node, split evenly over its shards: index plus
    /// resident segment bytes. Sizes as Redis reads them: `1gb` is 2^30
    /// bytes, `1g` is 10^9; `kb`/`k`, `mb`/`m` likewise. Required in cache
    /// mode; store mode is unbounded without it.
    #[arg(long, value_parser = parse_memory_size)]
    max_memory: Option<u64>,
    /// Bound on the node's segment files, split evenly over its shards
    /// (sizes as for --max-memory; at least 5 segments a shard; store mode
    /// only). Without
    /// it a shard's log may grow to 32 GiB, all its index can address. At
    /// the bound, writes other than deletes are refused ("log is full")
    /// while DEL and compaction go on.
    #[arg(long, value_parser = parse_memory_size)]
    max_disk: Option<u64>,
    /// Segment file size, in MiB (a power of two). Defaults to 64, or with
    /// --max-memory to a 64th of a shard's share (at least 64 KiB), so that
    /// eviction works in small steps. A store keeps the size it was
    /// created with: pass the same value again to reopen it.
    #[arg(long)]
    segment_mb: Option<u64>,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = net::limits::VALUE_DEFAULT_MAX_BYTES)]
    max_value_bytes: usize,
    /// Largest request frame, in bytes.
    #[arg(long, default_value_t = net::limits::FRAME_DEFAULT_MAX_BYTES)]
    max_frame_bytes: usize,
    /// Open connections per shard.
    #[arg(long, default_value_t = net::limits::CONNECTIONS_PER_SHARD_DEFAULT_MAX)]
    max_connections: usize,
    /// Close a connection that holds half a request this long, in ms.
    #[arg(long, default_value_t = net::limits::PARTIAL_REQUEST_DEFAULT_TIMEOUT.as_millis() as u64)]
    partial_request_timeout_ms: u64,
    /// Requests slower than this many milliseconds (from reading their
    /// batch to writing its replies) go to the slow log (SLOWLOG GET) and
    /// to a `ringkv::slowlog` warning; `off` turns it off.
    #[arg(long, default_value = "10")]
    slowlog_ms: String,
    /// Entries the slow log keeps.
    #[arg(long, default_value_t = net::slowlog::SLOWLOG_DEFAULT_MAX_LEN)]
    slowlog_max_len: usize,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Store,
    Cache,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Fsync {
    Always,
    Everysec,
    Never,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let (resp_port, metrics_port) =
        match (optional_port("--resp-port", &args.resp_port), optional_port("--metrics-port", &args.metrics_port)) {
            (Ok(r), Ok(m)) => (r, m),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ringkv serve: {e}");
                return ExitCode::from(2);
            }
        };
    let slowlog_threshold = match args.slowlog_ms.as_str() {
        "off" => None,
        ms => match ms.parse::<f64>() {
            Ok(ms) if ms >= 0.0 && ms.is_finite() => Some(std::time::Duration::from_secs_f64(ms / 1000.0)),
            _ => {
                eprintln!("ringkv serve: --slowlog-ms must be a number of milliseconds or `off`, not {ms:?}");
                return ExitCode::from(2);
            }
        },
    };
    let defaults = ServerConfig::default();
    let shards = args.shards.unwrap_or(defaults.shards);
    let mode = match args.mode {
        Mode::Store => engine::Mode::Store,
        Mode::Cache => engine::Mode::Cache,
    };
    if mode == engine::Mode::Cache && args.max_memory.is_none() {
        eprintln!("ringkv serve: --mode cache needs --max-memory");
        return ExitCode::from(2);
    }
    if mode == engine::Mode::Cache && args.max_disk.is_some() {
        eprintln!("ringkv serve: --mode cache keeps data in memory; bound it with --max-memory, not --max-disk");
        return ExitCode::from(2);
    }
    if mode == engine::Mode::Cache && matches!(args.fsync, Fsync::Always) {
        // Acknowledging "durable" writes that live only in memory would lie.
        eprintln!("ringkv serve: --mode cache keeps data in memory only; --fsync always cannot hold");
        return ExitCode::from(2);
    }
    let segment_size_bytes = match (args.segment_mb, args.max_memory) {
        (Some(mb), _) => mb << 20,
        (None, Some(node)) => engine::segment_size_for_memory(node / shards.max(1) as u64),
        (None, None) => engine::SEGMENT_SIZE_DEFAULT_BYTES,
    };
    let config = ServerConfig {
        bind: args.bind,
        port: args.port,
        resp_port,
        metrics_port,
        shard_port_base: args.shard_port_base.unwrap_or(if args.port == 0 { 0 } else { args.port.saturating_add(1) }),
        shards,
        data_dir: args.data_dir,
        store: engine::Config {
            segment_size_bytes,
            mode,
            memory_max_bytes: args.max_memory,
            log_max_bytes: args.max_disk.map_or(engine::LOG_ADDRESS_SPACE_BYTES, |node| {
                (node / shards.max(1) as u64).min(engine::LOG_ADDRESS_SPACE_BYTES)
            }),
            fsync: match args.fsync {
                Fsync::Always => FsyncPolicy::Always,
                Fsync::Everysec => FsyncPolicy::EverySec,
                Fsync::Never => FsyncPolicy::Never,
            },
            value_len_max_bytes: args.max_value_bytes,
            ..engine::Config::default()
        },
        limits: Limits {
            value_max_bytes: args.max_value_bytes,
            frame_max_bytes: args.max_frame_bytes,
            connections_per_shard_max: args.max_connections,
            partial_request_timeout: std::time::Duration::from_millis(args.partial_request_timeout_ms),
            ..Limits::default()
        },
        requirepass: args.requirepass,
        pin_cores: !args.no_pin,
        slowlog_threshold,
        slowlog_max_len: args.slowlog_max_len,
        ..defaults
    };
    // A panic leaves a shard half alive (its task gone, its store perhaps
    // in the middle of a change, a connection count never given back,
    // writers waiting forever for a group commit that died). Better to
    // stop the process at once: the next start recovers what was durable,
    // as after `kill -9`.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(%info, "a thread panicked; aborting (the next start recovers the durable state)");
        std::process::abort();
    }));
    // Before the server starts: a SIGTERM sent as soon as the ready line
    // is out must find its handler (the default action killed the process
    // without a checkpoint).
    let signals = Signals::install();
    let handle = match net::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ringkv serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One machine-readable line on stdout, so scripts and tests learn the
    // ports (useful with port 0) once the server answers.
    let resp = handle.resp_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    let shards: Vec<String> = handle.shard_addrs.iter().map(ToString::to_string).collect();
    let metrics = handle.metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    println!("ready native={} resp={} shards={} metrics={metrics}", handle.native_addr, resp, shards.join(","));
    let _ = std::io::stdout().flush();

    signals.wait();
    tracing::info!("shutting down");
    handle.shutdown();
    match handle.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringkv serve: shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A memory size as Redis' `memtoll` reads it: a number with an optional
/// unit, `b`, `k`/`kb`, `m`/`mb`, `g`/`gb` (the `b` forms are powers of
/// 1024, the others of 1000), case-insensitive.
fn parse_memory_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (use b, k, kb, m, mb, g or gb)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 256mb or 4gb"))?;
    n.checked_mul(scale).filter(|&b| b > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

/// A port flag that also takes `off`.
fn optional_port(flag: &str, value: &str) -> Result<Option<u16>, String> {
    match value {
        "off" => Ok(None),
        p => p.parse().map(Some).map_err(|_| format!("{flag} must be a port number or `off`, not {p:?}")),
    }
}

/// SIGTERM and SIGINT, caught from `install` on.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
        let (term, int) = runtime.block_on(async {
            (
                signal(SignalKind::terminate()).expect("SIGTERM handler"),
                signal(SignalKind::interrupt()).expect("SIGINT handler"),
            )
        });
        Signals { runtime, term, int }
    }

    /// Waits for either (one that came before this call counts).
    fn wait(mut self) {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_memory_size;

    #[test]
    fn memory_sizes_read_as_redis_reads_them() {
        assert_eq!(parse_memory_size("256mb"), Ok(256 << 20));
        assert_eq!(parse_memory_size("4GB"), Ok(4 << 30));
        assert_eq!(parse_memory_size("1g"), Ok(1_000_000_000));
        assert_eq!(parse_memory_size("100k"), Ok(100_000));
        assert_eq!(parse_memory_size("12345"), Ok(12345));
        for bad in ["", "mb", "12tb", "-5mb", "0", "1.5gb", "99999999999gb"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
