//! The ingestion pipeline: sources → extract → chunk → embed → upsert, incremental.
//!
//! It owns everything between a folder of files and points in a store: the
//! format extractors, the token-aware chunker, the document catalogue that
//! makes re-ingestion incremental and crash-safe, and the pipeline that ties
//! them together. It depends only on `docent-core`'s traits, so the same
//! pipeline runs behind the CLI and the HTTP API with any embedder and store.

pub mod catalogue;
pub mod chunk;
pub mod extract;
mod pipeline;
pub mod testing;
mod watch;

pub use catalogue::{Catalogue, CatalogueError, DocumentRecord, DocumentStatus};
pub use chunk::TokenChunker;
pub use extract::{ExtractOptions, Extractors, WorkerCommand};
pub use pipeline::{
    DocumentMeta, FileError, FileFailure, IngestOptions, IngestSummary, Outcome, Pipeline,
    Progress, line_of, parse_date,
};
pub use watch::watch;
