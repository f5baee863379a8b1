//! External issuers' key sets from files and URLs, against the real binary:
//! `jwks_file` only inside `jwks_dir`, `jwks_url` only https (unless
//! allowed), bounded in time and size, no redirects, and URL key sets
//! refreshed in the background so that a key rotation at the issuer
//! reaches the data plane without a management call.
//!
//! Tokens are signed here with Ed25519 keys (EdDSA) by the `jsonwebtoken`
//! crate; the JWKS servers are raw HTTP/1.1 over tokio sockets.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.jwks-tests.example";

/// Two Ed25519 key pairs (made with `openssl genpkey -algorithm ed25519`):
/// the private key (PKCS#8 PEM) and the public key as a JWK `x`.
const KEY_A_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJtecfelMHXYSWR575F5kIV4WWuh0xExzavRJmWMAWWX
-----END PRIVATE KEY-----";
const KEY_A_X: &str = "-GLJv0jOAyCdpygn7l7IAEskd1K134nBiMutHhtuFYc";
const KEY_B_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICwMrQb/4p6Z0D9n7Y3L5BGm1NgLx9kMVIdB4dbMs6ot
-----END PRIVATE KEY-----";
const KEY_B_X: &str = "CdluPtF83MQF7SqOPrh3Q2QCSfYLgdcYYDw-7Pex4zM";

fn jwks_a() -> Value {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "key-a", "use": "sig", "x": KEY_A_X}]})
}
fn jwks_b() -> Value {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "key-b", "use": "sig", "x": KEY_B_X}]})
}

/// `Bearer <token>` of `ISSUER`, signed with key A or B.
fn bearer(key_b: bool) -> String {
    let (pem, kid) = if key_b {
        (KEY_B_PEM, "key-b")
    } else {
        (KEY_A_PEM, "key-a")
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let now = now_ms() / 1000;
    let claims = json!({"iss": ISSUER, "sub": "user-1", "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed25519 key");
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign token");
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------
// A JWKS server whose answer the test changes
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Answer {
    /// 200 with this JSON and, if given, this Cache-Control.
    Json(Value, Option<&'static str>),
    /// This status, empty body.
    Status(u16),
    /// 200 with a valid JSON document of `n` bytes; `declared`: with a
    /// Content-Length (else delimited by closing the connection).
    Big { n: usize, declared: bool },
    /// Accept the connection, never answer.
    Hang,
    /// 302 to this URL.
    Redirect(String),
}

struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(answer: Answer) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new(answer));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (a, h) = (a.clone(), h.clone());
                tokio::spawn(serve_one(sock, a, h));
            }
        });
        JwksServer { addr, answer, hits }
    }
    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_one(
    mut sock: tokio::net::TcpStream,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let answer = answer.lock().unwrap().clone();
    let (status, extra, body, declared) = match answer {
        Answer::Json(v, cc) => {
            let extra = cc
                .map(|c| format!("Cache-Control: {c}\r\n"))
                .unwrap_or_default();
            (200, extra, v.to_string().into_bytes(), true)
        }
        Answer::Status(s) => (s, String::new(), Vec::new(), true),
        Answer::Big { n, declared } => {
            let mut doc = jwks_a().to_string();
            doc.pop(); // the closing brace
            doc.push_str(",\"pad\":\"");
            while doc.len() < n - 2 {
                doc.push('x');
            }
            doc.push_str("\"}");
            (200, String::new(), doc.into_bytes(), declared)
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        Answer::Redirect(to) => (302, format!("Location: {to}\r\n"), Vec::new(), true),
    };
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}"
    );
    if declared {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = sock.write_all(&bytes).await;
    let _ = sock.shutdown().await;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// An API with GET /dev/data behind JWT; returns (api id, invoke URL).
async fn jwt_api(gw: &Gateway, backend: &Backend, name: &str) -> (String, String) {
    let admin = gw.admin();
    let s = simple_api(&admin, name, "data", &backend.url("/data")).await;
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &json!({"cors_enabled": false, "jwt_enabled": true}),
        )
        .await
        .expect(200);
    let url = gw.invoke_url(&s.api_id, "/dev/data");
    (s.api_id, url)
}

async fn create_auth(admin: &Admin, api: &str, name: &str, external: Value) -> Resp {
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": name, "expiration_period": 30, "connected_stages": ["dev"],
                    "external_issuer": external}),
        )
        .await
}

async fn auth_count(admin: &Admin, api: &str) -> u64 {
    admin
        .get(&format!("/v1/apis/{api}/auths"))
        .await
        .expect(200)["count"]
        .as_u64()
        .expect("count")
}

async fn status_with(c: &reqwest::Client, url: &str, bearer: &str) -> u16 {
    match c.get(url).header("authorization", bearer).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Wait up to `within` for a call with `bearer` to answer `want`.
async fn wait_token(
    gw: &Gateway,
    url: &str,
    bearer: &str,
    want: u16,
    within: Duration,
    what: &str,
) {
    let c = data_client();
    let ok = eventually(within, || {
        let (c, url, bearer) = (c.clone(), url.to_string(), bearer.to_string());
        async move { status_with(&c, &url, &bearer).await == want }
    })
    .await;
    assert!(
        ok,
        "{what}: never {want} within {within:?}; logs:\n{}",
        gw.logs()
    );
}

fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::write(path, v.to_string()).expect("write JWKS");
}

// ---------------------------------------------------------------------------
// 1. jwks_file
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_is_off_by_default() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("jwks-file-off");
    let (api, _) = jwt_api(&gw, &backend, "jwks-file-off").await;
    // A perfectly good JWKS file the process could read.
    let file = gw.dir.path().join("jwks.json");
    write_json(&file, &jwks_a());
    for name in [file.display().to_string(), "jwks.json".to_string()] {
        let r = create_auth(
            &admin,
            &api,
            "idp",
            json!({"issuer": ISSUER, "jwks_file": name}),
        )
        .await;
        r.expect_bad_field("external_issuer.jwks_file");
        assert!(r.err_detail().contains("jwks_dir"), "{}", r.text());
    }
    assert_eq!(auth_count(&admin, &api).await, 0, "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_stays_inside_jwks_dir() {
    let root = tempfile::Builder::new()
        .prefix("apigw-jwks-")
        .tempdir()
        .expect("tempdir");
    let keys = root.path().join("keys");
    let outside = root.path().join("outside");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&outside).unwrap();
    write_json(&keys.join("a.json"), &jwks_a());
    // Valid key sets outside the directory: reading them would succeed.
    write_json(&outside.join("b.json"), &jwks_b());
    write_json(&root.path().join("b.json"), &jwks_b());
    std::os::unix::fs::symlink(outside.join("b.json"), keys.join("link.json")).unwrap();
    std::os::unix::fs::symlink(&outside, keys.join("sub")).unwrap();

    let gw = Gateway::start_with(&[("jwks_dir", &format!("{:?}", keys.display().to_string()))]);
    let admin = gw.admin();
    let backend = Backend::start("jwks-file");
    let (api, url) = jwt_api(&gw, &backend, "jwks-file").await;

    let outside_b = outside.join("b.json").display().to_string();
    for (name, why) in [
        ("../b.json", "parent directory"),
        ("../outside/b.json", "parent directory"),
        ("/etc/passwd", "absolute path"),
        (outside_b.as_str(), "absolute path to a valid JWKS"),
        ("link.json", "symlink out of the dir"),
        ("sub/b.json", "symlinked directory out of the dir"),
        ("missing.json", "no such file"),
        ("", "empty"),
    ] {
        let r = create_auth(
            &admin,
            &api,
            "idp-bad",
            json!({"issuer": ISSUER, "jwks_file": name}),
        )
        .await;
        r.expect_bad_field("external_issuer.jwks_file");
        let d = r.err_detail();
        for leak in [
            "root:",
            &root.path().display().to_string(),
            "/etc",
            "key-b",
            KEY_B_X,
        ] {
            assert!(!d.contains(leak), "{why}: detail leaks {leak:?}: {d}");
        }
    }
    assert_eq!(auth_count(&admin, &api).await, 0, "nothing created");

    // A file inside the directory works, on the data plane too.
    let r = create_auth(
        &admin,
        &api,
        "idp",
        json!({"issuer": ISSUER, "jwks_file": "a.json"}),
    )
    .await;
    let id = r.expect(201)["id"].as_str().expect("id").to_string();
    let shown = admin.get(&format!("/v1/apis/{api}/auths/{id}")).await;
    assert_eq!(
        shown.expect(200)["auth"]["external_issuer"]["jwks_source"],
        "file:a.json",
        "the source names the file, not the directory"
    );
    wait_token(
        &gw,
        &url,
        &bearer(false),
        200,
        Duration::from_secs(3),
        "key A from a.json",
    )
    .await;
    assert_eq!(status_with(&data_client(), &url, &bearer(true)).await, 401);
    assert_eq!(auth_count(&admin, &api).await, 1);
}

// ---------------------------------------------------------------------------
// 2. jwks_url
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_http_is_refused_by_default() {
    let server = JwksServer::start(Answer::Json(jwks_a(), None)).await;
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("jwks-url-https");
    let (api, _) = jwt_api(&gw, &backend, "jwks-url-https").await;
    for url in [
        server.url(),
        format!("http://user:secret@{}/jwks", server.addr),
        format!("file://{}", gw.config_path.display()),
        "ftp://example.com/jwks".to_string(),
    ] {
        let r = create_auth(
            &admin,
            &api,
            "idp",
            json!({"issuer": ISSUER, "jwks_url": url}),
        )
        .await;
        r.expect_bad_field("external_issuer.jwks_url");
        assert!(!r.err_detail().contains("secret"), "{}", r.text());
    }
    // https to a server that speaks plain HTTP: the TLS handshake fails.
    let https = server.url().replacen("http://", "https://", 1);
    create_auth(
        &admin,
        &api,
        "idp",
        json!({"issuer": ISSUER, "jwks_url": https}),
    )
    .await
    .expect_bad_field("external_issuer.jwks_url");
    assert_eq!(auth_count(&admin, &api).await, 0, "nothing created");
    assert_eq!(server.hits(), 0, "no plain-http request was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_is_bounded_in_time_and_size_and_not_redirected() {
    let good = JwksServer::start(Answer::Json(jwks_a(), None)).await;
    let bad = JwksServer::start(Answer::Status(500)).await;
    let gw = Gateway::start_with(&[
        ("jwks_allow_http", "true"),
        ("jwks_fetch_timeout_ms", "700"),
        ("jwks_max_bytes", "4096"),
        ("jwks_refresh_max_secs", "3600"),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("jwks-url");
    let (api, url) = jwt_api(&gw, &backend, "jwks-url").await;
    let ext = |u: String| json!({"issuer": ISSUER, "jwks_url": u});

    // Too large, declared or not.
    for declared in [true, false] {
        bad.set(Answer::Big { n: 5000, declared });
        let r = create_auth(&admin, &api, "idp", ext(bad.url())).await;
        r.expect_bad_field("external_issuer.jwks_url");
        assert!(r.err_detail().contains("larger"), "{}", r.text());
    }
    // Just under the limit is fine in size (then refused as a JWKS only for
    // its content: here the padding is an unknown member, which is allowed).
    bad.set(Answer::Big {
        n: 4000,
        declared: false,
    });
    let r = create_auth(&admin, &api, "idp-big-ok", ext(bad.url())).await;
    r.expect(201);
    admin
        .delete(&format!(
            "/v1/apis/{api}/auths/{}",
            r.json["id"].as_str().unwrap()
        ))
        .await
        .expect(204);

    // Never answers: refused after the timeout, not after the client's 60 s.
    bad.set(Answer::Hang);
    let t = Instant::now();
    let r = create_auth(&admin, &api, "idp", ext(bad.url())).await;
    r.expect_bad_field("external_issuer.jwks_url");
    assert!(r.err_detail().contains("700 ms"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    // A redirect to a good JWKS is not followed.
    let before = good.hits();
    bad.set(Answer::Redirect(good.url()));
    let r = create_auth(&admin, &api, "idp", ext(bad.url())).await;
    r.expect_bad_field("external_issuer.jwks_url");
    assert!(r.err_detail().contains("redirect"), "{}", r.text());
    assert_eq!(good.hits(), before, "the redirect target was not fetched");

    // An error status.
    bad.set(Answer::Status(500));
    create_auth(&admin, &api, "idp", ext(bad.url()))
        .await
        .expect_bad_field("external_issuer.jwks_url");
    assert_eq!(auth_count(&admin, &api).await, 0, "nothing created");

    // With jwks_allow_http, a local http JWKS works end to end.
    create_auth(&admin, &api, "idp", ext(good.url()))
        .await
        .expect(201);
    wait_token(
        &gw,
        &url,
        &bearer(false),
        200,
        Duration::from_secs(3),
        "key A by URL",
    )
    .await;
    assert_eq!(status_with(&data_client(), &url, &bearer(true)).await, 401);
    assert_eq!(auth_count(&admin, &api).await, 1);
}

// ---------------------------------------------------------------------------
// 3. Refresh
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_keys_are_refreshed_in_the_background() {
    // The issuer says max-age=1; the cap is 2 s. A second issuer says
    // max-age=3600: the cap bounds it.
    let idp = JwksServer::start(Answer::Json(jwks_a(), Some("public, max-age=1"))).await;
    let slow = JwksServer::start(Answer::Json(jwks_a(), Some("max-age=3600"))).await;
    let gw = Gateway::start_with(&[
        ("jwks_allow_http", "true"),
        ("jwks_refresh_max_secs", "2"),
        ("log", "\"warn,apigw::admin::jwks=info\""),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("jwks-refresh");
    let (api, url) = jwt_api(&gw, &backend, "jwks-refresh").await;
    create_auth(
        &admin,
        &api,
        "idp",
        json!({"issuer": ISSUER, "jwks_url": idp.url()}),
    )
    .await
    .expect(201);
    let (api2, _) = jwt_api(&gw, &backend, "jwks-refresh-2").await;
    create_auth(
        &admin,
        &api2,
        "idp2",
        json!({"issuer": ISSUER, "jwks_url": slow.url()}),
    )
    .await
    .expect(201);
    let (a, b) = (bearer(false), bearer(true));
    wait_token(&gw, &url, &a, 200, Duration::from_secs(3), "key A").await;
    assert_eq!(
        status_with(&data_client(), &url, &b).await,
        401,
        "key B not yet"
    );

    // Unchanged keys are fetched again (max-age=1 more often than the cap)
    // but nothing is committed.
    let (i0, s0) = (idp.hits(), slow.hits());
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let (di, ds) = (idp.hits() - i0, slow.hits() - s0);
    eprintln!("fetches in 6.5 s: max-age=1 {di}, max-age=3600 (cap 2 s) {ds}");
    assert!(
        (2..=5).contains(&ds),
        "max-age=3600 capped at 2 s: {ds} fetches in 6.5 s"
    );
    assert!(
        di > ds,
        "max-age=1 honoured: {di} fetches vs {ds} at the cap"
    );
    assert!(
        !gw.logs().contains("JWKS refreshed"),
        "no commit while unchanged:\n{}",
        gw.logs()
    );

    // Rotation at the issuer: B is accepted and A refused, no management call.
    idp.set(Answer::Json(jwks_b(), Some("public, max-age=1")));
    let t = Instant::now();
    wait_token(
        &gw,
        &url,
        &b,
        200,
        Duration::from_secs(5),
        "key B after rotation",
    )
    .await;
    eprintln!("rotation seen after {:?}", t.elapsed());
    assert_eq!(
        status_with(&data_client(), &url, &a).await,
        401,
        "key A after rotation"
    );
    let shown = admin.get(&format!("/v1/apis/{api}/auths")).await;
    assert_eq!(shown.expect(200)["count"], 1);

    // The issuer fails: the last good keys stay.
    idp.set(Answer::Status(500));
    let h = idp.hits();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        idp.hits() >= h + 2,
        "refreshes keep being tried (backing off to the cap)"
    );
    assert_eq!(
        status_with(&data_client(), &url, &b).await,
        200,
        "key B kept"
    );
    assert_eq!(status_with(&data_client(), &url, &a).await, 401);
    let logs = gw.logs();
    assert!(
        logs.contains("JWKS refresh failed"),
        "failure logged:\n{logs}"
    );
    assert_eq!(
        logs.matches("JWKS refreshed").count(),
        1,
        "one commit, at the rotation:\n{logs}"
    );

    // An invalid answer is not taken either.
    idp.set(Answer::Json(json!({"keys": []}), Some("max-age=1")));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status_with(&data_client(), &url, &b).await,
        200,
        "key B kept"
    );

    // And the refreshed keys were committed: they survive a restart even
    // with the issuer down.
    let mut gw = gw;
    gw.restart();
    let url = gw.invoke_url(&api, "/dev/data");
    wait_token(
        &gw,
        &url,
        &b,
        200,
        Duration::from_secs(3),
        "key B after restart",
    )
    .await;
}
