//! `VectorStore` backends. The default is qdrant-edge: Qdrant's engine
//! in-process, on disk under the data directory, nothing to start. The
//! `qdrant` backend puts the same collections on a Qdrant server or cluster
//! when one machine is no longer enough.
//!
//! Every backend stores the same payload layout (see [`payload`]) and records
//! the [`docent_core::CollectionSpec`] it was built with, refusing to open
//! when the running configuration disagrees.

mod bm25;
mod edge;
pub mod payload;
mod qdrant;

pub use edge::EdgeStore;
pub use qdrant::{QdrantOptions, QdrantStore};

/// Name of the dense vector in every collection.
pub const DENSE: &str = "dense";
/// Name of the BM25 sparse vector in every collection.
pub const SPARSE: &str = "bm25";
