//! The one error shape of the API, `{"error": {"code": "...", "message": "..."}}`, with
//! stable codes shared with the wire protocol.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use netbore_codes::ErrorCode;

use crate::store::StoreError;

/// The one error shape of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiErrorBody,
}

/// Code and sentence of an API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Stable code (`bad_request`, `unauthorized`, `port_in_use`, ...); a code this
    /// build does not know reads as [`ErrorCode::Unknown`].
    pub code: ErrorCode,
    /// One sentence: what happened and what to do.
    pub message: String,
}

/// An API error with its HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A store failure: logged in full, answered as a 500 that says to retry.
    pub fn store(e: StoreError) -> Self {
        tracing::error!(error = %e, "the store failed");
        if matches!(e, StoreError::Unreachable { .. }) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the server cannot reach its shared store right now; existing tunnels keep working, try again in a moment",
            );
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the server could not read or write its state; try again, and tell its operator if this persists",
        )
    }

    /// An internal failure: logged in full, answered as a 500 that says to retry.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the server failed to answer; try again, and tell its operator if this persists",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ApiErrorBody {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
