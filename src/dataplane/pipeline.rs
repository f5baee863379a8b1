//! The data-plane request pipeline: one request's phases, in the one
//! function `run`, and nowhere else.
//!
//! 1. **Request filters**, each a type of `super::filters` called as
//!    `F::request_filter(&mut ctx, &parts)`, in this order:
//!    limits → client address → route → IP access control → CORS
//!    preflight → method (404/405) → resource policy → JWT → stage
//!    throttle → API key / quota → required parameters.
//!    A filter answers: go on, an answer of its own (the CORS preflight), an
//!    [`ErrorCode`], or a deferred step (I/O to wait for: see below).
//! 2. **Upstream**: the request is made ready for the method's integration
//!    (`upstream::prepare`) and sent (`upstream::send`).
//! 3. **Response filters**, on every answer (the integration's, the
//!    gateway's own, errors): rate-limit headers → CORS → deployment id →
//!    request id.
//! 4. **Logging**, once the response is built: report counters, then
//!    metrics and the access log (`filters::telemetry`).
//!
//! The context ([`RequestCtx`]) lives on the worker's stack through phases
//! 1 and 2; what phases 3 and 4 need ([`ResponseCtx`]) is all that is
//! carried across the upstream exchange.
//!
//! Cost: everything up to the upstream exchange runs synchronously in the
//! call to [`handle`]. A request the gateway answers allocates no future
//! (a ready one is returned); one that goes upstream allocates exactly one,
//! the exchange. A filter that must wait on I/O (a shared quota counter)
//! returns [`Flow::Defer`]: then, and only then, the request and its
//! context move into a boxed continuation that awaits the I/O, lets the
//! filter finish, and runs the remaining phases from the next filter on.
//! No worker ever blocks.

use super::ctx::{RequestCtx, ResponseCtx};
use super::error::ErrorCode;
use super::filters::api_key::ApiKey;
use super::filters::client_ip::ClientIp;
use super::filters::cors::Cors;
use super::filters::deployment::Deployment;
use super::filters::ip_acl::IpAcl;
use super::filters::jwt::Jwt;
use super::filters::limits::Limits;
use super::filters::method::Method;
use super::filters::report::Report;
use super::filters::request_id::RequestId;
use super::filters::required_params::RequiredParams;
use super::filters::resource_policy::ResourcePolicy;
use super::filters::route::Route;
use super::filters::telemetry::Telemetry;
use super::filters::throttle::Throttle;
use super::filters::{Deferred, Flow, Logging, RequestFilter, ResponseFilter};
use super::upstream::http::body::BoxError;
use super::{upstream, DataPlane, Peer, RespBody};
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Either;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;

/// A request's answer: ready now (the gateway answered), or boxed (the
/// upstream exchange; a deferred filter step).
pub type Handled = futures_util::future::Either<
    std::future::Ready<Response<RespBody>>,
    Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>,
>;

/// Serve one request; never fails: errors become JSON answers.
///
/// Any request body will do (hyper's `Incoming` from a connection; `Full`
/// or `Empty` in-process): a body other than hyper's is boxed once more on
/// its way upstream.
pub fn handle<B>(gw: &Arc<DataPlane>, req: Request<B>, peer: &Arc<Peer>) -> Handled
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let ctx = RequestCtx::new(gw, peer, &parts);
    run(gw, peer, ctx, parts, body, Start::New)
}

/// Why the request filters stopped before the end.
enum Stop {
    Error(ErrorCode),
    Answer(Response<http_body_util::Full<Bytes>>),
    /// Wait for this, for the filter at this place.
    Defer(Deferred, usize),
}

/// Where `run` starts: a new request, or after the filter at a place
/// finished a deferred step with this flow.
enum Start {
    New,
    Resumed(usize, Result<Flow, ErrorCode>),
}

/// A request filter's flow, for the filter at `place`.
#[inline(always)]
fn go_on(place: usize, flow: Result<Flow, ErrorCode>) -> ControlFlow<Stop> {
    match flow {
        Ok(Flow::Continue) => ControlFlow::Continue(()),
        Ok(Flow::Answer(r)) => ControlFlow::Break(Stop::Answer(r)),
        Ok(Flow::Defer(d)) => ControlFlow::Break(Stop::Defer(d, place)),
        Err(e) => ControlFlow::Break(Stop::Error(e)),
    }
}

/// The request filter at `place` in the order, unless resuming after it.
#[inline(always)]
fn request_filter<F: RequestFilter>(
    place: usize,
    from: usize,
    ctx: &mut RequestCtx<'_>,
    req: &Parts,
) -> ControlFlow<Stop> {
    if place < from {
        return ControlFlow::Continue(());
    }
    go_on(place, F::request_filter(ctx, req))
}

/// The phases, in order: of a new request, or of one whose filter waited
/// on I/O, from that filter's result on.
fn run<B>(
    gw: &Arc<DataPlane>,
    peer: &Arc<Peer>,
    mut ctx: RequestCtx<'_>,
    parts: Parts,
    body: B,
    start: Start,
) -> Handled
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use futures_util::future::Either as F;

    // 3. Response filters, then 4. logging, on every answer: `respond`
    // (here for the gateway's own answers, in `Upstream` for the
    // integration's).
    let answer = |ctx: RequestCtx<'_>, resp: Response<RespBody>| {
        F::Left(std::future::ready(respond(
            &mut ctx.into_response_ctx(),
            resp,
        )))
    };

    // 1. Request filters.
    let filtered = (|| {
        let from = match start {
            Start::New => 0,
            Start::Resumed(place, flow) => {
                go_on(place, flow)?;
                place + 1
            }
        };
        request_filter::<Limits>(0, from, &mut ctx, &parts)?;
        request_filter::<ClientIp>(1, from, &mut ctx, &parts)?;
        request_filter::<Route>(2, from, &mut ctx, &parts)?;
        request_filter::<IpAcl>(3, from, &mut ctx, &parts)?;
        request_filter::<Cors>(4, from, &mut ctx, &parts)?;
        request_filter::<Method>(5, from, &mut ctx, &parts)?;
        request_filter::<ResourcePolicy>(6, from, &mut ctx, &parts)?;
        request_filter::<Jwt>(7, from, &mut ctx, &parts)?;
        request_filter::<Throttle>(8, from, &mut ctx, &parts)?;
        request_filter::<ApiKey>(9, from, &mut ctx, &parts)?;
        request_filter::<RequiredParams>(10, from, &mut ctx, &parts)
    })();
    match filtered {
        ControlFlow::Continue(()) => {}
        ControlFlow::Break(Stop::Error(e)) => {
            ctx.logged.error = Some(e.as_str());
            return answer(ctx, e.into_response().map(Either::Right));
        }
        ControlFlow::Break(Stop::Answer(r)) => return answer(ctx, r.map(Either::Right)),
        ControlFlow::Break(Stop::Defer(step, place)) => {
            return F::Right(deferred(gw, peer, ctx, parts, body, step, place))
        }
    }

    // 2. Upstream.
    let client_version = parts.version;
    // The integration continues the request's trace, its parent being
    // the gateway's span.
    let mut parts = parts;
    parts.headers.insert(
        crate::telemetry::trace::TRACEPARENT.clone(),
        ctx.logged.trace.header(),
    );
    let out = match upstream::prepare(&ctx, parts, body) {
        Ok(out) => out,
        Err(e) => {
            ctx.logged.error = Some(e.as_str());
            return answer(ctx, e.into_response().map(Either::Right));
        }
    };
    let carried = ctx.into_response_ctx();
    let upstream_start = std::time::Instant::now();
    F::Right(Box::pin(Upstream {
        exchange: upstream::send(gw, out, client_version),
        carried,
        upstream_start,
    }))
}

/// 3. Response filters, then 4. logging: on every answer.
fn respond(ctx: &mut ResponseCtx, mut resp: Response<RespBody>) -> Response<RespBody> {
    // Room for what is added (rate limit, CORS, request id) at once,
    // instead of the map growing more than once.
    resp.headers_mut().reserve(10);
    ApiKey::response_filter(ctx, &mut resp);
    Cors::response_filter(ctx, &mut resp);
    Deployment::response_filter(ctx, &mut resp);
    RequestId::response_filter(ctx, &mut resp);
    Report::logging(ctx, &resp);
    Telemetry::logging(ctx, &resp);
    resp
}

pin_project_lite::pin_project! {
    /// The upstream exchange, then the response phases on its answer,
    /// with the request's context kept in place (a `map` closure would be
    /// moved out of the future's state, context and all, to be called).
    struct Upstream<X> {
        #[pin]
        exchange: X,
        carried: ResponseCtx,
        upstream_start: std::time::Instant,
    }
}

impl<X> Future for Upstream<X>
where
    X: Future<Output = Result<Response<RespBody>, ErrorCode>>,
{
    type Output = Response<RespBody>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let r = std::task::ready!(this.exchange.poll(cx));
        let carried = this.carried;
        carried.integration_us = this.upstream_start.elapsed().as_micros() as u64;
        let resp = r.unwrap_or_else(|e| {
            carried.logged.error = Some(e.as_str());
            e.into_response().map(Either::Right)
        });
        std::task::Poll::Ready(respond(carried, resp))
    }
}

/// The request whose filter at `place` waits on I/O moves into a
/// continuation (boxed: the one allocation of this path besides the step
/// itself) that waits, lets the filter finish, and runs the phases on.
#[allow(clippy::too_many_arguments)]
fn deferred<B>(
    gw: &Arc<DataPlane>,
    peer: &Arc<Peer>,
    ctx: RequestCtx<'_>,
    parts: Parts,
    body: B,
    step: Deferred,
    place: usize,
) -> Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (gw, peer) = (gw.clone(), peer.clone());
    let detached = ctx.detach();
    Box::pin(async move {
        let mut ctx = detached.attach(&gw, &peer);
        let flow = step.resume(&mut ctx).await;
        run(&gw, &peer, ctx, parts, body, Start::Resumed(place, flow)).await
    })
}
