//! The `docent` binary: command-line parsing and wiring, nothing clever.

mod app;
mod bench;
mod cli;
mod config;
mod migrate;

fn main() -> std::process::ExitCode {
    cli::main()
}
