//! SCP's error envelope: `{"errors":[{"code":..,"status":N,"detail":..}]}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Run the request again ([`ApiError::stale`]).
    rerun: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: String) -> Self {
        ApiError {
            status,
            code,
            detail,
            rerun: false,
        }
    }
    /// 400 naming the field: detail is `"{field}: {message}"`.
    pub fn field(field: &str, msg: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{field}: {msg}"),
        )
    }
    pub fn bad_request(detail: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", detail)
    }
    pub fn not_found(detail: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", detail)
    }
    pub fn conflict(detail: String) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", detail)
    }
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail.to_string())
    }
    pub fn too_large(detail: String) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", detail)
    }
    /// 503: the store cannot be reached (nothing was changed).
    pub fn unavailable(detail: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            detail,
        )
    }
    /// The write was overtaken by another node's commit and is run again
    /// ([`super::rerun_stale`]); answered as this 503 only when that
    /// keeps happening.
    pub fn stale() -> Self {
        ApiError {
            rerun: true,
            ..Self::unavailable(
                "concurrent changes through other nodes kept overtaking this one; nothing was changed, retry"
                    .to_string(),
            )
        }
    }
    pub fn internal(detail: String) -> Self {
        tracing::error!(%detail, "management API internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "internal error; nothing was changed".to_string(),
        )
    }
}

/// SCP's error envelope, as sent (and described in `GET /v1/openapi.json`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorEnvelope {
    #[schema(min_items = 1)]
    pub errors: Vec<ErrorItem>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorItem {
    /// e.g. BadRequest, Unauthorized, ReplayedRequest, Forbidden, NotFound,
    /// MethodNotAllowed, Conflict, PayloadTooLarge, UnsupportedMediaType,
    /// InternalServerError, ServiceUnavailable.
    #[schema(pattern = "^[A-Za-z]+$")]
    pub code: &'static str,
    /// What went wrong; for a field, `"{field}: {message}"`.
    pub detail: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
}

/// Marks the response of [`ApiError::stale`] for [`super::rerun_stale`].
#[derive(Clone, Copy, Debug)]
pub struct Stale;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let stale = self.rerun;
        let body = ErrorEnvelope {
            errors: vec![ErrorItem {
                code: self.code,
                detail: self.detail,
                status: self.status.as_u16(),
            }],
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if stale {
            resp.extensions_mut().insert(Stale);
        }
        resp
    }
}
