//! PDF extraction through worker processes: a worker started per file
//! against one kept for the run (what the pipeline does), on generated
//! 8-page PDFs like `docent bench ingest`'s:
//! `cargo bench -p docent-ingest --bench pdf_workers`.
//!
//! `PDF_WORKER` names the worker program (default: this crate's
//! `docent-extract-worker`, 3 MB); `PDF_WORKER=target/release/docent`
//! runs the `docent` binary's `extract-worker`, as ingestion does. `FILES`
//! (default 40) and `ROUNDS` (default 5) set the size; the two ways
//! alternate within each round. Printed: medians of wall-clock and CPU
//! milliseconds per file, the CPU of this process and its reaped workers.

use docent_core::Extractor;
use docent_ingest::extract::{PdfExtractor, PdfLimits, WorkerCommand};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let files = env("FILES", 40);
    let rounds = env("ROUNDS", 5);
    let worker = match std::env::var_os("PDF_WORKER") {
        Some(program) => {
            let program = PathBuf::from(program);
            let args = if program.ends_with("docent") {
                vec!["extract-worker".into()]
            } else {
                Vec::new()
            };
            WorkerCommand { program, args }
        }
        None => WorkerCommand {
            program: env!("CARGO_BIN_EXE_docent-extract-worker").into(),
            args: Vec::new(),
        },
    };
    let pdfs: Vec<Vec<u8>> = (0..files)
        .map(|i| {
            let pages: Vec<String> = (0..8)
                .map(|p| {
                    format!("Report {i}, page {p}: the quarterly figures of the office. ")
                        .repeat(30)
                })
                .collect();
            docent_ingest::testing::simple_pdf(&pages, Some(&format!("Report {i}")))
        })
        .collect();
    let extract = |extractor: &PdfExtractor, pdf: &[u8]| {
        let doc = extractor
            .extract(Path::new("report.pdf"), pdf)
            .expect("the PDF extracts");
        assert_eq!(doc.page_starts.len(), 8);
    };
    let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..rounds {
        for (way, w) in wall.iter_mut().zip(&mut cpu).enumerate() {
            let (t, c) = (
                Instant::now(),
                docent_ops::cpu_seconds().expect("/proc/self/stat"),
            );
            if way == 0 {
                // A worker per file: each extractor starts one, and drops
                // (kills and reaps) it.
                for pdf in &pdfs {
                    extract(
                        &PdfExtractor::new(Some(worker.clone()), PdfLimits::default()),
                        pdf,
                    );
                }
            } else {
                let extractor = PdfExtractor::new(Some(worker.clone()), PdfLimits::default());
                for pdf in &pdfs {
                    extract(&extractor, pdf);
                }
                extractor.release();
                assert_eq!(extractor.workers_started(), 1);
            }
            w.0.push(t.elapsed().as_secs_f64() * 1e3 / files as f64);
            w.1.push(
                (docent_ops::cpu_seconds().expect("/proc/self/stat") - c) * 1e3 / files as f64,
            );
        }
    }
    println!(
        "CPU: {} · {files} PDFs of 8 pages · worker {} · medians of {rounds} rounds",
        docent_ops::cpu_name(),
        worker.program.display()
    );
    println!("{:<24} {:>12} {:>12}", "", "wall ms/file", "CPU ms/file");
    for (way, name) in ["a worker per file", "one worker for the run"]
        .iter()
        .enumerate()
    {
        println!(
            "{name:<24} {:>12.2} {:>12.2}",
            median(wall[way].clone()),
            median(cpu[way].clone())
        );
    }
}
