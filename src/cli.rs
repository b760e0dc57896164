use crate::app::Setup;
use crate::config::Config;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use docent_core::{SamplingParams, SearchFilter};
use docent_ingest::Progress;
use docent_query::{AskEvent, AskRequest, AskResponse, Asker};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code when some files could not be ingested (the rest were).
const EXIT_PARTIAL: u8 = 3;

#[derive(Parser)]
#[command(
    name = "docent",
    version,
    about = "Ask questions about your documents, answered by a local model with citations"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Where collections are stored [default: per-user data directory]
    #[arg(long, global = true, env = "DOCENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where models are pulled to [default: per-user cache directory]
    #[arg(long, global = true, env = "DOCENT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// A TOML file overriding config/default.toml
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The collection to use [default: from config, "default"]
    #[arg(long, global = true)]
    collection: Option<String>,
}

#[derive(Subcommand)]
enum Command {
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
        command: crate::eval::EvalCommand,
    },
    /// Measure throughput (prints JSON)
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
    /// Inspect the documents of the collection
    Documents {
        #[command(subcommand)]
        command: DocumentsCommand,
    },
    /// Parse one PDF from stdin in isolation (run by `ingest` itself)
    #[command(hide = true)]
    ExtractWorker {
        /// Address space limit in MiB
        #[arg(long)]
        memory_mb: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DocumentsCommand {
    /// List the documents of the catalogue: status, chunks, errors
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download, assemble and verify models (default: the configured defaults)
    Pull {
        /// Model names from the manifest; `all` pulls every model
        names: Vec<String>,
    },
    /// List the models of the manifest and whether they are pulled
    List,
}

#[derive(Subcommand)]
enum StoreCommand {
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
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML
    Show,
}

#[derive(Args)]
struct IngestArgs {
    /// Files or folders to ingest
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Remove documents of these folders whose files are gone [config: ingest.prune]
    #[arg(long)]
    prune: bool,
    /// After ingesting, keep watching the folders and ingest changes until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// Only files whose path (relative to the folder) matches this glob; repeatable
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files whose relative path matches this glob; repeatable
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Largest file to read, in bytes [config: ingest.max_file_bytes]
    #[arg(long)]
    max_file_bytes: Option<u64>,
    /// Descend into hidden files and folders [config: ingest.include_hidden]
    #[arg(long)]
    include_hidden: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: server.bind from the config]
    #[arg(long)]
    bind: Option<String>,
}

#[derive(Args)]
struct AskArgs {
    /// The question
    question: String,
    /// Print one JSON object instead of streaming text
    #[arg(long)]
    json: bool,
    /// Passages to retrieve
    #[arg(long)]
    top_k: Option<usize>,
    /// Maximum answer length in tokens
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy)
    #[arg(long)]
    temperature: Option<f64>,
    /// Generation model to use instead of the configured one
    #[arg(long)]
    model: Option<String>,
    /// Only search documents whose source is exactly this
    #[arg(long)]
    source: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCENT_LOG")
        .unwrap_or_else(|_| "warn,qdrant_edge=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup(global: &Global) -> Result<Setup> {
    let config = Config::load(global.config.as_deref())?;
    apply_thread_env(&config);
    Ok(Setup {
        data_dir: config.data_dir(global.data_dir.as_deref()),
        models_dir: config.models_dir(global.models_dir.as_deref()),
        collection: global
            .collection
            .clone()
            .unwrap_or_else(|| config.collection.clone()),
        config,
    })
}

/// Thread counts for candle and rayon must be in the environment before their
/// pools start; this runs first thing, while the process has a single thread.
#[allow(unsafe_code)]
fn apply_thread_env(config: &Config) {
    for (key, value) in config.thread_env() {
        // SAFETY: called from main before any other thread exists.
        unsafe { std::env::set_var(key, value) };
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::ExtractWorker { memory_mb } = cli.command {
        return Ok(docent_ingest::extract::pdf::run_worker(memory_mb));
    }
    let setup = setup(&cli.global)?;
    match cli.command {
        Command::Models { command } => models(&setup, command),
        Command::Ingest(args) => ingest(&setup, args),
        Command::Ask(args) => ask(&setup, args),
        Command::Serve(args) => serve(&setup, args),
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            let mut shown = setup.config.clone();
            for key in &mut shown.server.api_keys {
                *key = "<redacted>".into();
            }
            print!("{}", toml::to_string_pretty(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command:
                StoreCommand::Migrate {
                    from,
                    to,
                    batch,
                    json,
                },
        } => {
            let summary = crate::migrate::run(&setup, from, to, batch)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "copied {} points and {} catalogue records from {} to {} in {:.1}s{}; counts verified",
                    summary.points,
                    summary.documents,
                    summary.from,
                    summary.to,
                    summary.seconds,
                    if summary.resumed { " (resumed)" } else { "" }
                );
                println!(
                    "to use it, set store.kind = \"{}\" (e.g. DOCENT__STORE__KIND={})",
                    to.name(),
                    to.name()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { command } => crate::eval::run(&setup, command),
        Command::Bench { command } => crate::bench::run(&setup, command),
        Command::Documents {
            command: DocumentsCommand::List { json },
        } => documents_list(&setup, json),
        Command::ExtractWorker { memory_mb } => {
            Ok(docent_ingest::extract::pdf::run_worker(memory_mb))
        }
    }
}

fn models(setup: &Setup, command: ModelsCommand) -> Result<ExitCode> {
    let manifest = docent_models::Manifest::builtin();
    let puller = docent_models::Puller::new(
        manifest.clone(),
        docent_models::PullOptions {
            models_dir: setup.models_dir.clone(),
            python: setup.config.models.python.clone(),
            progress: std::io::stderr().is_terminal(),
        },
    );
    match command {
        ModelsCommand::List => {
            println!("{:<24} {:<11} {:<8} description", "name", "kind", "pulled");
            for m in &manifest.models {
                let pulled = if puller.is_pulled(&m.name)? {
                    "yes"
                } else {
                    "no"
                };
                println!(
                    "{:<24} {:<11} {:<8} {}",
                    m.name,
                    format!("{:?}", m.kind).to_lowercase(),
                    pulled,
                    m.description
                );
            }
            println!("models directory: {}", setup.models_dir.display());
        }
        ModelsCommand::Pull { names } => {
            let names = if names.is_empty() {
                setup.config.models.default_pull.clone()
            } else if names.iter().any(|n| n == "all") {
                manifest.models.iter().map(|m| m.name.clone()).collect()
            } else {
                names
            };
            for name in names {
                let report = puller.pull(&name)?;
                if report.assembled.is_empty() {
                    println!("{name}: already pulled and verified");
                } else {
                    println!(
                        "{name}: assembled and verified {} ({} package downloads)",
                        report.assembled.join(", "),
                        report.downloads
                    );
                }
            }
            println!("models directory: {}", setup.models_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ingest(setup: &Setup, args: IngestArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let mut options = setup.ingest_options();
    options.prune |= args.prune;
    options.include_hidden |= args.include_hidden;
    options.include.extend(args.include.iter().cloned());
    options.exclude.extend(args.exclude.iter().cloned());
    if let Some(max) = args.max_file_bytes {
        options.max_file_bytes = max;
    }
    options.validate()?;
    let pipeline = setup.pipeline_with(&parts, &collection, options);
    let show = std::io::stderr().is_terminal() && !args.json;
    let mut total = docent_ingest::IngestSummary::default();
    for path in &args.paths {
        let bar = progress_bar(show, &path.display().to_string());
        let summary = pipeline
            .ingest_path(path, &bar.callback())
            .with_context(|| format!("ingesting {} stopped", path.display()))?;
        bar.finish();
        total.merge(summary);
    }
    if total.changed() {
        build_index(&*collection.store, show)?;
    }
    print_summary(&total, args.json)?;
    if args.watch {
        watch(setup, &pipeline, &*collection.store, &args.paths, args.json)?;
    }
    Ok(if total.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

/// Builds the store's search indexes after an ingest run that changed it,
/// with a spinner (indexing 100k chunks takes minutes).
pub fn build_index(store: &dyn docent_core::VectorStore, show: bool) -> Result<()> {
    let spinner = if show {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.set_message("building the search index");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let result = store.optimize();
    spinner.finish_and_clear();
    result.context(
        "building the search index failed; the chunks are stored and searchable without it, \
         and the next ingest run that changes the collection tries again",
    )?;
    tracing::info!(secs = started.elapsed().as_secs_f64(), "search index built");
    Ok(())
}

/// A progress bar fed by pipeline events (hidden when stderr is not a terminal).
struct IngestBar {
    bar: ProgressBar,
    started: std::time::Instant,
    chunks: std::cell::Cell<usize>,
}

fn progress_bar(show: bool, prefix: &str) -> IngestBar {
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files · {msg} · eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    IngestBar {
        bar,
        started: std::time::Instant::now(),
        chunks: std::cell::Cell::new(0),
    }
}

impl IngestBar {
    fn callback(&self) -> impl Fn(Progress) + '_ {
        move |event| match event {
            Progress::Found(n) => self.bar.set_length(n as u64),
            Progress::FileDone(_) => self.bar.inc(1),
            Progress::Chunks(n) => {
                self.chunks.set(self.chunks.get() + n);
                let rate =
                    self.chunks.get() as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
                self.bar
                    .set_message(format!("{} chunks, {rate:.0}/s", self.chunks.get()));
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn print_summary(total: &docent_ingest::IngestSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(total)?);
        return Ok(());
    }
    println!(
        "{} files: {} added, {} updated, {} unchanged, {} removed, {} failed ({} chunks embedded)",
        total.files_seen,
        total.added,
        total.updated,
        total.unchanged,
        total.removed,
        total.failed.len(),
        total.chunks_embedded
    );
    if !total.changed() && total.failed.is_empty() {
        println!("nothing changed");
    }
    for f in &total.failed {
        println!("  failed: {}: {}", f.path, f.reason);
    }
    Ok(())
}

/// Watches the folders until Ctrl-C or SIGTERM, ingesting what changes.
fn watch(
    setup: &Setup,
    pipeline: &docent_ingest::Pipeline,
    store: &dyn docent_core::VectorStore,
    paths: &[PathBuf],
    json: bool,
) -> Result<()> {
    let folders: Vec<&PathBuf> = paths.iter().filter(|p| p.is_dir()).collect();
    anyhow::ensure!(!folders.is_empty(), "--watch needs at least one folder");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let debounce = std::time::Duration::from_millis(setup.config.ingest.watch_debounce_ms);
    eprintln!("watching {} folder(s); Ctrl-C to stop", folders.len());
    {
        let stop = stop.clone();
        // Detached: it ends with the process if the watchers end first.
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(shutdown_signal());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    std::thread::scope(|scope| -> Result<()> {
        let stop = stop.as_ref();
        let watchers: Vec<_> = folders
            .iter()
            .map(|folder| {
                scope.spawn(move || {
                    let result = docent_ingest::watch(
                        pipeline,
                        folder,
                        debounce,
                        stop,
                        &|_| {},
                        &mut |run| match run {
                            Ok(summary) => {
                                let _ = print_summary(&summary, json);
                                if summary.changed()
                                    && let Err(e) = build_index(store, false)
                                {
                                    eprintln!("error: {e:#}");
                                }
                            }
                            Err(e) => eprintln!("error: ingesting changes failed: {e:#}"),
                        },
                    );
                    if result.is_err() {
                        // One folder cannot be watched: stop the others too.
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        for w in watchers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a watcher crashed"))??;
        }
        Ok(())
    })
}

fn documents_list(setup: &Setup, json: bool) -> Result<ExitCode> {
    let dir = setup.collection_dir();
    let path = dir.join("catalogue.redb");
    anyhow::ensure!(
        path.exists(),
        "collection '{}' has no documents yet (nothing at {}); run `docent ingest` first",
        setup.collection,
        dir.display()
    );
    let catalogue = docent_ingest::Catalogue::open(&path)?;
    let records = catalogue.list()?;
    if json {
        let rows: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "source": r.source,
                    "status": r.status,
                    "chunks": r.chunk_ids.len(),
                    "size": r.size,
                    "modified": r.modified,
                    "title": r.title,
                    "last_error": r.last_error,
                    "updated_at": r.updated_at,
                    "root": r.root,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<8} {:>6}  document", "status", "chunks");
    for r in &records {
        let status = serde_json::to_value(r.status)?;
        let note = match (&r.last_error, &r.title) {
            (Some(e), _) => format!("  ({e})"),
            (None, Some(t)) => format!("  \"{t}\""),
            _ => String::new(),
        };
        println!(
            "{:<8} {:>6}  {}{note}",
            status.as_str().unwrap_or("?"),
            r.chunk_ids.len(),
            r.id
        );
    }
    println!("{} documents", records.len());
    Ok(ExitCode::SUCCESS)
}

fn ask(setup: &Setup, args: AskArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let generator = setup.generator(args.model.as_deref())?;
    let g = &setup.config.generate;
    let asker = Asker::new(
        parts.embedder.clone(),
        collection.store.clone(),
        generator,
        setup.config.query.clone(),
        setup.config.retrieval.clone(),
    );
    let request = AskRequest {
        question: args.question.clone(),
        top_k: args.top_k,
        filter: SearchFilter {
            source: args.source.clone(),
            ..Default::default()
        },
        mode: None,
        sampling: SamplingParams {
            max_tokens: args.max_tokens.unwrap_or(g.max_tokens),
            temperature: args.temperature.unwrap_or(g.temperature),
            ..g.sampling()
        },
    };
    let stream = !args.json;
    let mut stdout = std::io::stdout().lock();
    let response = asker.ask(&request, |event| {
        if let (true, AskEvent::Text(text)) = (stream, event) {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
        }
    })?;
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&response)?)?;
    } else {
        writeln!(stdout)?;
        print_sources(&mut stdout, &response)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(setup: &Setup, args: ServeArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let generator = setup.generator(None)?;
    let g = &setup.config.generate;
    let s = &setup.config.server;
    let asker = Arc::new(Asker::new(
        parts.embedder.clone(),
        collection.store.clone(),
        generator,
        setup.config.query.clone(),
        setup.config.retrieval.clone(),
    ));
    let state = Arc::new(docent_server::AppState {
        asker,
        embedder: parts.embedder.clone(),
        store: collection.store.clone(),
        pipeline: Arc::new(setup.pipeline(&parts, &collection)),
        metrics: docent_server::Metrics::default(),
        limits: docent_server::Limits {
            max_top_k: s.max_top_k,
            max_tokens: s.max_tokens,
            max_json_bytes: s.max_json_bytes,
            max_upload_bytes: s.max_upload_bytes,
            request_timeout: std::time::Duration::from_secs(s.request_timeout_secs),
        },
        api_keys: s.api_keys.clone(),
        defaults: g.sampling(),
        collections: docent_server::Collections {
            dir: setup.collections_root(),
            current: setup.collection.clone(),
        },
        indexing: Default::default(),
    });
    let bind = args.bind.unwrap_or_else(|| s.bind.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let grace = std::time::Duration::from_secs(s.shutdown_grace_secs);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        eprintln!(
            "docent serving on http://{} (collection '{}')",
            listener.local_addr()?,
            setup.collection
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(docent_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        tokio::select! {
            result = &mut server => {
                return result.context("server task failed")?.context("server failed");
            }
            _ = shutdown_signal() => {}
        }
        eprintln!("docent: shutting down; finishing in-flight requests (up to {grace:?})");
        let _ = stop.send(());
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result
                .context("server task failed")?
                .context("server failed"),
            Err(_) => {
                eprintln!("docent: shutdown deadline passed; dropping the remaining requests");
                Ok(())
            }
        }
    })?;
    collection.store.flush()?;
    eprintln!("docent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn print_sources(out: &mut impl Write, response: &AskResponse) -> Result<()> {
    if response.citations.is_empty() {
        writeln!(out, "\n(no relevant passages found in the collection)")?;
        return Ok(());
    }
    let heading = if response.answerable {
        "Sources:"
    } else {
        "Possibly related:"
    };
    writeln!(out, "\n{heading}")?;
    for c in &response.citations {
        let lines = match c.page {
            Some(page) => format!("page {page}, lines {}-{}", c.line_start, c.line_end),
            None => format!("lines {}-{}", c.line_start, c.line_end),
        };
        let place = match &c.heading {
            Some(h) => format!("{} § {h}, {lines}", c.source),
            None => format!("{}, {lines}", c.source),
        };
        let mark = if c.cited { "" } else { " (not cited)" };
        writeln!(out, "[{}] {place} (score {:.2}){mark}", c.n, c.score)?;
    }
    Ok(())
}
