//! HTTP integration: a pooled keep-alive hyper client (rustls with webpki
//! roots for https), streaming bodies both ways.

pub mod body;
pub mod pool;

pub use body::LimitedBody;

use crate::config::UpstreamConfig;
use hyper_util::client::legacy::connect::HttpConnector;
use pool::Pool;
use std::time::Duration;

pub type HttpClient = Pool;

pub fn client(cfg: &UpstreamConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout()));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Pool::new(
        https,
        cfg.pool_max_idle_per_host,
        Duration::from_secs(90),
        cfg.body_idle_timeout(),
    )
}

/// Headers that describe one connection and are never forwarded.
pub fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    use http::header::*;
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == TE
        || name == TRAILER
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// Remove hop-by-hop headers, including those named in `Connection`.
/// One pass over the names first: most messages carry none, or only
/// `Connection`, and then nothing else is looked up.
pub fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    use http::header::*;
    let mut others = false;
    let mut connection = false;
    for name in h.keys() {
        if name == CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            others = true;
        }
    }
    if connection {
        if let Some(conn) = h.remove(CONNECTION) {
            // `Connection: keep-alive` / `close` name no header to drop
            // (most answers: no split, no lookups).
            let v = conn.as_bytes();
            if v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close") {
                return strip_others(h, others);
            }
            for name in conn.to_str().unwrap_or("").split(',') {
                let name = name.trim();
                if !name.is_empty()
                    && !name.eq_ignore_ascii_case("keep-alive")
                    && !name.eq_ignore_ascii_case("close")
                {
                    h.remove(name);
                }
            }
        }
    }
    strip_others(h, others)
}

/// The fixed hop-by-hop headers, when the scan saw one (`others`).
fn strip_others(h: &mut http::HeaderMap, others: bool) {
    use http::header::*;
    if others {
        for n in [
            TRANSFER_ENCODING,
            TE,
            TRAILER,
            UPGRADE,
            PROXY_AUTHORIZATION,
            PROXY_AUTHENTICATE,
        ] {
            h.remove(n);
        }
        h.remove(&KEEP_ALIVE);
        h.remove(&PROXY_CONNECTION);
    }
}
