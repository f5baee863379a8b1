//! The data-plane request pipeline. Each filter is its own module
//! (`super::filters`); the order is the one in `run` below and nowhere
//! else:
//!
//! limits → client address → route → IP access control → CORS preflight
//! → 405 → resource policy → JWT → stage throttle → API key / quota →
//! forward →
//! CORS response headers (also on gateway errors)
//!
//! Stages in parentheses are seams for the filters of later issues.

use super::error::GwError;
use super::filters::{
    api_key, client_ip, ip_acl, jwt, limits, request_id, resource_policy, throttle,
};
use super::{route, upstream as forward, DataPlane, Peer, RespBody};
use crate::snapshot::StageRoutes;
use http::{HeaderValue, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use std::sync::Arc;

/// A request's answer: ready now (the gateway answered), or the boxed
/// upstream exchange.
pub type Handled = futures_util::future::Either<
    std::future::Ready<Response<RespBody>>,
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<RespBody>> + Send>>,
>;

/// Serve one request; never fails: errors become JSON answers.
///
/// The filters run now, synchronously. Only a request that goes upstream
/// gets a future, and that future holds what the upstream exchange and the
/// response's decoration need, not the request or the filters' state:
/// it is allocated and written once per request, and at hundreds of
/// connections in flight every cache line of it is a miss.
pub fn handle(gw: &DataPlane, req: Request<Incoming>, peer: &Peer) -> Handled {
    use futures_util::future::Either as F;
    use futures_util::FutureExt;
    let started = std::time::Instant::now();
    let request_id = request_id::take_or_make(req.headers());
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    let mut ctx = Ctx::default();
    let client_version = req.version();
    let step = run(gw, req, peer, &request_id, &mut ctx);
    let post = Post {
        started,
        request_id,
        origin,
        ctx,
    };
    match step {
        Ok(Step::Answer(r)) => F::Left(std::future::ready(post.finish(r))),
        Err(e) => F::Left(std::future::ready(
            post.finish(e.into_response().map(Either::Right)),
        )),
        Ok(Step::Forward(out)) => {
            let upstream_start = std::time::Instant::now();
            let exchange = forward::send(gw, out, client_version);
            F::Right(Box::pin(exchange.map(move |r| {
                let mut post = post;
                post.ctx.integration_us = upstream_start.elapsed().as_micros() as u64;
                post.finish(r.unwrap_or_else(|e| e.into_response().map(Either::Right)))
            })))
        }
    }
}

/// What the response's decoration needs from the request and its filters.
struct Post {
    started: std::time::Instant,
    request_id: HeaderValue,
    origin: Option<HeaderValue>,
    ctx: Ctx,
}

impl Post {
    /// Rate-limit, CORS and request-id headers, and the report counters.
    fn finish(self, mut resp: Response<RespBody>) -> Response<RespBody> {
        let Post {
            started,
            request_id,
            origin,
            ctx,
        } = self;
        // Room for what is added below (rate limit, CORS, request id) at once,
        // instead of the map growing more than once.
        resp.headers_mut().reserve(10);
        if let Some(info) = &ctx.rate {
            info.apply(resp.headers_mut());
        }
        // Report counters: a few relaxed atomic adds, no lock.
        if let Some(stats) = ctx.stage.as_ref().and_then(|s| s.stats.as_ref()) {
            let total = started.elapsed().as_micros() as u64;
            stats.record(
                ctx.route_ix,
                resp.status().as_u16(),
                total,
                ctx.integration_us,
            );
        }
        // CORS response headers, on backend answers and gateway errors alike.
        if let (Some(stage), Some(origin)) = (&ctx.stage, &origin) {
            stage.cors.decorate(origin, resp.headers_mut());
        }
        resp.headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), request_id);
        resp
    }
}

/// What the filters decided: the gateway answers, or the request goes on.
pub enum Step {
    Answer(Response<RespBody>),
    Forward(forward::Outbound),
}

/// The filters, in order, ending with the request made ready to forward.
fn run(
    gw: &DataPlane,
    mut req: Request<Incoming>,
    peer: &Peer,
    request_id: &HeaderValue,
    ctx: &mut Ctx,
) -> Result<Step, GwError> {
    limits::check(&req, gw.max_header_bytes, gw.max_body_bytes)?;
    let client_ip = client_ip::resolve(peer.addr.ip(), req.headers(), &gw.trusted_proxies);
    let host = host_of(&req)?;
    // Routed (and checked by the resource policy) with its dot segments
    // removed; the upstream path comes from the method's template.
    let path = route::normalize_path(req.uri().path());

    // The request keeps this snapshot to its end, whatever is published meanwhile.
    let snap = gw.snapshot().load_full();
    let host_str = host.to_str().map_err(|_| GwError::api_not_found())?;
    let routed = route::route(&snap, host_str, &gw.invoke_domain, req.method(), &path)?;
    ctx.stage = Some(routed.stage.clone());
    route::check_params(&routed, gw.keep_escaped_separators)?;

    ip_acl::check(&routed, client_ip)?;
    if routed.stage.cors.is_preflight(&req) {
        return Ok(Step::Answer(
            routed
                .stage
                .cors
                .preflight(req.headers())?
                .map(Either::Right),
        ));
    }
    ctx.route_ix = routed.method()?.route_ix;
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    resource_policy::check(
        gw,
        &routed,
        req.method(),
        host_str,
        pq,
        &path,
        req.headers(),
        client_ip,
    )?;
    let now = gw.clock.now();
    jwt::check(&routed, req.headers(), now)?;
    throttle::check(&routed)?;
    api_key::check(
        &routed,
        req.headers(),
        now,
        gw.quota.as_ref(),
        &mut ctx.rate,
    )?;
    req.headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), request_id.clone());
    // The peer's prepared value stands for the client when they are the same.
    let client_value = (client_ip == peer.addr.ip()).then_some(&peer.ip_value);
    forward::prepare(gw, &routed, req, client_ip, client_value, &host).map(Step::Forward)
}

/// What later steps of `handle` need from `run`, error or not.
#[derive(Default)]
pub struct Ctx {
    pub stage: Option<Arc<StageRoutes>>,
    pub rate: Option<api_key::RateInfo>,
    /// The matched (path, verb) in the stage's report counters.
    pub route_ix: Option<u32>,
    /// Time to the upstream's response head, in µs (0: gateway answered).
    pub integration_us: u64,
}

/// The host the request is for: the authority of an absolute-form target
/// (HTTP/1, RFC 9112 §3.2.2: it wins over Host) or HTTP/2's :authority,
/// else the one Host header; 400 when there are two.
fn host_of<B>(req: &Request<B>) -> Result<HeaderValue, GwError> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).map_err(|_| GwError::api_not_found());
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => Ok(h.clone()),
        (Some(_), Some(_)) => Err(GwError::duplicate_host()),
        // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 names no API.
        (None, _) if req.version() == http::Version::HTTP_11 => Err(GwError::missing_host()),
        (None, _) => Err(GwError::api_not_found()),
    }
}
