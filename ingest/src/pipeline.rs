//! The pipeline: files → extract (a small thread pool) → chunk → embed
//! (one stage, batched by tokens across files) → upsert, with the catalogue
//! written ahead of the store so a run killed anywhere is redone cleanly.

use crate::catalogue::{Catalogue, DocumentRecord, DocumentStatus, now_secs};
use crate::extract::{ExtractOptions, Extractors};
use crossbeam_channel::{Receiver, unbounded};
use docent_core::{
    Chunk, ChunkId, Chunker, DocumentId, EmbeddedChunk, Embedder, Error, ExtractedDocument, Result,
    VectorStore, content_hash,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Limits and choices of an ingestion run.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Files larger than this are reported as failed and not read.
    pub max_file_bytes: u64,
    /// Embedder tokens per embedding call; a batch takes chunks across files.
    pub batch_tokens: usize,
    /// Whether to descend into hidden files and folders (names starting with `.`).
    pub include_hidden: bool,
    /// Globs (on the root-relative path) a file must match; empty: every file.
    pub include: Vec<String>,
    /// Globs (on the root-relative path) of files to leave out.
    pub exclude: Vec<String>,
    /// Threads that read and extract files; 0: one per core, at most 4.
    pub extract_threads: usize,
    /// Bounds and isolation of the extractors.
    pub extract: ExtractOptions,
    /// After a folder run, remove documents of that folder whose files are gone.
    pub prune: bool,
    /// Whether a run that changed the collection returns before the search
    /// index is rebuilt (a server answering uploads) or waits for it (the
    /// CLI and evaluation, which search right after).
    pub index_in_background: bool,
    /// For crash tests: abort the process after this many stored batches.
    #[doc(hidden)]
    pub abort_after_batches: Option<usize>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_file_bytes: 50 * 1024 * 1024,
            batch_tokens: 65536,
            include_hidden: false,
            include: Vec::new(),
            exclude: Vec::new(),
            extract_threads: 0,
            extract: ExtractOptions::default(),
            prune: false,
            index_in_background: false,
            abort_after_batches: None,
        }
    }
}

impl IngestOptions {
    /// Checks the globs; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        FileFilter::new(self).map(|_| ())
    }
}

/// A file that could not be ingested, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileFailure {
    pub path: String,
    pub reason: String,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    pub files_seen: usize,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub failed: Vec<FileFailure>,
    /// Chunks embedded in this run (0 when nothing changed).
    pub chunks_embedded: usize,
}

impl IngestSummary {
    /// Whether the run added, updated or removed any document.
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed > 0
    }

    /// Adds another run's counts to this one.
    pub fn merge(&mut self, other: IngestSummary) {
        self.files_seen += other.files_seen;
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.removed += other.removed;
        self.chunks_embedded += other.chunks_embedded;
        self.failed.extend(other.failed);
    }
}

/// Progress notifications for a front end (the CLI draws bars from them).
/// They are sent from the thread that called the pipeline.
pub enum Progress<'a> {
    /// A run over this file or folder starts.
    Root(&'a Path),
    /// The run found this many files to consider.
    Found(usize),
    /// One file is finished (whatever the outcome).
    FileDone(&'a str),
    /// This many chunks were embedded and stored.
    Chunks(usize),
    /// The documents are stored; the search index is being rebuilt (a
    /// no-op for small collections, minutes for 100k chunks).
    Indexing,
}

/// What happened to one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    Unchanged,
}

/// Metadata an API caller gives with a document, beside what the extractor finds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentMeta {
    /// Seconds since the Unix epoch (the document's `date` metadata wins).
    pub modified: Option<u64>,
    /// Tags added to the document's own.
    pub tags: Vec<String>,
    /// Metadata that overrides the document's own keys.
    pub metadata: BTreeMap<String, String>,
}

/// A document given as bytes rather than found in a folder: an API upload,
/// or a document of an evaluation set.
#[derive(Clone, Debug)]
pub struct DocumentInput {
    pub id: DocumentId,
    /// The name shown in citations.
    pub source: String,
    /// Its extension picks the extractor.
    pub path_hint: PathBuf,
    pub bytes: Vec<u8>,
    pub meta: DocumentMeta,
}

/// What happened to one [`DocumentInput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentReport {
    pub id: DocumentId,
    pub source: String,
    /// The outcome and the chunks embedded, or why the document was refused
    /// (recorded in the catalogue as its last error).
    pub result: std::result::Result<(Outcome, usize), String>,
}

/// Runs files through extract → chunk → embed → upsert and keeps the
/// catalogue. Every entry point finishes its run itself: failures are
/// recorded, the store is flushed, and after a change the search index is
/// rebuilt by the pipeline's one index builder.
pub struct Pipeline {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunker: Arc<dyn Chunker>,
    catalogue: Arc<Catalogue>,
    extractors: Extractors,
    filter: std::result::Result<FileFilter, String>,
    index: Arc<IndexBuilder>,
    options: IngestOptions,
}

/// Rebuilds the store's search index (qdrant-edge indexes only when asked),
/// one build at a time.
struct IndexBuilder {
    store: Arc<dyn VectorStore>,
    /// Held while a build runs.
    building: std::sync::Mutex<()>,
    /// Set while a background build is queued or running, so changes during
    /// it don't queue builds behind each other: their points go to the next.
    background: AtomicBool,
}

impl IndexBuilder {
    fn build(&self) -> Result<()> {
        let _one_at_a_time = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        self.store.optimize().map_err(|e| Error::Internal {
            message: "building the search index failed; the chunks are stored and searchable \
                      without it, and the next ingest run that changes the collection tries again"
                .into(),
            source: Some(Box::new(e)),
        })?;
        tracing::debug!(secs = started.elapsed().as_secs_f64(), "search index built");
        Ok(())
    }

    fn build_in_background(self: &Arc<Self>) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let builder = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = builder.build() {
                tracing::warn!(error = %e, "search index update failed");
            }
            builder.background.store(false, Ordering::Release);
        });
    }
}

/// A file to ingest and the document id it gets.
struct FileJob {
    path: PathBuf,
    id: DocumentId,
}

/// What an extraction thread hands the embedding stage.
enum Prepared {
    Unchanged(DocumentId),
    Failed(DocumentId, String),
    Ready(Box<ReadyDocument>),
    Fatal(Error),
}

/// A document cut into chunks, waiting to be embedded and stored.
struct ReadyDocument {
    record: DocumentRecord,
    outcome: Outcome,
    chunks: Vec<Chunk>,
    tokens: Vec<usize>,
}

/// The nice value of extraction threads (and of the PDF workers they start,
/// which inherit it). The embedder's threads meet at a barrier after every
/// operation, so a core is idle for about a third of a batch; extraction at
/// the lowest priority runs in those gaps instead of delaying the threads
/// the barrier waits for.
const EXTRACT_NICE: i32 = 19;

/// Lowers the calling thread's scheduling priority to [`EXTRACT_NICE`]
/// (Linux gives each thread its own nice value). Best effort: a failure
/// only costs speed.
fn yield_to_embedding() {
    if let Err(e) = rustix::process::setpriority_process(None, EXTRACT_NICE) {
        tracing::debug!(error = %e, "cannot lower the extraction thread's priority");
    }
}

/// Batches of tokens the extractors may prepare ahead of the embedder,
/// counting the batch it is embedding: with 3, the next batch is extracted
/// and chunked while the current one is embedded.
const READ_AHEAD_BATCHES: usize = 3;

/// Bounds the chunk tokens that are extracted but not yet stored, so the
/// extractors work ahead of the embedder (a document-count bound stalled
/// them after a few small files) without holding a whole corpus in memory.
struct ReadAhead {
    /// Tokens admitted and not yet released; whether the run stopped.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
    batch: usize,
}

impl ReadAhead {
    fn new(batch: usize) -> ReadAhead {
        ReadAhead {
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
            batch,
        }
    }

    /// Waits until a document of `tokens` may join the queue; false once
    /// the run stopped. Below one batch the embedder may be waiting for this
    /// very document, so it always goes through, however large.
    fn admit(&self, tokens: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.1
            && state.0 >= self.batch
            && state.0 + tokens > READ_AHEAD_BATCHES * self.batch
        {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.0 += tokens;
        !state.1
    }

    /// `tokens` were stored.
    fn release(&self, tokens: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = state.0.saturating_sub(tokens);
        self.changed.notify_all();
    }

    /// Wakes and turns away every waiting extractor.
    fn stop(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_all();
    }
}

/// A document in the embedding stage: how many chunks are stored, and
/// whether its pending record is in the catalogue yet.
struct InFlight {
    document: ReadyDocument,
    sent: usize,
    announced: bool,
}

impl Pipeline {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        chunker: Arc<dyn Chunker>,
        catalogue: Arc<Catalogue>,
        options: IngestOptions,
    ) -> Self {
        Pipeline {
            embedder,
            chunker,
            catalogue,
            extractors: Extractors::new(&options.extract),
            filter: FileFilter::new(&options).map_err(|e| e.to_string()),
            index: Arc::new(IndexBuilder {
                store: store.clone(),
                building: std::sync::Mutex::new(()),
                background: AtomicBool::new(false),
            }),
            store,
            options,
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn options(&self) -> &IngestOptions {
        &self.options
    }

    fn file_filter(&self) -> Result<&FileFilter> {
        self.filter
            .as_ref()
            .map_err(|e| Error::InvalidInput(e.clone()))
    }

    /// Chunks in the store.
    pub fn chunk_count(&self) -> Result<usize> {
        self.store.count()
    }

    /// How the store's service is doing (nodes and replicas of a cluster).
    pub fn store_health(&self) -> docent_core::StoreHealth {
        self.store.health()
    }

    /// Rebuilds the search index now (blocking), after another build that
    /// is running.
    pub fn build_index(&self) -> Result<()> {
        self.index.build()
    }

    /// Ingests each file or folder in turn, then rebuilds the search index
    /// once if anything changed. Bad files are reported in the summary and
    /// do not stop the run; store and catalogue failures do.
    pub fn ingest_paths(
        &self,
        roots: &[PathBuf],
        progress: &dyn Fn(Progress),
    ) -> Result<IngestSummary> {
        let mut total = IngestSummary::default();
        for root in roots {
            progress(Progress::Root(root));
            total.merge(self.ingest_root(root, progress)?);
        }
        self.finish(total.changed(), progress)?;
        Ok(total)
    }

    /// [`Pipeline::ingest_paths`] for one file or folder.
    pub fn ingest_path(&self, root: &Path, progress: &dyn Fn(Progress)) -> Result<IngestSummary> {
        self.ingest_paths(&[root.to_path_buf()], progress)
    }

    /// Ends a run: the store is flushed, and if the collection changed the
    /// search index is rebuilt (in the background when so configured).
    fn finish(&self, changed: bool, progress: &dyn Fn(Progress)) -> Result<()> {
        self.store.flush()?;
        if !changed {
            return Ok(());
        }
        if self.options.index_in_background {
            self.index.build_in_background();
            return Ok(());
        }
        progress(Progress::Indexing);
        self.index.build()
    }

    /// Every file under `root` (or `root` itself if it is a file). With
    /// `prune`, documents ingested from `root` whose files are gone are removed.
    fn ingest_root(&self, root: &Path, progress: &dyn Fn(Progress)) -> Result<IngestSummary> {
        let filter = self.file_filter()?;
        let (files, root_key) = collect_files(root, self.options.include_hidden, filter)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", root.display())))?;
        progress(Progress::Found(files.len()));
        let seen: HashSet<DocumentId> = files.iter().map(|f| f.id.clone()).collect();
        let mut summary = self.run(files, root_key.as_deref(), progress)?;
        if self.options.prune
            && let Some(root_key) = &root_key
        {
            for record in self.catalogue.list().map_err(fatal_error)? {
                if record.root.as_deref() == Some(root_key.as_str()) && !seen.contains(&record.id) {
                    self.remove_document(&record.id)?;
                    summary.removed += 1;
                }
            }
        }
        Ok(summary)
    }

    /// Ingests the given paths under `root` (as a watcher reports them):
    /// existing files are ingested, and documents of paths that are gone
    /// (files, or every file of a removed folder) are removed. Finished like
    /// [`Pipeline::ingest_paths`].
    pub fn ingest_changes(
        &self,
        root: &Path,
        changed: &[PathBuf],
        progress: &dyn Fn(Progress),
    ) -> Result<IngestSummary> {
        let filter = self.file_filter()?;
        let root_key = std::fs::canonicalize(root)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", root.display())))?;
        let mut files = Vec::new();
        let mut gone = Vec::new();
        let mut seen = HashSet::new();
        for path in changed {
            let Some(id) = relative_id(&root_key, path) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                continue;
            }
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => {
                    if filter.wants(&id, self.options.include_hidden) {
                        files.push(FileJob {
                            path: path.clone(),
                            id,
                        });
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    let (inside, _) =
                        collect_files(path, self.options.include_hidden, &FileFilter::all())
                            .map_err(|e| {
                                Error::InvalidInput(format!("cannot read {}: {e}", path.display()))
                            })?;
                    for f in inside {
                        let id = DocumentId::new(format!("{}/{}", id.0, f.id.0));
                        if filter.wants(&id, self.options.include_hidden) && seen.insert(id.clone())
                        {
                            files.push(FileJob { path: f.path, id });
                        }
                    }
                }
                _ => gone.push(id),
            }
        }
        progress(Progress::Found(files.len()));
        let key = root_key.to_string_lossy().to_string();
        let mut summary = self.run(files, Some(&key), progress)?;
        if !gone.is_empty() {
            for record in self.catalogue.list().map_err(fatal_error)? {
                let under = gone
                    .iter()
                    .any(|g| record.id == *g || record.id.0.starts_with(&format!("{}/", g.0)));
                if under && record.root.as_deref() == Some(key.as_str()) {
                    self.remove_document(&record.id)?;
                    summary.removed += 1;
                }
            }
        }
        self.finish(summary.changed(), progress)?;
        Ok(summary)
    }

    /// Extracts `files` on a pool of threads and feeds the embedding stage.
    fn run(
        &self,
        files: Vec<FileJob>,
        root: Option<&str>,
        progress: &dyn Fn(Progress),
    ) -> Result<IngestSummary> {
        let mut summary = IngestSummary {
            files_seen: files.len(),
            ..Default::default()
        };
        if files.is_empty() {
            return Ok(summary);
        }
        let threads = match self.options.extract_threads {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(4),
            n => n,
        }
        .min(files.len());
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let ahead = ReadAhead::new(self.options.batch_tokens.max(1));
        let (tx, rx) = unbounded::<Prepared>();
        let result = std::thread::scope(|scope| {
            for _ in 0..threads {
                let tx = tx.clone();
                let (files, next, stop, ahead) = (&files, &next, &stop, &ahead);
                scope.spawn(move || {
                    yield_to_embedding();
                    while !stop.load(Ordering::Relaxed) {
                        let Some(job) = files.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let prepared = self.prepare_file(job, root);
                        let tokens = match &prepared {
                            Prepared::Ready(doc) => doc.tokens.iter().sum(),
                            _ => 0,
                        };
                        if !ahead.admit(tokens) || tx.send(prepared).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = self.embed_stage(&rx, &ahead, root, &mut summary, progress);
            // On a fatal error the extractors stop at their next file.
            stop.store(true, Ordering::Relaxed);
            ahead.stop();
            drop(rx);
            result
        });
        // The PDF workers serve a run's files, then end with it.
        self.extractors.release();
        result?;
        Ok(summary)
    }

    /// Reads, extracts and chunks one file (on an extraction thread).
    fn prepare_file(&self, job: &FileJob, root: Option<&str>) -> Prepared {
        let meta = match std::fs::metadata(&job.path) {
            Ok(m) => m,
            Err(e) => return Prepared::Failed(job.id.clone(), format!("cannot read: {e}")),
        };
        if meta.len() > self.options.max_file_bytes {
            return Prepared::Failed(
                job.id.clone(),
                format!(
                    "file is {} bytes, over the limit of {} (ingest.max_file_bytes)",
                    meta.len(),
                    self.options.max_file_bytes
                ),
            );
        }
        let bytes = match std::fs::read(&job.path) {
            Ok(b) => b,
            Err(e) => return Prepared::Failed(job.id.clone(), format!("cannot read: {e}")),
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let meta = DocumentMeta {
            modified,
            ..Default::default()
        };
        let mut prepared = self.prepare(&job.id, &job.id.0, &job.path, &bytes, &meta);
        if let Prepared::Ready(doc) = &mut prepared {
            doc.record.root = root.map(str::to_string);
        }
        prepared
    }

    /// Decides whether a document changed and, if so, extracts and chunks it.
    fn prepare(
        &self,
        id: &DocumentId,
        source: &str,
        path_hint: &Path,
        bytes: &[u8],
        meta: &DocumentMeta,
    ) -> Prepared {
        let mut hash = content_hash(bytes);
        if meta.tags.len() + meta.metadata.len() > 0 {
            // Caller metadata is part of what is stored, so part of the identity.
            let extra = serde_json::json!([meta.tags, meta.metadata]).to_string();
            hash = content_hash(format!("{hash}{extra}").as_bytes());
        }
        let previous = match self.catalogue.get(id) {
            Ok(p) => p,
            Err(e) => return Prepared::Fatal(fatal_error(e)),
        };
        if let Some(prev) = &previous
            && prev.status == DocumentStatus::Ready
            && prev.content_hash == hash
        {
            return Prepared::Unchanged(id.clone());
        }
        let document = match self.extractors.extract(path_hint, bytes) {
            Ok(d) => d,
            Err(e) => return Prepared::Failed(id.clone(), e.to_string()),
        };
        let chunks = self.make_chunks(id, source, &hash, &document, meta);
        if chunks.is_empty() {
            return Prepared::Failed(id.clone(), "no extractable text".into());
        }
        let tokens = chunks
            .iter()
            .map(|c| self.chunker.count_tokens(&embedding_text(c)))
            .collect();
        let new_ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        // Everything an earlier, possibly interrupted, version may have left behind.
        let keep: HashSet<ChunkId> = new_ids.iter().copied().collect();
        let mut stale: Vec<ChunkId> = previous
            .iter()
            .flat_map(|p| p.chunk_ids.iter().chain(&p.stale_chunk_ids).copied())
            .filter(|c| !keep.contains(c))
            .collect();
        stale.sort();
        stale.dedup();
        let outcome = match &previous {
            Some(p) if p.status != DocumentStatus::Failed || !p.chunk_ids.is_empty() => {
                Outcome::Updated
            }
            _ => Outcome::Added,
        };
        Prepared::Ready(Box::new(ReadyDocument {
            record: DocumentRecord {
                id: id.clone(),
                source: source.to_string(),
                content_hash: hash,
                size: bytes.len() as u64,
                modified: meta.modified,
                title: document.title.clone(),
                status: DocumentStatus::Pending,
                last_error: None,
                chunk_ids: new_ids,
                stale_chunk_ids: stale,
                updated_at: now_secs(),
                root: previous.and_then(|p| p.root),
            },
            outcome,
            chunks,
            tokens,
        }))
    }

    /// The single embedding stage: gathers chunks across documents into
    /// batches of about `batch_tokens`, writes pending records ahead of each
    /// upsert, and marks documents ready (in order) once all their chunks
    /// are stored and their stale chunks deleted.
    fn embed_stage(
        &self,
        rx: &Receiver<Prepared>,
        ahead: &ReadAhead,
        root: Option<&str>,
        summary: &mut IngestSummary,
        progress: &dyn Fn(Progress),
    ) -> Result<()> {
        let budget = self.options.batch_tokens.max(1);
        let mut queue: VecDeque<InFlight> = VecDeque::new();
        let mut waiting_tokens = 0usize;
        let mut open = true;
        let mut batches = 0usize;
        loop {
            // Fill the queue until a batch's worth of tokens waits, or input ends.
            while open && waiting_tokens < budget {
                match rx.recv() {
                    Ok(Prepared::Ready(doc)) => {
                        waiting_tokens += doc.tokens.iter().sum::<usize>();
                        queue.push_back(InFlight {
                            document: *doc,
                            sent: 0,
                            announced: false,
                        });
                    }
                    Ok(Prepared::Unchanged(id)) => {
                        summary.unchanged += 1;
                        progress(Progress::FileDone(&id.0));
                    }
                    Ok(Prepared::Failed(id, reason)) => {
                        self.record_failure(&id, &reason, root)?;
                        progress(Progress::FileDone(&id.0));
                        summary.failed.push(FileFailure { path: id.0, reason });
                    }
                    Ok(Prepared::Fatal(e)) => return Err(e),
                    Err(_) => open = false,
                }
            }
            if queue.is_empty() {
                if open {
                    continue;
                }
                return Ok(());
            }
            let stored = self.store_batch(&mut queue, budget)?;
            waiting_tokens = waiting_tokens.saturating_sub(stored.1);
            ahead.release(stored.1);
            progress(Progress::Chunks(stored.0));
            summary.chunks_embedded += stored.0;
            batches += 1;
            if self.options.abort_after_batches == Some(batches) {
                std::process::abort();
            }
            self.finish_documents(&mut queue, summary, progress)?;
        }
    }

    /// Embeds and upserts the next batch from the front of the queue;
    /// returns the chunks and tokens it stored.
    fn store_batch(&self, queue: &mut VecDeque<InFlight>, budget: usize) -> Result<(usize, usize)> {
        let mut picks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        let mut tokens = 0usize;
        for (i, item) in queue.iter().enumerate() {
            if tokens >= budget {
                break;
            }
            let doc = &item.document;
            let start = item.sent;
            let mut end = start;
            while end < doc.chunks.len() && (tokens < budget || end == start && picks.is_empty()) {
                tokens += doc.tokens[end];
                end += 1;
            }
            if end > start {
                picks.push((i, start..end));
            }
        }
        // Write-ahead: each document's old and new chunk ids are durable
        // before the store sees its first point.
        let announce: Vec<DocumentRecord> = picks
            .iter()
            .filter(|(i, _)| !queue[*i].announced)
            .map(|(i, _)| queue[*i].document.record.clone())
            .collect();
        self.catalogue.put_many(&announce).map_err(fatal_error)?;
        let texts: Vec<String> = picks
            .iter()
            .flat_map(|(i, r)| {
                queue[*i].document.chunks[r.clone()]
                    .iter()
                    .map(embedding_text)
            })
            .collect();
        let started = std::time::Instant::now();
        let vectors = self.embedder.embed(&texts)?;
        let embedded = started.elapsed();
        if vectors.len() != texts.len() {
            return Err(Error::Internal {
                message: format!(
                    "the embedder returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ),
                source: None,
            });
        }
        let mut vectors = vectors.into_iter();
        let mut points = Vec::with_capacity(texts.len());
        for (i, range) in &picks {
            for chunk in &queue[*i].document.chunks[range.clone()] {
                points.push(EmbeddedChunk {
                    chunk: chunk.clone(),
                    vector: vectors.next().unwrap_or_default(),
                });
            }
        }
        self.store.upsert(&points)?;
        tracing::debug!(
            chunks = points.len(),
            tokens,
            embed_ms = embedded.as_millis() as u64,
            store_ms = (started.elapsed() - embedded).as_millis() as u64,
            "batch stored"
        );
        for (i, range) in picks {
            queue[i].announced = true;
            queue[i].sent = range.end;
        }
        Ok((points.len(), tokens))
    }

    /// Completes the documents at the front of the queue whose chunks are all stored.
    fn finish_documents(
        &self,
        queue: &mut VecDeque<InFlight>,
        summary: &mut IngestSummary,
        progress: &dyn Fn(Progress),
    ) -> Result<()> {
        let mut done = Vec::new();
        while queue
            .front()
            .is_some_and(|f| f.sent == f.document.chunks.len())
        {
            let Some(item) = queue.pop_front() else { break };
            done.push(item.document);
        }
        if done.is_empty() {
            return Ok(());
        }
        let stale: Vec<ChunkId> = done
            .iter()
            .flat_map(|d| d.record.stale_chunk_ids.iter().copied())
            .collect();
        if !stale.is_empty() {
            self.store.delete_chunks(&stale)?;
        }
        // The embedded store does not replay its write-ahead log on open, so
        // points are durable only once flushed. Flush before the catalogue
        // says Ready: a crash before this line leaves the documents pending,
        // and the next run redoes them.
        let started = std::time::Instant::now();
        self.store.flush()?;
        let flushed = started.elapsed();
        let records: Vec<DocumentRecord> = done
            .iter()
            .map(|d| DocumentRecord {
                status: DocumentStatus::Ready,
                stale_chunk_ids: Vec::new(),
                updated_at: now_secs(),
                ..d.record.clone()
            })
            .collect();
        self.catalogue.put_many(&records).map_err(fatal_error)?;
        tracing::debug!(
            documents = records.len(),
            flush_ms = flushed.as_millis() as u64,
            catalogue_ms = (started.elapsed() - flushed).as_millis() as u64,
            "documents finished"
        );
        for doc in done {
            match doc.outcome {
                Outcome::Updated => summary.updated += 1,
                _ => summary.added += 1,
            }
            progress(Progress::FileDone(&doc.record.id.0));
        }
        Ok(())
    }

    /// Ingests documents given as bytes, in order. A document that cannot
    /// be ingested is reported (and recorded in the catalogue) and does not
    /// stop the others; store and catalogue failures do. Finished like
    /// [`Pipeline::ingest_paths`].
    pub fn ingest_documents(
        &self,
        documents: Vec<DocumentInput>,
        progress: &dyn Fn(Progress),
    ) -> Result<Vec<DocumentReport>> {
        let mut reports = Vec::with_capacity(documents.len());
        progress(Progress::Found(documents.len()));
        for doc in documents {
            let result = match self.ingest_document(&doc, progress) {
                Ok(done) => Ok(done),
                Err(FileError::Skip(reason)) => {
                    self.record_failure(&doc.id, &reason, None)?;
                    Err(reason)
                }
                Err(FileError::Fatal(e)) => return Err(e),
            };
            progress(Progress::FileDone(&doc.id.0));
            reports.push(DocumentReport {
                id: doc.id,
                source: doc.source,
                result,
            });
        }
        self.extractors.release();
        let changed = reports
            .iter()
            .any(|r| matches!(r.result, Ok((Outcome::Added | Outcome::Updated, _))));
        self.finish(changed, progress)?;
        Ok(reports)
    }

    /// One document given as bytes; its chunks are durable on return.
    fn ingest_document(
        &self,
        doc: &DocumentInput,
        progress: &dyn Fn(Progress),
    ) -> Result<(Outcome, usize), FileError> {
        let ready = match self.prepare(&doc.id, &doc.source, &doc.path_hint, &doc.bytes, &doc.meta)
        {
            Prepared::Unchanged(_) => return Ok((Outcome::Unchanged, 0)),
            Prepared::Failed(_, reason) => return Err(FileError::Skip(reason)),
            Prepared::Fatal(e) => return Err(FileError::Fatal(e)),
            Prepared::Ready(doc) => doc,
        };
        let outcome = ready.outcome;
        let n = ready.chunks.len();
        let mut queue = VecDeque::from([InFlight {
            document: *ready,
            sent: 0,
            announced: false,
        }]);
        let mut summary = IngestSummary::default();
        while !queue.is_empty() {
            let (stored, _) = self
                .store_batch(&mut queue, self.options.batch_tokens.max(1))
                .map_err(FileError::Fatal)?;
            progress(Progress::Chunks(stored));
            self.finish_documents(&mut queue, &mut summary, &|_| {})
                .map_err(FileError::Fatal)?;
        }
        Ok((outcome, n))
    }

    /// Removes a document and all its chunks. Returns whether it existed.
    /// The record turns pending first, so an interrupted removal is redone.
    pub fn remove_document(&self, id: &DocumentId) -> Result<bool> {
        let Some(record) = self.catalogue.get(id).map_err(fatal_error)? else {
            self.store.delete_document(id)?;
            return Ok(false);
        };
        let mut pending = record.clone();
        pending.status = DocumentStatus::Pending;
        pending.stale_chunk_ids = record
            .chunk_ids
            .iter()
            .chain(&record.stale_chunk_ids)
            .copied()
            .collect();
        pending.chunk_ids = Vec::new();
        pending.content_hash = String::new();
        self.catalogue.put(&pending).map_err(fatal_error)?;
        self.store.delete_document(id)?;
        self.store.flush()?;
        self.catalogue.remove(id).map_err(fatal_error)?;
        Ok(true)
    }

    fn make_chunks(
        &self,
        id: &DocumentId,
        source: &str,
        hash: &str,
        document: &ExtractedDocument,
        meta: &DocumentMeta,
    ) -> Vec<Chunk> {
        let spans = self.chunk_spans(document);
        let mut lines = LineIndex::new(&document.text);
        // The caller's keys (an API upload's `tags`, `date`, ...) override the
        // document's own.
        let mut all = document.metadata.clone();
        all.extend(meta.metadata.clone());
        let (mut tags, metadata) = split_tags(&all);
        for tag in &meta.tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        // A document's own date wins over the file's modification time.
        let dated = all
            .get("date")
            .and_then(|d| parse_date(d))
            .or(meta.modified);
        spans
            .into_iter()
            .enumerate()
            .map(|(ordinal, span)| Chunk {
                id: ChunkId::derive(id, hash, ordinal),
                document_id: id.clone(),
                source: source.to_string(),
                ordinal,
                start: span.start,
                end: span.end,
                line_start: lines.line_of(span.start) + document.line_offset,
                line_end: lines.line_of(span.end.saturating_sub(1).max(span.start))
                    + document.line_offset,
                heading: span.heading,
                page: document.page_of(span.start),
                content_hash: hash.to_string(),
                text: document.text[span.start..span.end].to_string(),
                tags: tags.clone(),
                metadata: metadata.clone(),
                modified: dated,
            })
            .collect()
    }

    /// The document's chunk spans. Paged documents (PDF) are chunked page by
    /// page, so no chunk straddles a page break and every citation's page
    /// number is the page its text is on.
    fn chunk_spans(&self, document: &ExtractedDocument) -> Vec<docent_core::ChunkSpan> {
        if document.page_starts.len() < 2 {
            return self.chunker.chunk(document);
        }
        let len = document.text.len();
        let mut out = Vec::new();
        for (i, &start) in document.page_starts.iter().enumerate() {
            let end = document
                .page_starts
                .get(i + 1)
                .copied()
                .unwrap_or(len)
                .min(len);
            if start >= end || document.text[start..end].trim().is_empty() {
                continue;
            }
            // Only the page's text and kind matter to the chunker.
            let page = ExtractedDocument {
                text: document.text[start..end].to_string(),
                kind: document.kind,
                ..Default::default()
            };
            out.extend(
                self.chunker
                    .chunk(&page)
                    .into_iter()
                    .map(|span| docent_core::ChunkSpan {
                        start: span.start + start,
                        end: span.end + start,
                        ..span
                    }),
            );
        }
        out
    }

    /// Marks a document as failed, keeping chunks of an earlier good version.
    fn record_failure(&self, id: &DocumentId, reason: &str, root: Option<&str>) -> Result<()> {
        let mut record = match self.catalogue.get(id).map_err(fatal_error)? {
            Some(existing) => existing,
            None => DocumentRecord {
                id: id.clone(),
                source: id.0.clone(),
                content_hash: String::new(),
                size: 0,
                modified: None,
                title: None,
                status: DocumentStatus::Failed,
                last_error: None,
                chunk_ids: Vec::new(),
                stale_chunk_ids: Vec::new(),
                updated_at: 0,
                root: None,
            },
        };
        if record.root.is_none() {
            record.root = root.map(str::to_string);
        }
        if record.status != DocumentStatus::Pending {
            record.status = DocumentStatus::Failed;
        }
        record.last_error = Some(reason.to_string());
        record.updated_at = now_secs();
        self.catalogue.put(&record).map_err(fatal_error)
    }
}

/// Which files a run takes: include/exclude globs on the root-relative path.
struct FileFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl FileFilter {
    fn new(options: &IngestOptions) -> Result<Self> {
        let build = |patterns: &[String]| -> Result<GlobSet> {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                let glob = Glob::new(p)
                    .map_err(|e| Error::InvalidInput(format!("bad glob {p:?}: {e}")))?;
                set.add(glob);
            }
            set.build()
                .map_err(|e| Error::InvalidInput(format!("bad globs: {e}")))
        };
        Ok(FileFilter {
            include: (!options.include.is_empty())
                .then(|| build(&options.include))
                .transpose()?,
            exclude: build(&options.exclude)?,
        })
    }

    fn all() -> Self {
        FileFilter {
            include: None,
            exclude: GlobSet::empty(),
        }
    }

    /// Whether a root-relative id passes the globs (and the hidden rule).
    fn wants(&self, id: &DocumentId, include_hidden: bool) -> bool {
        let path = Path::new(&id.0);
        if !include_hidden && id.0.split('/').any(|part| part.starts_with('.')) {
            return false;
        }
        self.include.as_ref().is_none_or(|s| s.is_match(path)) && !self.exclude.is_match(path)
    }
}

/// The root-relative, `/`-separated id of `path`, when it lies under `root`.
fn relative_id(root: &Path, path: &Path) -> Option<DocumentId> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    // A removed file cannot be canonicalised; its parent usually can.
    let canonical = std::fs::canonicalize(&absolute).ok().or_else(|| {
        let parent = std::fs::canonicalize(absolute.parent()?).ok()?;
        Some(parent.join(absolute.file_name()?))
    })?;
    let rel = canonical.strip_prefix(root).ok()?;
    let id = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    (!id.is_empty()).then(|| DocumentId::new(id))
}

/// Files under `root` in a stable order, with their ids (root-relative,
/// `/`-separated), and the canonical root when it is a folder.
fn collect_files(
    root: &Path,
    include_hidden: bool,
    filter: &FileFilter,
) -> std::io::Result<(Vec<FileJob>, Option<String>)> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let job = FileJob {
            path: root.to_path_buf(),
            id: DocumentId::new(name),
        };
        return Ok((vec![job], None));
    }
    let canonical = std::fs::canonicalize(root)?;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !include_hidden && name.to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type()?;
            let path = entry.path();
            if file_type.is_dir() {
                stack.push(path);
            } else if file_type.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let id = DocumentId::new(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
                if filter.wants(&id, include_hidden) {
                    out.push(FileJob { path, id });
                }
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, Some(canonical.to_string_lossy().to_string())))
}

/// Splits document metadata into tags (the `tags` key: a comma-separated or
/// `[a, b]` list) and the remaining key/value pairs.
fn split_tags(
    metadata: &std::collections::BTreeMap<String, String>,
) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let mut rest = metadata.clone();
    let tags = rest
        .remove("tags")
        .map(|t| {
            t.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|t| t.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    (tags, rest)
}

/// Seconds since the Unix epoch of a `YYYY-MM-DD` date (a longer ISO 8601
/// timestamp is read up to its date), or of a plain number of seconds.
pub fn parse_date(text: &str) -> Option<u64> {
    let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let date = text.get(..10)?;
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400).ok()
}

/// The text the embedder sees: the heading path gives a chunk its context.
fn embedding_text(chunk: &Chunk) -> String {
    match &chunk.heading {
        Some(h) if !chunk.text.starts_with('#') => format!("{h}\n{}", chunk.text),
        _ => chunk.text.clone(),
    }
}

/// Why one file was not ingested: `Skip` is the file's fault and the run goes
/// on; `Fatal` (store, catalogue, model thread) stops the run.
#[derive(Debug)]
enum FileError {
    Skip(String),
    Fatal(Error),
}

fn fatal_error(e: crate::CatalogueError) -> Error {
    match e {
        crate::CatalogueError::Locked { .. } => Error::Unavailable {
            message: e.to_string(),
            source: None,
        },
        other => Error::internal("catalogue failure", other),
    }
}

/// 1-based line number of a byte offset, for citations.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Answers line numbers for increasing offsets in one pass.
struct LineIndex<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        LineIndex {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn line_of(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.pos {
            self.pos = 0;
            self.line = 1;
        }
        self.line += self.text[self.pos..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = offset;
        self.line
    }
}

#[cfg(test)]
mod date_tests {
    use super::parse_date;

    #[test]
    fn dates_parse_to_epoch_seconds() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-03-01"), Some(1_709_251_200));
        assert_eq!(parse_date("2024-03-01T10:00:00Z"), Some(1_709_251_200));
        assert_eq!(parse_date("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_date("March 1st"), None);
    }
}

#[cfg(test)]
mod read_ahead_tests {
    use super::{READ_AHEAD_BATCHES, ReadAhead};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn admission_waits_past_the_bound_until_tokens_are_stored() {
        let ahead = ReadAhead::new(100);
        // Below one batch anything goes in, even a document over the bound.
        assert!(ahead.admit(50));
        assert!(ahead.admit(READ_AHEAD_BATCHES * 100));
        let admitted = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert!(ahead.admit(10));
                admitted.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!admitted.load(Ordering::SeqCst), "admitted past the bound");
            ahead.release(60);
        });
        assert!(admitted.load(Ordering::SeqCst));
    }

    #[test]
    fn stopping_turns_waiting_extractors_away() {
        let ahead = ReadAhead::new(100);
        assert!(ahead.admit(READ_AHEAD_BATCHES * 100));
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| ahead.admit(1));
            std::thread::sleep(Duration::from_millis(50));
            ahead.stop();
            assert!(!waiting.join().expect("no panic"));
        });
        assert!(!ahead.admit(0));
    }
}
