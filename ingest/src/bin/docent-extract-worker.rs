//! The PDF extraction worker (it serves PDFs sent on stdin, one after
//! another) as its own program, for this crate's tests and
//! for embedders of the library; the `docent` binary has the same worker as
//! its hidden `extract-worker` command.

fn main() -> std::process::ExitCode {
    let memory = docent_ingest::extract::pdf::worker_memory_arg(std::env::args().skip(1));
    docent_ingest::extract::pdf::run_worker(memory)
}
