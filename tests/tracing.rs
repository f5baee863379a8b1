//! OTLP trace export against the real binary: a Python OTLP/HTTP receiver
//! (tests/fixtures/otlp_receiver.py, protobuf decoded by the
//! opentelemetry-proto package, JSON by json) records what the gateway
//! exports; the recording backend shows the `traceparent` the integration
//! got. Checked: the caller's trace id and span become the span's trace
//! and parent, the span id is the parent id the backend received, the
//! attributes and status, sampling, the flush at drain, and a collector
//! that is down failing no request.

mod common;
use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The receiver process and the file it appends span lines to.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/fixtures/otlp_receiver.py"))
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver did not start: {line:?}"));
        Receiver {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("\"http://127.0.0.1:{}\"", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace_id`, waiting up to 10 s for at least one.
    async fn wait_trace(&self, trace_id: &str) -> Vec<Value> {
        let found = eventually(Duration::from_secs(10), || async {
            self.spans().iter().any(|s| s["trace_id"] == trace_id)
        })
        .await;
        assert!(found, "no span of trace {trace_id}: {:?}", self.spans());
        self.spans()
            .into_iter()
            .filter(|s| s["trace_id"] == trace_id)
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `traceparent` → (trace id, parent id, flags).
fn split_tp(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    (p[1].into(), p[2].into(), p[3].into())
}

/// An API with GET /items and GET /items/{item-id} to the backend, deployed to
/// `dev`, reachable from 127.0.0.1.
async fn items_api(gw: &Gateway, backend: &Backend) -> String {
    let admin = gw.admin();
    let api = admin.create_api("traced").await;
    let root = admin.root_id(&api).await;
    let items = admin.create_resource(&api, &root, "items").await;
    let item = admin.create_resource(&api, &items, "{item-id}").await;
    admin
        .create_http_method(&api, &items, "GET", &backend.url("/items"))
        .await;
    admin
        .create_http_method(&api, &item, "GET", &backend.url("/item"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let url = gw.invoke_url(&api, "/dev/items");
    wait_for_status(gw, &data_client(), &url, 200, Duration::from_secs(5), "api").await;
    api
}

async fn get(url: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut r = data_client().get(url);
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp);
    }
    r.send().await.unwrap()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attrs"][key]
}

#[tokio::test]
async fn spans_continue_the_callers_trace_and_are_flushed_at_drain() {
    let receiver = Receiver::start();
    let backend = Backend::start("traced");
    let mut gw = Gateway::start_with(&[
        ("otlp_endpoint", &receiver.endpoint()),
        ("otlp_service_name", "\"apigw-test\""),
        ("metrics_listen", "\"127.0.0.1:0\""),
    ]);
    let api = items_api(&gw, &backend).await;

    // Not sampled by the caller: continued, flag kept, nothing exported.
    let unsampled = "0123456789abcdef0123456789abcdef";
    let r = get(
        &gw.invoke_url(&api, "/dev/items"),
        Some(&format!("00-{unsampled}-{CALLER_SPAN}-00")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (t, _, flags) = split_tp(&backend.last().header("traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));

    // The caller's sampled trace: the span continues it.
    let r = get(
        &gw.invoke_url(&api, "/dev/items/42?api_key=SECRETQ"),
        Some(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen = backend.last();
    assert_eq!(seen.uri, "/item?api_key=SECRETQ");
    let (t, forwarded_span, flags) = split_tp(&seen.header("traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (CALLER_TRACE, "01"));
    assert_ne!(forwarded_span, CALLER_SPAN);

    // No traceparent: a new trace, the gateway's span its root.
    let r = get(&gw.invoke_url(&api, "/dev/items"), None).await;
    assert_eq!(r.status(), 200);
    let (new_trace, new_span, flags) = split_tp(&backend.last().header("traceparent").unwrap());
    assert_eq!(flags, "01");

    // The gateway's own answer: 404 with its x-apigw-error code.
    let r = get(
        &gw.invoke_url(&api, "/dev/nowhere"),
        Some("00-11111111111111111111111111111111-2222222222222222-01"),
    )
    .await;
    assert_eq!(r.status(), 404);
    let code = r.headers()["x-apigw-error"].to_str().unwrap().to_string();

    // The caller's trace.
    let spans = receiver.wait_trace(CALLER_TRACE).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(
        s["span_id"],
        forwarded_span.as_str(),
        "the backend's parent"
    );
    assert_eq!(s["parent_span_id"], CALLER_SPAN);
    assert_eq!(s["name"], "GET /items/{item-id}");
    assert_eq!(s["kind"], "SPAN_KIND_SERVER");
    assert_eq!(s["status"], "STATUS_CODE_UNSET");
    assert!(s["content_type"]
        .as_str()
        .unwrap()
        .starts_with("application/x-protobuf"));
    assert_eq!(s["scope"], "apigw");
    assert_eq!(s["resource"]["service.name"], "apigw-test");
    assert_eq!(attr(s, "http.request.method"), "GET");
    assert_eq!(attr(s, "http.route"), "/items/{item-id}");
    assert_eq!(attr(s, "http.response.status_code"), 200);
    assert_eq!(attr(s, "url.path"), "/dev/items/42");
    assert_eq!(
        attr(s, "server.address"),
        format!("{api}.apigw.localhost").as_str()
    );
    assert_eq!(attr(s, "server.port"), gw.data_port() as i64);
    assert_eq!(attr(s, "client.address"), "127.0.0.1");
    assert_eq!(attr(s, "apigw.api_id"), api.as_str());
    assert_eq!(attr(s, "apigw.stage"), "dev");
    assert_eq!(attr(s, "apigw.request_id"), request_id.as_str());
    assert!(attr(s, "apigw.integration_latency_ms").as_f64().unwrap() > 0.0);
    assert!(attr(s, "apigw.error").is_null());
    let (start, end) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
    assert!(start > 1_700_000_000_000_000_000 && start <= end, "{s}");
    assert!(!s.to_string().contains("SECRETQ"), "{s}");

    // The new trace: the span is its root.
    let spans = receiver.wait_trace(&new_trace).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["span_id"], new_span.as_str());
    assert_eq!(spans[0]["parent_span_id"], "");
    assert_eq!(spans[0]["name"], "GET /items");
    assert_eq!(attr(&spans[0], "http.route"), "/items");

    // The gateway's 404: no route, its error code.
    let spans = receiver
        .wait_trace("11111111111111111111111111111111")
        .await;
    let s = &spans[0];
    assert_eq!(s["parent_span_id"], "2222222222222222");
    assert_eq!(s["name"], "GET");
    assert_eq!(attr(s, "http.response.status_code"), 404);
    assert_eq!(attr(s, "apigw.error"), code.as_str());
    assert_eq!(attr(s, "apigw.api_id"), api.as_str());
    assert!(attr(s, "http.route").is_null());
    assert_eq!(s["status"], "STATUS_CODE_UNSET", "4xx is the client's");

    // Sent first, so exported with or before the others: never.
    assert!(
        !receiver.spans().iter().any(|s| s["trace_id"] == unsampled),
        "an unsampled trace was exported"
    );
    let text = reqwest::get(format!("http://{}/metrics", gw.listening("metrics")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("apigw_otlp_spans_exported_total ")
                && l.split(' ').nth(1).unwrap().parse::<f64>().unwrap() >= 3.0),
        "{text}"
    );
    assert!(text.contains("apigw_otlp_spans_dropped_total 0"), "{text}");

    // A call answered just before SIGTERM: its span is exported by the
    // drain (spans otherwise wait up to a second in the queue).
    let last_trace = "33333333333333333333333333333333";
    let r = get(
        &gw.invoke_url(&api, "/dev/items"),
        Some(&format!("00-{last_trace}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(r.status(), 200);
    sigterm(&gw.child);
    let st = wait_exit(&mut gw.child, Duration::from_secs(15)).expect("exited");
    assert!(st.success(), "{st:?}\n{}", gw.logs());
    assert_eq!(
        receiver
            .spans()
            .iter()
            .filter(|s| s["trace_id"] == last_trace)
            .count(),
        1,
        "the last span was not flushed at drain:\n{}",
        gw.logs()
    );
}

#[tokio::test]
async fn json_export_and_a_collector_down_fail_no_request() {
    let mut receiver = Receiver::start();
    let backend = Backend::start("traced-json");
    let mut gw = Gateway::start_with(&[
        ("otlp_endpoint", &receiver.endpoint()),
        ("otlp_protocol", "\"http/json\""),
        ("otlp_timeout_ms", "1000"),
        ("metrics_listen", "\"127.0.0.1:0\""),
    ]);
    let api = items_api(&gw, &backend).await;

    let r = get(
        &gw.invoke_url(&api, "/dev/items/7"),
        Some(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, forwarded_span, _) = split_tp(&backend.last().header("traceparent").unwrap());
    let spans = receiver.wait_trace(CALLER_TRACE).await;
    let s = &spans[0];
    assert!(s["content_type"]
        .as_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(s["span_id"], forwarded_span.as_str());
    assert_eq!(s["parent_span_id"], CALLER_SPAN);
    assert_eq!(s["kind"], "SPAN_KIND_SERVER");
    assert_eq!(attr(s, "http.route"), "/items/{item-id}");
    assert_eq!(attr(s, "http.response.status_code"), 200);
    assert_eq!(s["resource"]["service.name"], "apigw");

    // The collector goes away: requests go on, exports fail and are
    // logged (rate-limited), the process stays up.
    receiver.stop();
    let c = data_client();
    for i in 0..30 {
        assert_eq!(
            status_of(&c, &gw.invoke_url(&api, &format!("/dev/items/{i}"))).await,
            200
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = eventually(Duration::from_secs(10), || async {
        gw.logs().contains("OTLP export failed")
    })
    .await;
    assert!(failed, "no export error logged:\n{}", gw.logs());
    // Three seconds of failing exports (one a second), one warning.
    assert_eq!(
        gw.logs().matches("OTLP export failed").count(),
        1,
        "{}",
        gw.logs()
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway died:\n{}",
        gw.logs()
    );
    assert_eq!(status_of(&c, &gw.invoke_url(&api, "/dev/items")).await, 200);
    let text = reqwest::get(format!("http://{}/metrics", gw.listening("metrics")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("apigw_otlp_spans_failed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(failed >= 1.0, "{text}");
}

#[tokio::test]
async fn ratio_zero_exports_only_what_the_caller_sampled() {
    let receiver = Receiver::start();
    let backend = Backend::start("traced-ratio");
    let gw = Gateway::start_with(&[
        ("otlp_endpoint", &receiver.endpoint()),
        ("otlp_sample_ratio", "0.0"),
    ]);
    let api = items_api(&gw, &backend).await;
    // New traces are not sampled, and the integration is told so.
    let r = get(&gw.invoke_url(&api, "/dev/items"), None).await;
    assert_eq!(r.status(), 200);
    let (new_trace, _, flags) = split_tp(&backend.last().header("traceparent").unwrap());
    assert_eq!(flags, "00");
    // The caller's sampled trace is exported all the same.
    let r = get(
        &gw.invoke_url(&api, "/dev/items"),
        Some(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(receiver.wait_trace(CALLER_TRACE).await.len(), 1);
    assert!(!receiver.spans().iter().any(|s| s["trace_id"] == new_trace));
    // items_api's own readiness calls were new traces too: none exported.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s["trace_id"] == CALLER_TRACE),
        "{:?}",
        receiver.spans()
    );
}
