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
    /// Searches (`/v1/search`) running at once; more are answered 429 with
    /// `Retry-After` at once instead of queueing behind the CPU (a reranked
    /// search is about half a second of both cores).
    pub max_searches_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_top_k: 50,
            max_tokens: 1024,
            max_json_bytes: 1 << 20,
            max_upload_bytes: 50 << 20,
            request_timeout: Duration::from_secs(120),
            max_searches_in_flight: 8,
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
    /// Admission of searches (`limits.max_searches_in_flight` permits).
    pub searches: SearchSlots,
}

/// The permits of searches in flight.
pub struct SearchSlots(Arc<tokio::sync::Semaphore>);

impl SearchSlots {
    pub fn new(limits: &Limits) -> SearchSlots {
        SearchSlots(Arc::new(tokio::sync::Semaphore::new(
            limits.max_searches_in_flight.max(1),
        )))
    }

    /// A permit, or 429 when every one is taken.
    pub(crate) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, crate::ApiError> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            crate::ApiError::overloaded(
                "too many searches are running (server.max_searches_in_flight); retry after Retry-After seconds",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_past_the_bound_are_refused_at_once_with_retry_after() {
        let slots = SearchSlots::new(&Limits {
            max_searches_in_flight: 2,
            ..Limits::default()
        });
        let a = slots.admit().unwrap();
        let _b = slots.admit().unwrap();
        let refused = slots.admit().unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        drop(a);
        assert!(slots.admit().is_ok(), "a finished search frees its slot");
    }
}
