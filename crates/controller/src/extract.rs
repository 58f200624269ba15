//! The API's own extractors: [`ArmVersion`] (`api-version`, required on ARM
//! routes) and [`ArmBody`] (a JSON body of at most [`MAX_BODY_BYTES`]).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use netwatch_api::api_version::{API_VERSION, ApiVersion};
use netwatch_api::error::{ApiError, ErrorCode};

use crate::errors::HttpError;

/// Largest request body accepted: 1 MiB, far above any capture definition
/// (a PUT body with 1000 filters is ~150 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(payload_too_large()),
            Err(rejection) => {
                Err(ApiError::bad_body(format!("the request body could not be read: {}", rejection.body_text())).into())
            }
        }
    }
}

/// 413 for a body over [`MAX_BODY_BYTES`], with ARM's error body.
fn payload_too_large() -> HttpError {
    let message = format!("the request body is larger than {MAX_BODY_BYTES} bytes");
    HttpError::with_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestBodyTooLarge",
        ApiError::new(ErrorCode::InvalidRequestFormat, message),
    )
}
