//! `/v1/documents`: upload (multipart or JSON), list, get and delete, through
//! the same ingestion pipeline as `docent ingest`.

use crate::access::Target;
use crate::error::{ApiError, blocking};
use crate::json::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use docent_core::DocumentId;
use docent_ingest::{DocumentRecord, DocumentStatus, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// JSON body of `POST /v1/documents`: one document given as text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextDocument {
    /// The document's identity and the name shown in citations (`faq/billing.md`).
    /// Its extension picks the format (`.md` is Markdown, anything else text).
    pub source: String,
    pub text: String,
    /// Metadata for filters: `tags` (comma-separated), `date` (YYYY-MM-DD), any other key.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What happened to one uploaded document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResult {
    pub source: String,
    pub document_id: String,
    /// `added`, `updated`, `unchanged` or `failed`.
    pub status: &'static str,
    /// Chunks embedded for this document (0 when unchanged or failed).
    pub chunks: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    pub results: Vec<IngestResult>,
}

/// One document of the catalogue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: String,
    pub source: String,
    pub title: Option<String>,
    /// `ready`, `pending` or `failed`.
    pub status: String,
    pub chunk_count: usize,
    pub size: u64,
    pub content_hash: String,
    /// Seconds since the Unix epoch.
    pub modified: Option<u64>,
    /// Seconds since the Unix epoch of the last change to the record.
    pub updated_at: u64,
    pub last_error: Option<String>,
}

impl From<DocumentRecord> for DocumentView {
    fn from(r: DocumentRecord) -> Self {
        DocumentView {
            status: match r.status {
                DocumentStatus::Ready => "ready",
                DocumentStatus::Pending => "pending",
                DocumentStatus::Failed => "failed",
            }
            .to_string(),
            chunk_count: if r.status == DocumentStatus::Failed && r.content_hash.is_empty() {
                0
            } else {
                r.chunk_ids.len()
            },
            id: r.id.0,
            source: r.source,
            title: r.title,
            size: r.size,
            content_hash: r.content_hash,
            modified: r.modified,
            updated_at: r.updated_at,
            last_error: r.last_error,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// The collection (else the path's, else the server's default).
    pub collection: Option<String>,
    /// Documents per page (1–1000, default 100).
    pub limit: Option<usize>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Documents in the catalogue.
    pub total: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
    pub chunks_removed: usize,
}

/// A file received for ingestion.
struct Upload {
    source: String,
    bytes: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

/// Longest document name or id accepted, in bytes.
const MAX_SOURCE_BYTES: usize = 1024;

/// A source name from a client: relative, `/`-separated, with no `..`.
/// Uploads are never written under their names (the bytes go straight to
/// the pipeline), and the name is only the document's identity; still, no
/// name could climb out of a folder.
fn clean_source(raw: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = raw
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty()
        || parts.contains(&"..")
        || raw.len() > MAX_SOURCE_BYTES
        || raw.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "source: {:?} is not a usable document name (give a relative name such as `faq/billing.md`, at most {MAX_SOURCE_BYTES} bytes)",
            raw.chars().take(80).collect::<String>()
        )));
    }
    Ok(parts.join("/"))
}

#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    request_body(
        description = "Either `multipart/form-data` with one or more `file` parts (optional `tags` and `date` text parts apply to every file), or a JSON text document.",
        content(
            (TextDocument = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Per-file results (a failed file does not fail the others)", body = IngestResponse),
        (status = 413, description = "Upload over `server.max_upload_bytes`"),
        (status = 422, description = "Invalid request"),
    )
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    target: Target,
    request: Request,
) -> Result<Response, ApiError> {
    let served = target.served(&state, None)?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let uploads = if is_multipart {
        read_multipart(
            Multipart::from_request(request, &state)
                .await
                .map_err(|e| ApiError::bad_request(e.body_text()))?,
        )
        .await?
    } else {
        let ApiJson(doc) = ApiJson::<TextDocument>::from_request(request, &state).await?;
        if doc.text.trim().is_empty() {
            return Err(ApiError::invalid("text: must not be empty"));
        }
        vec![Upload {
            source: clean_source(&doc.source)?,
            bytes: doc.text.into_bytes(),
            metadata: doc.metadata,
        }]
    };
    if uploads.is_empty() {
        return Err(ApiError::invalid(
            "no files: send multipart parts named `file`, or JSON {source, text}",
        ));
    }
    let documents = uploads
        .into_iter()
        .map(|upload| docent_ingest::DocumentInput {
            id: DocumentId::new(upload.source.clone()),
            path_hint: upload.source.clone().into(),
            source: upload.source,
            bytes: upload.bytes,
            meta: docent_ingest::DocumentMeta {
                modified: Some(docent_ingest::catalogue::now_secs()),
                tags: Vec::new(),
                metadata: upload.metadata,
            },
        })
        .collect();
    let pipeline = served.pipeline.clone();
    let reports = blocking("ingestion task", move || {
        pipeline.ingest_documents(documents, &|_| {})
    })
    .await?;
    let results: Vec<IngestResult> = reports
        .into_iter()
        .map(|report| {
            let (status, chunks, error) = match report.result {
                Ok((Outcome::Added, n)) => ("added", n, None),
                Ok((Outcome::Updated, n)) => ("updated", n, None),
                Ok((Outcome::Unchanged, _)) => ("unchanged", 0, None),
                Err(reason) => ("failed", 0, Some(reason)),
            };
            IngestResult {
                document_id: report.id.0,
                source: report.source,
                status,
                chunks,
                error,
            }
        })
        .collect();
    let changed = results
        .iter()
        .filter(|r| matches!(r.status, "added" | "updated"))
        .count();
    state.metrics.add_documents(changed);
    Ok(Json(IngestResponse { results }).into_response())
}

async fn read_multipart(mut multipart: Multipart) -> Result<Vec<Upload>, ApiError> {
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the upload is over the size limit (server.max_upload_bytes)",
            )
        } else {
            ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    let mut files = Vec::new();
    let mut shared = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" | "files" | "file[]" => {
                let file_name = field
                    .file_name()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("file: each file part needs a filename"))?;
                let bytes = field.bytes().await.map_err(too_large)?;
                files.push(Upload {
                    source: clean_source(&file_name)?,
                    bytes: bytes.to_vec(),
                    metadata: BTreeMap::new(),
                });
            }
            "tags" | "date" => {
                let value = field.text().await.map_err(too_large)?;
                if !value.trim().is_empty() {
                    shared.insert(name, value.trim().to_string());
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown multipart field `{other}` (expected `file`, `tags` or `date`)"
                )));
            }
        }
    }
    for f in &mut files {
        f.metadata = shared.clone();
    }
    Ok(files)
}

#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    params(ListParams),
    responses((status = 200, body = DocumentList))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    target: Target,
    Query(params): Query<ListParams>,
) -> Result<Json<DocumentList>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let pipeline = target
        .served(&state, params.collection.as_deref())?
        .pipeline
        .clone();
    let (records, total) = blocking("listing task", move || {
        pipeline
            .catalogue()
            .page(params.after.as_deref(), limit + 1)
    })
    .await?;
    let more = records.len() > limit;
    let documents: Vec<DocumentView> = records.into_iter().take(limit).map(Into::into).collect();
    let next = more
        .then(|| documents.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DocumentList {
        documents,
        next,
        total,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "Document id (its source, e.g. `faq/billing.md`)")),
    responses((status = 200, body = DocumentView), (status = 404, description = "No such document"))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    target: Target,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    let pipeline = target.served(&state, None)?.pipeline.clone();
    let id = document_id(&id)?;
    let lookup = id.clone();
    let record = blocking("lookup task", move || {
        pipeline.catalogue().get(&DocumentId::new(lookup))
    })
    .await?;
    record
        .map(|r| Json(r.into()))
        .ok_or_else(|| no_document(&id))
}

#[utoipa::path(
    delete,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "Document id (its source)")),
    responses((status = 200, body = Deleted), (status = 404, description = "No such document"))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    target: Target,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let pipeline = target.served(&state, None)?.pipeline.clone();
    let id = document_id(&id)?;
    let document = DocumentId::new(id.clone());
    let removed = blocking(
        "delete task",
        move || -> docent_core::Result<Option<usize>> {
            let Some(record) = pipeline
                .catalogue()
                .get(&document)
                .map_err(|e| docent_core::Error::internal("catalogue", e))?
            else {
                return Ok(None);
            };
            pipeline.remove_document(&document)?;
            Ok(Some(record.chunk_ids.len()))
        },
    )
    .await?;
    match removed {
        Some(chunks_removed) => Ok(Json(Deleted {
            id,
            deleted: true,
            chunks_removed,
        })),
        None => Err(no_document(&id)),
    }
}

/// A document id from a path: what [`clean_source`] would have stored.
fn document_id(raw: &str) -> Result<String, ApiError> {
    match clean_source(raw) {
        Ok(id) if id == raw => Ok(id),
        _ => Err(ApiError::invalid(format!(
            "id: {:?} is not a document id (ids are relative names such as `faq/billing.md`, at most {MAX_SOURCE_BYTES} bytes, without `..` or control characters)",
            raw.chars().take(80).collect::<String>()
        ))),
    }
}

fn no_document(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no document {id:?}; list them at GET /v1/documents"
    ))
}
