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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Hash of the whole document's content this chunk was cut from.
    pub content_hash: String,
    pub text: String,
}

/// A chunk with its vector, ready for a store.
#[derive(Clone, Debug)]
pub struct EmbeddedChunk {
    pub chunk: Chunk,
    pub vector: Vec<f32>,
}

/// A chunk returned by a search, with the score that ranked it (higher is better).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredChunk {
    pub chunk: Chunk,
    pub score: f32,
}

/// Restricts a search to part of the collection. Empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFilter {
    /// Only these documents.
    #[serde(default)]
    pub document_ids: Vec<DocumentId>,
    /// Only documents whose source is exactly this.
    #[serde(default)]
    pub source: Option<String>,
}

/// One search against a store.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    /// Dense query vector.
    pub vector: Vec<f32>,
    /// How many chunks to return at most.
    pub top_k: usize,
    pub filter: SearchFilter,
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
    pub const SCHEMA_VERSION: u32 = 1;

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
}

/// Why generation stopped.
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
#[derive(Clone, Debug)]
pub enum GenerationEvent {
    /// A piece of decoded text (may be several tokens, never a broken UTF-8 sequence).
    Text(String),
    Done {
        stats: GenerationStats,
        finish: FinishReason,
    },
    Failed(String),
}
