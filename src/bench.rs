//! `docent bench`: reproducible throughput measurements that print JSON.

use crate::app::Setup;
use anyhow::{Context, Result};
use clap::Subcommand;
use docent_core::{ChatMessage, GenerationEvent, GenerationRequest, SamplingParams};
use serde_json::json;
use std::process::ExitCode;
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
    },
}

pub fn run(setup: &Setup, command: BenchCommand) -> Result<ExitCode> {
    let report = match command {
        BenchCommand::Embed {
            sentences,
            words,
            batch,
            runs,
        } => embed(setup, sentences, words, batch, runs)?,
        BenchCommand::Ingest {
            squad,
            paragraphs,
            pdfs,
            pages,
        } => ingest(setup, &squad, paragraphs, pdfs, pages)?,
        BenchCommand::Generate {
            model,
            prompt_tokens,
            decode_tokens,
            runs,
        } => generate(setup, model, prompt_tokens, decode_tokens, runs)?,
        BenchCommand::Http {
            chunks,
            clients,
            requests,
            asks,
        } => crate::bench_http::run(setup, chunks, clients, requests, asks)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Deterministic English-like sentences of `words` words.
pub fn synthetic_sentences(count: usize, words: usize) -> Vec<String> {
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
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    VOCAB[(state % VOCAB.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
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
    setup: &Setup,
    sentences: usize,
    words: usize,
    batch: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let mut setup_batch = setup.config.clone();
    setup_batch.embed.batch_size = batch;
    let local = Setup {
        config: setup_batch,
        data_dir: setup.data_dir.clone(),
        models_dir: setup.models_dir.clone(),
        collection: setup.collection.clone(),
    };
    let parts = local.embedding()?;
    let texts = synthetic_sentences(sentences, words);
    parts
        .embedder
        .embed(&texts[..batch.min(texts.len())].to_vec())?; // warm-up
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
    setup: &Setup,
    squad: &std::path::Path,
    paragraphs: usize,
    pdfs: usize,
    pages: usize,
) -> Result<serde_json::Value> {
    let work = setup
        .data_dir
        .join(format!("bench-ingest-{}", std::process::id()));
    let result = ingest_in(setup, &work, squad, paragraphs, pdfs, pages);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn ingest_in(
    setup: &Setup,
    work: &std::path::Path,
    squad: &std::path::Path,
    paragraphs: usize,
    pdfs: usize,
    pages: usize,
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
    let parts = setup.embedding()?;
    let mut corpora = Vec::new();
    for (name, dir) in [
        ("squad_paragraphs", &squad_dir),
        ("multi_page_pdfs", &pdf_dir),
    ] {
        let local = Setup {
            config: setup.config.clone(),
            data_dir: work.join(format!("data-{name}")),
            models_dir: setup.models_dir.clone(),
            collection: "bench".into(),
        };
        let collection = local.collection(&parts)?;
        let pipeline = local.pipeline(&parts, &collection);
        let t = Instant::now();
        let summary = pipeline.ingest_path(dir, &|_| {})?;
        let secs = t.elapsed().as_secs_f64();
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
        let t = Instant::now();
        parts.embedder.embed(&texts)?;
        let embed_secs = t.elapsed().as_secs_f64();
        let chunks_per_s = summary.chunks_embedded as f64 / secs;
        let embed_chunks_per_s = texts.len() as f64 / embed_secs;
        corpora.push(json!({
            "corpus": name,
            "files": summary.files_seen,
            "chunks": summary.chunks_embedded,
            "seconds": secs,
            "files_per_s": summary.files_seen as f64 / secs,
            "chunks_per_s": chunks_per_s,
            "embed_only_chunks_per_s": embed_chunks_per_s,
            "ingest_to_embed_ratio": chunks_per_s / embed_chunks_per_s,
        }));
    }
    Ok(json!({
        "bench": "ingest",
        "model": parts.embedder.model_id(),
        "batch_tokens": setup.config.ingest.batch_tokens,
        "extract_threads": setup.config.ingest.extract_threads,
        "threads": threads(),
        "pdf_pages": pages,
        "corpora": corpora,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn generate(
    setup: &Setup,
    models: Vec<String>,
    prompt_tokens: usize,
    decode_tokens: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let manifest = docent_models::Manifest::builtin();
    let puller = docent_models::Puller::new(
        manifest.clone(),
        docent_models::PullOptions {
            models_dir: setup.models_dir.clone(),
            python: setup.config.models.python.clone(),
            progress: false,
        },
    );
    let models: Vec<String> = if models.is_empty() {
        manifest
            .models
            .iter()
            .filter(|m| m.kind == docent_models::ModelKind::Generation)
            .filter(|m| puller.is_pulled(&m.name).unwrap_or(false))
            .map(|m| m.name.clone())
            .collect()
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
        let generator = setup
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
        let messages = vec![ChatMessage::user(format!(
            "{text}\nSummarise the text above in detail."
        ))];
        let (mut prefill, mut decode, mut prompt_len) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs.max(1) {
            let mut rx = generator.generate(GenerationRequest {
                messages: messages.clone(),
                sampling: SamplingParams {
                    max_tokens: decode_tokens,
                    temperature: 0.0,
                    top_p: None,
                    seed: 1,
                },
            })?;
            while let Some(event) = rx.blocking_recv() {
                match event {
                    GenerationEvent::Text(_) => {}
                    GenerationEvent::Done { stats, .. } => {
                        prompt_len = stats.prompt_tokens;
                        prefill.push(stats.prompt_tokens as f64 / (stats.prompt_eval_ms / 1000.0));
                        decode.push(stats.completion_tokens as f64 / (stats.generate_ms / 1000.0));
                    }
                    GenerationEvent::Failed(e) => anyhow::bail!("generation failed: {e}"),
                }
            }
        }
        results.push(json!({
            "model": name,
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
        json!({ "bench": "generate", "threads": threads(), "models": results, "peak_rss_mib": peak_rss_mib() }),
    )
}
