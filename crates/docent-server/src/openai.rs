//! OpenAI-compatible endpoints: `POST /v1/chat/completions` (answers the last
//! user message with retrieval; the messages before it are the conversation,
//! and a follow-up is rewritten to stand alone first), `POST /v1/embeddings` and `GET /v1/models`.
//!
//! Sources travel in a `docent` field beside the standard ones (the final
//! response, or the first and last stream chunks): `{"citations": [...],
//! "answerable": bool}`, and as `[n]` markers in the text. Official clients
//! keep unknown fields, so `completion.docent` (Python: `model_extra`) reads them.

use crate::access::Target;
use crate::ask::{answer_events, finish_answer, history_of, start_answer};
use crate::error::{ApiError, blocking};
use crate::json::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use docent_core::{FinishReason, SearchFilter};
use docent_query::{AnswerEvent, AskRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// One chat message. `content` may be a string or a list of `{type: "text", text}` parts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatMessageIn {
    pub role: String,
    #[schema(value_type = Object)]
    pub content: Option<Value>,
}

/// Body of `POST /v1/chat/completions`. Fields of the OpenAI API that docent
/// has no use for (`model`, `n`, `presence_penalty`, `user`, ...) are accepted
/// and ignored: docent answers with its configured model.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessageIn>,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    /// docent extension: retrieval filters.
    pub filters: Option<SearchFilter>,
    /// docent extension: passages to retrieve.
    pub top_k: Option<usize>,
    /// docent extension: the collection to answer from (else the path's,
    /// else the server's default).
    pub collection: Option<String>,
}

fn text_of(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn finish_reason(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    }
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "An OpenAI `chat.completion` (or, with `stream: true`, `chat.completion.chunk` events ending with `data: [DONE]`), with the sources in the `docent` field"),
        (status = 422, description = "No user message, or an invalid field"),
        (status = 429, description = "The generation queue is full"),
        (status = 502, description = "The generation server (`generate.kind = \"openai\"`) failed or is unreachable"),
        (status = 504, description = "The generation server did not answer in time"),
    )
)]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    target: Target,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let served = target.served(&state, body.collection.as_deref())?;
    let last_user = body
        .messages
        .iter()
        .rposition(|m| m.role == "user")
        .filter(|&i| !text_of(&body.messages[i].content).trim().is_empty())
        .ok_or_else(|| ApiError::invalid("messages: needs a non-empty message with role `user`"))?;
    let question = text_of(&body.messages[last_user].content);
    // The turns before the question are the conversation: a follow-up is
    // rewritten to stand alone before retrieval.
    let history = history_of(
        body.messages[..last_user]
            .iter()
            .map(|m| (m.role.as_str(), text_of(&m.content))),
        "messages",
    )?;
    let request = AskRequest {
        history,
        question,
        top_k: body.top_k.map(|k| k.clamp(1, state.limits.max_top_k)),
        filter: body.filters.unwrap_or_default(),
        mode: None,
        rerank: None,
        answer_style: None,
        sampling: state.sampling(
            body.max_completion_tokens.or(body.max_tokens),
            body.temperature,
            body.top_p,
            body.seed,
        ),
    };
    let model = served.asker.model_id().to_string();
    let answer = start_answer(&state, &served, request).await?;
    let id = completion_id();
    let created = now();
    if !body.stream {
        let response = finish_answer(&state, answer).await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": response.answer },
                "finish_reason": finish_reason(response.finish_reason),
                "logprobs": null,
            }],
            "usage": {
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
                "total_tokens": response.usage.prompt_tokens + response.usage.completion_tokens,
                "prompt_tokens_details": { "cached_tokens": response.usage.cached_prompt_tokens },
            },
            "docent": {
                "citations": response.citations,
                "answerable": response.answerable,
                "timings_ms": response.timings_ms,
                "rewritten_query": response.rewritten_query,
            },
        }))
        .into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>, extra: Option<Value>| {
        let mut value = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
        });
        if let Some(extra) = extra {
            value["docent"] = extra;
        }
        Event::default().data(value.to_string())
    };
    let done = || Event::default().data("[DONE]");
    let rewritten = answer.rewritten_query().map(str::to_string);
    Ok(answer_events(state, answer, move |event| match event {
        AnswerEvent::Citations(citations) => vec![chunk(
            json!({ "role": "assistant", "content": "" }),
            None,
            Some(json!({ "citations": citations, "rewritten_query": rewritten })),
        )],
        AnswerEvent::Piece(text) => vec![chunk(json!({ "content": text }), None, None)],
        AnswerEvent::Done(response) => vec![
            chunk(
                json!({}),
                Some(finish_reason(response.finish_reason)),
                Some(json!({
                    "citations": response.citations,
                    "answerable": response.answerable,
                    "usage": response.usage,
                    "timings_ms": response.timings_ms,
                    "rewritten_query": response.rewritten_query,
                })),
            ),
            done(),
        ],
        AnswerEvent::Failed(error) => vec![
            Event::default().data(ApiError::from(error).body().to_string()),
            done(),
        ],
    }))
}

/// Body of `POST /v1/embeddings` (`model` is accepted and ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingsRequest {
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
}

/// Most inputs one embeddings request may carry.
const MAX_EMBED_INPUTS: usize = 2048;

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "An OpenAI embeddings list"),
        (status = 422, description = "Invalid input"),
    )
)]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let inputs: Vec<String> = match body.input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(
                    "input: must be a string or a list of strings (token arrays are not supported)",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                "input: must be a string or a list of strings",
            ));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::invalid(format!(
            "input: give between 1 and {MAX_EMBED_INPUTS} strings"
        )));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "encoding_format: {other:?} is not supported (float or base64)"
            )));
        }
    };
    let embedder = state.embedder.clone();
    let (vectors, tokens) = blocking("embedding task", move || -> docent_core::Result<_> {
        let tokens = inputs
            .iter()
            .map(|t| embedder.count_tokens(t))
            .sum::<docent_core::Result<usize>>()?;
        Ok((embedder.embed(&inputs)?, tokens))
    })
    .await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": state.embedder.model_id(),
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses((status = 200, description = "The answer model and the embedding model", body = ModelList))
)]
pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let card = |id: &str| ModelCard {
        id: id.to_string(),
        object: "model",
        created: 0,
        owned_by: "docent",
    };
    Json(ModelList {
        object: "list",
        data: vec![
            card(state.collections.default_served().asker.model_id()),
            card(state.embedder.model_id()),
        ],
    })
}
