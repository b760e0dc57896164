//! `POST /v1/ask` (JSON or SSE) and `POST /v1/search`, and the rendering of
//! an answer's events as SSE that the OpenAI-compatible endpoint shares.

use crate::access::Target;
use crate::error::{ApiError, blocking};
use crate::json::ApiJson;
use crate::state::{AppState, Served};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use docent_core::{ChatMessage, SamplingParams, SearchFilter, SearchMode};
use docent_query::{AnswerEvent, AnswerStream, AnswerStyle, AskRequest, AskResponse};
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
    /// Reorder the candidates with the cross-encoder (default: true when a
    /// reranker is configured).
    pub rerank: Option<bool>,
    /// "concise" (the answer in a few words, then at most one sentence of
    /// support) or "detailed"; default `query.answer_style`.
    pub answer_style: Option<AnswerStyle>,
    /// Earlier turns of the conversation, oldest first (`user` and
    /// `assistant` messages). A follow-up question is rewritten to stand
    /// alone before retrieval (`rewritten_query` in the answer). Not with
    /// `conversation_id`.
    pub history: Option<Vec<HistoryMessage>>,
    /// A conversation from `POST /v1/conversations`: its stored turns are
    /// the history, and this question and its answer are added to it.
    pub conversation_id: Option<String>,
    /// The collection to ask (else the path's, else the server's default).
    pub collection: Option<String>,
}

/// One earlier message of a conversation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryMessage {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// At most this many earlier messages are accepted with a request.
const MAX_HISTORY_MESSAGES: usize = 100;

/// Earlier messages as chat messages; `system` messages and empty ones are
/// dropped, other roles refused.
pub(crate) fn history_of<'a>(
    messages: impl IntoIterator<Item = (&'a str, String)>,
    field: &str,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out = Vec::new();
    for (i, (role, content)) in messages.into_iter().enumerate() {
        if i >= MAX_HISTORY_MESSAGES {
            return Err(ApiError::invalid(format!(
                "{field}: at most {MAX_HISTORY_MESSAGES} messages"
            )));
        }
        let message = match role {
            "user" => ChatMessage::user(content),
            "assistant" => ChatMessage::assistant(content),
            "system" | "developer" | "tool" => continue,
            other => {
                return Err(ApiError::invalid(format!(
                    "{field}[{i}].role: {other:?} is not user or assistant"
                )));
            }
        };
        if !message.content.trim().is_empty() {
            out.push(message);
        }
    }
    Ok(out)
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
    /// Reorder the candidates with the cross-encoder (default: true when a
    /// reranker is configured).
    pub rerank: Option<bool>,
    /// The collection to search (else the path's, else the server's default).
    pub collection: Option<String>,
}

/// One ranked chunk of `POST /v1/search`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The ranking score (fused in hybrid mode).
    pub score: f32,
    /// Cosine similarity between the query and the chunk.
    pub similarity: f32,
    /// The reranker's relevance logit, when it ran (it then decided the order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
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

    pub(crate) async fn ask_request(
        &self,
        served: &Served,
        body: &AskBody,
    ) -> Result<AskRequest, ApiError> {
        if body.question.trim().is_empty() {
            return Err(ApiError::invalid("question: must not be empty"));
        }
        let history = match (&body.history, &body.conversation_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "history: send either history or conversation_id, not both",
                ));
            }
            (Some(messages), None) => history_of(
                messages
                    .iter()
                    .map(|m| (m.role.as_str(), m.content.clone())),
                "history",
            )?,
            (None, Some(id)) => served.conversation(id).await?.history(),
            (None, None) => Vec::new(),
        };
        Ok(AskRequest {
            history,
            question: body.question.clone(),
            top_k: body.top_k.map(|k| k.clamp(1, self.limits.max_top_k)),
            filter: body.filters.clone().unwrap_or_default(),
            mode: body.mode,
            rerank: body.rerank,
            answer_style: body.answer_style,
            sampling: self.sampling(body.max_tokens, body.temperature, None, None),
        })
    }
}

/// Retrieves, builds the prompt and queues the generation (off the async
/// runtime). Errors, including a full queue (429), come back before any
/// byte is sent. Dropping the stream cancels the generation.
pub(crate) async fn start_answer(
    state: &Arc<AppState>,
    served: &Served,
    request: AskRequest,
) -> Result<AnswerStream, ApiError> {
    let asker = served.asker.clone();
    blocking("retrieval task", move || asker.start(&request))
        .await
        .inspect_err(|e| {
            if e.status == axum::http::StatusCode::TOO_MANY_REQUESTS {
                state.metrics.add_rejection();
            }
        })
}

/// Waits for the whole answer.
pub(crate) async fn finish_answer(
    state: &AppState,
    answer: AnswerStream,
) -> Result<AskResponse, ApiError> {
    let response = answer.finish().await?;
    state.metrics.add_answer(&response);
    Ok(response)
}

/// Renders an answer as Server-Sent Events: `render` turns each answer
/// event into the events sent for it. A task pulls the answer; when the
/// client hangs up it stops at once, dropping the answer, which cancels the
/// generation even while it is still queued.
pub(crate) fn answer_events(
    state: Arc<AppState>,
    mut answer: AnswerStream,
    mut render: impl FnMut(AnswerEvent) -> Vec<Event> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = answer.next() => event,
                _ = tx.closed() => return,
            };
            let Some(event) = event else { return };
            if let AnswerEvent::Done(response) = &event {
                state.metrics.add_answer(response);
            }
            for sse in render(event) {
                if tx.send(Ok(sse)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[utoipa::path(
    post,
    path = "/v1/ask",
    tag = "ask",
    request_body = AskBody,
    responses(
        (status = 200, description = "The answer with its citations. With `stream: true`, Server-Sent Events instead: `rewrite` ({rewritten_query}, only for a rewritten follow-up), `citations` (the passages), `token` ({text}) pieces, then `done` ({answer, answerable, usage, timings_ms, finish_reason, cited, rewritten_query, conversation_id}) or `error`.", body = AskResponse),
        (status = 422, description = "Invalid request (the message names the field)"),
        (status = 404, description = "`conversation_id` names no conversation (or it expired), or no such collection is served"),
        (status = 403, description = "The key may not use this collection"),
        (status = 429, description = "The generation queue is full; retry after `Retry-After` seconds"),
        (status = 502, description = "The generation server (`generate.kind = \"openai\"`) failed or is unreachable"),
        (status = 504, description = "The generation server did not answer in time"),
    )
)]
pub async fn ask(
    State(state): State<Arc<AppState>>,
    target: Target,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Response, ApiError> {
    let served = target.served(&state, body.collection.as_deref())?;
    let request = state.ask_request(&served, &body).await?;
    let stream = wants_stream(&body, &headers);
    let question = request.question.clone();
    let answer = start_answer(&state, &served, request).await?;
    let conversation = body.conversation_id.clone();
    if !stream {
        let response = finish_answer(&state, answer).await?;
        let mut json = serde_json::to_value(&response).expect("serialisable");
        if let Some(id) = conversation {
            json["conversation_id"] = serde_json::json!(id);
            served.record_turn(id, turn(&question, &response));
        }
        return Ok(axum::Json(json).into_response());
    }
    let mut rewritten = answer.rewritten_query().map(str::to_string);
    let recorder = served.clone();
    Ok(answer_events(state, answer, move |event| {
        let sse = match event {
            AnswerEvent::Citations(citations) => {
                let mut events = Vec::new();
                if let Some(query) = rewritten.take() {
                    events.push(
                        Event::default()
                            .event("rewrite")
                            .json_data(serde_json::json!({ "rewritten_query": query }))
                            .expect("serialisable"),
                    );
                }
                events.push(
                    Event::default()
                        .event("citations")
                        .json_data(&citations)
                        .expect("serialisable"),
                );
                return events;
            }
            AnswerEvent::Done(response) => {
                if let Some(id) = conversation.clone() {
                    recorder.record_turn(id, turn(&question, &response));
                }
                Ok(done_event(&response, conversation.as_deref()))
            }
            AnswerEvent::Piece(text) => Event::default()
                .event("token")
                .json_data(serde_json::json!({ "text": text })),
            AnswerEvent::Failed(error) => Event::default()
                .event("error")
                .json_data(ApiError::from(error).body()),
        };
        vec![sse.expect("serialisable")]
    }))
}

fn done_event(response: &AskResponse, conversation_id: Option<&str>) -> Event {
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
            "rewritten_query": response.rewritten_query,
            "conversation_id": conversation_id,
        }))
        .expect("serialisable")
}

/// What a conversation keeps of one answered question.
pub(crate) fn turn(question: &str, response: &AskResponse) -> crate::Turn {
    crate::Turn {
        question: question.to_string(),
        rewritten_query: response.rewritten_query.clone(),
        answer: response.answer.clone(),
        cited_sources: response
            .citations
            .iter()
            .filter(|c| c.cited)
            .map(|c| c.source.clone())
            .collect(),
        // Stamped by the store when it is recorded.
        at: 0,
    }
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    request_body = SearchBody,
    responses(
        (status = 200, description = "Ranked chunks, best first", body = SearchResponse),
        (status = 429, description = "`server.max_searches_in_flight` searches are running; retry after `Retry-After` seconds"),
        (status = 422, description = "Invalid request (the message names the field)"),
    )
)]
pub async fn search(
    State(state): State<Arc<AppState>>,
    target: Target,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<axum::Json<SearchResponse>, ApiError> {
    let served = target.served(&state, body.collection.as_deref())?;
    if body.query.trim().is_empty() {
        return Err(ApiError::invalid("query: must not be empty"));
    }
    let top_k = body.top_k.unwrap_or(10).clamp(1, state.limits.max_top_k);
    let filter = body.filters.unwrap_or_default();
    let asker = served.asker.clone();
    let permit = state.searches.admit()?;
    let hits = blocking("search task", move || {
        let _permit = permit;
        asker.search(&body.query, top_k, &filter, body.mode, body.rerank)
    })
    .await?;
    Ok(axum::Json(SearchResponse {
        results: hits
            .into_iter()
            .map(|h| SearchHit {
                score: h.score,
                similarity: h.similarity,
                rerank_score: h.rerank_score,
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
