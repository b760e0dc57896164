//! `GET /v1/collections`: the collections in the data directory and which
//! one this server serves. A server serves exactly one collection (the one
//! `docent serve --collection NAME` opened); the others are listed so a user
//! can see what exists, not opened: opening one would take its lock from
//! whichever process uses it.

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

/// One collection folder.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionView {
    pub name: String,
    /// Chunks stored; known only for the served collection (others are not opened).
    pub chunks: Option<u64>,
    /// The embedding model the collection was built with, when recorded.
    pub embedding_model: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollectionList {
    /// Sorted by name; always includes the served collection.
    pub collections: Vec<CollectionView>,
    /// The collection this server serves.
    pub current: String,
}

#[utoipa::path(
    get,
    path = "/v1/collections",
    tag = "documents",
    responses((status = 200, description = "The collections under the data directory and the one served (to serve another, restart with `--collection NAME`)", body = CollectionList))
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<CollectionList>, ApiError> {
    let pipeline = state.pipeline.clone();
    let dir = state.collections.dir.clone();
    let current = state.collections.current.clone();
    let served_model = state.embedder.model_id().to_string();
    let collections = blocking("collection listing", move || -> Result<_, ApiError> {
        let chunks = pipeline.chunk_count()? as u64;
        let mut names = folder_names(&dir);
        if !names.contains(&current) {
            names.push(current.clone());
            names.sort();
        }
        Ok(names
            .into_iter()
            .map(|name| {
                if name == current {
                    CollectionView {
                        name,
                        chunks: Some(chunks),
                        embedding_model: Some(served_model.clone()),
                    }
                } else {
                    CollectionView {
                        embedding_model: recorded_model(&dir.join(&name)),
                        name,
                        chunks: None,
                    }
                }
            })
            .collect())
    })
    .await?;
    Ok(Json(CollectionList {
        collections,
        current: state.collections.current.clone(),
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
