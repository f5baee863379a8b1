//! The holes a hostile client found (issue [5]), each shown closed against
//! the real binary: upstream URL injection, dot segments and escaped
//! separators in path parameters, bad chunked bodies, Host handling,
//! replayed signatures, Content-Type, required fields, JSON arrays as
//! bodies, stalled response bodies, and hiding the checked credentials.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend over raw sockets that records every byte each connection
/// sends it and, per connection, answers once with `answer` (then keeps
/// the connection open, sending nothing more) when it is not empty.
struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    closed: Arc<Mutex<usize>>,
}

impl RawBackend {
    fn start(answer: &'static [u8]) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(0));
        let (rec, cl) = (received.clone(), closed.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let (rec, cl) = (rec.clone(), cl.clone());
                std::thread::spawn(move || {
                    let ix = {
                        let mut r = rec.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let mut answered = false;
                    let mut buf = [0u8; 8192];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let mut r = rec.lock().unwrap();
                                r[ix].extend_from_slice(&buf[..n]);
                                let head_done = r[ix].windows(4).any(|w| w == b"\r\n\r\n");
                                drop(r);
                                if head_done && !answered && !answer.is_empty() {
                                    answered = true;
                                    let _ = s.write_all(answer);
                                }
                            }
                        }
                    }
                    *cl.lock().unwrap() += 1;
                });
            }
        });
        RawBackend {
            addr,
            received,
            closed,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn bytes_received(&self) -> usize {
        self.received.lock().unwrap().iter().map(Vec::len).sum()
    }

    fn connections_closed(&self) -> usize {
        *self.closed.lock().unwrap()
    }
}

/// Send raw bytes to the data plane; the response and whether the
/// gateway closed the connection (EOF) within `timeout`.
async fn raw(gw: &Gateway, request: &[u8], timeout: Duration) -> (RawResponse, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.data_addr)
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + timeout;
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let (resp, _) = parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "no response to {:?}: {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&buf)
        )
    });
    (resp, closed)
}

fn get_req(host: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_url_placeholders_stay_out_of_the_authority() {
    let mut gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("authority");
    let api = admin.create_api("authority-api").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "{host}").await;
    let methods = format!("/v1/apis/{api}/resources/{rid}/methods");
    let bad = [
        "http://{host}/x",
        "http://{host}.example/x",
        "http://127.0.0.1:{host}/x",
        "http://user@{host}/x",
        "http://127.0.0.1{host}/x",
        "http://{host}",
        "https://{host}?q=1",
    ];
    for url in bad {
        admin
            .post(
                &methods,
                &json!({"method_type": "GET", "integration_type": "HTTP", "endpoint_url": url}),
            )
            .await
            .expect_bad_field("endpoint_url");
    }
    assert_eq!(
        admin.get(&methods).await.expect(200)["methods"],
        json!([]),
        "a refused create left a method"
    );
    // Placeholders in the path and query are fine.
    let good = backend.url("/p/{host}?h={host}");
    admin.create_http_method(&api, &rid, "GET", &good).await;
    for url in bad {
        admin
            .put(
                &format!("{methods}/GET"),
                &json!({"api_key_required": false, "integration_type": "HTTP", "endpoint_url": url,
                        "query_strings": {}, "request_headers": {}}),
            )
            .await
            .expect_bad_field("endpoint_url");
    }
    let m = admin.get(&format!("{methods}/GET")).await;
    assert_eq!(m.expect(200)["method"]["endpoint_url"], good.as_str());
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "local", &["127.0.0.1/32"], &["dev"])
        .await;
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/127.0.0.1:1");
    wait_for_status(&gw, &c, &url, 200, Duration::from_secs(10), "deployed").await;
    assert_eq!(backend.last().uri, "/p/127.0.0.1:1?h=127.0.0.1:1");

    // A database from before this check: the method is refused at snapshot
    // build, answers 502 IntegrationMisconfigured and is never forwarded.
    gw.kill();
    let db = gw.dir.path().join("apigw.db");
    let conn = rusqlite::Connection::open(&db).expect("open store");
    let n = conn
        .execute(
            "UPDATE objects SET body = replace(body, ?1, ?2)",
            rusqlite::params![good, "http://{host}/x"],
        )
        .expect("rewrite store");
    assert!(n >= 2, "method and deployment rewritten: {n}");
    drop(conn);
    gw.restart();
    let before = backend.count();
    let target = format!("{}", backend.addr);
    let r = c
        .get(gw.invoke_url(&api, &format!("/dev/{target}")))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.headers()["x-apigw-error"].to_str().unwrap(),
        "IntegrationMisconfigured"
    );
    assert_eq!(backend.count(), before, "nothing forwarded");
    assert!(
        gw.logs().contains("endpoint_url refused"),
        "the refusal is logged: {}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_never_leave_their_segment() {
    let backend = Backend::start("dots");
    for keep in [false, true] {
        let policy = if keep { "\"keep\"" } else { "\"reject\"" };
        let gw = Gateway::start_with(&[("escaped_path_separators", policy)]);
        let admin = gw.admin();
        let s = simple_api(&admin, "dots-api", "items", &backend.url("/items")).await;
        let api = s.api_id.clone();
        let id = admin.create_resource(&api, &s.resource_id, "{item}").await;
        admin
            .create_http_method(&api, &id, "GET", &backend.url("/items/{item}"))
            .await;
        let details = admin.create_resource(&api, &s.root_id, "details").await;
        admin
            .create_http_method(&api, &details, "GET", &backend.url("/details"))
            .await;
        admin.deploy(&api, "existing", Some("dev")).await;
        let host = gw.host(&api);
        let c = data_client();
        wait_for_status(
            &gw,
            &c,
            &gw.invoke_url(&api, "/dev/items/ok"),
            200,
            Duration::from_secs(10),
            "deployed",
        )
        .await;
        assert_eq!(backend.last().uri, "/items/ok");

        let before = backend.count();
        // Encoded dot segments as a parameter: refused, whatever the case.
        for v in ["%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%2E"] {
            let (r, _) = raw(
                &gw,
                &get_req(&host, &format!("/dev/items/{v}")),
                Duration::from_secs(5),
            )
            .await;
            assert_eq!(r.status, 400, "{v}: {}", r.text());
            assert_eq!(
                r.header("x-apigw-error").as_deref(),
                Some("InvalidPathParameter"),
                "{v}"
            );
            assert!(r.json()["message"].is_string(), "{v}: {}", r.text());
        }
        // Literal dot segments are removed before routing (RFC 3986):
        // `/dev/items/..` is `/dev/`, `/dev/items/x/../../details` is
        // `/dev/details`; neither reaches the backend as `..`.
        let (r, _) = raw(
            &gw,
            &get_req(&host, "/dev/items/.."),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text());
        let (r, _) = raw(
            &gw,
            &get_req(&host, "/dev/items/x/../../details"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(backend.last().uri, "/details");
        let (r, _) = raw(
            &gw,
            &get_req(&host, "/dev/./items/./y"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(backend.last().uri, "/items/y");
        // Escaped separators: the configured policy.
        for v in ["a%2Fb", "a%2fb", "a%5Cb", "a%00b"] {
            let (r, _) = raw(
                &gw,
                &get_req(&host, &format!("/dev/items/{v}")),
                Duration::from_secs(5),
            )
            .await;
            if keep {
                assert_eq!(r.status, 200, "{v}: {}", r.text());
                assert_eq!(
                    backend.last().uri,
                    format!("/items/{v}"),
                    "forwarded still encoded"
                );
            } else {
                assert_eq!(r.status, 400, "{v}: {}", r.text());
                assert_eq!(
                    r.header("x-apigw-error").as_deref(),
                    Some("InvalidPathParameter")
                );
            }
        }
        let forwarded: Vec<String> = backend.seen()[before..]
            .iter()
            .map(|s| s.uri.clone())
            .collect();
        assert!(
            forwarded
                .iter()
                .all(|u| !u.contains("..") && !u.to_ascii_lowercase().contains("%2e")),
            "a dot segment reached the backend: {forwarded:?}"
        );
        let expected = if keep { 2 + 4 } else { 2 };
        assert_eq!(forwarded.len(), expected, "{forwarded:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunked_bodies_are_the_clients_fault() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let raw_backend = RawBackend::start(b"");
    let backend = Backend::start("chunks");
    let api = deployed_api(
        &gw,
        "chunks-api",
        &[
            ("fine", "GET", &backend.url("/fine")),
            ("upload", "POST", &raw_backend.url("/up")),
        ],
    )
    .await;
    let host = gw.host(&api);
    let bodies: [&[u8]; 5] = [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
    ];
    for body in bodies {
        let mut req = format!(
            "POST /dev/upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        let (r, closed) = raw(&gw, &req, Duration::from_secs(5)).await;
        let what = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{what:?}: {}", r.text());
        assert_eq!(
            r.header("x-apigw-error").as_deref(),
            Some("BadRequestBody"),
            "{what:?}"
        );
        assert!(
            closed,
            "{what:?}: the connection is closed after a framing error"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(raw_backend.bytes_received(), 0, "nothing was forwarded");
    // Counted as client errors in the reports.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let rep = admin
        .get(&format!(
            "/v1/apis/{api}/reports?stage_name=dev&start_date={today}&end_date={today}"
        ))
        .await;
    let v = rep.expect(200);
    // (deployed_api's readiness GET is the one 2xx.)
    assert_eq!(v["reports"][0]["error_4xx_count"], 5, "{v}");
    assert_eq!(v["reports"][0]["error_5xx_count"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_handling() {
    let gw = Gateway::start();
    let backend = Backend::start("hosts");
    let api = deployed_api(&gw, "hosts-api", &[("data", "GET", &backend.url("/data"))]).await;
    let host = gw.host(&api);
    // Two Host headers: 400 (as nginx), nothing forwarded.
    let before = backend.count();
    let req = format!(
        "GET /dev/data HTTP/1.1\r\nHost: {host}\r\nHost: other.apigw.localhost\r\nConnection: close\r\n\r\n"
    );
    let (r, _) = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("x-apigw-error").as_deref(), Some("BadRequest"));
    assert_eq!(backend.count(), before);
    // HTTP/1.1 without Host: 400 (RFC 9112 §3.2).
    let (r, _) = raw(
        &gw,
        b"GET /dev/data HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(backend.count(), before);
    // Host names are case-insensitive.
    let (r, _) = raw(
        &gw,
        &get_req(&host.to_ascii_uppercase(), "/dev/data"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    let target = format!("http://{host}/dev/data");
    let (r, _) = raw(
        &gw,
        &get_req("nothing.example", &target),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let target = format!("http://nothing.apigw.localhost:{}/dev/data", gw.data_port());
    let (r, _) = raw(&gw, &get_req(&host, &target), Duration::from_secs(5)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("x-apigw-error").as_deref(), Some("ApiNotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_accepted_once() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let c = reqwest::Client::new();
    let send =
        |method: reqwest::Method, path: &str, headers: &[(String, String)], body: Option<&str>| {
            let mut rb = c.request(method, format!("{}{path}", admin.base()));
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            if let Some(b) = body {
                rb = rb
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            rb.send()
        };
    let h = admin.signed_headers("GET", "/v1/apis");
    let r = send(reqwest::Method::GET, "/v1/apis", &h, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(reqwest::Method::GET, "/v1/apis", &h, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "ReplayedRequest", "{v}");

    let h = admin.signed_headers("POST", "/v1/apis");
    let body = r#"{"name": "replayed-api", "description": "once"}"#;
    let r = send(reqwest::Method::POST, "/v1/apis", &h, Some(body))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = send(reqwest::Method::POST, "/v1/apis", &h, Some(body))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let list = admin.get("/v1/apis?name=replayed-api").await;
    assert_eq!(list.expect(200)["count"], 1, "the replay created nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_bodies_are_json_objects() {
    let gw = Gateway::start();
    let admin = gw.admin();
    // Content-Type must be application/json.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let r = admin
            .send_raw(
                "POST",
                "/v1/apis",
                Some(br#"{"name": "typed-api"}"#.to_vec()),
                Some(ct),
                &admin.opts,
            )
            .await;
        r.expect_error(415, "UnsupportedMediaType");
    }
    assert_eq!(
        admin.get("/v1/apis?name=typed-api").await.expect(200)["count"],
        0
    );
    let r = admin
        .send_raw(
            "POST",
            "/v1/apis",
            Some(br#"{"name": "typed-api"}"#.to_vec()),
            Some("application/json; charset=utf-8"),
            &admin.opts,
        )
        .await;
    let api = r.expect(202)["id"].as_str().unwrap().to_string();

    // Arrays do not fill a request's fields in order.
    let root = admin.root_id(&api).await;
    let r = admin
        .send_raw(
            "POST",
            &format!("/v1/apis/{api}/resources/{root}"),
            Some(br#"["xx-part"]"#.to_vec()),
            None,
            &admin.opts,
        )
        .await;
    r.expect_bad_field("body");
    assert!(!r.err_detail().contains("struct"), "{}", r.text());
    assert_eq!(admin.resources(&api).await.len(), 1, "no resource created");
    let plan = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans"),
            &json!({"name": "plan-one", "description": "d", "limit": 100, "rate": "day"}),
        )
        .await;
    let plan_id = plan.expect(200)["usage_plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin
        .send_raw(
            "PUT",
            &format!("/v1/apis/{api}/usage-plans/{plan_id}/quota"),
            Some(br#"[5, "hour"]"#.to_vec()),
            None,
            &admin.opts,
        )
        .await;
    r.expect_bad_field("body");
    let p = admin
        .get(&format!("/v1/apis/{api}/usage-plans/{plan_id}"))
        .await;
    let p = p.expect(200)["usage_plan"].clone();
    assert_eq!(
        (p["limit"].clone(), p["rate"].clone()),
        (json!(100), json!("day")),
        "{p}"
    );
    // Nested objects too, and no Rust type names in the detail.
    let r = admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "ext-one", "expiration_period": 9, "connected_stages": null,
                    "external_issuer": ["https://issuer.example", null, {"keys": []}, null, null]}),
        )
        .await;
    r.expect_bad_field("external_issuer");
    let r = admin
        .post(
            "/v1/apis",
            &json!({"name": "tagged-api", "tags": [["k", "v"]]}),
        )
        .await;
    r.expect_bad_field("tags");
    let detail = r.err_detail();
    assert!(
        !detail.contains("struct") && !detail.contains("Tag"),
        "{detail}"
    );
    let r = admin
        .post("/v1/apis", &json!({"name": "tagged-api", "tags": 5}))
        .await;
    r.expect_bad_field("tags");
    assert!(!r.err_detail().contains("Vec"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_stages_is_required() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("required");
    let s = simple_api(&admin, "required-api", "data", &backend.url("/data")).await;
    let api = s.api_id.clone();
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/data");
    wait_for_status(&gw, &c, &url, 200, Duration::from_secs(10), "deployed").await;
    let acs = format!("/v1/apis/{api}/access-controls");
    admin
        .post(
            &acs,
            &json!({"name": "no-stages", "allowed_ip_addr": ["10.0.0.1"]}),
        )
        .await
        .expect_bad_field("connected_stages");
    assert_eq!(
        admin.access_controls(&api).await.len(),
        2,
        "nothing created"
    );
    // Set without the field: 400, and `dev` keeps its access control.
    admin
        .put(
            &format!("{acs}/{}", s.access_control_id),
            &json!({"allowed_ip_addr": ["127.0.0.1/32"]}),
        )
        .await
        .expect_bad_field("connected_stages");
    let ac = admin.access_control_named(&api, "allow-local").await;
    assert_eq!(flat_list(&ac["connected_stages"]), vec!["dev"]);
    assert_eq!(status_of(&c, &url).await, 200);
    // null is allowed: it connects nothing (dev goes back to Default).
    admin
        .put(
            &format!("{acs}/{}", s.access_control_id),
            &json!({"allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": null}),
        )
        .await
        .expect(200);
    wait_for_status(
        &gw,
        &c,
        &url,
        403,
        Duration::from_secs(10),
        "dev back on Default",
    )
    .await;

    let auths = format!("/v1/apis/{api}/auths");
    admin
        .post(&auths, &json!({"name": "tok-one", "expiration_period": 9}))
        .await
        .expect_bad_field("connected_stages");
    assert_eq!(admin.get(&auths).await.expect(200)["count"], 0);
    let created = admin
        .post(
            &auths,
            &json!({"name": "tok-one", "expiration_period": 9, "connected_stages": ["dev"]}),
        )
        .await;
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    admin
        .put(&format!("{auths}/{id}"), &json!({}))
        .await
        .expect_bad_field("connected_stages");
    let a = admin.get(&format!("{auths}/{id}")).await;
    assert_eq!(
        flat_list(&a.expect(200)["auth"]["connected_stages"]),
        vec!["dev"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_ended() {
    let gw = Gateway::start_with(&[("upstream_body_idle_timeout_ms", "600")]);
    let stalled = RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello");
    let backend = Backend::start("after");
    let api = deployed_api(
        &gw,
        "stall-api",
        &[
            ("fine", "GET", &backend.url("/ok")),
            ("slow", "GET", &stalled.url("/slow")),
        ],
    )
    .await;
    let host = gw.host(&api);
    let started = Instant::now();
    let (r, closed) = raw(&gw, &get_req(&host, "/dev/slow"), Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello", "the part the backend sent");
    assert!(closed, "the client connection is closed, not left hanging");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "ended after the idle timeout: {took:?}"
    );
    // The upstream connection is dropped too, and others are served.
    let ok = eventually(Duration::from_secs(5), || async {
        stalled.connections_closed() >= 1
    })
    .await;
    assert!(ok, "the stalled upstream connection was closed");
    let (r, _) = raw(&gw, &get_req(&host, "/dev/fine"), Duration::from_secs(5)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_credentials_are_forwarded_unless_hidden() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("creds");
    let s = simple_api(&admin, "creds-api", "open", &backend.url("/open")).await;
    let api = s.api_id.clone();
    let rid = admin.create_resource(&api, &s.root_id, "data").await;
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({"method_type": "GET", "integration_type": "HTTP",
                    "endpoint_url": backend.url("/data"), "api_key_required": true}),
        )
        .await
        .expect(200);
    admin.deploy(&api, "existing", Some("dev")).await;
    let plan = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans"),
            &json!({"name": "gold", "description": "d", "limit": 1000, "rate": "day"}),
        )
        .await;
    let plan_id = plan.expect(200)["usage_plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let k = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans/{plan_id}/api-keys"),
            &json!({"name": "client-one", "description": "first"}),
        )
        .await;
    let kv = k.expect(200)["api_key"].clone();
    let key = kv["key"].as_str().unwrap().to_string();
    let created = admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "tok-one", "expiration_period": 9, "connected_stages": ["dev"]}),
        )
        .await;
    let token = created.expect(201)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let config = |hide: Option<bool>| {
        let mut v = json!({"cors_enabled": false, "jwt_enabled": true, "usage_plan_id": plan_id,
                           "connected_api_keys": [kv["id"]]});
        if let Some(h) = hide {
            v["hide_credentials"] = json!(h);
        }
        v
    };
    let r = admin
        .put(&format!("/v1/apis/{api}/stages/dev/config"), &config(None))
        .await;
    assert_eq!(
        r.expect(200)["stage"]["hide_credentials"],
        false,
        "forwarded by default"
    );
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/data");
    let bearer = format!("Bearer {token}");
    let call = || {
        c.get(&url)
            .header("x-scp-apikey", &key)
            .header("authorization", &bearer)
            .send()
    };
    let ok = eventually(Duration::from_secs(10), || async {
        call().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    assert!(ok, "the keyed, token-checked call is served");
    let seen = backend.last();
    assert_eq!(seen.header("x-scp-apikey").as_deref(), Some(key.as_str()));
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some(bearer.as_str())
    );

    let r = admin
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &config(Some(true)),
        )
        .await;
    assert_eq!(r.expect(200)["stage"]["hide_credentials"], true);
    assert_eq!(call().await.unwrap().status(), 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-scp-apikey"), None, "the key is hidden");
    assert_eq!(
        seen.header("authorization"),
        None,
        "the checked token is hidden"
    );
    // Absent from a later Set Stage Config: the setting stays.
    let r = admin
        .put(&format!("/v1/apis/{api}/stages/dev/config"), &config(None))
        .await;
    assert_eq!(r.expect(200)["stage"]["hide_credentials"], true);
}
