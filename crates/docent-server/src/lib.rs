//! The HTTP API as a library: `router(state)` and `serve`.
//!
//! Handlers never run inference or store I/O on the async runtime: retrieval
//! goes through `spawn_blocking`, generation through the generator's own
//! thread and bounded queue (a full queue is an immediate 429). Errors become
//! responses in one place, [`ApiError`].

mod ask;
mod collections;
mod documents;
mod error;
mod extract;
mod metrics;
mod openai;
pub mod openapi;
mod state;
mod web;

pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, Collections, Limits};

use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API and the web page. `/`, `/assets/*`, `/healthz` and `/readyz`
/// stay open; `/v1` needs a key when keys are configured.
pub fn router(state: Arc<AppState>) -> Router {
    let json_limit = DefaultBodyLimit::max(state.limits.max_json_bytes);
    let v1 = Router::new()
        .route("/v1/ask", post(ask::ask).layer(json_limit))
        .route("/v1/search", post(ask::search).layer(json_limit))
        .route(
            "/v1/documents",
            post(documents::upload)
                .layer(DefaultBodyLimit::max(state.limits.max_upload_bytes))
                .get(documents::list),
        )
        .route(
            "/v1/documents/{*id}",
            get(documents::get).delete(documents::delete),
        )
        .route(
            "/v1/chat/completions",
            post(openai::chat_completions).layer(json_limit),
        )
        .route("/v1/embeddings", post(openai::embeddings).layer(json_limit))
        .route("/v1/models", get(openai::models))
        .route("/v1/collections", get(collections::list))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/", get(web::index))
        .route("/assets/{name}", get(web::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
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

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive (never needs a key)")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Documents `/metrics` (served by `metrics::metrics`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format: docent_http_requests_total{route,method,status}, docent_http_request_duration_seconds (histogram), docent_generated_tokens_total, docent_prompt_tokens_total, docent_generation_queue_depth, docent_generation_rejections_total, docent_documents_ingested_total", content_type = "text/plain")))]
#[allow(dead_code)]
async fn metrics_doc() {}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Models loaded and the store readable"), (status = 503, description = "Not ready")))]
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.count()).await {
        Ok(Ok(chunks)) => Json(serde_json::json!({
            "status": "ready",
            "chunks": chunks,
            "embedding_model": state.embedder.model_id(),
            "generation_model": state.asker.generator().model_id(),
        }))
        .into_response(),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store is not readable",
        )
        .into_response(),
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
