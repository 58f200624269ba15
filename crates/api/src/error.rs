//! The ARM error body and [`ApiError`], the one error every REST answer other
//! than a success is built from.
//!
//! The body is ARM's (OData v4) shape, which both the az CLI (`ODataV4Format`)
//! and the Python SDK (`ARMErrorFormat`) parse (api-contract.md §2.9):
//!
//! ```json
//! {"error":{"code":"InvalidRequestFormat","message":"…","target":"properties.filters[0].localPort","details":[]}}
//! ```
//!
//! An [`ApiError`] knows whose fault it is: a client error is a 4xx whose
//! `target` points at the bad input and whose message says how to fix it; a
//! server error is a 500 whose message is plain and whose cause stays in
//! [`std::error::Error::source`], for the log only (STYLE.md §2.9, §2.10). The
//! HTTP status follows from the [`ErrorCode`], so the two never disagree.
//!
//! No HTTP framework here: the controller turns an `ApiError` into a response
//! with [`ApiError::status`] and [`ApiError::to_response`].

use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::filter::FilterError;
use crate::resource::{ResourceError, ResourceErrorKind, ResourceId};

/// The wire prefix of a packet capture's parameters, put before every filter
/// error's target (`filters[0].localPort` becomes `properties.filters[0].localPort`).
const PROPERTIES_PREFIX: &str = "properties.";

/// ARM's `error.code`, with the HTTP status it is sent with.
///
/// The contract names only `InvalidRequestFormat`, `NotFound`, `ResourceNotFound`
/// and `InternalServerError` (api-contract.md §1.4, §2.9, §7); the others are the
/// codes Azure Resource Manager itself answers for the same mistakes, so that
/// scripts written against Azure see the same codes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the body is not valid JSON, has a wrong type or an unknown field,
    /// or a value breaks a documented rule (the contract's example code).
    InvalidRequestFormat,
    /// 400: a resource or resource group name breaks ARM's naming rules.
    InvalidResourceName,
    /// 400: a subscription id is not a GUID.
    InvalidSubscriptionId,
    /// 400: a resource type (`Microsoft.Compute/virtualMachines`) is malformed.
    InvalidResourceType,
    /// 400: a resource id in the body (`properties.target`,
    /// `properties.storageLocation.storageId`) is malformed or of the wrong type.
    LinkedInvalidPropertyId,
    /// 400: the `api-version` query parameter is missing.
    MissingApiVersionParameter,
    /// 400: the `api-version` query parameter is not a version.
    InvalidApiVersionParameter,
    /// 401: no usable bearer token.
    AuthenticationFailed,
    /// 404: no resource has the id asked for.
    ResourceNotFound,
    /// 404: no route matches the path (not a resource at all).
    NotFound,
    /// 409: the request clashes with the resource's current state.
    Conflict,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 500: our fault; the message is plain and the cause is logged.
    InternalServerError,
    /// 503: the server cannot answer now (its database is unreachable, it
    /// is draining); sent with `Retry-After`, which ARM clients honour.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code as ARM writes it, e.g. `InvalidRequestFormat`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequestFormat => "InvalidRequestFormat",
            Self::InvalidResourceName => "InvalidResourceName",
            Self::InvalidSubscriptionId => "InvalidSubscriptionId",
            Self::InvalidResourceType => "InvalidResourceType",
            Self::LinkedInvalidPropertyId => "LinkedInvalidPropertyId",
            Self::MissingApiVersionParameter => "MissingApiVersionParameter",
            Self::InvalidApiVersionParameter => "InvalidApiVersionParameter",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::NotFound => "NotFound",
            Self::Conflict => "Conflict",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::InternalServerError => "InternalServerError",
            Self::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequestFormat
            | Self::InvalidResourceName
            | Self::InvalidSubscriptionId
            | Self::InvalidResourceType
            | Self::LinkedInvalidPropertyId
            | Self::MissingApiVersionParameter
            | Self::InvalidApiVersionParameter => 400,
            Self::AuthenticationFailed => 401,
            Self::ResourceNotFound | Self::NotFound => 404,
            Self::Conflict => 409,
            Self::UnsupportedMediaType => 415,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ARM's error body: `{"error": ErrorDetail}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

/// ARM's `ErrorDetails` (NETJSON "Common error details representation").
///
/// `target` is left out when there is none (az reads only `code` and
/// `message`); `details` is always written, `[]` as in the contract's example.
/// Reading is lenient: Azure's extra members (`innerError`,
/// `additionalInfo`) are ignored and a missing `details` reads as `[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// A cause kept for the log, never shown to the client.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// Any failed API request: status, ARM code, message and the input it is about.
///
/// `Display` is the message alone; for a 500 it is the plain message and the
/// cause is the error's `source()`, so `{:#}` in a log shows both.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    target: Option<String>,
    #[source]
    cause: Option<Cause>,
}

/// A whole number at `path` in `min..=max` (`unit` says of what), `default`
/// when absent: a 400 that gives the range otherwise.
pub fn in_range(
    path: &str,
    value: Option<i64>,
    default: u64,
    (min, max): (u64, u64),
    unit: &str,
) -> Result<u64, ApiError> {
    let Some(value) = value else { return Ok(default) };
    u64::try_from(value)
        .ok()
        .filter(|value| (min..=max).contains(value))
        .ok_or_else(|| ApiError::bad_request(path, format!("{path} {value} is out of range: use {min}-{max} {unit}")))
}

/// Reads a JSON request body as `T` (`what` names it, `example` shows a
/// good one): a 400 whose target is the JSON path of the first value that
/// does not fit (`properties.seconds`), or the body's when it is no object.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str, example: &str) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_body(format!(
            "the body is not {what}: a JSON object is expected, as {example}"
        )));
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let path = err.path().to_string();
        let message = format!("the body is not {what}: {} (expected as {example})", err.inner());
        if path == "." || path == "?" {
            ApiError::bad_body(message)
        } else {
            ApiError::bad_request(path, message)
        }
    })
}

impl ApiError {
    /// An error with `code` and `message`, no target.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            target: None,
            cause: None,
        }
    }

    /// The same error, about the input at `target` (a JSON path such as
    /// `properties.timeLimitInSeconds`, or a parameter name such as `api-version`).
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// 400 `InvalidRequestFormat` about the input at `target`; `message` says
    /// what is wrong and what would be right.
    pub fn bad_request(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequestFormat, message).with_target(target)
    }

    /// 400 `InvalidRequestFormat` about the request as a whole (an empty body,
    /// JSON that does not parse), no target.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequestFormat, message)
    }

    /// 404 `ResourceNotFound`: nothing has the id `id`.
    pub fn not_found(id: &ResourceId) -> Self {
        let message = format!(
            "{} {:?} was not found: no resource has the id {id}",
            id.kind().noun(),
            id.name().as_str()
        );
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    /// 404 `NotFound`: `path` is not a route of this server.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no route for {method} {path}"))
    }

    /// 409 `Conflict`; `message` says what clashes and how to resolve it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 401 `AuthenticationFailed`; `message` says what is missing.
    pub fn authentication_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AuthenticationFailed, message)
    }

    /// 415 `UnsupportedMediaType` for a body sent as `content_type`.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            format!("content type {content_type:?} is not supported: send the body as application/json"),
        )
    }

    /// 500 `InternalServerError`: `message` is shown as is and must not reveal
    /// internals (`the capture store is unavailable; try again`); `cause` is kept
    /// as the error's source, for the server's log.
    pub fn internal(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(ErrorCode::InternalServerError, message)
        }
    }

    /// The ARM code.
    pub const fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status, from the code.
    pub const fn status(&self) -> u16 {
        self.code.status()
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The input the error is about, if any.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// Whether the client is at fault (a 4xx): not logged as an error, and
    /// not worth retrying unchanged.
    pub const fn is_client_error(&self) -> bool {
        let status = self.status();
        400 <= status && status < 500
    }

    /// The ARM error body for this error.
    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                target: self.target.clone(),
                details: Vec::new(),
            },
        }
    }
}

/// A bad filter in a capture's parameters: 400 `InvalidRequestFormat` at
/// `properties.filters[i].field`.
impl From<FilterError> for ApiError {
    fn from(err: FilterError) -> Self {
        let FilterError { target, message } = err.prefixed(PROPERTIES_PREFIX);
        Self::bad_request(target, message)
    }
}

/// A bad name, id, type or location: a 400 whose code says which.
impl From<ResourceError> for ApiError {
    fn from(err: ResourceError) -> Self {
        let code = match err.kind {
            ResourceErrorKind::Name | ResourceErrorKind::ResourceGroup => ErrorCode::InvalidResourceName,
            ResourceErrorKind::Subscription => ErrorCode::InvalidSubscriptionId,
            ResourceErrorKind::ResourceType => ErrorCode::InvalidResourceType,
            ResourceErrorKind::Id | ResourceErrorKind::WrongKind => ErrorCode::LinkedInvalidPropertyId,
            ResourceErrorKind::Location => ErrorCode::InvalidRequestFormat,
        };
        Self::new(code, err.message).with_target(err.target)
    }
}

/// An error and its causes, `a: b: c`, for messages and logs; a cause whose
/// text the chain already holds is not repeated (reqwest's and object_store's
/// errors often quote their source).
pub fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{PacketCaptureFilter, validate_filters};
    use crate::resource::{ResourceGroupName, ResourceName, SubscriptionId};

    fn capture_id() -> ResourceId {
        let sub = SubscriptionId::parse("sub", "00000000-0000-0000-0000-000000000000").unwrap();
        let rg = ResourceGroupName::parse("rg", "rg1").unwrap();
        let nw = ResourceName::parse("nw", "nw1").unwrap();
        let pc = ResourceName::parse("pc", "pc1").unwrap();
        ResourceId::packet_capture(&sub, &rg, &nw, &pc)
    }

    #[test]
    fn codes_have_their_status() {
        let rows = [
            (ErrorCode::InvalidRequestFormat, 400),
            (ErrorCode::InvalidResourceName, 400),
            (ErrorCode::InvalidSubscriptionId, 400),
            (ErrorCode::InvalidResourceType, 400),
            (ErrorCode::LinkedInvalidPropertyId, 400),
            (ErrorCode::MissingApiVersionParameter, 400),
            (ErrorCode::InvalidApiVersionParameter, 400),
            (ErrorCode::AuthenticationFailed, 401),
            (ErrorCode::ResourceNotFound, 404),
            (ErrorCode::NotFound, 404),
            (ErrorCode::Conflict, 409),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::InternalServerError, 500),
        ];
        for (code, status) in rows {
            assert_eq!(code.status(), status, "{code}");
            assert_eq!(code.to_string(), format!("{code:?}"));
            let err = ApiError::new(code, "x");
            assert_eq!(err.is_client_error(), status < 500, "{code}");
        }
    }

    #[test]
    fn the_body_is_arms_shape() {
        // The contract's example (api-contract.md §2.9), byte for byte.
        let example = r#"{"error":{"code":"InvalidRequestFormat","message":"…","target":"properties.filters[0].localPort","details":[]}}"#;
        let err = ApiError::bad_request("properties.filters[0].localPort", "…");
        assert_eq!(serde_json::to_string(&err.to_response()).unwrap(), example);
        let parsed: ErrorResponse = serde_json::from_str(example).unwrap();
        assert_eq!(parsed, err.to_response());

        // No target: left out; details still written.
        let err = ApiError::conflict("busy");
        assert_eq!(
            serde_json::to_string(&err.to_response()).unwrap(),
            r#"{"error":{"code":"Conflict","message":"busy","details":[]}}"#
        );
        // What Azure sends may lack details and carry more: both read.
        let azure: ErrorResponse = serde_json::from_str(
            r#"{"error":{"code":"InternalServerError","message":"An error occurred.","innerError":"x"}}"#,
        )
        .unwrap();
        assert_eq!(azure.error.details, []);
        assert_eq!(azure.error.target, None);
    }

    #[test]
    fn constructors() {
        let err = ApiError::not_found(&capture_id());
        assert_eq!((err.status(), err.code()), (404, ErrorCode::ResourceNotFound));
        assert_eq!(
            err.message(),
            "packet capture \"pc1\" was not found: no resource has the id /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1"
        );
        assert_eq!(err.target(), None);

        let err = ApiError::route_not_found("GET", "/nope");
        assert_eq!(
            (err.status(), err.code(), err.message()),
            (404, ErrorCode::NotFound, "no route for GET /nope")
        );

        let err = ApiError::bad_request("properties.timeLimitInSeconds", "too long");
        assert_eq!(
            (err.status(), err.target()),
            (400, Some("properties.timeLimitInSeconds"))
        );
        assert!(err.is_client_error());

        let err = ApiError::unsupported_media_type("text/plain");
        assert_eq!(err.status(), 415);
        assert!(err.message().contains("application/json"));

        let err = ApiError::authentication_failed("the Authorization header is missing");
        assert_eq!((err.status(), err.code()), (401, ErrorCode::AuthenticationFailed));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let cause = std::io::Error::other("disk /var/lib/netwatch/db.sqlite is full");
        let err = ApiError::internal("the capture store is unavailable; try again", cause);
        assert_eq!(err.status(), 500);
        assert!(!err.is_client_error());
        assert_eq!(err.to_string(), "the capture store is unavailable; try again");
        let body = serde_json::to_string(&err.to_response()).unwrap();
        assert!(!body.contains("sqlite"), "{body}");
        // The cause is there for the log.
        let source = StdError::source(&err).unwrap();
        assert!(source.to_string().contains("sqlite"));
    }

    #[test]
    fn filter_errors_become_bad_requests_under_properties() {
        let filters = [PacketCaptureFilter {
            local_port: Some("70000".into()),
            ..PacketCaptureFilter::default()
        }];
        let err = ApiError::from(validate_filters(&filters).unwrap_err());
        assert_eq!((err.status(), err.code()), (400, ErrorCode::InvalidRequestFormat));
        assert_eq!(err.target(), Some("properties.filters[0].localPort"));
        assert_eq!(
            err.message(),
            r#"properties.filters[0].localPort "70000" is out of range: ports are 0-65535"#
        );
    }

    #[test]
    fn resource_errors_map_to_arm_codes() {
        let rows: [(Result<(), ResourceError>, ErrorCode); 5] = [
            (
                ResourceName::parse("packetCaptureName", "a b").map(drop),
                ErrorCode::InvalidResourceName,
            ),
            (
                ResourceGroupName::parse("resourceGroupName", "a.").map(drop),
                ErrorCode::InvalidResourceName,
            ),
            (
                SubscriptionId::parse("subscriptionId", "abc").map(drop),
                ErrorCode::InvalidSubscriptionId,
            ),
            (
                ResourceId::parse("properties.target", "vm1").map(drop),
                ErrorCode::LinkedInvalidPropertyId,
            ),
            (
                crate::resource::Location::parse("location", "west_us").map(drop),
                ErrorCode::InvalidRequestFormat,
            ),
        ];
        for (result, code) in rows {
            let err = ApiError::from(result.unwrap_err());
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.status(), 400);
            assert!(err.target().is_some());
        }
    }
}
