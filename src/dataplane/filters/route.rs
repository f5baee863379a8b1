//! Route: the host names the API (404 `ApiNotFound`), the first path
//! segment the stage (404 `StageNotFound`), the rest a resource of the
//! stage's deployment (see [`crate::dataplane::route`]). The path is routed
//! with its dot segments removed; path parameters may not smuggle
//! separators (400 `InvalidPathParameter`). A request with two Host headers,
//! or an HTTP/1.1 one with none, is a 400 `BadRequest`. A host that is no
//! invoke host may be a custom domain: routed by its base path mappings,
//! after which the request's path is the stage-form one (`/{stage}/...`).

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::dataplane::error::BadRequest;
use crate::dataplane::route::{check_params, normalize_path, route, route_domain};
use http::request::Parts;
use http::HeaderValue;
use std::borrow::Cow;

pub struct Route;

impl RequestFilter for Route {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let host = host_of(req)?;
        // Routed (and checked by the resource policy) with its dot segments
        // removed; the upstream path comes from the method's template.
        let path = normalize_path(req.uri.path());
        // The request keeps this snapshot's routes to its end, whatever is
        // published meanwhile.
        let snap = ctx.gw.snapshot().load_full();
        let host_str = host.to_str().map_err(|_| ErrorCode::ApiNotFound)?;
        let mut stage_path = None;
        let routed = match route(
            &snap,
            host_str,
            &ctx.gw.invoke_domain,
            &req.method,
            &path,
            &req.headers,
        ) {
            // Not an API's invoke host: perhaps a custom domain (looked up
            // only now, so invoke hosts pay nothing for it).
            Err(ErrorCode::ApiNotFound) => {
                let (routed, p) = route_domain(
                    &snap,
                    host_str,
                    &ctx.gw.invoke_domain,
                    &req.method,
                    &path,
                    &req.headers,
                )?;
                stage_path = Some(p);
                routed
            }
            r => r?,
        };
        if let Cow::Owned(p) = path {
            ctx.normalized_path = Some(p);
        }
        if stage_path.is_some() {
            ctx.normalized_path = stage_path;
        }
        ctx.host = Some(host);
        let routed = ctx.routed.insert(routed);
        check_params(routed, ctx.gw.keep_escaped_separators)?;
        Ok(Flow::Continue)
    }
}

/// The host the request is for: the authority of an absolute-form target
/// (HTTP/1, RFC 9112 §3.2.2: it wins over Host) or HTTP/2's :authority,
/// else the one Host header; 400 when there are two.
fn host_of(req: &Parts) -> Result<HeaderValue, ErrorCode> {
    if let Some(a) = req.uri.authority() {
        return HeaderValue::from_str(a.as_str()).map_err(|_| ErrorCode::ApiNotFound);
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => Ok(h.clone()),
        (Some(_), Some(_)) => Err(ErrorCode::BadRequest(BadRequest::DuplicateHost)),
        // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 names no API.
        (None, _) if req.version == http::Version::HTTP_11 => {
            Err(ErrorCode::BadRequest(BadRequest::MissingHost))
        }
        (None, _) => Err(ErrorCode::ApiNotFound),
    }
}
