//! The data-plane listener: bind (one SO_REUSEPORT socket per worker),
//! accept within `max_connections`, the PROXY protocol header, protocol
//! sniffing (HTTP/1 or h2c), then the connection drivers.
//!
//! Accepting, the PROXY header and sniffing are on TCP (they look at the
//! raw transport); from [`serve_conn`] on, everything is generic over the
//! client stream ([`WaitReadable`]). The TLS listener (`serve_tls`, on
//! the same workers as the plain one) accepts and reads the PROXY header
//! the same way, then hands the stream
//! its handshake gives (with the protocol ALPN chose) to [`serve_conn`].
//!
//! May import: the data plane's pipeline and connection driver, config,
//! net.

use super::{pipeline, DataPlane};
use crate::config::Config;
use crate::net::drain::{Drain, DrainSignal};
use crate::net::{sniff, ConnCap, ConnSlot, Proto, WaitReadable};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The HTTP/1 and HTTP/2 connection builders of a worker.
/// What every connection of a listener is served with, shared (a
/// connection's task keeps a reference, not copies: it is what an idle
/// connection costs).
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    idle: crate::dataplane::conn::Idle,
}

/// The data-plane listeners: one per worker with SO_REUSEPORT when each
/// worker has its own runtime (the first picks the port when it is 0),
/// else one.
pub fn bind_data(cfg: &Config) -> anyhow::Result<Vec<std::net::TcpListener>> {
    bind_per_worker(cfg.data.addr()?, listeners_per_port(cfg))
}

/// How many sockets a data-plane port (plain or TLS) gets: one per worker
/// when each worker has its own runtime, else one.
fn listeners_per_port(cfg: &Config) -> usize {
    if cfg.data.per_worker_runtimes() {
        cfg.data.workers()
    } else {
        1
    }
}

/// `n` listening sockets on `addr`, with SO_REUSEPORT when more than one
/// (the kernel spreads new connections over them); when the port is 0 the
/// first picks it and the others bind to the same.
fn bind_per_worker(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    for i in 0..n {
        let at = match out.first() {
            Some(first) if i > 0 => first.local_addr()?,
            _ => addr,
        };
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        if n > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(4096)?;
        out.push(listener.into_std()?);
    }
    Ok(out)
}

/// Which listener a connection came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// `data.listen`: every API but PRIVATE ones; PROXY header when
    /// `data.proxy_protocol`.
    Public,
    /// `data.private_listen`: PRIVATE APIs only, reached through a
    /// PrivateLink endpoint named by the PROXY v2 header (always required).
    Private,
}

/// The private listener, when `data.private_listen` is set.
pub fn bind_private(cfg: &Config) -> anyhow::Result<Option<std::net::TcpListener>> {
    let Some(addr) = cfg.data.private_addr()? else {
        return Ok(None);
    };
    Ok(Some(crate::net::bind(addr, 1024)?.into_std()?))
}

/// Serve the private listener on this runtime (its own connection cap of
/// `max_connections`). Resolves (with an error) only if serving stops.
pub fn spawn_private(
    listener: std::net::TcpListener,
    plane: Arc<DataPlane>,
    cfg: &Config,
    drain: Arc<Drain>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = TcpListener::from_std(listener)?;
    let conns = ConnCap::new(cfg.data.max_connections);
    let cfg = cfg.clone();
    Ok(tokio::spawn(async move {
        serve_data(listener, plane, cfg, conns, ListenerKind::Private, drain).await
    }))
}

/// The TLS listener's sockets and the acceptor their handshakes use (one
/// rustls config for every worker: its certificate resolver reads the
/// certificates that SIGHUP and custom-domain changes swap in).
pub struct TlsListeners {
    pub listeners: Vec<std::net::TcpListener>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListeners {
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        certs: &Arc<crate::dataplane::tls::TlsCerts>,
    ) -> anyhow::Result<TlsListeners> {
        Ok(TlsListeners {
            listeners,
            acceptor: tokio_rustls::TlsAcceptor::from(certs.server_config()?),
        })
    }
}

/// Which TLS sockets each of `workers` workers accepts on: socket `j` on
/// worker `j % workers`; with fewer sockets than workers (one handed over
/// by a process that had one), the workers left over accept on a copy
/// (dup) of socket `i % sockets` too, so every worker serves TLS.
fn share_tls(
    tls: Vec<std::net::TcpListener>,
    workers: usize,
) -> std::io::Result<Vec<Vec<std::net::TcpListener>>> {
    let workers = workers.max(1);
    let mut out: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let sockets = tls.len();
    for i in sockets..workers {
        if sockets > 0 {
            let copy = tls[i % sockets].try_clone()?;
            out[i].push(copy);
        }
    }
    for (j, l) in tls.into_iter().enumerate() {
        out[j % workers].push(l);
    }
    Ok(out)
}

/// Serve the data plane, plain and TLS: on this runtime when the runtime
/// is shared (one task per listener), else one thread with its own
/// current-thread runtime per plain listener, which also serves its share
/// of the TLS sockets (see [`share_tls`]). Resolves (with an error) only
/// if serving stops. `conns`: the count of open client connections of
/// every worker, plain and TLS (one `max_connections` for both).
pub fn spawn_data_workers(
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsListeners>,
    plane: Arc<DataPlane>,
    cfg: &Config,
    conns: Arc<ConnCap>,
    drain: Arc<Drain>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    // The first worker to stop tells why; the others' results are dropped.
    let report = move |r: anyhow::Result<()>| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(r);
        }
    };
    let (tls, acceptor) = match tls {
        Some(t) => (t.listeners, Some(t.acceptor)),
        None => (Vec::new(), None),
    };
    if !cfg.data.per_worker_runtimes() {
        // One task per listener (more than one only when taken over from
        // a process that had per-worker sockets).
        let (data_tasks, tls_tasks) = (
            listeners.into_iter().map(|l| (l, false)),
            tls.into_iter().map(|l| (l, true)),
        );
        for (l, is_tls) in data_tasks.chain(tls_tasks) {
            let listener = TcpListener::from_std(l)?;
            let (plane, cfg, conns) = (plane.clone(), cfg.clone(), conns.clone());
            let (report, drain, acceptor) = (report.clone(), drain.clone(), acceptor.clone());
            tokio::spawn(async move {
                report(match (is_tls, acceptor) {
                    (true, Some(acceptor)) => {
                        serve_tls(listener, acceptor, plane, cfg, conns, drain).await
                    }
                    _ => serve_data(listener, plane, cfg, conns, ListenerKind::Public, drain).await,
                })
            });
        }
        return Ok(rx);
    }
    let shares = share_tls(tls, listeners.len())?;
    for (i, (l, tls)) in listeners.into_iter().zip(shares).enumerate() {
        let plane = plane.clone();
        let cfg = cfg.clone();
        let conns = conns.clone();
        let report = report.clone();
        let drain = drain.clone();
        let acceptor = acceptor.clone();
        std::thread::Builder::new()
            .name(format!("apigw-data-{i}"))
            .spawn(move || {
                let r = (|| -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(l)?;
                        let mut tls_tasks = tokio::task::JoinSet::new();
                        if let Some(acceptor) = acceptor {
                            for t in tls {
                                let t = TcpListener::from_std(t)?;
                                tls_tasks.spawn(serve_tls(
                                    t,
                                    acceptor.clone(),
                                    plane.clone(),
                                    cfg.clone(),
                                    conns.clone(),
                                    drain.clone(),
                                ));
                            }
                        }
                        // Both end only once the drain has closed every
                        // connection (or on an error, which ends the
                        // process): this runtime outlives its connections.
                        let tls_done = async {
                            while let Some(r) = tls_tasks.join_next().await {
                                r??;
                            }
                            Ok::<(), anyhow::Error>(())
                        };
                        let data =
                            serve_data(listener, plane, cfg, conns, ListenerKind::Public, drain);
                        tokio::try_join!(data, tls_done)?;
                        Ok(())
                    })
                })();
                report(r);
            })?;
    }
    Ok(rx)
}

/// The HTTP/1 and HTTP/2 builders of a listener (HTTP/2's hardening from
/// `[tls]`'s `h2_*` settings, for h2c and TLS alike) and its idle limits,
/// `drain_grace` the drain's.
fn builders(cfg: &Config, drain_grace: std::time::Duration) -> Arc<Builders> {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // With parking on, the connection driver cuts slow header senders
    // (conn::Idle::header); hyper's header timer would box and register a
    // timer for every request.
    let idle = crate::dataplane::conn::Idle {
        park: cfg.data.keepalive_park(),
        keepalive: cfg.data.keepalive_timeout(),
        header: cfg.data.header_read_timeout(),
        drain_grace,
    };
    let hyper_header_timeout = idle.park.is_none().then_some(idle.header);
    h1.timer(TokioTimer::new())
        .header_read_timeout(hyper_header_timeout)
        .max_buf_size((cfg.data.max_header_bytes * 2).max(16 * 1024))
        .max_headers(256);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size((cfg.data.max_header_bytes * 2) as u32)
        .max_concurrent_streams(cfg.tls.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(cfg.tls.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(cfg.tls.h2_max_local_error_reset_streams);
    if let Some(every) = cfg.tls.h2_keepalive_interval() {
        h2.keep_alive_interval(every).keep_alive_timeout(every);
    }
    Arc::new(Builders { h1, h2, idle })
}

async fn serve_data(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    cfg: Config,
    conns: Arc<ConnCap>,
    kind: ListenerKind,
    drain: Arc<Drain>,
) -> anyhow::Result<()> {
    let builders = builders(&cfg, drain.idle_grace());
    // Memory freed on this worker (parked connections' buffers, finished
    // bursts) goes back to the OS even when the worker turns idle: the
    // allocator otherwise purges only while it allocates.
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            crate::dataplane::alloc::release_free_memory();
        }
    });
    let mut stop = drain.signal();
    while let Some((mut stream, peer, slot)) = accept(&listener, &mut stop, &conns).await {
        let plane = plane.clone();
        let builders = builders.clone();
        let private = kind == ListenerKind::Private;
        let proxy_protocol = cfg.data.proxy_protocol || private;
        let (tracked, signal) = (drain.track(), drain.signal());
        tokio::spawn(async move {
            let mut signal = signal;
            // Boxed, so the task keeps none of it while it serves (or
            // parks) the connection: a parked connection's task is what
            // 10,000 idle connections cost.
            let first = Box::pin(first_request(
                &mut stream,
                peer,
                proxy_protocol,
                private,
                &mut signal,
                &builders.idle,
            ))
            .await;
            let Some((conn_peer, proto)) = first else {
                return;
            };
            serve_conn(
                stream, proto, conn_peer, plane, &builders, slot, signal, tracked,
            )
            .await;
        });
    }
    // Closed: the kernel queues no more connections to this socket (a
    // successor that took it over keeps it open and accepting). This
    // worker's runtime must outlive its connections.
    drop(listener);
    drain.all_closed().await;
    Ok(())
}

/// The PROXY header of a connection from `peer`, by `deadline` (or the
/// drain's grace); `None` (logged) when it is refused or late.
async fn proxy_header(
    stream: &mut tokio::net::TcpStream,
    peer: SocketAddr,
    signal: &mut DrainSignal,
    deadline: tokio::time::Instant,
    idle: &crate::dataplane::conn::Idle,
) -> Option<crate::dataplane::proxy_protocol::ProxyInfo> {
    let header = crate::dataplane::proxy_protocol::read_header(stream, idle.header);
    match signal.until(deadline, idle.drain_grace, header).await {
        Ok(Ok(info)) => Some(info),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "PROXY header rejected");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no PROXY header before the drain's grace ended");
            None
        }
    }
}

/// What a plain connection sends before its first request: the PROXY
/// header (`proxy_protocol`) and then the first bytes, which say whether
/// it speaks HTTP/1 or h2c. Every wait ends at `header_timeout`, or at the
/// drain's `grace` once it starts. `None`: the connection is over.
async fn first_request(
    stream: &mut tokio::net::TcpStream,
    mut peer: SocketAddr,
    proxy_protocol: bool,
    private: bool,
    signal: &mut DrainSignal,
    idle: &crate::dataplane::conn::Idle,
) -> Option<(Arc<super::Peer>, Proto)> {
    let (header_timeout, grace) = (idle.header, idle.drain_grace);
    let mut endpoint_id = None;
    let deadline = tokio::time::Instant::now() + header_timeout;
    if proxy_protocol {
        let info = proxy_header(stream, peer, signal, deadline, idle).await?;
        if let Some(src) = info.source {
            peer = src;
        }
        endpoint_id = info.endpoint_id;
    }
    let conn_peer = Arc::new(if private {
        super::Peer::private(peer, endpoint_id)
    } else {
        super::Peer::new(peer)
    });
    // Nothing sent yet when the drain starts: the grace to send.
    match signal.until(deadline, grace, sniff(&*stream)).await {
        Ok(Ok(Some(p))) => Some((conn_peer, p)),
        Ok(Ok(None)) | Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!(%peer, "no request within header_read_timeout");
            None
        }
    }
}

/// Serve one client connection that speaks `proto` until it ends, on
/// whatever stream carries it; `peer` is the client (the PROXY header's
/// source when there was one) and the listener it came on, `slot` its
/// place under `max_connections`.
/// HTTP/1 is served in this task; HTTP/2 gets its own. Draining
/// (`drain`): HTTP/2 sends GOAWAY and finishes its streams; HTTP/1 see
/// `conn::serve_h1`.
#[allow(clippy::too_many_arguments)]
async fn serve_conn<IO: WaitReadable>(
    stream: IO,
    proto: Proto,
    conn_peer: Arc<super::Peer>,
    plane: Arc<DataPlane>,
    builders: &Arc<Builders>,
    slot: ConnSlot,
    drain: DrainSignal,
    tracked: crate::net::drain::DrainGuard,
) {
    let peer = conn_peer.clone();
    let activity = Arc::new(crate::dataplane::conn::Activity::default());
    let act = activity.clone();
    let make_svc = move || {
        let plane = plane.clone();
        let conn_peer = conn_peer.clone();
        let act = act.clone();
        service_fn(move |req| {
            use futures_util::FutureExt;
            let guard = act.begin();
            // The filters run in this call; what is left to await
            // is boxed by `handle` (nothing when the gateway answers).
            pipeline::handle(&plane, req, &conn_peer).map(move |resp| {
                Ok::<_, std::convert::Infallible>(
                    resp.map(|b| crate::dataplane::conn::Tracked::new(b, guard)),
                )
            })
        })
    };
    match proto {
        // Its own task, so HTTP/1 tasks are not sized for HTTP/2.
        Proto::H2 => {
            spawn_h2(
                stream,
                make_svc(),
                builders,
                slot,
                drain,
                tracked,
                peer.addr,
            );
        }
        Proto::H1 => {
            if let Err(e) = crate::dataplane::conn::serve_h1(
                &builders.h1,
                stream,
                &builders.idle,
                activity,
                drain,
                make_svc,
            )
            .await
            {
                tracing::debug!(peer = %peer.addr, error = %e, "connection ended with error");
            }
            drop(slot);
            drop(tracked);
        }
    }
}

/// HTTP/2 in a task of its own (a plain function, so the HTTP/1 task
/// does not carry the HTTP/2 connection's state in its own). Draining:
/// GOAWAY, then its streams finish.
fn spawn_h2<IO, S>(
    stream: IO,
    svc: S,
    builders: &Arc<Builders>,
    slot: ConnSlot,
    mut drain: DrainSignal,
    tracked: crate::net::drain::DrainGuard,
    peer: SocketAddr,
) where
    IO: WaitReadable,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builders = builders.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let io = TokioIo::new(Linger {
            io: Some(stream),
            tracked: Some(tracked),
            drain: drain.clone(),
        });
        let conn = builders.h2.serve_connection(io, svc);
        let mut conn = std::pin::pin!(conn);
        let r = tokio::select! {
            r = conn.as_mut() => r,
            _ = drain.started() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "h2 connection ended with error");
        }
    });
}

/// An HTTP/2 connection's stream. Closed while draining, it is not
/// dropped at once: a client may have sent a new stream before it read
/// the GOAWAY, and closing a socket with unread bytes sends a reset that
/// makes the client discard the GOAWAY too (its request fails instead of
/// being retried elsewhere). So the socket is read and discarded until the
/// client closes it (at most 2 s), as nginx's lingering close does.
struct Linger<IO: WaitReadable> {
    io: Option<IO>,
    tracked: Option<crate::net::drain::DrainGuard>,
    drain: DrainSignal,
}

impl<IO: WaitReadable> Drop for Linger<IO> {
    fn drop(&mut self) {
        let (Some(mut io), tracked) = (self.io.take(), self.tracked.take()) else {
            return;
        };
        if !self.drain.is_draining() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                use tokio::io::AsyncReadExt;
                let _tracked = tracked;
                let mut buf = [0u8; 4096];
                let discard = async {
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), discard).await;
            });
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotConnected)
}

impl<IO: WaitReadable> tokio::io::AsyncRead for Linger<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
}

impl<IO: WaitReadable> tokio::io::AsyncWrite for Linger<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => std::pin::Pin::new(io).poll_flush(cx),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
}

/// The TLS listener's sockets, when `tls.listen` is set: one per worker
/// with SO_REUSEPORT when each worker has its own runtime, as the plain
/// listener's.
pub fn bind_tls(cfg: &Config) -> anyhow::Result<Vec<std::net::TcpListener>> {
    match cfg.tls.addr()? {
        Some(addr) => bind_per_worker(addr, listeners_per_port(cfg)),
        None => Ok(Vec::new()),
    }
}

/// The next connection of a data-plane listener, within `max_connections`
/// (one over it is closed at once, before any task or buffer is spent on
/// it), with TCP_NODELAY; None once the drain has started. Accept errors
/// (EMFILE and friends) back off briefly rather than spin.
async fn accept(
    listener: &TcpListener,
    stop: &mut DrainSignal,
    conns: &Arc<ConnCap>,
) -> Option<(tokio::net::TcpStream, SocketAddr, ConnSlot)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.started() => return None,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = conns.try_acquire() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        return Some((stream, peer, slot));
    }
}

/// What a TLS connection does before its first request: the PROXY
/// header (`proxy_protocol`), the handshake and the first bytes of a
/// request, all within header_read_timeout, as a plain connection's first
/// bytes; draining, within the grace. `None`: the connection is over.
async fn tls_first_request(
    mut stream: tokio::net::TcpStream,
    mut peer: SocketAddr,
    proxy_protocol: bool,
    acceptor: &tokio_rustls::TlsAcceptor,
    signal: &mut DrainSignal,
    idle: &crate::dataplane::conn::Idle,
) -> Option<(
    crate::dataplane::conn::Prefixed<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    Arc<super::Peer>,
    Proto,
)> {
    let grace = idle.drain_grace;
    let deadline = tokio::time::Instant::now() + idle.header;
    if proxy_protocol {
        let info = proxy_header(&mut stream, peer, signal, deadline, idle).await?;
        if let Some(src) = info.source {
            peer = src;
        }
    }
    let mut tls = match signal.until(deadline, grace, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake not done within header_read_timeout (or the drain's grace)");
            return None;
        }
    };
    let proto = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Proto::H2,
        _ => Proto::H1,
    };
    let mut first = bytes::BytesMut::new();
    match signal
        .until(deadline, grace, tls.wait_readable(&mut first))
        .await
    {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Ok(Err(_)) => return None,
        Err(_) => {
            tracing::debug!(%peer, "no request within header_read_timeout");
            return None;
        }
    }
    let stream = crate::dataplane::conn::Prefixed::new(first.freeze(), tls);
    Some((stream, Arc::new(super::Peer::new(peer)), proto))
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    plane: Arc<DataPlane>,
    cfg: Config,
    conns: Arc<ConnCap>,
    drain: Arc<Drain>,
) -> anyhow::Result<()> {
    let builders = builders(&cfg, drain.idle_grace());
    let proxy_protocol = cfg.data.proxy_protocol;
    let mut stop = drain.signal();
    while let Some((stream, peer, slot)) = accept(&listener, &mut stop, &conns).await {
        let plane = plane.clone();
        let builders = builders.clone();
        let acceptor = acceptor.clone();
        let (tracked, signal) = (drain.track(), drain.signal());
        tokio::spawn(async move {
            let mut signal = signal;
            // Boxed, as a plain connection's first wait.
            let first = Box::pin(tls_first_request(
                stream,
                peer,
                proxy_protocol,
                &acceptor,
                &mut signal,
                &builders.idle,
            ))
            .await;
            let Some((stream, peer, proto)) = first else {
                return;
            };
            serve_conn(stream, proto, peer, plane, &builders, slot, signal, tracked).await;
        });
    }
    drop(listener);
    drain.all_closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::share_tls;
    use std::net::TcpListener;

    fn sockets(n: usize) -> Vec<TcpListener> {
        (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect()
    }

    fn ports(share: &[Vec<TcpListener>]) -> Vec<Vec<u16>> {
        share
            .iter()
            .map(|w| w.iter().map(|l| l.local_addr().unwrap().port()).collect())
            .collect()
    }

    fn port(l: &TcpListener) -> u16 {
        l.local_addr().unwrap().port()
    }

    #[test]
    fn one_socket_per_worker_each_worker_gets_its_own() {
        let s = sockets(2);
        let want = vec![vec![port(&s[0])], vec![port(&s[1])]];
        assert_eq!(ports(&share_tls(s, 2).unwrap()), want);
    }

    #[test]
    fn one_socket_handed_over_to_two_workers_is_accepted_on_by_both() {
        let s = sockets(1);
        let p = port(&s[0]);
        let share = share_tls(s, 2).unwrap();
        assert_eq!(ports(&share), vec![vec![p], vec![p]]);
        // Two descriptors of one socket: a connection is accepted by the
        // copy as well.
        let _c = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        assert!(share[1][0].accept().is_ok());
    }

    #[test]
    fn more_sockets_than_workers_every_socket_is_served_once() {
        let s = sockets(3);
        let want = vec![vec![port(&s[0]), port(&s[2])], vec![port(&s[1])]];
        assert_eq!(ports(&share_tls(s, 2).unwrap()), want);
    }

    #[test]
    fn no_tls_socket_no_worker_serves_tls() {
        let share = share_tls(Vec::new(), 2).unwrap();
        assert!(share.iter().all(|w| w.is_empty()));
        assert_eq!(share.len(), 2);
    }
}
