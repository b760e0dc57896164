//! What the handlers share: the services (answers, ingestion, embeddings),
//! the request limits and the metrics. No handler reaches past a service
//! to the store or the models behind it.

use crate::access::OpenOperations;
use crate::keys::KeyRing;
use crate::metrics::Metrics;
use docent_core::{Embedder, SamplingParams};
use docent_ingest::Pipeline;
use docent_query::Asker;
use std::collections::BTreeMap;
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

/// One collection as served: answers and search over it, its documents,
/// and its conversations.
pub struct Served {
    pub name: String,
    pub asker: Arc<Asker>,
    /// The ingestion pipeline and catalogue behind `/v1/documents`; it
    /// updates the search index after uploads by itself.
    pub pipeline: Arc<Pipeline>,
    /// Conversations kept for `/v1/ask` with `conversation_id` (`None`:
    /// only history sent with each request).
    pub conversations: Option<Arc<crate::ConversationStore>>,
}

/// The collections this server serves.
pub struct Collections {
    /// The folder holding one sub-folder per collection (`<data dir>/collections`).
    pub dir: PathBuf,
    /// The collection of requests that name none.
    pub default: String,
    /// By name; always holds `default`.
    pub served: BTreeMap<String, Arc<Served>>,
}

impl Collections {
    /// A server of one collection.
    pub fn one(dir: PathBuf, served: Served) -> Collections {
        let default = served.name.clone();
        Collections {
            dir,
            served: [(default.clone(), Arc::new(served))].into(),
            default,
        }
    }

    /// The default collection.
    pub fn default_served(&self) -> &Arc<Served> {
        &self.served[&self.default]
    }
}

/// Everything the handlers share. The services' backends are trait objects
/// so tests can put fakes around the code under test.
pub struct AppState {
    pub collections: Collections,
    /// `/v1/embeddings` (every collection is built with this model).
    pub embedder: Arc<dyn Embedder>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// The keys `/v1` accepts; with none, no key is needed.
    pub keys: Arc<KeyRing>,
    /// Whether `/metrics`, `/healthz` and `/readyz` need a key.
    pub open_operations: OpenOperations,
    /// Sampling used when a request does not say.
    pub defaults: SamplingParams,
}
