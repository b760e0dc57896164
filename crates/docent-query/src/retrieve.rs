use docent_core::{Embedder, Result, ScoredChunk, SearchFilter, SearchRequest, VectorStore};
use std::sync::Arc;
use std::time::Instant;

/// Passages found for a question, with what finding them cost.
#[derive(Clone, Debug)]
pub struct Retrieval {
    pub passages: Vec<ScoredChunk>,
    pub embed_ms: f64,
    pub search_ms: f64,
}

/// Dense retrieval: embed the question, search, drop passages under the floor.
pub struct Retriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
}

impl Retriever {
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Self {
        Retriever { embedder, store }
    }

    /// Blocking: call from a thread that may wait on the model.
    pub fn retrieve(
        &self,
        question: &str,
        top_k: usize,
        filter: &SearchFilter,
        score_floor: f32,
    ) -> Result<Retrieval> {
        let t0 = Instant::now();
        let vector = self.embedder.embed(&[question.to_string()])?.remove(0);
        let embed_ms = ms(t0);
        let t1 = Instant::now();
        let mut passages = self.store.search(&SearchRequest {
            vector,
            top_k,
            filter: filter.clone(),
        })?;
        let search_ms = ms(t1);
        passages.retain(|p| p.score >= score_floor);
        Ok(Retrieval {
            passages,
            embed_ms,
            search_ms,
        })
    }
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
