//! The filters, one file each, and the contract they all follow. The
//! order they run in is written once, in [`crate::dataplane::pipeline`].
//!
//! A filter is a zero-sized type implementing one or more of the phase
//! traits below; the pipeline calls it by type (`F::request_filter(..)`),
//! so every call is static and inlinable, nothing is boxed per request:
//!
//! - [`RequestFilter`]: reads the request head and the [`RequestCtx`],
//!   may write the context, and answers [`Flow::Continue`], an answer of
//!   its own ([`Flow::Answer`], e.g. a CORS preflight), an [`ErrorCode`],
//!   or [`Flow::Defer`] when it must wait on I/O (see [`Deferred`]).
//!   Synchronous: a filter that can decide now never waits.
//! - [`ResponseFilter`]: adds headers to the response, whoever made it
//!   (the integration or the gateway, errors included).
//! - [`Logging`]: sees the finished response (report counters today;
//!   metrics and access logs next).

pub mod api_key;
pub mod client_ip;
pub mod cors;
pub mod deployment;
pub mod ip_acl;
pub mod jwt;
pub mod limits;
pub mod method;
pub mod report;
pub mod request_id;
pub mod required_params;
pub mod resource_policy;
pub mod route;
pub mod telemetry;
pub mod throttle;

pub use crate::dataplane::ctx::{RequestCtx, ResponseCtx};
pub use crate::dataplane::error::ErrorCode;
use crate::dataplane::RespBody;
use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body_util::Full;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a request filter decided.
pub enum Flow {
    /// Go on with the next filter.
    Continue,
    /// The gateway answers now with this response (not an error).
    Answer(Response<Full<Bytes>>),
    /// Wait for I/O; the pipeline awaits it, lets the filter finish with
    /// its result, and only then runs the next filter.
    Defer(Deferred),
}

/// A phase-1 filter: runs before the request goes upstream.
pub trait RequestFilter {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode>;
}

/// A phase-3 filter: decorates every response.
pub trait ResponseFilter {
    fn response_filter(ctx: &mut ResponseCtx, resp: &mut Response<RespBody>);
}

/// Phase 4: after the response is built.
pub trait Logging {
    fn logging(ctx: &ResponseCtx, resp: &Response<RespBody>);
}

/// A request filter's step that waits on I/O (a shared counter, a remote
/// call): the I/O as a future, and what the filter does with its result.
///
/// Only this path allocates (one box); a step that can answer at once
/// returns [`Flow::Continue`] or an error instead. The worker is never
/// blocked: the pipeline moves the request into a task-side continuation,
/// awaits the I/O there, calls the `then` part with the context back, and
/// goes on with the next filter.
pub struct Deferred(Pin<Box<dyn Resume + Send>>);

impl Deferred {
    /// `io` resolves to the answer; `then` finishes the filter with it.
    pub fn new<F, R>(io: F, then: R) -> Deferred
    where
        F: Future + Send + 'static,
        R: FnOnce(&mut RequestCtx<'_>, F::Output) -> Result<Flow, ErrorCode> + Send + 'static,
    {
        Deferred(Box::pin(Step {
            io,
            then: Some(then),
        }))
    }

    /// Wait for the I/O and finish the filter.
    pub async fn resume(mut self, ctx: &mut RequestCtx<'_>) -> Result<Flow, ErrorCode> {
        std::future::poll_fn(|cx| self.0.as_mut().poll_resume(cx, ctx)).await
    }
}

/// A deferred step, type-erased: poll the I/O, and once it is ready,
/// finish with the context.
trait Resume {
    fn poll_resume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Poll<Result<Flow, ErrorCode>>;
}

pin_project_lite::pin_project! {
    struct Step<F, R> {
        #[pin]
        io: F,
        then: Option<R>,
    }
}

impl<F, R> Resume for Step<F, R>
where
    F: Future,
    R: FnOnce(&mut RequestCtx<'_>, F::Output) -> Result<Flow, ErrorCode>,
{
    fn poll_resume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        ctx: &mut RequestCtx<'_>,
    ) -> Poll<Result<Flow, ErrorCode>> {
        let this = self.project();
        let Some(then) = this.then.take() else {
            // Finished already: like a fused future, nothing more.
            return Poll::Pending;
        };
        match this.io.poll(cx) {
            Poll::Ready(out) => Poll::Ready(then(ctx, out)),
            Poll::Pending => {
                *this.then = Some(then);
                Poll::Pending
            }
        }
    }
}
