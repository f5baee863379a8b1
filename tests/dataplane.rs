//! Data plane against the real binary and a real recording backend:
//! forwarding, routing errors, IP access control, limits, upstream
//! failures, streaming with flat memory, and h2c.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(3);

/// API `fwd-api`:
///   /users            GET, POST  -> backend /backend/users
///   /users/{user-id}  GET        -> backend /backend/users/{user-id}/profile
///   /scf              GET        -> SCF (a function whose endpoint is down)
/// deployed to `dev`, access control allowing 127.0.0.1 connected.
struct Fwd {
    gw: Gateway,
    backend: Backend,
    api: String,
    client: reqwest::Client,
}

async fn fwd_setup(settings: &[(&str, &str)]) -> Fwd {
    let gw = Gateway::start_with(settings);
    let backend = Backend::start("b1");
    let admin = gw.admin();
    let api = admin.create_api("fwd-api").await;
    let root = admin.root_id(&api).await;
    let users = admin.create_resource(&api, &root, "users").await;
    let user = admin.create_resource(&api, &users, "{user-id}").await;
    let scf = admin.create_resource(&api, &root, "scf").await;
    admin
        .create_http_method(&api, &users, "GET", &backend.url("/backend/users"))
        .await;
    admin
        .create_http_method(&api, &users, "POST", &backend.url("/backend/users"))
        .await;
    admin
        .create_http_method(
            &api,
            &user,
            "GET",
            &backend.url("/backend/users/{user-id}/profile"),
        )
        .await;
    let function_id = admin
        .register_function("fwd-fn", &format!("http://127.0.0.1:{}/", closed_port()))
        .await;
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{scf}/methods"),
            &json!({"method_type": "GET", "integration_type": "SCF", "function_id": function_id}),
        )
        .await
        .expect(200);
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let client = data_client();
    let url = gw.invoke_url(&api, "/dev/users");
    wait_for_status(&gw, &client, &url, 200, WAIT, "the deployed API").await;
    backend.clear();
    Fwd {
        gw,
        backend,
        api,
        client,
    }
}

#[track_caller]
fn assert_gw_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    want_status: u16,
    code: &str,
) {
    assert_eq!(
        status,
        want_status,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        headers.get("x-apigw-error").and_then(|v| v.to_str().ok()),
        Some(code),
        "x-apigw-error; body {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    assert!(
        v["message"].is_string(),
        "error body must be {{\"message\": ...}}: {}",
        String::from_utf8_lossy(body)
    );
    assert!(
        headers.get("x-request-id").is_some(),
        "x-request-id missing on {want_status}"
    );
}

async fn get_full(
    client: &reqwest::Client,
    url: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, h, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_status_headers_body_params_query() {
    let f = fwd_setup(&[]).await;
    let url = f.gw.invoke_url(&f.api, "/dev/users/42?x=1&y=a%20b&x=2");
    let r = f
        .client
        .get(&url)
        .header("x-custom", "hello")
        .header("x-request-id", "my-req-123")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-backend").unwrap(),
        "yes",
        "backend headers are passed back"
    );
    assert_eq!(
        r.headers().get("x-request-id").unwrap(),
        "my-req-123",
        "client's x-request-id is kept"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tag"], "b1");

    let seen = f.backend.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri, "/backend/users/42/profile?x=1&y=a%20b&x=2",
        "param substitution + raw query"
    );
    assert_eq!(
        seen.header("host").as_deref(),
        Some(f.backend.addr.to_string().as_str()),
        "upstream Host = endpoint authority"
    );
    assert_eq!(seen.header("x-custom").as_deref(), Some("hello"));
    let xff = seen.header("x-forwarded-for").expect("x-forwarded-for");
    assert!(
        xff.contains("203.0.113.9") && xff.trim_end().ends_with("127.0.0.1"),
        "x-forwarded-for {xff:?}"
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some(f.gw.host(&f.api).as_str())
    );

    // a gateway-made request id when the client sends none, different each time
    let (s, h1, _) = get_full(&f.client, &f.gw.invoke_url(&f.api, "/dev/users")).await;
    assert_eq!(s, 200);
    let (_, h2, _) = get_full(&f.client, &f.gw.invoke_url(&f.api, "/dev/users")).await;
    let id1 = h1
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    let id2 = h2
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    assert!(!id1.is_empty() && id1 != id2, "{id1} {id2}");
    // the resource path is not appended, XFF is just the client without a prior hop
    let seen = f.backend.last();
    assert_eq!(seen.uri, "/backend/users");
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));

    // trailing slash ignored
    let (s, _, b) = get_full(&f.client, &f.gw.invoke_url(&f.api, "/dev/users/7/")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(f.backend.last().uri, "/backend/users/7/profile");

    // POST with a body and a content type; backend status passed through
    let payload = br#"{"name":"kim","tags":["a","b"]}"#.to_vec();
    let r = f
        .client
        .post(f.gw.invoke_url(&f.api, "/dev/users?src=test"))
        .header("content-type", "application/json; charset=utf-8")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = f.backend.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/backend/users?src=test");
    assert_eq!(seen.body, payload);
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_pooled_and_headers_repeat() {
    let f = fwd_setup(&[]).await;
    let url = f.gw.invoke_url(&f.api, "/dev/users");
    for _ in 0..20 {
        let r = f
            .client
            .get(&url)
            .header("x-backend-cookies", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            cookies,
            vec!["a=1; Path=/", "b=2; Path=/; HttpOnly"],
            "repeated response headers"
        );
        r.bytes().await.unwrap();
    }
    let peers: std::collections::BTreeSet<_> = f.backend.seen().iter().map(|s| s.peer).collect();
    assert!(
        peers.len() <= 2,
        "20 sequential requests used {} upstream connections: no keep-alive pool",
        peers.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_that_is_not_tls_is_502() {
    let gw = Gateway::start();
    let backend = Backend::start("plain");
    let admin = gw.admin();
    // an https endpoint on a plain-HTTP port: the TLS handshake fails
    let s = simple_api(
        &admin,
        "tls-api",
        "secure",
        &format!("https://{}/x", backend.addr),
    )
    .await;
    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/secure");
    wait_for_status(&gw, &c, &url, 502, WAIT, "the failing endpoint").await;
    let (s, h, b) = get_full(&c, &url).await;
    assert_gw_error(s, &h, &b, 502, "BadGateway");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_status_codes_pass_through() {
    let gw = Gateway::start();
    let backend = Backend::start("st");
    let admin = gw.admin();
    let s = simple_api(&admin, "status-api", "teapot", &backend.url("/status/418")).await;
    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/teapot");
    wait_for_status(&gw, &c, &url, 418, WAIT, "the teapot backend").await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert!(
        r.headers().get("x-apigw-error").is_none(),
        "a backend answer is not a gateway error"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tag"], "st");
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_dropped() {
    let f = fwd_setup(&[]).await;
    let host = f.gw.host(&f.api);
    let req = format!(
        "GET /dev/users/5 HTTP/1.1\r\nHost: {host}\r\nConnection: close, x-hop-token\r\nKeep-Alive: timeout=30\r\nX-Hop-Token: drop-me\r\nX-Backend-Hop: 1\r\nX-End-To-End: keep-me\r\n\r\n"
    );
    let (resp, raw) = raw_exchange(f.gw.data_addr, req.as_bytes(), Duration::from_secs(10)).await;
    let resp = resp.unwrap_or_else(|| panic!("no response: {}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = f.backend.last();
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("keep-me"));
    assert!(
        seen.header("x-hop-token").is_none(),
        "Connection-listed header forwarded: {:?}",
        seen.headers
    );
    assert!(
        seen.header("keep-alive").is_none(),
        "keep-alive forwarded: {:?}",
        seen.headers
    );
    if let Some(c) = seen.header("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-hop-token"),
            "client Connection forwarded: {c}"
        );
    }
    // response direction: the backend's hop-by-hop headers do not reach the client
    assert!(
        resp.header("x-resp-hop").is_none(),
        "Connection-listed response header passed: {:?}",
        resp.headers
    );
    assert!(
        resp.header("keep-alive").is_none(),
        "response keep-alive passed: {:?}",
        resp.headers
    );
    assert_eq!(resp.header("x-backend").as_deref(), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_errors_404_405() {
    let f = fwd_setup(&[]).await;
    let c = &f.client;
    // unknown API
    let (s, h, b) = get_full(
        c,
        &f.gw
            .invoke_url("0123456789abcdef0123456789abcdef", "/dev/users"),
    )
    .await;
    assert_gw_error(s, &h, &b, 404, "ApiNotFound");
    // host outside the invoke domain
    let req = b"GET /dev/users HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let (resp, raw) = raw_exchange(f.gw.data_addr, req, Duration::from_secs(5)).await;
    let resp = resp.unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-apigw-error").as_deref(), Some("ApiNotFound"));
    // unknown stage
    let (s, h, b) = get_full(c, &f.gw.invoke_url(&f.api, "/nostage/users")).await;
    assert_gw_error(s, &h, &b, 404, "StageNotFound");
    // unknown path
    for p in ["/dev/nothing", "/dev/users/42/extra", "/dev/userss"] {
        let (s, h, b) = get_full(c, &f.gw.invoke_url(&f.api, p)).await;
        assert_gw_error(s, &h, &b, 404, "ResourceNotFound");
    }
    // method missing: 405 with Allow
    let r = c
        .delete(f.gw.invoke_url(&f.api, "/dev/users"))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    let b = r.bytes().await.unwrap();
    assert_gw_error(s, &h, &b, 405, "MethodNotAllowed");
    let allow = h
        .get("allow")
        .expect("Allow header")
        .to_str()
        .unwrap()
        .to_string();
    let mut methods: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    methods.sort();
    assert_eq!(methods, vec!["GET", "POST"], "Allow: {allow}");
    let r = c
        .put(f.gw.invoke_url(&f.api, "/dev/users/9"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.headers().get("allow").unwrap().to_str().unwrap().trim(),
        "GET"
    );
    // the client's request id is echoed on errors too
    let r = c
        .get(f.gw.invoke_url(&f.api, "/dev/nothing"))
        .header("x-request-id", "err-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "err-id-1");
    // none of those reached the backend
    assert_eq!(f.backend.count(), 0, "{:?}", f.backend.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_access_control_default_deny_then_allow_then_deny() {
    let gw = Gateway::start();
    let backend = Backend::start("acl");
    let admin = gw.admin();
    let api = admin.create_api("acl-api").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &rid, "GET", &backend.url("/pong"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/ping");
    let st = |want: u16| {
        let c = c.clone();
        let url = url.clone();
        async move {
            eventually(WAIT, || {
                let c = c.clone();
                let url = url.clone();
                async move { status_of(&c, &url).await == want }
            })
            .await
        }
    };

    // Default allows nothing
    assert!(st(403).await, "a new stage must be denied by Default");
    let (s, h, b) = get_full(&c, &url).await;
    assert_gw_error(s, &h, &b, 403, "Forbidden");
    assert_eq!(backend.count(), 0);

    // an ACL not covering 127.0.0.1 still denies
    let other = admin
        .create_access_control(&api, "other-net", &["10.0.0.0/8"], &["dev"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_of(&c, &url).await, 403);

    // allow 127.0.0.1 (inside a CIDR list)
    let ac = admin
        .create_access_control(&api, "local", &["192.168.0.0/16,127.0.0.0/8"], &["dev"])
        .await;
    assert!(
        st(200).await,
        "connected ACL allowing 127.0.0.0/8 did not open the stage"
    );
    assert_eq!(backend.last().uri, "/pong");

    // disconnect (PUT without the stage) -> Default again
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{ac}"),
            &json!({"allowed_ip_addr": ["127.0.0.1"], "connected_stages": []}),
        )
        .await
        .expect(200);
    assert!(
        st(403).await,
        "disconnected stage must fall back to Default (deny)"
    );

    // reconnect, then change the IPs so that we are no longer allowed
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{ac}"),
            &json!({"allowed_ip_addr": ["127.0.0.1"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    assert!(st(200).await);
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{ac}"),
            &json!({"allowed_ip_addr": ["127.0.0.2"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    assert!(st(403).await, "changed IP list did not apply");
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{ac}"),
            &json!({"allowed_ip_addr": ["127.0.0.1"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    assert!(st(200).await);

    // deleting the ACL puts the stage back on Default
    let r = admin
        .delete(&format!("/v1/apis/{api}/access-controls/{ac}"))
        .await;
    assert_eq!(r.status, 204);
    assert!(st(403).await, "deleted ACL must leave the stage on Default");
    let _ = other;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_api_is_forbidden() {
    let gw = Gateway::start();
    let backend = Backend::start("priv");
    let admin = gw.admin();
    let r = admin
        .post(
            "/v1/apis",
            &json!({"name": "private-api", "endpoint_type": "PRIVATE"}),
        )
        .await;
    let api = r.expect(202)["id"].as_str().unwrap().to_string();
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &rid, "GET", &backend.url("/"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    // IP access control does not apply to PRIVATE APIs (SPEC): whether the
    // gateway refuses to create one (400) or stores it, it opens nothing.
    let r = admin
        .post(&format!("/v1/apis/{api}/access-controls"), &json!({"name": "local", "allowed_ip_addr": ["127.0.0.1"], "connected_stages": ["dev"]}))
        .await;
    assert!(
        r.status == 201 || r.status == 400,
        "{} {}",
        r.status,
        r.text()
    );
    let c = data_client();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, h, b) = get_full(&c, &gw.invoke_url(&api, "/dev/ping")).await;
    assert_eq!(
        s, 403,
        "a PRIVATE API called from outside an approved PrivateLink endpoint must be 403 (not reachable), whatever the JWT; got {s} {:?} {}",
        h.get("x-apigw-error"),
        String::from_utf8_lossy(&b)
    );
    assert!(h.get("x-apigw-error").is_some());
    assert_eq!(backend.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn scf_method_with_its_endpoint_down_is_502_function_error() {
    let f = fwd_setup(&[]).await;
    let (s, h, b) = get_full(&f.client, &f.gw.invoke_url(&f.api, "/dev/scf")).await;
    assert_gw_error(s, &h, &b, 502, "FunctionError");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_413_content_length_and_chunked() {
    let f = fwd_setup(&[("max_body_bytes", "1000")]).await;
    let url = f.gw.invoke_url(&f.api, "/dev/users");

    // at the limit: passes
    let r = f
        .client
        .post(&url)
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(f.backend.last().body_len, 1000);
    f.backend.clear();

    // Content-Length over the limit
    let r = f
        .client
        .post(&url)
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    let b = r.bytes().await.unwrap();
    assert_gw_error(s, &h, &b, 413, "PayloadTooLarge");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        f.backend
            .seen()
            .iter()
            .all(|x| x.body_error || x.body_len <= 1000),
        "more than the limit reached the backend as a complete body"
    );
    f.backend.clear();

    // chunked (no length) over the limit
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..10)
        .map(|_| Ok(bytes::Bytes::from(vec![b'c'; 500])))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = f.client.post(&url).body(body).send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    let b = r.bytes().await.unwrap();
    assert_gw_error(s, &h, &b, 413, "PayloadTooLarge");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // whatever reached the backend must have been aborted, never presented
    // as a complete (truncated) body
    let seen = f.backend.seen();
    assert!(
        seen.iter().all(|x| x.body_error),
        "the backend got a clean body from an over-limit request: {:?}",
        seen.iter()
            .map(|x| (x.body_len, x.body_error))
            .collect::<Vec<_>>()
    );

    // chunked under the limit passes
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..4)
        .map(|_| Ok(bytes::Bytes::from(vec![b'd'; 200])))
        .collect();
    let r = f
        .client
        .post(&url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(f.backend.last().body_len, 800);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_from_env_override() {
    // APIGW_MAX_BODY_BYTES wins over the file's 10 MiB
    let gw = Gateway::start_full(&[], &[("APIGW_MAX_BODY_BYTES", "2000")]);
    let backend = Backend::start("env");
    let admin = gw.admin();
    let s = simple_api(&admin, "env-api", "upload", &backend.url("/")).await;
    // POST needs a POST method
    admin
        .create_http_method(&s.api_id, &s.resource_id, "POST", &backend.url("/"))
        .await;
    admin.deploy(&s.api_id, "existing", Some("dev")).await;
    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/upload");
    let ok = eventually(WAIT, || {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.post(&url)
                .body(vec![1u8; 100])
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(ok, "small POST never succeeded; logs:\n{}", gw.logs());
    let r = c.post(&url).body(vec![1u8; 3000]).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn header_block_limit_431() {
    let f = fwd_setup(&[("max_header_bytes", "4096")]).await;
    let host = f.gw.host(&f.api);
    // comfortably under the limit: forwarded
    let small = "v".repeat(2500);
    let req = format!(
        "GET /dev/users HTTP/1.1\r\nHost: {host}\r\nX-Big: {small}\r\nConnection: close\r\n\r\n"
    );
    let (resp, raw) = raw_exchange(f.gw.data_addr, req.as_bytes(), Duration::from_secs(10)).await;
    let resp = resp.unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 200, "{}", resp.text());
    // over the limit: 431 (as many small headers, and as one big one)
    let many: String = (0..60)
        .map(|i| format!("X-H{i:02}: {}\r\n", "w".repeat(90)))
        .collect();
    let big = "v".repeat(6000);
    for extra in [many, format!("X-Big: {big}\r\n")] {
        let req =
            format!("GET /dev/users HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
        assert!(req.len() > 5000);
        let (resp, raw) =
            raw_exchange(f.gw.data_addr, req.as_bytes(), Duration::from_secs(10)).await;
        let resp =
            resp.unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)));
        assert_eq!(resp.status, 431, "{}", resp.text());
        assert_eq!(
            resp.header("x-apigw-error").as_deref(),
            Some("HeadersTooLarge"),
            "{:?}",
            resp.headers
        );
        assert!(
            resp.header("x-request-id").is_some(),
            "x-request-id missing on 431"
        );
        assert!(resp.json()["message"].is_string(), "{}", resp.text());
    }
    assert_eq!(
        f.backend.count(),
        1,
        "an oversized request reached the backend"
    );
}

/// Sends a request head that never ends to a gateway started with
/// `settings`, expects the gateway to give up well before our 8 s
/// deadline, and returns what it answered.
async fn send_endless_head(settings: &[(&str, &str)]) -> (Fwd, Option<RawResponse>, Vec<u8>) {
    let f = fwd_setup(settings).await;
    let host = f.gw.host(&f.api);
    let partial = format!("GET /dev/users HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let t0 = Instant::now();
    let (resp, raw) =
        raw_exchange(f.gw.data_addr, partial.as_bytes(), Duration::from_secs(8)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the gateway waited {took:?} for a slow header block"
    );
    assert_eq!(f.backend.count(), 0);
    (f, resp, raw)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_sender_is_cut() {
    let (_f, resp, raw) = send_endless_head(&[("header_read_timeout_ms", "500")]).await;
    let r = resp.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(r.header("x-apigw-error").as_deref(), Some("RequestTimeout"));
    assert!(r.json()["message"].is_string(), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_sender_is_cut_without_parking() {
    // keepalive_park_ms = 0: no driver tick, hyper's own header timer
    // closes the connection (without an answer).
    let settings = [
        ("header_read_timeout_ms", "500"),
        ("keepalive_park_ms", "0"),
    ];
    let (_f, resp, raw) = send_endless_head(&settings).await;
    if let Some(r) = resp {
        assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&raw));
    }
}

/// Reads from `s` until one whole response is in `buf` (or the peer closes
/// or `within` passes); returns it and what followed it.
async fn read_one(
    s: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Option<RawResponse>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + within;
    loop {
        if let Some((r, true)) = parse_response(&buf) {
            return (Some(r), buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (parse_response(&buf).map(|r| r.0), buf),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_sender_is_cut_after_a_keepalive_request() {
    use tokio::io::AsyncWriteExt;
    let f = fwd_setup(&[("header_read_timeout_ms", "500")]).await;
    let host = f.gw.host(&f.api);
    let mut s = tokio::net::TcpStream::connect(f.gw.data_addr)
        .await
        .expect("connect");
    let full = format!("GET /dev/users HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(full.as_bytes()).await.expect("write");
    let (first, raw) = read_one(&mut s, Duration::from_secs(5)).await;
    let first = first.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&raw)));
    assert_eq!(first.status, 200, "{}", first.text());
    // The connection is idle and kept; now a head that never ends.
    let partial = format!("GET /dev/users HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    s.write_all(partial.as_bytes()).await.expect("write");
    let t0 = Instant::now();
    let (second, raw) = read_one(&mut s, Duration::from_secs(8)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the gateway waited {took:?} for a slow header block"
    );
    let second = second.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
    assert_eq!(second.status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(f.backend.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_not_a_slow_header_sender() {
    // A request in flight longer than header_read_timeout is waited for.
    let gw = Gateway::start_with(&[("header_read_timeout_ms", "400")]);
    let backend = Backend::start("b1");
    let slow = backend.url("/sleep/1500/slow");
    let api = deployed_api(&gw, "slow-up", &[("slow", "GET", slow.as_str())]).await;
    let client = data_client();
    let url = gw.invoke_url(&api, "/dev/slow");
    let t0 = Instant::now();
    let resp = client.get(&url).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_refused_502() {
    let gw = Gateway::start_with(&[("upstream_connect_timeout_ms", "1000")]);
    let admin = gw.admin();
    let port = closed_port();
    let s = simple_api(
        &admin,
        "dead-api",
        "dead",
        &format!("http://127.0.0.1:{port}/x"),
    )
    .await;
    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/dead");
    wait_for_status(&gw, &c, &url, 502, WAIT, "the failing endpoint").await;
    let t0 = Instant::now();
    let (s, h, b) = get_full(&c, &url).await;
    assert_gw_error(s, &h, &b, 502, "BadGateway");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_slow_504() {
    let gw = Gateway::start_with(&[("upstream_timeout_ms", "700")]);
    let backend = Backend::start("slow");
    let admin = gw.admin();
    let api = admin.create_api("slow-api").await;
    let root = admin.root_id(&api).await;
    let slow = admin.create_resource(&api, &root, "slow").await;
    let fast = admin.create_resource(&api, &root, "fast").await;
    admin
        .create_http_method(&api, &slow, "GET", &backend.url("/sleep/3000"))
        .await;
    admin
        .create_http_method(&api, &fast, "GET", &backend.url("/sleep/100"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "local", &["127.0.0.1"], &["dev"])
        .await;
    let c = data_client();
    let fast_url = gw.invoke_url(&api, "/dev/fast");
    wait_for_status(&gw, &c, &fast_url, 200, WAIT, "the fast route").await;
    let t0 = Instant::now();
    let (s, h, b) = get_full(&c, &gw.invoke_url(&api, "/dev/slow")).await;
    let took = t0.elapsed();
    assert_gw_error(s, &h, &b, 504, "GatewayTimeout");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2500),
        "504 after {took:?}"
    );
    // the gateway is fine afterwards
    assert_eq!(status_of(&c, &fast_url).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge() {
    let f = fwd_setup(&[]).await;
    let c = h2c_client();
    let r = c
        .get(f.gw.invoke_url(&f.api, "/dev/users/77?h=2"))
        .header("x-request-id", "h2-id")
        .send()
        .await
        .expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-request-id").unwrap(), "h2-id");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["uri"], "/backend/users/77/profile?h=2");
    let seen = f.backend.last();
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some(f.gw.host(&f.api).as_str()),
        "h2 :authority is the forwarded host"
    );
    // errors over h2 too
    let r = c
        .get(f.gw.invoke_url(&f.api, "/dev/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers().get("x-apigw-error").unwrap(),
        "ResourceNotFound"
    );
    // a POST body over h2
    let r = c
        .post(f.gw.invoke_url(&f.api, "/dev/users"))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(f.backend.last().body_len, 100_000);
}

const BIG: u64 = 200 * 1024 * 1024;
const HWM_LIMIT_KIB: u64 = 100 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn streams_200mib_request_with_flat_memory() {
    let gw = Gateway::start_with(&[("max_body_bytes", "1073741824")]);
    let backend = Backend::start("up");
    let admin = gw.admin();
    let api = admin.create_api("upload-api").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "upload").await;
    admin
        .create_http_method(&api, &rid, "POST", &backend.url("/count"))
        .await;
    admin
        .create_http_method(&api, &rid, "GET", &backend.url("/count"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "local", &["127.0.0.1"], &["dev"])
        .await;
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/upload");
    wait_for_status(&gw, &c, &url, 200, WAIT, "the upload route").await;
    let before = gw.vm_hwm_kib();

    let t0 = Instant::now();
    let r = c
        .post(&url)
        .body(reqwest::Body::wrap_stream(pattern_stream(BIG)))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], BIG, "{v}");
    assert_eq!(v["pattern_ok"], true, "the body was altered");
    let seen = backend.last();
    assert_eq!(seen.body_len, BIG);
    assert!(seen.pattern_ok && !seen.body_error);
    let hwm = gw.vm_hwm_kib();
    eprintln!(
        "200 MiB upload in {:?}; gateway VmHWM {} KiB (before {} KiB)",
        t0.elapsed(),
        hwm,
        before
    );
    assert!(
        hwm < HWM_LIMIT_KIB,
        "gateway peak RSS {hwm} KiB while streaming 200 MiB: the body is buffered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_200mib_response_with_flat_memory() {
    let gw = Gateway::start();
    let backend = Backend::start("down");
    let admin = gw.admin();
    let api = admin.create_api("download-api").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "download").await;
    let ping = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &rid, "GET", &backend.url(&format!("/big/{BIG}")))
        .await;
    admin
        .create_http_method(&api, &ping, "GET", &backend.url("/"))
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "local", &["127.0.0.1"], &["dev"])
        .await;
    let c = data_client();
    let ping_url = gw.invoke_url(&api, "/dev/ping");
    wait_for_status(&gw, &c, &ping_url, 200, WAIT, "the ping route").await;
    let url = gw.invoke_url(&api, "/dev/download");
    let t0 = Instant::now();
    let r = c.get(&url).send().await.expect("download");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = 0u64;
    let mut ok = true;
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        if ok && !pattern_matches(got, &chunk) {
            ok = false;
        }
        got += chunk.len() as u64;
    }
    assert_eq!(got, BIG);
    assert!(ok, "the response body was altered");
    let hwm = gw.vm_hwm_kib();
    eprintln!(
        "200 MiB download in {:?}; gateway VmHWM {} KiB",
        t0.elapsed(),
        hwm
    );
    assert!(
        hwm < HWM_LIMIT_KIB,
        "gateway peak RSS {hwm} KiB while streaming 200 MiB: the body is buffered"
    );
}

/// A raw upstream that answers each request with `ok` and then closes the
/// connection without saying so (no `Connection: close`), as servers with
/// a short keep-alive timeout do. Returns its address and a counter of the
/// connections it accepted.
async fn closing_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed right after the answer.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_connections_survive_bodies_empty_answers_and_upstream_closes() {
    let gw = Gateway::start();
    let backend = Backend::start("pool");
    let (closing, accepted) = closing_upstream().await;
    let closing_url = format!("http://{closing}/x");
    let api = deployed_api(
        &gw,
        "pool-api",
        &[
            ("data", "GET", &backend.url("/backend/data")),
            ("data", "POST", &backend.url("/backend/data")),
            ("empty", "GET", &backend.url("/status/204")),
            ("closes", "GET", &closing_url),
        ],
    )
    .await;
    let client = data_client();
    let url = gw.invoke_url(&api, "/dev/data");
    backend.clear();

    // Requests with bodies, bodiless requests and empty answers, one after
    // another, all on the same pooled upstream connection(s).
    let body = vec![b'x'; 100 * 1024];
    for i in 0..6 {
        let r = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "POST {i}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["body_len"],
            json!(body.len()),
            "POST {i} body reached the backend whole"
        );
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {i}");
        r.bytes().await.unwrap();
        let r = client
            .get(gw.invoke_url(&api, "/dev/empty"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "empty answer {i}");
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 18, "every request reached the backend once");
    let peers: std::collections::BTreeSet<_> = seen.iter().map(|s| s.peer).collect();
    assert!(
        peers.len() <= 2,
        "18 sequential requests used {} upstream connections",
        peers.len()
    );

    // An upstream that closes after every answer: the pool notices the
    // closed connection and opens a new one; the client sees no error.
    let closes_url = gw.invoke_url(&api, "/dev/closes");
    for i in 0..10 {
        let r = client.get(&closes_url).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} after the upstream closed");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        10,
        "one upstream connection per request"
    );
}

/// Read one HTTP/1.1 response (Content-Length framed) from a raw socket:
/// (status, lower-cased head, body); status 0 when the peer closed first.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed inside a response body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let status = head[9..12].parse().unwrap();
            return (status, head, body);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return (0, String::new(), Vec::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_parked_resumed_and_closed() {
    use tokio::io::AsyncWriteExt;
    // hyper alone would close an idle connection at header_read_timeout
    // (800 ms); parked after 200 ms, it lives until keepalive_timeout.
    let gw = Gateway::start_with(&[
        ("keepalive_park_ms", "200"),
        ("keepalive_timeout_ms", "2000"),
        ("header_read_timeout_ms", "800"),
    ]);
    let backend = Backend::start("park");
    let api = deployed_api(
        &gw,
        "park-api",
        &[
            ("fast", "GET", &backend.url("/fast")),
            ("slow", "GET", &backend.url("/sleep/700/slow")),
        ],
    )
    .await;
    let host = gw.host(&api);
    let req = |path: &str| format!("GET /dev/{path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.data_port()))
        .await
        .unwrap();
    let mut buf = Vec::new();

    s.write_all(req("fast").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);

    // Idle past the header timeout: parked, then resumed on the same socket.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.write_all(req("fast").as_bytes()).await.unwrap();
    let (status, head, _) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "request after the connection was parked");
    assert!(!head.contains("connection: close"), "{head}");

    // Two pipelined requests, sent at once to a parked connection.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all((req("fast") + &req("fast")).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200, "pipelined 1");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200, "pipelined 2");

    // A request longer than the park interval is answered in full and the
    // connection stays usable.
    s.write_all(req("slow").as_bytes()).await.unwrap();
    let (status, head, _) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "slow request");
    assert!(!head.contains("connection: close"), "{head}");
    s.write_all(req("fast").as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf).await.0,
        200,
        "after the slow one"
    );

    // Idle longer than keepalive_timeout (+ park): the gateway closes it.
    let started = Instant::now();
    let (status, _, _) =
        tokio::time::timeout(Duration::from_secs(6), read_response(&mut s, &mut buf))
            .await
            .expect("an idle connection must be closed by keepalive_timeout");
    assert_eq!(status, 0, "closed, not answered");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(1900) && idle < Duration::from_millis(4500),
        "closed after {idle:?} idle (keepalive 2 s + park 0.2-0.4 s)"
    );
    assert_eq!(
        backend
            .seen()
            .iter()
            .filter(|r| r.uri.contains("slow"))
            .count(),
        1
    );
}
