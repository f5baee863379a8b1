//! Required request parameters (AWS request validation): the query
//! strings and headers the method marks required (`true`) must be present
//! and not blank, else 400 `MissingRequiredParameter` naming the first
//! one missing (query strings first, then headers, each by name). Runs
//! last, after the caller was authenticated and counted, as AWS validates
//! after authorization. The names are compiled into the route; a method
//! without required parameters costs two empty-slice checks.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::dataplane::error::ParamKind;
use http::request::Parts;

pub struct RequiredParams;

impl RequestFilter for RequiredParams {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let m = ctx.routed()?.method()?;
        for name in m.required_query.iter() {
            if !query_has(req.uri.query().unwrap_or(""), name) {
                return Err(ErrorCode::MissingRequiredParameter {
                    kind: ParamKind::QueryString,
                    name: name.clone(),
                });
            }
        }
        for (h, name) in m.required_headers.iter() {
            let present = req
                .headers
                .get_all(h)
                .iter()
                .any(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
            if !present {
                return Err(ErrorCode::MissingRequiredParameter {
                    kind: ParamKind::Header,
                    name: name.clone(),
                });
            }
        }
        Ok(Flow::Continue)
    }
}

/// Whether the raw query string has `name` with a non-empty value (the
/// key compared as sent, or percent-decoded when it holds escapes).
pub fn query_has(query: &str, name: &str) -> bool {
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if v.is_empty() {
            return false;
        }
        k == name || (k.contains('%') && percent_encoding::percent_decode_str(k).eq(name.bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::query_has;

    #[test]
    fn query_presence() {
        assert!(query_has("a=1&page=2", "page"));
        assert!(query_has("pag%65=2", "page"));
        assert!(!query_has("page=", "page"));
        assert!(!query_has("page", "page"));
        assert!(!query_has("pages=1", "page"));
        assert!(!query_has("", "page"));
        assert!(query_has("page=&page=3", "page"));
    }
}
