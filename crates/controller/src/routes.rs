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

mod agents;
mod bootstrap;
mod compute;
mod drain;
mod files;
mod health;
mod identity;
mod network_watchers;
mod openapi;
mod packet_captures;
mod storage_accounts;
mod tokens;
mod uploads;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use netwatch_api::api_version::{API_VERSION, ApiVersion};
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_api::resource::{DEFAULT_SUBSCRIPTION_ID, Location, SubscriptionId};
use netwatch_storage::Accounts;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tower::Layer;

use crate::accounts::{LookupError, StorageAccounts};
use crate::auth::{self, Tokens};
use crate::hub::Hub;
use crate::identity::Signer;
use crate::store::{Store, StoreError};

/// Largest request body accepted: 1 MiB, far above any capture definition
/// (a PUT body with 1000 filters is ~150 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Seconds a client waits between polls; 1 as clients.md §5.6 recommends
/// (without it azure-core waits 30 s).
const RETRY_AFTER_SECONDS: &str = "1";

/// `Azure-AsyncOperation`, the create's status monitor header.
const AZURE_ASYNC_OPERATION: &str = "azure-asyncoperation";

/// A location the deployment serves: its canonical name and display name.
#[derive(Debug, Clone)]
pub struct KnownLocation {
    pub name: Location,
    /// As `GET /subscriptions/{s}/locations` shows it (`West US`).
    pub display_name: String,
}

/// The API's part of the deployment's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The one subscription served (DESIGN §2); default [`DEFAULT_SUBSCRIPTION_ID`].
    pub subscription: SubscriptionId,
    /// The tenant `GET /subscriptions` reports (az needs one); default the zero GUID.
    pub tenant_id: String,
    /// Locations hosts may be in and watchers exist for.
    pub locations: Vec<KnownLocation>,
    /// Who may call; `None` lets everyone in (in-process tests only: `netwatch
    /// server` always has tokens).
    pub auth: Option<Tokens>,
    /// Signs the access tokens the login routes hand out (az, the SDKs);
    /// `None` serves no login.
    pub signer: Option<Signer>,
    /// Scheme of the URLs the API hands out (monitor links, metadata):
    /// `http` until the controller terminates TLS itself or sits behind a proxy.
    pub scheme: String,
    /// Signs the upload grants for parts sent through the controller (replicas
    /// must share it: the token signing key when one is configured).
    pub grant_signer: Signer,
    /// How long an upload grant works.
    pub grant_ttl: std::time::Duration,
    /// Where accounts made through the API without a directory keep their
    /// files (`{accounts_dir}/{name}`); `None`: such requests must give one.
    pub accounts_dir: Option<std::path::PathBuf>,
    /// How long a host's agent may go unheard before its captures are given
    /// up (`Error`, `AgentStopped`; [`crate::hub::sweep_lost_agents`]).
    pub agent_lost_after: std::time::Duration,
}

/// Default [`ApiConfig::grant_ttl`]: long enough for a part on a slow link,
/// short enough that a leaked grant is soon worthless.
pub const DEFAULT_GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Default for ApiConfig {
    fn default() -> Self {
        let locations = [
            ("westus", "West US"),
            ("eastus", "East US"),
            ("westeurope", "West Europe"),
        ]
        .into_iter()
        .map(|(name, display_name)| KnownLocation {
            name: Location::parse("locations", name).expect("a canonical location name"),
            display_name: display_name.to_owned(),
        })
        .collect();
        Self {
            subscription: SubscriptionId::default_subscription(),
            tenant_id: DEFAULT_SUBSCRIPTION_ID.to_owned(),
            locations,
            auth: None,
            signer: None,
            scheme: "http".to_owned(),
            grant_signer: Signer::random().expect("the system's random source works"),
            grant_ttl: DEFAULT_GRANT_TTL,
            accounts_dir: None,
            agent_lost_after: crate::hub::DEFAULT_AGENT_LOST_AFTER,
        }
    }
}

impl ApiConfig {
    /// The known location `location` is, in any spelling az accepts.
    fn location(&self, location: &Location) -> Option<&KnownLocation> {
        self.locations.iter().find(|known| known.name == *location)
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: ApiConfig,
    /// The storage accounts: configured and made through the API.
    pub storage: Arc<StorageAccounts>,
    /// The connected agents.
    pub hub: Hub,
}

impl AppState {
    /// State over `store` with no agent connected yet.
    pub fn new(store: Store, config: ApiConfig, storage: Accounts) -> Self {
        Self {
            storage: Arc::new(StorageAccounts::new(storage, store.clone())),
            store,
            config,
            hub: Hub::default(),
        }
    }
}

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
        .merge(network_watchers::routes())
        .merge(packet_captures::routes())
        .merge(compute::routes())
        .merge(storage_accounts::routes())
        .merge(tokens::routes())
        .merge(files::routes())
        .merge(uploads::routes())
        .merge(openapi::routes())
        .merge(identity::routes())
        .merge(health::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state);
    // Routing happens inside `arm`, so the rewrite must wrap it from outside.
    let normalized = axum::middleware::map_request(normalize_request).layer(arm);
    // Outermost: whatever answers early, its answer waits for the body (drain.rs).
    Router::new()
        .fallback_service(normalized)
        .layer(axum::middleware::from_fn(drain::discard_unread_body))
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
/// `/netwatch/…` is returned as it is.
pub fn normalize_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    // netwatch's own paths carry blob paths: case-sensitive, and an empty
    // segment there is the client's error to hear about, not noise to drop.
    if segments
        .first()
        .is_some_and(|first| first.eq_ignore_ascii_case("netwatch"))
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
// Errors

/// An API failure on its way out: an [`ApiError`], rendered as ARM's error body
/// with its status; the few HTTP-level failures [`ErrorCode`] has no code for
/// (413, 405) carry their own status and code.
#[derive(Debug)]
pub struct HttpError {
    error: ApiError,
    status: StatusCode,
    code: &'static str,
}

impl HttpError {
    pub(crate) fn with_status(status: StatusCode, code: &'static str, error: ApiError) -> Self {
        Self { error, status, code }
    }

    fn payload_too_large() -> Self {
        let message = format!("the request body is larger than {MAX_BODY_BYTES} bytes");
        Self::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            ApiError::new(ErrorCode::InvalidRequestFormat, message),
        )
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = error.code().as_str();
        Self { error, status, code }
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        ApiError::internal("the state store failed; try again", error).into()
    }
}

impl From<LookupError> for HttpError {
    fn from(error: LookupError) -> Self {
        match error {
            LookupError::Store(error) => error.into(),
            error => ApiError::internal("a storage account cannot be served", error).into(),
        }
    }
}

impl From<netwatch_api::resource::ResourceError> for HttpError {
    fn from(error: netwatch_api::resource::ResourceError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // The whole chain, once, here where the error is handled (STYLE 10, 11).
            let mut causes = Vec::new();
            let mut source = std::error::Error::source(&self.error);
            while let Some(cause) = source {
                causes.push(cause.to_string());
                source = cause.source();
            }
            tracing::error!(code = self.code, cause = %causes.join(": "), "{}", self.error);
        } else {
            tracing::debug!(code = self.code, status = self.status.as_u16(), "{}", self.error);
        }
        let mut body = self.error.to_response();
        self.code.clone_into(&mut body.error.code);
        (self.status, axum::Json(body)).into_response()
    }
}

// ---------------------------------------------------------------------------
// Extractors

/// The request's `api-version`, required on ARM routes.
#[derive(Debug, Clone)]
pub struct ArmVersion(pub ApiVersion);

impl<S: Send + Sync> FromRequestParts<S> for ArmVersion {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.uri.query().and_then(|query| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(name, _)| name.eq_ignore_ascii_case(API_VERSION))
                .map(|(_, value)| value)
        });
        Ok(Self(ApiVersion::parse(value)?))
    }
}

/// A request body of at most [`MAX_BODY_BYTES`], which must be JSON when it
/// says what it is (az and the SDK send `application/json`).
#[derive(Debug)]
pub struct ArmBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ArmBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Refused unread: the body still comes in before the answer goes
        // (drain.rs), so a client still sending hears it.
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let text = content_type.to_str().unwrap_or("");
            let essence = text.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::unsupported_media_type(text).into());
            }
        }
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(HttpError::payload_too_large())
            }
            Err(rejection) => {
                Err(ApiError::bad_body(format!("the request body could not be read: {}", rejection.body_text())).into())
            }
        }
    }
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

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh GUID (operation ids, etags). Not a secret.
pub(crate) fn new_guid() -> String {
    // v7: time-ordered, so operation rows and etags sort by creation.
    uuid::Uuid::now_v7().to_string()
}

/// Azure's form of a time, which every time the API returns takes: RFC 3339
/// UTC with seven fractional digits, as .NET prints a `DateTime`
/// (`2016-12-06T17:20:01.5671279Z` in Azure's packet capture guide), from
/// `ms` since the epoch (`….5670000Z`: times are kept in milliseconds).
/// Always seven digits: `time`'s `Rfc3339` would drop trailing zeros.
fn rfc3339(ms: i64) -> String {
    const AZURE: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    // Years 1 to 9999, which four digits print: no time the controller
    // keeps is outside them, a damaged row prints as the nearest end.
    const FIRST_MS: i64 = -62_135_596_800_000;
    const LAST_MS: i64 = 253_402_300_799_999;
    let nanos = i128::from(ms.clamp(FIRST_MS, LAST_MS)) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|time| time.format(AZURE).ok())
        .expect("years 1-9999 are in range and print with four digits")
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

    /// Issue 12: times were whole seconds; Azure's have seven fractional digits.
    #[test]
    fn issue_12_times_have_azures_seven_fractional_digits() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(rfc3339(1_473_251_724_000), "2016-09-07T12:35:24.0000000Z");
        assert_eq!(rfc3339(951_782_400_999), "2000-02-29T00:00:00.9990000Z");
        // The guide's example, to the millisecond the store keeps.
        assert_eq!(rfc3339(1_481_044_801_567), "2016-12-06T17:20:01.5670000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.9990000Z");
        assert_eq!(rfc3339(i64::MIN), "0001-01-01T00:00:00.0000000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.9990000Z");
        let parsed = OffsetDateTime::parse(
            &rfc3339(1_481_044_801_567),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(parsed.unix_timestamp_nanos(), 1_481_044_801_567_000_000);
    }

    #[test]
    fn guids_are_fresh_and_shaped() {
        let (a, b) = (new_guid(), new_guid());
        assert_ne!(a, b);
        assert!(SubscriptionId::parse("x", &a).is_ok(), "{a}");
    }
}
