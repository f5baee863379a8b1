//! The upstream phase: hand the request to the method's integration.
//!
//! The seam every integration plugs into: [`prepare`] turns the filtered
//! request and its context into an [`Outbound`] (synchronously: target
//! URL, header rewriting), [`send`] performs the exchange. [`http`] is
//! the HTTP integration; [`function`] the Cloud Function one (the Lambda
//! proxy event, a boxed future: it reads the whole body first);
//! [`privatelink`] the PrivateLink one (its own connections, each
//! opened with a PROXY v2 header naming the endpoint).

pub mod function;
pub mod http;
pub mod privatelink;

use super::ctx::RequestCtx;
use super::error::{BadGateway, ErrorCode};
use super::filters::request_id::X_REQUEST_ID;
use super::{DataPlane, RespBody};
use crate::dataplane::upstream::http::body::{BodyState, BoxError, ClientBody};
use crate::dataplane::upstream::http::pool::{PoolKey, SendError, UpstreamBody};
use crate::dataplane::upstream::http::strip_hop_by_hop;
use crate::dataplane::upstream::http::LimitedBody;
use crate::snapshot::{Integration, Target};
use ::http::header::{HeaderValue, HOST};
use ::http::request::Parts;
use ::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Either;
use std::future::Future;
use std::sync::Arc;

static X_FORWARDED_FOR: ::http::HeaderName = ::http::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: ::http::HeaderName = ::http::HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: ::http::HeaderName = ::http::HeaderName::from_static("x-forwarded-host");

/// A request made ready for its integration: what `send` needs and
/// nothing else (the filters' state is not carried across the await).
// The HTTP variant is the hot path and is built in place; the function
// variant is boxed, so the size difference costs the HTTP path nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outbound {
    Http {
        key: PoolKey,
        req: Request<UpstreamBody>,
        body: Option<Arc<BodyState>>,
    },
    /// A Cloud Function call (boxed: the HTTP variant's size is the
    /// enum's).
    Function(Box<function::FunctionCall>),
    /// A PrivateLink call (boxed, like the function's).
    PrivateLink(Box<privatelink::PrivateLinkCall>),
}

/// Build the upstream request (synchronous: target URL, header rewriting)
/// from the request the filters passed and their context.
pub fn prepare<B>(ctx: &RequestCtx<'_>, mut parts: Parts, body: B) -> Result<Outbound, ErrorCode>
where
    B: ::http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let routed = ctx.routed()?;
    match &routed.method()?.integration {
        Integration::Http(tpl) => {
            let target = outgoing(ctx, tpl, &mut parts)?;
            Ok(prepare_http(
                ctx,
                parts,
                ClientBody::new(body),
                target,
                tpl.host(),
            ))
        }
        Integration::Misconfigured => Err(ErrorCode::IntegrationMisconfigured),
        Integration::Scf { function, .. } => function::prepare(ctx, parts, body, function.as_ref()),
        Integration::PrivateLink { target, .. } => {
            let target = target.as_ref().ok_or(ErrorCode::PrivateLinkUnavailable)?;
            let upstream = outgoing(ctx, &target.tpl, &mut parts)?;
            match prepare_http(
                ctx,
                parts,
                ClientBody::new(body),
                upstream,
                target.tpl.host(),
            ) {
                Outbound::Http { req, body, .. } => Ok(Outbound::PrivateLink(Box::new(
                    privatelink::PrivateLinkCall {
                        target: target.clone(),
                        req,
                        body,
                    },
                ))),
                _ => Err(ErrorCode::IntegrationMisconfigured),
            }
        }
    }
}

/// What every integration that sends an HTTP request does first: the
/// target from the method's template and the matched parameters, the
/// stage's `hide_credentials`, the request id.
fn outgoing(
    ctx: &RequestCtx<'_>,
    tpl: &crate::snapshot::UrlTemplate,
    parts: &mut Parts,
) -> Result<Target, ErrorCode> {
    let routed = ctx.routed()?;
    let target = tpl
        .target(|n| routed.param(n), parts.uri.query())
        .ok_or(ErrorCode::BadGateway(BadGateway::EndpointUrl))?;
    if routed.stage.hide_credentials {
        hide_credentials(&mut parts.headers, routed.stage.jwt.is_some());
    }
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    Ok(target)
}

/// The stage's `hide_credentials`: the API key, and the bearer token
/// when the stage checked one, are not forwarded.
pub(super) fn hide_credentials(headers: &mut ::http::HeaderMap, jwt_checked: bool) {
    headers.remove(&super::filters::api_key::X_SCP_APIKEY);
    if jwt_checked {
        headers.remove(::http::header::AUTHORIZATION);
    }
}

fn prepare_http(
    ctx: &RequestCtx<'_>,
    mut parts: Parts,
    body: ClientBody,
    target: Target,
    upstream_host: &HeaderValue,
) -> Outbound {
    let gw = ctx.gw;
    let client_ip = ctx.client_ip;
    // The peer's prepared value stands for the client when they are the same.
    let client_value = (client_ip == ctx.peer.addr.ip()).then_some(&ctx.peer.ip_value);

    // The state records a body crossing the limit (hyper itself enforces a
    // declared Content-Length) and tells the pool when a body was sent in
    // full; bodiless requests need none.
    let state = (!http_body::Body::is_end_stream(&body)).then(|| Arc::new(BodyState::default()));
    let body = LimitedBody::new(body, gw.max_body_bytes, state.clone());

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // The upstream's Host, precomputed with the template.
    headers.insert(HOST, upstream_host.clone());
    let xff = match (
        headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()),
        client_value,
    ) {
        (Some(prev), _) => HeaderValue::from_str(&format!("{prev}, {client_ip}")).ok(),
        (None, Some(v)) => Some(v.clone()),
        (None, None) => HeaderValue::from_str(&client_ip.to_string()).ok(),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = &ctx.host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }

    parts.version = ::http::Version::HTTP_11;
    parts.uri = target.uri;
    Outbound::Http {
        req: Request::from_parts(parts, body),
        key: target.key,
        body: state,
    }
}

/// Send a prepared request and turn the upstream's answer (or failure)
/// into the client's response, in the client's HTTP version.
///
/// The request is handed to the pool now; the future is the pool's, a
/// timer and the mapping below, laid out flat (combinators, not an async
/// fn that would keep its arguments beside the futures it awaits). A
/// chunked request body is first read up to its first frame (a boxed
/// slow path), so broken framing is refused before anything is sent.
pub fn send(
    gw: &DataPlane,
    out: Outbound,
    client_version: ::http::Version,
) -> impl Future<Output = Result<Response<RespBody>, ErrorCode>> + Send + 'static {
    use futures_util::future::Either as F;
    type Boxed = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<RespBody>, ErrorCode>> + Send + 'static>,
    >;
    let (key, mut req, body) = match out {
        Outbound::Http { key, req, body } => (key, req, body),
        Outbound::Function(call) => {
            let boxed: Boxed = Box::pin(function::call(
                gw.client.clone(),
                gw.upstream_timeout,
                *call,
                client_version,
            ));
            return F::Right(boxed);
        }
        Outbound::PrivateLink(call) => {
            let boxed: Boxed = Box::pin(privatelink::call(
                gw.upstream_timeout,
                gw.client.body_idle_timeout(),
                *call,
                client_version,
            ));
            return F::Right(boxed);
        }
    };
    if body.is_some() && req.body().needs_priming() {
        let client = gw.client.clone();
        let timeout = gw.upstream_timeout;
        let boxed: Boxed = Box::pin(async move {
            match tokio::time::timeout(timeout, req.body_mut().prime()).await {
                Err(_) => return Err(ErrorCode::RequestTimeout),
                Ok(Err(_)) => {
                    return Err(if body.as_ref().is_some_and(|s| s.exceeded()) {
                        ErrorCode::PayloadTooLarge
                    } else {
                        ErrorCode::BadRequestBody
                    })
                }
                Ok(Ok(())) => {}
            }
            exchange(&client, timeout, key, req, body, client_version).await
        });
        return F::Right(boxed);
    }
    F::Left(exchange(
        &gw.client,
        gw.upstream_timeout,
        key,
        req,
        body,
        client_version,
    ))
}

fn exchange(
    client: &crate::dataplane::upstream::http::HttpClient,
    timeout: std::time::Duration,
    key: PoolKey,
    req: Request<UpstreamBody>,
    body: Option<Arc<BodyState>>,
    client_version: ::http::Version,
) -> impl Future<Output = Result<Response<RespBody>, ErrorCode>> + Send + 'static {
    Exchange {
        sending: client.send(key, req, body.clone()),
        timer: tokio::time::sleep(timeout),
        body,
        client_version,
    }
}

pin_project_lite::pin_project! {
    /// The pool's future under the upstream timeout, its answer made the
    /// client's in the poll that gets it (one future instead of
    /// `Timeout` + `Map`, whose states the response was moved through).
    struct Exchange<F> {
        #[pin]
        sending: F,
        #[pin]
        timer: tokio::time::Sleep,
        body: Option<Arc<BodyState>>,
        client_version: ::http::Version,
    }
}

impl<F> Future for Exchange<F>
where
    F: Future<Output = Result<Response<http::pool::PooledBody>, SendError>>,
{
    type Output = Result<Response<RespBody>, ErrorCode>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        // The answer first, as `tokio::time::timeout` does: one that came
        // with the deadline is taken.
        let res = match this.sending.poll(cx) {
            Poll::Ready(res) => res,
            Poll::Pending => {
                return match this.timer.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(ErrorCode::GatewayTimeout)),
                    Poll::Pending => Poll::Pending,
                }
            }
        };
        Poll::Ready(match res {
            Err(e) => {
                if let Some(s) = this.body {
                    if s.exceeded() {
                        return Poll::Ready(Err(ErrorCode::PayloadTooLarge));
                    }
                    // The client's body broke (bad chunked framing, a cut):
                    // the client's fault, not the integration's.
                    if s.client_error() {
                        return Poll::Ready(Err(ErrorCode::BadRequestBody));
                    }
                }
                tracing::debug!(error = %e, "upstream request failed");
                match e {
                    SendError::Connect(_) => Err(ErrorCode::BadGateway(BadGateway::Unreachable)),
                    SendError::Request(_) => Err(ErrorCode::BadGateway(BadGateway::NoAnswer)),
                }
            }
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = *this.client_version;
                Ok(Response::from_parts(parts, Either::Left(body)))
            }
        })
    }
}

pub fn body_len(h: &::http::HeaderMap) -> Option<u64> {
    h.get(::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
