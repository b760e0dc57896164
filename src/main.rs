//! The `docent` binary: command-line parsing and wiring, nothing clever.

mod app;
mod bench;
mod bench_http;
mod cli;
mod config;
mod eval;
mod migrate;

fn main() -> std::process::ExitCode {
    cli::main()
}
