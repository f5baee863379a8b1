//! `[upstream]`: connections to integrations (owner:
//! `dataplane::upstream::http`).

use std::time::Duration;

settings! {
    /// Calls to the integrations (HTTP upstreams).
    pub struct UpstreamConfig ["upstream"] {
        /// TCP (and TLS) connect timeout: 502 when exceeded.
        connect_timeout_ms: u64 = 5_000, flat "upstream_connect_timeout_ms";
        /// Time for the upstream to answer with a response head: 504 when
        /// exceeded.
        timeout_ms: u64 = 29_000, flat "upstream_timeout_ms";
        /// A response body the upstream sends nothing of for this long is
        /// ended (the client's connection is closed).
        body_idle_timeout_ms: u64 = 30_000, flat "upstream_body_idle_timeout_ms";
        /// Idle keep-alive connections kept per upstream host and worker.
        pool_max_idle_per_host: usize = 1024, flat "upstream_pool_max_idle_per_host";
    }
}

impl UpstreamConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms.max(1))
    }
}
