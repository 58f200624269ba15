//! `GET /console/…`: the web console (issue 17), a static page and plain
//! JavaScript modules embedded in the binary (`crates/controller/console/`),
//! served by every replica over its own HTTPS. No CDN, no fonts, nothing
//! fetched from elsewhere: it works air-gapped.
//!
//! The files are public (they hold no data; auth.rs's `is_console_path`): the
//! page asks for a token and calls the same API as every other client with
//! it in the `Authorization` header, which a browser never sends by itself,
//! so no request can be forged from another site. Every answer here carries a
//! strict Content-Security-Policy (scripts and styles from this origin only,
//! nothing inline, no frames: `frame-ancestors 'none'`), `nosniff` and no
//! referrer.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use netwatch_api::error::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

use super::{AppState, HttpError};

/// Where the console lives.
pub const CONSOLE_PATH: &str = "/console";

/// The console's policy: this origin's scripts, styles, images and API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Each file of the console: its path under [`CONSOLE_PATH`], its type and
/// its bytes. `index.html` is also `/console/`. The test below fails when a
/// file in `console/` is missing here.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../console/favicon.svg"),
    ),
    ("js/app.js", JS, include_bytes!("../../console/js/app.js")),
    ("js/api.js", JS, include_bytes!("../../console/js/api.js")),
    ("js/dom.js", JS, include_bytes!("../../console/js/dom.js")),
    ("js/live.js", JS, include_bytes!("../../console/js/live.js")),
    ("js/hosts.js", JS, include_bytes!("../../console/js/hosts.js")),
    ("js/captures.js", JS, include_bytes!("../../console/js/captures.js")),
    ("js/capture.js", JS, include_bytes!("../../console/js/capture.js")),
    ("js/create.js", JS, include_bytes!("../../console/js/create.js")),
    ("js/filters.js", JS, include_bytes!("../../console/js/filters.js")),
    ("js/alerting.js", JS, include_bytes!("../../console/js/alerting.js")),
    ("js/tokens.js", JS, include_bytes!("../../console/js/tokens.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(CONSOLE_PATH, get(|| async { Redirect::permanent("/console/") }))
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { asset("index.html", &headers) }),
        )
        .route("/console/{*file}", get(file))
}

async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    asset(&file, &headers)
}

/// The console's files change only with the binary: one tag for them all,
/// the digest of their bytes, so a browser revalidates cheaply (304).
fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        let mut digest = Sha256::new();
        for (name, _, bytes) in ASSETS {
            digest.update(name.as_bytes());
            digest.update(bytes);
        }
        let hex: String = digest.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    })
}

/// One file with the console's headers (304 when the browser has it), or a
/// 404 that says where the console is.
fn asset(file: &str, request: &HeaderMap) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, ..)| *name == file) else {
        let message = format!("the console has no file {file:?}: open {CONSOLE_PATH}/");
        return HttpError::from(ApiError::new(ErrorCode::NotFound, message)).into_response();
    };
    let etag = etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // A new build's files are fetched again; the same build's revalidate cheaply.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, *bytes).into_response()
}

/// Whether `path` is the console's (public: auth.rs).
pub fn is_console_path(path: &str) -> bool {
    path == CONSOLE_PATH || path.starts_with("/console/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `console/` is served, and nothing else is listed.
    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                    found.push(relative);
                }
            }
        }
        found.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|(name, ..)| (*name).to_owned()).collect();
        listed.sort();
        assert_eq!(found, listed, "console/ and ASSETS differ");
    }

    /// No inline script or style can run under the policy, so none may be written.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!page.contains("<script>"), "inline script in index.html");
        assert!(!page.contains(" style="), "inline style in index.html");
        assert!(!page.contains("<style"), "inline style sheet in index.html");
        for (name, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains("innerHTML"),
                "{name} writes innerHTML: build nodes with dom.js"
            );
            assert!(!text.contains("eval("), "{name} calls eval");
        }
    }
}
