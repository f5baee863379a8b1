//! The data-plane request pipeline. Each stage is its own module; the
//! order is the one in `run` below and nowhere else:
//!
//! limits → route → IP access control → (CORS preflight) → (resource
//! policy) → (JWT) → (API key / quota) → forward → (CORS headers)
//!
//! Stages in parentheses are seams for the filters of later issues.

pub mod error;
pub mod forward;
pub mod ip_acl;
pub mod limits;
pub mod request_id;
pub mod route;

use crate::snapshot::Snapshot;
use crate::upstream::http::HttpClient;
use arc_swap::ArcSwap;
use bytes::Bytes;
use error::GwError;
use http::{HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub type RespBody = Either<Incoming, Full<Bytes>>;

/// Everything the data plane needs, shared by all connections.
pub struct DataPlane {
    pub snapshot: Arc<crate::snapshot::Published>,
    pub client: HttpClient,
    pub invoke_domain: String,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub upstream_timeout: Duration,
}

impl DataPlane {
    fn snapshot(&self) -> &ArcSwap<Snapshot> {
        self.snapshot.current()
    }
}

/// Serve one request; never fails: errors become JSON answers.
pub async fn handle(
    gw: &DataPlane,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<RespBody> {
    let request_id = request_id::take_or_make(req.headers());
    let mut resp = match run(gw, req, peer, &request_id).await {
        Ok(r) => r,
        Err(e) => e.into_response().map(Either::Right),
    };
    resp.headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), request_id);
    resp
}

async fn run(
    gw: &DataPlane,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &HeaderValue,
) -> Result<Response<RespBody>, GwError> {
    limits::check(&req, gw.max_header_bytes, gw.max_body_bytes)?;
    let client_ip = peer.ip();
    let host = host_of(&req).ok_or_else(GwError::api_not_found)?;

    // The request keeps this snapshot to its end, whatever is published meanwhile.
    let snap = gw.snapshot().load_full();
    let host_str = host.to_str().map_err(|_| GwError::api_not_found())?;
    let routed = route::route(
        &snap,
        host_str,
        &gw.invoke_domain,
        req.method(),
        req.uri().path(),
    )?;
    ip_acl::check(&routed, client_ip)?;
    // CORS preflight, resource policy, JWT and API key/quota go here.
    req.headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), request_id.clone());
    forward::forward(gw, &routed, req, client_ip, &host).await
    // CORS response headers go here.
}

/// The Host header, or the :authority of an HTTP/2 request.
fn host_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(http::header::HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}
