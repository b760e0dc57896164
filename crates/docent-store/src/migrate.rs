//! Copying a collection from one store to another without embedding anything
//! again (`docent store migrate`). It works through the `VectorStore` trait,
//! so it copies between any two backends, and a fake store can interrupt it.
//!
//! Points are read page by page in id order and written as they are (dense
//! and BM25 vectors, payloads). After each page the cursor goes into a small
//! state file, so an interrupted run resumes where it stopped; a page written
//! twice is harmless because ids are deterministic and writes are upserts.

use docent_core::{ChunkId, Error, Result, StoredPoint, VectorStore};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::Path;

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
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::unavailable(
                    format!(
                        "{} is corrupt; delete it to start the migration over",
                        path.display()
                    ),
                    e,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::unavailable(
                format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    /// Writes atomically, so a kill mid-write leaves the previous state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::internal("cannot serialise the migration state", e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| Error::unavailable(format!("cannot write {}", path.display()), e))
    }
}

/// Copies every point from `source` into `target`, page by page, resuming
/// from and recording progress in `state_file`; `progress` hears the number
/// of points written so far, at the start and after each page. Returns
/// whether it resumed.
pub fn copy_points(
    source: &dyn VectorStore,
    target: &dyn VectorStore,
    state_file: &Path,
    batch: usize,
    progress: &dyn Fn(u64),
) -> Result<bool> {
    let (mut state, resumed) = match MigrationState::load(state_file)? {
        Some(state) => (state, true),
        None => {
            let already = target.count()?;
            if already > 0 {
                return Err(Error::Incompatible(format!(
                    "the target already holds {already} chunks and no interrupted migration is recorded ({} is missing); \
                     it may have been migrated already. Delete the target collection to copy again",
                    state_file.display()
                )));
            }
            (MigrationState::default(), false)
        }
    };
    progress(state.copied);
    while !state.points_done {
        let (page, next) = source
            .scroll_points(state.cursor, batch.max(1))
            .map_err(|e| {
                Error::unavailable(
                    "reading the source failed; run the same command again to resume",
                    e,
                )
            })?;
        target.upsert_points(&page).map_err(|e| {
            Error::unavailable(
                "writing the target failed; run the same command again to resume",
                e,
            )
        })?;
        target.flush()?;
        state.copied += page.len() as u64;
        state.cursor = next;
        state.points_done = next.is_none();
        state.save(state_file)?;
        progress(state.copied);
    }
    Ok(resumed)
}

/// Reads the store's points in id order, `batch` at a time, handing each to
/// `visit` until it breaks or the points run out.
pub fn scan_points(
    store: &dyn VectorStore,
    batch: usize,
    mut visit: impl FnMut(StoredPoint) -> ControlFlow<()>,
) -> Result<()> {
    let mut cursor = None;
    loop {
        let (page, next) = store.scroll_points(cursor, batch.max(1))?;
        for point in page {
            if visit(point).is_break() {
                return Ok(());
            }
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(()),
        }
    }
}

/// How the points of two stores compare (`docent store verify`).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct PointComparison {
    pub source_points: usize,
    pub target_points: usize,
    /// Points of the source the target lacks, and the other way round.
    pub missing_in_target: usize,
    pub missing_in_source: usize,
    /// Points both hold whose payload, dense vector (beyond 1e-6) or BM25
    /// vector differ.
    pub differing: usize,
    /// A few ids of differing or missing points, with what differs.
    pub examples: Vec<String>,
}

impl PointComparison {
    pub fn identical(&self) -> bool {
        self.source_points == self.target_points
            && self.missing_in_target == 0
            && self.missing_in_source == 0
            && self.differing == 0
    }
}

/// Reads every point of both stores and compares them by id: payloads
/// exactly, vectors within 1e-6 (a server may renormalise unit vectors in
/// the last bit). Holds the source's points in memory.
pub fn compare_points(
    source: &dyn VectorStore,
    target: &dyn VectorStore,
    batch: usize,
) -> Result<PointComparison> {
    let mut held = std::collections::HashMap::new();
    scan_points(source, batch, |point| {
        held.insert(point.chunk.id, point);
        ControlFlow::Continue(())
    })?;
    let mut out = PointComparison {
        source_points: held.len(),
        ..Default::default()
    };
    let note = |out: &mut PointComparison, text: String| {
        if out.examples.len() < 10 {
            out.examples.push(text);
        }
    };
    scan_points(target, batch, |point| {
        out.target_points += 1;
        let id = point.chunk.id;
        match held.remove(&id) {
            None => {
                out.missing_in_source += 1;
                note(&mut out, format!("{} is only in the target", id.0));
            }
            Some(theirs) => {
                if let Some(what) = point_difference(&theirs, &point) {
                    out.differing += 1;
                    note(&mut out, format!("{}: {what}", id.0));
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    out.missing_in_target = held.len();
    for id in held.keys().take(10usize.saturating_sub(out.examples.len())) {
        note(&mut out, format!("{} is only in the source", id.0));
    }
    Ok(out)
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6)
}

/// What differs between two copies of a point, if anything.
fn point_difference(a: &StoredPoint, b: &StoredPoint) -> Option<&'static str> {
    if a.chunk != b.chunk {
        Some("the payload differs")
    } else if !close(&a.vector, &b.vector) {
        Some("the dense vector differs")
    } else if a.sparse.indices != b.sparse.indices || !close(&a.sparse.values, &b.sparse.values) {
        Some("the BM25 vector differs")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EdgeStore;
    use docent_core::{
        Chunk, CollectionSpec, DocumentId, EmbeddedChunk, Fusion, ScoredChunk, SearchMode,
        SearchRequest, StoredPoint,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn spec() -> CollectionSpec {
        crate::test_spec(2)
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
        budget: AtomicUsize,
    }

    impl VectorStore for Flaky<'_> {
        fn spec(&self) -> &CollectionSpec {
            self.inner.spec()
        }
        fn upsert(&self, c: &[EmbeddedChunk]) -> Result<()> {
            self.inner.upsert(c)
        }
        fn delete_chunks(&self, ids: &[ChunkId]) -> Result<()> {
            self.inner.delete_chunks(ids)
        }
        fn delete_document(&self, d: &DocumentId) -> Result<()> {
            self.inner.delete_document(d)
        }
        fn chunk_ids(&self, d: &DocumentId) -> Result<Vec<ChunkId>> {
            self.inner.chunk_ids(d)
        }
        fn chunks_by_ordinal(&self, d: &DocumentId, o: &[usize]) -> Result<Vec<Chunk>> {
            self.inner.chunks_by_ordinal(d, o)
        }
        fn search(&self, r: &SearchRequest) -> Result<Vec<ScoredChunk>> {
            self.inner.search(r)
        }
        fn count(&self) -> Result<usize> {
            self.inner.count()
        }
        fn flush(&self) -> Result<()> {
            self.inner.flush()
        }
        fn scroll_points(
            &self,
            from: Option<ChunkId>,
            limit: usize,
        ) -> Result<(Vec<StoredPoint>, Option<ChunkId>)> {
            self.inner.scroll_points(from, limit)
        }
        fn upsert_points(&self, p: &[StoredPoint]) -> Result<()> {
            if self.budget.load(Ordering::SeqCst) == 0 {
                return Err(Error::Unavailable {
                    message: "simulated outage".into(),
                    source: None,
                });
            }
            self.budget.fetch_sub(1, Ordering::SeqCst);
            self.inner.upsert_points(p)
        }
    }

    /// The whole chain of an error, as the binary prints it.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }

    /// A source holding `n` chunks and an empty target, in a scratch folder.
    fn stores(n: usize) -> (tempfile::TempDir, EdgeStore, EdgeStore) {
        let dir = tempfile::tempdir().unwrap();
        let source = EdgeStore::open(&dir.path().join("a"), spec()).unwrap();
        source.upsert(&chunks(n)).unwrap();
        let target = EdgeStore::open(&dir.path().join("b"), spec()).unwrap();
        (dir, source, target)
    }

    #[test]
    fn an_interrupted_copy_resumes_from_its_state_file_and_copies_everything() {
        let (dir, source, target) = stores(25);
        let state = dir.path().join("state.json");
        let flaky = Flaky {
            inner: &target,
            budget: 2.into(),
        };
        let seen = AtomicUsize::new(0);
        let progress = |copied: u64| seen.store(copied as usize, Ordering::SeqCst);
        let err = copy_points(&source, &flaky, &state, 4, &progress).unwrap_err();
        let text = chain(&err);
        assert!(text.contains("run the same command again"), "{text}");
        assert!(text.contains("simulated outage"), "{text}");
        assert_eq!(seen.load(Ordering::SeqCst), 8);
        let saved = MigrationState::load(&state).unwrap().unwrap();
        assert_eq!(saved.copied, 8);
        assert!(!saved.points_done && saved.cursor.is_some());
        assert_eq!(target.count().unwrap(), 8);

        let resumed = copy_points(&source, &target, &state, 4, &progress).unwrap();
        assert!(resumed);
        assert_eq!(target.count().unwrap(), 25);
        assert_eq!(seen.load(Ordering::SeqCst), 25);
        assert!(MigrationState::load(&state).unwrap().unwrap().points_done);
        // Copied points score like the originals: nothing was re-embedded.
        let request = SearchRequest {
            vector: vec![1.0, 3.0],
            text: "number 7 pelicans".into(),
            top_k: 3,
            candidates: 10,
            // Score-based fusion: rank fusion can tie two chunks exactly.
            fusion: Fusion::Dbsf,
            ..Default::default()
        };
        for mode in [SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid] {
            let request = SearchRequest {
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
    fn comparing_finds_missing_extra_and_changed_points() {
        let (dir, source, target) = stores(12);
        copy_points(&source, &target, &dir.path().join("s.json"), 5, &|_| {}).unwrap();
        let same = compare_points(&source, &target, 5).unwrap();
        assert!(same.identical(), "{same:?}");
        assert_eq!((same.source_points, same.target_points), (12, 12));

        let all = chunks(12);
        target.delete_chunks(&[all[0].chunk.id]).unwrap();
        let mut changed = all[1].clone();
        changed.chunk.text.push_str(" edited");
        let mut moved = all[2].clone();
        moved.vector = vec![0.5, 2.0];
        let mut extra = chunks(13).pop().unwrap();
        extra.chunk.id = ChunkId::derive(&DocumentId::new("new.md"), "h", 0);
        target.upsert(&[changed, moved, extra]).unwrap();
        let diff = compare_points(&source, &target, 5).unwrap();
        assert!(!diff.identical());
        assert_eq!(diff.missing_in_target, 1, "{diff:?}");
        assert_eq!(diff.missing_in_source, 1, "{diff:?}");
        assert_eq!(diff.differing, 2, "{diff:?}");
        let text = diff.examples.join("\n");
        assert!(text.contains("payload differs"), "{text}");
        assert!(text.contains("dense vector differs"), "{text}");
    }

    #[test]
    fn a_non_empty_target_without_state_is_refused() {
        let (dir, source, target) = stores(3);
        target.upsert(&chunks(1)).unwrap();
        let err = copy_points(
            &source,
            &target,
            &dir.path().join("state.json"),
            10,
            &|_| {},
        )
        .unwrap_err();
        assert!(format!("{err}").contains("already holds 1 chunks"), "{err}");
    }
}
