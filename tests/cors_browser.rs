//! CORS shown in a real browser: headless Chromium loads a page from
//! another origin that fetch()es the invoke URL with a custom header (a
//! preflighted request) and reports what it could read. The stage with
//! CORS on succeeds; the stage with CORS off is blocked by the browser.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return c.to_string();
        }
    }
    panic!("headless Chromium is required for this test (.ci/run installs Debian's chromium)");
}

/// Serves the test page and collects its reports on `/report?...`.
async fn page_server(page: String, reports: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let page = page.clone();
            let reports = reports.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let page = page.clone();
                        let reports = reports.clone();
                        async move {
                            let body = if req.uri().path() == "/report" {
                                let q = req.uri().query().unwrap_or("").to_string();
                                reports.lock().unwrap().push(percent_decode(&q));
                                String::from("ok")
                            } else {
                                page
                            };
                            let resp = hyper::Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_fetch_with_cors_on_and_off() {
    let browser = chromium();
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("cors");
    let s = simple_api(&admin, "cors-api", "data", &backend.url("/data")).await;
    let api = s.api_id.clone();
    admin.deploy(&api, "new", Some("nocors")).await;
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{}", s.access_control_id),
            &json!({"allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": ["dev", "nocors"]}),
        )
        .await
        .expect(200);

    let reports = Arc::new(Mutex::new(Vec::new()));
    // The page's origin must be known before CORS is configured: bind first.
    let page_addr_holder = Arc::new(Mutex::new(String::new()));
    let dev = gw.invoke_url(&api, "/dev/data");
    let nocors = gw.invoke_url(&api, "/nocors/data");
    let missing = gw.invoke_url(&api, "/dev/nothing-here");
    let page = format!(
        r#"<!doctype html><html><body><pre id="out">running</pre><script>
async function probe(name, url) {{
  try {{
    const r = await fetch(url, {{ headers: {{ 'X-Custom': 'yes' }} }});
    const t = await r.text();
    return name + '=OK:' + r.status + ':' + r.headers.get('x-request-id') + ':' + t.length + ':' + (t.includes('"tag":"cors"') || t.includes('message'));
  }} catch (e) {{
    return name + '=BLOCKED:' + e.name;
  }}
}}
(async () => {{
  const results = [await probe('on', '{dev}'), await probe('off', '{nocors}'), await probe('err', '{missing}')];
  document.getElementById('out').textContent = results.join('\n');
  await fetch('/report?' + encodeURIComponent(results.join('|')));
}})();
</script></body></html>"#
    );
    let page_addr = page_server(page, reports.clone()).await;
    *page_addr_holder.lock().unwrap() = page_addr.to_string();
    let origin = format!("http://{page_addr}");

    admin
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &json!({"cors_enabled": true, "jwt_enabled": false,
                    "allow_origins": [origin], "allow_methods": ["GET", "POST"],
                    "allow_headers": ["X-Custom", "Content-Type"],
                    "expose_headers": ["x-request-id"], "max_age": 60, "allow_credentials": false}),
        )
        .await
        .expect(200);

    // The preflight is answered by the gateway without calling the backend.
    let c = data_client();
    backend.clear();
    let pre = c
        .request(reqwest::Method::OPTIONS, &dev)
        .header("Origin", &origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "x-custom")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        origin.as_str()
    );
    assert_eq!(
        pre.headers()["access-control-allow-headers"],
        "X-Custom, Content-Type"
    );
    assert_eq!(pre.headers()["access-control-max-age"], "60");
    assert_eq!(backend.count(), 0, "preflight must not reach the backend");

    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--remote-debugging-port=0")
        .arg(format!("http://{page_addr}/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        if let Some(r) = reports.lock().unwrap().first().cloned() {
            break r;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the page never reported (chromium did not run the script)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();

    let parts: Vec<&str> = report.split('|').collect();
    assert_eq!(parts.len(), 3, "{report}");
    assert!(
        parts[0].starts_with("on=OK:200:"),
        "CORS on must succeed: {report}"
    );
    assert!(
        parts[0].ends_with(":true"),
        "the page read the backend body: {report}"
    );
    assert!(
        !parts[0].contains(":null:"),
        "x-request-id is exposed: {report}"
    );
    assert!(
        parts[1].starts_with("off=BLOCKED"),
        "CORS off must be blocked: {report}"
    );
    // A gateway error carries the CORS headers, so the browser shows it.
    assert!(
        parts[2].starts_with("err=OK:404:"),
        "gateway 404 readable: {report}"
    );
}
