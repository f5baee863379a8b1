//! Request limits checked before anything else: header block size (431)
//! and declared body size (413). Bodies of unknown length are cut while
//! streaming (see `upstream::body`).

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::dataplane::error::BadRequest;
use crate::dataplane::upstream::body_len;
use http::request::Parts;

pub struct Limits;

impl RequestFilter for Limits {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let (max_header_bytes, max_body_bytes) = (ctx.gw.max_header_bytes, ctx.gw.max_body_bytes);
        // Size of the header block as sent: "name: value\r\n" per field.
        let mut size = req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 16;
        for (k, v) in &req.headers {
            size += k.as_str().len() + v.len() + 4;
            if size > max_header_bytes {
                return Err(ErrorCode::HeadersTooLarge);
            }
        }
        if let Some(n) = body_len(&req.headers) {
            if n > max_body_bytes {
                return Err(ErrorCode::PayloadTooLarge);
            }
        } else if req.headers.contains_key(http::header::CONTENT_LENGTH) {
            return Err(ErrorCode::BadRequest(BadRequest::ContentLength));
        }
        Ok(Flow::Continue)
    }
}
