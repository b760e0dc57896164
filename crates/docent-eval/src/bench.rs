//! `docent bench`: reproducible throughput measurements that print JSON.

use crate::Workspace;
use anyhow::{Context, Result};
use clap::Subcommand;
use docent_core::{
    ChatMessage, Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, GenerationEvent,
    GenerationRequest, SamplingParams, SearchMode, SearchRequest, VectorStore,
};
use docent_store::StoreKind;
use serde_json::json;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Sentences per second of the embedding model
    Embed {
        /// Number of sentences
        #[arg(long, default_value_t = 1000)]
        sentences: usize,
        /// Words per sentence
        #[arg(long, default_value_t = 40)]
        words: usize,
        /// Texts per forward pass
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed repetitions (the median is reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Files and chunks per second of `docent ingest` on SQuAD paragraphs
    /// (one file each) and on generated multi-page PDFs, against pure
    /// embedding of the same chunks
    Ingest {
        /// SQuAD 2.0 JSON whose paragraphs become files
        #[arg(long, default_value = "../shared/data/squad/squad2-dev.json")]
        squad: std::path::PathBuf,
        /// Paragraphs to write (0: all)
        #[arg(long, default_value_t = 400)]
        paragraphs: usize,
        /// PDFs to generate
        #[arg(long, default_value_t = 40)]
        pdfs: usize,
        /// Pages per PDF
        #[arg(long, default_value_t = 8)]
        pages: usize,
        /// Repetitions per corpus, each an ingestion into a fresh collection
        /// followed by embedding its chunks alone (medians are reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Prompt-eval and decode tokens per second of each pulled generation model
    Generate {
        /// Models to measure [default: every pulled generation model]
        #[arg(long)]
        model: Vec<String>,
        /// Approximate prompt length in tokens
        #[arg(long, default_value_t = 1000)]
        prompt_tokens: usize,
        /// Tokens to decode
        #[arg(long, default_value_t = 128)]
        decode_tokens: usize,
        /// Timed repetitions (the median is reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Ingest throughput and search latency of a store backend on synthetic
    /// chunks (random unit vectors, English-like text), in a scratch
    /// collection deleted afterwards
    Store {
        /// Backend to measure; qdrant uses [store.qdrant] from the config
        #[arg(long, value_enum, default_value = "embedded")]
        backend: StoreKind,
        /// Chunks to ingest
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Vector dimension (384 is all-MiniLM-L6-v2's)
        #[arg(long, default_value_t = 384)]
        dimension: usize,
        /// Chunks per upsert
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Searches timed per mode
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Threads searching at once
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// Pairs per second of the configured reranker, and the time one
    /// question's candidates take, on SQuAD questions against passages of
    /// the chunk size
    Rerank {
        /// SQuAD 2.0 JSON the questions and passages come from
        #[arg(long, default_value = "../shared/data/squad/squad2-dev.json")]
        squad: std::path::PathBuf,
        /// Questions timed (each against `candidates` passages)
        #[arg(long, default_value_t = 20)]
        questions: usize,
        /// Passages per question [default: `[rerank] candidates`]
        #[arg(long)]
        candidates: Option<usize>,
        /// Timed repetitions (the median is reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Sustained mixed load against a running `docent serve`: asks (JSON,
    /// streamed, and streams the client hangs up on), searches, uploads,
    /// deletes and listings. Reports statuses and p50/p99 by route, the
    /// server's memory and descriptors, whether catalogue and store agree
    /// at the end, and the checks (exit status 1 when one fails)
    Load {
        /// The server, e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: String,
        /// Concurrent clients
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Measured seconds (after the warm-up)
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds of load before memory and descriptors are taken as the baseline
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        /// Most growth of resident memory from the end of the warm-up to
        /// the end, in percent, before the check fails
        #[arg(long, default_value_t = 10.0)]
        rss_tolerance: f64,
        /// The bearer key: it needs the read and ingest scopes (admin if
        /// /metrics is closed)
        #[arg(long, env = "DOCENT_BENCH_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// /v1/search latency with concurrent clients over a synthetic collection,
    /// /v1/ask time-to-first-token, and peak RSS, over real HTTP
    Http {
        /// Chunks in the synthetic collection
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Concurrent search clients
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Search requests in all
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Streaming asks timed for time-to-first-token
        #[arg(long, default_value_t = 5)]
        asks: usize,
        /// Instead of starting servers here, send searches to this running
        /// `docent serve` (e.g. http://127.0.0.1:8080) for --seconds, and
        /// count every status: how a deployment rides through a node
        /// failure. Needs no models.
        #[arg(long)]
        url: Option<String>,
        /// With --url: how long to send searches
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// With --url: SQuAD questions to search with [default: synthetic text]
        #[arg(long)]
        squad: Option<std::path::PathBuf>,
        /// With --url: the bearer key, if the server wants one
        #[arg(long, env = "DOCENT_BENCH_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

pub(crate) fn run(ws: &dyn Workspace, command: BenchCommand) -> Result<serde_json::Value> {
    Ok(match command {
        BenchCommand::Embed {
            sentences,
            words,
            batch,
            runs,
        } => embed(ws, sentences, words, batch, runs)?,
        BenchCommand::Ingest {
            squad,
            paragraphs,
            pdfs,
            pages,
            runs,
        } => ingest(ws, &squad, paragraphs, pdfs, pages, runs)?,
        BenchCommand::Generate {
            model,
            prompt_tokens,
            decode_tokens,
            runs,
        } => generate(ws, model, prompt_tokens, decode_tokens, runs)?,
        BenchCommand::Store {
            backend,
            chunks,
            dimension,
            batch,
            queries,
            clients,
        } => store(ws, backend, chunks, dimension, batch, queries, clients)?,
        BenchCommand::Rerank {
            squad,
            questions,
            candidates,
            runs,
        } => rerank(ws, &squad, questions, candidates, runs)?,
        BenchCommand::Load {
            url,
            clients,
            seconds,
            warmup,
            rss_tolerance,
            api_key,
            seed,
        } => crate::bench_load::run(&crate::bench_load::LoadOptions {
            url,
            clients,
            seconds,
            warmup_seconds: warmup,
            rss_tolerance_percent: rss_tolerance,
            api_key,
            seed,
        })?,
        BenchCommand::Http {
            clients,
            url: Some(url),
            seconds,
            squad,
            api_key,
            ..
        } => crate::bench_http::against(&url, clients, seconds, squad.as_deref(), api_key)?,
        BenchCommand::Http {
            chunks,
            clients,
            requests,
            asks,
            url: None,
            ..
        } => crate::bench_http::run(ws, chunks, clients, requests, asks)?,
    })
}

/// Times the reranker on real questions, each against passages cut from
/// SQuAD paragraphs to about the chunk size (the first ~128 words).
fn rerank(
    ws: &dyn Workspace,
    squad: &std::path::Path,
    questions: usize,
    candidates: Option<usize>,
    runs: usize,
) -> Result<serde_json::Value> {
    let (model, configured) = ws
        .reranker()?
        .context("no reranker is configured ([rerank] model is empty)")?;
    let candidates = candidates.unwrap_or(configured).max(1);
    let dataset = crate::dataset::load_squad(squad)?;
    let passages: Vec<String> = dataset
        .documents
        .iter()
        .map(|(_, text)| {
            text.split_whitespace()
                .take(128)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    anyhow::ensure!(
        !passages.is_empty(),
        "{} has no paragraphs",
        squad.display()
    );
    let asked: Vec<&str> = dataset
        .queries
        .iter()
        .take(questions.max(1))
        .map(|q| q.text.as_str())
        .collect();
    let pick = |q: usize| -> Vec<String> {
        (0..candidates)
            .map(|i| passages[(q * 31 + i * 7) % passages.len()].clone())
            .collect()
    };
    model.rerank(asked[0], &pick(0))?; // warm-up
    let mut rates = Vec::new();
    let mut per_question = Vec::new();
    for _ in 0..runs.max(1) {
        let mut times = Vec::with_capacity(asked.len());
        let t = Instant::now();
        for (q, question) in asked.iter().enumerate() {
            let one = Instant::now();
            model.rerank(question, &pick(q))?;
            times.push(one.elapsed().as_secs_f64() * 1000.0);
        }
        rates.push((asked.len() * candidates) as f64 / t.elapsed().as_secs_f64());
        per_question.push(median(times));
    }
    Ok(json!({
        "bench": "rerank",
        "model": model.model_id(),
        "questions": asked.len(),
        "candidates": candidates,
        "words_per_passage": 128,
        "runs_pairs_per_s": rates,
        "median_pairs_per_s": median(rates.clone()),
        "median_ms_per_question": median(per_question),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// The next value of a xorshift64 generator (the benchmarks' deterministic
/// pseudo-random source; `state` must not be 0).
pub(crate) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Deterministic English-like sentences of `words` words.
pub(crate) fn synthetic_sentences(count: usize, words: usize) -> Vec<String> {
    const VOCAB: &[&str] = &[
        "the",
        "customer",
        "reported",
        "that",
        "sync",
        "stopped",
        "after",
        "upgrading",
        "their",
        "laptop",
        "to",
        "a",
        "new",
        "version",
        "of",
        "operating",
        "system",
        "and",
        "support",
        "asked",
        "for",
        "logs",
        "from",
        "last",
        "week",
        "while",
        "billing",
        "team",
        "reviewed",
        "invoice",
        "with",
        "enterprise",
        "plan",
        "discount",
        "policy",
        "employees",
        "receive",
        "vacation",
        "days",
        "per",
        "year",
        "security",
        "incident",
        "must",
        "be",
        "escalated",
        "within",
        "minutes",
        "data",
        "stored",
        "in",
        "frankfurt",
        "region",
        "files",
        "can",
        "up",
        "gigabytes",
        "each",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            (0..words)
                .map(|_| VOCAB[(xorshift(&mut state) % VOCAB.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

/// Deterministic pseudo-random unit vectors.
fn unit_vectors(seed: u64, dimension: usize) -> impl FnMut() -> Vec<f32> {
    let mut state = seed | 1;
    move || {
        let mut v: Vec<f32> = (0..dimension)
            .map(|_| (xorshift(&mut state) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// The `q`-quantile (0..=1) of latencies, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn store(
    ws: &dyn Workspace,
    backend: StoreKind,
    chunks: usize,
    dimension: usize,
    batch: usize,
    queries: usize,
    clients: usize,
) -> Result<serde_json::Value> {
    let spec = CollectionSpec {
        embedding_model: "bench-synthetic".into(),
        dimension,
        chunk_max_tokens: 254,
        chunk_overlap_tokens: 32,
        schema_version: CollectionSpec::SCHEMA_VERSION,
    };
    let name = format!("bench_store_{}", std::process::id());
    let scratch = ws.scratch_store(backend, &name, spec)?;
    let result = measure(
        scratch.store.as_ref(),
        chunks,
        dimension,
        batch,
        queries,
        clients,
    );
    drop(scratch.store);
    (scratch.remove)()?;
    let mut report = result?;
    report["backend"] = json!(backend.name());
    report["where"] = json!(scratch.location);
    Ok(report)
}

fn measure(
    store: &dyn VectorStore,
    chunks: usize,
    dimension: usize,
    batch: usize,
    queries: usize,
    clients: usize,
) -> Result<serde_json::Value> {
    let words = 60;
    let mut vectors = unit_vectors(0x5EED, dimension);
    let started = Instant::now();
    let mut done = 0;
    while done < chunks {
        let n = batch.max(1).min(chunks - done);
        let texts = synthetic_sentences_from(done as u64, n, words);
        let points: Vec<EmbeddedChunk> = texts
            .into_iter()
            .enumerate()
            .map(|(i, sentence)| {
                let ordinal = done + i;
                // Common words plus two rarer topic terms, so keyword search
                // meets both long and short posting lists.
                let text = format!("{sentence} topic{} item{}", ordinal % 1000, ordinal % 9973);
                let document_id = DocumentId::new(format!("doc{}.md", ordinal / 20));
                EmbeddedChunk {
                    chunk: Chunk {
                        id: ChunkId::derive(&document_id, "bench", ordinal),
                        source: document_id.0.clone(),
                        document_id,
                        ordinal,
                        content_hash: "bench".into(),
                        end: text.len(),
                        text,
                        ..Default::default()
                    },
                    vector: vectors(),
                }
            })
            .collect();
        store.upsert(&points)?;
        done += n;
    }
    store.flush()?;
    let ingest_secs = started.elapsed().as_secs_f64();
    // The finished index: the embedded engine builds it now, a server
    // reports when its own optimizers are done.
    let optimizing = Instant::now();
    store.optimize()?;
    let optimize_secs = optimizing.elapsed().as_secs_f64();
    anyhow::ensure!(
        store.count()? == chunks,
        "the store holds {} chunks after ingesting {chunks}",
        store.count()?
    );

    let mut query_vectors = unit_vectors(0xC0FFEE, dimension);
    let requests: Vec<(String, Vec<f32>)> = synthetic_sentences_from(11, queries, 6)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let text = format!("{s} topic{} item{}", (i * 37) % 1000, (i * 101) % 9973);
            (text, query_vectors())
        })
        .collect();
    let clients = clients.max(1);
    let mut search = serde_json::Map::new();
    for mode in [SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid] {
        // `clients` threads take the queries in turn, each waiting for its
        // answer before sending the next.
        let started = Instant::now();
        let per_thread = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let requests = &requests;
                    scope.spawn(move || -> Result<Vec<f64>> {
                        let mut latencies = Vec::new();
                        for (text, vector) in requests.iter().skip(c).step_by(clients) {
                            let request = SearchRequest {
                                vector: vector.clone(),
                                text: text.clone(),
                                mode,
                                candidates: 50,
                                top_k: 5,
                                ..Default::default()
                            };
                            let t = Instant::now();
                            let hits = store.search(&request)?;
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                            anyhow::ensure!(!hits.is_empty(), "a {mode:?} search found nothing");
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a search thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let wall = started.elapsed().as_secs_f64();
        let mut latencies: Vec<f64> = per_thread.into_iter().flatten().collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        search.insert(
            format!("{mode:?}").to_lowercase(),
            json!({
                "p50_ms": quantile(&latencies, 0.50),
                "p99_ms": quantile(&latencies, 0.99),
                "mean_ms": latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
                "queries_per_s": latencies.len() as f64 / wall,
            }),
        );
    }
    Ok(json!({
        "chunks": chunks,
        "dimension": dimension,
        "batch": batch,
        "words_per_chunk": words,
        "ingest_seconds": ingest_secs,
        "ingest_points_per_s": chunks as f64 / ingest_secs,
        "optimize_seconds": optimize_secs,
        "queries_per_mode": queries,
        "clients": clients,
        "top_k": 5,
        "search": search,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Like [`synthetic_sentences`], but from a seed, so batches differ.
fn synthetic_sentences_from(seed: u64, count: usize, words: usize) -> Vec<String> {
    let pool = synthetic_sentences(count + (seed % 97) as usize, words);
    pool.into_iter().skip((seed % 97) as usize).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn threads() -> String {
    std::env::var("CANDLE_NUM_THREADS")
        .or_else(|_| std::env::var("RAYON_NUM_THREADS"))
        .unwrap_or_else(|_| "default (physical cores)".into())
}

fn embed(
    ws: &dyn Workspace,
    sentences: usize,
    words: usize,
    batch: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let parts = ws.embedding(Some(batch))?;
    let texts = synthetic_sentences(sentences, words);
    parts.embedder.embed(&texts[..batch.min(texts.len())])?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let vectors = parts.embedder.embed(&texts)?;
        anyhow::ensure!(
            vectors.len() == texts.len(),
            "embedder returned {} vectors",
            vectors.len()
        );
        rates.push(texts.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(json!({
        "bench": "embed",
        "model": parts.embedder.model_id(),
        "precision": parts.embedder.precision(),
        "cpu": docent_ops::cpu_name(),
        "cpu_features": docent_ops::cpu_features(),
        "kernels": docent_ops::kernels(),
        "sentences": sentences,
        "words_per_sentence": words,
        "batch": batch,
        "threads": threads(),
        "runs_sentences_per_s": rates,
        "median_sentences_per_s": median(rates.clone()),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Writes the inputs, ingests each corpus into a fresh collection, then
/// embeds the stored chunks again on their own for the ratio.
fn ingest(
    ws: &dyn Workspace,
    squad: &std::path::Path,
    paragraphs: usize,
    pdfs: usize,
    pages: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let work = ws
        .data_dir()
        .join(format!("bench-ingest-{}", std::process::id()));
    let result = ingest_in(ws, &work, squad, paragraphs, pdfs, pages, runs.max(1));
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn ingest_in(
    ws: &dyn Workspace,
    work: &std::path::Path,
    squad: &std::path::Path,
    paragraphs: usize,
    pdfs: usize,
    pages: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(squad)
        .with_context(|| format!("cannot read {}", squad.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let contexts: Vec<String> = json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|article| article["paragraphs"].as_array().into_iter().flatten())
        .filter_map(|p| p["context"].as_str().map(str::to_string))
        .collect();
    let take = if paragraphs == 0 {
        contexts.len()
    } else {
        paragraphs.min(contexts.len())
    };
    let squad_dir = work.join("squad");
    std::fs::create_dir_all(&squad_dir)?;
    for (i, c) in contexts[..take].iter().enumerate() {
        std::fs::write(squad_dir.join(format!("p{i:05}.txt")), c)?;
    }
    let pdf_dir = work.join("pdfs");
    std::fs::create_dir_all(&pdf_dir)?;
    for i in 0..pdfs {
        let page_texts: Vec<String> = (0..pages)
            .map(|p| contexts[(i * pages + p) % contexts.len().max(1)].clone())
            .collect();
        std::fs::write(
            pdf_dir.join(format!("report-{i:04}.pdf")),
            docent_ingest::testing::simple_pdf(&page_texts, Some(&format!("Report {i}"))),
        )?;
    }
    let parts = ws.embedding(None)?;
    let mut corpora = Vec::new();
    for (name, dir) in [
        ("squad_paragraphs", &squad_dir),
        ("multi_page_pdfs", &pdf_dir),
    ] {
        // Each run ingests into a fresh collection, then embeds the same
        // chunks alone: the two alternate, so a noisy neighbour hits both.
        let (mut ingest_rates, mut embed_rates, mut ratios, mut seconds) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // CPU seconds per chunk of the ingest and of embedding alone: their
        // quotient is the ratio the ingest would reach if it kept the cores
        // as busy as embedding alone does (extraction, chunking and storing
        // take CPU from the embedder on a machine with few cores).
        let (mut ingest_cpu, mut embed_cpu) = (Vec::new(), Vec::new());
        let (mut files, mut chunks) = (0, 0);
        for run in 0..runs {
            let collection =
                ws.collection(&work.join(format!("data-{name}-{run}")), "bench", &parts)?;
            let pipeline = ws.pipeline(&parts, &collection);
            // Warm the model so both figures below are steady state: whole
            // batches of paragraphs (longer than the chunks), because the
            // first batches of a process grow the allocator's memory and
            // the kernels' buffers. Warmed with four short texts, the first
            // run's first batch embedded at 84 chunks/s against 102 after.
            parts.embedder.embed(&contexts[..64.min(contexts.len())])?;
            let cpu_start = docent_ops::cpu_seconds();
            let t = Instant::now();
            // Up to the search index build, which the figures (wall and
            // CPU) leave out.
            let stored = std::cell::Cell::new(None);
            let summary = pipeline.ingest_path(dir, &|event| {
                if let docent_ingest::Progress::Indexing = event {
                    stored.set(Some((t.elapsed(), docent_ops::cpu_seconds())));
                }
            })?;
            let (elapsed, cpu_end) = stored
                .get()
                .unwrap_or_else(|| (t.elapsed(), docent_ops::cpu_seconds()));
            let secs = elapsed.as_secs_f64();
            let ingest_cpu_s = cpu_start.zip(cpu_end).map(|(a, b)| b - a);
            anyhow::ensure!(
                summary.failed.is_empty(),
                "bench files failed: {:?}",
                summary.failed
            );
            // The same chunks, embedded alone.
            let mut texts = Vec::new();
            for record in collection.catalogue.list()? {
                let ordinals: Vec<usize> = (0..record.chunk_ids.len()).collect();
                for chunk in collection.store.chunks_by_ordinal(&record.id, &ordinals)? {
                    texts.push(match &chunk.heading {
                        Some(h) if !chunk.text.starts_with('#') => format!("{h}\n{}", chunk.text),
                        _ => chunk.text,
                    });
                }
            }
            let cpu_start = docent_ops::cpu_seconds();
            let t = Instant::now();
            parts.embedder.embed(&texts)?;
            let embed_secs = t.elapsed().as_secs_f64();
            let embed_cpu_s = cpu_start.zip(docent_ops::cpu_seconds()).map(|(a, b)| b - a);
            if let (Some(ingest), Some(embed)) = (ingest_cpu_s, embed_cpu_s) {
                ingest_cpu.push(ingest / summary.chunks_embedded.max(1) as f64 * 1e3);
                embed_cpu.push(embed / texts.len().max(1) as f64 * 1e3);
            }
            let chunks_per_s = summary.chunks_embedded as f64 / secs;
            let embed_chunks_per_s = texts.len() as f64 / embed_secs;
            ingest_rates.push(chunks_per_s);
            embed_rates.push(embed_chunks_per_s);
            ratios.push(chunks_per_s / embed_chunks_per_s);
            seconds.push(secs);
            (files, chunks) = (summary.files_seen, summary.chunks_embedded);
        }
        let secs = median(seconds.clone());
        corpora.push(json!({
            "corpus": name,
            "files": files,
            "chunks": chunks,
            "seconds": secs,
            "files_per_s": files as f64 / secs,
            "chunks_per_s": median(ingest_rates.clone()),
            "embed_only_chunks_per_s": median(embed_rates.clone()),
            "ingest_to_embed_ratio": median(ratios.clone()),
            "runs_chunks_per_s": ingest_rates,
            "runs_embed_only_chunks_per_s": embed_rates,
            "runs_ingest_to_embed_ratio": ratios,
            "ingest_cpu_ms_per_chunk": (!ingest_cpu.is_empty()).then(|| median(ingest_cpu.clone())),
            "embed_only_cpu_ms_per_chunk": (!embed_cpu.is_empty()).then(|| median(embed_cpu.clone())),
            "runs_cpu_ratio": ingest_cpu
                .iter()
                .zip(&embed_cpu)
                .map(|(i, e)| e / i)
                .collect::<Vec<f64>>(),
        }));
    }
    Ok(json!({
        "bench": "ingest",
        "model": parts.embedder.model_id(),
        "precision": parts.embedder.precision(),
        "cpu": docent_ops::cpu_name(),
        "batch_tokens": ws.settings().batch_tokens,
        "extract_threads": ws.settings().extract_threads,
        "threads": threads(),
        "pdf_pages": pages,
        "corpora": corpora,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn generate(
    ws: &dyn Workspace,
    models: Vec<String>,
    prompt_tokens: usize,
    decode_tokens: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let models = if models.is_empty() {
        ws.pulled_generators()?
    } else {
        models
    };
    anyhow::ensure!(
        !models.is_empty(),
        "no generation model is pulled; run `docent models pull`"
    );
    let mut results = Vec::new();
    for name in models {
        let load = Instant::now();
        let generator = ws
            .generator(Some(&name))
            .with_context(|| format!("loading {name}"))?;
        let load_ms = load.elapsed().as_secs_f64() * 1000.0;
        // A long user message of roughly `prompt_tokens` tokens.
        let filler = synthetic_sentences(prompt_tokens, 12).join(" ");
        let mut text = String::new();
        for word in filler.split(' ') {
            if generator.count_tokens(&text)? >= prompt_tokens.saturating_sub(40) {
                break;
            }
            text.push_str(word);
            text.push(' ');
        }
        let (mut prefill, mut decode, mut prompt_len) = (Vec::new(), Vec::new(), 0);
        for run in 0..runs.max(1) {
            // Each run's text differs from its first word, so the KV cache's
            // prefix reuse only skips the chat template's opening tokens; the
            // rate counts the tokens actually evaluated.
            let messages = vec![ChatMessage::user(format!(
                "Text {run}: {text}\nSummarise the text above in detail."
            ))];
            let mut rx = generator.generate(GenerationRequest {
                messages,
                sampling: SamplingParams {
                    max_tokens: decode_tokens,
                    temperature: 0.0,
                    top_p: None,
                    seed: 1,
                },
                probe: None,
            })?;
            while let Some(event) = rx.blocking_recv() {
                match event {
                    GenerationEvent::Text(_) | GenerationEvent::Probe { .. } => {}
                    GenerationEvent::Done { stats, .. } => {
                        prompt_len = stats.prompt_tokens;
                        let evaluated = stats.prompt_tokens - stats.cached_prompt_tokens;
                        prefill.push(evaluated as f64 / (stats.prompt_eval_ms / 1000.0));
                        decode.push(stats.completion_tokens as f64 / (stats.generate_ms / 1000.0));
                    }
                    GenerationEvent::Failed(e) => anyhow::bail!("generation failed: {e}"),
                }
            }
        }
        results.push(json!({
            "model": name,
            "prefill_precision": generator.prefill_precision(),
            "weights_cache": generator.weights_cache(),
            "load_ms": load_ms,
            "prompt_tokens": prompt_len,
            "decode_tokens": decode_tokens,
            "runs_prompt_tok_per_s": prefill,
            "runs_decode_tok_per_s": decode,
            "median_prompt_tok_per_s": median(prefill.clone()),
            "median_decode_tok_per_s": median(decode.clone()),
        }));
    }
    Ok(
        json!({ "bench": "generate", "cpu": docent_ops::cpu_name(), "cpu_features": docent_ops::cpu_features(), "kernels": docent_ops::kernels(), "threads": threads(), "models": results, "peak_rss_mib": peak_rss_mib() }),
    )
}

#[cfg(test)]
mod store_tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }

    #[test]
    fn synthetic_vectors_are_unit_length_and_distinct() {
        let mut next = unit_vectors(1, 8);
        let (a, b) = (next(), next());
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        assert_ne!(a, b);
    }
}
