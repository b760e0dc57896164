//! Reranking backends behind `docent_core::Reranker`: a cross-encoder reads
//! the query and a passage together and scores how well the passage answers
//! it, which ranks the first passage far better than comparing two separate
//! embeddings does.
//!
//! Two backends run the int8 ONNX export of cross-encoder/ms-marco-MiniLM-L-12-v2:
//! - [`EncoderReranker`]: docent's own BERT encoder, on weights converted
//!   once from `model.onnx` ([`onnx`]). In int8 it computes the model's own
//!   integers as ONNX Runtime does (its int8 weights, activations quantized
//!   per tensor). Its scores differ from ONNX Runtime's by less than ONNX
//!   Runtime's own differ with and without its fused kernels (0.065
//!   against 0.127 on the reference pairs, `tests/golden.rs`).
//! - [`OnnxReranker`]: ONNX Runtime (`ort`, loading the shared library
//!   `docent models pull` fetched from the onnxruntime wheel; nothing is
//!   downloaded at build time).
//!
//! Like the embedder, the model lives on its own OS thread fed by a bounded
//! channel, so callers never run inference on an async runtime and never
//! share the model across threads.

pub mod onnx;

use docent_core::{Error, Reranker, Result};
use docent_embed::encoder::Encoder;
use docent_ops::bf16::Precision;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

/// How to load and run a reranker.
#[derive(Clone, Debug)]
pub struct OnnxRerankerOptions {
    /// The model folder: `model.onnx` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// ONNX Runtime's shared library (`libonnxruntime.so`).
    pub runtime: PathBuf,
    /// The name reported with scores.
    pub model_id: String,
    /// Longest (query, passage) pair in tokens; longer pairs lose the end
    /// of the longer side.
    pub max_tokens: usize,
    /// Pairs per forward pass. 1 by default: the model quantizes its
    /// activations per tensor at run time (`DynamicQuantizeLinear`), so in a
    /// batch each pair's score moves with the other pairs and the padding
    /// (0.06 on a score of 9 in a batch of two); one pair at a time, a score
    /// depends on its pair alone.
    pub batch_size: usize,
    /// ONNX Runtime's intra-op threads (0: its default, one per core).
    pub threads: usize,
    /// Rerank requests that may wait for the model before `rerank` refuses.
    pub queue_depth: usize,
}

impl OnnxRerankerOptions {
    pub fn new(
        model_dir: impl Into<PathBuf>,
        runtime: impl Into<PathBuf>,
        model_id: impl Into<String>,
    ) -> Self {
        OnnxRerankerOptions {
            model_dir: model_dir.into(),
            runtime: runtime.into(),
            model_id: model_id.into(),
            max_tokens: 512,
            batch_size: 1,
            threads: 0,
            queue_depth: 64,
        }
    }
}

/// A cross-encoder on ONNX Runtime, on its own thread.
pub struct OnnxReranker {
    queue: Queue,
}

/// ONNX Runtime is loaded once per process; later loads must name the same library.
static RUNTIME: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

fn load_runtime(path: &Path) -> Result<ort::environment::Environment> {
    let loaded = RUNTIME.get_or_init(|| {
        let environment = ort::init_from(path)
            .map_err(|e| e.to_string())?
            .with_name("docent")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok((path.to_path_buf(), environment))
    });
    match loaded {
        Ok((first, environment)) if first == path => Ok(environment.clone()),
        Ok((first, _)) => Err(Error::InvalidInput(format!(
            "ONNX Runtime is already loaded from {}; one process cannot load a second one from {}",
            first.display(),
            path.display()
        ))),
        Err(e) => Err(Error::Unavailable {
            message: format!(
                "cannot load ONNX Runtime from {}: {e}; run `docent models pull onnxruntime`",
                path.display()
            ),
            source: None,
        }),
    }
}

fn ort_error(what: &str) -> impl FnOnce(ort::Error) -> Error + '_ {
    move |e| Error::internal(format!("reranker: {what}"), e.to_string())
}

impl OnnxReranker {
    /// Loads the runtime, the model and the tokenizer, and starts the model thread.
    pub fn load(options: OnnxRerankerOptions) -> Result<Self> {
        require_files(
            &options.model_dir,
            &["model.onnx", "tokenizer.json"],
            &options.model_id,
        )?;
        let environment = load_runtime(&options.runtime)?;
        let tokenizer = pair_tokenizer(&options.model_dir, options.max_tokens)?;
        // ONNX Runtime's workers spin for a while after each run by default;
        // on a 2-core machine that spinning would take the cores from the
        // model that generates the answer right after.
        let mut builder = ort::session::Session::builder(&environment)
            .map_err(ort_error("session"))?
            .with_config_entry("session.intra_op.allow_spinning", "0")
            .map_err(|e| Error::internal("reranker: session options", e.to_string()))?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(|e| Error::internal("reranker: threads", e.to_string()))?;
        }
        let session = builder
            .commit_from_file(options.model_dir.join("model.onnx"))
            .map_err(ort_error("cannot load model.onnx"))?;
        let queue = Queue::start(
            Session(session),
            tokenizer,
            options.batch_size,
            options.queue_depth,
            options.model_id,
        )?;
        Ok(OnnxReranker { queue })
    }
}

/// One rerank request for the model thread.
struct Job {
    query: String,
    passages: Vec<String>,
    reply: std::sync::mpsc::Sender<Result<Vec<f32>>>,
}

/// A batch of tokenized pairs, padded to one width: row-major (rows, width).
struct Batch {
    rows: usize,
    width: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

/// What a backend computes on the model thread: one logit per row.
trait Forward: Send + 'static {
    fn forward(&mut self, batch: Batch) -> Result<Vec<f32>>;

    /// Every batch of one request, in order.
    fn forward_all(&mut self, batches: Vec<Batch>) -> Result<Vec<Vec<f32>>> {
        batches.into_iter().map(|b| self.forward(b)).collect()
    }
}

/// The tokenizer of `dir`, cutting pairs to `max_tokens` and not padding.
fn pair_tokenizer(dir: &Path, max_tokens: usize) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| Error::internal("reranker: cannot read tokenizer.json", e.to_string()))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map_err(|e| Error::internal("reranker: truncation", e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn require_files(dir: &Path, files: &[&str], model_id: &str) -> Result<()> {
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "{} is missing; run `docent models pull {model_id}`",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The model thread's queue, shared by the backends.
struct Queue {
    jobs: SyncSender<Job>,
    model_id: String,
}

impl Queue {
    fn start(
        forward: impl Forward,
        tokenizer: Tokenizer,
        batch_size: usize,
        queue_depth: usize,
        model_id: String,
    ) -> Result<Queue> {
        let (jobs, queue) = sync_channel::<Job>(queue_depth.max(1));
        let model = Model {
            forward,
            tokenizer,
            batch_size: batch_size.max(1),
        };
        std::thread::Builder::new()
            .name("docent-rerank".into())
            .spawn(move || model.serve(queue))
            .map_err(|e| Error::internal("reranker: cannot start its thread", e))?;
        Ok(Queue { jobs, model_id })
    }

    fn rerank(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs
            .try_send(Job {
                query: query.to_string(),
                passages: passages.to_vec(),
                reply,
            })
            .map_err(|e| match e {
                std::sync::mpsc::TrySendError::Full(_) => {
                    Error::Overloaded("the reranker's queue is full".into())
                }
                std::sync::mpsc::TrySendError::Disconnected(_) => Error::Unavailable {
                    message: "the reranker thread has stopped".into(),
                    source: None,
                },
            })?;
        answer.recv().map_err(|_| Error::Unavailable {
            message: "the reranker thread stopped before answering".into(),
            source: None,
        })?
    }
}

impl Reranker for OnnxReranker {
    fn model_id(&self) -> &str {
        &self.queue.model_id
    }

    fn rerank(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        self.queue.rerank(query, passages)
    }
}

impl Reranker for EncoderReranker {
    fn model_id(&self) -> &str {
        &self.queue.model_id
    }

    fn rerank(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        self.queue.rerank(query, passages)
    }
}

/// What the model thread owns.
struct Model<F> {
    forward: F,
    tokenizer: Tokenizer,
    batch_size: usize,
}

impl<F: Forward> Model<F> {
    fn serve(mut self, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            let scores = self.score(&job.query, &job.passages);
            // The caller may have given up; nothing to do then.
            let _ = job.reply.send(scores);
        }
    }

    /// Scores every pair, in batches of similar length (less padding).
    fn score(&mut self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        let encodings = passages
            .iter()
            .map(|p| {
                self.tokenizer
                    .encode((query, p.as_str()), true)
                    .map_err(|e| Error::internal("reranker: cannot tokenize", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut batches = Vec::new();
        for batch in order.chunks(self.batch_size) {
            let width = batch
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0);
            let mut ids = vec![0i64; batch.len() * width];
            let mut mask = vec![0i64; batch.len() * width];
            let mut types = vec![0i64; batch.len() * width];
            for (row, &i) in batch.iter().enumerate() {
                let e = &encodings[i];
                let at = row * width;
                for (k, ((&id, &m), &t)) in e
                    .get_ids()
                    .iter()
                    .zip(e.get_attention_mask())
                    .zip(e.get_type_ids())
                    .enumerate()
                {
                    ids[at + k] = i64::from(id);
                    mask[at + k] = i64::from(m);
                    types[at + k] = i64::from(t);
                }
            }
            batches.push(Batch {
                rows: batch.len(),
                width,
                ids,
                mask,
                types,
            });
        }
        let mut scores = vec![0f32; encodings.len()];
        let logits = self.forward.forward_all(batches)?;
        for (batch, logits) in order.chunks(self.batch_size).zip(logits) {
            if logits.len() != batch.len() {
                return Err(Error::internal(
                    "reranker",
                    format!("{} logits for {} pairs", logits.len(), batch.len()),
                ));
            }
            for (&i, logit) in batch.iter().zip(logits) {
                scores[i] = logit;
            }
        }
        Ok(scores)
    }
}

/// ONNX Runtime's session, as a backend.
struct Session(ort::session::Session);

impl Forward for Session {
    fn forward(&mut self, batch: Batch) -> Result<Vec<f32>> {
        let shape = [batch.rows, batch.width];
        let tensor = |data: Vec<i64>| {
            ort::value::Tensor::from_array((shape, data)).map_err(ort_error("input"))
        };
        let inputs = ort::inputs! {
            "input_ids" => tensor(batch.ids)?,
            "attention_mask" => tensor(batch.mask)?,
            "token_type_ids" => tensor(batch.types)?,
        };
        let outputs = self.0.run(inputs).map_err(ort_error("forward pass"))?;
        let (_, logits) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(ort_error("output"))?;
        Ok(logits.to_vec())
    }
}

/// How to load [`EncoderReranker`].
#[derive(Clone, Debug)]
pub struct EncoderRerankerOptions {
    /// The model folder: `model.onnx` and `tokenizer.json`; the converted
    /// weights are written there on first load ([`onnx::convert`]).
    pub model_dir: PathBuf,
    /// The name reported with scores.
    pub model_id: String,
    /// Longest (query, passage) pair in tokens.
    pub max_tokens: usize,
    /// `auto` is int8 on VNNI (ONNX Runtime's integers), else bf16 or f32
    /// ([`Precision::resolve_cross_encoder`]).
    pub precision: Precision,
    /// Pairs per forward pass: 1, as for [`OnnxRerankerOptions::batch_size`]
    /// (activations are quantized per tensor).
    pub batch_size: usize,
    /// Rerank requests that may wait for the model before `rerank` refuses.
    pub queue_depth: usize,
}

impl EncoderRerankerOptions {
    pub fn new(model_dir: impl Into<PathBuf>, model_id: impl Into<String>) -> Self {
        EncoderRerankerOptions {
            model_dir: model_dir.into(),
            model_id: model_id.into(),
            max_tokens: 512,
            precision: Precision::Auto,
            batch_size: 1,
            queue_depth: 64,
        }
    }
}

/// A cross-encoder on docent's BERT encoder, on its own thread.
pub struct EncoderReranker {
    queue: Queue,
    precision: Precision,
}

/// docent's encoder, as a backend.
struct Encoded(Encoder);

impl Forward for Encoded {
    fn forward(&mut self, batch: Batch) -> Result<Vec<f32>> {
        self.run(batch)
    }

    /// The batches side by side, one per core: a pair of a question and a
    /// 128-word passage is too small to share out well inside each matrix
    /// product, and the threads' hand-offs cost more than the products
    /// save (measured: docs/benchmarks.md, session 16).
    fn forward_all(&mut self, batches: Vec<Batch>) -> Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        let this = &*self;
        batches.into_par_iter().map(|b| this.run(b)).collect()
    }
}

impl Encoded {
    fn run(&self, batch: Batch) -> Result<Vec<f32>> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let shape = (batch.rows, batch.width);
            let tensor = |data: &[i64]| {
                let data: Vec<u32> = data.iter().map(|&v| v as u32).collect();
                candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
            };
            let logits = self.0.classify(
                &tensor(&batch.ids)?,
                &tensor(&batch.types)?,
                &tensor(&batch.mask)?,
            )?;
            logits.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(|e| Error::internal("reranker: forward pass", e.to_string()))
    }
}

impl EncoderReranker {
    /// Converts `model.onnx` if that was not done yet (or it changed),
    /// loads the converted weights and starts the model thread.
    pub fn load(options: EncoderRerankerOptions) -> Result<Self> {
        let dir = &options.model_dir;
        require_files(dir, &["model.onnx", "tokenizer.json"], &options.model_id)?;
        if !onnx::is_converted(dir)? {
            onnx::convert(dir)?;
        }
        let precision = options
            .precision
            .resolve_cross_encoder()
            .map_err(|message| Error::setting("rerank.precision", message))?;
        let config = docent_embed::read_config(&dir.join(onnx::CONFIG))?;
        let encoder = docent_embed::load_encoder(&dir.join(onnx::WEIGHTS), &config, precision)?;
        if !encoder.classifies() {
            return Err(Error::InvalidInput(format!(
                "{} is not a cross-encoder (no classifier)",
                options.model_id
            )));
        }
        let tokenizer =
            pair_tokenizer(dir, options.max_tokens.min(config.max_position_embeddings))?;
        let queue = Queue::start(
            Encoded(encoder),
            tokenizer,
            options.batch_size,
            options.queue_depth,
            options.model_id,
        )?;
        Ok(EncoderReranker { queue, precision })
    }

    /// The precision the encoder runs at (`auto` resolved for this CPU).
    pub fn precision(&self) -> Precision {
        self.precision
    }
}
