//! `docent store migrate`: copies a collection between backends (embedded
//! and a Qdrant server) without embedding anything again.
//!
//! Points are read page by page in id order and written as they are (dense
//! and BM25 vectors, payloads). After each page the cursor goes into a small
//! state file beside the collection, so an interrupted run resumes where it
//! stopped; a page written twice is harmless because ids are deterministic
//! and writes are upserts. The catalogue is copied record by record at the
//! end, then the counts are compared.

use crate::app::Setup;
use crate::config::StoreKind;
use anyhow::{Context, Result, bail};
use docent_core::{ChunkId, VectorStore};
use docent_ingest::Catalogue;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Progress of one migration, rewritten after every page.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MigrationState {
    /// Where the next page starts; `None` before the first page.
    pub cursor: Option<ChunkId>,
    /// Points written so far (pages written twice after a resume count twice).
    pub copied: u64,
    /// Set once every page is written.
    pub points_done: bool,
}

impl MigrationState {
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is corrupt; delete it to start the migration over",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes atomically, so a kill mid-write leaves the previous state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

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

/// Copies every point from `source` into `target`, page by page, resuming
/// from and recording progress in `state_file`. Returns whether it resumed.
pub fn copy_points(
    source: &dyn VectorStore,
    target: &dyn VectorStore,
    state_file: &Path,
    batch: usize,
    bar: &ProgressBar,
) -> Result<bool> {
    let (mut state, resumed) = match MigrationState::load(state_file)? {
        Some(state) => (state, true),
        None => {
            let already = target.count()?;
            if already > 0 {
                bail!(
                    "the target already holds {already} chunks and no interrupted migration is recorded ({} is missing); \
                     it may have been migrated already. Delete the target collection to copy again",
                    state_file.display()
                );
            }
            (MigrationState::default(), false)
        }
    };
    bar.set_position(state.copied);
    while !state.points_done {
        let (page, next) = source
            .scroll_points(state.cursor, batch.max(1))
            .context("reading the source failed; run the same command again to resume")?;
        target
            .upsert_points(&page)
            .context("writing the target failed; run the same command again to resume")?;
        target.flush()?;
        state.copied += page.len() as u64;
        state.cursor = next;
        state.points_done = next.is_none();
        state.save(state_file)?;
        bar.set_position(state.copied);
    }
    Ok(resumed)
}

/// Makes the target catalogue hold exactly the source's records.
pub fn copy_catalogue(source: &Catalogue, target: &Catalogue) -> Result<usize> {
    let records = source.list()?;
    let keep: BTreeSet<_> = records.iter().map(|r| r.id.clone()).collect();
    for record in &records {
        target.put(record)?;
    }
    for stale in target.list()? {
        if !keep.contains(&stale.id) {
            target.remove(&stale.id)?;
        }
    }
    Ok(records.len())
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
    let resumed = copy_points(source.as_ref(), target.as_ref(), &state_file, batch, &bar)?;
    bar.finish_and_clear();

    let source_catalogue = Catalogue::open(&setup.catalogue_path(from))?;
    let target_catalogue = Catalogue::open(&setup.catalogue_path(to))?;
    let documents = copy_catalogue(&source_catalogue, &target_catalogue)?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use docent_core::{Chunk, CollectionSpec, DocumentId, EmbeddedChunk};
    use docent_ingest::{DocumentRecord, DocumentStatus};
    use docent_store::EdgeStore;

    fn spec() -> CollectionSpec {
        CollectionSpec {
            embedding_model: "m".into(),
            dimension: 2,
            chunk_max_tokens: 10,
            chunk_overlap_tokens: 0,
            schema_version: CollectionSpec::SCHEMA_VERSION,
        }
    }

    fn chunks(n: usize) -> Vec<EmbeddedChunk> {
        (0..n)
            .map(|i| {
                let doc = DocumentId::new(format!("d{}.md", i % 3));
                EmbeddedChunk {
                    chunk: Chunk {
                        id: ChunkId::derive(&doc, "h", i),
                        document_id: doc.clone(),
                        source: doc.0.clone(),
                        ordinal: i,
                        content_hash: "h".into(),
                        // Distinct term counts and vectors, so no two chunks tie in
                        // any mode and rankings compare exactly.
                        text: format!("chunk number {i} about {}", "pelicans ".repeat(1 + i)),
                        ..Default::default()
                    },
                    vector: vec![1.0, i as f32],
                }
            })
            .collect()
    }

    /// A store that fails every write after `budget` pages, like a killed run.
    struct Flaky<'a> {
        inner: &'a dyn VectorStore,
        budget: std::sync::atomic::AtomicUsize,
    }

    impl VectorStore for Flaky<'_> {
        fn spec(&self) -> &CollectionSpec {
            self.inner.spec()
        }
        fn upsert(&self, c: &[EmbeddedChunk]) -> docent_core::Result<()> {
            self.inner.upsert(c)
        }
        fn delete_chunks(&self, ids: &[ChunkId]) -> docent_core::Result<()> {
            self.inner.delete_chunks(ids)
        }
        fn delete_document(&self, d: &DocumentId) -> docent_core::Result<()> {
            self.inner.delete_document(d)
        }
        fn chunk_ids(&self, d: &DocumentId) -> docent_core::Result<Vec<ChunkId>> {
            self.inner.chunk_ids(d)
        }
        fn chunks_by_ordinal(
            &self,
            d: &DocumentId,
            o: &[usize],
        ) -> docent_core::Result<Vec<docent_core::Chunk>> {
            self.inner.chunks_by_ordinal(d, o)
        }
        fn search(
            &self,
            r: &docent_core::SearchRequest,
        ) -> docent_core::Result<Vec<docent_core::ScoredChunk>> {
            self.inner.search(r)
        }
        fn count(&self) -> docent_core::Result<usize> {
            self.inner.count()
        }
        fn flush(&self) -> docent_core::Result<()> {
            self.inner.flush()
        }
        fn scroll_points(
            &self,
            from: Option<ChunkId>,
            limit: usize,
        ) -> docent_core::Result<(Vec<docent_core::StoredPoint>, Option<ChunkId>)> {
            self.inner.scroll_points(from, limit)
        }
        fn upsert_points(&self, p: &[docent_core::StoredPoint]) -> docent_core::Result<()> {
            use std::sync::atomic::Ordering;
            if self.budget.load(Ordering::SeqCst) == 0 {
                return Err(docent_core::Error::Unavailable {
                    message: "simulated outage".into(),
                    source: None,
                });
            }
            self.budget.fetch_sub(1, Ordering::SeqCst);
            self.inner.upsert_points(p)
        }
    }

    #[test]
    fn an_interrupted_copy_resumes_from_its_state_file_and_copies_everything() {
        let dir = tempfile::tempdir().unwrap();
        let source = EdgeStore::open(&dir.path().join("a"), spec()).unwrap();
        source.upsert(&chunks(25)).unwrap();
        let target = EdgeStore::open(&dir.path().join("b"), spec()).unwrap();
        let state = dir.path().join("state.json");
        let flaky = Flaky {
            inner: &target,
            budget: 2.into(),
        };
        let bar = ProgressBar::hidden();
        let err = copy_points(&source, &flaky, &state, 4, &bar).unwrap_err();
        assert!(
            format!("{err:#}").contains("run the same command again"),
            "{err:#}"
        );
        let saved = MigrationState::load(&state).unwrap().unwrap();
        assert_eq!(saved.copied, 8);
        assert!(!saved.points_done && saved.cursor.is_some());
        assert_eq!(target.count().unwrap(), 8);

        let resumed = copy_points(&source, &target, &state, 4, &bar).unwrap();
        assert!(resumed);
        assert_eq!(target.count().unwrap(), 25);
        assert!(MigrationState::load(&state).unwrap().unwrap().points_done);
        // Copied points score like the originals: nothing was re-embedded.
        let request = docent_core::SearchRequest {
            vector: vec![1.0, 3.0],
            text: "number 7 pelicans".into(),
            top_k: 3,
            candidates: 10,
            // Score-based fusion: rank fusion can tie two chunks exactly.
            fusion: docent_core::Fusion::Dbsf,
            ..Default::default()
        };
        for mode in [
            docent_core::SearchMode::Dense,
            docent_core::SearchMode::Keyword,
            docent_core::SearchMode::Hybrid,
        ] {
            let request = docent_core::SearchRequest {
                mode,
                ..request.clone()
            };
            // Same chunks in the same order with the same scores, up to the
            // last bits of f32 summation (BM25 weights summed in another
            // order differed by 2e-7 in one run).
            let (a, b) = (
                source.search(&request).unwrap(),
                target.search(&request).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{mode:?}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.chunk, y.chunk, "{mode:?}");
                assert!(
                    (x.score - y.score).abs() <= 1e-5 * x.score.abs().max(1.0),
                    "{mode:?}: {x:?} vs {y:?}"
                );
                assert!(
                    (x.similarity - y.similarity).abs() <= 1e-5,
                    "{mode:?}: {x:?} vs {y:?}"
                );
            }
        }
    }

    #[test]
    fn a_non_empty_target_without_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = EdgeStore::open(&dir.path().join("a"), spec()).unwrap();
        source.upsert(&chunks(3)).unwrap();
        let target = EdgeStore::open(&dir.path().join("b"), spec()).unwrap();
        target.upsert(&chunks(1)).unwrap();
        let err = copy_points(
            &source,
            &target,
            &dir.path().join("state.json"),
            10,
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(format!("{err}").contains("already holds 1 chunks"), "{err}");
    }

    #[test]
    fn the_catalogue_copy_mirrors_the_source_records() {
        let dir = tempfile::tempdir().unwrap();
        let source = Catalogue::open(&dir.path().join("a.redb")).unwrap();
        let target = Catalogue::open(&dir.path().join("b.redb")).unwrap();
        let record = |name: &str| DocumentRecord {
            id: DocumentId::new(name),
            source: name.into(),
            content_hash: "h".into(),
            size: 1,
            modified: None,
            title: None,
            status: DocumentStatus::Ready,
            last_error: None,
            chunk_ids: vec![ChunkId::derive(&DocumentId::new(name), "h", 0)],
            stale_chunk_ids: vec![],
            updated_at: 0,
            root: Some("docs".into()),
        };
        source.put(&record("a.md")).unwrap();
        source.put(&record("b.md")).unwrap();
        target.put(&record("stale.md")).unwrap();
        assert_eq!(copy_catalogue(&source, &target).unwrap(), 2);
        let mut names: Vec<String> = target
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.source)
            .collect();
        names.sort();
        assert_eq!(names, vec!["a.md", "b.md"]);
        assert_eq!(
            target.get(&DocumentId::new("a.md")).unwrap(),
            Some(record("a.md"))
        );
    }
}
