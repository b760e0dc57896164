//! Wiring: builds the models, store, catalogue and pipelines from the config.

use crate::config::{Config, StoreKind};
use anyhow::{Context, Result};
use docent_core::{Chunker, CollectionSpec, Embedder, Generator, VectorStore, collection_spec};
use docent_embed::{BertEmbedder, BertEmbedderOptions, load_tokenizer};
use docent_generate::{GgufGenerator, GgufOptions};
use docent_ingest::{
    Catalogue, ExtractOptions, IngestOptions, Pipeline, TokenChunker, WorkerCommand,
};
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

/// The embedding side: model plus the chunker that sizes text for it.
pub struct EmbeddingParts {
    pub embedder: Arc<dyn Embedder>,
    pub chunker: Arc<dyn Chunker>,
}

/// An opened collection: vectors plus catalogue.
pub struct Collection {
    pub store: Arc<dyn VectorStore>,
    pub catalogue: Arc<Catalogue>,
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

    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        let manifest = docent_models::Manifest::builtin();
        let spec = manifest.get(name)?;
        for file in &spec.files {
            docent_models::require_file(&self.models_dir, name, &file.name)?;
        }
        Ok(docent_models::model_dir(&self.models_dir, name))
    }

    pub fn embedding(&self) -> Result<EmbeddingParts> {
        let name = &self.config.embed.model;
        let dir = self.model_dir(name)?;
        let mut options = BertEmbedderOptions::new(&dir, name.clone());
        options.max_seq_len = self.config.embed.max_seq_len;
        options.batch_size = self.config.embed.batch_size;
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
            abort_after_batches: Config::test_abort_after_batches(),
        }
    }

    pub fn generator(&self, model: Option<&str>) -> Result<Arc<dyn Generator>> {
        let name = model.unwrap_or(&self.config.generate.model);
        let path = self.model_dir(name)?.join("model.gguf");
        Ok(Arc::new(load_generator(&path, name, &self.config)?))
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
    GgufGenerator::load(options).with_context(|| format!("cannot load generation model {name}"))
}
