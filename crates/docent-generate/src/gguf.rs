//! The GGUF generator: loading a quantized model (with its tokenizer and chat
//! template) and serving it on one thread behind a bounded queue, refusing
//! work when full and stopping a generation whose caller went away. The
//! forward pass is in `transformer`; this module owns the model's lifecycle.

use crate::chat::ChatTemplate;
use crate::tokenizer::{GgufTokenizer, as_u32};
use crate::transformer::{Prefill, Transformer};
use crate::weights_cache::WeightsCache;
use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use docent_core::{
    ChatMessage, Error, FinishReason, GenerationEvent, GenerationRequest, GenerationStats,
    Generator, Result,
};
use docent_ops::bf16::Precision;
use docent_ops::int8::WeightBits;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

/// How to load and run a GGUF model.
#[derive(Clone, Debug)]
pub struct GgufOptions {
    pub path: PathBuf,
    /// Name reported to users (e.g. `qwen2.5-0.5b-instruct`).
    pub model_id: String,
    /// Requests that may wait while one is generating; more are refused.
    pub queue_depth: usize,
    /// Upper bound on the context window, below the model's own.
    pub max_context: usize,
    /// Prompt tokens evaluated per forward pass.
    pub prefill_chunk: usize,
    /// Quantization formats without a fast CPU kernel (Q4_1, Q5_0, Q5_1) are
    /// converted to Q8_0 at load; about 5× faster decoding for ~1.7× memory.
    pub requantize_slow_formats: bool,
    /// Keep dense copies of the weights for prompt evaluation (instead of
    /// quantized dot products): about 3× faster prompts for 4 (f32) or 2
    /// (bf16) bytes per weight of extra memory.
    pub dense_prefill: bool,
    /// Precision of those copies: `auto` picks bf16 where the CPU has
    /// AVX-512 BF16.
    pub prefill_precision: Precision,
    /// Keep what loading computes (the re-quantized model, the dense prompt
    /// weights) in `.docent-cache/` beside the model, and read it back on
    /// the next load.
    pub weights_cache: bool,
}

impl GgufOptions {
    pub fn new(path: impl Into<PathBuf>, model_id: impl Into<String>) -> Self {
        GgufOptions {
            path: path.into(),
            model_id: model_id.into(),
            queue_depth: 4,
            max_context: 8192,
            prefill_chunk: 512,
            requantize_slow_formats: true,
            dense_prefill: true,
            prefill_precision: Precision::Auto,
            weights_cache: true,
        }
    }
}

struct Job {
    prompt: Vec<u32>,
    /// Tokens of the probe text, and the prompt it follows when that is not
    /// `prompt`.
    probe: Vec<u32>,
    probe_prompt: Option<Vec<u32>>,
    request: GenerationRequest,
    events: mpsc::Sender<GenerationEvent>,
}

/// What the weights cache did during one load.
#[derive(Default)]
struct CacheReport {
    read: Vec<&'static str>,
    written: Vec<&'static str>,
}

impl CacheReport {
    fn describe(&self, enabled: bool) -> String {
        match (enabled, self.read.is_empty(), self.written.is_empty()) {
            (false, _, _) => "off".into(),
            (true, true, true) => "nothing to cache".into(),
            (true, false, true) => format!("read {}", self.read.join(", ")),
            (true, true, false) => format!("wrote {}", self.written.join(", ")),
            (true, false, false) => format!(
                "read {}; wrote {}",
                self.read.join(", "),
                self.written.join(", ")
            ),
        }
    }
}

/// A quantized GGUF chat model on its own thread.
pub struct GgufGenerator {
    model_id: String,
    prefill: Prefill,
    /// What the weights cache did at load.
    cache_report: String,
    context_length: usize,
    /// The tokenizer and chat template.
    chat: PromptCounter,
    jobs: Option<SyncSender<Job>>,
    /// Jobs accepted and not yet picked up by the model thread.
    queued: Arc<AtomicUsize>,
    /// Most jobs that may wait (`queue_depth`).
    capacity: usize,
    /// Generations stopped because their caller went away.
    cancelled: Arc<AtomicU64>,
    worker: Option<JoinHandle<()>>,
}

/// The weights of int8 prompt evaluation on this CPU: 8-bit where the
/// kernel has VNNI (or is the portable code), 7-bit on AVX-512 BW and AVX2,
/// so that the activations keep 8 bits there
/// ([`WeightBits::for_8bit_activations`]).
pub fn int8_prompt_weights() -> WeightBits {
    WeightBits::for_8bit_activations(docent_ops::int8::Variant::detect())
}

/// Reads a GGUF's header, metadata and tensor directory (not the weights).
/// candle's reader bounds every declared count and length by the file's
/// size, but panics on some malformed headers (a `general.alignment` of 0
/// divides by zero); such a file is refused as malformed, like any other.
/// The reads are buffered: the metadata is mostly short strings (a
/// tokenizer's vocabulary and merges, about 300,000 for qwen2.5), which
/// candle reads one small `read` at a time. Tensors are later read at
/// absolute offsets, so the reader's position afterwards does not matter.
pub fn read_gguf_metadata<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
) -> candle_core::Result<Content> {
    let mut buffered = std::io::BufReader::with_capacity(1 << 16, reader);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Content::read(&mut buffered)
    }))
    .unwrap_or_else(|_| Err(candle_core::Error::msg("a malformed GGUF header")))
}

fn load_error(path: &std::path::Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("cannot load {}: {what}: {e}", path.display()),
        source: None,
    }
}

impl GgufGenerator {
    pub fn load(options: GgufOptions) -> Result<Self> {
        let path = &options.path;
        let mut file = std::fs::File::open(path).map_err(|e| load_error(path, "cannot open", e))?;
        let content =
            read_gguf_metadata(&mut file).map_err(|e| load_error(path, "not a GGUF file", e))?;
        let chat = PromptCounter::from_content(path, &content)?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let trained_context = content
            .metadata
            .get(&format!("{arch}.context_length"))
            .and_then(as_u32)
            .unwrap_or(2048) as usize;
        let device = Device::Cpu;
        let needs_requant = options.requantize_slow_formats
            && content
                .tensor_infos
                .values()
                .any(|t| is_slow_format(t.ggml_dtype));
        let cache = if options.weights_cache {
            WeightsCache::for_model(path)
                .map_err(|e| tracing::warn!("no weights cache for {}: {e}", path.display()))
                .ok()
        } else {
            None
        };
        let mut cache_report = CacheReport::default();
        // The reader, and the file it reads where it is one (the token
        // table is read from it row by row).
        let (content, mut reader, source): (Content, Box<dyn ReadSeek>, Option<std::fs::File>) =
            if needs_requant {
                match cache.as_ref().and_then(|c| c.open_requantized()) {
                    Some((content, file)) => {
                        cache_report.read.push("requantized");
                        let source = file.try_clone().ok();
                        (content, Box::new(file), source)
                    }
                    None => {
                        let (c, r) = requantize(content, &mut file, &device)
                            .map_err(|e| load_error(path, "re-quantizing", e))?;
                        if let Some(cache) = &cache {
                            match cache.write_requantized(r.get_ref()) {
                                Ok(()) => cache_report.written.push("requantized"),
                                Err(e) => tracing::warn!(
                                    "cannot write the weights cache {}: {e}",
                                    cache.requantized_path().display()
                                ),
                            }
                        }
                        (c, Box::new(r), None)
                    }
                }
            } else {
                let source = file.try_clone().ok();
                (content, Box::new(file), source)
            };
        let context_length = trained_context.min(options.max_context);
        let prefill = if options.dense_prefill {
            match options
                .prefill_precision
                .resolve()
                .map_err(|message| Error::setting("generate.prefill_precision", message))?
            {
                Precision::Bf16 => Prefill::Bf16,
                Precision::Int8 => Prefill::Int8(int8_prompt_weights()),
                _ => Prefill::F32,
            }
        } else {
            Prefill::Quantized
        };
        // Quantized prompts use neither dense nor docent's decoding weights.
        let used = cache.as_ref().filter(|_| prefill != Prefill::Quantized);
        let mut dense_cache = used.map(|c| c.read_dense(prefill)).unwrap_or_default();
        let mut decode_cache = used.map(WeightsCache::read_decode).unwrap_or_default();
        let model = Transformer::load(
            &content,
            &mut reader,
            source,
            &arch,
            context_length,
            prefill,
            &mut dense_cache,
            &mut decode_cache,
        )
        .map_err(|e| load_error(path, "weights", e))?;
        if let Some(cache) = &cache
            && prefill != Prefill::Quantized
        {
            if !dense_cache.stale {
                cache_report.read.push("dense prompt weights");
            } else {
                match cache.write_dense(prefill, &model.dense()) {
                    Ok(()) => cache_report.written.push("dense prompt weights"),
                    Err(e) => tracing::warn!("cannot write the weights cache: {e}"),
                }
            }
            let kernels = model.decode_kernels();
            if !kernels.is_empty() {
                if !decode_cache.stale {
                    cache_report.read.push("decoding weights");
                } else {
                    match cache.write_decode(&kernels) {
                        Ok(()) => cache_report.written.push("decoding weights"),
                        Err(e) => tracing::warn!("cannot write the weights cache: {e}"),
                    }
                }
            }
        }
        drop(reader);
        let (tx, rx) = sync_channel::<Job>(options.queue_depth);
        let queued = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            queued: queued.clone(),
            cancelled: cancelled.clone(),
            model,
            decoder: chat.tokenizer.with_specials.clone(),
            eos: chat.tokenizer.eos_ids.clone(),
            context_length,
            prefill_chunk: options.prefill_chunk.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("docent-generate".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::internal("cannot start the generation thread", e))?;
        Ok(GgufGenerator {
            model_id: options.model_id,
            prefill,
            cache_report: cache_report.describe(cache.is_some()),
            context_length,
            chat,
            jobs: Some(tx),
            queued,
            capacity: options.queue_depth.max(1),
            cancelled,
            worker: Some(handle),
        })
    }

    /// The tokenizer, for callers that need exact counts or ids.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.chat.tokenizer
    }

    /// Prompt ids for a conversation, as the model will see them.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.chat.render(messages)
    }
}

/// A model's tokenizer and chat template (its GGUF metadata): prompt ids
/// and sizes. The local generator renders its prompts with it; loaded
/// without the weights, it counts exactly for a generation server that runs
/// the same model.
pub struct PromptCounter {
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
}

impl PromptCounter {
    /// Reads only the metadata of the GGUF at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| load_error(path, "cannot open", e))?;
        let content =
            read_gguf_metadata(&mut file).map_err(|e| load_error(path, "not a GGUF file", e))?;
        Self::from_content(path, &content)
    }

    /// The tokenizer and chat template of the GGUF `content` read from `path`.
    fn from_content(path: &Path, content: &Content) -> Result<Self> {
        let tokenizer =
            GgufTokenizer::from_gguf(content).map_err(|e| load_error(path, "tokenizer", e))?;
        let template_text = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let template =
            ChatTemplate::detect(template_text.as_deref(), &tokenizer).ok_or_else(|| {
                load_error(
                    path,
                    "chat template",
                    "no supported chat template (ChatML) in this model",
                )
            })?;
        Ok(PromptCounter {
            tokenizer,
            template,
        })
    }

    /// Tokens `text` takes.
    pub fn count(&self, text: &str) -> Result<usize> {
        self.tokenizer
            .encode_plain(text)
            .map(|ids| ids.len())
            .map_err(|e| Error::InvalidInput(e.to_string()))
    }

    /// Prompt ids of the whole conversation, up to the opening of the
    /// assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.template
            .render(&self.tokenizer, messages)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the prompt: {e}")))
    }

    /// Tokens of the whole rendered conversation.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize> {
        self.render(messages).map(|ids| ids.len())
    }

    /// Tokens the chat markup adds around the messages' contents
    /// (`Generator::template_overhead`).
    pub fn overhead(&self, messages: &[ChatMessage]) -> Result<usize> {
        let content = messages
            .iter()
            .map(|m| self.count(&m.content))
            .sum::<Result<usize>>()?;
        Ok(self.prompt_tokens(messages)?.saturating_sub(content))
    }
}

trait ReadSeek: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> ReadSeek for T {}

fn is_slow_format(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Rewrites the model in memory with slow-kernel tensors converted to Q8_0.
pub(crate) fn requantize(
    content: Content,
    file: &mut std::fs::File,
    device: &Device,
) -> candle_core::Result<(Content, Cursor<Vec<u8>>)> {
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(file, name, device)?;
        let tensor = if is_slow_format(tensor.dtype()) {
            QTensor::quantize(&tensor.dequantize(device)?, GgmlDType::Q8_0)?
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &refs)?;
    drop(refs);
    drop(tensors);
    buffer.set_position(0);
    let content = Content::read(&mut buffer)?;
    Ok((content, buffer))
}

impl Generator for GgufGenerator {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn prefill_precision(&self) -> &'static str {
        self.prefill.name()
    }

    fn weights_cache(&self) -> String {
        self.cache_report.clone()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        self.chat.count(text)
    }

    fn template_overhead(&self, messages: &[ChatMessage]) -> Result<usize> {
        self.chat.overhead(messages)
    }

    fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < self.capacity
    }

    fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn generate(&self, request: GenerationRequest) -> Result<mpsc::Receiver<GenerationEvent>> {
        let prompt = self.render(&request.messages)?;
        if prompt.len() + 1 >= self.context_length {
            return Err(Error::InvalidInput(format!(
                "the prompt takes {} tokens; the model's context is {}",
                prompt.len(),
                self.context_length
            )));
        }
        let (probe, probe_prompt) = match &request.probe {
            Some(probe) => (
                self.chat.tokenizer.encode_plain(&probe.text).map_err(|e| {
                    Error::InvalidInput(format!("cannot tokenize the probe text: {e}"))
                })?,
                probe
                    .messages
                    .as_deref()
                    .map(|m| self.render(m))
                    .transpose()?,
            ),
            None => (Vec::new(), None),
        };
        if probe_prompt
            .as_ref()
            .is_some_and(|p| p.len() + probe.len() >= self.context_length)
        {
            return Err(Error::InvalidInput(
                "the probe prompt does not fit the model's context".into(),
            ));
        }
        let (events, receiver) = mpsc::channel(256);
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::Unavailable {
            message: "generator stopped".into(),
            source: None,
        })?;
        // Count before sending so the worker's decrement never runs first.
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = jobs.try_send(Job {
            prompt,
            probe,
            probe_prompt,
            request,
            events,
        });
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => {
                Err(Error::Overloaded("the generation queue is full".into()))
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::Unavailable {
                message: "the generation thread has stopped".into(),
                source: None,
            }),
        }
    }
}

impl Drop for GgufGenerator {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

struct Worker {
    queued: Arc<AtomicUsize>,
    cancelled: Arc<AtomicU64>,
    model: Transformer,
    decoder: Tokenizer,
    eos: Vec<u32>,
    context_length: usize,
    prefill_chunk: usize,
}

impl Worker {
    /// log P(reply starts with `tokens`), given the logits after the prompt;
    /// the cache is rewound to the prompt afterwards.
    fn probe(
        &mut self,
        logits: &candle_core::Tensor,
        tokens: &[u32],
        prompt_len: usize,
    ) -> candle_core::Result<f32> {
        let mut total = 0.0;
        let mut logits = logits.clone();
        for (i, &token) in tokens.iter().enumerate() {
            let logprobs = candle_nn::ops::log_softmax(&logits, 0)?;
            total += logprobs.get(token as usize)?.to_scalar::<f32>()?;
            if i + 1 < tokens.len() {
                logits = self.model.forward(&[token])?;
            }
        }
        self.model.truncate(prompt_len);
        Ok(total)
    }

    /// Evaluates the part of `prompt` the cache does not hold yet. Returns
    /// the logits after its last token and how many tokens were reused, or
    /// `None` when the caller went away meanwhile.
    fn prefill(
        &mut self,
        prompt: &[u32],
        events: &mpsc::Sender<GenerationEvent>,
    ) -> candle_core::Result<Option<(candle_core::Tensor, usize)>> {
        let reused = self.model.reuse_prefix(prompt);
        let mut logits = None;
        for piece in prompt[reused..].chunks(self.prefill_chunk) {
            logits = Some(self.model.forward(piece)?);
            if events.is_closed() {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        match logits {
            Some(logits) => Ok(Some((logits, reused))),
            None => Err(candle_core::Error::Msg("empty prompt".into())),
        }
    }

    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                continue; // the caller left while the job was queued
            }
            let events = job.events.clone();
            if let Err(e) = self.generate(job) {
                self.model.reset();
                let _ = events.blocking_send(GenerationEvent::Failed(Error::Internal {
                    message: format!("generation failed: {e}"),
                    source: None,
                }));
            }
        }
    }

    fn generate(&mut self, job: Job) -> candle_core::Result<()> {
        let sampling = &job.request.sampling;
        let mut logits_processor = LogitsProcessor::from_sampling(
            sampling.seed,
            if sampling.temperature <= 0.0 {
                Sampling::ArgMax
            } else {
                match sampling.top_p {
                    Some(p) if p > 0.0 && p < 1.0 => Sampling::TopP {
                        p,
                        temperature: sampling.temperature,
                    },
                    _ => Sampling::All {
                        temperature: sampling.temperature,
                    },
                }
            },
        );
        let mut stats = GenerationStats {
            prompt_tokens: job.prompt.len(),
            ..Default::default()
        };
        let t0 = Instant::now();
        // A probe on its own prompt runs first; the answer's prompt then
        // reuses the cache up to where the two differ.
        let separate_probe = match &job.probe_prompt {
            Some(prompt) if !job.probe.is_empty() => {
                let Some((logits, _)) = self.prefill(prompt, &job.events)? else {
                    return Ok(());
                };
                Some(self.probe(&logits, &job.probe, prompt.len())?)
            }
            _ => None,
        };
        let Some((mut logits, reused)) = self.prefill(&job.prompt, &job.events)? else {
            return Ok(());
        };
        stats.cached_prompt_tokens = reused;
        stats.prompt_eval_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if !job.probe.is_empty() {
            let logprob = match separate_probe {
                Some(logprob) => logprob,
                None => self.probe(&logits, &job.probe, job.prompt.len())?,
            };
            let probe = GenerationEvent::Probe {
                logprob,
                prompt_tokens: stats.prompt_tokens,
                prompt_eval_ms: stats.prompt_eval_ms,
            };
            if job.events.blocking_send(probe).is_err() {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let t1 = Instant::now();
        let budget = sampling
            .max_tokens
            .min(self.context_length.saturating_sub(job.prompt.len()));
        let mut stream = self.decoder.decode_stream(true);
        let mut finish = FinishReason::Length;
        for _ in 0..budget {
            let next = logits_processor.sample(&logits)?;
            if self.eos.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            stats.completion_tokens += 1;
            let text = stream
                .step(next)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            if let Some(text) = text
                && job
                    .events
                    .blocking_send(GenerationEvent::Text(text))
                    .is_err()
            {
                finish = FinishReason::Cancelled;
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if stats.completion_tokens == budget {
                break;
            }
            logits = self.model.forward(&[next])?;
        }
        stats.generate_ms = t1.elapsed().as_secs_f64() * 1000.0;
        let _ = job
            .events
            .blocking_send(GenerationEvent::Done { stats, finish });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::tests::{gguf, str_value, u32_value};

    #[test]
    fn metadata_is_read_without_tensors() {
        let bytes = gguf(&[("general.architecture", str_value("qwen2"))]);
        let content = read_gguf_metadata(&mut Cursor::new(bytes)).unwrap();
        assert!(content.tensor_infos.is_empty());
        assert_eq!(
            content.metadata["general.architecture"]
                .to_string()
                .unwrap(),
            "qwen2"
        );
    }

    /// Found by the `gguf_header` fuzz target: `general.alignment = 0` made
    /// candle's reader divide by zero (a panic while loading a model file).
    /// The header is now refused as malformed.
    #[test]
    fn fuzz_gguf_header_zero_alignment_divides_by_zero() {
        let bytes = gguf(&[("general.alignment", u32_value(0))]);
        let err = read_gguf_metadata(&mut Cursor::new(bytes)).unwrap_err();
        assert!(err.to_string().contains("malformed GGUF header"), "{err}");
    }

    /// A header declaring 2^40 metadata entries is refused before anything
    /// is allocated for them.
    #[test]
    fn a_header_declaring_more_entries_than_bytes_is_refused() {
        let mut bytes = gguf(&[]);
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(read_gguf_metadata(&mut Cursor::new(bytes)).is_err());
    }
}
