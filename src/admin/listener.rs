//! What every listener needs besides HTTP: a header-read timeout, a
//! keep-alive idle timeout and a cap on open connections, and enough file
//! descriptors left for the data plane when the management side is
//! flooded.
//!
//! - The data plane's timeouts are in [`crate::dataplane::conn`]; its cap is a
//!   [`ConnCap`] shared by all workers (one atomic add when a connection
//!   is accepted, one subtract when it ends; nothing per request). Over
//!   the cap a new connection is closed at once.
//! - The management listener is served here ([`serve_admin`]): HTTP/1 with
//!   its own header and idle timeouts, and h2c with prior knowledge (as
//!   `axum::serve` did) with an idle timeout. Its cap is the lesser of
//!   `admin_max_connections` and a quarter of the open-file limit, read at
//!   every accept; at the cap the accept loop waits for a connection to
//!   end (see [`serve_admin`] for why it does not accept and close).
//! - At start the soft open-file limit is raised to the hard one
//!   ([`raise_nofile_limit`]), as nginx (`worker_rlimit_nofile`) and Go's
//!   runtime do, so the default limits of a shell (often 1024) are not
//!   what caps the gateway.

use crate::config::AdminConfig;
use crate::net::{nofile_soft_limit, sniff, Proto};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Management connections allowed with open-file limit `soft`:
/// `admin_max_connections`, but no more than a quarter of the limit, so
/// that a flood of the management port leaves three quarters of the
/// descriptors to the data plane (its client and upstream sockets) and
/// the store. At least one.
pub fn admin_cap(admin_max_connections: usize, soft: Option<u64>) -> usize {
    let cap = match soft {
        Some(s) => admin_max_connections.min(usize::try_from(s / 4).unwrap_or(usize::MAX)),
        None => admin_max_connections,
    };
    cap.max(1)
}

// ---------------------------------------------------------------------------
// Management listener
// ---------------------------------------------------------------------------

/// The management listener's timeouts.
#[derive(Clone, Copy, Debug)]
pub struct AdminTimeouts {
    /// A request head must be complete this long after its first byte (the
    /// first request: after accept; a connection sending nothing is
    /// closed then too).
    pub header: Duration,
    /// A connection with no request in flight and none arriving is closed
    /// after this long.
    pub keepalive: Duration,
}

impl AdminTimeouts {
    pub fn from_config(cfg: &AdminConfig) -> Self {
        AdminTimeouts {
            header: cfg.header_read_timeout(),
            keepalive: cfg.keepalive_timeout(),
        }
    }
}

/// How often the accept loop looks at the open-file limit again while it
/// waits at the cap (the limit may have been raised from outside).
const CAP_RECHECK: Duration = Duration::from_millis(250);

/// Open management connections; the accept loop waits on `freed`.
#[derive(Default)]
struct AdminSlots {
    open: AtomicUsize,
    freed: Notify,
}

struct AdminSlot(Arc<AdminSlots>);

impl Drop for AdminSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// Serve the management API on `listener` until accepting fails for good
/// (it does not: errors are logged and retried).
///
/// At the cap the loop stops accepting until a connection ends, rather
/// than accepting and closing at once: a connection waiting in the
/// kernel's listen queue costs the process no file descriptor; an
/// operator's request queued behind a flood is served as soon as a slot
/// frees (idle flooders are cut after `admin_header_read_timeout_ms`)
/// instead of being refused; and a flood that reconnects as fast as it
/// can does not make this loop spin on accept and close on a runtime the
/// data plane may share. When the queue is full the kernel drops new SYNs
/// and clients retry.
pub async fn serve_admin(
    listener: TcpListener,
    app: Router,
    timeouts: AdminTimeouts,
    max: usize,
    drain: Arc<crate::net::drain::Drain>,
) -> anyhow::Result<()> {
    tracing::info!(
        cap = admin_cap(max, nofile_soft_limit()),
        admin_max_connections = max,
        "management listener: connection cap (also at most a quarter of the open-file limit)"
    );
    let mut h1 = http1::Builder::new();
    // The driver below times request heads; hyper's timer would also cut
    // idle keep-alive connections at the header timeout.
    h1.header_read_timeout(None);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let builders = Arc::new((h1, h2));
    let slots = Arc::new(AdminSlots::default());
    let mut warned: Option<Instant> = None;
    let mut stop = drain.signal();
    loop {
        if stop.is_draining() {
            break;
        }
        let cap = admin_cap(max, nofile_soft_limit());
        if slots.open.load(Ordering::Acquire) >= cap {
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    cap,
                    "management listener at its connection cap: new connections wait in the listen queue"
                );
                warned = Some(Instant::now());
            }
            // A slot freed since the load left a permit: no wake is lost.
            tokio::select! {
                _ = slots.freed.notified() => {}
                _ = tokio::time::sleep(CAP_RECHECK) => {}
                _ = stop.started() => {}
            }
            continue;
        }
        let accepted = tokio::select! {
            biased;
            _ = stop.started() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                use std::io::ErrorKind;
                if !matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                ) {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %e, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        slots.open.fetch_add(1, Ordering::AcqRel);
        let slot = AdminSlot(slots.clone());
        let app = app.clone();
        let builders = builders.clone();
        let (tracked, signal, grace) = (drain.track(), drain.signal(), drain.idle_grace());
        tokio::spawn(async move {
            let _slot = slot;
            let _tracked = tracked;
            serve_admin_conn(stream, peer, app, &builders, timeouts, signal, grace).await;
        });
    }
    // Draining: no more connections here; the open ones finish (the
    // caller waits for them, within the drain timeout).
    drop(listener);
    Ok(())
}

/// Draining (`drain`): a connection that has sent nothing yet, or whose
/// request head is still incomplete, is closed `grace` after the drain
/// starts (not at its header timeout); an idle keep-alive one at once
/// (hyper's graceful shutdown); a request in flight is answered first.
async fn serve_admin_conn(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builders: &(http1::Builder, http2::Builder<TokioExecutor>),
    t: AdminTimeouts,
    mut drain: crate::net::drain::DrainSignal,
    grace: Duration,
) {
    let watch = Arc::new(Watch::new());
    let proto = match drain.within(t.header, grace, sniff(&stream)).await {
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(%peer, "management: nothing received within admin_header_read_timeout_ms (or the drain's grace)");
            return;
        }
    };
    let svc = AdminService {
        app,
        peer,
        watch: watch.clone(),
    };
    match proto {
        Proto::H1 => serve_admin_h1(&builders.0, stream, svc, &watch, t, drain, grace).await,
        Proto::H2 => serve_admin_h2(&builders.1, stream, svc, &watch, t, drain).await,
    }
}

/// Why an HTTP/1 management connection ended.
enum End {
    Done(Result<(), hyper::Error>),
    SlowHead,
    Idle,
}

async fn serve_admin_h1(
    builder: &http1::Builder,
    stream: TcpStream,
    svc: AdminService,
    watch: &Watch,
    t: AdminTimeouts,
    mut drain: crate::net::drain::DrainSignal,
    grace: Duration,
) {
    let peer = svc.peer;
    let io = TokioIo::new(Watched {
        stream,
        watch: svc.watch.clone(),
    });
    let mut conn = Box::new(builder.serve_connection(io, svc));
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    // Draining: hyper closes the connection if it is idle, else after the
    // response in progress (with `Connection: close`).
    let drained = drain.started();
    let mut drained = std::pin::pin!(drained);
    let mut shut = false;
    // Draining: a request head still arriving `grace` after the drain
    // started is cut then.
    let mut cut_heads_at: Option<Instant> = None;
    // Every change the deadline depends on (bytes read, a request begun or
    // answered) happens while hyper is polled here, so the deadline is
    // recomputed after each poll and the timer is only armed for it.
    let end = std::future::poll_fn(|cx| {
        if !shut && drained.as_mut().poll(cx).is_ready() {
            Pin::new(&mut *conn).graceful_shutdown();
            shut = true;
            cut_heads_at = Some(Instant::now() + grace);
        }
        if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
            return Poll::Ready(End::Done(r));
        }
        let Some((at, why)) = watch.h1_deadline(&t) else {
            return Poll::Pending; // a request is being served
        };
        let at = match (&why, cut_heads_at) {
            (End::SlowHead, Some(cut)) => at.min(cut),
            _ => at,
        };
        if armed != Some(at) {
            armed = Some(at);
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(why),
        }
    })
    .await;
    match end {
        End::Done(Err(e)) => {
            tracing::debug!(%peer, error = %e, "management connection ended with error");
        }
        End::Done(Ok(())) => {
            // The client closed, or the exchange said close: finish it
            // as hyper would have (poll_without_shutdown does not).
            let mut stream = conn.into_parts().io.into_inner().stream;
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        End::SlowHead => {
            tracing::debug!(%peer, "management: request head not complete within admin_header_read_timeout_ms");
            let mut stream = conn.into_parts().io.into_inner().stream;
            let answer = async {
                stream.write_all(&request_timeout_answer()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
        }
        End::Idle => {} // dropped: the socket is closed
    }
}

async fn serve_admin_h2(
    builder: &http2::Builder<TokioExecutor>,
    stream: TcpStream,
    svc: AdminService,
    watch: &Watch,
    t: AdminTimeouts,
    mut drain: crate::net::drain::DrainSignal,
) {
    let peer = svc.peer;
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let drained = drain.started();
    let mut drained = std::pin::pin!(drained);
    let mut shut = false;
    let mut conn = std::pin::pin!(conn);
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    // Set once idle for `keepalive`: GOAWAY sent, the connection dropped
    // `header` later if the client has not closed it.
    let mut closing: Option<Instant> = None;
    // Streams are answered on tasks of their own, so a request ending
    // does not necessarily poll this one: while one is in flight the
    // timer re-checks every `keepalive`.
    let r = std::future::poll_fn(|cx| loop {
        if !shut && drained.as_mut().poll(cx).is_ready() {
            // GOAWAY; streams in flight finish.
            conn.as_mut().graceful_shutdown();
            shut = true;
        }
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let now = Instant::now();
        let at = match closing {
            Some(since) => since + t.header,
            None if watch.busy() => now + t.keepalive,
            None => watch.idle_since() + t.keepalive,
        };
        if armed != Some(at) {
            armed = Some(at);
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        armed = None;
        match closing {
            Some(_) => return Poll::Ready(Ok(())),
            None if !watch.busy() && now >= watch.idle_since() + t.keepalive => {
                conn.as_mut().graceful_shutdown();
                closing = Some(now);
            }
            None => {}
        }
    })
    .await;
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "management h2 connection ended with error");
    }
}

/// The management API's answer to a request head that did not arrive in
/// time, in SCP's error envelope (as [`crate::admin::ApiError`] renders
/// it); the connection is closed after it.
fn request_timeout_answer() -> Vec<u8> {
    let body = serde_json::json!({
        "errors": [{
            "code": "RequestTimeout",
            "status": 408,
            "detail": "the request headers did not arrive in time",
        }]
    })
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\n\
         content-type: application/json\r\n\
         connection: close\r\n\
         content-length: {}\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// What a management connection is doing
// ---------------------------------------------------------------------------

/// The state a management connection's deadlines are computed from.
/// Times are nanoseconds since `base` (the accept).
struct Watch {
    base: Instant,
    in_flight: AtomicU32,
    /// When the last request was answered (0: none yet).
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived, +1 (0: none
    /// pending). Starts at 1: the first head is timed from the accept.
    head_since: AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Watch {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
        }
    }
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
    fn idle_since(&self) -> Instant {
        self.at(self.idle_since.load(Ordering::Relaxed))
    }
    /// A request's head is complete: it is being served until the guard
    /// (kept by its response body) is dropped.
    fn begin(self: &Arc<Self>) -> Serving {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        Serving(self.clone())
    }
    /// Bytes arrived: with no request in flight they start a request head.
    fn read(&self) {
        if !self.busy() && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now() + 1, Ordering::Relaxed);
        }
    }
    /// HTTP/1: when the connection is cut and why; `None` while a request
    /// is in flight.
    fn h1_deadline(&self, t: &AdminTimeouts) -> Option<(Instant, End)> {
        if self.busy() {
            return None;
        }
        match self.head_since.load(Ordering::Relaxed) {
            0 => Some((self.idle_since() + t.keepalive, End::Idle)),
            h => Some((self.at(h - 1) + t.header, End::SlowHead)),
        }
    }
}

struct Serving(Arc<Watch>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request's `Serving` when dropped (once
/// hyper has written it).
type Served<B> = crate::net::Guarded<B, Serving>;

/// The socket, telling the watch when bytes arrive.
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read();
        }
        r
    }
}

crate::net::forward_async_write!([] Watched, stream);

/// The axum router as a hyper service: each request carries
/// `ConnectInfo<SocketAddr>` (as `axum::serve` with connect info did) and
/// is tracked by the connection's watch until its response is written.
#[derive(Clone)]
struct AdminService {
    app: Router,
    peer: SocketAddr,
    watch: Arc<Watch>,
}

type AdminFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<Served<axum::body::Body>>, Infallible>> + Send>,
>;

impl hyper::service::Service<http::Request<Incoming>> for AdminService {
    type Response = http::Response<Served<axum::body::Body>>;
    type Error = Infallible;
    type Future = AdminFuture;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        use tower::Service as _;
        let guard = self.watch.begin();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let answer = self.app.clone().call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|inner| Served::new(inner, guard)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_cap_is_a_quarter_of_the_open_file_limit_at_most() {
        assert_eq!(admin_cap(1024, None), 1024);
        assert_eq!(admin_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(admin_cap(1024, Some(256)), 64);
        assert_eq!(admin_cap(20, Some(256)), 20);
        assert_eq!(admin_cap(1024, Some(2)), 1);
    }

    #[test]
    fn conn_cap_refuses_over_max_and_frees_on_drop() {
        let cap = crate::net::ConnCap::new(2);
        let a = cap.try_acquire();
        let b = cap.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(cap.try_acquire().is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert_eq!(cap.open(), 1);
        assert!(cap.try_acquire().is_some());
    }

    #[tokio::test]
    async fn request_timeout_answer_is_the_scp_envelope() {
        use axum::response::IntoResponse;
        use http_body_util::BodyExt;
        let raw = request_timeout_answer();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&raw) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("incomplete or bad head: {other:?}"),
        };
        assert_eq!(resp.code, Some(408));
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(usize::MAX);
        let body = &raw[head..];
        assert_eq!(len, body.len());
        let ours: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let api = crate::admin::ApiError::new(
            http::StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            "the request headers did not arrive in time".into(),
        )
        .into_response();
        let bytes = api
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let theirs: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(ours, theirs);
        assert_eq!(ours["errors"][0]["status"], 408);
    }
}
