//! The controller's ARM-compatible HTTP API (DESIGN §4, api-contract.md §1,
//! clients.md §5): [`router`] builds it over an [`AppState`], so `main` serves
//! it on a listener and tests drive it with `oneshot`.
//!
//! What every request goes through, in order:
//! - [`normalize_path`]: `//` collapsed, a trailing `/` dropped, and ARM's fixed
//!   segments (`subscriptions`, `resourceGroups`, `providers`, the namespace,
//!   resource types, actions) lower-cased before routing, since az sends both
//!   `resourceGroups` and `resourcegroups`; names keep the caller's spelling.
//!   `/netwatch/…` paths (files, agents) are routed exactly as sent.
//! - [`ArmVersion`]: `api-version` is required on every ARM route (not on
//!   `/metadata/endpoints`, which az fetches before it knows one) and any date
//!   form is accepted (clients.md §5.2).
//! - [`ArmBody`]: at most [`MAX_BODY_BYTES`], JSON.
//! - [`crate::auth::authenticate`]: a bearer token whose role may use the path
//!   (the metadata, the OpenAPI document and the login routes are public).
//! - Every failure is an [`HttpError`], the one type rendering ARM's error body;
//!   unknown routes and methods answer 404/405 with that body too.
//! - An answer given before the body was read (any of the above failing)
//!   goes once the rest of the body has come and been thrown away, within
//!   the route's limit (`drain.rs`, around everything): a client still
//!   sending gets it whole, over HTTP/1.1 and HTTP/2.
//!
//! TLS is the server's ([`crate::server::run`]).

mod agent_install;
mod agents;
mod alerting;
mod bootstrap;
mod compute;
pub mod console;
mod drain;
mod events;
pub(crate) mod files;
mod health;
mod identity;
mod live;
mod merged;
mod metrics;
mod network_watchers;
mod openapi;
mod packet_captures;
mod scale_sets;
mod storage_accounts;
mod tokens;
mod uploads;
mod whoami;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::routing::get;
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_api::resource::SubscriptionId;
use tower::Layer;

use crate::app::{ApiConfig, AppState};
use crate::auth;
// What the handlers in `routes/` reach as `super::…`.
use crate::clock::{now_ms, rfc3339};
use crate::errors::HttpError;
pub use crate::extract::MAX_BODY_BYTES;
use crate::extract::{ArmBody, ArmVersion};

/// Seconds a client waits between polls; 1 as clients.md §5.6 recommends
/// (without it azure-core waits 30 s).
const RETRY_AFTER_SECONDS: &str = "1";

/// `Azure-AsyncOperation`, the create's status monitor header.
const AZURE_ASYNC_OPERATION: &str = "azure-asyncoperation";

/// The whole API. Paths are normalised before routing (module doc), so the
/// route table spells fixed segments in lower case.
pub fn router(state: AppState) -> Router {
    let arm = Router::new()
        .route("/metadata/endpoints", get(bootstrap::metadata_endpoints))
        .route("/subscriptions", get(bootstrap::list_subscriptions))
        .route(
            "/subscriptions/{subscription}/locations",
            get(bootstrap::list_locations),
        )
        .route(
            "/subscriptions/{subscription}/providers/{namespace}",
            get(bootstrap::get_provider),
        )
        .merge(agents::routes())
        .merge(agent_install::routes())
        .merge(network_watchers::routes())
        .merge(packet_captures::routes())
        .merge(alerting::routes())
        .merge(merged::routes())
        .merge(live::routes())
        .merge(compute::routes())
        .merge(scale_sets::routes())
        .merge(storage_accounts::routes())
        .merge(tokens::routes())
        .merge(files::routes())
        .merge(uploads::routes())
        .merge(openapi::routes())
        .merge(identity::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(console::routes())
        .merge(events::routes())
        .merge(whoami::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), store_gate))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            close_while_draining,
        ))
        .with_state(state);
    // Routing happens inside `arm`, so the rewrite must wrap it from outside.
    let normalized = axum::middleware::map_request(normalize_request).layer(arm);
    // Outermost: whatever answers early, its answer waits for the body (drain.rs).
    Router::new()
        .fallback_service(normalized)
        .layer(axum::middleware::from_fn(drain::discard_unread_body))
}

/// While this replica knows its database is out of reach (its heartbeat
/// failed, [`crate::hub::Hub::store_down`]), requests are answered 503 with
/// `Retry-After` at once instead of after the pool's wait for a connection;
/// the health route still looks for itself.
async fn store_gate(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.hub.store_down() && request.uri().path() != "/netwatch/v1/health" {
        return axum::response::IntoResponse::into_response(HttpError::store_unavailable());
    }
    next.run(request).await
}

/// While this replica drains, every HTTP/1.1 answer carries `Connection:
/// close`, so a client stops reusing its connection here (and opens its next
/// one to a replica that stays) instead of sending a request on a kept-alive
/// connection just as the drained replica closes it: a race that fails a
/// POST no client retries. HTTP/2 clients get GOAWAY from the shutdown.
async fn close_while_draining(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && state.hub.draining_since().is_some() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The path as the client sent it, for messages (the router sees [`normalize_path`]'s).
#[derive(Debug, Clone)]
struct OriginalPath(String);

async fn normalize_request(mut request: Request) -> Request {
    let uri = request.uri();
    let original = uri.path().to_owned();
    let path = normalize_path(&original);
    if path != original {
        let rebuilt = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        // Scheme and authority (HTTP/2, absolute-form requests) are kept. The
        // rebuilt path is made of the original's segments, so it parses;
        // should it not, routing on the original is the safe fallback.
        let mut parts = uri.clone().into_parts();
        if let Ok(path_and_query) = rebuilt.parse() {
            parts.path_and_query = Some(path_and_query);
            if let Ok(new_uri) = Uri::from_parts(parts) {
                *request.uri_mut() = new_uri;
            }
        }
    }
    request.extensions_mut().insert(OriginalPath(original));
    request
}

/// `//` collapsed, a trailing `/` dropped, fixed segments in lower case: every
/// even segment of an ARM path (`subscriptions`, `resourceGroups`,
/// `providers`, types, actions), the segment after `providers` (the
/// namespace), and all of `/metadata/…`. Names (odd segments) keep their case.
/// `/netwatch/…` and `/console/…` are returned as they are.
pub fn normalize_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    // netwatch's own paths carry blob paths: case-sensitive, and an empty
    // segment there is the client's error to hear about, not noise to drop.
    // The console's files (and its `/console/`) are served as named.
    if segments
        .first()
        .is_some_and(|first| first.eq_ignore_ascii_case("netwatch") || *first == "console")
    {
        return path.to_owned();
    }
    let metadata = segments
        .first()
        .is_some_and(|first| first.eq_ignore_ascii_case("metadata"));
    let mut out = String::with_capacity(path.len());
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        let after_providers = i > 0 && segments[i - 1].eq_ignore_ascii_case("providers");
        if metadata || i % 2 == 0 || after_providers {
            out.push_str(&segment.to_ascii_lowercase());
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

async fn route_not_found(method: Method, original: Option<axum::Extension<OriginalPath>>, uri: Uri) -> HttpError {
    let path = original.map_or_else(|| uri.path().to_owned(), |path| path.0.0);
    ApiError::route_not_found(method.as_str(), &path).into()
}

async fn method_not_allowed(method: Method, original: Option<axum::Extension<OriginalPath>>, uri: Uri) -> HttpError {
    let path = original.map_or_else(|| uri.path().to_owned(), |path| path.0.0);
    HttpError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        ApiError::new(
            ErrorCode::InvalidRequestFormat,
            format!("{method} is not allowed on {path}"),
        ),
    )
}

// ---------------------------------------------------------------------------
// Helpers for handlers

/// The request's subscription, which must be the one served.
fn subscription(config: &ApiConfig, text: &str) -> Result<SubscriptionId, HttpError> {
    let subscription = SubscriptionId::parse("subscriptionId", text)?;
    if subscription != config.subscription {
        let message = format!(
            "subscription {text:?} was not found: this deployment serves {}",
            config.subscription
        );
        return Err(ApiError::new(ErrorCode::NotFound, message)
            .with_target("subscriptionId")
            .into());
    }
    Ok(subscription)
}

/// `scheme://host` of this server as the client reached it, for absolute links
/// (clients.md §5.5).
fn base_url(config: &ApiConfig, headers: &HeaderMap, uri: &Uri) -> Result<String, HttpError> {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(ToString::to_string))
        .filter(|host| !host.is_empty() && host.parse::<axum::http::uri::Authority>().is_ok())
        .ok_or_else(|| ApiError::bad_request("Host", "the Host header is missing or not a host[:port]"))?;
    Ok(format!("{}://{host}", config.scheme))
}

/// A header value from text the server built (a URL from a validated host).
fn header_value(text: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(text).map_err(|err| ApiError::internal("build a response header", err).into())
}

fn retry_after() -> (header::HeaderName, HeaderValue) {
    (header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        let rows = [
            ("//metadata/endpoints", "/metadata/endpoints"),
            ("/Metadata/Endpoints/", "/metadata/endpoints"),
            ("/", "/"),
            ("//", "/"),
            (
                "/SUBSCRIPTIONS/Sub//resourcegroups/RG/Providers/Microsoft.Network/NetworkWatchers/NW_westus/PacketCaptures/PC1/queryStatus",
                "/subscriptions/Sub/resourcegroups/RG/providers/microsoft.network/networkwatchers/NW_westus/packetcaptures/PC1/querystatus",
            ),
            (
                "/subscriptions/S/providers/Microsoft.Network/locations/westus/operations/AbC",
                "/subscriptions/S/providers/microsoft.network/locations/westus/operations/AbC",
            ),
            (
                "/netwatch/v1/storage/acct//Network-Watcher-Logs/A.cap/",
                "/netwatch/v1/storage/acct//Network-Watcher-Logs/A.cap/",
            ),
            ("/NetWatch/V1", "/NetWatch/V1"),
            ("//netwatch/v1/agent/files/", "//netwatch/v1/agent/files/"),
        ];
        for (path, normalized) in rows {
            assert_eq!(normalize_path(path), normalized, "{path}");
        }
    }
}
