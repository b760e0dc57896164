use crate::catalogue::{Catalogue, DocumentRecord, DocumentStatus, now_secs};
use crate::extract::Extractors;
use docent_core::{
    Chunk, ChunkId, Chunker, DocumentId, EmbeddedChunk, Embedder, Error, ExtractedDocument, Result,
    VectorStore, content_hash,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Limits and choices of an ingestion run.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Files larger than this are reported as failed and not read.
    pub max_file_bytes: u64,
    /// Chunks sent to the embedder per call.
    pub embed_batch: usize,
    /// Whether to descend into hidden files and folders (names starting with `.`).
    pub include_hidden: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_file_bytes: 50 * 1024 * 1024,
            embed_batch: 64,
            include_hidden: false,
        }
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

/// Progress notifications for a front end (the CLI draws bars from them).
pub enum Progress<'a> {
    /// The run found this many files to consider.
    Found(usize),
    /// One file is finished (whatever the outcome).
    FileDone(&'a str),
    /// This many chunks were embedded and stored.
    Chunks(usize),
}

/// What happened to one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    Unchanged,
}

/// Runs files through extract → chunk → embed → upsert and keeps the catalogue.
pub struct Pipeline {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunker: Arc<dyn Chunker>,
    catalogue: Arc<Catalogue>,
    extractors: Extractors,
    options: IngestOptions,
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
            store,
            chunker,
            catalogue,
            extractors: Extractors::default(),
            options,
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Ingests every file under `root` (or `root` itself if it is a file).
    /// Bad files are reported in the summary and do not stop the run; store and
    /// catalogue failures do.
    pub fn ingest_path(&self, root: &Path, progress: &dyn Fn(Progress)) -> Result<IngestSummary> {
        let files = collect_files(root, self.options.include_hidden)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", root.display())))?;
        progress(Progress::Found(files.len()));
        let mut summary = IngestSummary {
            files_seen: files.len(),
            ..Default::default()
        };
        for (path, id) in files {
            match self.ingest_file(&path, &id, progress) {
                Ok((Outcome::Added, n)) => {
                    summary.added += 1;
                    summary.chunks_embedded += n;
                }
                Ok((Outcome::Updated, n)) => {
                    summary.updated += 1;
                    summary.chunks_embedded += n;
                }
                Ok((Outcome::Unchanged, _)) => summary.unchanged += 1,
                Err(FileError::Skip(reason)) => {
                    self.record_failure(&id, &reason)?;
                    summary.failed.push(FileFailure {
                        path: id.0.clone(),
                        reason,
                    });
                }
                Err(FileError::Fatal(e)) => return Err(e),
            }
            progress(Progress::FileDone(&id.0));
        }
        self.store.flush()?;
        Ok(summary)
    }

    fn ingest_file(
        &self,
        path: &Path,
        id: &DocumentId,
        progress: &dyn Fn(Progress),
    ) -> Result<(Outcome, usize), FileError> {
        let meta =
            std::fs::metadata(path).map_err(|e| FileError::Skip(format!("cannot read: {e}")))?;
        if meta.len() > self.options.max_file_bytes {
            return Err(FileError::Skip(format!(
                "file is {} bytes, over the limit of {} (ingest.max_file_bytes)",
                meta.len(),
                self.options.max_file_bytes
            )));
        }
        let bytes =
            std::fs::read(path).map_err(|e| FileError::Skip(format!("cannot read: {e}")))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        self.ingest_bytes(id, &id.0, path, &bytes, modified, progress)
    }

    /// Ingests one document given as bytes. `path_hint` picks the extractor.
    pub fn ingest_bytes(
        &self,
        id: &DocumentId,
        source: &str,
        path_hint: &Path,
        bytes: &[u8],
        modified: Option<u64>,
        progress: &dyn Fn(Progress),
    ) -> Result<(Outcome, usize), FileError> {
        self.ingest_with_metadata(
            id,
            source,
            path_hint,
            bytes,
            modified,
            &BTreeMap::new(),
            progress,
        )
    }

    /// Like [`Pipeline::ingest_bytes`], with metadata from the caller (an API
    /// client's `tags`, `date` or other keys) added over the extracted
    /// metadata. The metadata is part of the document's hash, so changing it
    /// re-ingests the document.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest_with_metadata(
        &self,
        id: &DocumentId,
        source: &str,
        path_hint: &Path,
        bytes: &[u8],
        modified: Option<u64>,
        metadata: &BTreeMap<String, String>,
        progress: &dyn Fn(Progress),
    ) -> Result<(Outcome, usize), FileError> {
        let hash = if metadata.is_empty() {
            content_hash(bytes)
        } else {
            let mut keyed = bytes.to_vec();
            keyed.extend_from_slice(b"\0docent-metadata\0");
            keyed.extend_from_slice(&serde_json::to_vec(metadata).unwrap_or_default());
            content_hash(&keyed)
        };
        let previous = self.catalogue.get(id).map_err(fatal)?;
        if let Some(prev) = &previous
            && prev.status == DocumentStatus::Ready
            && prev.content_hash == hash
        {
            return Ok((Outcome::Unchanged, 0));
        }
        let mut document = self
            .extractors
            .extract(path_hint, bytes)
            .map_err(|e| FileError::Skip(e.to_string()))?;
        document
            .metadata
            .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        let chunks = self.make_chunks(id, source, &hash, &document, modified);
        if chunks.is_empty() {
            return Err(FileError::Skip("no extractable text".into()));
        }
        let new_ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        // Everything an earlier, possibly interrupted, version may have left behind.
        let mut stale: Vec<ChunkId> = previous
            .iter()
            .flat_map(|p| p.chunk_ids.iter().chain(&p.stale_chunk_ids).copied())
            .collect();
        let keep: HashSet<ChunkId> = new_ids.iter().copied().collect();
        stale.retain(|c| !keep.contains(c));
        stale.sort();
        stale.dedup();
        let mut record = DocumentRecord {
            id: id.clone(),
            source: source.to_string(),
            content_hash: hash,
            size: bytes.len() as u64,
            modified,
            title: document.title.clone(),
            status: DocumentStatus::Pending,
            last_error: None,
            chunk_ids: new_ids,
            stale_chunk_ids: stale.clone(),
            updated_at: now_secs(),
        };
        // Write-ahead: the catalogue knows both versions before the store changes.
        self.catalogue.put(&record).map_err(fatal)?;
        let batch = self.options.embed_batch.max(1);
        for group in chunks.chunks(batch) {
            let texts: Vec<String> = group.iter().map(embedding_text).collect();
            let vectors = self.embedder.embed(&texts).map_err(FileError::Fatal)?;
            let points: Vec<EmbeddedChunk> = group
                .iter()
                .cloned()
                .zip(vectors)
                .map(|(chunk, vector)| EmbeddedChunk { chunk, vector })
                .collect();
            self.store.upsert(&points).map_err(FileError::Fatal)?;
            progress(Progress::Chunks(points.len()));
        }
        if !stale.is_empty() {
            self.store.delete_chunks(&stale).map_err(FileError::Fatal)?;
        }
        record.status = DocumentStatus::Ready;
        record.stale_chunk_ids.clear();
        record.updated_at = now_secs();
        self.catalogue.put(&record).map_err(fatal)?;
        let outcome = if previous.is_some() {
            Outcome::Updated
        } else {
            Outcome::Added
        };
        Ok((outcome, chunks.len()))
    }

    /// Removes a document and all its chunks. Returns whether it existed.
    pub fn remove_document(&self, id: &DocumentId) -> Result<bool> {
        let existed = self.catalogue.get(id).map_err(fatal_error)?.is_some();
        self.store.delete_document(id)?;
        self.catalogue.remove(id).map_err(fatal_error)?;
        Ok(existed)
    }

    fn make_chunks(
        &self,
        id: &DocumentId,
        source: &str,
        hash: &str,
        document: &ExtractedDocument,
        modified: Option<u64>,
    ) -> Vec<Chunk> {
        let spans = self.chunker.chunk(document);
        let mut lines = LineIndex::new(&document.text);
        let (tags, metadata) = split_tags(&document.metadata);
        // A document's own date wins over the file's modification time.
        let dated = document
            .metadata
            .get("date")
            .and_then(|d| parse_date(d))
            .or(modified);
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

    /// Marks a document as failed, keeping chunks of an earlier good version.
    pub fn record_failure(&self, id: &DocumentId, reason: &str) -> Result<()> {
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
            },
        };
        if record.status != DocumentStatus::Pending {
            record.status = DocumentStatus::Failed;
        }
        record.last_error = Some(reason.to_string());
        record.updated_at = now_secs();
        self.catalogue.put(&record).map_err(fatal_error)
    }
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
pub enum FileError {
    Skip(String),
    Fatal(Error),
}

fn fatal(e: crate::CatalogueError) -> FileError {
    FileError::Fatal(fatal_error(e))
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

/// Files under `root` in a stable order, with their ids (root-relative, `/`-separated).
fn collect_files(root: &Path, include_hidden: bool) -> std::io::Result<Vec<(PathBuf, DocumentId)>> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        return Ok(vec![(root.to_path_buf(), DocumentId::new(name))]);
    }
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
                let id = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, DocumentId::new(id)));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
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
