//! `POST /v1/ask` (JSON or SSE) and `POST /v1/search`, and the answer runner
//! the OpenAI-compatible endpoint shares.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use docent_core::{GenerationEvent, GenerationRequest, SamplingParams, SearchFilter, SearchMode};
use docent_query::{AnswerAssembler, AskRequest, AskResponse, Citation, NO_ANSWER};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Body of `POST /v1/ask`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    pub question: String,
    /// Passages to retrieve (clamped to `server.max_top_k`).
    pub top_k: Option<usize>,
    pub filters: Option<SearchFilter>,
    /// Overrides the configured search mode.
    pub mode: Option<SearchMode>,
    /// Most tokens to generate (clamped to `server.max_tokens`).
    pub max_tokens: Option<usize>,
    /// 0 is greedy.
    pub temperature: Option<f64>,
    /// Answer in Server-Sent Events (also chosen by `Accept: text/event-stream`).
    pub stream: Option<bool>,
}

/// Body of `POST /v1/search`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub query: String,
    /// Results to return (default 10, clamped to `server.max_top_k`).
    pub top_k: Option<usize>,
    pub filters: Option<SearchFilter>,
    /// Overrides the configured search mode.
    pub mode: Option<SearchMode>,
}

/// One ranked chunk of `POST /v1/search`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The ranking score (fused in hybrid mode).
    pub score: f32,
    /// Cosine similarity between the query and the chunk.
    pub similarity: f32,
    pub document_id: String,
    pub source: String,
    pub chunk_id: String,
    /// Byte offsets into the extracted text of the source.
    pub start: usize,
    pub end: usize,
    pub line_start: usize,
    pub line_end: usize,
    pub heading: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
}

fn wants_stream(body: &AskBody, headers: &HeaderMap) -> bool {
    body.stream.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"))
}

impl AppState {
    /// Sampling for a request: its own values within the limits, else the defaults.
    pub(crate) fn sampling(
        &self,
        max_tokens: Option<usize>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        seed: Option<u64>,
    ) -> SamplingParams {
        let d = &self.defaults;
        SamplingParams {
            max_tokens: max_tokens
                .unwrap_or(d.max_tokens)
                .clamp(1, self.limits.max_tokens),
            temperature: temperature.unwrap_or(d.temperature).max(0.0),
            top_p: top_p.or(d.top_p),
            seed: seed.unwrap_or(d.seed),
        }
    }

    pub(crate) fn ask_request(&self, body: &AskBody) -> Result<AskRequest, ApiError> {
        if body.question.trim().is_empty() {
            return Err(ApiError::invalid("question: must not be empty"));
        }
        Ok(AskRequest {
            question: body.question.clone(),
            top_k: body.top_k.map(|k| k.clamp(1, self.limits.max_top_k)),
            filter: body.filters.clone().unwrap_or_default(),
            mode: body.mode,
            sampling: self.sampling(body.max_tokens, body.temperature, None, None),
        })
    }
}

/// What an answer in progress yields, in order: text pieces, then the end.
pub(crate) enum Piece {
    Text(String),
    Done(Box<AskResponse>),
    Failed(ApiError),
}

/// An answer whose passages are chosen and whose generation is admitted.
pub(crate) struct Answer {
    pub citations: Vec<Citation>,
    pub model: String,
    pub pieces: mpsc::Receiver<Piece>,
}

/// Retrieves, builds the prompt and queues the generation. Errors (including
/// a full queue, 429) come back before any byte is sent. Dropping
/// `Answer::pieces` cancels the generation.
pub(crate) async fn start_answer(
    state: &Arc<AppState>,
    request: AskRequest,
) -> Result<Answer, ApiError> {
    let asker = state.asker.clone();
    let prepare_request = request.clone();
    let prepared = tokio::task::spawn_blocking(move || asker.prepare(&prepare_request))
        .await
        .map_err(|e| ApiError::internal(format!("retrieval task failed: {e}")))??;
    let model = state.asker.generator().model_id().to_string();
    let mut assembler = AnswerAssembler::new(&model, &prepared, state.asker.settings());
    let citations = assembler.citations().to_vec();
    let (tx, pieces) = mpsc::channel::<Piece>(64);
    if prepared.passages.is_empty() {
        let _ = tx.try_send(Piece::Text(NO_ANSWER.to_string()));
        let _ = tx.try_send(Piece::Done(Box::new(assembler.finish_without_generation())));
        return Ok(Answer {
            citations,
            model,
            pieces,
        });
    }
    let mut events = match state.asker.generator().generate(GenerationRequest {
        probe: assembler.probe(&prepared.messages),
        messages: prepared.messages,
        sampling: request.sampling,
    }) {
        Ok(events) => events,
        Err(e) => {
            if matches!(e, docent_core::Error::Overloaded(_)) {
                state.metrics.add_rejection();
            }
            return Err(e.into());
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        // When the consumer goes away this task ends and drops `events`,
        // which cancels the generation on the model thread (or makes the
        // model thread skip it, if it is still queued).
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = tx.closed() => return,
            };
            let Some(event) = event else { break };
            let piece = match event {
                GenerationEvent::Probe {
                    logprob,
                    prompt_tokens,
                    prompt_eval_ms,
                } => {
                    if !assembler.measured(logprob, prompt_tokens, prompt_eval_ms) {
                        continue;
                    }
                    // Returning drops `events`, which stops the generation.
                    if tx.send(Piece::Text(NO_ANSWER.to_string())).await.is_ok() {
                        let response = assembler.finish_abstained();
                        state.metrics.add_tokens(response.usage.prompt_tokens, 0);
                        let _ = tx.send(Piece::Done(Box::new(response))).await;
                    }
                    return;
                }
                GenerationEvent::Text(text) => {
                    let shown = assembler.push(&text);
                    if shown.is_empty() {
                        continue;
                    }
                    Piece::Text(shown)
                }
                GenerationEvent::Done { stats, finish } => {
                    let tail = assembler.flush();
                    if !tail.is_empty() && tx.send(Piece::Text(tail)).await.is_err() {
                        return;
                    }
                    let response = assembler.finish(stats, finish);
                    state.metrics.add_tokens(
                        response.usage.prompt_tokens,
                        response.usage.completion_tokens,
                    );
                    let _ = tx.send(Piece::Done(Box::new(response))).await;
                    return;
                }
                GenerationEvent::Failed(message) => {
                    let _ = tx
                        .send(Piece::Failed(ApiError::internal(format!(
                            "generation failed: {message}"
                        ))))
                        .await;
                    return;
                }
            };
            if tx.send(piece).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(Piece::Failed(ApiError::internal(
                "the generation thread stopped without finishing",
            )))
            .await;
    });
    Ok(Answer {
        citations,
        model,
        pieces,
    })
}

/// Waits for the whole answer.
pub(crate) async fn finish_answer(mut answer: Answer) -> Result<AskResponse, ApiError> {
    while let Some(piece) = answer.pieces.recv().await {
        match piece {
            Piece::Text(_) => {}
            Piece::Done(response) => return Ok(*response),
            Piece::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the answer ended without finishing"))
}

#[utoipa::path(
    post,
    path = "/v1/ask",
    tag = "ask",
    request_body = AskBody,
    responses(
        (status = 200, description = "The answer with its citations. With `stream: true`, Server-Sent Events instead: `citations` (the passages), `token` ({text}) pieces, then `done` ({answer, answerable, usage, timings_ms, finish_reason, cited}) or `error`.", body = AskResponse),
        (status = 422, description = "Invalid request (the message names the field)"),
        (status = 429, description = "The generation queue is full; retry after `Retry-After` seconds"),
    )
)]
pub async fn ask(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Response, ApiError> {
    let request = state.ask_request(&body)?;
    let stream = wants_stream(&body, &headers);
    let answer = start_answer(&state, request).await?;
    if !stream {
        return Ok(axum::Json(finish_answer(answer).await?).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let citations = Event::default()
        .event("citations")
        .json_data(&answer.citations)
        .expect("serialisable");
    let mut pieces = answer.pieces;
    tokio::spawn(async move {
        if tx.send(Ok(citations)).await.is_err() {
            return;
        }
        loop {
            // A client that hangs up closes `tx`; stop at once, even while
            // the answer is still queued.
            let piece = tokio::select! {
                piece = pieces.recv() => piece,
                _ = tx.closed() => return,
            };
            let Some(piece) = piece else { return };
            let (event, last) = match piece {
                Piece::Text(text) => (
                    Event::default()
                        .event("token")
                        .json_data(serde_json::json!({ "text": text })),
                    false,
                ),
                Piece::Done(response) => (Ok(done_event(&response)), true),
                Piece::Failed(error) => (
                    Event::default().event("error").json_data(error.body()),
                    true,
                ),
            };
            if tx.send(Ok(event.expect("serialisable"))).await.is_err() || last {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn done_event(response: &AskResponse) -> Event {
    Event::default()
        .event("done")
        .json_data(serde_json::json!({
            "answer": response.answer,
            "answerable": response.answerable,
            "model": response.model,
            "usage": response.usage,
            "timings_ms": response.timings_ms,
            "finish_reason": response.finish_reason,
            "cited": response.citations.iter().filter(|c| c.cited).map(|c| c.n).collect::<Vec<_>>(),
        }))
        .expect("serialisable")
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    request_body = SearchBody,
    responses(
        (status = 200, description = "Ranked chunks, best first", body = SearchResponse),
        (status = 422, description = "Invalid request (the message names the field)"),
    )
)]
pub async fn search(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<axum::Json<SearchResponse>, ApiError> {
    if body.query.trim().is_empty() {
        return Err(ApiError::invalid("query: must not be empty"));
    }
    let top_k = body.top_k.unwrap_or(10).clamp(1, state.limits.max_top_k);
    let filter = body.filters.unwrap_or_default();
    let asker = state.asker.clone();
    let hits = tokio::task::spawn_blocking(move || {
        asker
            .retriever()
            .retrieve(
                &body.query,
                top_k,
                &filter,
                body.mode,
                docent_query::Purpose::Search,
            )
            .map(|r| r.passages)
    })
    .await
    .map_err(|e| ApiError::internal(format!("search task failed: {e}")))??;
    Ok(axum::Json(SearchResponse {
        results: hits
            .into_iter()
            .map(|h| SearchHit {
                score: h.score,
                similarity: h.similarity,
                document_id: h.chunk.document_id.0,
                source: h.chunk.source,
                chunk_id: h.chunk.id.to_string(),
                start: h.chunk.start,
                end: h.chunk.end,
                line_start: h.chunk.line_start,
                line_end: h.chunk.line_end,
                heading: h.chunk.heading,
                page: h.chunk.page,
                text: h.chunk.text,
            })
            .collect(),
    }))
}
