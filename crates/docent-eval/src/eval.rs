//! `docent eval retrieval` and `docent eval answers`: quality measured on a
//! SQuAD 2.0 (or, for retrieval, BEIR) dataset, in a collection of its own
//! under `<data dir>/eval/` so the user's collections are never touched.
//! The eval collection is kept, so later runs skip the embedding work.

use crate::Workspace;
use crate::abstention::{self, Kind, Outcome, Policy, Signal};
use crate::dataset::{
    Dataset, Query, RetrievalMetrics, exact_match, load_beir, load_squad, median, token_f1,
};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use docent_core::{DocumentId, SamplingParams, SearchFilter, SearchMode};
use docent_ingest::{Collection, EmbeddingParts, Progress};
use docent_query::{AnswerEvent, AskRequest, Asker, Lookup};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality: recall@k, MRR@10 and nDCG@10
    Retrieval(RetrievalArgs),
    /// Answer quality: exact match, F1, abstention and citations, on the full ask path
    Answers(AnswerArgs),
    /// Follow-up questions: R@5 (and with --answers F1) raw, rewritten by docent, and standalone
    Followups(crate::followups::FollowupArgs),
}

#[derive(Args)]
pub struct DatasetArgs {
    /// A SQuAD 2.0 JSON file (each paragraph becomes a document)
    #[arg(long, conflicts_with = "beir")]
    pub(crate) squad: Option<PathBuf>,
    /// A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv); retrieval only
    #[arg(long)]
    beir: Option<PathBuf>,
}

#[derive(Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    dataset: DatasetArgs,
    /// dense, keyword, hybrid, or all [default: the configured mode]
    #[arg(long)]
    mode: Option<String>,
    /// Also try a grid of fusion settings in hybrid mode (how the default was chosen)
    #[arg(long)]
    sweep: bool,
    /// Also score SQuAD's unanswerable questions (their paragraph is still the relevant document)
    #[arg(long)]
    include_unanswerable: bool,
    /// Also try blending the fused rank into the reranked order (docent_query::blended_order), from one reranked run
    #[arg(long)]
    rerank_blend: bool,
    /// Score only every Nth question (for quick comparisons; the figures in docs/quality.md use all of them)
    #[arg(long)]
    every_nth: Option<usize>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct AnswerArgs {
    #[command(flatten)]
    dataset: DatasetArgs,
    /// Questions to ask, drawn at random (answerable and not) with --seed
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Generation model to use instead of the configured one
    #[arg(long)]
    model: Option<String>,
    /// Maximum answer length in tokens
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Answer style instead of the configured one: concise or detailed
    #[arg(long, value_parser = parse_style)]
    style: Option<docent_query::AnswerStyle>,
    /// Out-of-corpus questions asked besides [default: half of --limit]:
    /// half the articles (chosen by --seed) are left out of a second
    /// collection, which is asked about them
    #[arg(long)]
    out_of_corpus: Option<usize>,
    /// Write one JSON line per question here
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Answers over an eval collection with the configured retrieval and
/// reranker and the given `[query]` settings.
pub(crate) fn eval_asker(
    ws: &dyn Workspace,
    parts: &EmbeddingParts,
    collection: &Collection,
    generator: std::sync::Arc<dyn docent_core::Generator>,
    query: docent_query::QuerySettings,
    retrieval: docent_query::RetrievalSettings,
) -> Result<Asker> {
    let asker = Asker::new(
        parts.embedder.clone(),
        collection.store.clone(),
        generator,
        query,
        retrieval,
    );
    Ok(match ws.reranker()? {
        Some((model, candidates)) => asker.with_reranker(model, candidates),
        None => asker,
    })
}

/// A question asked as the evals ask it: greedy, at most `max_tokens`,
/// everything else as configured.
pub(crate) fn greedy_request(
    settings: &crate::Settings,
    question: String,
    history: Vec<docent_core::ChatMessage>,
    max_tokens: usize,
) -> AskRequest {
    AskRequest {
        question,
        top_k: None,
        filter: SearchFilter::default(),
        mode: None,
        rerank: None,
        answer_style: None,
        history,
        sampling: SamplingParams {
            max_tokens,
            temperature: 0.0,
            ..settings.sampling.clone()
        },
    }
}

pub(crate) fn run(ws: &dyn Workspace, command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Retrieval(args) => retrieval(ws, args),
        EvalCommand::Answers(args) => answers(ws, args),
        EvalCommand::Followups(args) => crate::followups::run(ws, args),
    }
}

pub(crate) fn load(args: &DatasetArgs) -> Result<(String, Dataset, PathBuf)> {
    let (path, dataset) = match (&args.squad, &args.beir) {
        (Some(p), _) => (p.clone(), load_squad(p)?),
        (None, Some(p)) => (p.clone(), load_beir(p)?),
        (None, None) => bail!("give a dataset: --squad FILE or --beir DIR"),
    };
    if dataset.documents.is_empty() || dataset.queries.is_empty() {
        bail!("{} has no documents or no queries", path.display());
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "dataset".into());
    Ok((name, dataset, path))
}

/// The eval collection for a dataset: under `<data>/eval/`, named after the
/// dataset and the hash of its documents, so another dataset never mixes in,
/// and after the embedder's precision when it is not f32, so that vectors
/// of two precisions never share a collection.
pub(crate) struct EvalCollection {
    data_dir: PathBuf,
    name: String,
}

impl EvalCollection {
    pub(crate) fn new(ws: &dyn Workspace, name: &str, dataset: &Dataset, precision: &str) -> Self {
        let mut bytes = Vec::new();
        for (id, text) in &dataset.documents {
            bytes.extend_from_slice(id.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(text.as_bytes());
        }
        let hash = docent_core::content_hash(&bytes);
        EvalCollection {
            data_dir: ws.data_dir().join("eval"),
            name: match precision {
                "f32" => format!("{name}-{}", &hash[..8]),
                other => format!("{name}-{}-{other}", &hash[..8]),
            },
        }
    }

    /// Where the collection lives, for the report.
    pub(crate) fn location(&self) -> String {
        self.data_dir
            .join("collections")
            .join(&self.name)
            .display()
            .to_string()
    }
}

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// Ingests the dataset's documents (a no-op when they already are).
pub(crate) fn ingest(
    ws: &dyn Workspace,
    eval: &EvalCollection,
    parts: &EmbeddingParts,
    dataset: &Dataset,
) -> Result<Collection> {
    let collection = ws.collection(&eval.data_dir, &eval.name, parts)?;
    let pipeline = ws.pipeline(parts, &collection);
    let bar = bar(dataset.documents.len(), "ingesting");
    let documents = dataset
        .documents
        .iter()
        .map(|(id, text)| docent_ingest::DocumentInput {
            id: DocumentId::new(id.clone()),
            source: id.clone(),
            // `.txt` picks the plain-text extractor whatever the id looks like.
            path_hint: PathBuf::from(format!("{id}.txt")),
            bytes: text.as_bytes().to_vec(),
            meta: Default::default(),
        })
        .collect();
    // Finished (flushed and indexed) as a user's collection is after `docent ingest`.
    let reports = pipeline.ingest_documents(documents, &|event| {
        if let Progress::FileDone(_) = event {
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    let mut failed = 0;
    for report in &reports {
        if let Err(reason) = &report.result {
            failed += 1;
            tracing::warn!(document = %report.id, %reason, "eval document not ingested");
        }
    }
    if failed > 0 {
        eprintln!("warning: {failed} documents could not be ingested");
    }
    Ok(collection)
}

fn retrieval(ws: &dyn Workspace, args: RetrievalArgs) -> Result<()> {
    let started = Instant::now();
    let (name, dataset, path) = load(&args.dataset)?;
    let modes: Vec<SearchMode> = match args.mode.as_deref() {
        None => vec![ws.settings().retrieval.mode],
        Some("all") => vec![SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid],
        Some(m) => vec![m.parse().map_err(anyhow::Error::msg)?],
    };
    let queries: Vec<&Query> = dataset
        .queries
        .iter()
        .filter(|q| args.include_unanswerable || !q.unanswerable)
        .step_by(args.every_nth.unwrap_or(1).max(1))
        .collect();
    let parts = ws.embedding(None)?;
    let eval = EvalCollection::new(ws, &name, &dataset, parts.embedder.precision());
    let collection = ingest(ws, &eval, &parts, &dataset)?;
    let asker_settings = ws.settings().retrieval;
    let retriever = docent_query::Retriever::new(
        parts.embedder.clone(),
        collection.store.clone(),
        asker_settings.clone(),
    );
    let t_embed = Instant::now();
    let texts: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let mut vectors = Vec::with_capacity(texts.len());
    let embed_bar = bar(texts.len(), "embedding questions");
    for batch in texts.chunks(256) {
        vectors.extend(parts.embedder.embed(batch)?);
        embed_bar.inc(batch.len() as u64);
    }
    embed_bar.finish_and_clear();
    let embed_secs = t_embed.elapsed().as_secs_f64();
    let score = |retriever: &docent_query::Retriever,
                 mode: SearchMode,
                 rerank: bool|
     -> Result<serde_json::Value> {
        let mut metrics = RetrievalMetrics::default();
        let mut latencies = Vec::with_capacity(queries.len());
        let bar = bar(
            queries.len(),
            &format!("{mode:?}{}", if rerank { " + rerank" } else { "" }),
        );
        for (q, v) in queries.iter().zip(&vectors) {
            // Chunks, not documents, are ranked: fetch extra and keep each
            // document's best chunk.
            let lookup = Lookup {
                mode: Some(mode),
                rerank: Some(rerank),
                ..Lookup::new(20, docent_query::Purpose::Search)
            };
            let r = retriever.retrieve_embedded(&q.text, v.clone(), &lookup)?;
            bar.inc(1);
            latencies.push(r.search_ms + r.rerank_ms);
            let ranked: Vec<String> = r
                .passages
                .iter()
                .map(|p| p.chunk.document_id.0.clone())
                .collect();
            metrics.add(&ranked, &q.relevant);
        }
        bar.finish_and_clear();
        let mut summary = json!(metrics.summary());
        summary["search_ms_p50"] = json!(median(&mut latencies));
        Ok(summary)
    };
    let mut results = serde_json::Map::new();
    for mode in &modes {
        results.insert(
            format!("{mode:?}").to_lowercase(),
            score(&retriever, *mode, false)?,
        );
    }
    // The reranker reorders the fused candidates of the configured mode.
    let reranker = ws.reranker()?;
    if let Some((model, candidates)) = &reranker {
        let counts = if args.sweep {
            vec![10, 20, 30, 50, 100]
        } else {
            vec![*candidates]
        };
        for n in counts {
            let reranking = docent_query::Retriever::new(
                parts.embedder.clone(),
                collection.store.clone(),
                asker_settings.clone(),
            )
            .with_reranker(model.clone(), n);
            let mode = ws.settings().retrieval.mode;
            results.insert(
                format!("{mode:?} + rerank {n}").to_lowercase(),
                score(&reranking, mode, true)?,
            );
        }
    }
    // Blends of the cross-encoder's score with the fused rank, all scored
    // from one reranked run: the candidates keep their fused scores.
    if let (true, Some((model, candidates))) = (args.rerank_blend, &reranker) {
        let reranking = docent_query::Retriever::new(
            parts.embedder.clone(),
            collection.store.clone(),
            asker_settings.clone(),
        )
        .with_reranker(model.clone(), *candidates);
        let mode = ws.settings().retrieval.mode;
        let bar = bar(queries.len(), "reranking for the blend sweep");
        let mut runs = Vec::with_capacity(queries.len());
        for (q, v) in queries.iter().zip(&vectors) {
            let lookup = Lookup {
                mode: Some(mode),
                rerank: Some(true),
                ..Lookup::new(20, docent_query::Purpose::Search)
            };
            let mut passages = reranking
                .retrieve_embedded(&q.text, v.clone(), &lookup)?
                .passages;
            // Back to the fused order (a stable sort keeps ties as fused).
            passages.sort_by(|a, b| b.score.total_cmp(&a.score));
            let ids: Vec<String> = passages
                .iter()
                .map(|p| p.chunk.document_id.0.clone())
                .collect();
            let scores: Vec<f32> = passages
                .iter()
                .map(|p| p.rerank_score.unwrap_or(f32::MIN))
                .collect();
            runs.push((ids, scores, &q.relevant));
            bar.inc(1);
        }
        bar.finish_and_clear();
        for weight in [0.0f32, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0] {
            let mut metrics = RetrievalMetrics::default();
            for (ids, scores, relevant) in &runs {
                let ranked: Vec<String> = docent_query::blended_order(scores, weight)
                    .into_iter()
                    .map(|i| ids[i].clone())
                    .collect();
                metrics.add(&ranked, relevant);
            }
            results.insert(
                format!("{mode:?} + rerank {candidates} fused_weight={weight}").to_lowercase(),
                json!(metrics.summary()),
            );
        }
    }
    if args.sweep {
        let mut grid = vec![docent_core::Fusion::Dbsf];
        for k in [2, 5, 10, 20, 60] {
            for keyword_weight in [1.0f32, 1.5, 2.0, 3.0] {
                grid.push(docent_core::Fusion::Rrf {
                    k,
                    dense_weight: 1.0,
                    keyword_weight,
                });
            }
        }
        let bar = bar(grid.len(), "fusion sweep");
        for fusion in grid {
            let mut settings = asker_settings.clone();
            settings.fusion = fusion;
            let r = docent_query::Retriever::new(
                parts.embedder.clone(),
                collection.store.clone(),
                settings,
            );
            let label = match fusion {
                docent_core::Fusion::Dbsf => "hybrid dbsf".to_string(),
                docent_core::Fusion::Rrf {
                    k, keyword_weight, ..
                } => format!("hybrid rrf k={k} kw={keyword_weight}"),
            };
            results.insert(label, score(&r, SearchMode::Hybrid, false)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let report = json!({
        "dataset": path.display().to_string(),
        "documents": dataset.documents.len(),
        "queries": queries.len(),
        "collection": eval.location(),
        "embed_precision": parts.embedder.precision(),
        "cpu": docent_ops::cpu_name(),
        "retrieval": asker_settings,
        "reranker": reranker.as_ref().map(|(m, c)| json!({"model": m.model_id(), "candidates": c})),
        "question_embedding_secs": embed_secs,
        "modes": results,
        "total_secs": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} documents, {} questions ({})",
            dataset.documents.len(),
            queries.len(),
            path.display()
        );
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "mode", "R@1", "R@5", "R@10", "MRR@10", "nDCG@10", "p50 ms"
        );
        for (mode, m) in &results {
            println!(
                "{:<28} {:>8.4} {:>8.4} {:>8.4} {:>9.4} {:>8.4} {:>8.2}",
                mode,
                m["recall@1"].as_f64().unwrap_or(0.0),
                m["recall@5"].as_f64().unwrap_or(0.0),
                m["recall@10"].as_f64().unwrap_or(0.0),
                m["mrr@10"].as_f64().unwrap_or(0.0),
                m["ndcg@10"].as_f64().unwrap_or(0.0),
                m["search_ms_p50"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

fn answers(ws: &dyn Workspace, args: AnswerArgs) -> Result<()> {
    let started = Instant::now();
    let (name, dataset, path) = load(&args.dataset)?;
    if args.dataset.beir.is_some() {
        bail!("answer evaluation needs gold answers: use --squad");
    }
    let parts = ws.embedding(None)?;
    let eval = EvalCollection::new(ws, &name, &dataset, parts.embedder.precision());
    let collection = ingest(ws, &eval, &parts, &dataset)?;
    let generator = ws.generator(args.model.as_deref())?;
    let settings = crate::Settings {
        query: ws.query_for(generator.model_id()),
        ..ws.settings()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut picked: Vec<&Query> = dataset.queries.iter().collect();
    picked.shuffle(&mut rng);
    picked.truncate(args.limit);
    // Out-of-corpus questions: a second collection without half of the
    // articles, asked about those articles.
    let out_of_corpus_n = args.out_of_corpus.unwrap_or(args.limit / 2);
    let (partial, held_out) = crate::dataset::hold_out_articles(&dataset, args.seed);
    let mut out_of_corpus: Vec<&Query> = held_out.iter().collect();
    out_of_corpus.shuffle(&mut rng);
    out_of_corpus.truncate(out_of_corpus_n);
    let partial_collection = if out_of_corpus.is_empty() {
        None
    } else {
        let eval = EvalCollection::new(ws, &name, &partial, parts.embedder.precision());
        Some(ingest(ws, &eval, &parts, &partial)?)
    };
    let mut out = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    // Every gate measures and none decides, so one run scores every policy
    // (an abstaining answer is the fixed sentence whichever gate decided).
    let configured = Policy {
        similarity: Some(settings.retrieval.score_floor),
        rerank: settings.query.min_rerank_score,
        spares: settings.query.rerank_gate_spares_similarity,
        probe: Some(settings.query.abstain_threshold()).filter(|t| *t > 0.0 && *t <= 1.0),
    };
    let mut measuring = settings.query.clone();
    measuring.abstain_threshold = Some(2.0);
    measuring.min_rerank_score = None;
    let mut retrieval = settings.retrieval.clone();
    retrieval.score_floor = f32::NEG_INFINITY;
    let asker = eval_asker(
        ws,
        &parts,
        &collection,
        generator.clone(),
        measuring.clone(),
        retrieval.clone(),
    )?;
    let partial_asker = partial_collection
        .as_ref()
        .map(|c| eval_asker(ws, &parts, c, generator.clone(), measuring, retrieval))
        .transpose()?;
    let mut outcomes = Vec::with_capacity(picked.len() + out_of_corpus.len());
    let (mut ttft, mut totals) = (Vec::new(), Vec::new());
    let (mut prompt_tokens, mut cached_tokens) = (Vec::<f64>::new(), Vec::<f64>::new());
    let bar = bar(picked.len() + out_of_corpus.len(), "asking");
    let in_corpus = picked.iter().map(|q| {
        let kind = if q.unanswerable {
            Kind::Adversarial
        } else {
            Kind::Answerable
        };
        (*q, kind, &asker)
    });
    let others = out_of_corpus
        .iter()
        .filter_map(|q| Some((*q, Kind::OutOfCorpus, partial_asker.as_ref()?)));
    for (q, kind, asker) in in_corpus.chain(others) {
        let t0 = Instant::now();
        let mut first: Option<f64> = None;
        let request = greedy_request(&settings, q.text.clone(), Vec::new(), args.max_tokens);
        let response = asker.ask(
            &AskRequest {
                answer_style: args.style,
                ..request
            },
            |event| {
                if let AnswerEvent::Piece(_) = event
                    && first.is_none()
                {
                    first = Some(t0.elapsed().as_secs_f64() * 1000.0);
                }
            },
        )?;
        let total_ms = t0.elapsed().as_secs_f64() * 1000.0;
        ttft.push(first.unwrap_or(total_ms));
        totals.push(total_ms);
        let gold_doc = q.relevant.keys().next().cloned().unwrap_or_default();
        let cited: Vec<&str> = response
            .citations
            .iter()
            .filter(|c| c.cited)
            .map(|c| c.document_id.as_str())
            .collect();
        let plain = strip_markers(&response.answer);
        let outcome = Outcome {
            kind,
            answered: response.answerable,
            best_similarity: response.best_similarity,
            best_rerank_score: response.best_rerank_score,
            abstain_probability: response.abstain_probability,
            em: exact_match(&plain, &q.answers),
            f1: token_f1(&plain, &q.answers),
            first_em: exact_match(first_sentence(&plain), &q.answers),
            first_f1: token_f1(first_sentence(&plain), &q.answers),
            abstained_em: exact_match(docent_query::NO_ANSWER, &q.answers),
            abstained_f1: token_f1(docent_query::NO_ANSWER, &q.answers),
            cites_gold: cited.contains(&gold_doc.as_str()),
            cites_nothing: cited.is_empty(),
            top_is_gold: response.citations.first().map(|c| c.document_id.as_str())
                == Some(gold_doc.as_str()),
        };
        if let Some(out) = out.as_mut() {
            let (q_em, q_f1) = if kind == Kind::Answerable {
                (Some(outcome.em), Some(outcome.f1))
            } else {
                (None, None)
            };
            writeln!(
                out,
                "{}",
                json!({
                    "id": q.id, "question": q.text, "kind": format!("{kind:?}"),
                    "unanswerable": kind != Kind::Answerable,
                    "gold": q.answers, "gold_document": gold_doc,
                    "answer": response.answer, "answerable": response.answerable,
                    "abstain_probability": response.abstain_probability,
                    "best_similarity": response.best_similarity,
                    "best_rerank_score": response.best_rerank_score,
                    "abstained_as_configured": !response.answerable || configured.gates(&outcome),
                    "cited": cited, "top_document": response.citations.first().map(|c| &c.document_id),
                    "em": q_em, "f1": q_f1, "ttft_ms": first, "total_ms": total_ms,
                    "prompt_tokens": response.usage.prompt_tokens,
                    "cached_prompt_tokens": response.usage.cached_prompt_tokens,
                })
            )?;
            // One line per question survives an interrupted run.
            out.flush()?;
        }
        prompt_tokens.push(response.usage.prompt_tokens as f64);
        cached_tokens.push(response.usage.cached_prompt_tokens as f64);
        outcomes.push(outcome);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let (calibration, reported) = abstention::halves(&outcomes);
    let figures_json = |f: &abstention::Figures| {
        json!({
            "false_abstention_rate": f.false_abstention,
            "f1": f.f1,
            "adversarial_abstention": f.adversarial_abstention,
            "out_of_corpus_abstention": f.out_of_corpus_abstention,
        })
    };
    let signals: Vec<serde_json::Value> = Signal::ALL
        .iter()
        .map(|&s| {
            json!({
                "signal": s.name(),
                "auc_adversarial": abstention::auc(&all, s, Kind::Adversarial),
                "auc_out_of_corpus": abstention::auc(&all, s, Kind::OutOfCorpus),
                "roc": abstention::roc(&all, s).iter().map(|(t, f)| {
                    let mut row = figures_json(f);
                    row["threshold"] = json!(t);
                    row
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let calibrated: Vec<serde_json::Value> = abstention::TARGETS
        .iter()
        .map(|target| {
            let policy = abstention::calibrate(&calibration, target, configured);
            json!({
                "target": target.name,
                "policy": policy.map(|p| p.to_json()),
                "calibration_half": policy.map(|p| figures_json(&abstention::figures(&calibration, &p))),
                "report_half": policy.map(|p| figures_json(&abstention::figures(&reported, &p))),
            })
        })
        .collect();
    let mut report = json!({
        "dataset": path.display().to_string(),
        "model": generator.model_id(),
        "embed_precision": parts.embedder.precision(),
        "prefill_precision": generator.prefill_precision(),
        "cpu": docent_ops::cpu_name(),
        "questions": outcomes.len(),
        "seed": args.seed,
        "out_of_corpus_collection": format!("{} of {} documents: half the articles held out", partial.documents.len(), dataset.documents.len()),
        "configured": configured.to_json(),
        "abstain_check": settings.query.abstain_check().as_str(),
        "ttft_ms_p50": median(&mut ttft),
        "total_ms_p50": median(&mut totals),
        // Prompts of questions that reached the model.
        "prompt_tokens_p50": median(&mut prompt_tokens.iter().copied().filter(|&t| t > 0.0).collect::<Vec<_>>()),
        "cached_prompt_tokens_p50": median(&mut cached_tokens),
        "total_secs": started.elapsed().as_secs_f64(),
        "signals": signals,
        "calibrated": calibrated,
        "configured_on_report_half": figures_json(&abstention::figures(&reported, &configured)),
    });
    let headline = abstention::score(&all, &configured);
    for key in ["answerable", "adversarial", "out_of_corpus"] {
        report[key] = headline[key].clone();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let a = &report["answerable"];
    let count = |key: &str| report[key]["count"].as_u64().unwrap_or(0);
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "{} questions on {} ({}): {} answerable, {} adversarial unanswerable, {} out-of-corpus",
        outcomes.len(),
        generator.model_id(),
        path.display(),
        count("answerable"),
        count("adversarial"),
        count("out_of_corpus"),
    );
    println!(
        "abstention as configured: {} (p(idk): the {} check)",
        configured.describe(),
        settings.query.abstain_check().as_str()
    );
    println!(
        "answerable:   EM {:.3}  F1 {:.3}  false abstention {:.3}  citation→gold {:.3}  no valid citation {:.3}",
        num(&a["exact_match"]),
        num(&a["f1"]),
        num(&a["false_abstention_rate"]),
        num(&a["citation_hits_gold"]),
        num(&a["answered_without_valid_citation"]),
    );
    println!(
        "first sentence: EM {:.3}  F1 {:.3}",
        num(&a["first_sentence_exact_match"]),
        num(&a["first_sentence_f1"]),
    );
    println!(
        "adversarial unanswerable: abstention accuracy {:.3}",
        num(&report["adversarial"]["abstention_accuracy"])
    );
    println!(
        "out-of-corpus: abstention accuracy {:.3}  ({})",
        num(&report["out_of_corpus"]["abstention_accuracy"]),
        report["out_of_corpus_collection"].as_str().unwrap_or("")
    );
    println!("\nsignal (AUC: answerable vs)    adversarial  out-of-corpus");
    for s in &report["signals"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<30} {:>11.3}  {:>13.3}",
            s["signal"].as_str().unwrap_or(""),
            num(&s["auc_adversarial"]),
            num(&s["auc_out_of_corpus"]),
        );
    }
    for s in &report["signals"].as_array().cloned().unwrap_or_default() {
        println!(
            "\ngate on {} alone (all questions):",
            s["signal"].as_str().unwrap_or("")
        );
        println!("threshold  false abstention  adversarial  out-of-corpus  F1");
        for row in s["roc"].as_array().into_iter().flatten() {
            println!(
                "{:>9.2}  {:>16.3}  {:>11.3}  {:>13.3}  {:.3}",
                num(&row["threshold"]),
                num(&row["false_abstention_rate"]),
                num(&row["adversarial_abstention"]),
                num(&row["out_of_corpus_abstention"]),
                num(&row["f1"]),
            );
        }
    }
    println!(
        "\ncalibrated on half the questions, reported on the other half (false abstention / adversarial / out-of-corpus / F1):"
    );
    let row = |f: &serde_json::Value| {
        format!(
            "{:.3} / {:.3} / {:.3} / {:.3}",
            num(&f["false_abstention_rate"]),
            num(&f["adversarial_abstention"]),
            num(&f["out_of_corpus_abstention"]),
            num(&f["f1"])
        )
    };
    for c in report["calibrated"].as_array().into_iter().flatten() {
        let policy = &c["policy"];
        let text = |k: &str| match policy[k].as_f64() {
            Some(v) => format!("{v}"),
            None => "off".into(),
        };
        println!(
            "{}: cosine {}, rerank {}, p(idk) {}\n  calibration {}\n  report      {}",
            c["target"].as_str().unwrap_or(""),
            text("score_floor"),
            text("min_rerank_score"),
            text("abstain_threshold"),
            row(&c["calibration_half"]),
            row(&c["report_half"]),
        );
    }
    println!(
        "configured, report half: {}",
        row(&report["configured_on_report_half"])
    );
    println!(
        "time: median TTFT {:.0} ms, median total {:.0} ms (every gate measuring: no question skips the model)",
        num(&report["ttft_ms_p50"]),
        num(&report["total_ms_p50"])
    );
    Ok(())
}

/// The first sentence of an answer: up to the first `.`, `!` or `?` that
/// ends the text or is followed by whitespace (so "3.5 million" and "U.S."
/// inside a word stay whole).
fn first_sentence(answer: &str) -> &str {
    let bytes = answer.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?')
            && bytes
                .get(i + 1)
                .is_none_or(|next| next.is_ascii_whitespace())
        {
            return answer[..=i].trim();
        }
    }
    answer.trim()
}

/// The answer without `[n]` markers, for comparison with gold answers.
pub(crate) fn strip_markers(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
                    && close > 0 =>
            {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `--style` as an [`docent_query::AnswerStyle`].
pub fn parse_style(text: &str) -> std::result::Result<docent_query::AnswerStyle, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text:?} is not an answer style; use concise or detailed"))
}

#[cfg(test)]
mod tests {
    use super::{first_sentence, strip_markers};

    #[test]
    fn the_first_sentence_ends_at_terminal_punctuation_before_a_space() {
        assert_eq!(
            first_sentence("Lot C. Visitors park behind the warehouse."),
            "Lot C."
        );
        assert_eq!(
            first_sentence("About 3.5 million people live there. It grew."),
            "About 3.5 million people live there."
        );
        assert_eq!(
            first_sentence("No terminal punctuation"),
            "No terminal punctuation"
        );
        assert_eq!(first_sentence("Why? Because."), "Why?");
        assert_eq!(first_sentence(""), "");
    }

    #[test]
    fn markers_are_stripped_for_scoring() {
        assert_eq!(strip_markers("Paris [1]."), "Paris .");
        assert_eq!(strip_markers("In 1066 [1, 2] it fell"), "In 1066 it fell");
        assert_eq!(strip_markers("array[i] stays"), "array[i] stays");
    }
}
