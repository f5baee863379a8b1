//! JWT: on a stage with JWT on (always on PRIVATE APIs), a valid
//! `Authorization: Bearer <token>` of an auth connected to the stage is
//! required; otherwise 401 with `WWW-Authenticate: Bearer` and a code that
//! says why.

use crate::dataplane::error::GwError;
use crate::dataplane::route::Routed;
use http::{HeaderMap, HeaderValue, StatusCode};

pub fn check(routed: &Routed, headers: &HeaderMap, now_unix: i64) -> Result<(), GwError> {
    let Some(jwt) = &routed.stage.jwt else {
        return Ok(());
    };
    jwt.verify(headers.get(http::header::AUTHORIZATION), now_unix)
        .map_err(|e| GwError {
            header: Some((
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            )),
            ..GwError::new(StatusCode::UNAUTHORIZED, e.code(), e.message())
        })
}
