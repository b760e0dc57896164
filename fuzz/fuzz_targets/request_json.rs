//! Request bodies of every JSON route, through the real router
//! (`docent_server::router`) over the real embedded store, catalogue and
//! conversation store, with fake models. The first byte picks the route
//! (its high bit: under `/v1/collections/default/` or not); the rest is the
//! body (or, for the routes with a path parameter, the parameter). No body may get a 5xx: a malformed request is the client's
//! error, and the fakes never fail.
#![no_main]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use docent_server::{AppState, router};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use tower::ServiceExt;

static STATE: LazyLock<Arc<AppState>> = LazyLock::new(docent_fuzz::fuzz_state);
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
});

/// JSON routes: method, path, and whether to ask for Server-Sent Events.
const JSON_ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/v1/ask", false),
    ("POST", "/v1/ask", true),
    ("POST", "/v1/search", false),
    ("POST", "/v1/chat/completions", false),
    ("POST", "/v1/embeddings", false),
];

/// Routes with a path parameter (the body bytes, percent-encoded, follow).
const PATH_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/documents/"),
    ("GET", "/v1/conversations/"),
    ("GET", "/v1/documents?"),
];

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~/=&".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let scoped = pick & 0x80 != 0;
    let pick = (pick & 0x7f) as usize % (JSON_ROUTES.len() + PATH_ROUTES.len());
    let under = |path: &str| {
        if scoped {
            path.replacen("/v1/", "/v1/collections/default/", 1)
        } else {
            path.to_string()
        }
    };
    let request = if let Some(&(method, path, sse)) = JSON_ROUTES.get(pick) {
        let mut request = Request::builder()
            .method(method)
            .uri(under(path))
            .header(header::CONTENT_TYPE, "application/json");
        if sse {
            request = request.header(header::ACCEPT, "text/event-stream");
        }
        request.body(Body::from(body.to_vec())).expect("a request")
    } else {
        let (method, prefix) = PATH_ROUTES[pick - JSON_ROUTES.len()];
        let uri = format!("{}{}", under(prefix), percent_encode(body));
        let Ok(request) = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
        else {
            return;
        };
        request
    };
    let what = format!("{} {}", request.method(), request.uri());
    let (status, text) = RUNTIME.block_on(async {
        let response = router(STATE.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a readable body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    });
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{what} with body {:?} got {status}: {text}",
        String::from_utf8_lossy(body)
    );
});
