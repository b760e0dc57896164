//! `GET /v1/collections`: the collections this key may use. A server
//! serves the collections it opened at start (`[server] collections`, plus
//! the one named by `--collection`, the default for requests that name
//! none). A key that reaches every collection also sees the folders under
//! the data directory that are not served: opening one would take its lock
//! from whichever process uses it.

use crate::access::Target;
use crate::error::{ApiError, blocking};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Where `EdgeStore` records what a collection was built with, relative to
/// the collection's folder.
const SPEC_FILE: &str = "vectors/docent_collection.json";

/// One collection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionView {
    pub name: String,
    /// Whether this server answers from it.
    pub served: bool,
    /// Chunks stored; known only for served collections.
    pub chunks: Option<u64>,
    /// Documents in its catalogue; known only for served collections.
    pub documents: Option<u64>,
    /// The embedding model the collection was built with, when recorded.
    pub embedding_model: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionList {
    /// Sorted by name: the served collections this key may use (and, for a
    /// key that reaches all, the unserved folders).
    pub collections: Vec<CollectionView>,
    /// The collection of requests that name none, when this key may use it.
    pub current: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/collections",
    tag = "documents",
    responses((status = 200, description = "The collections this key may use, and the default one. Name one in a path (`/v1/collections/{name}/ask`), the `collection` query parameter or a body's `collection` field.", body = CollectionList))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<Json<CollectionList>, ApiError> {
    let caller = target.caller;
    let served: Vec<_> = state
        .collections
        .served
        .values()
        .filter(|s| caller.may_use(&s.name))
        .cloned()
        .collect();
    let every = matches!(caller.reach, crate::keys::Reach::All);
    let dir = state.collections.dir.clone();
    let served_model = state.embedder.model_id().to_string();
    let collections = blocking("collection listing", move || -> Result<_, ApiError> {
        let mut views = Vec::new();
        for s in &served {
            let (_, documents) = s.pipeline.catalogue().page(None, 1)?;
            views.push(CollectionView {
                name: s.name.clone(),
                served: true,
                chunks: Some(s.pipeline.chunk_count()? as u64),
                documents: Some(documents),
                embedding_model: Some(served_model.clone()),
            });
        }
        if every {
            for name in folder_names(&dir) {
                if views.iter().any(|v| v.name == name) {
                    continue;
                }
                views.push(CollectionView {
                    embedding_model: recorded_model(&dir.join(&name)),
                    name,
                    served: false,
                    chunks: None,
                    documents: None,
                });
            }
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    })
    .await?;
    let default = &state.collections.default;
    Ok(Json(CollectionList {
        collections,
        current: caller.may_use(default).then(|| default.clone()),
    }))
}

/// The sub-folders of `dir`, sorted (none when it cannot be read).
fn folder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn recorded_model(collection: &Path) -> Option<String> {
    let text = std::fs::read_to_string(collection.join(SPEC_FILE)).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec["embedding_model"].as_str().map(str::to_string)
}
