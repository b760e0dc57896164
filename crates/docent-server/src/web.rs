//! The web page at `/`: plain HTML, CSS and JavaScript modules embedded in
//! the binary, so it works offline and needs no build step.
//!
//! The page is public (it holds no data); every call it makes goes to `/v1`
//! with the user's API key. A strict Content-Security-Policy allows only
//! these same-origin files: no inline script or style, no other origin.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// An embedded file and what it is served as.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// Hash of `body`, computed at compile time.
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type,
            body,
            hash: fnv1a(body.as_bytes()),
        }
    }
}

const INDEX: Asset = Asset::new(
    "index.html",
    "text/html; charset=utf-8",
    include_str!("../web/index.html"),
);

/// Files under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset::new(
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../web/app.css"),
    ),
    Asset::new(
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    Asset::new(
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/api.js"),
    ),
    Asset::new(
        "sse.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/sse.js"),
    ),
    Asset::new(
        "passage.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/passage.js"),
    ),
];

/// Same-origin scripts, styles and fetches only; the page cannot be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /`.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found(format!("no asset named {name:?}")).into_response(),
    }
}

/// Answers with the file, or 304 when the browser's copy is current. Browsers
/// revalidate every time (`no-cache`), so a new binary's page is never stale.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A content hash for ETags (stable across builds of the same file).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_references_only_embedded_assets() {
        for src in INDEX
            .body
            .split("/assets/")
            .skip(1)
            .map(|s| s.split(['"', '\'', '?']).next().unwrap())
        {
            assert!(
                ASSETS.iter().any(|a| a.name == src),
                "index.html loads /assets/{src}, which is not embedded"
            );
        }
    }

    #[test]
    fn modules_import_only_embedded_assets() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit("'./")
                    .next()
                    .and_then(|s| s.split('\'').next())
                    .unwrap();
                assert!(
                    ASSETS.iter().any(|a| a.name == target),
                    "{} imports {target}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn no_inline_script_or_style() {
        assert!(!INDEX.body.contains("<script>"));
        assert!(!INDEX.body.contains("style="));
        assert!(!INDEX.body.contains("<style"));
        let handler = INDEX.body.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
    }
}
