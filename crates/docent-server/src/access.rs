//! Who may call what, on which collection.
//!
//! Three steps, each in one place:
//! - [`collection_from_path`] turns `/v1/collections/{name}/rest` into
//!   `/v1/rest` before routing and remembers the name, so every `/v1` route
//!   is served at both paths by one handler;
//! - [`identify`] (around every route) finds the caller from the bearer key;
//! - each route's [`Guard`] ([`Routes::add`](crate::openapi::Routes::add))
//!   checks the caller's scope: 401 without a valid key, 403 without the
//!   scope.
//!
//! The handler then picks its collection with [`Target`]: from the path,
//! the `collection` query parameter or the body's `collection` field, else
//! the server's default. A collection outside the key's reach is 403 whether
//! or not it exists, so a key learns nothing about the others.

use crate::error::ApiError;
use crate::keys::{Caller, Scope};
use crate::state::{AppState, Served};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The collection named by a `/v1/collections/{name}/...` path.
#[derive(Clone, Debug)]
pub(crate) struct PathCollection(pub String);

/// Rewrites `/v1/collections/{name}/rest` to `/v1/rest` and records the
/// name. Runs before routing.
pub(crate) fn collection_from_path(mut request: Request) -> Request {
    let path = request.uri().path();
    let Some((name, rest)) = path
        .strip_prefix("/v1/collections/")
        .and_then(|tail| tail.split_once('/'))
        .filter(|(name, rest)| !name.is_empty() && !rest.is_empty())
    else {
        return request;
    };
    let name = percent_decode(name);
    let mut target = format!("/v1/{rest}");
    if let Some(query) = request.uri().query() {
        target.push('?');
        target.push_str(query);
    }
    let Ok(uri) = target.parse::<Uri>() else {
        return request;
    };
    *request.uri_mut() = uri;
    request.extensions_mut().insert(PathCollection(name));
    request
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What [`identify`] learnt of the caller.
#[derive(Clone, Debug)]
pub(crate) enum Identity {
    Known(Caller),
    /// No key sent to a server that needs one.
    Anonymous,
    /// A key was sent and is not one of the server's.
    Refused,
}

/// Which operational routes stay open without a key (`[server]
/// open_metrics`, `open_health`).
#[derive(Clone, Copy, Debug)]
pub struct OpenOperations {
    pub metrics: bool,
    pub health: bool,
}

impl Default for OpenOperations {
    fn default() -> Self {
        OpenOperations {
            metrics: true,
            health: true,
        }
    }
}

/// Finds the caller from `Authorization: Bearer KEY` (or `X-Api-Key`). The
/// route's guard decides what that allows.
pub(crate) async fn identify(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let identity = if !state.keys.required() {
        Identity::Known(Caller::open())
    } else {
        let headers = request.headers();
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        match presented {
            None => Identity::Anonymous,
            Some(secret) => match state.keys.authenticate(secret) {
                Some(caller) => Identity::Known(caller),
                None => Identity::Refused,
            },
        }
    };
    request.extensions_mut().insert(identity);
    request.extensions_mut().insert(state.open_operations);
    next.run(request).await
}

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Guard {
    /// A key with this scope.
    Needs(Scope),
    /// `/healthz` and `/readyz`: open unless `open_health = false`, then any key.
    Health,
    /// `/metrics`: open unless `open_metrics = false`, then an admin key.
    Metrics,
}

impl Guard {
    /// For the route's description.
    pub(crate) fn describe(self) -> String {
        match self {
            Guard::Needs(scope) => format!(
                "Needs a key with the `{}` scope (when keys are configured).",
                scope.as_str()
            ),
            Guard::Health => {
                "Open, unless `server.open_health = false`: then any valid key.".into()
            }
            Guard::Metrics => {
                "Open, unless `server.open_metrics = false`: then a key with the `admin` scope."
                    .into()
            }
        }
    }

    /// The scope this route needs now, if any.
    fn needed(self, open: OpenOperations) -> Option<Scope> {
        match self {
            Guard::Needs(scope) => Some(scope),
            Guard::Health => (!open.health).then_some(Scope::Read),
            Guard::Metrics => (!open.metrics).then_some(Scope::Admin),
        }
    }

    /// Lets the request through or answers 401/403.
    pub(crate) async fn check(self, request: Request, next: Next) -> Response {
        let open = request
            .extensions()
            .get::<OpenOperations>()
            .copied()
            .unwrap_or_default();
        let Some(scope) = self.needed(open) else {
            return next.run(request).await;
        };
        match request.extensions().get::<Identity>() {
            Some(Identity::Known(caller)) if caller.has(scope) => next.run(request).await,
            Some(Identity::Known(caller)) => forbidden(format!(
                "the key {:?} lacks the `{}` scope this route needs; ask an administrator for a key with it",
                caller.key.as_deref().unwrap_or(""),
                scope.as_str()
            ))
            .into_response(),
            _ => ApiError::unauthorized().into_response(),
        }
    }
}

pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The caller and the collection the path or query named; a handler picks
/// its collection with [`Target::served`].
pub(crate) struct Target {
    pub caller: Caller,
    named: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let caller = match parts.extensions.get::<Identity>() {
            Some(Identity::Known(caller)) => caller.clone(),
            _ => return Err(ApiError::unauthorized()),
        };
        let from_path = parts
            .extensions
            .get::<PathCollection>()
            .map(|p| p.0.clone());
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "collection")
                .map(|(_, v)| percent_decode(&v.replace('+', " ")))
        });
        let named = match (from_path, from_query) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid(format!(
                    "collection: the path names {a:?} and the query {b:?}; name one"
                )));
            }
            (a, b) => a.or(b),
        };
        Ok(Target { caller, named })
    }
}

impl Target {
    /// The collection this request is for: the one named in the path or
    /// query, else `body` (a request's `collection` field), else the
    /// default, else the only collection the key may use.
    pub(crate) fn served(
        &self,
        state: &AppState,
        body: Option<&str>,
    ) -> Result<Arc<Served>, ApiError> {
        let named = match (self.named.as_deref(), body) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid(format!(
                    "collection: the path names {a:?} and the body {b:?}; name one"
                )));
            }
            (a, b) => a.or(b),
        };
        let name = match named {
            Some(name) => name.to_string(),
            None => self.default_collection(state)?,
        };
        if !self.caller.may_use(&name) {
            return Err(forbidden(format!(
                "this key may not use collection {name:?}; GET /v1/collections lists those it may"
            )));
        }
        state.collections.served.get(&name).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no collection {name:?} is served here; GET /v1/collections lists them"
            ))
        })
    }

    fn default_collection(&self, state: &AppState) -> Result<String, ApiError> {
        let default = &state.collections.default;
        if self.caller.may_use(default) {
            return Ok(default.clone());
        }
        let mine: Vec<&String> = state
            .collections
            .served
            .keys()
            .filter(|n| self.caller.may_use(n))
            .collect();
        match mine.as_slice() {
            [only] => Ok((*only).clone()),
            _ => Err(ApiError::invalid(
                "collection: name one (in the path /v1/collections/{name}/..., the `collection` query parameter or the body); GET /v1/collections lists those this key may use",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_path_is_rewritten_with_its_query() {
        let request = Request::builder()
            .uri("/v1/collections/hr%20docs/documents/a/b.md?limit=2")
            .body(axum::body::Body::empty())
            .unwrap();
        let request = collection_from_path(request);
        assert_eq!(request.uri(), "/v1/documents/a/b.md?limit=2");
        assert_eq!(
            request.extensions().get::<PathCollection>().unwrap().0,
            "hr docs"
        );
        for untouched in [
            "/v1/collections",
            "/v1/collections/x",
            "/v1/collections//ask",
        ] {
            let request = Request::builder()
                .uri(untouched)
                .body(axum::body::Body::empty())
                .unwrap();
            let request = collection_from_path(request);
            assert_eq!(request.uri(), untouched);
            assert!(request.extensions().get::<PathCollection>().is_none());
        }
    }
}
