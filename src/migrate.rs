//! `docent store migrate`: copies a collection between backends (embedded
//! and a Qdrant server) without embedding anything again.
//!
//! This is the orchestration: opening both stores, the progress bar, and
//! where the state file lives. The resumable copy of the points is
//! [`docent_store::migrate::copy_points`] (its state file sits beside the
//! collection); the catalogue is copied record by record at the end
//! ([`Catalogue::mirror_from`]), then the counts are compared.

use crate::app::Setup;
use crate::config::StoreKind;
use anyhow::{Context, Result, bail};
use docent_core::VectorStore;
use docent_ingest::Catalogue;
use docent_store::migrate::copy_points;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// What a finished migration reports.
#[derive(Debug, Serialize)]
pub struct MigrationSummary {
    pub from: String,
    pub to: String,
    pub points: usize,
    pub documents: usize,
    pub resumed: bool,
    pub seconds: f64,
}

pub fn state_path(setup: &Setup, from: StoreKind, to: StoreKind) -> PathBuf {
    setup
        .collection_dir()
        .join(format!("migrate-{}-to-{}.json", from.name(), to.name()))
}

pub fn run(
    setup: &Setup,
    from: StoreKind,
    to: StoreKind,
    batch: usize,
) -> Result<MigrationSummary> {
    if from == to {
        bail!(
            "--from and --to are both {}; pick two different backends",
            from.name()
        );
    }
    let started = std::time::Instant::now();
    let source: Arc<dyn VectorStore> = setup.open_store(from, None).with_context(|| {
        format!(
            "cannot open the source collection '{}' ({})",
            setup.collection,
            setup.store_location(from)
        )
    })?;
    let target = setup
        .open_store(to, Some(source.spec().clone()))
        .with_context(|| {
            format!(
                "cannot open the target collection '{}' ({})",
                setup.collection,
                setup.store_location(to)
            )
        })?;
    let total = source.count()?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "migrate [{bar:30}] {pos}/{len} points · {per_sec} · eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let state_file = state_path(setup, from, to);
    std::fs::create_dir_all(setup.collection_dir())?;
    let resumed = copy_points(
        source.as_ref(),
        target.as_ref(),
        &state_file,
        batch,
        &|copied| bar.set_position(copied),
    )?;
    bar.finish_and_clear();

    let source_catalogue = Catalogue::open(&setup.catalogue_path(from))?;
    let target_catalogue = Catalogue::open(&setup.catalogue_path(to))?;
    let documents = target_catalogue.mirror_from(&source_catalogue)?;

    let (copied, expected) = (target.count()?, source.count()?);
    if copied != expected {
        bail!(
            "verification failed: the source holds {expected} points and the target {copied}. \
             Was the source written to meanwhile? Run the command again to copy the rest"
        );
    }
    let target_documents = target_catalogue.list()?.len();
    if target_documents != documents {
        bail!(
            "verification failed: {documents} catalogue records in the source, {target_documents} in the target"
        );
    }
    std::fs::remove_file(&state_file)
        .with_context(|| format!("cannot remove {}", state_file.display()))?;
    Ok(MigrationSummary {
        from: setup.store_location(from),
        to: setup.store_location(to),
        points: copied,
        documents,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
