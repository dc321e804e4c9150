//! Kubernetes `Status` error bodies (meta/v1 Status), as the API server answers failures.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request, answered with a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP code (also `code` in the body).
    pub code: u16,
    /// `reason`: `NotFound`, `BadRequest`, `MethodNotAllowed`, `Unauthorized`, `Expired`...
    pub reason: &'static str,
    /// Human message (kubectl prints it).
    pub message: String,
    /// `details`: kind/name/group of the object the error is about.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }
    /// 404 NotFound for an object (`pods "web" not found`).
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{qualified} \"{name}\" not found"),
            details: Some(json!({"name": name, "group": group, "kind": resource})),
        }
    }
    /// 404 NotFound for a path the server does not serve.
    pub fn no_such_path(message: impl Into<String>) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: message.into(),
            details: None,
        }
    }
    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }
    /// 410 Gone (a resourceVersion or continue token older than the cache keeps).
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: message.into(),
            details: None,
        }
    }
    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }
    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError {
            code: 406,
            reason: "NotAcceptable",
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> serde_json::Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut r = (code, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
