//! OSB error bodies: `{"error": CODE, "description": TEXT}` with the status the spec
//! gives each case. Every description says what the request got wrong and what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An OSB error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// The spec's machine-readable code (`AsyncRequired`, `ConcurrencyError`...), or a
    /// short name of the status for cases the spec gives none.
    pub error: &'static str,
    pub description: String,
}

impl ApiError {
    /// An error with `status`, `error` code and `description`.
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            description: description.into(),
        }
    }

    /// 400: the request is malformed or names what the catalog does not have.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", description)
    }

    /// 422 `AsyncRequired`: the operation is asynchronous.
    pub fn async_required() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AsyncRequired",
            "this broker deploys asynchronously: send the request again with accepts_incomplete=true",
        )
    }

    /// 500, for failures of the broker itself (the store could not be written).
    pub fn internal(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            description,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "description": self.description})),
        )
            .into_response()
    }
}

/// The fallback for unknown routes: 404 with an OSB error body.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no such endpoint {uri}: this broker serves /v2/catalog, /v2/service_instances/... and /b/..."),
    )
}
