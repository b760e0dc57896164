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
use std::ops::ControlFlow;
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

fn distinct(from: StoreKind, to: StoreKind) -> Result<()> {
    if from == to {
        bail!(
            "--from and --to are both {}; pick two different backends",
            from.name()
        );
    }
    Ok(())
}

/// Opens the collection on one backend (`spec`: create it when missing),
/// saying which one failed; `role` ("source ", "target " or "") names it.
fn open(
    setup: &Setup,
    role: &str,
    kind: StoreKind,
    spec: Option<docent_core::CollectionSpec>,
) -> Result<Arc<dyn VectorStore>> {
    setup.open_store(kind, spec).with_context(|| {
        format!(
            "cannot open the {role}collection '{}' ({})",
            setup.collection,
            setup.store_location(kind)
        )
    })
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
    distinct(from, to)?;
    let started = std::time::Instant::now();
    let source = open(setup, "source ", from, None)?;
    let target = open(setup, "target ", to, Some(source.spec().clone()))?;
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

/// What `docent store verify` found.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub from: String,
    pub to: String,
    pub points: docent_store::migrate::PointComparison,
    /// Catalogue records on each side, and records that differ or miss.
    pub catalogue: CatalogueComparison,
    /// Per search mode, for `queries` questions: how many top-10 lists are
    /// identical (same chunks in the same order), and the mean share of
    /// chunks the two top-10s have in common.
    pub top10: std::collections::BTreeMap<String, TopComparison>,
    pub queries: usize,
    pub identical: bool,
}

#[derive(Debug, Serialize)]
pub struct CatalogueComparison {
    pub source_records: usize,
    pub target_records: usize,
    pub differing: usize,
}

#[derive(Debug, Serialize)]
pub struct TopComparison {
    /// Same chunks in the same order.
    pub identical_lists: usize,
    /// Same scores rank by rank (within 1e-4, relative) and the same
    /// chunks, except that chunks of equal score may come in either order
    /// and a tie at rank 10 may be cut differently. Engines break ties by
    /// their own internal order, so this is what "the same results" means.
    pub equivalent_lists: usize,
    pub mean_overlap: f64,
}

/// Whether two ranked lists are the same up to the order of equal scores:
/// scores agree rank by rank within 1e-4 (relative), and each run of equal
/// scores holds the same chunks, except the last, which the list's end may
/// cut differently.
fn equivalent(a: &[(docent_core::ChunkId, f32)], b: &[(docent_core::ChunkId, f32)]) -> bool {
    let same = |x: f32, y: f32| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0);
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| !same(x.1, y.1)) {
        return false;
    }
    let mut start = 0;
    while start < a.len() {
        let mut end = start + 1;
        while end < a.len() && same(a[end].1, a[start].1) {
            end += 1;
        }
        if end < a.len() {
            let mut x: Vec<_> = a[start..end].iter().map(|p| p.0).collect();
            let mut y: Vec<_> = b[start..end].iter().map(|p| p.0).collect();
            x.sort();
            y.sort();
            if x != y {
                return false;
            }
        }
        start = end;
    }
    true
}

/// Compares the collection on two backends point by point, record by
/// record, and by the top 10 of `queries` searches per mode. The queries are
/// the opening words of chunks spread over the collection, so no dataset is
/// needed.
pub fn verify(
    setup: &Setup,
    from: StoreKind,
    to: StoreKind,
    queries: usize,
) -> Result<VerifyReport> {
    use docent_core::{SearchMode, SearchRequest};
    distinct(from, to)?;
    let (source, target) = (open(setup, "", from, None)?, open(setup, "", to, None)?);
    let points = docent_store::migrate::compare_points(source.as_ref(), target.as_ref(), 512)?;

    let records = |kind: StoreKind| -> Result<std::collections::BTreeMap<String, docent_ingest::DocumentRecord>> {
        Ok(Catalogue::open(&setup.catalogue_path(kind))?
            .list()?
            .into_iter()
            .map(|r| (r.id.0.clone(), r))
            .collect())
    };
    let (a, b) = (records(from)?, records(to)?);
    let differing = a.iter().filter(|(id, r)| b.get(*id) != Some(*r)).count()
        + b.keys().filter(|id| !a.contains_key(*id)).count();
    let catalogue = CatalogueComparison {
        source_records: a.len(),
        target_records: b.len(),
        differing,
    };

    // Query texts: the first 12 words of chunks evenly spread over the
    // source, read in id order.
    let total = source.count()?;
    let step = (total / queries.max(1)).max(1);
    let mut texts = Vec::new();
    let mut seen = 0usize;
    docent_store::migrate::scan_points(source.as_ref(), 512, |point| {
        if seen.is_multiple_of(step) {
            let words: Vec<&str> = point.chunk.text.split_whitespace().take(12).collect();
            texts.push(words.join(" "));
            if texts.len() == queries {
                return ControlFlow::Break(());
            }
        }
        seen += 1;
        ControlFlow::Continue(())
    })?;
    let parts = setup.embedding()?;
    let vectors = parts.embedder.embed(&texts)?;
    let candidates = setup.config.retrieval.candidates;
    let mut top10 = std::collections::BTreeMap::new();
    for mode in [SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid] {
        let mut identical_lists = 0;
        let mut equivalent_lists = 0;
        let mut overlap = 0.0;
        for (text, vector) in texts.iter().zip(&vectors) {
            let request = SearchRequest {
                vector: vector.clone(),
                text: text.clone(),
                mode,
                fusion: setup.config.retrieval.fusion,
                candidates,
                top_k: 10,
                ..Default::default()
            };
            let ranked = |store: &dyn VectorStore| -> Result<Vec<(docent_core::ChunkId, f32)>> {
                Ok(store
                    .search(&request)?
                    .into_iter()
                    .map(|h| (h.chunk.id, h.score))
                    .collect())
            };
            let (x, y) = (ranked(source.as_ref())?, ranked(target.as_ref())?);
            if x.iter().map(|p| p.0).eq(y.iter().map(|p| p.0)) {
                identical_lists += 1;
            }
            if equivalent(&x, &y) {
                equivalent_lists += 1;
            }
            let common = x.iter().filter(|p| y.iter().any(|q| q.0 == p.0)).count();
            overlap += common as f64 / x.len().max(y.len()).max(1) as f64;
        }
        top10.insert(
            format!("{mode:?}").to_lowercase(),
            TopComparison {
                identical_lists,
                equivalent_lists,
                mean_overlap: overlap / texts.len().max(1) as f64,
            },
        );
    }
    let identical = points.identical()
        && catalogue.differing == 0
        && top10.values().all(|t| t.equivalent_lists == texts.len());
    Ok(VerifyReport {
        from: setup.store_location(from),
        to: setup.store_location(to),
        points,
        catalogue,
        top10,
        queries: texts.len(),
        identical,
    })
}

#[cfg(test)]
mod tests {
    use super::equivalent;
    use docent_core::{ChunkId, DocumentId};

    fn id(n: usize) -> ChunkId {
        ChunkId::derive(&DocumentId::new("d.md"), "h", n)
    }

    #[test]
    fn ties_may_come_in_any_order_and_be_cut_differently() {
        let a = [
            (id(1), 3.0),
            (id(2), 2.0),
            (id(3), 2.0),
            (id(4), 1.0),
            (id(5), 1.0),
        ];
        let swapped = [
            (id(1), 3.0),
            (id(3), 2.0),
            (id(2), 2.0),
            (id(4), 1.0),
            (id(5), 1.0),
        ];
        assert!(equivalent(&a, &swapped));
        // The last group (score 1.0) is cut by the list's end: another
        // chunk of the same score may take the place.
        let cut = [
            (id(1), 3.0),
            (id(2), 2.0),
            (id(3), 2.0),
            (id(4), 1.0),
            (id(9), 1.0),
        ];
        assert!(equivalent(&a, &cut));
        // A different chunk inside a complete group is a real difference.
        let other = [
            (id(1), 3.0),
            (id(2), 2.0),
            (id(9), 2.0),
            (id(4), 1.0),
            (id(5), 1.0),
        ];
        assert!(!equivalent(&a, &other));
        // So is a different score at any rank.
        let rescored = [
            (id(1), 3.0),
            (id(2), 2.5),
            (id(3), 2.0),
            (id(4), 1.0),
            (id(5), 1.0),
        ];
        assert!(!equivalent(&a, &rescored));
    }
}
