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

mod access;
mod ask;
mod collections;
mod conversations;
mod documents;
mod error;
mod json;
pub mod keys;
mod metrics;
mod openai;
pub mod openapi;
mod state;
mod web;

pub use access::OpenOperations;
pub use conversations::{Conversation, ConversationLimits, ConversationStore, Turn};
pub use error::ApiError;
pub use keys::{Caller, KeyRing, Scope};
pub use metrics::Metrics;
pub use state::{AppState, Collections, Limits, SearchSlots, Served};

use access::Guard;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use openapi::{Routes, Serve};
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API and the web page. `/`, `/assets/*` and `/openapi.json`
/// stay open; `/healthz`, `/readyz` and `/metrics` stay open unless the
/// config closes them; every `/v1` route needs a key with its scope when
/// keys are configured. Every `/v1` route is also served under
/// `/v1/collections/{collection}/`.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, document) = routes(&state.limits).into_parts();
    let document = Arc::new(document);
    let inner = router
        .route("/", get(web::index))
        .route("/assets/{name}", get(web::asset))
        .route(
            "/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::identify,
        ))
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
        .with_state(state);
    // The collection prefix is taken off before routing, so one handler
    // serves both paths.
    Router::new().fallback_service(tower::ServiceExt::<Request>::map_request(
        inner,
        access::collection_from_path,
    ))
}

/// The `/v1` routes, each declared with its description and who may call it.
fn v1_routes(limits: &Limits) -> Routes<Arc<AppState>> {
    let json = || Serve::BodyLimit(DefaultBodyLimit::max(limits.max_json_bytes));
    let upload = Serve::BodyLimit(DefaultBodyLimit::max(limits.max_upload_bytes));
    let read = Guard::Needs(Scope::Read);
    let ingest = Guard::Needs(Scope::Ingest);
    Routes::new()
        .add::<ask::__path_ask, _, _>(ask::ask, json(), read)
        .add::<ask::__path_search, _, _>(ask::search, json(), read)
        .add::<documents::__path_upload, _, _>(documents::upload, upload, ingest)
        .add::<documents::__path_list, _, _>(documents::list, Serve::AsIs, read)
        .add::<documents::__path_get, _, _>(documents::get, Serve::RestOfPath, read)
        .add::<documents::__path_delete, _, _>(documents::delete, Serve::RestOfPath, ingest)
        .add::<openai::__path_chat_completions, _, _>(openai::chat_completions, json(), read)
        .add::<openai::__path_embeddings, _, _>(openai::embeddings, json(), read)
        .add::<openai::__path_models, _, _>(openai::models, Serve::AsIs, read)
        .add::<collections::__path_list, _, _>(collections::list, Serve::AsIs, read)
        .add::<conversations::__path_create, _, _>(conversations::create, Serve::AsIs, read)
        .add::<conversations::__path_get, _, _>(conversations::get, Serve::AsIs, read)
        .add::<conversations::__path_delete, _, _>(conversations::delete, Serve::AsIs, read)
}

/// The operational routes.
fn open_routes() -> Routes<Arc<AppState>> {
    Routes::new()
        .add::<__path_healthz, _, _>(healthz, Serve::AsIs, Guard::Health)
        .add::<__path_ready, _, _>(ready, Serve::AsIs, Guard::Health)
        .add::<metrics::__path_metrics, _, _>(metrics::metrics, Serve::AsIs, Guard::Metrics)
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
    let pipelines: Vec<_> = state
        .collections
        .served
        .values()
        .map(|s| s.pipeline.clone())
        .collect();
    let checked = tokio::task::spawn_blocking(move || {
        let health = pipelines[0].store_health();
        let count = pipelines
            .iter()
            .map(|p| p.chunk_count())
            .sum::<Result<usize, _>>();
        (count, health)
    })
    .await;
    let Ok((count, health)) = checked else {
        return ApiError::internal("the readiness check failed").into_response();
    };
    match count {
        Ok(chunks) => Json(serde_json::json!({
            "status": if health.problems.is_empty() { "ready" } else { "degraded" },
            "collections": state.collections.served.len(),
            "chunks": chunks,
            "embedding_model": state.embedder.model_id(),
            "generation_model": state.collections.default_served().asker.model_id(),
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
