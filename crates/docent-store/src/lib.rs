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
/// Every backend searches dense vectors through an int8 copy kept in RAM
/// (scalar quantization clipped to this quantile of the values) and
/// rescores the candidates with the f32 vectors.
pub(crate) const INT8_QUANTILE: f32 = 0.99;
