//! A request body that stops with an error once more than `limit` bytes
//! have passed, and records that it did so the caller can answer 413, and
//! when it was sent in full, so its connection can be reused.

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
    }
}

/// What became of a request body: over the limit, or sent in full.
#[derive(Default, Debug)]
pub struct BodyState {
    exceeded: AtomicBool,
    finished: AtomicBool,
}

impl BodyState {
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
