//! HTTP/1 client connections: served by hyper while they are busy, parked
//! while they are idle.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every
//! connection for as long as it lives, so 10,000 idle keep-alive clients
//! would pin some 200 MiB. Instead, once a connection has had no request
//! for `park` (and none is in flight), the driver asks hyper to close it
//! gracefully *without* shutting the socket (`poll_without_shutdown`),
//! takes the socket and any bytes hyper had read ahead back
//! (`into_parts`), and drops hyper's state. The parked connection is the
//! socket and this task; when the client sends again a new hyper
//! connection starts with the read-ahead bytes in front. A parked
//! connection idle for `keepalive` is closed.
//!
//! Hot connections never park (a request within each `park` interval
//! keeps them), so the steady state costs two relaxed atomic adds and one
//! subtraction per request.
//!
//! The driver is generic over the client stream (`IO`: TCP today, TLS
//! later), monomorphised per stream type. A parked connection waits with
//! [`WaitReadable::wait_readable`]: TCP peeks; a stream that cannot (TLS)
//! reads a byte, which the next session gets in front, as it gets hyper's
//! read-ahead ([`Prefixed`]).
//!
//! May import: net.

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

pub use crate::net::drain::DrainSignal;
pub use crate::net::WaitReadable;

/// Requests started on a connection and those not yet answered in full.
#[derive(Default, Debug)]
pub struct Activity {
    started: AtomicU64,
    in_flight: AtomicU32,
}

impl Activity {
    /// A request starts; the guard ends it when dropped (with the response
    /// body once hyper has written it, or with the request's future).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
    fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request's `InFlight` when dropped.
pub type Tracked<B> = crate::net::Guarded<B, InFlight>;

/// The stream with bytes already read from it put back in front.
pub struct Prefixed<IO> {
    prefix: Bytes,
    stream: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

crate::net::forward_async_write!([IO: AsyncWrite + Unpin] Prefixed<IO>, stream);

impl<IO> Prefixed<IO> {
    /// `stream` with `prefix` (read from it already) served first.
    pub fn new(prefix: Bytes, stream: IO) -> Self {
        Prefixed { prefix, stream }
    }
}

/// Waiting reads a byte (served first afterwards): the prefix comes
/// before the stream's own bytes.
impl<IO: WaitReadable> WaitReadable for Prefixed<IO> {}

/// How long connections may idle.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Idle this long with hyper's state kept; then parked (`None`: never).
    pub park: Option<Duration>,
    /// A parked connection idle this long is closed.
    pub keepalive: Duration,
    /// A request head still incomplete this long after the connection
    /// went quiet is answered 408 and the connection closed. With parking
    /// on, the driver enforces it on its `park` tick (see `session`), so
    /// hyper's own header timer — a boxed timer armed and dropped for
    /// every request — stays off; without parking hyper's is used.
    pub header: Duration,
    /// Draining: how long an idle connection may still wait for its next
    /// request (answered with `Connection: close`).
    pub drain_grace: Duration,
}

/// What a slow header sender gets before the connection is closed: the
/// data plane's error shape (`{"message": ...}` and an `x-apigw-error`
/// code).
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: application/json\r\n\
x-apigw-error: RequestTimeout\r\n\
connection: close\r\n\
content-length: 56\r\n\
\r\n\
{\"message\":\"The request headers did not arrive in time\"}";

/// Serve one HTTP/1 connection until the client closes it, an error ends
/// it, or it stays parked for `idle.keepalive`. `make_svc` makes the
/// service of each hyper session, given the connection's activity.
///
/// Draining (`drain`): a request in flight, or the next one to arrive
/// within the drain's idle grace, is answered with `Connection: close`;
/// a connection idle for the grace is closed (see `session`).
pub async fn serve_h1<IO, S, F>(
    builder: &http1::Builder,
    mut stream: IO,
    idle: &Idle,
    activity: Arc<Activity>,
    mut drain: DrainSignal,
    make_svc: F,
) -> Result<(), hyper::Error>
where
    IO: WaitReadable,
    F: Fn() -> S,
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The caller saw the first bytes arrive; later sessions start when
    // the parked connection has bytes again.
    let mut leftover = Bytes::new();
    loop {
        let Some((s, rest)) = Box::pin(session(
            builder, stream, leftover, idle, &activity, &mut drain, &make_svc,
        ))
        .await?
        else {
            return Ok(());
        };
        (stream, leftover) = (s, rest);
        if leftover.is_empty() {
            // Parked: wait for the client's next bytes (peeked on TCP, so
            // `read` stays empty and allocates nothing); draining, for
            // the grace at most.
            let mut read = BytesMut::new();
            match parked(&mut stream, &mut read, idle, &mut drain).await {
                Some(Ok(true)) => leftover = read.freeze(),
                _ => return Ok(()), // closed, failed, or idle too long
            }
        }
    }
}

/// A parked connection's wait for its client's next bytes, for
/// `keepalive` at most, or for the drain's grace once it starts; `None`
/// when that time ran out. Written out rather than `select!` over two
/// timeouts: this future lives in every parked connection's task, so it
/// holds one timer and nothing else (10,000 idle connections are 10,000
/// of these).
async fn parked<IO: WaitReadable>(
    stream: &mut IO,
    read: &mut BytesMut,
    idle: &Idle,
    drain: &mut DrainSignal,
) -> Option<std::io::Result<bool>> {
    let until = tokio::time::Instant::now() + idle.keepalive;
    let timer = tokio::time::sleep_until(until);
    let mut timer = std::pin::pin!(timer);
    let started = drain.started();
    let mut started = std::pin::pin!(started);
    let mut draining = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = stream.poll_wait_readable(cx, read) {
            return Poll::Ready(Some(r));
        }
        if !draining && started.as_mut().poll(cx).is_ready() {
            draining = true;
            timer
                .as_mut()
                .reset(until.min(tokio::time::Instant::now() + idle.drain_grace));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// One hyper session on the socket, `prefix` read before it. `None` when
/// the connection is over; else it was parked: the socket and the bytes
/// hyper had read ahead. Everything of the session is dropped on return.
#[allow(clippy::too_many_arguments)]
async fn session<IO, S, F>(
    builder: &http1::Builder,
    stream: IO,
    prefix: Bytes,
    idle: &Idle,
    activity: &Activity,
    drain: &mut DrainSignal,
    make_svc: &F,
) -> Result<Option<(IO, Bytes)>, hyper::Error>
where
    IO: WaitReadable,
    F: Fn() -> S,
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(Prefixed { prefix, stream });
    let mut conn = Box::new(builder.serve_connection(io, make_svc()));
    // Without parking the timer only serves the drain's grace.
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    let mut tick = Box::pin(tokio::time::sleep(idle.park.unwrap_or(NEVER)));
    let mut seen = activity.started();
    let mut parking = false;
    // How long no request has started with none in flight, in ticks.
    let mut quiet = Duration::ZERO;
    let mut too_slow = false;
    let drained = drain.started();
    let mut drained = std::pin::pin!(drained);
    // Draining: requests started when it began, and when an idle
    // connection is closed.
    let mut draining: Option<(u64, tokio::time::Instant)> = None;
    // graceful_shutdown asked (for parking or draining).
    let mut shut = false;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(r);
            }
            match draining {
                None => {
                    if drained.as_mut().poll(cx).is_ready() {
                        let until = tokio::time::Instant::now() + idle.drain_grace;
                        draining = Some((activity.started(), until));
                        tick.as_mut().reset(until);
                        continue;
                    }
                }
                Some((started, until)) if !shut => {
                    // A request in flight or just begun: hyper answers it
                    // with `Connection: close` (keep-alive off while it is
                    // in progress) and then ends. Idle for the grace:
                    // closed now.
                    if !activity.idle()
                        || activity.started() != started
                        || tokio::time::Instant::now() >= until
                    {
                        Pin::new(&mut *conn).graceful_shutdown();
                        shut = true;
                        continue;
                    }
                }
                Some(_) => {}
            }
            if tick.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(park) = idle.park.filter(|_| draining.is_none()) else {
                // Draining: the grace has passed (handled above), or a
                // shut connection finishing its last response.
                tick.as_mut().reset(tokio::time::Instant::now() + NEVER);
                continue;
            };
            let now = activity.started();
            if now == seen && activity.idle() {
                quiet += park;
                if !parking {
                    // Closes hyper's side only if it is idle; a request it
                    // has begun to read is answered first.
                    Pin::new(&mut *conn).graceful_shutdown();
                    parking = true;
                    shut = true;
                } else if quiet >= idle.header {
                    // Still not idle: a request head is arriving too slowly.
                    too_slow = true;
                    return Poll::Ready(Ok(()));
                }
            } else {
                seen = now;
                quiet = Duration::ZERO;
            }
            tick.as_mut().reset(tokio::time::Instant::now() + park);
            // Poll again: the connection after the shutdown request,
            // and the re-armed timer to register its waker.
        }
    })
    .await?;
    if too_slow {
        let mut stream = conn.into_parts().io.into_inner().stream;
        let answer = async {
            stream.write_all(REQUEST_TIMEOUT).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(idle.park.unwrap_or(idle.header), answer).await;
        return Ok(None);
    }
    if !parking || draining.is_some() {
        // The client closed, the exchange said close, or draining.
        return Ok(None);
    }
    let parts = conn.into_parts();
    let Prefixed { prefix, stream } = parts.io.into_inner();
    // Copied out: hyper's read-ahead `Bytes` (even an empty one) keeps its
    // whole 8 KiB buffer alive.
    let leftover = if parts.read_buf.is_empty() && prefix.is_empty() {
        Bytes::new()
    } else {
        let mut b = BytesMut::with_capacity(parts.read_buf.len() + prefix.len());
        b.extend_from_slice(&parts.read_buf);
        b.extend_from_slice(&prefix);
        b.freeze()
    };
    Ok(Some((stream, leftover)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper_util::rt::TokioTimer;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A stream that cannot peek, as TLS: parking reads a byte.
    impl WaitReadable for DuplexStream {}

    /// Read one `ok` answer (content-length 2) off the client side.
    async fn answer(client: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 512];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut b))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_stream_that_cannot_peek_parks_and_resumes() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        let idle = Idle {
            park: Some(Duration::from_millis(20)),
            keepalive: Duration::from_secs(5),
            header: Duration::from_secs(5),
            drain_grace: Duration::from_millis(100),
        };
        let activity = Arc::new(Activity::default());
        let sessions = Arc::new(AtomicU32::new(0));
        let (act, count) = (activity.clone(), sessions.clone());
        let make_svc = move || {
            count.fetch_add(1, Ordering::Relaxed);
            let act = act.clone();
            hyper::service::service_fn(move |_req| {
                let body = Tracked::new(Full::new(Bytes::from_static(b"ok")), act.begin());
                std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                    body,
                )))
            })
        };
        let drain = crate::net::drain::Drain::new(Duration::from_millis(100));
        let signal = drain.signal();
        let driver = tokio::spawn(async move {
            serve_h1(&builder, server, &idle, activity, signal, make_svc).await
        });

        client
            .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        // Quiet for several `park` ticks: hyper's session is dropped.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sessions.load(Ordering::Relaxed), 1);
        // The next request wakes it: its first byte was read while parked
        // and is served in front of the rest.
        client
            .write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200"));
        assert_eq!(sessions.load(Ordering::Relaxed), 2, "parked and resumed");
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }

    #[test]
    fn request_timeout_answer_is_well_formed() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(super::REQUEST_TIMEOUT) {
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
        let body = &super::REQUEST_TIMEOUT[head..];
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        assert!(v["message"].is_string(), "{v}");
    }
}
