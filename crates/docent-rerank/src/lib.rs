//! Reranking backends behind `docent_core::Reranker`: a cross-encoder reads
//! the query and a passage together and scores how well the passage answers
//! it, which ranks the first passage far better than comparing two separate
//! embeddings does.
//!
//! The backend runs the int8 ONNX export of cross-encoder/ms-marco-MiniLM-L-12-v2
//! on ONNX Runtime (`ort`, loading the shared library `docent models pull`
//! fetched from the onnxruntime wheel; nothing is downloaded at build time).
//! Like the embedder, the model lives on its own OS thread fed by a bounded
//! channel, so callers never run inference on an async runtime and never
//! share the session across threads.

use docent_core::{Error, Reranker, Result};
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

/// One rerank request for the model thread.
struct Job {
    query: String,
    passages: Vec<String>,
    reply: std::sync::mpsc::Sender<Result<Vec<f32>>>,
}

/// A cross-encoder on ONNX Runtime, on its own thread.
pub struct OnnxReranker {
    jobs: SyncSender<Job>,
    model_id: String,
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
        for file in ["model.onnx", "tokenizer.json"] {
            let path = options.model_dir.join(file);
            if !path.is_file() {
                return Err(Error::NotFound(format!(
                    "{} is missing; run `docent models pull {}`",
                    path.display(),
                    options.model_id
                )));
            }
        }
        let environment = load_runtime(&options.runtime)?;
        let mut tokenizer = Tokenizer::from_file(options.model_dir.join("tokenizer.json"))
            .map_err(|e| Error::internal("reranker: cannot read tokenizer.json", e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: options.max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| Error::internal("reranker: truncation", e.to_string()))?;
        tokenizer.with_padding(None);
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
        let (jobs, queue) = sync_channel::<Job>(options.queue_depth.max(1));
        let model = Model {
            session,
            tokenizer,
            batch_size: options.batch_size.max(1),
        };
        std::thread::Builder::new()
            .name("docent-rerank".into())
            .spawn(move || model.serve(queue))
            .map_err(|e| Error::internal("reranker: cannot start its thread", e))?;
        Ok(OnnxReranker {
            jobs,
            model_id: options.model_id,
        })
    }
}

impl Reranker for OnnxReranker {
    fn model_id(&self) -> &str {
        &self.model_id
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

/// What the model thread owns.
struct Model {
    session: ort::session::Session,
    tokenizer: Tokenizer,
    batch_size: usize,
}

impl Model {
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
        let mut scores = vec![0f32; encodings.len()];
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
            let shape = [batch.len(), width];
            let tensor = |data: Vec<i64>| {
                ort::value::Tensor::from_array((shape, data)).map_err(ort_error("input"))
            };
            let inputs = ort::inputs! {
                "input_ids" => tensor(ids)?,
                "attention_mask" => tensor(mask)?,
                "token_type_ids" => tensor(types)?,
            };
            let outputs = self
                .session
                .run(inputs)
                .map_err(ort_error("forward pass"))?;
            let (_, logits) = outputs[0]
                .try_extract_tensor::<f32>()
                .map_err(ort_error("output"))?;
            if logits.len() != batch.len() {
                return Err(Error::internal(
                    "reranker",
                    format!("{} logits for {} pairs", logits.len(), batch.len()),
                ));
            }
            for (&i, &logit) in batch.iter().zip(logits) {
                scores[i] = logit;
            }
        }
        Ok(scores)
    }
}
