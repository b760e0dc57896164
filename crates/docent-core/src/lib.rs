//! Domain types and the role traits every other docent crate is written against.
//!
//! This crate owns the vocabulary (documents, chunks, citations, search
//! requests) and the small traits (`Embedder`, `VectorStore`, `Generator`,
//! `Extractor`, `Chunker`) so that each engine can live in its own crate and
//! be swapped without the rest noticing. It deliberately holds no runtime,
//! model or database code: only `tokio`'s channel types, which need no runtime.

mod error;
mod ids;
mod model;
mod traits;

pub use error::{BoxError, Error, Result};
pub use ids::{ChunkId, DocumentId, content_hash};
pub use model::*;
pub use traits::*;
