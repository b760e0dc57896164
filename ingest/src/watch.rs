//! `--watch`: re-ingests what changes under a folder, debounced.

use crate::pipeline::{IngestSummary, Pipeline, Progress};
use docent_core::{Error, Result};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Watches `root` until `stop` is set. Changes are gathered until `debounce`
/// passes without a new one, then ingested together; each run's result goes
/// to `on_run` (a failed run is reported and watching goes on).
pub fn watch(
    pipeline: &Pipeline,
    root: &Path,
    debounce: Duration,
    stop: &AtomicBool,
    progress: &dyn Fn(Progress),
    on_run: &mut dyn FnMut(Result<IngestSummary>),
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .map_err(|e| Error::unavailable("cannot watch files", e))?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(|e| Error::unavailable(format!("cannot watch {}", root.display()), e))?;
    let tick = Duration::from_millis(100).min(debounce);
    let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut last_event: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(tick) {
            Ok(Ok(event)) if relevant(&event.kind) => {
                changed.extend(event.paths);
                last_event = Some(Instant::now());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => on_run(Err(Error::unavailable("file watcher failed", e))),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if last_event.is_some_and(|t| t.elapsed() >= debounce) && !changed.is_empty() {
            let paths: Vec<PathBuf> = std::mem::take(&mut changed).into_iter().collect();
            last_event = None;
            on_run(pipeline.ingest_changes(root, &paths, progress));
        }
    }
    Ok(())
}

/// Content changes; reads (including the pipeline's own) and metadata are not.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}
