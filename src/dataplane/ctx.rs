//! The context a request carries through the phases of
//! [`crate::dataplane::pipeline`].
//!
//! [`RequestCtx`] is what the request filters read and write: the data
//! plane and the connection (borrowed), what filters found out (client
//! address, host, route, the time), and what the later phases will need.
//! When the request filters are done it becomes a [`ResponseCtx`]: only
//! what the response filters and the logging phase read. That smaller
//! value is the one carried across the upstream exchange, so the boxed
//! future of a forwarded request holds neither the request nor the
//! filters' scratch state.

use super::filters::api_key::RateInfo;
use super::filters::request_id;
use super::route::Routed;
use super::{DataPlane, Peer};
use crate::snapshot::{ApiRoutes, RouteMethod, StageRoutes};
use crate::telemetry::trace::Trace;
use http::request::Parts;
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// One request's state during the request filters and the upstream phase.
pub struct RequestCtx<'a> {
    pub gw: &'a DataPlane,
    pub peer: &'a Peer,
    /// When the pipeline took the request.
    pub started: Instant,
    /// The client's sane `x-request-id`, else one made here.
    pub request_id: HeaderValue,
    /// The `Origin` the CORS response headers are decided on.
    pub origin: Option<HeaderValue>,
    /// The client's address (the peer until the client-address filter).
    pub client_ip: IpAddr,
    /// The host the request is for (route filter).
    pub host: Option<HeaderValue>,
    /// The path without dot segments, when it had some (route filter);
    /// see [`RequestCtx::path`].
    pub normalized_path: Option<String>,
    /// API, stage and method (route filter).
    pub routed: Option<Routed>,
    /// The matched (path, verb) in the stage's report counters (method
    /// filter).
    pub route_ix: Option<u32>,
    /// The X-RateLimit headers' values (API-key filter).
    pub rate: Option<RateInfo>,
    /// What the logging phase records (see [`Logged`]).
    pub logged: Logged,
    now: Option<i64>,
}

/// What only the logging phase (metrics, access log) reads, carried from
/// the request's arrival to its answer.
pub struct Logged {
    /// The W3C trace (the client's `traceparent`, else a new one).
    pub trace: Trace,
    pub method: http::Method,
    /// The request's declared `Content-Length`.
    pub bytes_in: Option<u64>,
    /// The id (never the value) of the API key the call was counted on.
    pub key_id: Option<Arc<str>>,
    /// The auth whose token the JWT filter accepted.
    pub auth_id: Option<Arc<str>>,
    /// The `x-apigw-error` code of an answer the gateway made.
    pub error: Option<&'static str>,
    /// What only the OTLP span needs, when export is on and the trace
    /// sampled (else `None`: nothing is built).
    pub span: Option<Box<SpanStart>>,
    /// Whether the access log or a span will name the request id.
    pub wants_request_id: bool,
    /// The id the answer carries (set by the request-id filter when
    /// `wants_request_id`: read here, not looked up in the answer).
    pub request_id: Option<HeaderValue>,
}

/// The request's URI (its path is `url.path`) and `Host`, kept for its
/// span (both cheap clones of the parsed request's bytes).
pub struct SpanStart {
    pub uri: http::Uri,
    pub host: Option<HeaderValue>,
}

impl Logged {
    fn new(req: &Parts) -> Self {
        let telemetry = crate::telemetry::global();
        let otlp = telemetry.and_then(|t| t.otlp.as_ref());
        let trace = Trace::from_headers(&req.headers, otlp.map(|o| o.sampler));
        let span = match otlp {
            Some(_) if trace.sampled() => Some(Box::new(SpanStart {
                uri: req.uri.clone(),
                host: req.headers.get(http::header::HOST).cloned(),
            })),
            _ => None,
        };
        let wants_request_id = span.is_some() || telemetry.is_some_and(|t| t.access_log.is_some());
        Logged {
            trace,
            span,
            wants_request_id,
            request_id: None,
            method: req.method.clone(),
            bytes_in: req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            key_id: None,
            auth_id: None,
            error: None,
        }
    }
}

impl<'a> RequestCtx<'a> {
    pub fn new(gw: &'a DataPlane, peer: &'a Peer, req: &Parts) -> Self {
        RequestCtx {
            gw,
            peer,
            started: Instant::now(),
            request_id: request_id::take_or_make(&req.headers),
            origin: req.headers.get(http::header::ORIGIN).cloned(),
            client_ip: peer.addr.ip(),
            host: None,
            normalized_path: None,
            routed: None,
            route_ix: None,
            rate: None,
            logged: Logged::new(req),
            now: None,
        }
    }

    /// The route, once the route filter found it. Filters after it can
    /// count on it; one called before would answer 404 `ApiNotFound`.
    pub fn routed(&self) -> Result<&Routed, super::error::ErrorCode> {
        self.routed
            .as_ref()
            .ok_or(super::error::ErrorCode::ApiNotFound)
    }

    /// The path the request is routed (and its policy checked) by: the
    /// request's own, without dot segments (on a custom domain, with its
    /// base path replaced by the mapped stage: `/{stage}/...`).
    pub fn path<'r>(&'r self, req: &'r Parts) -> &'r str {
        self.normalized_path
            .as_deref()
            .unwrap_or_else(|| req.uri.path())
    }

    /// The request's host as text (empty before the route filter).
    pub fn host_str(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }

    /// Unix seconds, read from the clock once per request (JWT and quota
    /// windows agree on it).
    pub fn now(&mut self) -> i64 {
        let clock = &self.gw.clock;
        *self.now.get_or_insert_with(|| clock.now())
    }

    /// What the response and logging phases need: the rest is dropped.
    pub fn into_response_ctx(self) -> ResponseCtx {
        let (api, stage, method) = match self.routed {
            Some(r) => (Some(r.api), Some(r.stage), r.method),
            None => (None, None, None),
        };
        let allow_origin = match (&stage, &self.origin) {
            (Some(stage), Some(origin)) => stage.cors.allow_origin(origin),
            _ => None,
        };
        ResponseCtx {
            started: self.started,
            request_id: Some(self.request_id),
            allow_origin,
            stage,
            rate: self.rate,
            route_ix: self.route_ix,
            integration_us: 0,
            api,
            method,
            client_ip: self.client_ip,
            logged: self.logged,
        }
    }

    /// The context without its borrows, to be carried into a deferred
    /// step's continuation (see `pipeline`).
    pub(crate) fn detach(self) -> Detached {
        Detached {
            started: self.started,
            request_id: self.request_id,
            origin: self.origin,
            client_ip: self.client_ip,
            host: self.host,
            normalized_path: self.normalized_path,
            routed: self.routed,
            route_ix: self.route_ix,
            rate: self.rate,
            logged: self.logged,
            now: self.now,
        }
    }
}

/// A [`RequestCtx`] without the data plane and peer it borrows.
pub(crate) struct Detached {
    started: Instant,
    request_id: HeaderValue,
    origin: Option<HeaderValue>,
    client_ip: IpAddr,
    host: Option<HeaderValue>,
    normalized_path: Option<String>,
    routed: Option<Routed>,
    route_ix: Option<u32>,
    rate: Option<RateInfo>,
    logged: Logged,
    now: Option<i64>,
}

impl Detached {
    pub(crate) fn attach<'b>(self, gw: &'b DataPlane, peer: &'b Peer) -> RequestCtx<'b> {
        RequestCtx {
            gw,
            peer,
            started: self.started,
            request_id: self.request_id,
            origin: self.origin,
            client_ip: self.client_ip,
            host: self.host,
            normalized_path: self.normalized_path,
            routed: self.routed,
            route_ix: self.route_ix,
            rate: self.rate,
            logged: self.logged,
            now: self.now,
        }
    }
}

/// What the response filters and the logging phase read; carried across
/// the upstream exchange.
pub struct ResponseCtx {
    pub started: Instant,
    /// Moved into the response by the request-id response filter (the
    /// logging phase reads the copy it keeps in `logged`).
    pub request_id: Option<HeaderValue>,
    /// The `Access-Control-Allow-Origin` value (the stage's CORS allowed
    /// the request's `Origin`), decided before the upstream exchange so
    /// that nothing of the request is carried across it.
    pub allow_origin: Option<HeaderValue>,
    /// The routed stage: its CORS and report counters.
    pub stage: Option<Arc<StageRoutes>>,
    pub rate: Option<RateInfo>,
    pub route_ix: Option<u32>,
    /// Time to the upstream's response head, in µs (0: gateway answered).
    pub integration_us: u64,
    /// The routed API and method (resource path, verb), if any.
    pub api: Option<Arc<ApiRoutes>>,
    pub method: Option<Arc<RouteMethod>>,
    pub client_ip: IpAddr,
    pub logged: Logged,
}
