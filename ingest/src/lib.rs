//! The ingestion pipeline: sources → extract → chunk → embed → upsert, incremental.
//!
//! It owns everything between a folder of files and points in a store: the
//! format extractors, the token-aware chunker, the document catalogue that
//! makes re-ingestion incremental and crash-safe, and the pipeline that ties
//! them together. It depends only on `docent-core`'s traits, so the same
//! pipeline runs behind the CLI and the HTTP API with any embedder and store.
//! Every run is finished here, not by the caller: failures are recorded in
//! the catalogue, the store is flushed, and after a change the pipeline's
//! one index builder rebuilds the search index.

pub mod catalogue;
pub mod chunk;
mod collection;
pub mod extract;
mod pipeline;
pub mod testing;
mod watch;

pub use catalogue::{Catalogue, CatalogueError, DocumentRecord, DocumentStatus};
pub use chunk::TokenChunker;
pub use collection::{Collection, EmbeddingParts};
pub use extract::{ExtractOptions, Extractors, WorkerCommand};
pub use pipeline::{
    DocumentInput, DocumentMeta, DocumentReport, FileFailure, IngestOptions, IngestSummary,
    Outcome, Pipeline, Progress, line_of, parse_date,
};
pub use watch::watch;
