//! `[telemetry]`: the metrics listener and the access log (owner:
//! `telemetry`, wired in `server`).

use anyhow::{bail, Context};
use std::net::SocketAddr;

settings! {
    /// Metrics, health and access logs.
    pub struct TelemetryConfig ["telemetry"] {
        /// Metrics listener, `host:port` (`/metrics` in the Prometheus text
        /// format, `/healthz`, `/readyz`); empty: off (and nothing is
        /// counted for it).
        metrics_listen: String = String::new(), flat "metrics_listen";
        /// Most connections open at once on the metrics listener (its
        /// header and idle timeouts are the management listener's).
        metrics_max_connections: usize = 64, flat "metrics_max_connections";
        /// Access log: empty (off), `stdout`, or a file path (appended to,
        /// reopened on SIGHUP for logrotate). One JSON line per request.
        access_log: String = String::new(), flat "access_log";
        /// Access log lines that may wait for the writer; when full, lines
        /// are dropped and counted (`apigw_access_log_dropped_total`),
        /// never waited for.
        access_log_queue: usize = 65_536, flat "access_log_queue";
    }
}

impl TelemetryConfig {
    /// The metrics listener's address, if it is on.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen
            .parse()
            .map(Some)
            .with_context(|| format!("config: telemetry.metrics_listen {:?}", self.metrics_listen))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.metrics_addr()?;
        if self.metrics_max_connections == 0 {
            bail!("config: telemetry.metrics_max_connections must be at least 1");
        }
        Ok(())
    }
}
