//! Generation on a remote OpenAI-compatible server (vLLM, Ollama,
//! llama.cpp's `llama-server`, or OpenAI itself) through
//! `POST {base_url}/chat/completions`.
//!
//! docent still builds the prompt, checks citations and decides abstention;
//! only the tokens come from the server. The answer streams as SSE and is
//! passed on piece by piece. When the server returns log-probabilities
//! (`logprobs`, `top_logprobs`), the probe ("I don't know") probability is
//! computed from them; when it does not, no probe event is sent and
//! abstention rests on the retrieval and reranker signals.
//!
//! [`OpenAiGenerator::generate`] blocks until the server has accepted the
//! request (answered with its response headers), so an unreachable or
//! failing server is an error before any event: `Error::Upstream` (502, or
//! 504 when it timed out). Requests are retried on connection errors, 429
//! and 5xx before that point. Once streaming, a stalled server is cut off
//! after `idle_timeout`, and dropping the event receiver closes the
//! connection, which stops the server's work.

use crate::gguf::PromptCounter;
use docent_core::{
    ChatMessage, Error, FinishReason, GenerationEvent, GenerationRequest, GenerationStats,
    Generator, Probe, Result,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How many alternatives per position are asked for, to find the probe's
/// tokens when the answer does not start with them.
const TOP_LOGPROBS: u32 = 20;

/// Where and how to reach the server.
#[derive(Clone)]
pub struct OpenAiOptions {
    /// The API root, e.g. `http://127.0.0.1:8080/v1` (`/chat/completions` is appended).
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; never logged or shown.
    pub api_key: Option<String>,
    /// The `model` field of each request.
    pub model: String,
    /// Reported as the answering model.
    pub model_id: String,
    /// The served model's context window in tokens.
    pub context_length: usize,
    pub connect_timeout: Duration,
    /// Longest wait for the server to accept a request (its response
    /// headers), per attempt.
    pub request_timeout: Duration,
    /// Longest silence while the answer streams.
    pub idle_timeout: Duration,
    /// Further attempts after a connection error, 429 or 5xx.
    pub retries: u32,
    /// Requests in flight at once; more are refused (`Error::Overloaded`).
    pub max_in_flight: usize,
    /// Ask for log-probabilities (needed for the model's own abstention signal).
    pub logprobs: bool,
    /// Exact token counts when the server runs a model whose GGUF is here;
    /// otherwise sizes are estimated (one token per 3 bytes, which over-counts
    /// English for BPE vocabularies, so prompts stay within budget).
    pub counter: Option<Arc<PromptCounter>>,
}

impl std::fmt::Debug for OpenAiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl OpenAiOptions {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let model = model.into();
        OpenAiOptions {
            base_url: base_url.into(),
            api_key: None,
            model_id: model.clone(),
            model,
            context_length: 8192,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            retries: 2,
            max_in_flight: 8,
            logprobs: true,
            counter: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// A [`Generator`] backed by an OpenAI-compatible server.
pub struct OpenAiGenerator {
    options: OpenAiOptions,
    client: reqwest::Client,
    /// Its own runtime, so that callers on plain threads (the CLI) and on
    /// an async server's blocking pool both work.
    runtime: Option<tokio::runtime::Runtime>,
    in_flight: Arc<AtomicUsize>,
    cancelled: Arc<AtomicU64>,
}

impl Drop for OpenAiGenerator {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Counts a request in flight until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenAiGenerator {
    pub fn new(options: OpenAiOptions) -> Result<Self> {
        let url = reqwest::Url::parse(&options.endpoint()).map_err(|e| {
            Error::InvalidInput(format!(
                "generate.openai.base_url {:?} is not a URL ({e}); write it like http://127.0.0.1:8080/v1",
                options.base_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidInput(format!(
                "generate.openai.base_url must start with http:// or https://, not {}",
                url.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| Error::internal("cannot build the HTTP client", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("docent-openai")
            .enable_all()
            .build()
            .map_err(|e| Error::internal("cannot start the HTTP runtime", e))?;
        Ok(OpenAiGenerator {
            options,
            client,
            runtime: Some(runtime),
            in_flight: Arc::new(AtomicUsize::new(0)),
            cancelled: Arc::new(AtomicU64::new(0)),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn body(&self, messages: &[ChatMessage], request: &GenerationRequest, stream: bool) -> Value {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.options.model,
            "messages": messages.iter().map(|m| json!({
                "role": crate::chat::role_name(m.role),
                "content": m.content,
            })).collect::<Vec<_>>(),
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "seed": s.seed,
            "stream": stream,
        });
        if let Some(top_p) = s.top_p.filter(|p| *p < 1.0 && s.temperature > 0.0) {
            body["top_p"] = json!(top_p);
        }
        if stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if self.options.logprobs && request.probe.is_some() {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(TOP_LOGPROBS);
        }
        body
    }

    /// Sends `body` until the server accepts it (2xx headers), retrying
    /// connection errors, 429 and 5xx.
    async fn send(
        client: &reqwest::Client,
        options: &OpenAiOptions,
        body: &Value,
    ) -> Result<reqwest::Response> {
        let url = options.endpoint();
        let mut attempt = 0;
        loop {
            let mut builder = client.post(&url).json(body);
            if let Some(key) = &options.api_key {
                builder = builder.bearer_auth(key);
            }
            let outcome = tokio::time::timeout(options.request_timeout, builder.send()).await;
            let (error, retryable) = match outcome {
                Err(_) => (
                    Error::Upstream {
                        message: format!(
                            "the generation server at {url} did not answer within {} s \
                             (generate.openai.request_timeout_secs)",
                            options.request_timeout.as_secs()
                        ),
                        timed_out: true,
                    },
                    false,
                ),
                Ok(Err(e)) => {
                    let timed_out = e.is_timeout();
                    (
                        Error::Upstream {
                            message: format!(
                                "cannot reach the generation server at {url}: {}; check that it \
                                 runs and that generate.openai.base_url is right",
                                error_chain(&e)
                            ),
                            timed_out,
                        },
                        e.is_connect() || e.is_request(),
                    )
                }
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    (
                        Error::Upstream {
                            message: format!(
                                "the generation server at {url} answered {status}: {}",
                                server_message(&text)
                            ),
                            timed_out: false,
                        },
                        status.as_u16() == 429 || status.is_server_error(),
                    )
                }
            };
            if !retryable || attempt >= options.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(attempt, error = %error, "retrying the generation server");
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(5))).await;
        }
    }

    /// The probe on its own messages: one token, non-streamed, with its
    /// alternatives. `None` when the server returns no log-probabilities.
    fn measure_probe(&self, request: &GenerationRequest, probe: &Probe) -> Result<Option<f32>> {
        let messages = probe.messages.as_deref().unwrap_or(&request.messages);
        let mut body = self.body(messages, request, false);
        body["max_tokens"] = json!(1);
        body["temperature"] = json!(0.0);
        let client = self.client.clone();
        let options = self.options.clone();
        let reply: Value = self.runtime().block_on(async move {
            let response = Self::send(&client, &options, &body).await?;
            response.json::<Value>().await.map_err(|e| Error::Upstream {
                message: format!("the generation server sent an unreadable reply: {e}"),
                timed_out: false,
            })
        })?;
        let positions = reply["choices"][0]["logprobs"]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(probe_logprob(&probe.text, &parse_positions(&positions)))
    }

    fn estimate(text: &str) -> usize {
        text.len().div_ceil(3)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The message of an OpenAI-style error body, or the start of the body.
fn server_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    message.chars().take(300).collect()
}

/// One generated position's token and its alternatives.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Position {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

fn parse_positions(content: &[Value]) -> Vec<Position> {
    content
        .iter()
        .map(|p| Position {
            token: p["token"].as_str().unwrap_or_default().to_string(),
            logprob: p["logprob"].as_f64().unwrap_or(f64::NEG_INFINITY) as f32,
            top: p["top_logprobs"]
                .as_array()
                .map(|alts| {
                    alts.iter()
                        .filter_map(|a| {
                            Some((
                                a["token"].as_str()?.to_string(),
                                a["logprob"].as_f64()? as f32,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The log-probability that the reply starts with `probe`, from the
/// generated positions and their alternatives. While the generated tokens
/// spell the probe, their log-probabilities add up. At the first position
/// that leaves it, the best listed alternative that continues the probe is
/// added and the walk stops: the later positions were never computed by the
/// server, and as each is at most 1 this is an upper bound. When no listed
/// alternative continues the probe, its probability is below the last
/// listed one's, and that bound is returned. `None` when there is nothing
/// to read (the server sent no log-probabilities).
pub(crate) fn probe_logprob(probe: &str, positions: &[Position]) -> Option<f32> {
    let probe = probe.trim_start();
    if positions.is_empty() || probe.is_empty() {
        return None;
    }
    let mut spelled = String::new();
    let mut total = 0.0f32;
    for position in positions {
        let continues = |token: &str| {
            let joined = format!("{spelled}{token}");
            let joined = joined.trim_start();
            !token.is_empty()
                && !joined.is_empty()
                && (probe.starts_with(joined) || joined.starts_with(probe))
        };
        if continues(&position.token) {
            total += position.logprob;
            spelled.push_str(&position.token);
            if spelled.trim_start().len() >= probe.len() {
                return Some(total);
            }
            continue;
        }
        let best = position
            .top
            .iter()
            .filter(|(token, _)| continues(token))
            .map(|(_, lp)| *lp)
            .fold(f32::NEG_INFINITY, f32::max);
        if best.is_finite() {
            return Some(total + best);
        }
        let floor = position
            .top
            .iter()
            .map(|(_, lp)| *lp)
            .fold(f32::INFINITY, f32::min);
        return Some(if floor.is_finite() {
            total + floor
        } else {
            f32::NEG_INFINITY
        });
    }
    // The reply ended inside the probe ("I don't"): all it had.
    Some(total)
}

/// What one SSE `data:` line of a streamed completion carries.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Delta {
    pub text: String,
    pub positions: Vec<Position>,
    pub finish: Option<FinishReason>,
    pub usage: Option<(usize, usize, usize)>,
    /// llama.cpp's `timings.prompt_ms`: the server's own prompt time.
    pub prompt_ms: Option<f64>,
    pub done: bool,
}

pub(crate) fn parse_data(line: &str) -> Result<Option<Delta>> {
    let Some(data) = line.strip_prefix("data:") else {
        return Ok(None);
    };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Some(Delta {
            done: true,
            ..Delta::default()
        }));
    }
    let chunk: Value = serde_json::from_str(data).map_err(|e| Error::Upstream {
        message: format!("the generation server sent a malformed stream event ({e}): {data:.200}"),
        timed_out: false,
    })?;
    if let Some(error) = chunk.get("error") {
        return Err(Error::Upstream {
            message: format!(
                "the generation server failed mid-answer: {}",
                server_message(&error.to_string())
            ),
            timed_out: false,
        });
    }
    let choice = &chunk["choices"][0];
    let usage = chunk["usage"].as_object().map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let cached = u
            .get("prompt_tokens_details")
            .and_then(|d| d["cached_tokens"].as_u64())
            .unwrap_or(0) as usize;
        (n("prompt_tokens"), n("completion_tokens"), cached)
    });
    Ok(Some(Delta {
        text: choice["delta"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        positions: choice["logprobs"]["content"]
            .as_array()
            .map(|c| parse_positions(c))
            .unwrap_or_default(),
        finish: match choice["finish_reason"].as_str() {
            Some("length") => Some(FinishReason::Length),
            Some(_) => Some(FinishReason::Stop),
            None => None,
        },
        usage,
        prompt_ms: chunk["timings"]["prompt_ms"].as_f64(),
        done: false,
    }))
}

/// Streams one accepted response into `events`.
struct Streamer {
    events: mpsc::Sender<GenerationEvent>,
    probe: Option<String>,
    /// Prompt size counted here, reported with the probe (the server's own
    /// count arrives only with the last event).
    prompt_tokens: usize,
    idle_timeout: Duration,
    started: Instant,
}

impl Streamer {
    async fn run(mut self, mut response: reqwest::Response) -> std::result::Result<(), ()> {
        let mut buffer = Vec::<u8>::new();
        let mut positions = Vec::<Position>::new();
        let mut held = String::new();
        let mut first_token: Option<Instant> = None;
        let mut completion = 0usize;
        let mut finish = FinishReason::Stop;
        let mut usage = None;
        let mut server_prompt_ms = None;
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(self.idle_timeout, response.chunk()) => chunk,
                _ = self.events.closed() => return Err(()),
            };
            let bytes = match chunk {
                Err(_) => {
                    return self
                        .fail(Error::Upstream {
                            message: format!(
                                "the generation server stopped sending for {} s mid-answer \
                                 (generate.openai.idle_timeout_secs)",
                                self.idle_timeout.as_secs()
                            ),
                            timed_out: true,
                        })
                        .await;
                }
                Ok(Err(e)) => {
                    return self
                        .fail(Error::Upstream {
                            message: format!(
                                "the generation server's stream broke: {}",
                                error_chain(&e)
                            ),
                            timed_out: false,
                        })
                        .await;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => bytes,
            };
            buffer.extend_from_slice(&bytes);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let delta = match parse_data(line.trim_end()) {
                    Ok(Some(delta)) => delta,
                    Ok(None) => continue,
                    Err(e) => return self.fail(e).await,
                };
                if delta.done {
                    break;
                }
                if let Some(u) = delta.usage {
                    usage = Some(u);
                }
                if let Some(p) = delta.prompt_ms {
                    server_prompt_ms = Some(p);
                }
                if let Some(f) = delta.finish {
                    finish = f;
                }
                completion += delta
                    .positions
                    .len()
                    .max(usize::from(!delta.text.is_empty()));
                positions.extend(delta.positions);
                if delta.text.is_empty() {
                    continue;
                }
                first_token.get_or_insert_with(Instant::now);
                held.push_str(&delta.text);
                // The probe needs the first tokens' alternatives: hold the
                // text until the probe can be told (or is known absent).
                if self.probe.is_some() && !self.try_probe(&positions, &held, first_token).await? {
                    continue;
                }
                if !held.is_empty() {
                    self.send(GenerationEvent::Text(std::mem::take(&mut held)))
                        .await?;
                }
            }
        }
        if self.probe.is_some() {
            self.try_probe_final(&positions, first_token).await?;
        }
        if !held.is_empty() {
            self.send(GenerationEvent::Text(held)).await?;
        }
        // Time to the first token as seen here, unless the server says how
        // long the prompt itself took.
        let prompt_eval_ms = server_prompt_ms.unwrap_or_else(|| {
            first_token
                .map(|t| t.duration_since(self.started).as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        });
        let (prompt_tokens, completion_tokens, cached) =
            usage.unwrap_or((self.prompt_tokens, completion, 0));
        let stats = GenerationStats {
            prompt_tokens,
            completion_tokens,
            cached_prompt_tokens: cached,
            prompt_eval_ms,
            generate_ms: first_token
                .map(|t| t.elapsed().as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
        };
        self.send(GenerationEvent::Done { stats, finish }).await
    }

    /// Sends the probe event once the positions seen decide it. True when
    /// text may flow (the probe was sent or cannot be measured).
    async fn try_probe(
        &mut self,
        positions: &[Position],
        held: &str,
        first_token: Option<Instant>,
    ) -> std::result::Result<bool, ()> {
        let Some(probe) = self.probe.clone() else {
            return Ok(true);
        };
        if positions.is_empty() {
            // A server without log-probabilities: nothing will come.
            if !held.is_empty() {
                self.probe = None;
                return Ok(true);
            }
            return Ok(false);
        }
        let spelled: String = positions.iter().map(|p| p.token.as_str()).collect();
        let spelled = spelled.trim_start();
        let decided = !probe.starts_with(spelled) || spelled.len() >= probe.len();
        if !decided {
            return Ok(false);
        }
        self.probe = None;
        if let Some(logprob) = probe_logprob(&probe, positions) {
            self.send_probe(logprob, first_token).await?;
        }
        Ok(true)
    }

    async fn try_probe_final(
        &mut self,
        positions: &[Position],
        first_token: Option<Instant>,
    ) -> std::result::Result<(), ()> {
        if let Some(probe) = self.probe.take()
            && let Some(logprob) = probe_logprob(&probe, positions)
        {
            self.send_probe(logprob, first_token).await?;
        }
        Ok(())
    }

    async fn send_probe(
        &self,
        logprob: f32,
        first_token: Option<Instant>,
    ) -> std::result::Result<(), ()> {
        let prompt_eval_ms = first_token
            .unwrap_or_else(Instant::now)
            .duration_since(self.started)
            .as_secs_f64()
            * 1000.0;
        self.send(GenerationEvent::Probe {
            logprob,
            prompt_tokens: self.prompt_tokens,
            prompt_eval_ms,
        })
        .await
    }

    async fn send(&self, event: GenerationEvent) -> std::result::Result<(), ()> {
        self.events.send(event).await.map_err(|_| ())
    }

    async fn fail(&self, error: Error) -> std::result::Result<(), ()> {
        self.send(GenerationEvent::Failed(error)).await
    }
}

impl Generator for OpenAiGenerator {
    fn model_id(&self) -> &str {
        &self.options.model_id
    }

    fn context_length(&self) -> usize {
        self.options.context_length
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        match &self.options.counter {
            Some(counter) => counter.count(text),
            None => Ok(Self::estimate(text)),
        }
    }

    fn template_overhead(&self, messages: &[ChatMessage]) -> Result<usize> {
        match &self.options.counter {
            Some(counter) => counter.overhead(messages),
            // Role markers and separators: a few tokens per message in
            // every chat format seen, plus the assistant's opening.
            None => Ok(8 * messages.len() + 4),
        }
    }

    fn queue_depth(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.options.max_in_flight
    }

    fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn generate(&self, request: GenerationRequest) -> Result<mpsc::Receiver<GenerationEvent>> {
        let taken = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.in_flight.clone());
        if taken >= self.options.max_in_flight {
            return Err(Error::Overloaded(format!(
                "{} answers are already being generated on the server (generate.queue_depth); \
                 retry shortly",
                self.options.max_in_flight
            )));
        }
        let prompt_tokens = self.count_tokens_of(&request.messages)?;
        let (events, receiver) = mpsc::channel(64);
        let mut reply_probe = None;
        if let Some(probe) = &request.probe {
            if probe.messages.is_some() {
                if self.options.logprobs
                    && let Some(logprob) = self.measure_probe(&request, probe)?
                {
                    events
                        .try_send(GenerationEvent::Probe {
                            logprob,
                            prompt_tokens,
                            prompt_eval_ms: 0.0,
                        })
                        .map_err(|e| Error::internal("cannot queue the probe", e.to_string()))?;
                }
            } else if self.options.logprobs {
                reply_probe = Some(probe.text.clone());
            }
        }
        let body = self.body(&request.messages, &request, true);
        let started = Instant::now();
        let client = self.client.clone();
        let options = self.options.clone();
        let response = self
            .runtime()
            .block_on(async move { Self::send(&client, &options, &body).await })?;
        let streamer = Streamer {
            events,
            probe: reply_probe,
            prompt_tokens,
            idle_timeout: self.options.idle_timeout,
            started,
        };
        let cancelled = self.cancelled.clone();
        self.runtime().spawn(async move {
            let _slot = slot;
            if streamer.run(response).await.is_err() {
                cancelled.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(receiver)
    }
}

impl OpenAiGenerator {
    fn count_tokens_of(&self, messages: &[ChatMessage]) -> Result<usize> {
        match &self.options.counter {
            Some(counter) => counter.prompt_tokens(messages),
            None => Ok(messages
                .iter()
                .map(|m| Self::estimate(&m.content))
                .sum::<usize>()
                + self.template_overhead(messages)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(token: &str, logprob: f32, top: &[(&str, f32)]) -> Position {
        Position {
            token: token.into(),
            logprob,
            top: top.iter().map(|(t, l)| (t.to_string(), *l)).collect(),
        }
    }

    #[test]
    fn probe_spelled_by_the_reply_adds_its_log_probabilities() {
        let positions = [
            pos("I", -0.1, &[]),
            pos(" don", -0.2, &[]),
            pos("'t", -0.05, &[]),
            pos(" know", -0.01, &[]),
            pos(".", -0.5, &[]),
        ];
        let lp = probe_logprob("I don't know", &positions).unwrap();
        assert!((lp - (-0.36)).abs() < 1e-5, "{lp}");
    }

    #[test]
    fn probe_left_at_the_first_token_takes_the_listed_alternative() {
        let positions = [pos(
            "The",
            -0.3,
            &[("The", -0.3), ("I", -2.0), ("In", -3.0)],
        )];
        assert_eq!(probe_logprob("I don't know", &positions), Some(-2.0));
        // "In" does not continue "I don't know": only "I" counts.
        let positions = [pos(
            "The",
            -0.3,
            &[("The", -0.3), ("In", -3.0), ("A", -4.0)],
        )];
        assert_eq!(probe_logprob("I don't know", &positions), Some(-4.0));
    }

    #[test]
    fn probe_left_later_adds_the_path_so_far() {
        let positions = [
            pos("I", -1.0, &[("I", -1.0)]),
            pos(" think", -0.5, &[(" think", -0.5), (" don", -1.5)]),
        ];
        assert_eq!(probe_logprob("I don't know", &positions), Some(-2.5));
    }

    #[test]
    fn no_positions_means_no_probe() {
        assert_eq!(probe_logprob("I don't know", &[]), None);
    }

    #[test]
    fn stream_lines_parse_text_finish_usage_and_errors() {
        let d = parse_data(r#"data: {"choices":[{"delta":{"content":"Paris"},"finish_reason":null,"logprobs":{"content":[{"token":"Paris","logprob":-0.1,"top_logprobs":[{"token":"Paris","logprob":-0.1}]}]}}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.text, "Paris");
        assert_eq!(d.positions.len(), 1);
        assert_eq!(d.positions[0].top, vec![("Paris".to_string(), -0.1)]);
        assert_eq!(d.finish, None);
        let d = parse_data(r#"data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.usage, Some((10, 3, 4)));
        let d = parse_data(r#"data: {"choices":[{"delta":{},"finish_reason":"length"}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.finish, Some(FinishReason::Length));
        assert!(parse_data("data: [DONE]").unwrap().unwrap().done);
        assert_eq!(parse_data(": keep-alive").unwrap(), None);
        let e = parse_data(r#"data: {"error":{"message":"out of memory"}}"#).unwrap_err();
        assert!(e.to_string().contains("out of memory"), "{e}");
        assert!(parse_data("data: {not json").is_err());
    }

    #[test]
    fn a_bad_base_url_is_refused_with_the_setting_named() {
        let e = OpenAiGenerator::new(OpenAiOptions::new("127.0.0.1:8080", "m"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("generate.openai.base_url"), "{e}");
    }

    #[test]
    fn options_debug_hides_the_key() {
        let mut o = OpenAiOptions::new("http://x/v1", "m");
        o.api_key = Some("sk-secret".into());
        assert!(!format!("{o:?}").contains("sk-secret"));
    }
}
