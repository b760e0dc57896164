//! The role traits (`Embedder`, `VectorStore`, `Generator`, `Extractor`,
//! `Chunker`) each engine crate implements. They are small and have no async
//! methods (engines do their work on their own threads), so a backend can be
//! swapped, or faked in a test, without its callers noticing.

use crate::{
    Chunk, ChunkId, ChunkSpan, CollectionSpec, DocumentId, EmbeddedChunk, ExtractedDocument,
    GenerationEvent, GenerationRequest, Result, ScoredChunk, SearchRequest, StoredPoint,
};
use std::path::Path;

/// Turns texts into fixed-size vectors. Implementations do the work on their
/// own threads; `embed` blocks the calling thread until the vectors are ready,
/// so async callers must call it from a blocking context.
pub trait Embedder: Send + Sync {
    /// Stable model identifier recorded with collections.
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// Longest input in model tokens, special tokens excluded; longer input is truncated.
    fn max_input_tokens(&self) -> usize;
    /// Tokens `text` takes in this model's vocabulary (special tokens included).
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Embeds each text into an L2-normalised vector, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
    /// The matrix precision the model runs at (`f32`, `bf16`), for reports.
    fn precision(&self) -> &'static str {
        "f32"
    }
}

/// Scores how well passages answer a query, reading each pair together (a
/// cross-encoder). Like `Embedder`, it blocks the calling thread while its
/// own thread works.
pub trait Reranker: Send + Sync {
    /// Model identifier reported with scores.
    fn model_id(&self) -> &str;
    /// One relevance score per passage, in order; higher is more relevant.
    fn rerank(&self, query: &str, passages: &[String]) -> Result<Vec<f32>>;
}

/// Stores embedded chunks and finds the nearest ones.
pub trait VectorStore: Send + Sync {
    /// What the collection was built with.
    fn spec(&self) -> &CollectionSpec;
    /// Inserts or replaces chunks by id.
    fn upsert(&self, chunks: &[EmbeddedChunk]) -> Result<()>;
    /// Removes the given chunks; unknown ids are ignored.
    fn delete_chunks(&self, ids: &[ChunkId]) -> Result<()>;
    /// Removes every chunk of a document.
    fn delete_document(&self, document: &DocumentId) -> Result<()>;
    /// Ids of every chunk stored for a document.
    fn chunk_ids(&self, document: &DocumentId) -> Result<Vec<ChunkId>>;
    /// Chunks of a document at the given ordinals; missing ones are skipped.
    fn chunks_by_ordinal(&self, document: &DocumentId, ordinals: &[usize]) -> Result<Vec<Chunk>>;
    /// Nearest chunks, best first.
    fn search(&self, request: &SearchRequest) -> Result<Vec<ScoredChunk>>;
    /// Number of stored chunks.
    fn count(&self) -> Result<usize>;
    /// Makes every accepted write durable.
    fn flush(&self) -> Result<()>;
    /// Builds the search indexes after a bulk write: merges small segments
    /// and indexes (HNSW, quantized vectors) the ones that grew past the
    /// engine's threshold. Blocking, and as long as the indexing takes. The
    /// embedded engine only does this when asked; a Qdrant server does it by
    /// itself, so the default does nothing.
    fn optimize(&self) -> Result<()> {
        Ok(())
    }
    /// One page of the stored points in id order, starting at `from` (the
    /// cursor a previous page returned; `None` for the first page). Returns
    /// the page and the cursor of the next one, `None` after the last page.
    fn scroll_points(
        &self,
        from: Option<ChunkId>,
        limit: usize,
    ) -> Result<(Vec<StoredPoint>, Option<ChunkId>)>;
    /// Inserts or replaces points exactly as given: vectors are not
    /// recomputed, so points copied from another store keep their scores.
    fn upsert_points(&self, points: &[StoredPoint]) -> Result<()>;
    /// How the service behind the store is doing, for readiness probes. An
    /// in-process store has nothing beyond `count` to report.
    fn health(&self) -> crate::StoreHealth {
        crate::StoreHealth::default()
    }
}

/// Produces text from chat messages on a model that lives on its own thread.
pub trait Generator: Send + Sync {
    /// Model identifier reported to users.
    fn model_id(&self) -> &str;
    /// What prompt evaluation multiplies by (`f32`, `bf16`, `quantized`),
    /// or `remote` for a generation server, for reports.
    fn prefill_precision(&self) -> &'static str {
        "remote"
    }
    /// What a weights cache did when the model loaded, for reports.
    fn weights_cache(&self) -> String {
        "none".into()
    }
    /// The model's context window in tokens.
    fn context_length(&self) -> usize;
    /// Tokens `text` takes in this model's vocabulary.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Tokens the chat template adds around `messages` beyond their contents.
    fn template_overhead(&self, messages: &[crate::ChatMessage]) -> Result<usize>;
    /// Requests waiting in the queue (not yet started).
    fn queue_depth(&self) -> usize {
        0
    }
    /// Generations stopped early because their receiver was dropped.
    fn cancelled(&self) -> u64 {
        0
    }
    /// Whether a generation queued now would be accepted. Callers check it
    /// before the work that precedes a generation (retrieval, reranking), so
    /// a request that would be refused is refused before it costs anything;
    /// `generate` still enforces the bound.
    fn has_room(&self) -> bool {
        true
    }
    /// Queues a generation. Returns at once: `Error::Overloaded` when the queue
    /// is full. Events arrive on the receiver; dropping it cancels the work.
    fn generate(
        &self,
        request: GenerationRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<GenerationEvent>>;
}

/// Why an extractor refused a file. The message is shown to users per file.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("binary file (not text): {0}")]
    Binary(String),
    #[error("cannot decode text: {0}")]
    Undecodable(String),
    #[error("no extractable text")]
    Empty,
    #[error("unsupported format: {0}")]
    Unsupported(String),
    #[error("malformed file: {0}")]
    Malformed(String),
    /// A password-protected document that cannot be read without the password.
    #[error("encrypted {0} (password protected); decrypt it and re-ingest")]
    Encrypted(String),
    /// A paged document whose pages carry no text (typically a scan).
    #[error("no extractable text (scanned? run OCR on it first)")]
    NoTextLayer,
    /// Extraction ran past its time bound.
    #[error(
        "extraction took longer than {0} s (ingest.extract_timeout_secs); the file may be malformed"
    )]
    Timeout(u64),
    /// Extraction (or decompression) ran past its memory bound.
    #[error("too large to extract: {0}")]
    TooLarge(String),
    /// The isolated extractor died (a crash in the parser) or could not run.
    #[error("the extractor failed: {0}")]
    Crashed(String),
}

/// Turns the bytes of one file into text.
pub trait Extractor: Send + Sync {
    /// Whether this extractor handles the file (by extension or sniffing).
    fn accepts(&self, path: &Path, head: &[u8]) -> bool;
    fn extract(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> std::result::Result<ExtractedDocument, ExtractError>;

    /// Lets go of what the extractor keeps between files (the PDF
    /// extractor's idle worker processes); called at the end of a run.
    fn release(&self) {}
}

/// Cuts an extracted document into spans sized for the embedder.
pub trait Chunker: Send + Sync {
    fn chunk(&self, document: &ExtractedDocument) -> Vec<ChunkSpan>;
    /// Largest chunk in embedder tokens.
    fn max_tokens(&self) -> usize;
    fn overlap_tokens(&self) -> usize;
    /// Embedder tokens in `text`, for sizing embedding batches. The default
    /// is a rough estimate (four bytes a token); tokenizer-backed chunkers
    /// count exactly.
    fn count_tokens(&self, text: &str) -> usize {
        text.len() / 4 + 1
    }
}

/// Convenience for building a collection spec from the parts that define it.
pub fn collection_spec(embedder: &dyn Embedder, chunker: &dyn Chunker) -> CollectionSpec {
    CollectionSpec {
        embedding_model: embedder.model_id().to_string(),
        dimension: embedder.dimension(),
        chunk_max_tokens: chunker.max_tokens(),
        chunk_overlap_tokens: chunker.overlap_tokens(),
        schema_version: CollectionSpec::SCHEMA_VERSION,
    }
}
