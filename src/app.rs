//! Wiring: builds the models, store, catalogue and pipelines from the config.

use crate::config::{Config, StoreKind};
use anyhow::{Context, Result};
use docent_core::{CollectionSpec, Generator, Reranker, VectorStore, collection_spec};
use docent_embed::{BertEmbedder, BertEmbedderOptions, load_tokenizer};
use docent_generate::{GgufGenerator, GgufOptions, OpenAiGenerator, OpenAiOptions, PromptCounter};
use docent_ingest::{
    Catalogue, ExtractOptions, IngestOptions, Pipeline, TokenChunker, WorkerCommand,
};
pub use docent_ingest::{Collection, EmbeddingParts};
use docent_store::{EdgeStore, QdrantStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Resolved locations and settings every command needs.
pub struct Setup {
    pub config: Config,
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub collection: String,
}

impl Setup {
    /// The folder holding one sub-folder per collection.
    pub fn collections_root(&self) -> PathBuf {
        self.data_dir.join("collections")
    }

    pub fn collection_dir(&self) -> PathBuf {
        self.collections_root().join(&self.collection)
    }

    /// The catalogue of the collection as held by one backend. Each backend
    /// has its own, since each describes what that store holds.
    pub fn catalogue_path(&self, kind: StoreKind) -> PathBuf {
        let dir = self.collection_dir();
        match kind {
            StoreKind::Embedded => dir.join("catalogue.redb"),
            StoreKind::Qdrant => dir.join("catalogue-qdrant.redb"),
        }
    }

    /// Where the embedded backend keeps the vectors.
    pub fn vectors_dir(&self) -> PathBuf {
        self.collection_dir().join("vectors")
    }

    /// Opens the collection's vectors on one backend: with `spec`, creating
    /// the collection when missing and refusing one built otherwise; without,
    /// an existing collection as it was built.
    pub fn open_store(
        &self,
        kind: StoreKind,
        spec: Option<CollectionSpec>,
    ) -> Result<Arc<dyn VectorStore>, docent_core::Error> {
        Ok(match kind {
            StoreKind::Embedded => {
                let dir = self.vectors_dir();
                Arc::new(match spec {
                    Some(spec) => EdgeStore::open(&dir, spec)?,
                    None => EdgeStore::open_existing(&dir)?,
                })
            }
            StoreKind::Qdrant => {
                let options = self.config.store.qdrant.options(&self.collection);
                Arc::new(match spec {
                    Some(spec) => QdrantStore::open(options, spec)?,
                    None => QdrantStore::open_existing(options)?,
                })
            }
        })
    }

    /// Where the collection lives on a backend, for messages.
    pub fn store_location(&self, kind: StoreKind) -> String {
        match kind {
            StoreKind::Embedded => self.vectors_dir().display().to_string(),
            StoreKind::Qdrant => {
                let q = &self.config.store.qdrant;
                format!(
                    "collection {}{} on Qdrant at {}",
                    q.collection_prefix, self.collection, q.url
                )
            }
        }
    }

    /// Pulls models of `manifest` into the models directory.
    pub fn puller(
        &self,
        manifest: &docent_models::Manifest,
        progress: bool,
    ) -> docent_models::Puller {
        docent_models::Puller::new(
            manifest.clone(),
            docent_models::PullOptions {
                models_dir: self.models_dir.clone(),
                python: self.config.models.python.clone(),
                progress,
            },
        )
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        let manifest = docent_models::Manifest::builtin();
        let spec = manifest.get(name)?;
        for file in &spec.files {
            docent_models::require_file(&self.models_dir, name, &file.name)?;
        }
        Ok(docent_models::model_dir(&self.models_dir, name))
    }

    pub fn embedding(&self) -> Result<EmbeddingParts> {
        self.embedding_with(self.config.embed.batch_size)
    }

    /// The embedding model with `batch_size` texts per forward pass.
    fn embedding_with(&self, batch_size: usize) -> Result<EmbeddingParts> {
        let name = &self.config.embed.model;
        let dir = self.model_dir(name)?;
        let mut options = BertEmbedderOptions::new(&dir, name.clone());
        options.max_seq_len = self.config.embed.max_seq_len;
        options.batch_size = batch_size;
        options.precision = self.config.embed.precision;
        let embedder = BertEmbedder::load(options)
            .with_context(|| format!("cannot load embedding model {name}"))?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let chunker = TokenChunker::new(
            tokenizer,
            self.config.chunk.max_tokens,
            self.config.chunk.overlap_tokens,
        )?;
        Ok(EmbeddingParts {
            embedder: Arc::new(embedder),
            chunker: Arc::new(chunker),
        })
    }

    /// Opens (or creates) the collection, refusing one built with other settings.
    pub fn collection(&self, parts: &EmbeddingParts) -> Result<Collection> {
        let dir = self.collection_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let kind = self.config.store.kind;
        let catalogue = Catalogue::open(&self.catalogue_path(kind))?;
        let spec = collection_spec(parts.embedder.as_ref(), parts.chunker.as_ref());
        let store = self.open_store(kind, Some(spec)).map_err(|e| match e {
            docent_core::Error::Incompatible(msg) => anyhow::anyhow!(
                "collection '{}' ({}) cannot be used: {msg}. Rebuild it: delete it and run `docent ingest` again, or pick another --collection",
                self.collection,
                self.store_location(kind),
            ),
            other => anyhow::Error::new(other),
        })?;
        Ok(Collection {
            store,
            catalogue: Arc::new(catalogue),
        })
    }

    pub fn pipeline(&self, parts: &EmbeddingParts, collection: &Collection) -> Pipeline {
        self.pipeline_with(parts, collection, self.ingest_options())
    }

    pub fn pipeline_with(
        &self,
        parts: &EmbeddingParts,
        collection: &Collection,
        options: IngestOptions,
    ) -> Pipeline {
        Pipeline::new(
            parts.embedder.clone(),
            collection.store.clone(),
            parts.chunker.clone(),
            collection.catalogue.clone(),
            options,
        )
    }

    /// The pipeline's options from `[ingest]`; PDFs are parsed in a child
    /// process running this executable's hidden `extract-worker` command.
    pub fn ingest_options(&self) -> IngestOptions {
        let c = &self.config.ingest;
        IngestOptions {
            max_file_bytes: c.max_file_bytes,
            batch_tokens: c.batch_tokens,
            include_hidden: c.include_hidden,
            include: c.include.clone(),
            exclude: c.exclude.clone(),
            extract_threads: c.extract_threads,
            extract: ExtractOptions {
                pdf_worker: WorkerCommand::current_exe().ok(),
                timeout: std::time::Duration::from_secs(c.extract_timeout_secs.max(1)),
                max_memory_bytes: c.extract_memory_mb.saturating_mul(1 << 20),
                max_unzipped_bytes: c.max_unzipped_bytes,
            },
            prune: c.prune,
            index_in_background: false,
            abort_after_batches: Config::test_abort_after_batches(),
        }
    }

    /// The configured generator: the local GGUF model `model` (default
    /// `generate.model`), or with `generate.kind = "openai"` the remote
    /// server, asked for `model` (default `generate.openai.model`).
    pub fn generator(&self, model: Option<&str>) -> Result<Arc<dyn Generator>> {
        if self.config.generate.kind == crate::config::GenerateKind::Openai {
            return Ok(Arc::new(self.remote_generator(model)?));
        }
        let name = model.unwrap_or(&self.config.generate.model);
        let path = self.model_dir(name)?.join("model.gguf");
        Ok(Arc::new(load_generator(&path, name, &self.config)?))
    }

    fn remote_generator(&self, model: Option<&str>) -> Result<OpenAiGenerator> {
        let c = &self.config.generate.openai;
        let mut options =
            OpenAiOptions::new(c.base_url.clone(), model.unwrap_or(&c.model).to_string());
        options.api_key = c.api_key()?;
        options.context_length = c.context_length;
        options.connect_timeout = std::time::Duration::from_secs(c.connect_timeout_secs.max(1));
        options.request_timeout = std::time::Duration::from_secs(c.request_timeout_secs.max(1));
        options.idle_timeout = std::time::Duration::from_secs(c.idle_timeout_secs.max(1));
        options.retries = c.retries;
        options.logprobs = c.logprobs;
        options.max_in_flight = self.config.generate.queue_depth.max(1);
        if !c.tokenizer.is_empty() {
            let path = self
                .model_dir(&c.tokenizer)
                .with_context(|| {
                    format!(
                        "generate.openai.tokenizer names {}; pull it with `docent models pull {}` \
                         or set the tokenizer to \"\" to estimate prompt sizes",
                        c.tokenizer, c.tokenizer
                    )
                })?
                .join("model.gguf");
            options.counter = Some(Arc::new(PromptCounter::load(&path)?));
        }
        Ok(OpenAiGenerator::new(options)?)
    }
}

impl Setup {
    /// Answers over `store` with the configured `[query]`, `[retrieval]`
    /// and `[rerank]`.
    pub fn asker(
        &self,
        parts: &EmbeddingParts,
        store: Arc<dyn VectorStore>,
        generator: Arc<dyn Generator>,
    ) -> Result<docent_query::Asker> {
        let query = self.config.query_for(generator.model_id());
        let asker = docent_query::Asker::new(
            parts.embedder.clone(),
            store,
            generator,
            query,
            self.config.retrieval.clone(),
        );
        Ok(match self.reranker()? {
            Some(reranker) => asker.with_reranker(reranker, self.config.rerank.candidates),
            None => asker,
        })
    }

    /// The configured cross-encoder, loaded once per process (`None` when
    /// `[rerank] model` is empty).
    pub fn reranker(&self) -> Result<Option<Arc<dyn Reranker>>> {
        type Loaded = (String, Arc<dyn Reranker>);
        static LOADED: std::sync::Mutex<Option<Loaded>> = std::sync::Mutex::new(None);
        let c = &self.config.rerank;
        if c.model.is_empty() {
            return Ok(None);
        }
        let key = format!("{} {:?} {}", c.model, c.runtime, c.precision);
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, reranker)) = loaded.as_ref()
            && *name == key
        {
            return Ok(Some(reranker.clone()));
        }
        let dir = self.model_dir(&c.model)?;
        let reranker: Arc<dyn Reranker> = match c.resolved_runtime() {
            crate::config::RerankRuntime::Docent | crate::config::RerankRuntime::Auto => {
                let mut options = docent_rerank::EncoderRerankerOptions::new(&dir, c.model.clone());
                options.max_tokens = c.max_tokens;
                options.precision = c.precision;
                Arc::new(
                    docent_rerank::EncoderReranker::load(options)
                        .with_context(|| format!("cannot load reranking model {}", c.model))?,
                )
            }
            crate::config::RerankRuntime::Onnxruntime => {
                let runtime_name = docent_models::Manifest::builtin()
                    .get(&c.model)?
                    .runtime
                    .clone()
                    .unwrap_or_else(|| "onnxruntime".into());
                let runtime = self.model_dir(&runtime_name)?.join("libonnxruntime.so");
                let mut options =
                    docent_rerank::OnnxRerankerOptions::new(&dir, runtime, c.model.clone());
                options.max_tokens = c.max_tokens;
                options.threads = c.threads;
                Arc::new(
                    docent_rerank::OnnxReranker::load(options)
                        .with_context(|| format!("cannot load reranking model {}", c.model))?,
                )
            }
        };
        *loaded = Some((key, reranker.clone()));
        Ok(Some(reranker))
    }

    /// The same configuration over collection `name` under `data_dir`.
    fn elsewhere(&self, data_dir: &Path, name: &str) -> Setup {
        Setup {
            config: self.config.clone(),
            data_dir: data_dir.to_path_buf(),
            models_dir: self.models_dir.clone(),
            collection: name.to_string(),
        }
    }

    /// One collection as the server serves it: answers over `collection`
    /// through `asker`, uploads through a pipeline that updates the search
    /// index in the background, and (with `keep_conversations`) its
    /// conversations.
    pub fn served(
        &self,
        asker: Arc<docent_query::Asker>,
        parts: &EmbeddingParts,
        collection: &Collection,
        keep_conversations: bool,
    ) -> Result<docent_server::Served> {
        let s = &self.config.server;
        let mut options = self.ingest_options();
        options.index_in_background = true;
        let conversations = if s.conversations.enabled && keep_conversations {
            let path = self.collection_dir().join("conversations.redb");
            Some(Arc::new(
                docent_server::ConversationStore::open(&path, s.conversations.limits())
                    .with_context(|| "cannot open the conversation store (set [server.conversations] enabled = false to run without)")?,
            ))
        } else {
            None
        };
        Ok(docent_server::Served {
            name: self.collection.clone(),
            asker,
            pipeline: Arc::new(self.pipeline_with(parts, collection, options)),
            conversations,
        })
    }

    /// The collections `docent serve` opens besides the default one:
    /// `[server] collections`, where `*` stands for every folder under the
    /// collections directory.
    pub fn other_served_names(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        for name in &self.config.server.collections {
            if name == "*" {
                for entry in std::fs::read_dir(self.collections_root())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if entry.file_type().is_ok_and(|t| t.is_dir())
                        && let Ok(name) = entry.file_name().into_string()
                        && !name.starts_with('.')
                    {
                        names.insert(name);
                    }
                }
            } else {
                check_collection_name(name)
                    .with_context(|| "in [server] collections".to_string())?;
                names.insert(name.clone());
            }
        }
        names.remove(&self.collection);
        Ok(names.into_iter().collect())
    }

    /// The same configuration over another collection of this data directory.
    pub fn for_collection(&self, name: &str) -> Setup {
        self.elsewhere(&self.data_dir, name)
    }

    /// The keys `docent serve` accepts: `[server] api_keys` and the keys file.
    pub fn key_ring(&self) -> Result<docent_server::KeyRing> {
        let fixed = self
            .config
            .server
            .api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| docent_server::keys::ApiKey::from_config(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(docent_server::KeyRing::new(fixed, Some(self.keys_file()))?)
    }

    /// `[server] keys_file`, by default `<data dir>/keys.toml`.
    pub fn keys_file(&self) -> PathBuf {
        let configured = &self.config.server.keys_file;
        if configured.is_empty() {
            self.data_dir.join("keys.toml")
        } else {
            PathBuf::from(configured)
        }
    }

    /// What the HTTP server shares: the served collections (the first is the
    /// default), the keys, and the `[server]` limits.
    pub fn server_state(
        &self,
        served: Vec<docent_server::Served>,
        parts: &EmbeddingParts,
        keys: docent_server::KeyRing,
    ) -> Arc<docent_server::AppState> {
        let s = &self.config.server;
        let default = served[0].name.clone();
        let limits = docent_server::Limits {
            max_top_k: s.max_top_k,
            max_tokens: s.max_tokens,
            max_json_bytes: s.max_json_bytes,
            max_upload_bytes: s.max_upload_bytes,
            request_timeout: std::time::Duration::from_secs(s.request_timeout_secs),
            max_searches_in_flight: s.max_searches_in_flight,
        };
        Arc::new(docent_server::AppState {
            collections: docent_server::Collections {
                dir: self.collections_root(),
                default,
                served: served
                    .into_iter()
                    .map(|s| (s.name.clone(), Arc::new(s)))
                    .collect(),
            },
            embedder: parts.embedder.clone(),
            metrics: docent_server::Metrics::default(),
            searches: docent_server::SearchSlots::new(&limits),
            limits,
            keys: Arc::new(keys),
            open_operations: docent_server::OpenOperations {
                metrics: s.open_metrics,
                health: s.open_health,
            },
            defaults: self.config.generate.sampling(),
        })
    }
}

/// A collection name is a folder name and a Qdrant collection name: 1–64
/// letters, digits, `.`, `_` or `-`, starting with a letter or digit, so
/// no name reaches outside the collections folder.
pub fn check_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "{name:?} is not a collection name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    }
}

pub fn load_generator(path: &Path, name: &str, config: &Config) -> Result<GgufGenerator> {
    let g = &config.generate;
    let mut options = GgufOptions::new(path, name);
    options.queue_depth = g.queue_depth;
    options.max_context = g.max_context;
    options.prefill_chunk = g.prefill_chunk;
    options.requantize_slow_formats = g.requantize_slow_formats;
    options.dense_prefill = g.dense_prefill;
    options.prefill_precision = g.prefill_precision;
    options.weights_cache = g.weights_cache;
    GgufGenerator::load(options).with_context(|| format!("cannot load generation model {name}"))
}

/// Evaluation and benchmarks run on exactly this wiring.
impl docent_eval::Workspace for Setup {
    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn embedding(&self, batch_size: Option<usize>) -> Result<EmbeddingParts> {
        self.embedding_with(batch_size.unwrap_or(self.config.embed.batch_size))
    }

    fn collection(
        &self,
        data_dir: &Path,
        name: &str,
        parts: &EmbeddingParts,
    ) -> Result<Collection> {
        self.elsewhere(data_dir, name).collection(parts)
    }

    fn pipeline(&self, parts: &EmbeddingParts, collection: &Collection) -> Pipeline {
        Setup::pipeline(self, parts, collection)
    }

    fn generator(&self, model: Option<&str>) -> Result<Arc<dyn Generator>> {
        Setup::generator(self, model)
    }

    fn query_for(&self, generator: &str) -> docent_query::QuerySettings {
        self.config.query_for(generator)
    }

    fn reranker(&self) -> Result<Option<(Arc<dyn Reranker>, usize)>> {
        Ok(Setup::reranker(self)?.map(|r| (r, self.config.rerank.candidates)))
    }

    fn pulled_generators(&self) -> Result<Vec<String>> {
        let manifest = docent_models::Manifest::builtin();
        let puller = self.puller(&manifest, false);
        Ok(manifest
            .models
            .iter()
            .filter(|m| m.kind == docent_models::ModelKind::Generation)
            .filter(|m| puller.is_pulled(&m.name).unwrap_or(false))
            .map(|m| m.name.clone())
            .collect())
    }

    fn settings(&self) -> docent_eval::Settings {
        docent_eval::Settings {
            query: self.config.query_for(self.config.generation_model()),
            retrieval: self.config.retrieval.clone(),
            sampling: self.config.generate.sampling(),
            batch_tokens: self.config.ingest.batch_tokens,
            extract_threads: self.config.ingest.extract_threads,
        }
    }

    fn server_state(
        &self,
        asker: Arc<docent_query::Asker>,
        parts: &EmbeddingParts,
        collection: &Collection,
    ) -> Arc<docent_server::AppState> {
        // Benchmarks serve scratch collections: no conversations are kept.
        let served = self
            .served(asker, parts, collection, false)
            .expect("no conversation store to open");
        Setup::server_state(self, vec![served], parts, docent_server::KeyRing::open())
    }

    fn scratch_store(
        &self,
        backend: StoreKind,
        name: &str,
        spec: CollectionSpec,
    ) -> Result<docent_eval::ScratchStore> {
        Ok(match backend {
            StoreKind::Embedded => {
                let dir = self.data_dir.join(name);
                let remove_dir = dir.clone();
                docent_eval::ScratchStore {
                    store: Box::new(EdgeStore::open(&dir, spec)?),
                    location: dir.display().to_string(),
                    remove: Box::new(move || {
                        std::fs::remove_dir_all(&remove_dir)
                            .with_context(|| format!("cannot remove {}", remove_dir.display()))
                    }),
                }
            }
            StoreKind::Qdrant => {
                let options = self.config.store.qdrant.options(name);
                let remove = options.clone();
                docent_eval::ScratchStore {
                    store: Box::new(QdrantStore::open(options, spec)?),
                    location: self.config.store.qdrant.url.clone(),
                    remove: Box::new(move || Ok(QdrantStore::delete_collection(&remove)?)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_collection_name;

    #[test]
    fn collection_names_cannot_leave_the_collections_folder() {
        for good in ["default", "squad2-dev-fee06218", "hr.docs", "a_b", "X1"] {
            assert!(check_collection_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "é",
            long.as_str(),
        ] {
            let e = check_collection_name(bad).unwrap_err().to_string();
            assert!(e.contains("not a collection name"), "{bad}: {e}");
        }
    }
}
