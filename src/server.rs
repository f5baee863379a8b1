//! Process wiring: open the store with its change feed, load it, build
//! the first snapshot and start the publisher that follows the feed, bind
//! both listeners, serve until SIGINT/SIGTERM.
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
    let (feed, feed_rx) = store::feed::channel();
    let url = cfg.store.url.clone();
    let store: Arc<dyn store::Store> =
        Arc::from(tokio::task::spawn_blocking(move || store::open(&url, feed)).await??);
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
    let stats = crate::telemetry::reports::Stats::with_clock(
        Some(crate::store::sqlite_stats::open(&cfg.store.sqlite_path()?)?),
        Some(clock.clone()),
    );
    stats.spawn_flusher(std::time::Duration::from_secs(1));
    let mut ctx = BuildContext::from_config(&cfg);
    ctx.stats = Some(stats.clone());
    // Bound before the first snapshot: PRIVATELINK methods to a PRIVATE
    // API connect to its address.
    let private_listener = crate::dataplane::listener::bind_private(&cfg)?;
    ctx.private_addr = match &private_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    state.version = loaded_version;
    let published = Arc::new(Published::new(&state, ctx));
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

    let data_listeners = crate::dataplane::listener::bind_data(&cfg)?;
    let admin_listener = bind_admin(cfg.admin.addr()?)?;
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
        quota: quota.clone(),
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
    let app = admin::router(admin_state);

    if cfg.signature.credentials.is_empty() {
        tracing::warn!(
            "no [[signature.credentials]] configured: every management request will get 401"
        );
    }
    let private_addr = match &private_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    tracing::info!(%data_addr, %admin_addr, ?private_addr, "apigw started");
    match private_addr {
        Some(p) => println!("apigw listening data={data_addr} admin={admin_addr} private={p}"),
        None => println!("apigw listening data={data_addr} admin={admin_addr}"),
    }

    // The private listener serves forever or fails: never resolves
    // when it is off.
    let private = match private_listener {
        Some(l) => crate::dataplane::listener::spawn_private(l, plane.clone(), &cfg)?,
        None => tokio::spawn(std::future::pending()),
    };
    let data = crate::dataplane::listener::spawn_data_workers(data_listeners, plane, &cfg)?;
    let admin = tokio::spawn(crate::admin::listener::serve_admin(
        admin_listener,
        app,
        crate::admin::listener::AdminTimeouts::from_config(&cfg.admin),
        cfg.admin.max_connections,
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
        r = private => { r??; }
    }
    Ok(())
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
