//! Process wiring: open the store with its change feed, load it, build
//! the first snapshot and start the publisher that follows the feed, bind
//! the listeners (or take them over from the running process, see
//! `net::handover`), serve until SIGINT/SIGTERM, then drain; SIGHUP
//! reloads the TLS certificates.
//!
//! May import: everything (it is the top).

use crate::admin;
use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::snapshot::{BuildContext, Published};
use crate::store::{self, State};
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    crate::net::raise_nofile_limit();
    // A running gateway's listening sockets, when it offers them.
    let mut inherited = match cfg.drain.handover_socket.as_str() {
        "" => Vec::new(),
        p => {
            let path = std::path::PathBuf::from(p);
            let got = tokio::task::spawn_blocking(move || crate::net::handover::take_over(&path))
                .await?
                .map_err(|e| anyhow::anyhow!("taking over listeners at {p}: {e}"))?;
            if !got.is_empty() {
                tracing::info!(
                    listeners = got.len(),
                    "took over the listening sockets of the running gateway"
                );
            }
            got
        }
    };
    let (feed, feed_rx) = store::feed::channel();
    let url = cfg.store.url.clone();
    let store: Arc<dyn store::Store> =
        Arc::from(tokio::task::spawn_blocking(move || store::open(&url, feed)).await??);
    // Metrics, access log, health: the metrics listener answers from
    // here on (`/readyz` 503 until the first snapshot is published).
    let health = crate::telemetry::health::Health::new();
    // Every listener stops accepting when this starts (SIGTERM).
    let drain = crate::net::drain::Drain::new(cfg.drain.idle_grace());
    let (telemetry, metrics_addr, metrics_fd) =
        start_telemetry(&cfg, &health, &store, &drain, &mut inherited).await?;
    let loader = store.clone();
    let loaded = tokio::task::spawn_blocking(move || loader.load()).await??;
    let mut state = State::from_entities(loaded.entities);
    let mut loaded_version = loaded.version;
    // `[[functions]]`: registered (or set back) before anything is served.
    let seeds = admin::functions::configured_changes(&cfg, &state)?;
    if !seeds.is_empty() {
        let n = seeds.len();
        let seeds: Arc<[store::model::Change]> = seeds.into();
        let writer = store.clone();
        let batch = seeds.clone();
        let base = loaded_version;
        loaded_version = tokio::task::spawn_blocking(move || writer.apply(base, batch)).await??;
        state.apply(&seeds);
        tracing::info!(functions = n, "functions of the config registered");
    }
    let clock = crate::clock::from_test_file(Some(std::path::Path::new(&cfg.test_clock_file)));
    // Report rows: each node's own in the shared PostgreSQL store (List
    // Reports sums them), else in the local SQLite file. Stats loads
    // them here, a blocking read.
    let stats_store = if cfg.store.is_postgres() {
        crate::store::pg_stats::open(&cfg.store.url, &cfg.store.node_id()?)?
    } else {
        crate::store::sqlite_stats::open(&cfg.store.sqlite_path()?)?
    };
    let stats_clock = clock.clone();
    let stats = tokio::task::spawn_blocking(move || {
        crate::telemetry::reports::Stats::with_clock(Some(stats_store), Some(stats_clock))
    })
    .await?;
    stats.spawn_flusher(std::time::Duration::from_secs(1));
    let mut ctx = BuildContext::from_config(&cfg);
    ctx.stats = Some(stats.clone());
    ctx.metrics = telemetry.metrics.clone();
    // Bound before the first snapshot: PRIVATELINK methods to a PRIVATE
    // API connect to its address.
    let private_listener = match take(&mut inherited, "private", cfg.data.private_addr()?).pop() {
        Some(l) => Some(l),
        None => crate::dataplane::listener::bind_private(&cfg)?,
    };
    ctx.private_addr = match &private_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    state.version = loaded_version;
    let published = Arc::new(Published::new(&state, ctx));
    health.set_ready();
    // The TLS listener's sockets (one per worker with per-worker
    // runtimes), handed over all together like the plain listener's.
    let tls_listeners = match take(&mut inherited, "tls", cfg.tls.addr()?) {
        v if v.is_empty() => crate::dataplane::listener::bind_tls(&cfg)?,
        v => v,
    };
    // The data plane's certificates, kept here for the whole process:
    // SIGHUP reloads them, and custom domains' certificate files follow
    // every published domain change (set before the publisher starts, so
    // none is missed).
    let tls_certs: Option<Arc<crate::dataplane::tls::TlsCerts>> = match tls_listeners.is_empty() {
        false => Some(crate::dataplane::tls::TlsCerts::from_config(&cfg.tls)?),
        true => None,
    };
    if let Some(certs) = &tls_certs {
        let cert_dir = std::path::PathBuf::from(&cfg.tls.cert_dir);
        let set = {
            let certs = certs.clone();
            move |state: &State| {
                let domains = admin::domains::domain_certificates(state, &cert_dir)
                    .into_iter()
                    .map(
                        |(domain_name, cert_file, key_file)| crate::dataplane::tls::DomainCert {
                            domain_name,
                            cert_file,
                            key_file,
                        },
                    )
                    .collect();
                certs.set_domain_certs(domains);
            }
        };
        set(&state);
        published.on_domains_changed(Box::new(set));
    }
    // From here on only the publisher changes the snapshot, from the feed;
    // the management API's state follows what it applies.
    let (applied, applied_rx) = store::feed::channel();
    let served = crate::snapshot::publisher::spawn_forwarding(
        published.clone(),
        state.clone(),
        loaded_version,
        feed_rx,
        applied,
    );

    let quota = crate::store::quota::LocalQuota::open(Some(&cfg.store.sqlite_path()?))?;
    quota.spawn_flusher(cfg.quota.flush_interval());
    // With Redis the nodes share the counters (leases, see
    // store::redis_quota); the local ones stay for a single node.
    let counters: Arc<dyn crate::store::quota::QuotaCounters> = if cfg.quota.redis_url.is_empty() {
        quota.clone()
    } else {
        let shared = crate::store::redis_quota::RedisQuota::open(&cfg.quota)?;
        shared.spawn_reconciler(cfg.quota.flush_interval());
        Arc::new(crate::store::redis_quota::Shared(shared))
    };

    let data_listeners = match take(&mut inherited, "data", Some(cfg.data.addr()?)) {
        v if v.is_empty() => crate::dataplane::listener::bind_data(&cfg)?,
        v => v,
    };
    let admin_listener = match take(&mut inherited, "admin", Some(cfg.admin.addr()?)).pop() {
        Some(l) => TcpListener::from_std(l)?,
        None => bind_admin(cfg.admin.addr()?)?,
    };
    // Sockets handed over but not configured any more: closed (their
    // queued connections are the old process's to lose).
    drop(inherited);
    let data_addr = data_listeners[0].local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let plane = Arc::new(DataPlane {
        snapshot: published.clone(),
        client: crate::dataplane::upstream::http::client(&cfg.upstream),
        invoke_domain: cfg.data.invoke_domain.clone(),
        max_body_bytes: cfg.data.max_body_bytes,
        max_header_bytes: cfg.data.max_header_bytes,
        upstream_timeout: cfg.upstream.timeout(),
        trusted_proxies: cfg.data.trusted_proxy_nets()?,
        credentials: cfg.signature.credentials.clone(),
        signature_max_skew_ms: cfg.signature.max_skew_ms(),
        srn_offering: cfg.srn.offering.clone(),
        keep_escaped_separators: cfg.data.keep_escaped_separators(),
        quota: counters,
        clock,
    });
    let admin_state = admin::Inner::new(
        cfg.clone(),
        store,
        state,
        served,
        applied_rx,
        data_addr.port(),
        stats.clone(),
    );
    admin::spawn_follower(admin_state.clone());
    crate::admin::jwks::spawn_refresher(admin_state.clone());
    let mut app = admin::router(admin_state);
    if let Some(m) = &telemetry.metrics {
        app = crate::telemetry::endpoint::count_admin_operations(app, m.clone());
    }

    if cfg.signature.credentials.is_empty() {
        tracing::warn!(
            "no [[signature.credentials]] configured: every management request will get 401"
        );
    }
    let private_addr = match &private_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let tls_addr = match tls_listeners.first() {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    tracing::info!(%data_addr, %admin_addr, ?private_addr, ?tls_addr, "apigw started");
    let mut listening = format!("apigw listening data={data_addr} admin={admin_addr}");
    if let Some(p) = private_addr {
        listening.push_str(&format!(" private={p}"));
    }
    if let Some(t) = tls_addr {
        listening.push_str(&format!(" tls={t}"));
    }
    if let Some(m) = metrics_addr {
        listening.push_str(&format!(" metrics={m}"));
    }
    // Copies of every listening socket, for a successor process.
    let offer = match cfg.drain.handover_socket.as_str() {
        "" => None,
        p => {
            use std::os::fd::AsFd;
            let mut fds = Vec::new();
            for l in &data_listeners {
                fds.push(("data".to_string(), l.as_fd().try_clone_to_owned()?));
            }
            for l in &tls_listeners {
                fds.push(("tls".to_string(), l.as_fd().try_clone_to_owned()?));
            }
            if let Some(l) = &private_listener {
                fds.push(("private".to_string(), l.as_fd().try_clone_to_owned()?));
            }
            fds.push((
                "admin".to_string(),
                admin_listener.as_fd().try_clone_to_owned()?,
            ));
            if let Some(fd) = metrics_fd {
                fds.push(("metrics".to_string(), fd));
            }
            Some(crate::net::handover::offer(std::path::Path::new(p), fds)?)
        }
    };
    // DRAIN HOOKS: called first when SIGTERM/SIGINT arrives, before the
    // `drain.unready_delay_ms` wait and before any listener closes.
    // Health::set_draining (readiness turns unready) is connected here.
    let on_drain_start: Vec<Box<dyn Fn() + Send + Sync>> = vec![{
        let health = health.clone();
        Box::new(move || health.set_draining())
    }];
    println!("{listening}");

    // The private listener serves forever or fails: never resolves
    // when it is off.
    let private = match private_listener {
        Some(l) => {
            crate::dataplane::listener::spawn_private(l, plane.clone(), &cfg, drain.clone())?
        }
        None => tokio::spawn(std::future::pending()),
    };
    // One max_connections for the public and the TLS listener; both are
    // served by the data workers.
    let conns = crate::net::ConnCap::new(cfg.data.max_connections);
    let tls = match &tls_certs {
        Some(certs) => Some(crate::dataplane::listener::TlsListeners::new(
            tls_listeners,
            certs,
        )?),
        None => None,
    };
    let data = crate::dataplane::listener::spawn_data_workers(
        data_listeners,
        tls,
        plane,
        &cfg,
        conns,
        drain.clone(),
    )?;
    let admin = tokio::spawn(crate::admin::listener::serve_admin(
        admin_listener,
        app,
        crate::admin::listener::AdminTimeouts::from_config(&cfg.admin),
        cfg.admin.max_connections,
        drain.clone(),
    ));

    // The listeners resolve only on failure until the drain starts.
    tokio::select! {
        _ = shutdown_signal() => {}
        r = data => { r??; return Ok(()); }
        r = admin => { r??; return Ok(()); }
        r = private => { r??; return Ok(()); }
        _ = reload_on_sighup(tls_certs.clone()) => { return Ok(()); }
    }
    // Drain: unready, (wait), stop accepting, let connections finish
    // within the timeout, flush, exit 0.
    tracing::info!(
        connections = drain.open(),
        timeout_ms = cfg.drain.timeout_ms,
        "draining"
    );
    for hook in &on_drain_start {
        hook();
    }
    tokio::time::sleep(cfg.drain.unready_delay()).await;
    drain.start();
    // This process's copies of the sockets, if a successor took them.
    if let Some(o) = &offer {
        o.withdraw();
    }
    let signal = shutdown_signal();
    tokio::select! {
        r = tokio::time::timeout(cfg.drain.timeout(), drain.all_closed()) => match r {
            Ok(()) => tracing::info!("drained: every connection closed"),
            Err(_) => tracing::warn!(
                open = drain.open(),
                "drain timeout: closing the connections still open"
            ),
        },
        _ = signal => tracing::warn!(open = drain.open(), "second signal: not waiting any longer"),
    }
    if let Err(e) = quota.flush() {
        tracing::warn!(error = %e, "final quota flush failed");
    }
    // Off the runtime: the PostgreSQL client blocks.
    let s = stats.clone();
    let _ = tokio::task::spawn_blocking(move || s.flush()).await;
    // The access log's last lines (written every 20 ms).
    if let Some(log) = &telemetry.access_log {
        log.flush(std::time::Duration::from_secs(1)).await;
    }
    // The spans still queued (an export may take up to its timeout).
    if let Some(otlp) = &telemetry.otlp {
        otlp.flush(
            std::time::Duration::from_millis(cfg.telemetry.otlp_timeout_ms)
                + std::time::Duration::from_secs(1),
        )
        .await;
    }
    tracing::info!("shut down");
    Ok(())
}

/// Metrics (and their listener), the access log and its SIGHUP reopen,
/// installed for the data plane; the metrics listener's address.
async fn start_telemetry(
    cfg: &Config,
    health: &Arc<crate::telemetry::health::Health>,
    store: &Arc<dyn store::Store>,
    drain: &Arc<crate::net::drain::Drain>,
    inherited: &mut Vec<crate::net::handover::Handed>,
) -> anyhow::Result<(
    crate::telemetry::Telemetry,
    Option<std::net::SocketAddr>,
    Option<std::os::fd::OwnedFd>,
)> {
    use crate::telemetry::{access_log, endpoint, metrics::Metrics, Telemetry};
    let t = &cfg.telemetry;
    let metrics = Metrics::new();
    let access_log = match access_log::Target::from_setting(&t.access_log) {
        Some(target) => {
            let log = access_log::AccessLog::start(
                target,
                t.access_log_queue,
                metrics.access_log_dropped.clone(),
            )
            .map_err(|e| anyhow::anyhow!("access log {:?}: {e}", t.access_log))?;
            log.reopen_on_sighup();
            Some(log)
        }
        None => None,
    };
    let otlp = match t.otlp_traces_url()? {
        Some(url) => Some(crate::telemetry::otlp::Otlp::start(
            crate::telemetry::otlp::Settings {
                url,
                json: t.otlp_protocol == "http/json",
                sample_ratio: t.otlp_sample_ratio,
                service_name: t.otlp_service_name.clone(),
                queue: t.otlp_queue,
                timeout: std::time::Duration::from_millis(t.otlp_timeout_ms),
            },
            metrics.otlp.clone(),
        )?),
        None => None,
    };
    let mut addr = None;
    let mut fd = None;
    let metrics = match t.metrics_addr()? {
        Some(a) => {
            // Handed over by the running gateway on a restart, else bound.
            let listener = match take(inherited, "metrics", Some(a)).pop() {
                Some(l) => TcpListener::from_std(l)?,
                None => bind_admin(a)?,
            };
            addr = Some(listener.local_addr()?);
            {
                use std::os::fd::AsFd;
                fd = Some(listener.as_fd().try_clone_to_owned()?);
            }
            let reachable = {
                let store = store.clone();
                Arc::new(move || store.reachable()) as endpoint::Reachable
            };
            let app = endpoint::router(metrics.clone(), health.clone(), reachable);
            tokio::spawn(crate::admin::listener::serve_admin(
                listener,
                app,
                crate::admin::listener::AdminTimeouts::from_config(&cfg.admin),
                t.metrics_max_connections,
                drain.clone(),
            ));
            Some(metrics)
        }
        None => None,
    };
    let telemetry = Telemetry {
        metrics,
        access_log,
        otlp,
    };
    crate::telemetry::install(telemetry.clone());
    Ok((telemetry, addr, fd))
}

/// The listeners of `kind` handed over by the previous process, when the
/// listener is configured (`at`) and at the same address (or port 0).
fn take(
    inherited: &mut Vec<crate::net::handover::Handed>,
    kind: &str,
    at: Option<std::net::SocketAddr>,
) -> Vec<std::net::TcpListener> {
    let Some(at) = at else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < inherited.len() {
        let fits = inherited[i].kind == kind
            && (at.port() == 0 || inherited[i].listener.local_addr().ok() == Some(at));
        if fits {
            out.push(inherited.remove(i).listener);
        } else {
            i += 1;
        }
    }
    out
}

/// On every SIGHUP, read the TLS certificates again (a no-op without a
/// TLS listener). Never resolves (unless SIGHUP cannot be listened for,
/// then it waits forever too).
async fn reload_on_sighup(certs: Option<Arc<crate::dataplane::tls::TlsCerts>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    match &certs {
                        Some(c) => {
                            let c = c.clone();
                            // Blocking file reads: off the runtime.
                            let n = tokio::task::spawn_blocking(move || {
                                c.reload();
                                c.count()
                            })
                            .await;
                            match n {
                                Ok(n) => tracing::info!(
                                    certificates = n,
                                    "SIGHUP: TLS certificates reloaded"
                                ),
                                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed"),
                            }
                        }
                        None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    let _ = certs;
    std::future::pending::<()>().await
}

/// The management listener, with a listen queue of 1024: at its
/// connection cap the accept loop waits (see `listener::serve_admin`), and
/// queued connections cost the process no file descriptor, so the queue
/// is where a flood waits instead of std's 128.
fn bind_admin(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::bind(addr, 1024)
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
