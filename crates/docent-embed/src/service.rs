//! The embedding service: the thread the model lives on, the bounded channel
//! that feeds it, and the `Embedder` the rest of docent calls. Kept apart from
//! the model itself (`encoder`) so the threading and batching of requests can
//! change without touching the forward pass, and the other way round.

use crate::encoder::{Encoder, mean_pool};
use candle_core::{Device, Tensor};
use candle_transformers::models::bert::Config;
use docent_core::{Embedder, Error, Result};
pub use docent_ops::bf16::Precision;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// How to load and run a BERT sentence encoder.
#[derive(Clone, Debug)]
pub struct BertEmbedderOptions {
    /// Directory holding `model.safetensors`, `tokenizer.json` and `config.json`.
    pub model_dir: PathBuf,
    /// Identifier recorded with collections (e.g. `all-MiniLM-L6-v2`).
    pub model_id: String,
    /// Longest input in word pieces including `[CLS]` and `[SEP]`.
    pub max_seq_len: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Requests that may wait for the model thread before callers block.
    pub queue_depth: usize,
    /// Matrix precision of the encoder's projections (`auto` picks bf16 on
    /// CPUs with AVX-512 BF16).
    pub precision: Precision,
}

impl BertEmbedderOptions {
    pub fn new(model_dir: impl Into<PathBuf>, model_id: impl Into<String>) -> Self {
        BertEmbedderOptions {
            model_dir: model_dir.into(),
            model_id: model_id.into(),
            max_seq_len: 256,
            batch_size: 32,
            queue_depth: 64,
            precision: Precision::Auto,
        }
    }
}

/// Loads `tokenizer.json` without the padding and truncation it ships with
/// (MiniLM's file pads and cuts at 128; docent pads per batch and cuts at the
/// model's own limit).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| Error::Unavailable {
        message: format!("cannot load tokenizer {}: {e}", path.display()),
        source: None,
    })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::internal("cannot disable truncation", e.to_string()))?;
    Ok(tokenizer)
}

/// A BERT configuration file (`config.json`, or a converted model's).
pub fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::unavailable(format!("cannot read {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::unavailable(format!("invalid {}", path.display()), e))
}

/// The encoder of `config` from the f32 safetensors at `weights`, laid out
/// for `precision` (already resolved).
pub fn load_encoder(weights: &Path, config: &Config, precision: Precision) -> Result<Encoder> {
    // Mapped, not read: a read would copy the whole file into fresh memory
    // (most of a load after the machine sat idle; docs/benchmarks.md,
    // session 33). Pulled models are replaced by a rename, never rewritten
    // in place, as `map_file` requires.
    let bytes = std::fs::File::open(weights)
        .and_then(|file| docent_ops::map_file(&file))
        .map_err(|e| Error::unavailable(format!("cannot read {}", weights.display()), e))?;
    Encoder::load_mapped(bytes, config, precision)
        .map_err(|e| Error::unavailable(format!("cannot build BERT from {}", weights.display()), e))
}

struct Job {
    texts: Vec<String>,
    reply: SyncSender<Result<Vec<Vec<f32>>>>,
}

/// A BERT sentence encoder running on a dedicated thread.
pub struct BertEmbedder {
    model_id: String,
    /// A copy of the worker's tokenizer, for counting tokens off the model thread.
    tokenizer: Tokenizer,
    dimension: usize,
    max_input_tokens: usize,
    precision: Precision,
    jobs: Option<SyncSender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl BertEmbedder {
    /// Loads the model and starts its thread. Fails with a message naming the
    /// missing or broken file.
    pub fn load(options: BertEmbedderOptions) -> Result<Self> {
        let dir = &options.model_dir;
        let config = read_config(&dir.join("config.json"))?;
        let dimension = config.hidden_size;
        let max_seq_len = options.max_seq_len.min(config.max_position_embeddings);
        let mut tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::internal("cannot set truncation", e.to_string()))?;
        let device = Device::Cpu;
        let precision = options
            .precision
            .resolve()
            .map_err(|message| Error::setting("embed.precision", message))?;
        let model = load_encoder(&dir.join("model.safetensors"), &config, precision)?;
        let (tx, rx) = sync_channel::<Job>(options.queue_depth.max(1));
        let worker = Worker {
            model,
            tokenizer: tokenizer.clone(),
            device,
            batch_size: options.batch_size.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("docent-embed".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::internal("cannot start the embedding thread", e))?;
        Ok(BertEmbedder {
            model_id: options.model_id,
            tokenizer,
            dimension,
            max_input_tokens: max_seq_len - 2,
            precision,
            jobs: Some(tx),
            worker: Some(handle),
        })
    }
}

impl BertEmbedder {
    /// The precision the encoder runs at (`auto` resolved for this CPU).
    pub fn precision(&self) -> Precision {
        self.precision
    }
}

impl Embedder for BertEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The precision, and for int8 on the 7-bit kernels (AVX-512 BW or
    /// AVX2, `int8-w7a7`) its form: their vectors differ from VNNI's.
    fn precision(&self) -> &'static str {
        match self.precision {
            Precision::Int8 if crate::encoder::int8_is_7bit() => "int8-w7a7",
            p => p.as_str(),
        }
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize: {e}")))?;
        Ok(encoding.len())
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = sync_channel(1);
        let unavailable = || Error::Unavailable {
            message: "the embedding thread has stopped".into(),
            source: None,
        };
        self.jobs
            .as_ref()
            .ok_or_else(unavailable)?
            .send(Job {
                texts: texts.to_vec(),
                reply,
            })
            .map_err(|_| unavailable())?;
        answer.recv().map_err(|_| unavailable())?
    }
}

impl Drop for BertEmbedder {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

/// What one more forward pass costs beyond its tokens, in tokens: the
/// fixed part of a pass (thread hand-offs and small ops of every layer) is
/// about 1.4 ms here, the time of about 50 tokens of a full batch (`docent
/// bench embed --batch 8/16/32`: 13.5, 25.4 and 49.6 ms a batch of 55-token
/// texts), and passes over few rows run the products less efficiently, so
/// this counts a pass as somewhat more.
const BATCH_OVERHEAD_TOKENS: usize = 128;

/// Splits texts of `lengths` tokens, sorted longest first, into runs of at
/// most `max_texts` that a forward pass each pads to their first (longest)
/// text, choosing the cuts that minimise the padded tokens plus `overhead`
/// per pass. Cutting every `max_texts` texts padded a short call's ragged
/// tail: 13.6% of a 96-chunk ingestion batch's tokens were padding
/// (docs/benchmarks.md, session 24).
pub fn length_batches(
    lengths: &[usize],
    max_texts: usize,
    overhead: usize,
) -> Vec<std::ops::Range<usize>> {
    let n = lengths.len();
    let max_texts = max_texts.max(1);
    debug_assert!(lengths.windows(2).all(|w| w[0] >= w[1]), "not sorted");
    // best[i]: the least cost of the first i texts, and where its last pass starts.
    let mut best: Vec<(usize, usize)> = vec![(0, 0); n + 1];
    for end in 1..=n {
        best[end] = (end.saturating_sub(max_texts)..end)
            .map(|start| {
                let cost = best[start].0 + (end - start) * lengths[start] + overhead;
                (cost, start)
            })
            .min()
            .expect("a pass ends here");
    }
    let mut batches = Vec::new();
    let mut end = n;
    while end > 0 {
        let start = best[end].1;
        batches.push(start..end);
        end = start;
    }
    batches.reverse();
    batches
}

struct Worker {
    model: Encoder,
    tokenizer: Tokenizer,
    device: Device,
    batch_size: usize,
}

impl Worker {
    /// Serves jobs in order. Jobs that queued up while the model was busy
    /// (concurrent queries, typically one text each) run as one batch, so N
    /// waiting requests cost about one forward pass instead of N.
    fn run(self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            let mut texts = group[0].texts.len();
            while texts < self.batch_size {
                match jobs.try_recv() {
                    Ok(job) => {
                        texts += job.texts.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            if group.len() == 1 {
                let job = group.pop().expect("one job");
                let result = self.embed_all(&job.texts);
                let _ = job.reply.send(result);
                continue;
            }
            let all: Vec<String> = group.iter().flat_map(|j| j.texts.iter().cloned()).collect();
            match self.embed_all(&all) {
                Ok(mut vectors) => {
                    for job in group.into_iter().rev() {
                        let mine = vectors.split_off(vectors.len() - job.texts.len());
                        let _ = job.reply.send(Ok(mine));
                    }
                }
                // Retry one by one so one bad input fails only its own request.
                Err(_) => {
                    for job in group {
                        let result = self.embed_all(&job.texts);
                        let _ = job.reply.send(result);
                    }
                }
            }
        }
    }

    /// Tokenizes everything, then runs batches of similar length so padding stays small.
    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize: {e}")))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));
        let lengths: Vec<usize> = order
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .collect();
        let batches = length_batches(&lengths, self.batch_size, BATCH_OVERHEAD_TOKENS);
        tracing::debug!(
            texts = texts.len(),
            batches = batches.len(),
            tokens = lengths.iter().sum::<usize>(),
            padded = batches
                .iter()
                .map(|b| b.len() * lengths[b.start])
                .sum::<usize>(),
            "embedding"
        );
        let mut out = vec![Vec::new(); texts.len()];
        for batch in batches.into_iter().map(|b| &order[b]) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_ids()).collect();
            let vectors = self
                .forward(&ids)
                .map_err(|e| Error::internal("embedding forward pass failed", e))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let seq = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = vec![0u32; n * seq];
        let mut mask = vec![0u32; n * seq];
        for (row, tokens) in batch.iter().enumerate() {
            ids[row * seq..row * seq + tokens.len()].copy_from_slice(tokens);
            mask[row * seq..row * seq + tokens.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, seq), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, seq), &self.device)?;
        let hidden = self.model.forward(&ids, &mask)?;
        mean_pool(&hidden, &mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(lengths: &[usize], batches: &[std::ops::Range<usize>], overhead: usize) -> usize {
        batches
            .iter()
            .map(|b| b.len() * lengths[b.start] + overhead)
            .sum()
    }

    #[test]
    fn equal_lengths_fill_whole_passes() {
        let lengths = vec![55; 100];
        let batches = length_batches(&lengths, 32, BATCH_OVERHEAD_TOKENS);
        // As few passes as 32 a pass allows, and nothing to pad.
        assert_eq!(batches.len(), 4, "{batches:?}");
        assert_eq!(cost(&lengths, &batches, 0), 100 * 55);
        assert!(length_batches(&[], 32, BATCH_OVERHEAD_TOKENS).is_empty());
    }

    #[test]
    fn a_long_head_is_cut_off_rather_than_padding_the_rest() {
        // Two long texts, then thirty short ones: one pass of 32 would pad
        // thirty texts to 250 tokens.
        let mut lengths = vec![250, 240];
        lengths.extend(std::iter::repeat_n(20, 30));
        let batches = length_batches(&lengths, 32, BATCH_OVERHEAD_TOKENS);
        assert_eq!(batches, vec![0..2, 2..32]);
    }

    #[test]
    fn cuts_cover_every_text_in_order_and_never_cost_more_than_fixed_passes() {
        // Ragged lengths from a small generator, several sizes and limits.
        let mut seed = 7u64;
        for n in [1usize, 5, 31, 32, 33, 96, 341, 1000] {
            let mut lengths: Vec<usize> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    3 + (seed >> 33) as usize % 254
                })
                .collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            for max_texts in [1, 8, 32] {
                let batches = length_batches(&lengths, max_texts, BATCH_OVERHEAD_TOKENS);
                let mut next = 0;
                for b in &batches {
                    assert_eq!(b.start, next, "gap or overlap");
                    assert!(!b.is_empty() && b.len() <= max_texts);
                    next = b.end;
                }
                assert_eq!(next, n);
                let fixed: Vec<_> = (0..n)
                    .step_by(max_texts)
                    .map(|s| s..(s + max_texts).min(n))
                    .collect();
                let (ours, theirs) = (
                    cost(&lengths, &batches, BATCH_OVERHEAD_TOKENS),
                    cost(&lengths, &fixed, BATCH_OVERHEAD_TOKENS),
                );
                assert!(
                    ours <= theirs,
                    "{n} texts, {max_texts} a pass: {ours} > {theirs}"
                );
                if n >= 96 && max_texts == 32 {
                    assert!(ours < theirs, "{n} ragged texts gained nothing");
                }
            }
        }
    }
}
