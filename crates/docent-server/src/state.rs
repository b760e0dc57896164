//! What the handlers share: the services (answers, ingestion, embeddings),
//! the request limits and the metrics. No handler reaches past a service
//! to the store or the models behind it.

use crate::metrics::Metrics;
use docent_core::{Embedder, SamplingParams};
use docent_ingest::Pipeline;
use docent_query::Asker;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Bounds on what one request may ask for (the `[server]` config section).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `top_k` above this is clamped.
    pub max_top_k: usize,
    /// `max_tokens` above this is clamped.
    pub max_tokens: usize,
    /// Largest JSON request body in bytes.
    pub max_json_bytes: usize,
    /// Largest document upload (one request, all files) in bytes.
    pub max_upload_bytes: usize,
    /// Time a request may take before it is answered with 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_top_k: 50,
            max_tokens: 1024,
            max_json_bytes: 1 << 20,
            max_upload_bytes: 50 << 20,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Where the collections live and which one this server serves.
#[derive(Clone, Debug)]
pub struct Collections {
    /// The folder holding one sub-folder per collection (`<data dir>/collections`).
    pub dir: PathBuf,
    /// The served collection's name.
    pub current: String,
}

/// Everything the handlers share. The services' backends are trait objects
/// so tests can put fakes around the code under test.
pub struct AppState {
    /// Answers and search.
    pub asker: Arc<Asker>,
    /// The ingestion pipeline and catalogue behind `/v1/documents`; it
    /// updates the search index after uploads by itself.
    pub pipeline: Arc<Pipeline>,
    /// `/v1/embeddings`.
    pub embedder: Arc<dyn Embedder>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// When non-empty, every `/v1` route needs one of these as a bearer token.
    pub api_keys: Vec<String>,
    /// Sampling used when a request does not say.
    pub defaults: SamplingParams,
    /// For `GET /v1/collections`.
    pub collections: Collections,
    /// Conversations kept for `/v1/ask` with `conversation_id` (`None`:
    /// only history sent with each request).
    pub conversations: Option<Arc<crate::ConversationStore>>,
}
