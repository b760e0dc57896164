//! The plain data that crosses crate boundaries: extracted documents, chunks,
//! search requests and results, the collection spec, and generation
//! requests and events. Only types and their small invariants live here, so
//! every backend crate can share them without depending on another.

use crate::{ChunkId, DocumentId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The text of one document as an extractor produced it. Chunk offsets are
/// byte offsets into `text`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExtractedDocument {
    /// Plain text (for Markdown: the Markdown source itself).
    pub text: String,
    /// Title, when the format has one.
    pub title: Option<String>,
    /// How the chunker should treat the text.
    pub kind: TextKind,
    /// Format-specific metadata (front matter, document properties...).
    pub metadata: BTreeMap<String, String>,
    /// Lines of the source file that precede `text` (e.g. cut front matter),
    /// added to line numbers shown to users.
    pub line_offset: usize,
    /// Byte offsets in `text` where each page begins (the first is 0), for
    /// paged formats such as PDF; empty when the format has no pages.
    #[serde(default)]
    pub page_starts: Vec<usize>,
}

impl ExtractedDocument {
    /// 1-based page holding byte `offset`, when the document has pages.
    pub fn page_of(&self, offset: usize) -> Option<u32> {
        if self.page_starts.is_empty() {
            return None;
        }
        let index = self.page_starts.partition_point(|&s| s <= offset);
        Some(index.max(1) as u32)
    }
}

/// The structure a chunker may rely on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    #[default]
    Plain,
    Markdown,
}

/// A span of a document chosen by a chunker, before ids are assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Byte offset of the first byte, inclusive.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// Heading path (`Billing > Refunds`) the span sits under, if any.
    pub heading: Option<String>,
}

/// A stored passage of a document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub id: ChunkId,
    pub document_id: DocumentId,
    /// Where the document came from, as shown to users (usually the relative path).
    pub source: String,
    /// Position of the chunk in its document, from 0.
    pub ordinal: usize,
    /// Byte offsets into the extracted text of the source.
    pub start: usize,
    pub end: usize,
    /// 1-based line numbers of `start` and `end` in the extracted text.
    pub line_start: usize,
    pub line_end: usize,
    /// Heading path the chunk sits under, if any.
    pub heading: Option<String>,
    /// 1-based page of `start`, for paged formats.
    #[serde(default)]
    pub page: Option<u32>,
    /// Hash of the whole document's content this chunk was cut from.
    pub content_hash: String,
    pub text: String,
    /// Document tags (front matter `tags`, or given by an API caller).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Other document metadata (front matter keys, document properties).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Seconds since the Unix epoch of the document's date: its `date`
    /// metadata when it has one, else the file's modification time.
    #[serde(default)]
    pub modified: Option<u64>,
}

/// A chunk with its vector, ready for a store.
#[derive(Clone, Debug)]
pub struct EmbeddedChunk {
    pub chunk: Chunk,
    pub vector: Vec<f32>,
}

/// A sparse vector: sorted, unique term ids and their weights. The BM25 side
/// of a chunk is one (raw term-frequency weights; IDF is applied by the store
/// at query time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// Everything a store holds for one chunk: what `docent store migrate`
/// copies between backends so nothing is embedded twice.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPoint {
    pub chunk: Chunk,
    /// The dense vector as stored (unit length for cosine collections).
    pub vector: Vec<f32>,
    /// The BM25 vector as stored.
    pub sparse: SparseVector,
}

/// A chunk returned by a search, with the score that ranked it (higher is better).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredChunk {
    pub chunk: Chunk,
    /// The ranking score: cosine similarity in dense mode, BM25 in keyword
    /// mode, the fused score in hybrid mode.
    pub score: f32,
    /// Cosine similarity between the query and the chunk, whatever the mode;
    /// comparable across queries, so score floors use it.
    pub similarity: f32,
    /// The cross-encoder's relevance logit, when the chunk was reranked
    /// (then it, not `score`, decided the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

/// Restricts a search to part of the collection. Empty fields do not filter.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFilter {
    /// Only these documents.
    #[serde(default)]
    pub document_ids: Vec<DocumentId>,
    /// Only documents whose source is exactly this.
    #[serde(default)]
    pub source: Option<String>,
    /// Only documents under this folder of sources (`docs/` or `docs`): matched
    /// on whole path segments.
    #[serde(default)]
    pub source_prefix: Option<String>,
    /// Only documents carrying at least one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only documents whose metadata has each of these key/value pairs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Only documents dated at or after this (seconds since the Unix epoch).
    #[serde(default)]
    pub modified_after: Option<u64>,
    /// Only documents dated at or before this (seconds since the Unix epoch).
    #[serde(default)]
    pub modified_before: Option<u64>,
}

impl SearchFilter {
    /// Whether the filter restricts nothing.
    pub fn is_empty(&self) -> bool {
        self == &SearchFilter::default()
    }
}

/// Which signals rank a search.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Dense vectors only.
    Dense,
    /// BM25 keywords only.
    Keyword,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dense" => Ok(SearchMode::Dense),
            "keyword" => Ok(SearchMode::Keyword),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(format!(
                "unknown search mode {other:?}; use dense, keyword or hybrid"
            )),
        }
    }
}

/// How hybrid search fuses its two ranked lists.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal rank fusion: sum of `weight / (rank + k)` over the lists.
    Rrf {
        k: u32,
        dense_weight: f32,
        keyword_weight: f32,
    },
    /// Distribution-based score fusion (scores normalised per list, summed).
    Dbsf,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Rrf {
            k: 60,
            dense_weight: 1.0,
            keyword_weight: 1.0,
        }
    }
}

/// One search against a store.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    /// Dense query vector.
    pub vector: Vec<f32>,
    /// The query's text, for the keyword side.
    pub text: String,
    pub mode: SearchMode,
    pub fusion: Fusion,
    /// Candidates each side contributes before fusion (at least `top_k`),
    /// and the HNSW beam of the dense side; 0 leaves the store's default beam.
    pub candidates: usize,
    /// How many chunks to return at most.
    pub top_k: usize,
    pub filter: SearchFilter,
}

impl SearchRequest {
    /// Length of each side's candidate list: `candidates`, at least `top_k`.
    pub fn list_len(&self) -> usize {
        self.candidates.max(self.top_k)
    }

    /// HNSW beam for the dense side, as wide as its list; `None` (the
    /// store's default beam) when `candidates` is 0. Every backend uses it.
    pub fn dense_beam(&self) -> Option<usize> {
        (self.candidates > 0).then(|| self.list_len())
    }
}

/// What a collection's vectors were built with. Stored with the collection and
/// checked on open so an index is never queried with a different model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub embedding_model: String,
    pub dimension: usize,
    pub chunk_max_tokens: usize,
    pub chunk_overlap_tokens: usize,
    pub schema_version: u32,
}

impl CollectionSpec {
    /// Current layout of stored points and payloads.
    pub const SCHEMA_VERSION: u32 = 2;

    /// Describes how `found` differs from `self`, or `None` when they agree.
    pub fn mismatch(&self, found: &CollectionSpec) -> Option<String> {
        let mut diffs = Vec::new();
        if self.embedding_model != found.embedding_model {
            diffs.push(format!(
                "embedding model {} (configured: {})",
                found.embedding_model, self.embedding_model
            ));
        }
        if self.dimension != found.dimension {
            diffs.push(format!(
                "dimension {} (configured: {})",
                found.dimension, self.dimension
            ));
        }
        if self.chunk_max_tokens != found.chunk_max_tokens
            || self.chunk_overlap_tokens != found.chunk_overlap_tokens
        {
            diffs.push(format!(
                "chunks of {} tokens with {} overlap (configured: {} with {})",
                found.chunk_max_tokens,
                found.chunk_overlap_tokens,
                self.chunk_max_tokens,
                self.chunk_overlap_tokens
            ));
        }
        if self.schema_version != found.schema_version {
            diffs.push(format!(
                "schema version {} (this docent writes {})",
                found.schema_version, self.schema_version
            ));
        }
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }
}

/// Who said a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a chat-formatted prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Decoding settings for one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling threshold; `None` or 1.0 disables it.
    pub top_p: Option<f64>,
    /// Seed for sampling, so runs can be repeated.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: None,
            seed: 42,
        }
    }
}

/// A request to a generator.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    pub messages: Vec<ChatMessage>,
    pub sampling: SamplingParams,
    /// A reply whose probability is measured and reported
    /// (`GenerationEvent::Probe`) before any generated text.
    pub probe: Option<Probe>,
}

/// What `GenerationRequest::probe` measures: the probability that the reply
/// to `messages` (or to the request's own messages) starts with `text`.
#[derive(Clone, Debug)]
pub struct Probe {
    pub text: String,
    pub messages: Option<Vec<ChatMessage>>,
}

/// Why generation stopped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The receiver was dropped.
    Cancelled,
}

/// Counts and timings of one generation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from a cached prefix rather than evaluated.
    pub cached_prompt_tokens: usize,
    pub prompt_eval_ms: f64,
    pub generate_ms: f64,
}

/// What a generator sends while it works. A stream ends with exactly one
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum GenerationEvent {
    /// A piece of decoded text (may be several tokens, never a broken UTF-8 sequence).
    Text(String),
    /// The natural log of the probability that the reply starts with the
    /// request's `probe` text, sent once, before any `Text`. The prompt
    /// figures are those `Done` would carry.
    Probe {
        logprob: f32,
        prompt_tokens: usize,
        prompt_eval_ms: f64,
    },
    Done {
        stats: GenerationStats,
        finish: FinishReason,
    },
    /// The generation stopped with this error (nothing follows).
    Failed(crate::Error),
}

/// What a store reports about the service behind it (`/readyz`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Each configured server node, in configuration order (empty for an
    /// in-process store).
    pub nodes: Vec<NodeHealth>,
    /// The collection's shard replicas by state as the answering node sees
    /// them, e.g. `{"Active": 5, "Dead": 1}` (empty for an in-process store).
    pub replicas: BTreeMap<String, usize>,
    /// What is wrong, one sentence each; empty when everything is healthy.
    pub problems: Vec<String>,
}

/// One server node as a health check saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeHealth {
    pub url: String,
    /// Whether it answered the health check.
    pub up: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
