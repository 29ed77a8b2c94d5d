//! Twirp's error replies: JSON `{"code", "msg"}` with the HTTP status each code stands for.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq)]
pub struct TwirpError {
    pub code: &'static str,
    pub msg: String,
}

impl TwirpError {
    fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into() }
    }
    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Self::new("invalid_argument", msg)
    }
    pub fn malformed(msg: impl Into<String>) -> Self {
        Self::new("malformed", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new("not_found", msg)
    }
    pub fn bad_route(msg: impl Into<String>) -> Self {
        Self::new("bad_route", msg)
    }
    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Self::new("unauthenticated", msg)
    }
    pub fn failed_precondition(msg: impl Into<String>) -> Self {
        Self::new("failed_precondition", msg)
    }
    pub fn unimplemented(msg: impl Into<String>) -> Self {
        Self::new("unimplemented", msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new("unavailable", msg)
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::error::ApiError> for TwirpError {
    fn from(err: crate::error::ApiError) -> Self {
        match err.status {
            StatusCode::NOT_FOUND => Self::not_found(err.message),
            StatusCode::CONFLICT => Self::failed_precondition(err.message),
            s if s.is_client_error() => Self::invalid_argument(err.message),
            _ => Self::unavailable(err.message),
        }
    }
}

/// How a Twirp error travels.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TwirpErrorBody {
    /// Twirp's code: `invalid_argument`, `malformed`, `not_found`, `bad_route`, `unauthenticated`,
    /// `failed_precondition`, `unimplemented`, `unavailable`…
    code: String,
    msg: String,
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(TwirpErrorBody { code: self.code.to_string(), msg: self.msg })).into_response()
    }
}
