//! `ringkv`: the one binary. It only wires the libraries together: each
//! subcommand lives in a module of its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod bench;
mod ring;
mod serve;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringkv: a sharded, log-structured key-value store and cache.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, about, propagate_version = true)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing
    /// directive such as `net=debug`). `RUST_LOG` wins when it is set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate load against ringkv or any RESP server (an embedded ringkv
    /// when no server is given) and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Run a ringkv node: one shard per core, native protocol and RESP.
    Serve(serve::ServeArgs),
    /// Plan and edit ring descriptions offline: init, add, remove, show, plan.
    Ring(ring::RingArgs),
}

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Ring(args) => ring::run(args),
    }
}
