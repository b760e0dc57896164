//! `VectorStore` backends. The default is qdrant-edge: Qdrant's engine
//! in-process, on disk under the data directory, nothing to start. The
//! `qdrant` backend puts the same collections on a Qdrant server or cluster
//! when one machine is no longer enough.
//!
//! Every backend stores the same payload layout (see [`payload`]) and records
//! the [`docent_core::CollectionSpec`] it was built with, refusing to open
//! when the running configuration disagrees.
//!
//! What a collection looks like (`layout`), what a search means (`plan`) and
//! the BM25 vectors (`bm25`) are decided once, here, outside the backends;
//! `edge` and `qdrant` only convert them to their engine's types and back,
//! so the two cannot rank or store differently. [`migrate`] copies a
//! collection between any two stores through the `VectorStore` trait.

mod bm25;
mod edge;
mod kind;
mod layout;
pub mod migrate;
pub mod payload;
mod plan;
mod qdrant;

pub use edge::EdgeStore;
pub use kind::StoreKind;
pub use qdrant::{QdrantOptions, QdrantStore};

/// Name of the dense vector in every collection.
pub const DENSE: &str = "dense";
/// Name of the BM25 sparse vector in every collection.
pub const SPARSE: &str = "bm25";

/// The spec the unit tests build their collections with.
#[cfg(test)]
pub(crate) fn test_spec(dimension: usize) -> docent_core::CollectionSpec {
    docent_core::CollectionSpec {
        embedding_model: "m".into(),
        dimension,
        chunk_max_tokens: 10,
        chunk_overlap_tokens: 0,
        schema_version: docent_core::CollectionSpec::SCHEMA_VERSION,
    }
}
