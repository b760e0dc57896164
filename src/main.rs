//! The `docent` binary: command-line parsing and wiring, nothing clever.

mod app;
mod bench;
mod bench_http;
mod cli;
mod config;
mod eval;
mod migrate;

/// Model forward passes allocate and free tensors of tens of MiB per layer.
/// glibc's malloc hands those straight back to the kernel (they are over its
/// mmap threshold), so every pass paid for fresh zeroed pages: a sixth of
/// the embedding time went to page faults. mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
