//! Prometheus metrics (served by the metrics listener, `[telemetry]
//! metrics_listen`), encoded by the `prometheus-client` crate in the
//! Prometheus text format (0.0.4) from counters kept here.
//!
//! Hot path: a request adds to relaxed atomics only. Per-stage counters
//! ([`StageMetrics`]) are looked up once, when the snapshot is built, and
//! held by the stage's compiled routes; the registry keeps only a `Weak`
//! to them, so when the last snapshot naming an API's stage is gone its
//! series are no longer exported and its memory is freed (label sets stay
//! bounded by the live stages). Process-wide counters (error codes, pool,
//! snapshot, management operations) are bounded sets too: error codes are
//! the gateway's own static strings, management operations are route
//! templates.

use super::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Histogram upper bounds, in seconds (fixed; `+Inf` follows).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Request methods counted apart; any other is `OTHER`.
pub const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];
/// Status classes, by `status / 100 - 1` (anything else is `5xx`).
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a method in [`METHODS`].
#[inline]
pub fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

#[inline]
fn class_index(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// A fixed-bucket latency histogram of relaxed atomics.
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let i = BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts as the encoder wants them).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut out = Vec::with_capacity(BOUNDS.len() + 1);
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            out.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        (self.sum_us.load(Relaxed) as f64 / 1e6, count, out)
    }
}

/// One API stage's counters, shared by every snapshot that serves it.
pub struct StageMetrics {
    api: Arc<str>,
    stage: Arc<str>,
    requests: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    latency: Histogram,
    integration: Histogram,
}

impl StageMetrics {
    /// One answered request: its method index, status, total latency and
    /// time to the integration's answer (0: the gateway answered).
    #[inline]
    pub fn record(&self, method: usize, status: u16, total_us: u64, integration_us: u64) {
        self.requests[method.min(METHODS.len() - 1)][class_index(status)].fetch_add(1, Relaxed);
        self.latency.observe_us(total_us);
        if integration_us > 0 {
            self.integration.observe_us(integration_us);
        }
    }
}

/// Process-wide counters of the upstream connection pool (its code adds
/// to them; see `dataplane::upstream::http::pool`).
#[derive(Default)]
pub struct PoolStats {
    pub open: AtomicI64,
    pub idle: AtomicI64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
}

pub static POOL: PoolStats = PoolStats {
    open: AtomicI64::new(0),
    idle: AtomicI64::new(0),
    connects: AtomicU64::new(0),
    connect_failures: AtomicU64::new(0),
};

const CODE_SLOTS: usize = 128;

/// Counters by a gateway error code (a `&'static str` of a bounded set):
/// open addressing over fixed slots, claimed once each; no lock.
struct CodeCounters {
    slots: [(OnceLock<&'static str>, AtomicU64); CODE_SLOTS],
}

impl CodeCounters {
    fn new() -> Self {
        CodeCounters {
            slots: [const { (OnceLock::new(), AtomicU64::new(0)) }; CODE_SLOTS],
        }
    }

    fn inc(&self, code: &'static str) {
        let mut h: usize = 5381;
        for b in code.bytes() {
            h = h.wrapping_mul(33) ^ usize::from(b);
        }
        for probe in 0..CODE_SLOTS {
            let (name, n) = &self.slots[(h + probe) % CODE_SLOTS];
            let claimed = *name.get_or_init(|| code);
            if claimed == code {
                n.fetch_add(1, Relaxed);
                return;
            }
        }
    }

    fn each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, n) in &self.slots {
            if let Some(c) = name.get() {
                f(c, n.load(Relaxed));
            }
        }
    }
}

/// The live stages' counters by (api, stage); held weakly, so a stage
/// that left the snapshot leaves the exposition.
type StageTable = Mutex<HashMap<(Arc<str>, Arc<str>), Weak<StageMetrics>>>;

/// Every metric of the process.
pub struct Metrics {
    stages: StageTable,
    errors: CodeCounters,
    pub quota_rejections: AtomicU64,
    pub throttle_rejections: AtomicU64,
    snapshot_version: AtomicU64,
    /// Unix milliseconds of the last publication.
    snapshot_published_ms: AtomicI64,
    admin_ops: Mutex<HashMap<(String, &'static str), u64>>,
    /// Access log lines dropped because the writer's queue was full.
    pub access_log_dropped: Arc<AtomicU64>,
    /// OTLP span export: dropped (queue full), failed, exported.
    pub otlp: super::otlp::Counters,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            stages: Mutex::new(HashMap::new()),
            errors: CodeCounters::new(),
            quota_rejections: AtomicU64::new(0),
            throttle_rejections: AtomicU64::new(0),
            snapshot_version: AtomicU64::new(0),
            snapshot_published_ms: AtomicI64::new(0),
            admin_ops: Mutex::new(HashMap::new()),
            access_log_dropped: Arc::new(AtomicU64::new(0)),
            otlp: super::otlp::Counters::default(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of an API's stage (snapshot build, not the hot path):
    /// the live ones if a snapshot still holds them, else new ones.
    pub fn stage(&self, api: &str, stage: &str) -> Arc<StageMetrics> {
        let mut map = lock(&self.stages);
        let key: (Arc<str>, Arc<str>) = (api.into(), stage.into());
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        // Drop the entries of stages no snapshot holds any more, so the
        // map stays as large as the live stages (amortized: only when a
        // stage is added).
        map.retain(|_, w| w.strong_count() > 0);
        let m = Arc::new(StageMetrics {
            api: key.0.clone(),
            stage: key.1.clone(),
            requests: [const { [const { AtomicU64::new(0) }; CLASSES.len()] }; METHODS.len()],
            latency: Histogram::default(),
            integration: Histogram::default(),
        });
        map.insert(key, Arc::downgrade(&m));
        m
    }

    /// A gateway-made error answer with this `x-apigw-error` code.
    #[inline]
    pub fn gateway_error(&self, code: &'static str) {
        self.errors.inc(code);
        match code {
            "QuotaExceeded" => {
                self.quota_rejections.fetch_add(1, Relaxed);
            }
            "Throttled" => {
                self.throttle_rejections.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    /// The snapshot now serves this store version.
    pub fn snapshot_published(&self, version: u64) {
        self.snapshot_version.store(version, Relaxed);
        self.snapshot_published_ms.store(now_ms(), Relaxed);
    }

    /// One management operation (`operation` is a method and a route
    /// template: a bounded set) and its outcome (a status class).
    pub fn admin_operation(&self, operation: String, status: u16) {
        let outcome = match status / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        *lock(&self.admin_ops)
            .entry((operation, outcome))
            .or_insert(0) += 1;
    }

    /// The live stages' counters.
    fn live_stages(&self) -> Vec<Arc<StageMetrics>> {
        let mut v: Vec<Arc<StageMetrics>> = lock(&self.stages)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        v.sort_by(|a, b| (&a.api, &a.stage).cmp(&(&b.api, &b.stage)));
        v
    }

    /// Everything, in the Prometheus text format (0.0.4).
    pub fn render(self: &Arc<Self>) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exported(self.clone())));
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct Exported(Arc<Metrics>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: T,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Exported {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let stages = m.live_stages();

        {
            let mut fam = enc.encode_descriptor(
                "apigw_requests",
                "Requests answered, by API, stage, method and status class.",
                None,
                MetricType::Counter,
            )?;
            for s in &stages {
                for (mi, row) in s.requests.iter().enumerate() {
                    for (ci, n) in row.iter().enumerate() {
                        let n = n.load(Relaxed);
                        if n == 0 {
                            continue;
                        }
                        let labels = [
                            ("api", &*s.api),
                            ("stage", &*s.stage),
                            ("method", METHODS[mi]),
                            ("status_class", CLASSES[ci]),
                        ];
                        ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
                    }
                }
            }
        }
        for (name, help, pick) in [
            (
                "apigw_request_duration_seconds",
                "Time from the request's arrival to its response head, by API and stage.",
                (|s: &StageMetrics| &s.latency) as fn(&StageMetrics) -> &Histogram,
            ),
            (
                "apigw_integration_duration_seconds",
                "Time to the integration's response head, by API and stage (requests that went upstream).",
                |s: &StageMetrics| &s.integration,
            ),
        ] {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for s in &stages {
                let (sum, count, buckets) = pick(s).snapshot();
                if count == 0 {
                    continue;
                }
                let labels = [("api", &*s.api), ("stage", &*s.stage)];
                fam.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "apigw_gateway_errors",
                "Error answers the gateway made, by x-apigw-error code.",
                None,
                MetricType::Counter,
            )?;
            let mut codes = Vec::new();
            m.errors.each(|c, n| codes.push((c, n)));
            codes.sort_unstable();
            for (code, n) in codes {
                ConstCounter::new(n).encode(fam.encode_family(&[("code", code)])?)?;
            }
        }
        counter(
            &mut enc,
            "apigw_quota_rejections",
            "Calls refused because the API key's quota was used up (429 QuotaExceeded).",
            m.quota_rejections.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "apigw_throttle_rejections",
            "Calls refused by a stage or method rate limit (429 Throttled).",
            m.throttle_rejections.load(Relaxed),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "apigw_upstream_connections",
                "Upstream connections: open (driven), idle (kept in the pool's idle lists).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(POOL.open.load(Relaxed).max(0))
                .encode(fam.encode_family(&[("state", "open")])?)?;
            ConstGauge::new(POOL.idle.load(Relaxed).max(0))
                .encode(fam.encode_family(&[("state", "idle")])?)?;
        }
        counter(
            &mut enc,
            "apigw_upstream_connects",
            "Upstream connections made.",
            POOL.connects.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "apigw_upstream_connect_failures",
            "Upstream connections that could not be made (refused, DNS, TLS, timeout).",
            POOL.connect_failures.load(Relaxed),
        )?;
        gauge(
            &mut enc,
            "apigw_snapshot_version",
            "The store version the published snapshot includes.",
            m.snapshot_version.load(Relaxed) as i64,
        )?;
        let at = m.snapshot_published_ms.load(Relaxed);
        gauge(
            &mut enc,
            "apigw_snapshot_age_seconds",
            "Seconds since the last snapshot publication.",
            if at == 0 {
                0.0
            } else {
                (now_ms() - at).max(0) as f64 / 1000.0
            },
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "apigw_admin_operations",
                "Management API operations, by method and route template, and outcome (status class).",
                None,
                MetricType::Counter,
            )?;
            let mut ops: Vec<((String, &'static str), u64)> = lock(&m.admin_ops)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            ops.sort_unstable();
            for ((op, outcome), n) in ops {
                ConstCounter::new(n).encode(
                    fam.encode_family(&[("operation", op.as_str()), ("outcome", outcome)])?,
                )?;
            }
        }
        counter(
            &mut enc,
            "apigw_access_log_dropped",
            "Access log lines dropped because the writer's queue was full.",
            m.access_log_dropped.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "apigw_otlp_spans_dropped",
            "Spans not exported because the OTLP exporter's queue was full.",
            m.otlp.dropped.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "apigw_otlp_spans_failed",
            "Spans in OTLP exports the collector did not take.",
            m.otlp.failed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "apigw_otlp_spans_exported",
            "Spans the OTLP collector took.",
            m.otlp.exported.load(Relaxed),
        )?;
        {
            let mut fam =
                enc.encode_descriptor("apigw_build", "Build information.", None, MetricType::Info)?;
            fam.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe_us(500); // le 0.0005
        h.observe_us(501); // le 0.001
        h.observe_us(20_000_000); // +Inf
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(b[0], (0.0005, 1));
        assert_eq!(b[1], (0.001, 1));
        assert_eq!(b[BOUNDS.len()], (f64::INFINITY, 1));
        assert!((sum - 20.001001).abs() < 1e-9);
    }

    #[test]
    fn a_dropped_stage_is_no_longer_exported() {
        let m = Metrics::new();
        let s = m.stage("a1", "dev");
        s.record(0, 200, 10, 0);
        assert!(Arc::ptr_eq(&s, &m.stage("a1", "dev")));
        let text = m.render().unwrap();
        assert!(text.contains(
            "apigw_requests_total{api=\"a1\",stage=\"dev\",method=\"GET\",status_class=\"2xx\"} 1"
        ));
        drop(s);
        let text = m.render().unwrap();
        assert!(!text.contains("a1"), "{text}");
    }

    #[test]
    fn error_codes_count_apart() {
        let m = Metrics::new();
        m.gateway_error("QuotaExceeded");
        m.gateway_error("Throttled");
        m.gateway_error("Throttled");
        let text = m.render().unwrap();
        assert!(text.contains("apigw_gateway_errors_total{code=\"Throttled\"} 2"));
        assert!(text.contains("apigw_quota_rejections_total 1"));
        assert!(text.contains("apigw_throttle_rejections_total 2"));
        assert!(text.contains("apigw_build_info{version="));
    }
}
