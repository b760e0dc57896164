//! `POST /v1/ask` (JSON or SSE) and `POST /v1/search`.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use docent_core::{GenerationEvent, GenerationRequest, SamplingParams, SearchFilter, SearchMode};
use docent_query::{AnswerAssembler, AskRequest, AskResponse, NO_ANSWER};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Body of `POST /v1/ask`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// Overrides the configured search mode: dense, keyword or hybrid.
    #[serde(default)]
    pub mode: Option<SearchMode>,
    pub question: String,
    pub top_k: Option<usize>,
    pub filters: Option<SearchFilter>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub stream: Option<bool>,
}

/// Body of `POST /v1/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub query: String,
    pub top_k: Option<usize>,
    pub filters: Option<SearchFilter>,
    pub mode: Option<SearchMode>,
}

/// One ranked chunk of `POST /v1/search`.
#[derive(Debug, Serialize)]
pub struct SearchHit {
    pub score: f32,
    pub similarity: f32,
    pub document_id: String,
    pub source: String,
    pub chunk_id: String,
    pub start: usize,
    pub end: usize,
    pub line_start: usize,
    pub line_end: usize,
    pub heading: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub text: String,
}

#[derive(Debug, Serialize)]
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
    pub(crate) fn ask_request(&self, body: &AskBody) -> Result<AskRequest, ApiError> {
        if body.question.trim().is_empty() {
            return Err(ApiError::invalid("question: must not be empty"));
        }
        let d = &self.defaults;
        Ok(AskRequest {
            question: body.question.clone(),
            top_k: body.top_k.map(|k| k.clamp(1, self.limits.max_top_k)),
            filter: body.filters.clone().unwrap_or_default(),
            mode: body.mode,
            sampling: SamplingParams {
                max_tokens: body
                    .max_tokens
                    .unwrap_or(d.max_tokens)
                    .clamp(1, self.limits.max_tokens),
                temperature: body.temperature.unwrap_or(d.temperature).max(0.0),
                top_p: d.top_p,
                seed: d.seed,
            },
        })
    }
}

pub async fn ask(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Response, ApiError> {
    let request = state.ask_request(&body)?;
    let stream = wants_stream(&body, &headers);
    let asker = state.asker.clone();
    let prepare_request = request.clone();
    let prepared = tokio::task::spawn_blocking(move || asker.prepare(&prepare_request))
        .await
        .map_err(|e| ApiError::internal(format!("retrieval task failed: {e}")))??;
    let model = state.asker.generator().model_id().to_string();
    let mut assembler = AnswerAssembler::new(&model, &prepared);
    if prepared.passages.is_empty() {
        let response = assembler.finish_without_generation();
        return Ok(if stream {
            sse_from_response(response)
        } else {
            axum::Json(response).into_response()
        });
    }
    // Queue admission happens here, before any byte is sent: a full queue is a 429.
    let mut events = state.asker.generator().generate(GenerationRequest {
        messages: prepared.messages,
        sampling: request.sampling,
    })?;
    if !stream {
        while let Some(event) = events.recv().await {
            match event {
                GenerationEvent::Text(text) => {
                    assembler.push(&text);
                }
                GenerationEvent::Done { stats, finish } => {
                    assembler.flush();
                    return Ok(axum::Json(assembler.finish(stats, finish)).into_response());
                }
                GenerationEvent::Failed(message) => {
                    return Err(ApiError::internal(format!("generation failed: {message}")));
                }
            }
        }
        return Err(ApiError::internal(
            "the generation thread stopped without finishing",
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let citations = Event::default()
        .event("citations")
        .json_data(assembler.citations())
        .expect("serialisable");
    tokio::spawn(async move {
        if tx.send(Ok(citations)).await.is_err() {
            return;
        }
        // When the client goes away, `tx.send` fails, this task ends and drops
        // `events`, which cancels the generation on the model thread.
        while let Some(event) = events.recv().await {
            let sse = match event {
                GenerationEvent::Text(text) => {
                    let shown = assembler.push(&text);
                    if shown.is_empty() {
                        continue;
                    }
                    Event::default()
                        .event("token")
                        .json_data(serde_json::json!({ "text": shown }))
                }
                GenerationEvent::Done { stats, finish } => {
                    let tail = assembler.flush();
                    if !tail.is_empty() {
                        let tail_event = Event::default()
                            .event("token")
                            .json_data(serde_json::json!({ "text": tail }));
                        if tx
                            .send(Ok(tail_event.expect("serialisable")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let done = done_event(&assembler.finish(stats, finish));
                    let _ = tx.send(Ok(done)).await;
                    return;
                }
                GenerationEvent::Failed(message) => {
                    let error = ApiError::internal(format!("generation failed: {message}"));
                    let _ = tx
                        .send(Ok(Event::default()
                            .event("error")
                            .json_data(error.body())
                            .expect("serialisable")))
                        .await;
                    return;
                }
            };
            if tx.send(Ok(sse.expect("serialisable"))).await.is_err() {
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

/// An SSE stream for an answer that needed no generation.
fn sse_from_response(response: AskResponse) -> Response {
    let events: Vec<Result<Event, Infallible>> = vec![
        Ok(Event::default()
            .event("citations")
            .json_data(&response.citations)
            .expect("serialisable")),
        Ok(Event::default()
            .event("token")
            .json_data(serde_json::json!({ "text": NO_ANSWER }))
            .expect("serialisable")),
        Ok(done_event(&response)),
    ];
    Sse::new(tokio_stream::iter(events)).into_response()
}

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
            .retrieve(&body.query, top_k, &filter, body.mode)
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
