//! `[data]`: the data plane's listener, workers, connections and request
//! limits (owner: `dataplane::listener`, `dataplane::conn`, the pipeline).

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::Duration;

settings! {
    /// The data plane: invoke URLs.
    pub struct DataConfig ["data"] {
        /// Data-plane listener, `host:port` (port 0: any free port).
        listen: String = "127.0.0.1:8080".into(), flat "data_listen";
        /// Invoke host is `{api_id}.{invoke_domain}`.
        invoke_domain: String = "apigw.localhost".into(), flat "invoke_domain";
        /// Data-plane worker threads (0: one per core).
        worker_threads: usize = 0, flat "worker_threads";
        /// With more than one worker: each runs its own single-threaded
        /// runtime with its own `SO_REUSEPORT` listener (the kernel spreads
        /// new connections); false: one shared work-stealing runtime.
        reuse_port: bool = true, flat "reuse_port";
        /// Most client connections open at once, over all workers; a
        /// connection beyond it is closed as soon as accepted.
        max_connections: usize = 100_000, flat "max_connections";
        /// Expect a PROXY protocol v1/v2 header on every connection.
        proxy_protocol: bool = false, flat "proxy_protocol";
        /// Private (PrivateLink) listener, `host:port`; empty: none. It
        /// serves only PRIVATE APIs, each connection starting with a PROXY
        /// v2 header whose 0xEA TLV names the endpoint.
        private_listen: String = String::new(), flat "private_listen";
        /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` names the client.
        trusted_proxies: Vec<String> = Vec::new(), flat "trusted_proxies";
        /// Largest request header block (bytes): 431 above; at least 1024.
        max_header_bytes: usize = 16 * 1024, flat "max_header_bytes";
        /// Largest request body (bytes): 413 above.
        max_body_bytes: u64 = 10 * 1024 * 1024, flat "max_body_bytes";
        /// A client must send its whole header block within this time
        /// (408).
        header_read_timeout_ms: u64 = 10_000, flat "header_read_timeout_ms";
        /// An idle keep-alive client connection is closed after this long.
        keepalive_timeout_ms: u64 = 75_000, flat "keepalive_timeout_ms";
        /// An HTTP/1 connection idle this long is parked: its HTTP state
        /// and buffers are dropped until the client sends again (0: never;
        /// at most half of `header_read_timeout_ms`).
        keepalive_park_ms: u64 = 1_000, flat "keepalive_park_ms";
        /// Path parameters whose decoded value holds `/`, `\` or NUL:
        /// `reject` (400 InvalidPathParameter) or `keep` (forwarded still
        /// encoded).
        escaped_path_separators: String = "reject".into(), flat "escaped_path_separators";
        /// Let the kernel back the heap with transparent huge pages. Off:
        /// the process opts out (`PR_SET_THP_DISABLE`), so idle memory
        /// stays what is in use (with THP, khugepaged fills sparse 2 MiB
        /// regions: +10–30 MiB with 10,000 idle connections).
        transparent_huge_pages: bool = false, flat "transparent_huge_pages";
    }
}

impl DataConfig {
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("config: data.listen {:?}", self.listen))
    }

    /// The private listener's address, `None` when it is off.
    pub fn private_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.private_listen.is_empty() {
            return Ok(None);
        }
        self.private_listen
            .parse()
            .map(Some)
            .with_context(|| format!("config: data.private_listen {:?}", self.private_listen))
    }

    /// Data-plane workers: `worker_threads`, or the cores when 0.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// One current-thread runtime per worker, each with its own listener.
    pub fn per_worker_runtimes(&self) -> bool {
        self.worker_threads == 1 || (self.reuse_port && cfg!(unix))
    }

    pub fn trusted_proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                crate::store::model::parse_ip_item(s).ok_or_else(|| {
                    anyhow::anyhow!("config: data.trusted_proxies: {s:?} is not an IP or CIDR")
                })
            })
            .collect()
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.max(1))
    }

    /// `None`: never park. Kept below half the header read timeout: the
    /// connection driver checks for slow header senders on this tick
    /// (`conn::Idle::header`), so a longer tick would cut them late.
    pub fn keepalive_park(&self) -> Option<Duration> {
        (self.keepalive_park_ms > 0).then(|| {
            Duration::from_millis(
                self.keepalive_park_ms
                    .min(self.header_read_timeout_ms.max(2) / 2),
            )
        })
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    pub fn keep_escaped_separators(&self) -> bool {
        self.escaped_path_separators == "keep"
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.addr()?;
        self.private_addr()?;
        if self.invoke_domain.is_empty() || self.invoke_domain.contains('/') {
            bail!("config: data.invoke_domain must be a host name");
        }
        if self.max_header_bytes < 1024 {
            bail!("config: data.max_header_bytes must be at least 1024");
        }
        if self.max_connections == 0 {
            bail!("config: data.max_connections must be at least 1");
        }
        self.trusted_proxy_nets()?;
        if !matches!(self.escaped_path_separators.as_str(), "reject" | "keep") {
            bail!("config: data.escaped_path_separators must be \"reject\" or \"keep\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::DataConfig;
    use std::time::Duration;

    #[test]
    fn park_stays_below_the_header_timeout() {
        let mut c = DataConfig::default();
        assert_eq!(c.keepalive_park(), Some(Duration::from_millis(1000)));
        c.header_read_timeout_ms = 800;
        assert_eq!(c.keepalive_park(), Some(Duration::from_millis(400)));
        c.keepalive_park_ms = 0;
        assert_eq!(c.keepalive_park(), None);
    }
}
