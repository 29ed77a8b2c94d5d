//! API errors: every failure is a JSON body `{"error": {"code", "message"}}` with a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn is_conflict(&self) -> bool {
        self.status == StatusCode::CONFLICT
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `bad_request`, `invalid_request`, `not_found`, `conflict`, `unavailable`…
    pub code: String,
    /// The reason, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would be accepted (RFC 6750's bearer tokens).
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="fleet""#));
        }
        response
    }
}

impl From<fleet_runtime::bus::BusError> for ApiError {
    fn from(err: fleet_runtime::bus::BusError) -> Self {
        use fleet_runtime::bus::BusError;
        match err {
            BusError::NotFound(id) => ApiError::not_found(format!("recording {id} not found")),
            BusError::Refused(refusal) => ApiError::conflict(refusal.to_string()),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

impl From<crate::job_index::ListError> for ApiError {
    fn from(err: crate::job_index::ListError) -> Self {
        match err {
            crate::job_index::ListError::Bus(err) => err.into(),
            not_ready => ApiError::unavailable(not_ready.to_string()),
        }
    }
}
