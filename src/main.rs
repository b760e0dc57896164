//! The `docent` binary: the command line (`args`), what each command does
//! (`commands`), and the wiring from configuration to the library crates
//! (`config`, `app`). The work itself lives in the crates.

mod app;
mod args;
mod commands;
mod config;
mod migrate;

use clap::Parser;
use std::process::ExitCode;

/// Model forward passes allocate and free tensors of tens of MiB per layer.
/// glibc's malloc hands those straight back to the kernel (they are over its
/// mmap threshold), so every pass paid for fresh zeroed pages: a sixth of
/// the embedding time went to page faults. mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCENT_LOG")
        .unwrap_or_else(|_| "warn,qdrant_edge=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
