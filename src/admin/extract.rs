//! Extractors of the management handlers: the signed caller, and a JSON
//! body that is read within `max_admin_body_bytes` (axum's body limit),
//! declared `application/json`, and parsed into the operation's request
//! type with errors that name the field. Handlers receive checked values
//! and never repeat these steps.

use super::{validate, ApiError, Caller};
use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::DeserializeOwned;

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by the signature middleware on every request it lets through.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("the request is not signed"))
    }
}

/// `application/json`, parameters (charset) allowed.
fn is_json(h: &http::HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// A request body declared JSON, read within the body limit (413 above
/// it, 415 for another Content-Type).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body is larger than max_admin_body_bytes".into())
            } else {
                ApiError::bad_request(format!("body: {}", e.body_text()))
            }
        })?;
        // Bodies are JSON, as every operation of the reference declares.
        if !bytes.is_empty() && !json {
            return Err(ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "Content-Type must be application/json".to_string(),
            ));
        }
        Ok(JsonBytes(bytes))
    }
}

/// The operation's request: a JSON object parsed into `T`
/// ([`validate::json`]: a 400 names the field).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        validate::json(&bytes).map(JsonBody)
    }
}
