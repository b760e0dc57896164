//! The one place errors become HTTP responses: `{"error": {"type", "message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (429 and 503).
    pub retry_after: Option<u64>,
}

/// Every error response: `{"error": {"type", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind: invalid_request, unauthorized, not_found,
    /// payload_too_large, overloaded, unavailable, internal...
    #[serde(rename = "type")]
    kind: String,
    /// What went wrong and what to do next.
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body, for SSE `error` events.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "type": self.kind, "message": self.message } })
    }
}

impl From<docent_core::Error> for ApiError {
    fn from(e: docent_core::Error) -> Self {
        use docent_core::Error as E;
        let message = format!("{}", ErrorChain(&e));
        match e {
            E::InvalidInput(_) => Self::invalid(message),
            E::NotFound(_) => Self::not_found(message),
            E::Overloaded(_) => Self::overloaded(message),
            E::Unavailable { .. } => ApiError {
                retry_after: Some(5),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            },
            E::Incompatible(_) => Self::new(StatusCode::CONFLICT, "incompatible", message),
            E::Upstream { timed_out, .. } => {
                tracing::warn!(error = %message, "generation server failed");
                if timed_out {
                    Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
                } else {
                    Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
                }
            }
            E::Cancelled => Self::new(
                StatusCode::from_u16(499).expect("valid"),
                "cancelled",
                message,
            ),
            E::Internal { .. } => {
                tracing::error!(error = %message, "internal error");
                Self::internal(message)
            }
        }
    }
}

impl From<docent_ingest::CatalogueError> for ApiError {
    fn from(e: docent_ingest::CatalogueError) -> Self {
        tracing::error!(error = %e, "catalogue error");
        Self::internal(e.to_string())
    }
}

/// Runs blocking work (store I/O, model calls, parsing) off the async
/// runtime. Its error, or a panic in it, becomes the response.
pub(crate) async fn blocking<T, E>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("{what} failed: {e}"))),
    }
}

/// Formats an error with its whole `source` chain.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
