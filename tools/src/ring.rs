//! `ringkv ring`: offline ring planning (owned by the router work).

use std::process::ExitCode;

/// Arguments of `ringkv ring`.
#[derive(Debug, clap::Args)]
pub struct RingArgs {}

pub fn run(_args: RingArgs) -> ExitCode {
    ExitCode::FAILURE
}
