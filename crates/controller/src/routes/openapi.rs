//! `GET /netwatch/v1/openapi.json`: the API's OpenAPI 3.0 document, for
//! clients and API fuzzers. Public (no token: `auth::PUBLIC_PATHS`).
//!
//! The document is written by hand (`crates/controller/openapi.json`) and
//! embedded as it is; tests/openapi.rs keeps it honest: it validates it against
//! the OpenAPI 3.0 schema, sends every documented operation to the router, and
//! checks that every served route is documented.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// Where the document is served.
const OPENAPI_PATH: &str = "/netwatch/v1/openapi.json";

/// The document, as written.
const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(OPENAPI_PATH, get(document))
}

async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI_JSON,
    )
}
