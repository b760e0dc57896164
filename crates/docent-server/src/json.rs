//! A JSON extractor whose rejections are `ApiError`s that name the problem.

use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// Like `axum::Json`, but malformed bodies get the service's JSON error format:
/// 400 for unparsable JSON or a wrong content type, 422 for a wrong field
/// (the message names it), 413 for a body over the limit.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text().to_string()),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request(format!("malformed JSON: {}", e.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                JsonRejection::BytesRejection(e) => {
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::new(
                            e.status(),
                            "payload_too_large",
                            "the request body is over the size limit",
                        )
                    } else {
                        ApiError::bad_request(e.body_text())
                    }
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}
