//! The HTTP API as a library: `router(state)` and `serve`.
//!
//! It owns the protocol and nothing behind it: handlers parse a request,
//! call a service (`docent_query::Asker` for answers and search,
//! `docent_ingest::Pipeline` for documents) and render what comes back; an
//! answer's events are rendered as JSON, SSE or OpenAI chunks, never
//! produced here. Handlers never run inference or store I/O on the async
//! runtime: blocking work goes through one `spawn_blocking` helper,
//! generation through the generator's own thread and bounded queue (a full
//! queue is an immediate 429). Errors become responses in one place,
//! [`ApiError`], and every route is declared with its OpenAPI description.

mod ask;
mod collections;
mod conversations;
mod documents;
mod error;
mod json;
mod metrics;
mod openai;
pub mod openapi;
mod state;
mod web;

pub use conversations::{Conversation, ConversationLimits, ConversationStore, Turn};
pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, Collections, Limits};

use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use openapi::{Routes, Serve};
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API and the web page. `/`, `/assets/*`, `/healthz`, `/readyz`,
/// `/metrics` and `/openapi.json` stay open; `/v1` needs a key when keys are
/// configured.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = v1_routes(&state.limits).layer(|router| {
        router.layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
    });
    let (router, document) = v1.merge(open_routes()).into_parts();
    let document = Arc::new(document);
    router
        .route("/", get(web::index))
        .route("/assets/{name}", get(web::asset))
        .route(
            "/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.limits.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The `/v1` routes, each declared with its description.
fn v1_routes(limits: &Limits) -> Routes<Arc<AppState>> {
    let json = || Serve::BodyLimit(DefaultBodyLimit::max(limits.max_json_bytes));
    let upload = Serve::BodyLimit(DefaultBodyLimit::max(limits.max_upload_bytes));
    Routes::new()
        .add::<ask::__path_ask, _, _>(ask::ask, json())
        .add::<ask::__path_search, _, _>(ask::search, json())
        .add::<documents::__path_upload, _, _>(documents::upload, upload)
        .add::<documents::__path_list, _, _>(documents::list, Serve::AsIs)
        .add::<documents::__path_get, _, _>(documents::get, Serve::RestOfPath)
        .add::<documents::__path_delete, _, _>(documents::delete, Serve::RestOfPath)
        .add::<openai::__path_chat_completions, _, _>(openai::chat_completions, json())
        .add::<openai::__path_embeddings, _, _>(openai::embeddings, json())
        .add::<openai::__path_models, _, _>(openai::models, Serve::AsIs)
        .add::<collections::__path_list, _, _>(collections::list, Serve::AsIs)
        .add::<conversations::__path_create, _, _>(conversations::create, Serve::AsIs)
        .add::<conversations::__path_get, _, _>(conversations::get, Serve::AsIs)
        .add::<conversations::__path_delete, _, _>(conversations::delete, Serve::AsIs)
}

/// The operational routes that never need a key.
fn open_routes() -> Routes<Arc<AppState>> {
    Routes::new()
        .add::<__path_healthz, _, _>(healthz, Serve::AsIs)
        .add::<__path_ready, _, _>(ready, Serve::AsIs)
        .add::<metrics::__path_metrics, _, _>(metrics::metrics, Serve::AsIs)
}

/// Every documented route (for the description alone).
pub(crate) fn routes(limits: &Limits) -> Routes<Arc<AppState>> {
    v1_routes(limits).merge(open_routes())
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive (never needs a key)")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Models loaded and the store readable. `status` is `degraded` when the store answers but some node or shard replica is not healthy; `store` lists each node, the replicas by state, and the problems"),
        (status = 503, description = "Not ready: the store does not answer; the body names what failed")))]
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let pipeline = state.pipeline.clone();
    let checked =
        tokio::task::spawn_blocking(move || (pipeline.chunk_count(), pipeline.store_health()))
            .await;
    let Ok((count, health)) = checked else {
        return ApiError::internal("the readiness check failed").into_response();
    };
    match count {
        Ok(chunks) => Json(serde_json::json!({
            "status": if health.problems.is_empty() { "ready" } else { "degraded" },
            "chunks": chunks,
            "embedding_model": state.embedder.model_id(),
            "generation_model": state.asker.model_id(),
            "store": health,
        }))
        .into_response(),
        Err(e) => {
            let mut body = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the store is not readable: {e}"),
            )
            .body();
            body["store"] = serde_json::to_value(&health).unwrap_or_default();
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
    }
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key)
            if state
                .api_keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
        {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Compares keys without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
