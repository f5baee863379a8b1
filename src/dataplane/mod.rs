//! The data plane: what serves invoke URLs.
//!
//! - [`listener`]: bind, accept (connection cap), PROXY protocol,
//!   protocol sniffing; [`conn`]: the HTTP/1 driver with parking.
//! - [`pipeline`]: one request's phases in one function; [`filters`]: one
//!   file per filter, all called the same way; [`ctx`]: the context a
//!   request carries through the phases; [`route`]: host → API, stage,
//!   resource; [`error`]: [`error::ErrorCode`], the one error type of the
//!   data plane.
//! - [`upstream`]: the integrations (HTTP; Cloud Function: the Lambda
//!   proxy event; the PrivateLink one).
//!
//! May import: `snapshot`, `jwt`, `policy`, `telemetry`, `store::model`,
//! `store::quota` (counters), `config`. Never `admin`, never the store's
//! objects.

pub mod alloc;
pub mod conn;
pub mod ctx;
pub mod error;
pub mod filters;
pub mod listener;
pub mod pipeline;
pub mod proxy_protocol;
pub mod route;
pub mod tls;
pub mod upstream;

pub use pipeline::handle;

use crate::dataplane::upstream::http::HttpClient;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{Either, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub type RespBody = Either<crate::dataplane::upstream::http::pool::PooledBody, Full<Bytes>>;

/// Everything the data plane needs, shared by all connections.
pub struct DataPlane {
    pub snapshot: Arc<crate::snapshot::Published>,
    pub client: HttpClient,
    pub invoke_domain: String,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub upstream_timeout: Duration,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Keys whose SCP signature makes a data-plane caller a principal.
    pub credentials: Vec<crate::config::Credential>,
    pub signature_max_skew_ms: i64,
    pub srn_offering: String,
    /// Forward path parameters holding an encoded `/`, `\\` or NUL (still
    /// encoded) instead of answering 400 (`escaped_path_separators`).
    pub keep_escaped_separators: bool,
    pub quota: Arc<dyn crate::store::quota::QuotaCounters>,
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl DataPlane {
    pub(crate) fn snapshot(&self) -> &ArcSwap<Snapshot> {
        self.snapshot.current()
    }
}

/// The connection a request came on: its peer and that peer's address as
/// a header value, made once per connection (X-Forwarded-For reuses it),
/// and, on the private listener, the PrivateLink endpoint it came through.
pub struct Peer {
    pub addr: SocketAddr,
    pub ip_value: HeaderValue,
    /// Accepted on the private listener (`data.private_listen`).
    pub private: bool,
    /// The endpoint id of the PROXY v2 header's 0xEA TLV (private
    /// listener only; `None` when the header had none).
    pub endpoint_id: Option<Box<str>>,
}

impl Peer {
    /// A connection of the public listener.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip_value = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Peer {
            addr,
            ip_value,
            private: false,
            endpoint_id: None,
        }
    }

    /// A connection of the private listener, through `endpoint_id`.
    pub fn private(addr: SocketAddr, endpoint_id: Option<Box<str>>) -> Peer {
        Peer {
            private: true,
            endpoint_id,
            ..Peer::new(addr)
        }
    }
}
