//! `docent ingest`: files and folders into the collection, with progress
//! bars, a summary, and `--watch`.

use crate::app::Setup;
use crate::args::IngestArgs;
use anyhow::{Context, Result};
use docent_ingest::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code when some files could not be ingested (the rest were).
const EXIT_PARTIAL: u8 = 3;

pub fn run(setup: &Setup, args: IngestArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let mut options = setup.ingest_options();
    options.prune |= args.prune;
    options.include_hidden |= args.include_hidden;
    options.include.extend(args.include.iter().cloned());
    options.exclude.extend(args.exclude.iter().cloned());
    if let Some(max) = args.max_file_bytes {
        options.max_file_bytes = max;
    }
    options.validate()?;
    let pipeline = setup.pipeline_with(&parts, &collection, options);
    let show = std::io::stderr().is_terminal() && !args.json;
    let bar = progress_bar(show);
    let total = pipeline
        .ingest_paths(&args.paths, &bar.callback())
        .context("ingestion stopped")?;
    bar.finish();
    print_summary(&total, args.json)?;
    if args.watch {
        watch(setup, &pipeline, &args.paths, args.json)?;
    }
    Ok(if total.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

/// A progress bar fed by pipeline events (hidden when stderr is not a
/// terminal), and a spinner while the search index is built.
struct IngestBar {
    bar: ProgressBar,
    spinner: ProgressBar,
    started: std::time::Instant,
    chunks: std::cell::Cell<usize>,
}

fn progress_bar(show: bool) -> IngestBar {
    let (bar, spinner) = if show {
        (ProgressBar::new(0), ProgressBar::new_spinner())
    } else {
        (ProgressBar::hidden(), ProgressBar::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files · {msg} · eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    spinner.set_message("building the search index");
    IngestBar {
        bar,
        spinner,
        started: std::time::Instant::now(),
        chunks: std::cell::Cell::new(0),
    }
}

impl IngestBar {
    fn callback(&self) -> impl Fn(Progress) + '_ {
        move |event| match event {
            Progress::Root(path) => {
                self.bar.set_prefix(path.display().to_string());
                self.bar.set_position(0);
            }
            Progress::Found(n) => self.bar.set_length(n as u64),
            Progress::FileDone(_) => self.bar.inc(1),
            Progress::Chunks(n) => {
                self.chunks.set(self.chunks.get() + n);
                let rate =
                    self.chunks.get() as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                self.bar
                    .set_message(format!("{} chunks, {rate:.0}/s", self.chunks.get()));
            }
            Progress::Indexing => {
                self.bar.finish_and_clear();
                self.spinner
                    .enable_steady_tick(std::time::Duration::from_millis(120));
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        self.spinner.finish_and_clear();
    }
}

fn print_summary(total: &docent_ingest::IngestSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(total)?);
        return Ok(());
    }
    println!(
        "{} files: {} added, {} updated, {} unchanged, {} removed, {} failed ({} chunks embedded)",
        total.files_seen,
        total.added,
        total.updated,
        total.unchanged,
        total.removed,
        total.failed.len(),
        total.chunks_embedded
    );
    if !total.changed() && total.failed.is_empty() {
        println!("nothing changed");
    }
    for f in &total.failed {
        println!("  failed: {}: {}", f.path, f.reason);
    }
    Ok(())
}

/// Watches the folders until Ctrl-C or SIGTERM, ingesting what changes.
fn watch(
    setup: &Setup,
    pipeline: &docent_ingest::Pipeline,
    paths: &[PathBuf],
    json: bool,
) -> Result<()> {
    let folders: Vec<&PathBuf> = paths.iter().filter(|p| p.is_dir()).collect();
    anyhow::ensure!(!folders.is_empty(), "--watch needs at least one folder");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let debounce = std::time::Duration::from_millis(setup.config.ingest.watch_debounce_ms);
    eprintln!("watching {} folder(s); Ctrl-C to stop", folders.len());
    {
        let stop = stop.clone();
        // Detached: it ends with the process if the watchers end first.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(super::shutdown_signal());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    std::thread::scope(|scope| -> Result<()> {
        let stop = stop.as_ref();
        let watchers: Vec<_> = folders
            .iter()
            .map(|folder| {
                scope.spawn(move || {
                    let result = docent_ingest::watch(
                        pipeline,
                        folder,
                        debounce,
                        stop,
                        &|_| {},
                        &mut |run| match run {
                            Ok(summary) => {
                                let _ = print_summary(&summary, json);
                            }
                            Err(e) => eprintln!("error: ingesting changes failed: {e:#}"),
                        },
                    );
                    if result.is_err() {
                        // One folder cannot be watched: stop the others too.
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        for w in watchers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a watcher crashed"))??;
        }
        Ok(())
    })
}
