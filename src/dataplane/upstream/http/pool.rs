//! Keep-alive connections to HTTP(S) upstreams, pooled per worker thread.
//!
//! Each connection is a `hyper::client::conn::http1` connection whose
//! driver runs as its own task; the pool keeps their `SendRequest` halves.
//! Compared with hyper-util's legacy client this takes no lock (the idle
//! lists are thread-local), boxes nothing per request but on its slow
//! path (connect, wait, retry), races no
//! connect against the checkout and spawns no task per request to wait
//! for the connection to become idle: a connection goes back to the idle
//! list when the response body ends (and the request body was sent in
//! full), from the task that read it.
//!
//! Idle connections are reused most-recent-first, at most
//! `max_idle_per_host` per host and thread, and dropped when they have
//! been idle longer than `idle_timeout` or the upstream closed them.

use super::body::{BodyState, LimitedBody};
pub use crate::snapshot::template::{host_header, PoolKey};
use bytes::Bytes;

use crate::telemetry::metrics::POOL;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::Service;

pub type UpstreamBody = LimitedBody<super::body::ClientBody>;
type Sender = SendRequest<UpstreamBody>;

/// The idle map hashes a `PoolKey` that is its own hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdleMap = HashMap<PoolKey, Vec<Idle>, std::hash::BuildHasherDefault<KeyHasher>>;

struct Idle {
    tx: Sender,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<IdleMap> = RefCell::new(IdleMap::default());
}

/// Why a request did not get a response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, DNS, TLS, connect timeout).
    Connect(String),
    /// The connection failed while the request was sent or the response read.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Request(e) => write!(f, "request: {e}"),
        }
    }
}

type TrySendError = hyper::client::conn::TrySendError<Request<UpstreamBody>>;
type SlowSend = Pin<Box<dyn Future<Output = Result<Response<PooledBody>, SendError>> + Send>>;

/// What the fast path keeps beside hyper's response future: the
/// connection goes back to the pool with the response body.
struct Sent {
    pool: Pool,
    key: PoolKey,
    tx: Sender,
    body_state: Option<Arc<BodyState>>,
}

pin_project_lite::pin_project! {
    /// [`Pool::send`]'s future, written out by hand: the response is
    /// wrapped and returned from the one poll that gets it (with
    /// `then` + `Either` + `ready` combinators it was moved through three
    /// more futures' states on its way out).
    #[project = PoolSendProj]
    pub enum PoolSend<F> {
        /// Handed to an idle connection; `rest` is taken when it answers.
        Fast { #[pin] sent: F, rest: Option<Sent> },
        /// Connecting, waiting for readiness or retrying (boxed).
        Slow { fut: SlowSend },
    }
}

impl<F> Future for PoolSend<F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    type Output = Result<Response<PooledBody>, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let slow = match self.as_mut().project() {
                PoolSendProj::Slow { fut } => return fut.as_mut().poll(cx),
                PoolSendProj::Fast { sent, rest } => {
                    let res = std::task::ready!(sent.poll(cx));
                    let Some(Sent {
                        pool,
                        key,
                        tx,
                        body_state,
                    }) = rest.take()
                    else {
                        // Polled again after it answered: never by hyper.
                        return Poll::Pending;
                    };
                    match res {
                        Ok(resp) => return Poll::Ready(Ok(pool.wrap(resp, key, tx, body_state))),
                        Err(mut e) => match e.take_message() {
                            // Not taken (the connection was busy or
                            // closing): the slow path, polled on the loop's next pass.
                            Some(req) => Box::pin(pool.send_slow(key, req, body_state)),
                            None => return Poll::Ready(Err(SendError::Request(e.into_error()))),
                        },
                    }
                }
            };
            self.set(PoolSend::Slow { fut: slow });
        }
    }
}

/// The pool. Cloning it is one reference-count increment (a request in
/// flight holds a clone for the rare retry path).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    body_idle_timeout: Duration,
    builder: http1::Builder,
}

impl Pool {
    /// `idle_timeout`: how long an idle connection is kept;
    /// `body_idle_timeout`: how long a response body may send nothing.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        max_idle_per_host: usize,
        idle_timeout: Duration,
        body_idle_timeout: Duration,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                connector,
                max_idle_per_host,
                idle_timeout,
                body_idle_timeout,
                builder: http1::Builder::new(),
            }),
        }
    }

    /// Send `req` (origin-form URI, Host set by the caller) to `key`'s
    /// upstream on an idle connection, or a new one when none is idle.
    ///
    /// The common case happens here, synchronously: an idle connection is
    /// checked out and the request handed to it before the future exists,
    /// so the future holds hyper's response future and the connection, not
    /// the request as well (a request's future is copied into fresh memory
    /// once per request; every byte of it is a cache line written cold when
    /// hundreds of connections are in flight). Connecting, waiting for a
    /// connection to become ready, and retrying a request a closing
    /// connection refused go to a boxed slow path.
    pub fn send(
        &self,
        key: PoolKey,
        req: Request<UpstreamBody>,
        body_state: Option<Arc<BodyState>>,
    ) -> PoolSend<impl Future<Output = Result<Response<Incoming>, TrySendError>> + Send + 'static>
    {
        let Some(mut tx) = self.checkout(&key) else {
            return PoolSend::Slow {
                fut: Box::pin(self.clone().send_slow(key, req, body_state)),
            };
        };
        let sent = tx.try_send_request(req);
        PoolSend::Fast {
            sent,
            rest: Some(Sent {
                pool: self.clone(),
                key,
                tx,
                body_state,
            }),
        }
    }

    /// Idle connections (waiting until each is ready), then a new one.
    async fn send_slow(
        self,
        key: PoolKey,
        mut req: Request<UpstreamBody>,
        body_state: Option<Arc<BodyState>>,
    ) -> Result<Response<PooledBody>, SendError> {
        // A request that never reached a connection comes back.
        while let Some(mut tx) = self.checkout(&key) {
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, key, tx, body_state)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(&key).await?;
        match tx.send_request(req).await {
            Ok(resp) => Ok(self.wrap(resp, key, tx, body_state)),
            Err(e) => Err(SendError::Request(e)),
        }
    }

    fn wrap(
        &self,
        resp: Response<Incoming>,
        key: PoolKey,
        tx: Sender,
        body_state: Option<Arc<BodyState>>,
    ) -> Response<PooledBody> {
        let max_idle = self.inner.max_idle_per_host;
        let idle = self.inner.body_idle_timeout;
        resp.map(|inner| PooledBody {
            inner,
            idle,
            stall: None,
            ticket: Some(Ticket {
                key,
                tx,
                body_state,
                max_idle,
            }),
        })
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let timeout = self.inner.idle_timeout;
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.get_mut(key)?;
            let mut now = None;
            while let Some(c) = list.pop() {
                POOL.idle.fetch_sub(1, Ordering::Relaxed);
                if c.tx.is_closed() {
                    continue;
                }
                let now = *now.get_or_insert_with(Instant::now);
                if now.saturating_duration_since(c.since) > timeout {
                    continue;
                }
                return Some(c.tx);
            }
            None
        })
    }

    async fn connect(&self, key: &PoolKey) -> Result<Sender, SendError> {
        let made = self.connect_counted(key).await;
        match &made {
            Ok(_) => POOL.connects.fetch_add(1, Ordering::Relaxed),
            Err(_) => POOL.connect_failures.fetch_add(1, Ordering::Relaxed),
        };
        made
    }

    async fn connect_counted(&self, key: &PoolKey) -> Result<Sender, SendError> {
        let uri = Uri::builder()
            .scheme(key.scheme().clone())
            .authority(key.authority().clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let (tx, conn) = self
            .inner
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        POOL.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
            POOL.open.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(tx)
    }
}

/// The right to put a connection back once its exchange is over.
struct Ticket {
    key: PoolKey,
    tx: Sender,
    body_state: Option<Arc<BodyState>>,
    max_idle: usize,
}

impl Ticket {
    fn checkin(self) {
        // A request body still being sent keeps the connection busy.
        if self.body_state.as_ref().is_some_and(|s| !s.finished()) || self.tx.is_closed() {
            return;
        }
        let max = self.max_idle;
        if max == 0 {
            return;
        }
        let _ = IDLE.try_with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.entry(self.key).or_default();
            if list.len() < max {
                POOL.idle.fetch_add(1, Ordering::Relaxed);
                list.push(Idle {
                    tx: self.tx,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// Response bodies ended because the upstream sent nothing for the body
/// idle timeout (process-wide, for operators' counters).
pub static BODY_IDLE_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Why a response body ended early: the upstream stalled.
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream response body idle for {:?}", self.0)
    }
}
impl std::error::Error for BodyStalled {}

/// A response body that returns its connection to the pool at its end,
/// and ends with an error (its connection dropped) when the upstream sends
/// nothing for `idle`. The timer is made only when the body first has to
/// wait: a body that arrives with its head costs none.
pub struct PooledBody {
    inner: Incoming,
    idle: Duration,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    ticket: Option<Ticket>,
}

impl Pool {
    /// How long a response body may send nothing.
    pub fn body_idle_timeout(&self) -> Duration {
        self.inner.body_idle_timeout
    }
}

impl PooledBody {
    /// The body of a response from a connection outside the pool (the
    /// PrivateLink integration's): the same idle limit, nothing returned.
    pub fn unpooled(inner: Incoming, idle: Duration) -> PooledBody {
        PooledBody {
            inner,
            idle,
            stall: None,
            ticket: None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Pending => {
                let idle = self.idle;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    // The connection is not returned: dropping it closes it.
                    self.ticket = None;
                    BODY_IDLE_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(timeout = ?idle, "upstream response body stalled; ended");
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                if let Some(t) = self.ticket.take() {
                    t.checkin();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.ticket = None;
            }
            Poll::Ready(Some(Ok(_))) => {
                let idle = self.idle;
                if let Some(stall) = &mut self.stall {
                    stall.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            }
        }
        r.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies the server never polls (empty, HEAD) end here.
        if let Some(t) = self.ticket.take() {
            if self.inner.is_end_stream() {
                t.checkin();
            }
        }
    }
}
