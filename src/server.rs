//! Process wiring: load the store, build the first snapshot, bind both
//! listeners, serve until SIGINT/SIGTERM.

use crate::admin;
use crate::config::Config;
use crate::pipeline::{self, DataPlane};
use crate::snapshot::{BuildContext, Published};
use crate::store::{self, State};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    crate::listener::raise_nofile_limit();
    let store: Arc<dyn store::Store> = Arc::from(store::open(&cfg.store_url)?);
    let loader = store.clone();
    let entities = tokio::task::spawn_blocking(move || loader.load()).await??;
    let state = State::from_entities(entities);
    let clock = crate::quota::Clock::new(
        Some(cfg.test_clock_file.clone())
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from),
    );
    let stats_clock = clock.clone();
    let stats = crate::stats::Stats::with_clock(
        Some(crate::store::sqlite_stats::open(&cfg.store_url)?),
        Some(Arc::new(move || stats_clock.now())),
    );
    stats.spawn_flusher(std::time::Duration::from_secs(1));
    let mut ctx = BuildContext::from_config(&cfg);
    ctx.stats = Some(stats.clone());
    let published = Arc::new(Published::new(&state, ctx));

    let quota = crate::quota::LocalQuota::open(Some(&cfg.sqlite_path()?))?;
    quota.spawn_flusher(std::time::Duration::from_millis(
        cfg.quota_flush_interval_ms.max(10),
    ));

    let data_listeners = bind_data(&cfg)?;
    let admin_listener = bind_admin(cfg.admin_addr()?)?;
    let data_addr = data_listeners[0].local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let plane = Arc::new(DataPlane {
        snapshot: published.clone(),
        client: crate::upstream::http::client(&cfg),
        invoke_domain: cfg.invoke_domain.clone(),
        max_body_bytes: cfg.max_body_bytes,
        max_header_bytes: cfg.max_header_bytes,
        upstream_timeout: cfg.upstream_timeout(),
        trusted_proxies: cfg.trusted_proxy_nets()?,
        credentials: cfg.credentials.clone(),
        signature_max_skew_ms: cfg.signature_max_skew_secs.saturating_mul(1000),
        srn_offering: cfg.srn_offering.clone(),
        keep_escaped_separators: cfg.keep_escaped_separators(),
        quota: quota.clone(),
        clock,
    });
    let admin_state = admin::Inner::new(
        cfg.clone(),
        store,
        state,
        published,
        data_addr.port(),
        stats.clone(),
    );
    crate::jwks::spawn_refresher(admin_state.clone());
    let app = admin::router(admin_state);

    if cfg.credentials.is_empty() {
        tracing::warn!("no [[credentials]] configured: every management request will get 401");
    }
    tracing::info!(%data_addr, %admin_addr, "apigw started");
    println!("apigw listening data={data_addr} admin={admin_addr}");

    let data = spawn_data_workers(data_listeners, plane, &cfg)?;
    let admin = tokio::spawn(crate::listener::serve_admin(
        admin_listener,
        app,
        crate::listener::AdminTimeouts::from_config(&cfg),
        cfg.admin_max_connections,
    ));

    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            if let Err(e) = quota.flush() {
                tracing::warn!(error = %e, "final quota flush failed");
            }
            stats.flush();
        }
        r = data => { r??; }
        r = admin => { r??; }
    }
    Ok(())
}

/// The data-plane listeners: one per worker with SO_REUSEPORT when each
/// worker has its own runtime (the first picks the port when it is 0),
/// else one.
fn bind_data(cfg: &Config) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let addr = cfg.data_addr()?;
    let n = if cfg.per_worker_runtimes() {
        cfg.workers()
    } else {
        1
    };
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

/// The management listener, with a listen queue of 1024: at its
/// connection cap the accept loop waits (see `listener::serve_admin`), and
/// queued connections cost the process no file descriptor, so the queue
/// is where a flood waits instead of std's 128.
fn bind_admin(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serve the data plane: on this runtime when there is one listener and
/// the runtime is shared, else one thread with its own current-thread
/// runtime per listener. Resolves (with an error) only if serving stops.
fn spawn_data_workers(
    listeners: Vec<std::net::TcpListener>,
    plane: Arc<DataPlane>,
    cfg: &Config,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // One count of open client connections for all workers.
    let conns = crate::listener::ConnCap::new(cfg.max_connections);
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    // The first worker to stop tells why; the others' results are dropped.
    let report = move |r: anyhow::Result<()>| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(r);
        }
    };
    if !cfg.per_worker_runtimes() {
        let mut listeners = listeners;
        let listener = TcpListener::from_std(listeners.remove(0))?;
        let cfg = cfg.clone();
        tokio::spawn(async move { report(serve_data(listener, plane, cfg, conns).await) });
        return Ok(rx);
    }
    for (i, l) in listeners.into_iter().enumerate() {
        let plane = plane.clone();
        let cfg = cfg.clone();
        let conns = conns.clone();
        let report = report.clone();
        std::thread::Builder::new()
            .name(format!("apigw-data-{i}"))
            .spawn(move || {
                let r = (|| -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(l)?;
                        serve_data(listener, plane, cfg, conns).await
                    })
                })();
                report(r);
            })?;
    }
    Ok(rx)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What a new connection speaks, from its first bytes (peeked, not read).
#[derive(PartialEq, Debug)]
pub(crate) enum Proto {
    H1,
    H2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait for the first bytes and tell HTTP/2 prior knowledge (h2c) from
/// HTTP/1; `None` when the peer closes first. Nothing is buffered: until a
/// client sends something its connection costs only the socket and a small
/// task, and HTTP/1 connections never carry HTTP/2's state.
pub(crate) async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Option<Proto>> {
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

async fn serve_data(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    cfg: Config,
    conns: Arc<crate::listener::ConnCap>,
) -> anyhow::Result<()> {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // With parking on, the connection driver cuts slow header senders
    // (conn::Idle::header); hyper's header timer would box and register a
    // timer for every request.
    let idle = crate::conn::Idle {
        park: cfg.keepalive_park(),
        keepalive: cfg.keepalive_timeout(),
        header: cfg.header_read_timeout(),
    };
    let hyper_header_timeout = idle.park.is_none().then_some(idle.header);
    h1.timer(TokioTimer::new())
        .header_read_timeout(hyper_header_timeout)
        .max_buf_size((cfg.max_header_bytes * 2).max(16 * 1024))
        .max_headers(256);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size((cfg.max_header_bytes * 2) as u32);
    let builders = Arc::new((h1, h2));
    // Memory freed on this worker (parked connections' buffers, finished
    // bursts) goes back to the OS even when the worker turns idle: the
    // allocator otherwise purges only while it allocates.
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            crate::alloc::release_free_memory();
        }
    });
    loop {
        let (mut stream, mut peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over max_connections: closed at once (dropped), before any
        // task or buffer is spent on it.
        let Some(slot) = conns.try_acquire() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let plane = plane.clone();
        let builders = builders.clone();
        let proxy_protocol = cfg.proxy_protocol;
        tokio::spawn(async move {
            if proxy_protocol {
                match crate::proxy_protocol::read_header(&mut stream, idle.header).await {
                    Ok(Some(src)) => peer = src,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "PROXY header rejected");
                        return;
                    }
                }
            }
            let proto = match tokio::time::timeout(idle.header, sniff(&stream)).await {
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(%peer, "no request within header_read_timeout");
                    return;
                }
            };
            let conn_peer = Arc::new(pipeline::Peer::new(peer));
            let activity = Arc::new(crate::conn::Activity::default());
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
                            resp.map(|b| crate::conn::Tracked::new(b, guard)),
                        )
                    })
                })
            };
            match proto {
                // Its own task, so HTTP/1 tasks are not sized for HTTP/2.
                Proto::H2 => {
                    let svc = make_svc();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let io = TokioIo::new(stream);
                        if let Err(e) = builders.1.serve_connection(io, svc).await {
                            tracing::debug!(%peer, error = %e, "h2 connection ended with error");
                        }
                    });
                }
                Proto::H1 => {
                    if let Err(e) =
                        crate::conn::serve_h1(&builders.0, stream, idle, activity, make_svc).await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                    drop(slot);
                }
            }
        });
    }
}
