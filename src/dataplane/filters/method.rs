//! Method: the routed resource must have a method for the request's verb
//! (404 `ResourceNotFound` when no resource matched, 405
//! `MethodNotAllowed` with `Allow` otherwise). It runs after the CORS
//! preflight had its chance, so browsers can read these errors too.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use http::request::Parts;

pub struct Method;

impl RequestFilter for Method {
    fn request_filter(ctx: &mut RequestCtx<'_>, _req: &Parts) -> Result<Flow, ErrorCode> {
        ctx.route_ix = ctx.routed()?.method()?.route_ix;
        Ok(Flow::Continue)
    }
}
