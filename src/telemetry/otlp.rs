//! OTLP/HTTP trace export (`[telemetry] otlp_endpoint`): one server span
//! per sampled data-plane request, sent off the request path.
//!
//! The logging phase hands a [`SpanRecord`] (ids, times, what the request
//! was; no formatting, no attribute list) to a bounded queue with
//! `try_send`: when the queue is full the span is dropped and counted
//! (`apigw_otlp_spans_dropped_total`), a worker never waits. One exporter
//! thread, with a single-threaded runtime of its own, takes the queued
//! spans every [`POLL`], turns them into the SDK's `SpanData` and posts
//! them through `opentelemetry-otlp`'s HTTP exporter (protobuf or JSON)
//! in batches of at most [`MAX_BATCH`], at least every [`INTERVAL`]. The
//! exporter's HTTP client is ours (hyper 1 + rustls, the crates the
//! gateway already has). A failed export is counted
//! (`apigw_otlp_spans_failed_total`) and logged at most once per
//! [`WARN_EVERY`]; it never reaches a request. The drain flushes what is
//! queued ([`Otlp::flush`]).
//!
//! The span id is the gateway's span of [`super::trace::Trace`], the one
//! the integration gets as the parent in its `traceparent`, so the
//! backend's spans are the gateway span's children; the parent is the
//! client's span when it sent a `traceparent`.
//!
//! With `otlp_endpoint` empty none of this exists: no thread, no queue,
//! and the data plane builds no span (one `None` check).

use super::trace::Sampler;
use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the exporter thread takes the queued spans.
const POLL: Duration = Duration::from_millis(100);
/// Queued spans are exported at least this often (sooner when a batch is
/// full).
const INTERVAL: Duration = Duration::from_secs(1);
/// Most spans in one export request.
const MAX_BATCH: usize = 512;
/// A failing collector is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Largest collector answer read.
const MAX_ANSWER: usize = 1 << 20;

/// The API, stage and route a span names, read on the exporter thread
/// (the data plane lends its snapshot's values; nothing is copied on the
/// request path).
pub trait RouteNames: Send + 'static {
    fn api_id(&self) -> Option<&str>;
    fn stage(&self) -> Option<&str>;
    fn deployment_id(&self) -> Option<&str>;
    /// The route template (the resource path, e.g. `/pets/{id}`).
    fn route(&self) -> Option<&str>;
}

/// What the request path records for one span.
pub struct SpanRecord {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: the trace started here.
    pub parent_id: u64,
    pub flags: u8,
    pub end: SystemTime,
    pub duration: Duration,
    pub method: Method,
    /// The request's URI (its query is never exported).
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub status: u16,
    /// The `x-apigw-error` code of an answer the gateway made.
    pub error: Option<&'static str>,
    /// Time to the integration's response head, µs (0: none called).
    pub integration_us: u64,
    pub client: IpAddr,
    pub request_id: Option<HeaderValue>,
    pub names: Option<Box<dyn RouteNames>>,
}

/// Counters the exporter keeps (shown on `/metrics` when it is on).
#[derive(Clone, Default, Debug)]
pub struct Counters {
    /// Spans refused by a full queue.
    pub dropped: Arc<AtomicU64>,
    /// Spans in exports the collector did not take.
    pub failed: Arc<AtomicU64>,
    /// Spans the collector took.
    pub exported: Arc<AtomicU64>,
}

/// The handle the data plane records through (cheap to clone).
#[derive(Clone)]
pub struct Otlp {
    tx: SyncSender<SpanRecord>,
    /// Which new traces are sampled.
    pub sampler: Sampler,
    counters: Counters,
    /// Flushes asked for / done (see [`Otlp::flush`]).
    flush_asked: Arc<AtomicU64>,
    flush_done: Arc<AtomicU64>,
}

/// How to export (from `[telemetry]`, see `config::TelemetryConfig`).
pub struct Settings {
    /// Where spans are posted (`…/v1/traces`).
    pub url: Uri,
    /// JSON instead of protobuf.
    pub json: bool,
    pub sample_ratio: f64,
    pub service_name: String,
    pub queue: usize,
    pub timeout: Duration,
}

impl Otlp {
    /// Build the exporter and start its thread.
    pub fn start(cfg: Settings, counters: Counters) -> anyhow::Result<Otlp> {
        let (url, timeout) = (cfg.url, cfg.timeout);
        // The transport's own error (the exporter reports "network
        // error"), for the warning.
        let last_error = Arc::new(std::sync::Mutex::new(String::new()));
        let protocol = if cfg.json {
            opentelemetry_otlp::Protocol::HttpJson
        } else {
            opentelemetry_otlp::Protocol::HttpBinary
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.to_string())
            .with_protocol(protocol)
            .with_timeout(timeout)
            .with_http_client(Client::new(timeout, last_error.clone()))
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let (tx, rx) = sync_channel::<SpanRecord>(cfg.queue.max(1));
        let otlp = Otlp {
            tx,
            sampler: Sampler::new(cfg.sample_ratio),
            counters: counters.clone(),
            flush_asked: Arc::new(AtomicU64::new(0)),
            flush_done: Arc::new(AtomicU64::new(0)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = Worker {
            rx,
            exporter,
            runtime,
            counters,
            scope: InstrumentationScope::builder("apigw")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            flush_asked: otlp.flush_asked.clone(),
            flush_done: otlp.flush_done.clone(),
            warned: None,
            failed_since_warn: 0,
            last_error,
        };
        std::thread::Builder::new()
            .name("apigw-otlp".into())
            .spawn(move || worker.run())?;
        // Never the URL's user info (a credential).
        tracing::info!(
            endpoint = %format_args!(
                "{}://{}{}",
                url.scheme_str().unwrap_or(""),
                url.authority().map_or("", |a| a.as_str().rsplit('@').next().unwrap_or("")),
                url.path()
            ),
            json = cfg.json,
            ratio = cfg.sample_ratio,
            "OTLP trace export on"
        );
        Ok(otlp)
    }

    /// Queue a finished span; dropped and counted when the queue is full.
    #[inline]
    pub fn send(&self, span: SpanRecord) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(span) {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Export every span queued before this call, waiting at most
    /// `within` (the end of a drain).
    pub async fn flush(&self, within: Duration) {
        let want = self.flush_asked.fetch_add(1, Relaxed) + 1;
        let done = tokio::time::timeout(within, async {
            while self.flush_done.load(Relaxed) < want {
                tokio::time::sleep(POLL / 4).await;
            }
        })
        .await;
        if done.is_err() {
            tracing::warn!("OTLP: spans still queued at the end of the drain were not exported");
        }
    }
}

struct Worker {
    rx: Receiver<SpanRecord>,
    exporter: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
    counters: Counters,
    scope: InstrumentationScope,
    flush_asked: Arc<AtomicU64>,
    flush_done: Arc<AtomicU64>,
    warned: Option<Instant>,
    failed_since_warn: u64,
    last_error: Arc<std::sync::Mutex<String>>,
}

impl Worker {
    fn run(mut self) {
        let mut pending: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
        let mut last_export = Instant::now();
        loop {
            std::thread::sleep(POLL);
            // A flush asked before this load finds its spans queued.
            let asked = self.flush_asked.load(Relaxed);
            let flushing = asked > self.flush_done.load(Relaxed);
            let gone = loop {
                match self.rx.try_recv() {
                    Ok(r) => {
                        pending.push(r.into_span_data(&self.scope));
                        if pending.len() >= MAX_BATCH {
                            self.export(&mut pending);
                            last_export = Instant::now();
                            // Without a flush, what arrives meanwhile
                            // waits for the next poll (the queue bounds it).
                            if !flushing {
                                break false;
                            }
                        }
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if !pending.is_empty() && (flushing || gone || last_export.elapsed() >= INTERVAL) {
                self.export(&mut pending);
                last_export = Instant::now();
            }
            if flushing {
                self.flush_done.store(asked, Relaxed);
            }
            if gone {
                let _ = self.exporter.shutdown();
                return;
            }
        }
    }

    fn export(&mut self, pending: &mut Vec<SpanData>) {
        let batch = std::mem::replace(pending, Vec::with_capacity(MAX_BATCH));
        let n = batch.len() as u64;
        match self.runtime.block_on(self.exporter.export(batch)) {
            Ok(()) => {
                self.counters.exported.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.counters.failed.fetch_add(n, Relaxed);
                self.failed_since_warn += n;
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    let cause = std::mem::take(&mut *super::lock(&self.last_error));
                    tracing::warn!(
                        error = %e,
                        cause = %cause,
                        spans_lost = self.failed_since_warn,
                        "OTLP export failed (logged at most every 10 s)"
                    );
                    self.warned = Some(Instant::now());
                    self.failed_since_warn = 0;
                }
            }
        }
    }
}

impl SpanRecord {
    /// The SDK's span: name `METHOD route` (`METHOD` when unrouted), kind
    /// server, the HTTP semantic-convention attributes and apigw's own.
    pub fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let names = self.names.as_deref();
        let route = names.and_then(|n| n.route());
        let method = match self.method {
            Method::GET
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::HEAD
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT => self.method.as_str(),
            _ => "_OTHER",
        };
        let name = match route {
            Some(r) => format!("{method} {r}"),
            None => method.to_string(),
        };
        let mut attributes = Vec::with_capacity(14);
        attributes.push(KeyValue::new("http.request.method", method.to_string()));
        if method == "_OTHER" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                self.method.as_str().to_string(),
            ));
        }
        if let Some(r) = route {
            attributes.push(KeyValue::new("http.route", r.to_string()));
        }
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(self.status),
        ));
        attributes.push(KeyValue::new("url.path", self.uri.path().to_string()));
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()));
        if let Some((address, port)) = host.map(split_host) {
            attributes.push(KeyValue::new("server.address", address.to_string()));
            if let Some(p) = port {
                attributes.push(KeyValue::new("server.port", i64::from(p)));
            }
        }
        attributes.push(KeyValue::new("client.address", self.client.to_string()));
        if let Some(n) = names {
            if let Some(a) = n.api_id() {
                attributes.push(KeyValue::new("apigw.api_id", a.to_string()));
            }
            if let Some(s) = n.stage() {
                attributes.push(KeyValue::new("apigw.stage", s.to_string()));
            }
            if let Some(d) = n.deployment_id() {
                attributes.push(KeyValue::new("apigw.deployment_id", d.to_string()));
            }
        }
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(KeyValue::new("apigw.request_id", id.to_string()));
        }
        if let Some(code) = self.error {
            attributes.push(KeyValue::new("apigw.error", code));
        }
        if self.integration_us > 0 {
            attributes.push(KeyValue::new(
                "apigw.integration_latency_ms",
                self.integration_us as f64 / 1000.0,
            ));
        }
        let status = if self.status >= 500 {
            Status::error(self.error.unwrap_or(""))
        } else {
            Status::Unset
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(self.trace_id),
                SpanId::from(self.span_id),
                TraceFlags::new(self.flags),
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(self.parent_id),
            parent_span_is_remote: self.parent_id != 0,
            span_kind: SpanKind::Server,
            name: name.into(),
            start_time: self.end.checked_sub(self.duration).unwrap_or(self.end),
            end_time: self.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// `host[:port]` or `[v6]:port` → (host, port).
fn split_host(h: &str) -> (&str, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            return (addr, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (h, None);
    }
    match h.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => match p.parse() {
            Ok(p) => (a, Some(p)),
            Err(_) => (h, None),
        },
        _ => (h, None),
    }
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The exporter's HTTP client: hyper 1 with rustls (webpki roots), so the
/// collector may be `http://` or `https://`; every request (connect,
/// send, answer) bounded by the export timeout.
struct Client {
    inner: hyper_util::client::legacy::Client<Connector, http_body_util::Full<Bytes>>,
    timeout: Duration,
    last_error: Arc<std::sync::Mutex<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("otlp::Client")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    fn new(timeout: Duration, last_error: Arc<std::sync::Mutex<String>>) -> Client {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(2)
                .build(https);
        Client {
            inner,
            timeout,
            last_error,
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt as _;
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
        let exchange = async {
            let response = self.inner.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        let r = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis()).into()),
        };
        if let Err(e) = &r {
            // hyper's error and its source (e.g. connection refused).
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            *super::lock(&self.last_error) = text;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl RouteNames for Names {
        fn api_id(&self) -> Option<&str> {
            Some("api1")
        }
        fn stage(&self) -> Option<&str> {
            Some("prod")
        }
        fn deployment_id(&self) -> Option<&str> {
            None
        }
        fn route(&self) -> Option<&str> {
            Some("/pets/{id}")
        }
    }

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x1122334455667788,
            parent_id: 0x00f067aa0ba902b7,
            flags: 1,
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            duration: Duration::from_millis(5),
            method: Method::GET,
            uri: "/prod/pets/7?api_key=secret".parse().unwrap(),
            host: Some(HeaderValue::from_static("gw.example:8080")),
            status: 502,
            error: Some("INTEGRATION_FAILURE"),
            integration_us: 1500,
            client: "10.0.0.1".parse().unwrap(),
            request_id: Some(HeaderValue::from_static("r-1")),
            names: Some(Box::new(Names)),
        }
    }

    fn attr<'a>(s: &'a SpanData, k: &str) -> Option<&'a opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_record_becomes_a_server_span() {
        let scope = InstrumentationScope::builder("apigw").build();
        let s = record().into_span_data(&scope);
        assert_eq!(s.name, "GET /pets/{id}");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(
            s.span_context.trace_id(),
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
        assert_eq!(s.span_context.span_id(), SpanId::from(0x1122334455667788));
        assert_eq!(s.parent_span_id, SpanId::from(0x00f067aa0ba902b7));
        assert!(s.parent_span_is_remote);
        assert_eq!(
            s.end_time.duration_since(s.start_time).unwrap(),
            Duration::from_millis(5)
        );
        assert_eq!(
            attr(&s, "url.path").map(|v| v.as_str().into_owned()),
            Some("/prod/pets/7".into())
        );
        assert_eq!(
            attr(&s, "server.address").map(|v| v.as_str().into_owned()),
            Some("gw.example".into())
        );
        assert_eq!(
            attr(&s, "server.port"),
            Some(&opentelemetry::Value::I64(8080))
        );
        assert_eq!(
            attr(&s, "http.response.status_code"),
            Some(&opentelemetry::Value::I64(502))
        );
        assert_eq!(
            attr(&s, "apigw.error").map(|v| v.as_str().into_owned()),
            Some("INTEGRATION_FAILURE".into())
        );
        assert!(matches!(s.status, Status::Error { .. }));
        assert!(s
            .attributes
            .iter()
            .all(|kv| !kv.value.as_str().contains("secret")));
    }

    #[test]
    fn unrouted_and_odd_methods() {
        let scope = InstrumentationScope::builder("apigw").build();
        let mut r = record();
        r.names = None;
        r.parent_id = 0;
        r.status = 404;
        r.method = Method::from_bytes(b"PURGE").unwrap();
        let s = r.into_span_data(&scope);
        assert_eq!(s.name, "_OTHER");
        assert!(!s.parent_span_is_remote);
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert_eq!(s.status, Status::Unset);
        assert!(attr(&s, "http.route").is_none());
        assert_eq!(
            attr(&s, "http.request.method_original").map(|v| v.as_str().into_owned()),
            Some("PURGE".into())
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let counters = Counters::default();
        let otlp = Otlp::start(
            Settings {
                // Nothing listens on the discard port: exports fail.
                url: "http://127.0.0.1:9/v1/traces".parse().unwrap(),
                json: false,
                sample_ratio: 1.0,
                service_name: "t".into(),
                queue: 4,
                timeout: Duration::from_millis(200),
            },
            counters.clone(),
        )
        .unwrap();
        let t = Instant::now();
        for _ in 0..1000 {
            otlp.send(record());
        }
        // Waiting for room (4 spans per 100 ms poll) would take 25 s.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let dropped = counters.dropped.load(Relaxed);
        assert!(dropped >= 900, "{dropped}");
        // The queued ones are tried and counted as failed, not exported.
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.failed.load(Relaxed) + dropped < 1000 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert_eq!(counters.failed.load(Relaxed) + dropped, 1000);
        assert_eq!(counters.exported.load(Relaxed), 0);
    }

    #[test]
    fn hosts_split() {
        assert_eq!(split_host("a.b:80"), ("a.b", Some(80)));
        assert_eq!(split_host("a.b"), ("a.b", None));
        assert_eq!(split_host("[::1]:8443"), ("::1", Some(8443)));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
