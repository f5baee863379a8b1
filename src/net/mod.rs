//! Network pieces every listener shares: what the connection drivers need
//! of a client stream ([`WaitReadable`], [`Peek`]), what a new connection
//! speaks (HTTP/1 or h2c prior knowledge, peeked), a process-wide
//! connection cap, and the open-file limit.
//!
//! The drivers are generic over the stream (monomorphised, never boxed):
//! TCP today; a TLS stream wrapping it later only has to implement
//! [`WaitReadable`] (its default method will do). [`Peek`] is for what is
//! looked at on the raw transport before any protocol consumes it (the
//! PROXY header, the h2c preface); TLS does not need it: the PROXY header
//! comes before its handshake, and ALPN says what it speaks.
//!
//! May import: nothing of the gateway (std, tokio, bytes, libc).

pub mod confined;
pub mod drain;
pub mod handover;

use bytes::BytesMut;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A listening socket on `addr` (SO_REUSEADDR) with a listen queue of
/// `backlog`.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Client streams
// ---------------------------------------------------------------------------

/// A client connection the connection drivers can serve and park.
///
/// Parking drops hyper's state and waits for the client's next bytes
/// without hyper; [`WaitReadable::poll_wait_readable`] is that wait. It is
/// a poll method, not a future: a parked connection's task stores no
/// future state for it (tokio keeps the read waker in the socket's own
/// registration), and 10,000 idle connections are 10,000 such tasks.
pub trait WaitReadable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when the peer has sent again (`true`) or closed (`false`).
    /// Bytes consumed in doing so are appended to `read`; the driver
    /// serves them before the stream's own.
    ///
    /// The default reads one byte, for streams that cannot look ahead
    /// without consuming (TLS: the byte is decrypted data). TCP peeks
    /// instead and consumes nothing.
    fn poll_wait_readable(
        &mut self,
        cx: &mut std::task::Context<'_>,
        read: &mut BytesMut,
    ) -> std::task::Poll<std::io::Result<bool>> {
        let mut b = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut b);
        std::task::ready!(std::pin::Pin::new(&mut *self).poll_read(cx, &mut buf))?;
        let got = buf.filled();
        read.extend_from_slice(got);
        std::task::Poll::Ready(Ok(!got.is_empty()))
    }

    /// [`WaitReadable::poll_wait_readable`] as a future.
    fn wait_readable<'a>(
        &'a mut self,
        read: &'a mut BytesMut,
    ) -> impl Future<Output = std::io::Result<bool>> + Send + 'a {
        std::future::poll_fn(move |cx| self.poll_wait_readable(cx, read))
    }
}

impl WaitReadable for TcpStream {
    fn poll_wait_readable(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _read: &mut BytesMut,
    ) -> std::task::Poll<std::io::Result<bool>> {
        let mut b = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut b);
        let n = std::task::ready!(TcpStream::poll_peek(self, cx, &mut buf))?;
        std::task::Poll::Ready(Ok(n > 0))
    }
}

/// A transport whose next bytes can be seen without consuming them.
pub trait Peek {
    /// Copy bytes from the front of the stream into `buf` without
    /// consuming them, waiting until there is at least one; `Ok(0)` when
    /// the peer closed. A later call sees the same bytes again (and more,
    /// once they have arrived).
    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a;
}

impl Peek for TcpStream {
    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a {
        TcpStream::peek(self, buf)
    }
}

// ---------------------------------------------------------------------------
// Protocol sniffing
// ---------------------------------------------------------------------------

/// What a new connection speaks, from its first bytes (peeked, not read).
#[derive(PartialEq, Debug)]
pub enum Proto {
    H1,
    H2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait for the first bytes and tell HTTP/2 prior knowledge (h2c) from
/// HTTP/1; `None` when the peer closes first. Nothing is buffered: until a
/// client sends something its connection costs only the socket and a small
/// task, and HTTP/1 connections never carry HTTP/2's state.
pub async fn sniff<S: Peek>(stream: &S) -> std::io::Result<Option<Proto>> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Proto::H1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Proto::H2));
        }
        // A prefix of the preface so far: wait for more (rare).
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------
// Open-file limit
// ---------------------------------------------------------------------------

/// Raise the soft open-file limit (RLIMIT_NOFILE) to the hard limit and
/// log what it is. A failure is logged and the limit left as it was.
pub fn raise_nofile_limit() {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
        let (soft, hard) = (r.rlim_cur, r.rlim_max);
        if soft >= hard {
            tracing::info!(limit = soft, "open-file limit");
            return;
        }
        r.rlim_cur = hard;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit to its hard limit");
        } else {
            tracing::info!(
                from = soft,
                to = hard,
                "open-file limit raised to its hard limit"
            );
        }
    }
}

/// The soft open-file limit in force now (`None`: unlimited or unknown).
/// One getrlimit call; it sees a limit changed from outside
/// (`prlimit --pid`).
pub fn nofile_soft_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
            || r.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        // rlim_t is u64 on 64-bit Linux, narrower on some other targets.
        #[allow(clippy::useless_conversion)]
        u64::try_from(r.rlim_cur).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

// ---------------------------------------------------------------------------
// Connection cap
// ---------------------------------------------------------------------------

/// Open connections of a listener, over all its workers, and their cap.
#[derive(Debug)]
pub struct ConnCap {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
    /// Seconds since `started` (+1) of the last warning about refusals.
    warned: AtomicU64,
    started: Instant,
}

/// One open connection; the count goes down when it is dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnCap>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<ConnCap> {
        Arc::new(ConnCap {
            open: AtomicUsize::new(0),
            max: max.max(1),
            refused: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// A slot for a new connection, or `None` when `max` are open (the
    /// caller closes the connection).
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnSlot> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.note_refused();
            return None;
        }
        Some(ConnSlot(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a refusal; warns at most every 10 s (a flood must not
    /// flood the log too).
    fn note_refused(&self) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.warned.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.max,
                refused_so_far = refused,
                "data plane at max_connections: new connections are closed"
            );
        }
    }
}

/// `tokio::io::AsyncWrite` for a stream wrapper whose writes go to its
/// `$field` unchanged (the wrappers differ in how they read):
/// `forward_async_write!([IO: AsyncWrite + Unpin] Prefixed<IO>, stream)`.
macro_rules! forward_async_write {
    ([$($gen:tt)*] $ty:ty, $field:ident) => {
        impl<$($gen)*> ::tokio::io::AsyncWrite for $ty {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::tokio::io::AsyncWrite::poll_write(::std::pin::Pin::new(&mut self.$field), cx, buf)
            }
            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::tokio::io::AsyncWrite::poll_write_vectored(::std::pin::Pin::new(&mut self.$field), cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                ::tokio::io::AsyncWrite::is_write_vectored(&self.$field)
            }
            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::tokio::io::AsyncWrite::poll_flush(::std::pin::Pin::new(&mut self.$field), cx)
            }
            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::tokio::io::AsyncWrite::poll_shutdown(::std::pin::Pin::new(&mut self.$field), cx)
            }
        }
    };
}
pub(crate) use forward_async_write;

pin_project_lite::pin_project! {
    /// A body that holds `guard` until it is dropped (with the response,
    /// once hyper has written it): how a connection knows a request is
    /// still being answered.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        _guard: G,
    }
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body, G> http_body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
