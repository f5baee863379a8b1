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
        /// Access log lines that may wait for the writer, per thread that
        /// logs (each data worker has its own batch); when a batch is
        /// full, lines are dropped and counted
        /// (`apigw_access_log_dropped_total`), never waited for.
        access_log_queue: usize = 65_536, flat "access_log_queue";
        /// OTLP/HTTP trace export: the collector's base URL (spans are
        /// posted to `{otlp_endpoint}/v1/traces`; a URL already ending in
        /// `/v1/traces` is used as it is); empty: off (no span is built).
        otlp_endpoint: String = String::new(), flat "otlp_endpoint";
        /// `http/protobuf` or `http/json`.
        otlp_protocol: String = "http/protobuf".to_string(), flat "otlp_protocol";
        /// Share of new traces (no `traceparent`, or an invalid one) that
        /// are sampled, 0 to 1, decided on the trace id; a client's
        /// `traceparent` decides for its trace (its sampled flag).
        otlp_sample_ratio: f64 = 1.0, flat "otlp_sample_ratio";
        /// The `service.name` of the exported spans.
        otlp_service_name: String = "apigw".to_string(), flat "otlp_service_name";
        /// Finished spans that may wait for the exporter; when full, spans
        /// are dropped and counted (`apigw_otlp_spans_dropped_total`).
        otlp_queue: usize = 8192, flat "otlp_queue";
        /// One export (connect, send, answer, retries) gives up after this.
        otlp_timeout_ms: u64 = 5000, flat "otlp_timeout_ms";
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

    /// Where spans are posted: `otlp_endpoint` + `/v1/traces` (unless it
    /// ends so already), an `http` or `https` URL; `None` when off.
    pub fn otlp_traces_url(&self) -> anyhow::Result<Option<http::Uri>> {
        let base = self.otlp_endpoint.trim();
        if base.is_empty() {
            return Ok(None);
        }
        let url = if base.trim_end_matches('/').ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        };
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("config: telemetry.otlp_endpoint {:?}", self.otlp_endpoint))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(_)) => Ok(Some(uri)),
            _ => bail!(
                "config: telemetry.otlp_endpoint {:?} must be an http:// or https:// URL",
                self.otlp_endpoint
            ),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.metrics_addr()?;
        if !(0.0..=1.0).contains(&self.otlp_sample_ratio) {
            bail!(
                "config: telemetry.otlp_sample_ratio must be between 0 and 1, not {}",
                self.otlp_sample_ratio
            );
        }
        if !self.otlp_endpoint.is_empty() {
            self.otlp_traces_url()?;
            if !matches!(self.otlp_protocol.as_str(), "http/protobuf" | "http/json") {
                bail!(
                    "config: telemetry.otlp_protocol must be \"http/protobuf\" or \"http/json\", not {:?}",
                    self.otlp_protocol
                );
            }
            if self.otlp_queue == 0 {
                bail!("config: telemetry.otlp_queue must be at least 1");
            }
            if self.otlp_timeout_ms == 0 {
                bail!("config: telemetry.otlp_timeout_ms must be at least 1");
            }
        }
        if self.metrics_max_connections == 0 {
            bail!("config: telemetry.metrics_max_connections must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TelemetryConfig)) -> TelemetryConfig {
        let mut c = TelemetryConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn otlp_settings_are_checked() {
        let off = TelemetryConfig::default();
        assert!(off.otlp_traces_url().unwrap().is_none());
        assert!(off.validate().is_ok());
        let on = with(|c| c.otlp_endpoint = "http://127.0.0.1:4318/".into());
        assert_eq!(
            on.otlp_traces_url().unwrap().unwrap().to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let full = with(|c| c.otlp_endpoint = "https://otel.example/v1/traces".into());
        assert_eq!(
            full.otlp_traces_url().unwrap().unwrap().to_string(),
            "https://otel.example/v1/traces"
        );
        for (bad, field) in [
            (with(|c| c.otlp_sample_ratio = 1.5), "otlp_sample_ratio"),
            (with(|c| c.otlp_sample_ratio = -0.1), "otlp_sample_ratio"),
            (
                with(|c| c.otlp_endpoint = "127.0.0.1:4318".into()),
                "otlp_endpoint",
            ),
            (
                with(|c| c.otlp_endpoint = "ftp://x/".into()),
                "otlp_endpoint",
            ),
            (
                with(|c| {
                    c.otlp_endpoint = "http://x".into();
                    c.otlp_protocol = "grpc".into();
                }),
                "otlp_protocol",
            ),
            (
                with(|c| {
                    c.otlp_endpoint = "http://x".into();
                    c.otlp_queue = 0;
                }),
                "otlp_queue",
            ),
        ] {
            let e = bad.validate().expect_err(field).to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
