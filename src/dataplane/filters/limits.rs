//! Request limits checked before anything else: header block size (431)
//! and declared body size (413). Bodies of unknown length are cut while
//! streaming (see `upstream::body`).

use crate::dataplane::error::GwError;
use crate::dataplane::upstream::body_len;
use http::Request;

pub fn check<B>(
    req: &Request<B>,
    max_header_bytes: usize,
    max_body_bytes: u64,
) -> Result<(), GwError> {
    // Size of the header block as sent: "name: value\r\n" per field.
    let mut size = req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 16;
    for (k, v) in req.headers() {
        size += k.as_str().len() + v.len() + 4;
        if size > max_header_bytes {
            return Err(GwError::headers_too_large());
        }
    }
    if let Some(n) = body_len(req.headers()) {
        if n > max_body_bytes {
            return Err(GwError::payload_too_large());
        }
    } else if req.headers().contains_key(http::header::CONTENT_LENGTH) {
        return Err(GwError::bad_request("Content-Length is not a number"));
    }
    Ok(())
}
