//! [`HttpError`], the one error type of the API's handlers, extractors and
//! middleware: an [`ApiError`] rendered as ARM's error body with its status;
//! the domain's errors (a [`CreateError`], …) become one here, at the edge.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use netwatch_api::error::{ApiError, ErrorCode, error_chain};

use crate::accounts::LookupError;
use crate::lifecycle::CreateError;
use crate::store::StoreError;

/// An API failure on its way out: an [`ApiError`], rendered as ARM's error body
/// with its status; the few HTTP-level failures [`ErrorCode`] has no code for
/// (413, 405) carry their own status and code.
#[derive(Debug)]
pub struct HttpError {
    error: ApiError,
    status: StatusCode,
    code: &'static str,
    /// Seconds for `Retry-After` (a 503).
    retry_after: Option<u32>,
}

/// How long a client should wait before it tries again when the state store
/// does not answer: ARM clients honour `Retry-After` on a 503.
pub(crate) const STORE_RETRY_AFTER: u32 = 2;

impl HttpError {
    pub(crate) fn with_status(status: StatusCode, code: &'static str, error: ApiError) -> Self {
        Self {
            error,
            status,
            code,
            retry_after: None,
        }
    }

    /// 503 `ServiceUnavailable` with `Retry-After: seconds`.
    pub(crate) fn unavailable(error: ApiError, seconds: u32) -> Self {
        Self {
            retry_after: Some(seconds),
            ..Self::from(error)
        }
    }

    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, as the error body's message says it.
    pub(crate) fn message(&self) -> String {
        error_chain(&self.error)
    }

    /// 503: the state store does not answer right now.
    pub(crate) fn store_unavailable() -> Self {
        let message =
            format!("the controller's database does not answer right now; try again in {STORE_RETRY_AFTER} s");
        Self::unavailable(ApiError::new(ErrorCode::ServiceUnavailable, message), STORE_RETRY_AFTER)
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = error.code().as_str();
        Self {
            error,
            status,
            code,
            retry_after: None,
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error_chain(&error), "the state store does not answer: 503 with Retry-After");
            return Self::store_unavailable();
        }
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
        // A 503 is logged where it is made, with its cause.
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
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
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<CreateError> for HttpError {
    fn from(error: CreateError) -> Self {
        let message = error.to_string();
        match error {
            CreateError::NotRegistered { .. } => ApiError::new(ErrorCode::InvalidRequestFormat, message)
                .with_target("properties.target")
                .into(),
            CreateError::WrongLocation { .. } | CreateError::NoSuchScaleSet { .. } => {
                ApiError::bad_request("properties.target", message).into()
            }
            CreateError::UnknownInstances { ref field, .. } | CreateError::BadHost { ref field, .. } => {
                ApiError::bad_request(field.clone(), message).into()
            }
            CreateError::NoInstances { .. } => ApiError::bad_request("properties.scope", message).into(),
            CreateError::NoSuchAccount { .. } => {
                ApiError::bad_request("properties.storageLocation.storageId", message).into()
            }
            CreateError::StillActive { .. } | CreateError::CreatedMeanwhile { .. } => {
                ApiError::conflict(message).into()
            }
            CreateError::Store(error) => error.into(),
            CreateError::Accounts(error) => error.into(),
            error @ (CreateError::UnreadableVm(_) | CreateError::Serialize(_)) => {
                ApiError::internal("create the packet capture", error).into()
            }
        }
    }
}
