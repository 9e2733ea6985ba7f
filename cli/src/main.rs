//! `squall`: the one binary of Squall.
//!
//! Every role and every person's tool is a subcommand of it. What exists
//! today is listed by `squall --help`; the storage and compute roles, the
//! local cluster launcher (`up`, `down`, `status`) and `kv` arrive with their
//! issues (see ARCHITECTURE.md).
//!
//! # Layout
//!
//! - `main.rs`: argument parsing and logging set-up.
//! - `ping.rs`: `squall ping`, a round-trip check of the messaging layer.

mod ping;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Squall: stateful functions next to a coordination-free lattice KVS.
#[derive(Debug, Parser)]
#[command(name = "squall", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `anna=debug`.
    #[arg(long, global = true, env = "SQUALL_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure protocol round trips over ZeroMQ: to a responder started in
    /// this process, or to any Squall component with `--to`.
    Ping(ping::PingArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Ping(args) => ping::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
