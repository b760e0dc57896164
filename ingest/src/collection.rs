//! The opened pieces every user of a collection works through: the
//! embedding side (model and the chunker sized for it) and the collection
//! itself (vectors and catalogue). The binary's wiring builds them from the
//! configuration; ingestion, answers and evaluation take them as built.

use crate::Catalogue;
use docent_core::{Chunker, Embedder, VectorStore};
use std::sync::Arc;

/// The embedding model and the chunker that sizes text for it.
#[derive(Clone)]
pub struct EmbeddingParts {
    pub embedder: Arc<dyn Embedder>,
    pub chunker: Arc<dyn Chunker>,
}

/// An opened collection: its vectors and its document catalogue.
#[derive(Clone)]
pub struct Collection {
    pub store: Arc<dyn VectorStore>,
    pub catalogue: Arc<Catalogue>,
}
