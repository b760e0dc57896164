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
/// the embedding time went to page faults. mimalloc keeps and reuses them,
/// for as long as [`PURGE_DELAY_MS`] says.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long freed memory stays mapped before mimalloc returns it to the
/// kernel. Its default (1 s) purged a batch's freed tensors between the
/// layers of 256-token batches, so the next layer faulted them in again:
/// 1.7 GiB purged and 25,000 page faults for 300 long texts, against 1,400
/// at 10 s; 7% fewer CPU seconds and 1.02-1.2x the sentences per second in
/// alternating runs (docs/benchmarks.md, session 19). An
/// idle server still hands its memory back after this delay.
/// `MIMALLOC_PURGE_DELAY` overrides it.
const PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3), which
/// libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mi_option_set_default only stores an integer option (a
    // default that the environment variable still overrides); it takes no
    // pointers and is safe to call at any time.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

fn main() -> ExitCode {
    tune_allocator();
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
