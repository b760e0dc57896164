//! The command line: every command, argument and flag `docent` accepts.
//! What they do is in `commands/`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "docent",
    version,
    about = "Ask questions about your documents, answered by a local model with citations"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Where collections are stored [default: per-user data directory]
    #[arg(long, global = true, env = "DOCENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where models are pulled to [default: per-user cache directory]
    #[arg(long, global = true, env = "DOCENT_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// A TOML file overriding config/default.toml
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The collection to use [default: from config, "default"]
    #[arg(long, global = true)]
    pub collection: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pull and list models
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Ingest files or folders into the collection
    Ingest(IngestArgs),
    /// Ask a question about the ingested documents
    Ask(AskArgs),
    /// Serve the HTTP API
    Serve(ServeArgs),
    /// Manage the API keys of `docent serve` (the keys file keeps digests only)
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the vector store
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Measure retrieval and answer quality on a SQuAD 2.0 or BEIR dataset
    Eval {
        #[command(subcommand)]
        command: docent_eval::EvalCommand,
    },
    /// Measure throughput (prints JSON)
    Bench {
        #[command(subcommand)]
        command: docent_eval::BenchCommand,
    },
    /// Inspect the documents of the collection
    Documents {
        #[command(subcommand)]
        command: DocumentsCommand,
    },
    /// Parse PDFs sent on stdin, one after another, in isolation (run by
    /// `ingest` itself)
    #[command(hide = true)]
    ExtractWorker {
        /// Address space limit in MiB
        #[arg(long)]
        memory_mb: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum DocumentsCommand {
    /// List the documents of the catalogue: status, chunks, errors
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download, assemble and verify models (default: the configured defaults)
    Pull {
        /// Model names from the manifest; `all` pulls every model
        names: Vec<String>,
    },
    /// List the models of the manifest and whether they are pulled
    List,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy the collection to another backend (vectors, BM25, payloads and
    /// catalogue; nothing is embedded again). Resumable: run it again after
    /// an interruption. Stop ingestion into the source while it runs
    Migrate {
        /// Backend to copy from
        #[arg(long, value_enum)]
        from: crate::config::StoreKind,
        /// Backend to copy to (its settings come from the config, [store.qdrant])
        #[arg(long, value_enum)]
        to: crate::config::StoreKind,
        /// Points per page
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Compare the collection on two backends: every point (payload, dense
    /// and BM25 vectors), every catalogue record, and the top 10 of the same
    /// searches in each mode. Exits with status 1 when they differ
    Verify {
        /// One backend
        #[arg(long, value_enum)]
        from: crate::config::StoreKind,
        /// The other backend
        #[arg(long, value_enum)]
        to: crate::config::StoreKind,
        /// Searches per mode (their texts are the opening words of chunks
        /// spread over the collection)
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML
    Show,
}

#[derive(Args)]
pub struct IngestArgs {
    /// Files or folders to ingest
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Remove documents of these folders whose files are gone [config: ingest.prune]
    #[arg(long)]
    pub prune: bool,
    /// After ingesting, keep watching the folders and ingest changes until Ctrl-C
    #[arg(long)]
    pub watch: bool,
    /// Only files whose path (relative to the folder) matches this glob; repeatable
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files whose relative path matches this glob; repeatable
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Largest file to read, in bytes [config: ingest.max_file_bytes]
    #[arg(long)]
    pub max_file_bytes: Option<u64>,
    /// Descend into hidden files and folders [config: ingest.include_hidden]
    #[arg(long)]
    pub include_hidden: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: server.bind from the config]
    #[arg(long)]
    pub bind: Option<String>,
}

#[derive(Args)]
pub struct AskArgs {
    /// The question
    pub question: String,
    /// Print one JSON object instead of streaming text
    #[arg(long)]
    pub json: bool,
    /// Passages to retrieve
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Maximum answer length in tokens
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy)
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Generation model to use instead of the configured one
    #[arg(long)]
    pub model: Option<String>,
    /// Only search documents whose source is exactly this
    #[arg(long)]
    pub source: Option<String>,
    /// concise (the answer in a few words, then at most one sentence of
    /// support) or detailed [default: query.answer_style]
    #[arg(long, value_parser = docent_eval::parse_style)]
    pub style: Option<docent_query::AnswerStyle>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown once; the file keeps its digest).
    /// A running server picks it up within seconds
    Add {
        /// A name for the key (who or what uses it)
        name: String,
        /// What it may do: read, ingest, admin (repeat or comma-separate)
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Collections it may use (repeat or comma-separate); "*" for all
        #[arg(long = "collection", value_delimiter = ',', required = true)]
        collections: Vec<String>,
        /// Replace a key of the same name (rotation: the old secret stops working)
        #[arg(long)]
        replace: bool,
    },
    /// List the keys: names, scopes and collections (never secrets)
    List,
    /// Revoke a key
    Remove { name: String },
    /// Print the digest of a key for `[server] api_keys` ("sha256:...");
    /// reads the key from standard input
    Hash,
}
