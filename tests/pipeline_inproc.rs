//! The data-plane pipeline driven in-process: a snapshot built from model
//! entities, a `DataPlane` around it, and `dataplane::handle` called with
//! `Full`/`Empty` bodies — no gateway process, no client socket. Each test
//! asserts an answer's status and `x-apigw-error` code (and its header).

use apigw::dataplane::{handle, DataPlane, Peer, RespBody};
use apigw::snapshot::{BuildContext, Published};
use apigw::store::model::*;
use apigw::store::quota::{Acquiring, LocalQuota, PendingAcquire, QuotaCounters};
use apigw::store::State;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const API: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "0123456789abcdef0123456789abcdef.apigw.localhost:8080";
const KEY: &str = "key-value-0123456789";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// How the test API's one stage `dev` is set up.
#[derive(Clone)]
struct Setup {
    /// Allowed client ranges of the stage's access control.
    allowed: Vec<String>,
    jwt: bool,
    api_key: bool,
    /// Calls per day of the usage plan.
    quota: u64,
    throttle: Option<Throttle>,
    cors_origins: Option<Vec<String>>,
    /// The integration of `GET /items/{id}`: an HTTP endpoint, or a
    /// PrivateLink (503, no I/O: no endpoint) when None.
    endpoint: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            allowed: vec!["127.0.0.0/8".into()],
            jwt: false,
            api_key: false,
            quota: 1000,
            throttle: None,
            cors_origins: None,
            endpoint: None,
        }
    }
}

fn entities(s: &Setup) -> Vec<Entity> {
    let now = now_rfc3339();
    let method = |t: MethodType| DeployedMethod {
        path: "/items/{id}".into(),
        method: Method {
            api_id: API.into(),
            resource_id: "items-id".into(),
            method_type: t,
            integration_type: if s.endpoint.is_some() {
                IntegrationType::HTTP
            } else {
                IntegrationType::PRIVATELINK
            },
            endpoint_url: s.endpoint.clone(),
            function_id: None,
            privatelink_endpoint_id: Some("pl-1".into()),
            api_key_required: s.api_key,
            query_strings: Default::default(),
            request_headers: Default::default(),
            created_at: now.clone(),
        },
    };
    let mut out = vec![
        Entity::Api(Api {
            id: API.into(),
            account_id: "acct".into(),
            name: "inproc".into(),
            description: String::new(),
            endpoint_type: EndpointType::Region,
            tags: vec![],
            created_at: now.clone(),
        }),
        Entity::AccessControl(AccessControl {
            id: "ac-1".into(),
            api_id: API.into(),
            name: "test".into(),
            description: String::new(),
            allowed_ip_addr: s.allowed.clone(),
            is_default: false,
            created_at: now.clone(),
        }),
        Entity::Deployment(Deployment {
            id: "dep-1".into(),
            api_id: API.into(),
            description: String::new(),
            created_at: now.clone(),
            paths: vec!["/".into(), "/items".into(), "/items/{id}".into()],
            methods: vec![method(MethodType::GET), method(MethodType::PUT)],
        }),
        Entity::Stage(Stage {
            api_id: API.into(),
            name: "dev".into(),
            description: String::new(),
            deployment_id: "dep-1".into(),
            activated_at: now.clone(),
            created_at: now.clone(),
            cors: Cors {
                cors_enabled: s.cors_origins.is_some(),
                allow_origins: s.cors_origins.clone(),
                allow_methods: Some(vec!["GET".into(), "PUT".into()]),
                ..Default::default()
            },
            jwt_enabled: s.jwt,
            usage_plan_id: s.api_key.then(|| "plan-1".into()),
            connected_api_keys: if s.api_key {
                vec!["key-1".into()]
            } else {
                vec![]
            },
            access_control_id: "ac-1".into(),
            throttle: s.throttle,
            method_throttles: vec![],
            hide_credentials: false,
            canary: None,
            variables: Default::default(),
        }),
    ];
    if s.jwt {
        use base64::Engine;
        out.push(Entity::Auth(Auth {
            id: "auth-1".into(),
            api_id: API.into(),
            name: "auth".into(),
            expiration_period: 1,
            expired_at: now.clone(),
            expires_at_unix: chrono::Utc::now().timestamp() + 86_400,
            created_at: now.clone(),
            connected_stages: vec!["dev".into()],
            secret: base64::engine::general_purpose::STANDARD.encode(SECRET),
            external: None,
        }));
    }
    if s.api_key {
        out.push(Entity::UsagePlan(UsagePlan {
            id: "plan-1".into(),
            api_id: API.into(),
            name: "plan".into(),
            description: String::new(),
            limit: s.quota,
            rate: QuotaRate::Day,
            created_at: now.clone(),
            modified_at: now.clone(),
            created_by: String::new(),
            modified_by: String::new(),
        }));
        out.push(Entity::ApiKey(ApiKey {
            id: "key-1".into(),
            api_id: API.into(),
            usage_plan_id: "plan-1".into(),
            name: "key".into(),
            description: String::new(),
            key: KEY.into(),
            created_at: now,
        }));
    }
    out
}

/// A data plane serving the API of `setup`, counting quotas with `quota`.
fn plane(setup: &Setup, quota: Arc<dyn QuotaCounters>) -> Arc<DataPlane> {
    let state = State::from_entities(entities(setup));
    let ctx = BuildContext {
        region: "kr-west1".into(),
        srn_offering: "scp".into(),
        limiters: Default::default(),
        stats: None,
        private_addr: None,
        metrics: None,
        external_services: Default::default(),
    };
    let cfg = apigw::config::Config::default();
    Arc::new(DataPlane {
        snapshot: Arc::new(Published::new(&state, ctx)),
        client: apigw::dataplane::upstream::http::client(&cfg.upstream),
        invoke_domain: "apigw.localhost".into(),
        max_body_bytes: 1 << 20,
        max_header_bytes: 16 << 10,
        upstream_timeout: std::time::Duration::from_secs(5),
        trusted_proxies: vec![],
        credentials: vec![],
        signature_max_skew_ms: 300_000,
        srn_offering: "scp".into(),
        keep_escaped_separators: false,
        quota,
        clock: std::sync::Arc::new(apigw::clock::SystemClock),
    })
}

fn local_plane(setup: &Setup) -> Arc<DataPlane> {
    plane(setup, LocalQuota::open(None).unwrap())
}

fn peer() -> Arc<Peer> {
    Arc::new(Peer::new("127.0.0.1:40000".parse().unwrap()))
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", HOST)
}

async fn send<B>(gw: &Arc<DataPlane>, req: Request<B>) -> Response<RespBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handle(gw, req, &peer()).await
}

/// The `x-apigw-error` code of an answer ("" when none).
fn code(r: &Response<RespBody>) -> &str {
    r.headers()
        .get("x-apigw-error")
        .map_or("", |v| v.to_str().unwrap())
}

async fn body(r: Response<RespBody>) -> String {
    let b = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test]
async fn unknown_host_is_api_not_found() {
    let gw = local_plane(&Setup::default());
    let req = Request::get("/dev/items/1")
        .header("host", "nope.apigw.localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = send(&gw, req).await;
    assert_eq!(r.status(), 404);
    assert_eq!(code(&r), "ApiNotFound");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(body(r).await, r#"{"message":"No API matches this host"}"#);
}

#[tokio::test]
async fn ip_outside_the_access_control_is_forbidden() {
    let gw = local_plane(&Setup {
        allowed: vec!["10.0.0.0/8".into()],
        ..Setup::default()
    });
    let r = send(
        &gw,
        get("/dev/items/1").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r), "Forbidden");
}

#[tokio::test]
async fn unknown_verb_is_405_with_allow() {
    let gw = local_plane(&Setup::default());
    let req = Request::post("/dev/items/1")
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let r = send(&gw, req).await;
    assert_eq!(r.status(), 405);
    assert_eq!(code(&r), "MethodNotAllowed");
    assert_eq!(r.headers()["allow"], "GET, PUT");
    // And an unknown resource is a 404 of its own.
    let r = send(&gw, get("/dev/nope").body(Empty::<Bytes>::new()).unwrap()).await;
    assert_eq!((r.status().as_u16(), code(&r)), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn jwt_stage_without_token_is_401() {
    let gw = local_plane(&Setup {
        jwt: true,
        ..Setup::default()
    });
    let r = send(
        &gw,
        get("/dev/items/1").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r), "TokenMissing");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // A valid token passes the filter (the PrivateLink integration then
    // answers 503: no endpoint).
    let token =
        apigw::jwt::mint(SECRET, "auth-1", API, chrono::Utc::now().timestamp() + 60).unwrap();
    let req = get("/dev/items/1")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = send(&gw, req).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (503, "PrivateLinkUnavailable")
    );
}

#[tokio::test]
async fn api_key_missing_is_403_and_quota_429() {
    let gw = local_plane(&Setup {
        api_key: true,
        quota: 1,
        ..Setup::default()
    });
    let r = send(
        &gw,
        get("/dev/items/1").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r), "ApiKeyMissing");
    assert!(!r.headers().contains_key("x-ratelimit-limit"));

    let keyed = || {
        get("/dev/items/1")
            .header("x-scp-apikey", KEY)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = send(&gw, keyed()).await;
    assert_eq!(r.status(), 503, "the one call of the quota gets through");
    assert_eq!(r.headers()["x-ratelimit-limit"], "1");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let r = send(&gw, keyed()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(code(&r), "QuotaExceeded");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
}

/// Counters that answer later, as a shared store would: every call goes
/// through the deferred path of the API-key filter.
struct RemoteQuota {
    local: Arc<LocalQuota>,
    pending: AtomicUsize,
}

impl QuotaCounters for RemoteQuota {
    fn acquire(&self, key_id: &str, window: i64, limit: u64) -> Acquiring {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let (local, key_id) = (self.local.clone(), key_id.to_string());
        let io: PendingAcquire = Box::pin(async move {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            local.count(&key_id, window, limit)
        });
        Acquiring::Pending(io)
    }
    fn used(&self, key_id: &str, window: i64) -> u64 {
        self.local.used(key_id, window)
    }
}

#[tokio::test]
async fn quota_answered_later_defers_the_request() {
    let quota = Arc::new(RemoteQuota {
        local: LocalQuota::open(None).unwrap(),
        pending: AtomicUsize::new(0),
    });
    let gw = plane(
        &Setup {
            api_key: true,
            quota: 2,
            throttle: Some(Throttle { rate: 1, burst: 2 }),
            cors_origins: Some(vec!["http://app.example".into()]),
            ..Setup::default()
        },
        quota.clone(),
    );
    let keyed = || {
        get("/dev/items/1")
            .header("x-scp-apikey", KEY)
            .header("origin", "http://app.example")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = send(&gw, keyed()).await;
    // Counted after the wait, then the filters after it and the upstream
    // phase ran, and the response phase decorated the answer.
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(quota.pending.load(Ordering::Relaxed), 1);
    // The stage's burst (2) lets a second call through; the third is
    // throttled before its key is counted (the throttle runs first).
    let r = send(&gw, keyed()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let r = send(&gw, keyed()).await;
    assert_eq!(code(&r), "Throttled");
    assert_eq!(quota.pending.load(Ordering::Relaxed), 2);
    assert_eq!(
        quota.local.used(
            "key-1",
            apigw::store::quota::window(QuotaRate::Day, chrono::Utc::now().timestamp()).0
        ),
        2
    );
}

#[tokio::test]
async fn throttled_is_429_with_retry_after() {
    let gw = local_plane(&Setup {
        throttle: Some(Throttle { rate: 1, burst: 1 }),
        ..Setup::default()
    });
    let r = send(
        &gw,
        get("/dev/items/1").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 503, "the burst lets the first call through");
    let r = send(
        &gw,
        get("/dev/items/1").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(code(&r), "Throttled");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        body(r).await,
        r#"{"message":"Too many requests: the stage's rate limit is exceeded"}"#
    );
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let gw = local_plane(&Setup {
        cors_origins: Some(vec!["http://app.example".into()]),
        ..Setup::default()
    });
    let preflight = |origin: &'static str| {
        Request::options("/dev/items/1")
            .header("host", HOST)
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = send(&gw, preflight("http://app.example")).await;
    assert_eq!(r.status(), 204);
    assert_eq!(code(&r), "");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-methods"], "GET, PUT");
    let r = send(&gw, preflight("http://evil.example")).await;
    assert_eq!((r.status().as_u16(), code(&r)), (403, "CorsOriginDenied"));
}

/// A backend on 127.0.0.1 that answers one request with `200 hello` and
/// hands back the request head it read.
async fn one_shot_backend() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request cut");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                // The body (Content-Length: 7) follows the head.
                let want = end + 4 + 7;
                while buf.len() < want {
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "body cut");
                    buf.extend_from_slice(&chunk[..n]);
                }
                break;
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-backend: yes\r\n\r\nhello")
            .await
            .unwrap();
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        // Keep the connection until the client is done with it.
        let _ = s.read(&mut chunk).await;
    });
    (addr, rx)
}

#[tokio::test]
async fn forwarded_request_reaches_a_local_backend() {
    let (addr, seen) = one_shot_backend().await;
    let gw = local_plane(&Setup {
        endpoint: Some(format!("http://{addr}/backend/items/{{id}}")),
        ..Setup::default()
    });
    let req = Request::put("/dev/items/42?x=1")
        .header("host", HOST)
        .header("x-request-id", "req-abc")
        .header("content-length", "7")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let r = send(&gw, req).await;
    assert_eq!(r.status(), 200);
    assert_eq!(code(&r), "");
    assert_eq!(r.headers()["x-backend"], "yes");
    assert_eq!(r.headers()["x-request-id"], "req-abc");
    assert_eq!(body(r).await, "hello");
    let head = seen.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("put /backend/items/42?x=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nx-forwarded-host: {HOST}\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nx-request-id: req-abc\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\npayload"), "{head}");
}
