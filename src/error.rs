//! The one place where errors become HTTP answers.
//!
//! Bodies are JSON `{"error":{"code","message"}}` with a fixed, client-safe message: causes (storage
//! errors, URLs, anything that could carry a secret) are logged here, once, and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

// Store errors carry no secrets (see `table_storage::SdkFailure`), so the whole chain can be logged.
use crate::store::StoreError;
use crate::telemetry::error_chain;

/// An HTTP request that could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is wrong; the message says how (and holds no request data).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A dependency is down; the caller should try again (Graph does, for 4 hours).
    #[error("storage unavailable")]
    Storage(#[from] StoreError),
    /// Storage did not answer within the time the caller waits for us.
    #[error("storage did not answer in time")]
    StorageTimeout,
    /// No key, or not one of the configured keys.
    #[error("unauthorized")]
    Unauthorized,
    /// Nothing of that name; the message says what was looked for.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A parameter is wrong: `code` is the documented, stable reason (README "Read API").
    #[error("bad request ({code}): {message}")]
    Invalid {
        code: &'static str,
        message: &'static str,
    },
    /// Authenticated, but without the app role the read API requires.
    #[error("forbidden")]
    Forbidden,
    /// The route exists, for other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "BadRequest", *message),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid key is required (x-functions-key header or code parameter)",
            ),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, "NotFound", *message),
            Self::Invalid { code, message } => (StatusCode::BAD_REQUEST, *code, *message),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the caller does not have the app role the read API requires",
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "this route answers GET only",
            ),
            Self::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "the request body is too large",
            ),
            // Refusals of a well-formed request are our bug, not an outage: retrying cannot help.
            Self::Storage(
                StoreError::Conflict
                | StoreError::PreconditionFailed
                | StoreError::InvalidInput(_)
                | StoreError::BatchFailed { .. },
            ) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the request could not be completed",
            ),
            Self::Storage(_) | Self::StorageTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "the service is temporarily unavailable; retry later",
            ),
        };
        match &self {
            Self::Storage(
                StoreError::Unauthorized { .. }
                | StoreError::Fatal(_)
                | StoreError::Conflict
                | StoreError::PreconditionFailed
                | StoreError::InvalidInput(_)
                | StoreError::BatchFailed { .. },
            ) => {
                tracing::error!(error = %error_chain(&self), "request failed");
            }
            Self::Storage(_) | Self::StorageTimeout => {
                tracing::warn!(error = %error_chain(&self), "request failed");
            }
            // Client mistakes are the client's to fix: not an error of ours.
            Self::BadRequest(_)
            | Self::PayloadTooLarge { .. }
            | Self::Unauthorized
            | Self::NotFound(_)
            | Self::Invalid { .. }
            | Self::Forbidden
            | Self::MethodNotAllowed => {
                tracing::info!(error = %self, "request rejected");
            }
        }
        let body = Json(json!({"error": {"code": code, "message": message}}));
        let mut response = (status, body).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(
                axum::http::header::ALLOW,
                axum::http::HeaderValue::from_static("GET"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

/// A queue or timer invocation that failed: the host retries the message (and finally moves it to
/// the poison queue). Only failures a later try can fix end up here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvocationError {
    #[error("storage failed")]
    Storage(#[from] StoreError),
    /// The host's payload is not what this handler reads (a renamed binding, a new payload shape).
    #[error("invocation payload not understood")]
    Payload(#[from] crate::host::invocation::PayloadError),
    #[error("Graph failed")]
    Graph(#[from] crate::graph::GraphError),
    /// A setting the function needs is missing; the text names it.
    #[error("{0}")]
    Config(&'static str),
}

impl IntoResponse for InvocationError {
    fn into_response(self) -> Response {
        match &self {
            // Outages pass; the host's retries cover them.
            Self::Storage(StoreError::Transient(_))
            | Self::Graph(
                crate::graph::GraphError::Transient(_) | crate::graph::GraphError::Throttled { .. },
            ) => {
                tracing::warn!(error = %error_chain(&self), "invocation failed; the host retries");
            }
            // A refusal or a bug: retries will probably fail the same way, up to the poison queue.
            Self::Storage(_) | Self::Payload(_) | Self::Graph(_) | Self::Config(_) => {
                tracing::error!(error = %error_chain(&self), "invocation failed");
            }
        }
        let body = Json(
            json!({"Outputs": {}, "Logs": ["invocation failed; see the handler's log"], "ReturnValue": null}),
        );
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_refusals_are_500_and_outages_503() {
        let status = |e: StoreError| ApiError::Storage(e).into_response().status();
        assert_eq!(
            status(StoreError::Conflict),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(StoreError::PreconditionFailed),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(StoreError::InvalidInput("key".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(StoreError::Transient(crate::store::SdkFailure::text(
                "down"
            ))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::NotFound),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
