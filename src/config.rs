//! Configuration in layers: the compiled-in `config/default.toml`, then the
//! file given with `--config`, then `DOCENT__SECTION__KEY` environment
//! variables, then command-line flags. This is the only module that reads the
//! environment for settings.

use anyhow::{Context, Result};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The effective configuration. Field documentation lives in `config/default.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: String,
    pub models_dir: String,
    pub collection: String,
    pub models: ModelsConfig,
    pub embed: EmbedConfig,
    pub rerank: RerankConfig,
    pub chunk: ChunkConfig,
    pub ingest: IngestConfig,
    pub generate: GenerateConfig,
    pub query: docent_query::QuerySettings,
    pub retrieval: docent_query::RetrievalSettings,
    pub runtime: RuntimeConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
}

pub use docent_store::StoreKind;

/// `[store]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub qdrant: QdrantConfig,
}

/// `[store.qdrant]`. `Debug` redacts the API key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    pub url: String,
    pub api_key: String,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub collection_prefix: String,
    pub shard_number: u32,
    pub replication_factor: u32,
    pub write_consistency_factor: u32,
    pub on_disk_payload: bool,
    pub on_disk_vectors: bool,
    pub write_retries: u32,
    pub retry_backoff_ms: u64,
}

impl std::fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("collection_prefix", &self.collection_prefix)
            .field("shard_number", &self.shard_number)
            .field("replication_factor", &self.replication_factor)
            .field("write_consistency_factor", &self.write_consistency_factor)
            .field("on_disk_payload", &self.on_disk_payload)
            .field("on_disk_vectors", &self.on_disk_vectors)
            .field("write_retries", &self.write_retries)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .finish()
    }
}

impl QdrantConfig {
    /// Client options for the docent collection `collection`.
    pub fn options(&self, collection: &str) -> docent_store::QdrantOptions {
        use std::time::Duration;
        docent_store::QdrantOptions {
            url: self.url.clone(),
            api_key: (!self.api_key.is_empty()).then(|| self.api_key.clone()),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            collection: format!("{}{collection}", self.collection_prefix),
            shard_number: self.shard_number,
            replication_factor: self.replication_factor,
            write_consistency_factor: self.write_consistency_factor,
            on_disk_payload: self.on_disk_payload,
            on_disk_vectors: self.on_disk_vectors,
            write_retries: self.write_retries,
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
        }
    }
}

/// `[server]`. `Debug` redacts the API keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub api_keys: Vec<String>,
    pub keys_file: String,
    pub collections: Vec<String>,
    pub open_metrics: bool,
    pub open_health: bool,
    pub max_top_k: usize,
    pub max_tokens: usize,
    pub max_json_bytes: usize,
    pub max_upload_bytes: usize,
    pub request_timeout_secs: u64,
    pub max_searches_in_flight: usize,
    pub shutdown_grace_secs: u64,
    pub conversations: ConversationsConfig,
}

/// `[server.conversations]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsConfig {
    pub enabled: bool,
    pub max_conversations: usize,
    pub max_turns: usize,
    pub max_message_chars: usize,
    pub ttl_hours: u64,
}

impl ConversationsConfig {
    pub fn limits(&self) -> docent_server::ConversationLimits {
        docent_server::ConversationLimits {
            max_conversations: self.max_conversations.max(1),
            max_turns: self.max_turns.max(1),
            max_message_chars: self.max_message_chars.max(1),
            ttl: std::time::Duration::from_secs(self.ttl_hours.saturating_mul(3600)),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("keys_file", &self.keys_file)
            .field("collections", &self.collections)
            .field("open_metrics", &self.open_metrics)
            .field("open_health", &self.open_health)
            .field("max_top_k", &self.max_top_k)
            .field("max_tokens", &self.max_tokens)
            .field("max_json_bytes", &self.max_json_bytes)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("max_searches_in_flight", &self.max_searches_in_flight)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub python: String,
    pub default_pull: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    pub model: String,
    pub max_seq_len: usize,
    pub batch_size: usize,
    /// Matrix precision of the encoder: `f32`, `bf16`, `int8` or `auto`.
    #[serde(default)]
    pub precision: docent_embed::Precision,
}

/// `[rerank]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankConfig {
    pub model: String,
    pub candidates: usize,
    pub max_tokens: usize,
    /// ONNX Runtime's threads (runtime "onnxruntime" only).
    pub threads: usize,
    /// What runs the cross-encoder: docent's encoder or ONNX Runtime.
    #[serde(default)]
    pub runtime: RerankRuntime,
    /// Matrix precision on docent's encoder: `f32`, `bf16`, `int8` or `auto`.
    #[serde(default)]
    pub precision: docent_embed::Precision,
}

/// `[rerank] runtime`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RerankRuntime {
    /// docent's encoder where it runs the model's int8 integers (AVX-512
    /// VNNI), else ONNX Runtime: the faster of the two on each CPU.
    #[default]
    Auto,
    /// docent's BERT encoder on weights converted from `model.onnx`.
    Docent,
    /// ONNX Runtime, loaded from the pulled onnxruntime wheel's library.
    Onnxruntime,
}

impl RerankRuntime {
    pub fn as_str(self) -> &'static str {
        match self {
            RerankRuntime::Auto => "auto",
            RerankRuntime::Docent => "docent",
            RerankRuntime::Onnxruntime => "onnxruntime",
        }
    }
}

impl RerankConfig {
    /// The runtime that runs: `Auto` resolved for this CPU. On the AMD EPYC
    /// (docs/benchmarks.md, session 16) docent's encoder scored 50 pairs/s
    /// in int8 against ONNX Runtime's 42, but 37 in bf16 and 22 in f32.
    pub fn resolved_runtime(&self) -> RerankRuntime {
        match self.runtime {
            RerankRuntime::Auto => match self.precision.resolve_cross_encoder() {
                Ok(docent_embed::Precision::Int8) => RerankRuntime::Docent,
                _ => RerankRuntime::Onnxruntime,
            },
            explicit => explicit,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkConfig {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_file_bytes: u64,
    pub batch_tokens: usize,
    pub include_hidden: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub extract_threads: usize,
    pub extract_timeout_secs: u64,
    pub extract_memory_mb: u64,
    pub max_unzipped_bytes: u64,
    pub prune: bool,
    pub watch_debounce_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    pub model: String,
    pub queue_depth: usize,
    pub max_context: usize,
    pub prefill_chunk: usize,
    pub requantize_slow_formats: bool,
    pub dense_prefill: bool,
    /// Precision of the dense prompt weights: `f32`, `bf16` or `auto`.
    #[serde(default)]
    pub prefill_precision: docent_embed::Precision,
    /// Keep the re-quantized model and the dense prompt weights on disk
    /// beside the model (`.docent-cache/`) for the next load.
    #[serde(default = "yes")]
    pub weights_cache: bool,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Where answers are generated.
    #[serde(default)]
    pub kind: GenerateKind,
    /// `[generate.openai]`, used when `kind = "openai"`.
    pub openai: OpenAiConfig,
}

/// `generate.kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerateKind {
    /// The GGUF model `generate.model`, in this process.
    #[default]
    Local,
    /// An OpenAI-compatible server (`[generate.openai]`).
    Openai,
}

/// `[generate.openai]`. The API key itself is never part of the
/// configuration: it is read from the environment variable `api_key_env`
/// names, or from the file `api_key_file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    pub api_key_env: String,
    pub api_key_file: String,
    pub context_length: usize,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub retries: u32,
    pub logprobs: bool,
    pub tokenizer: String,
}

impl OpenAiConfig {
    /// The API key: the file's first line, else the environment variable.
    /// `None` when neither is set.
    pub fn api_key(&self) -> Result<Option<String>> {
        if !self.api_key_file.is_empty() {
            let text = std::fs::read_to_string(&self.api_key_file).with_context(|| {
                format!(
                    "cannot read generate.openai.api_key_file {}",
                    self.api_key_file
                )
            })?;
            let key = text.lines().next().unwrap_or_default().trim().to_string();
            anyhow::ensure!(
                !key.is_empty(),
                "generate.openai.api_key_file {} is empty",
                self.api_key_file
            );
            return Ok(Some(key));
        }
        if self.api_key_env.is_empty() {
            return Ok(None);
        }
        Ok(std::env::var(&self.api_key_env)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()))
    }
}

impl GenerateConfig {
    /// The sampling a request gets when it sets none of its own.
    pub fn sampling(&self) -> docent_core::SamplingParams {
        docent_core::SamplingParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: Some(self.top_p),
            seed: self.seed,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub threads: usize,
}

impl Config {
    /// Loads the layers; `file` is the `--config` argument.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            anyhow::ensure!(
                file.is_file(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("DOCENT__").split("__"));
        let config: Config = figment
            .extract()
            .context("invalid configuration (see config/default.toml for every key)")?;
        Ok(config)
    }

    /// The `[query]` settings for answering with the generation model
    /// `generator` (a manifest name, or a remote server's model name): an
    /// unset `abstain_check` becomes the check calibrated for that model in
    /// the manifest, and an unset `abstain_threshold` the threshold
    /// calibrated for that model and check, when it has them.
    pub fn query_for(&self, generator: &str) -> docent_query::QuerySettings {
        use docent_query::AbstainCheck;
        let mut query = self.query.clone();
        let manifest = docent_models::Manifest::builtin();
        let Some(calibrated) = manifest
            .get(generator)
            .ok()
            .and_then(|m| m.abstention.as_ref())
        else {
            return query;
        };
        // The manifest's check names are validated when it is parsed.
        let check = query
            .abstain_check
            .or_else(|| AbstainCheck::parse(&calibrated.check))
            .unwrap_or_default();
        query.abstain_check = Some(check);
        if query.abstain_threshold.is_none() {
            query.abstain_threshold = calibrated.threshold(check.as_str());
        }
        query
    }

    /// The generation model answers use: `generate.model`, or with
    /// `generate.kind = "openai"` the remote `generate.openai.model`.
    pub fn generation_model(&self) -> &str {
        match self.generate.kind {
            GenerateKind::Openai => &self.generate.openai.model,
            GenerateKind::Local => &self.generate.model,
        }
    }

    /// The data directory: flag/env `DOCENT_DATA_DIR`, then the config, then the per-user default.
    pub fn data_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| (!self.data_dir.is_empty()).then(|| PathBuf::from(&self.data_dir)))
            .unwrap_or_else(|| {
                dirs::data_dir()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("docent")
            })
    }

    /// The models directory: flag/env `DOCENT_MODELS_DIR`, then the config, then the per-user cache.
    pub fn models_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| (!self.models_dir.is_empty()).then(|| PathBuf::from(&self.models_dir)))
            .unwrap_or_else(docent_models::default_models_dir)
    }

    /// For crash tests only: `DOCENT_TEST_ABORT_AFTER_BATCHES=N` makes an
    /// ingest abort the process after N stored batches.
    pub fn test_abort_after_batches() -> Option<usize> {
        std::env::var("DOCENT_TEST_ABORT_AFTER_BATCHES")
            .ok()
            .and_then(|v| v.parse().ok())
    }

    /// Applies the thread setting to candle and rayon, unless the environment
    /// already has one. With `threads = 0` the count is the CPUs this process
    /// may use, and it is still written out: without the variable, candle
    /// 0.11 re-reads /proc/cpuinfo on every tensor operation, which made a
    /// 10-token query embedding 2.4× slower.
    pub fn thread_env(&self) -> Vec<(&'static str, String)> {
        let threads = if self.runtime.threads > 0 {
            self.runtime.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
            .into_iter()
            .filter(|key| std::env::var_os(key).is_none())
            .map(|key| (key, threads.to_string()))
            .collect()
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rerank_runtime_auto_takes_docent_only_where_it_runs_int8() {
        let mut c = Config::load(None).unwrap().rerank;
        assert_eq!(c.runtime, RerankRuntime::Auto);
        for explicit in [RerankRuntime::Docent, RerankRuntime::Onnxruntime] {
            c.runtime = explicit;
            assert_eq!(c.resolved_runtime(), explicit);
        }
        c.runtime = RerankRuntime::Auto;
        c.precision = docent_embed::Precision::F32;
        assert_eq!(c.resolved_runtime(), RerankRuntime::Onnxruntime);
        c.precision = docent_embed::Precision::Int8;
        let int8 = docent_ops::int8::available();
        assert_eq!(
            c.resolved_runtime() == RerankRuntime::Docent,
            int8,
            "int8 on this CPU: {int8}"
        );
    }

    #[test]
    fn defaults_parse() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.embed.model, "all-MiniLM-L6-v2");
        assert_eq!(c.chunk.max_tokens, 128);
        assert_eq!(c.retrieval.neighbours, 1);
        assert_eq!(c.query.top_k, 3);
        assert_eq!(c.rerank.model, "ms-marco-MiniLM-L-12-v2");
        assert_eq!(c.generation_model(), "qwen2.5-1.5b-instruct");
    }

    #[test]
    fn abstention_is_the_models_unless_configured() {
        use docent_query::AbstainCheck::{Reply, Support};
        let mut c = Config::load(None).unwrap();
        assert_eq!(
            (c.query.abstain_check, c.query.abstain_threshold),
            (None, None)
        );
        let used = |c: &Config, model| {
            let q = c.query_for(model);
            (q.abstain_check(), q.abstain_threshold())
        };
        assert_eq!(used(&c, "qwen2.5-1.5b-instruct"), (Support, 0.5));
        assert_eq!(used(&c, "qwen2.5-0.5b-instruct"), (Reply, 0.05));
        // No calibration (SmolLM2, a remote server's own name).
        let uncalibrated = (Reply, docent_query::UNCALIBRATED_ABSTAIN_THRESHOLD);
        assert_eq!(used(&c, "smollm2-135m-instruct"), uncalibrated);
        assert_eq!(used(&c, "llama-3-70b"), uncalibrated);
        // A configured check takes the model's threshold for that check,
        // or the uncalibrated one.
        c.query.abstain_check = Some(Reply);
        assert_eq!(used(&c, "qwen2.5-1.5b-instruct"), (Reply, 0.15));
        c.query.abstain_check = Some(Support);
        assert_eq!(
            used(&c, "qwen2.5-0.5b-instruct"),
            (Support, docent_query::UNCALIBRATED_ABSTAIN_THRESHOLD)
        );
        // A configured threshold applies to every model.
        c.query.abstain_threshold = Some(0.3);
        assert_eq!(used(&c, "qwen2.5-1.5b-instruct"), (Support, 0.3));
        assert_eq!(used(&c, "qwen2.5-0.5b-instruct"), (Support, 0.3));
    }

    #[test]
    fn api_keys_are_redacted_in_debug() {
        let mut c = Config::load(None).unwrap();
        c.server.api_keys = vec!["s3cret".into()];
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("1 redacted"),
            "{shown}"
        );
    }

    #[test]
    fn the_qdrant_api_key_is_redacted_and_the_collection_is_prefixed() {
        let mut c = Config::load(None).unwrap();
        assert_eq!(c.store.kind, StoreKind::Embedded);
        c.store.qdrant.api_key = "k3y".into();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("k3y") && shown.contains("<redacted>"),
            "{shown}"
        );
        let options = c.store.qdrant.options("notes");
        assert_eq!(options.collection, "docent_notes");
        assert_eq!(options.api_key.as_deref(), Some("k3y"));
    }

    #[test]
    fn the_cluster_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.store.kind, StoreKind::Qdrant);
        assert_eq!(
            docent_store::QdrantOptions::new(c.store.qdrant.url.clone(), "x").urls(),
            [
                "http://qdrant-1:6334",
                "http://qdrant-2:6334",
                "http://qdrant-3:6334"
            ]
        );
        assert!(c.store.qdrant.replication_factor >= 2);
    }

    #[test]
    fn the_openai_key_comes_from_a_file_or_the_environment_never_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::load(None).unwrap().generate.openai;
        c.api_key_env = "DOCENT_TEST_UNSET_KEY_VARIABLE".into();
        assert_eq!(c.api_key().unwrap(), None);
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        c.api_key_file = file.display().to_string();
        assert_eq!(c.api_key().unwrap().as_deref(), Some("sk-from-file"));
        std::fs::write(&file, "\n").unwrap();
        assert!(format!("{:#}", c.api_key().unwrap_err()).contains("is empty"));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/openai.toml");
        let c = Config::load(Some(&example)).unwrap();
        assert_eq!(c.generate.kind, GenerateKind::Openai);
        assert!(c.generate.openai.base_url.starts_with("http"));
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "[query]\ntop_k = 9\n").unwrap();
        assert_eq!(Config::load(Some(&good)).unwrap().query.top_k, 9);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[query]\ntop_kk = 9\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&bad)).unwrap_err());
        assert!(err.contains("top_kk"), "{err}");
    }
}
