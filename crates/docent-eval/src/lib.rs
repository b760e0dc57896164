//! Measurement: `docent eval` (retrieval and answer quality on SQuAD 2.0 or
//! BEIR data) and `docent bench` (throughput and latency that print JSON).
//!
//! It is split from the binary so the `docent` crate stays wiring and CLI,
//! and from the libraries it measures so none of them carries dataset
//! loaders or report formats. It reaches the configured models and stores
//! only through [`Workspace`], which the binary's wiring implements, so it
//! measures exactly what `docent ingest`, `ask` and `serve` run. Its errors
//! go straight to the person running it, so it uses `anyhow` like a binary.

mod abstention;
mod bench;
mod bench_http;
mod bench_load;
pub mod dataset;
mod eval;
mod followups;

pub use bench::BenchCommand;
pub use eval::EvalCommand;

use docent_core::{CollectionSpec, Generator, Reranker, SamplingParams, VectorStore};
use docent_ingest::{Collection, EmbeddingParts, Pipeline};
use docent_query::{Asker, QuerySettings, RetrievalSettings};
use std::path::Path;
use std::sync::Arc;

/// What eval and bench need from the binary's wiring (`Setup` implements
/// it): the configured models, stores and settings.
pub trait Workspace {
    /// The data directory: eval collections live under `eval/`, scratch
    /// ones beside the collections.
    fn data_dir(&self) -> &Path;
    /// The configured embedding model and its chunker; `batch_size`
    /// overrides the configured texts per forward pass.
    fn embedding(&self, batch_size: Option<usize>) -> anyhow::Result<EmbeddingParts>;
    /// Opens (or creates) collection `name` under `data_dir` on the
    /// configured backend, refusing one built with other settings.
    fn collection(
        &self,
        data_dir: &Path,
        name: &str,
        parts: &EmbeddingParts,
    ) -> anyhow::Result<Collection>;
    /// The ingestion pipeline over a collection, with the `[ingest]` settings.
    fn pipeline(&self, parts: &EmbeddingParts, collection: &Collection) -> Pipeline;
    /// A generation model by manifest name (default: the configured one).
    fn generator(&self, model: Option<&str>) -> anyhow::Result<Arc<dyn Generator>>;
    /// The configured reranker and how many candidates it reads, when one is.
    fn reranker(&self) -> anyhow::Result<Option<(Arc<dyn Reranker>, usize)>>;
    /// The generation models that are pulled.
    fn pulled_generators(&self) -> anyhow::Result<Vec<String>>;
    /// The configured settings measurements run with (for the configured
    /// generation model).
    fn settings(&self) -> Settings;
    /// The `[query]` settings for answering with the generation model
    /// `generator` (its calibrated abstention check and threshold, where the
    /// configuration sets none).
    fn query_for(&self, generator: &str) -> QuerySettings;
    /// What `docent serve` would share, over `collection`.
    fn server_state(
        &self,
        asker: Arc<Asker>,
        parts: &EmbeddingParts,
        collection: &Collection,
    ) -> Arc<docent_server::AppState>;
    /// A scratch collection `name` on a backend, for store benchmarks.
    fn scratch_store(
        &self,
        backend: docent_store::StoreKind,
        name: &str,
        spec: CollectionSpec,
    ) -> anyhow::Result<ScratchStore>;
}

/// The configuration measurements run with and report.
#[derive(Clone, Debug)]
pub struct Settings {
    pub query: QuerySettings,
    pub retrieval: RetrievalSettings,
    /// `[generate]` sampling.
    pub sampling: SamplingParams,
    /// `[ingest] batch_tokens`.
    pub batch_tokens: usize,
    /// `[ingest] extract_threads`.
    pub extract_threads: usize,
}

/// A store opened for a benchmark, with where it lives and how to remove it.
pub struct ScratchStore {
    pub store: Box<dyn VectorStore>,
    /// A folder or a server URL, for the report.
    pub location: String,
    /// Deletes the collection; call after dropping `store`.
    pub remove: Box<dyn FnOnce() -> anyhow::Result<()>>,
}

pub use eval::parse_style;

/// Runs an eval subcommand, printing its report.
pub fn eval(ws: &dyn Workspace, command: EvalCommand) -> anyhow::Result<()> {
    eval::run(ws, command)
}

/// Runs a bench subcommand, printing its figures as JSON.
pub fn bench(ws: &dyn Workspace, command: BenchCommand) -> anyhow::Result<()> {
    let report = bench::run(ws, command)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report["all_checks_passed"] == serde_json::json!(false) {
        let failed: Vec<&String> = report["checks"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, ok)| **ok != serde_json::json!(true))
            .map(|(name, _)| name)
            .collect();
        anyhow::bail!("load checks failed: {failed:?} (the report above has the figures)");
    }
    Ok(())
}
