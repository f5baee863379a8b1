//! JWT: on a stage with JWT on (always on PRIVATE APIs), a valid
//! `Authorization: Bearer <token>` of an auth connected to the stage is
//! required; otherwise 401 with `WWW-Authenticate: Bearer` and a code that
//! says why. The auth that accepted the token is recorded for the access
//! log (its id only). The checking itself is `crate::jwt` (no HTTP in it); this
//! filter maps its verdicts to the data plane's codes.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::jwt::JwtError;
use http::request::Parts;

pub struct Jwt;

impl RequestFilter for Jwt {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        if ctx.routed()?.stage.jwt.is_none() {
            return Ok(Flow::Continue);
        }
        let now = ctx.now();
        let Some(jwt) = &ctx.routed()?.stage.jwt else {
            return Ok(Flow::Continue);
        };
        let authorization = req.headers.get(http::header::AUTHORIZATION);
        // The accepting auth's id for the access log: a reference count of
        // the id compiled into the snapshot, nothing of the token.
        let auth = jwt
            .verify_auth(authorization.map(|v| v.as_bytes()), now)
            .map_err(code)?
            .clone();
        ctx.logged.auth_id = Some(auth);
        Ok(Flow::Continue)
    }
}

/// The data plane's code for a refused token.
pub fn code(e: JwtError) -> ErrorCode {
    match e {
        JwtError::Missing => ErrorCode::TokenMissing,
        JwtError::Malformed => ErrorCode::TokenMalformed,
        JwtError::BadSignature => ErrorCode::TokenBadSignature,
        JwtError::Expired => ErrorCode::TokenExpired,
        JwtError::NotForStage => ErrorCode::TokenNotForStage,
        JwtError::Internal => ErrorCode::TokenInternalError,
    }
}
