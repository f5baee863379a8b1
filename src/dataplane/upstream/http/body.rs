//! A request body that stops with an error once more than `limit` bytes
//! have passed, and records that it did so the caller can answer 413; that
//! the client's body itself failed (bad chunked framing, a cut), so the
//! caller can answer 400; and when it was sent in full, so its connection
//! can be reused.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        state: Option<Arc<BodyState>>,
        // A frame read ahead by `prime`, given out first.
        first: Option<Frame<Bytes>>,
    }
}

/// What became of a request body: over the limit, or sent in full.
#[derive(Default, Debug)]
pub struct BodyState {
    exceeded: AtomicBool,
    finished: AtomicBool,
    client_error: AtomicBool,
}

impl BodyState {
    /// The client's body failed to decode or was cut: the client's fault.
    pub fn client_error(&self) -> bool {
        self.client_error.load(Ordering::Relaxed)
    }
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the configured limit")
    }
}
impl std::error::Error for BodyTooLarge {}

impl<B> LimitedBody<B> {
    /// `state` records crossing the limit and reaching the end; pass
    /// `None` for a body that is already at its end.
    pub fn new(inner: B, limit: u64, state: Option<Arc<BodyState>>) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            state,
            first: None,
        }
    }

    /// A body whose length is not declared (chunked) is read up to its
    /// first frame before anything goes upstream, so that a body whose
    /// framing is broken from the start is refused with nothing forwarded.
    pub fn needs_priming(&self) -> bool
    where
        B: Body,
    {
        self.first.is_none()
            && !self.inner.is_end_stream()
            && self.inner.size_hint().exact().is_none()
    }
}

impl<B> LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Read the first frame now (see `needs_priming`); the error is the
    /// body's own (also recorded in the state).
    pub async fn prime(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.first = Some(frame);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        if let Some(s) = this.state {
                            s.exceeded.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    *this.remaining -= n;
                }
                if let Some(s) = this.state {
                    if this.inner.is_end_stream() {
                        s.finished.store(true, Ordering::Release);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(s) = this.state {
                    s.client_error.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(s) = this.state {
                    s.finished.store(true, Ordering::Release);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.inner.size_hint(),
            Some(f) => {
                let n = f.data_ref().map_or(0, |d| d.len() as u64);
                let inner = self.inner.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(inner.lower().saturating_add(n));
                if let Some(u) = inner.upper() {
                    h.set_upper(u.saturating_add(n));
                }
                h
            }
        }
    }
}

/// Errors of request bodies, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body as the upstream pool takes it: hyper's own
/// (what every connection gives; not boxed), or any other body, boxed
/// (in-process callers of the pipeline: tests, benches).
pub enum ClientBody {
    Incoming(hyper::body::Incoming),
    Other(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl ClientBody {
    /// Hyper's body kept as it is; any other boxed. (`B` is known where
    /// this is compiled, so the test is a constant, not a run-time check.)
    pub fn new<B>(body: B) -> ClientBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        let mut slot = Some(body);
        if let Some(incoming) = (&mut slot as &mut dyn std::any::Any)
            .downcast_mut::<Option<hyper::body::Incoming>>()
            .and_then(Option::take)
        {
            return ClientBody::Incoming(incoming);
        }
        match slot {
            Some(body) => ClientBody::Other(body.map_err(Into::into).boxed_unsync()),
            None => ClientBody::Other(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Incoming(b) => b.is_end_stream(),
            ClientBody::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Incoming(b) => b.size_hint(),
            ClientBody::Other(b) => b.size_hint(),
        }
    }
}
