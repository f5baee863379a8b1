//! Hot-path benchmarks: routing lookup with many APIs loaded, the IP
//! access-control check, request-id generation, each filter, header
//! rewriting, and republishing the snapshot after a change to one API.
//!
//! Size with APIGW_BENCH_APIS (default 1000) and APIGW_BENCH_RESOURCES
//! (default 300); the second republish bench loads APIGW_BENCH_MANY_APIS
//! (default 10,000) APIs of one resource each.

use apigw::dataplane::route::route;
use apigw::snapshot::{BuildContext, IpAcl, Published};
use apigw::store::model::*;
use apigw::store::State;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One API with `n` resources `/r{i}/{id}` (half with a parameter child),
/// a GET method each, deployed on stage `prod`.
fn api_entities(i: usize, n: usize) -> Vec<Entity> {
    let api_id = format!("{i:032x}");
    let now = now_rfc3339();
    let mut out = vec![Entity::Api(Api {
        id: api_id.clone(),
        account_id: "acct".into(),
        name: format!("api-{i}"),
        description: String::new(),
        endpoint_type: EndpointType::Region,
        tags: vec![],
        created_at: now.clone(),
    })];
    let ac = AccessControl {
        id: format!("ac{i}"),
        api_id: api_id.clone(),
        name: "local".into(),
        description: String::new(),
        allowed_ip_addr: vec!["127.0.0.0/8".into()],
        is_default: false,
        created_at: now.clone(),
    };
    let mut methods = Vec::new();
    let mut paths = vec!["/".to_string()];
    for r in 0..n {
        let path = if r % 2 == 0 {
            format!("/r{r}")
        } else {
            format!("/r{}/{{id}}", r - 1)
        };
        paths.push(path.clone());
        methods.push(DeployedMethod {
            path: path.clone(),
            method: Method {
                api_id: api_id.clone(),
                resource_id: format!("res{r}"),
                method_type: MethodType::GET,
                integration_type: IntegrationType::HTTP,
                endpoint_url: Some("http://127.0.0.1:9001/items/{id}".into()),
                function_id: None,
                privatelink_endpoint_id: None,
                api_key_required: false,
                query_strings: Default::default(),
                request_headers: Default::default(),
                created_at: now.clone(),
            },
        });
    }
    let dep = Deployment {
        id: format!("dep{i}"),
        api_id: api_id.clone(),
        description: String::new(),
        created_at: now.clone(),
        paths,
        methods,
    };
    out.push(Entity::Stage(Stage {
        api_id: api_id.clone(),
        name: "prod".into(),
        description: String::new(),
        deployment_id: dep.id.clone(),
        activated_at: now.clone(),
        created_at: now,
        cors: Cors::default(),
        jwt_enabled: false,
        usage_plan_id: None,
        connected_api_keys: vec![],
        access_control_id: ac.id.clone(),
        throttle: None,
        method_throttles: vec![],
        hide_credentials: false,
        canary: None,
        variables: Default::default(),
    }));
    out.push(Entity::Deployment(dep));
    out.push(Entity::AccessControl(ac));
    out
}

fn benches(c: &mut Criterion) {
    let apis = env("APIGW_BENCH_APIS", 1000);
    let resources = env("APIGW_BENCH_RESOURCES", 300);
    let entities: Vec<Entity> = (0..apis).flat_map(|i| api_entities(i, resources)).collect();
    let state = State::from_entities(entities);
    let ctx = BuildContext {
        region: "kr-west1".into(),
        srn_offering: "scp".into(),
        limiters: Default::default(),
        stats: None,
        private_addr: None,
        metrics: None,
        external_services: Default::default(),
    };
    let ctx_small = ctx.clone();
    let published = Published::new(&state, ctx);
    let snap = published.load();
    let host = format!("{:032x}.apigw.localhost:8080", apis / 2);
    let get = http::Method::GET;
    let headers = http::HeaderMap::new();
    let last = if resources > 1 {
        (resources - 1) & !1
    } else {
        0
    };

    c.bench_function(&format!("route/static ({apis} APIs x {resources})"), |b| {
        let path = format!("/prod/r{last}");
        b.iter(|| {
            route(
                black_box(&snap),
                black_box(&host),
                "apigw.localhost",
                &get,
                black_box(&path),
                &headers,
            )
            .is_ok()
        })
    });
    c.bench_function("route/param", |b| {
        let path = format!("/prod/r{last}/12345");
        b.iter(|| {
            route(
                black_box(&snap),
                black_box(&host),
                "apigw.localhost",
                &get,
                black_box(&path),
                &headers,
            )
            .is_ok()
        })
    });
    c.bench_function("route/miss (404)", |b| {
        b.iter(|| {
            route(
                black_box(&snap),
                black_box(&host),
                "apigw.localhost",
                &get,
                black_box("/prod/nope"),
                &headers,
            )
            .map(|r| r.method().is_err())
        })
    });

    let acl = IpAcl::new(
        (0..100)
            .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
            .collect(),
    );
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("ip_acl/100 entries, denied", |b| {
        b.iter(|| acl.allows(black_box(ip)))
    });

    let headers = http::HeaderMap::new();
    c.bench_function("request_id/make", |b| {
        b.iter(|| apigw::dataplane::filters::request_id::take_or_make(black_box(&headers)))
    });

    // --- filters -------------------------------------------------------
    let secret = apigw::jwt::new_secret();
    let exp = chrono::Utc::now().timestamp() + 3600;
    let token = apigw::jwt::mint(&secret, "auth1", "api1", exp).unwrap();
    let stage_jwt = apigw::jwt::StageJwt::compile(
        "api1",
        vec![apigw::jwt::GatewayKey {
            auth_id: "auth1".into(),
            secret,
            expires_at: exp,
        }],
        vec![],
    )
    .unwrap();
    let authz = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let now = chrono::Utc::now().timestamp();
    stage_jwt.verify(Some(authz.as_bytes()), now).unwrap();
    c.bench_function("filter/jwt verify (warm cache)", |b| {
        b.iter(|| {
            stage_jwt
                .verify(black_box(Some(authz.as_bytes())), now)
                .is_ok()
        })
    });

    let policy = apigw::policy::compile(&serde_json::json!({
        "Version": "", "Statement": [{
            "Action": ["apigateway:InvokeApigatewayRegion"],
            "Condition": {
                "SrnLike": {"scp:RequestAttribute/body['method-srn']": ["srn:e::acct:kr-west1::apigateway:method/api1/*/GET/*"]},
                "NotIpAddress": {"scp:SourceIp": ["1.2.3.4/24", "5.6.7.8/32"]}},
            "Effect": "Allow", "Principal": "*",
            "Resource": ["srn:e::acct:kr-west1::apigateway:api/api1"], "Sid": "Statement1"}]}))
    .unwrap();
    let hdrs = http::HeaderMap::new();
    let preq = apigw::policy::Request {
        source_ip: "127.0.0.1".parse().unwrap(),
        method_srn: "srn:e::acct:kr-west1::apigateway:method/api1/prod/GET/items/42",
        api_srn: "srn:e::acct:kr-west1::apigateway:api/api1",
        principal: None,
        headers: &hdrs,
    };
    c.bench_function("filter/resource policy (IP deny list template)", |b| {
        b.iter(|| policy.evaluate(black_box(&preq)))
    });

    let cors = apigw::dataplane::filters::cors::StageCors::compile(&Cors {
        cors_enabled: true,
        allow_origins: Some(vec!["http://app.example".into()]),
        allow_methods: None,
        allow_headers: None,
        expose_headers: Some(vec!["x-request-id".into()]),
        max_age: Some(600),
        allow_credentials: Some(false),
    });
    let origin = http::HeaderValue::from_static("http://app.example");
    c.bench_function("filter/cors response headers", |b| {
        b.iter(|| {
            let mut h = http::HeaderMap::new();
            if let Some(acao) = cors.allow_origin(black_box(&origin)) {
                cors.decorate(acao, &mut h);
            }
            h
        })
    });

    let quota = apigw::store::quota::LocalQuota::open(None).unwrap();
    use apigw::store::quota::QuotaCounters;
    c.bench_function("filter/quota acquire", |b| {
        b.iter(|| match quota.acquire(black_box("key-id-1"), 1, u64::MAX) {
            apigw::store::quota::Acquiring::Ready(a) => Some(a),
            apigw::store::quota::Acquiring::Pending(_) => None,
        })
    });

    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(1_000_000_000).unwrap(),
    ));
    c.bench_function("filter/stage throttle (governor)", |b| {
        b.iter(|| limiter.check().is_ok())
    });

    let stats = apigw::telemetry::reports::Stats::new(None);
    let stage_stats = stats.stage("api1", "prod");
    let ix = stage_stats.route_index("/items/{id}", "GET");
    c.bench_function("reports/record one request", |b| {
        b.iter(|| stage_stats.record(black_box(Some(ix)), black_box(200), 1200, 900))
    });

    // Header rewriting: hop-by-hop removal on a typical request (nothing
    // to remove) and on a backend answer with `Connection: keep-alive`;
    // the clone is timed separately so it can be subtracted.
    let mut request = http::HeaderMap::new();
    for (k, v) in [
        (
            "host",
            "0123456789abcdef0123456789abcdef.apigw.localhost:8080",
        ),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        ),
        ("x-scp-apikey", "0123456789abcdef0123456789abcdef01234567"),
        ("origin", "http://bench.example"),
    ] {
        request.insert(k, http::HeaderValue::from_static(v));
    }
    let mut response = http::HeaderMap::new();
    for (k, v) in [
        ("server", "nginx"),
        ("date", "Tue, 24 Nov 2026 20:00:00 GMT"),
        ("content-type", "application/json"),
        ("content-length", "61"),
        ("connection", "keep-alive"),
    ] {
        response.insert(k, http::HeaderValue::from_static(v));
    }
    c.bench_function("headers/clone a request header map (baseline)", |b| {
        b.iter(|| black_box(&request).clone())
    });
    c.bench_function("headers/strip hop-by-hop, request (clone included)", |b| {
        b.iter(|| {
            let mut h = black_box(&request).clone();
            apigw::dataplane::upstream::http::strip_hop_by_hop(&mut h);
            h
        })
    });
    c.bench_function("headers/strip hop-by-hop, response (clone included)", |b| {
        b.iter(|| {
            let mut h = black_box(&response).clone();
            apigw::dataplane::upstream::http::strip_hop_by_hop(&mut h);
            h
        })
    });

    let touched = vec![format!("{:032x}", 0)];
    c.bench_function(
        &format!("snapshot/republish one API ({apis} loaded)"),
        |b| b.iter(|| published.republish(&state, black_box(&touched))),
    );

    // The same with many small APIs: what a republish costs for the
    // APIs it does not rebuild (issue 18: management writes must not slow
    // down as the store grows).
    let many = env("APIGW_BENCH_MANY_APIS", 10_000);
    let small = State::from_entities((0..many).flat_map(|i| api_entities(i, 1)).collect());
    let published_small = Published::new(&small, ctx_small);
    c.bench_function(
        &format!("snapshot/republish one API ({many} APIs x 1 loaded)"),
        |b| b.iter(|| published_small.republish(&small, black_box(&touched))),
    );
}

// --- the whole pipeline, in-process --------------------------------------

const API_FULL: &str = "0000000000000000000000000000f011";
const API_PLAIN: &str = "0000000000000000000000000000b1a1";
const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// An API with one method `GET /items/{id}` on stage `stage`, whose
/// integration is `endpoint` (HTTP) or, when None, a PrivateLink (501
/// once every filter passed: the filters without any I/O). `full`: every
/// filter on (access control, JWT, API key with a large quota, a resource
/// policy that allows, CORS for any origin), as load.py's `full` stage.
fn pipeline_api(id: &str, stage: &str, endpoint: Option<String>, full: bool) -> Vec<Entity> {
    let now = now_rfc3339();
    let method = Method {
        api_id: id.into(),
        resource_id: "items-id".into(),
        method_type: MethodType::GET,
        integration_type: if endpoint.is_some() {
            IntegrationType::HTTP
        } else {
            IntegrationType::PRIVATELINK
        },
        endpoint_url: endpoint,
        function_id: None,
        privatelink_endpoint_id: Some("pl-1".into()),
        api_key_required: full,
        query_strings: Default::default(),
        request_headers: Default::default(),
        created_at: now.clone(),
    };
    let mut out = vec![
        Entity::Api(Api {
            id: id.into(),
            account_id: "acct".into(),
            name: format!("api-{stage}"),
            description: String::new(),
            endpoint_type: EndpointType::Region,
            tags: vec![],
            created_at: now.clone(),
        }),
        Entity::AccessControl(AccessControl {
            id: format!("ac-{id}"),
            api_id: id.into(),
            name: "local".into(),
            description: String::new(),
            allowed_ip_addr: vec!["127.0.0.0/8".into()],
            is_default: false,
            created_at: now.clone(),
        }),
        Entity::Deployment(Deployment {
            id: format!("dep-{id}"),
            api_id: id.into(),
            description: String::new(),
            created_at: now.clone(),
            paths: vec!["/".into(), "/items".into(), "/items/{id}".into()],
            methods: vec![DeployedMethod {
                path: "/items/{id}".into(),
                method,
            }],
        }),
        Entity::Stage(Stage {
            api_id: id.into(),
            name: stage.into(),
            description: String::new(),
            deployment_id: format!("dep-{id}"),
            activated_at: now.clone(),
            created_at: now.clone(),
            cors: Cors {
                cors_enabled: full,
                allow_origins: Some(vec!["*".into()]),
                ..Default::default()
            },
            jwt_enabled: full,
            usage_plan_id: full.then(|| "plan-1".into()),
            connected_api_keys: if full { vec!["key-1".into()] } else { vec![] },
            access_control_id: format!("ac-{id}"),
            throttle: None,
            method_throttles: vec![],
            hide_credentials: false,
            canary: None,
            variables: Default::default(),
        }),
    ];
    if full {
        use base64::Engine;
        out.push(Entity::Auth(Auth {
            id: "auth-1".into(),
            api_id: id.into(),
            name: "auth".into(),
            expiration_period: 365,
            expired_at: now.clone(),
            expires_at_unix: chrono::Utc::now().timestamp() + 86_400,
            created_at: now.clone(),
            connected_stages: vec![stage.into()],
            secret: base64::engine::general_purpose::STANDARD.encode(BENCH_SECRET),
            external: None,
        }));
        out.push(Entity::UsagePlan(UsagePlan {
            id: "plan-1".into(),
            api_id: id.into(),
            name: "plan".into(),
            description: String::new(),
            limit: 2_000_000_000,
            rate: QuotaRate::Day,
            created_at: now.clone(),
            modified_at: now.clone(),
            created_by: String::new(),
            modified_by: String::new(),
        }));
        out.push(Entity::ApiKey(ApiKey {
            id: "key-1".into(),
            api_id: id.into(),
            usage_plan_id: "plan-1".into(),
            name: "key".into(),
            description: String::new(),
            key: KEY.into(),
            created_at: now.clone(),
        }));
        out.push(Entity::ResourcePolicy(ResourcePolicy {
            api_id: id.into(),
            document: serde_json::json!({
                "Version": "", "Statement": [{
                    "Action": ["apigateway:InvokeApigatewayRegion"],
                    "Condition": {
                        "SrnLike": {"scp:RequestAttribute/body['method-srn']":
                            [format!("srn:scp::acct:kr-west1::apigateway:method/{id}/*/GET/*")]},
                        "NotIpAddress": {"scp:SourceIp": ["1.2.3.4/24", "5.6.7.8/32"]}},
                    "Effect": "Allow", "Principal": "*",
                    "Resource": [format!("srn:scp::acct:kr-west1::apigateway:api/{id}")],
                    "Sid": "Statement1"}]}),
            created_at: now.clone(),
            modified_at: now,
        }));
    }
    out
}

const BENCH_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A backend answering `200` with a 61-byte JSON body, as load.py's.
async fn backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"id":42,"name":"bench","ok":true,"items":[1,2,3],"x":"y"}"#,
                        )),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn pipeline(c: &mut Criterion) {
    use apigw::dataplane::{handle, DataPlane, Peer};
    use futures_util::FutureExt;
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let backend = rt.block_on(backend());
    let url = format!("http://{backend}/items/{{id}}");
    let mut entities = pipeline_api(API_FULL, "full", Some(url.clone()), true);
    entities.extend(pipeline_api(API_PLAIN, "plain", Some(url), false));
    entities.extend(pipeline_api(
        "0000000000000000000000000000f501",
        "full",
        None,
        true,
    ));
    let state = State::from_entities(entities);
    let ctx = BuildContext {
        region: "kr-west1".into(),
        srn_offering: "scp".into(),
        limiters: Default::default(),
        stats: Some(apigw::telemetry::reports::Stats::new(None)),
        private_addr: None,
        metrics: None,
        external_services: Default::default(),
    };
    let cfg = apigw::config::Config::default();
    let gw = Arc::new(DataPlane {
        snapshot: Arc::new(Published::new(&state, ctx)),
        client: apigw::dataplane::upstream::http::client(&cfg.upstream),
        invoke_domain: "apigw.localhost".into(),
        max_body_bytes: 10 << 20,
        max_header_bytes: 16 << 10,
        upstream_timeout: std::time::Duration::from_secs(5),
        trusted_proxies: vec![],
        credentials: vec![],
        signature_max_skew_ms: 300_000,
        srn_offering: "scp".into(),
        keep_escaped_separators: false,
        quota: apigw::store::quota::LocalQuota::open(None).unwrap(),
        clock: std::sync::Arc::new(apigw::clock::SystemClock),
    });
    let peer = Arc::new(Peer::new("127.0.0.1:40000".parse().unwrap()));
    let token = apigw::jwt::mint(
        BENCH_SECRET,
        "auth-1",
        API_FULL,
        chrono::Utc::now().timestamp() + 3600,
    )
    .unwrap();
    let token_501 = apigw::jwt::mint(
        BENCH_SECRET,
        "auth-1",
        "0000000000000000000000000000f501",
        chrono::Utc::now().timestamp() + 3600,
    )
    .unwrap();
    let request = |api: &str, path: &str, token: Option<&str>| {
        let mut b = http::Request::builder()
            .uri(path)
            .header("host", format!("{api}.apigw.localhost:8080"))
            .header("user-agent", "wrk")
            .header("accept", "*/*");
        if let Some(t) = token {
            b = b
                .header("authorization", format!("Bearer {t}"))
                .header("x-scp-apikey", KEY)
                .header("origin", "http://bench.example");
        }
        b.body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // Each answer is checked once before timing.
    let status = |req| rt.block_on(async { handle(&gw, req, &peer).await.status().as_u16() });
    assert_eq!(status(request("ffff", "/x/y", None)), 404);
    assert_eq!(
        status(request(
            "0000000000000000000000000000f501",
            "/full/items/42",
            Some(&token_501)
        )),
        501
    );
    assert_eq!(
        status(request(API_FULL, "/full/items/42", Some(&token))),
        200
    );
    assert_eq!(status(request(API_PLAIN, "/plain/items/42", None)), 200);

    // For instruction counts (valgrind --tool=callgrind): with
    // APIGW_PIPELINE_LOOP=<scenario>:<n> (scenario 404, 501, plain or full)
    // only that request is made, n times, and the process exits. The
    // difference between two runs with different n, divided by the
    // difference of n, is the cost of one request, setup excluded.
    if let Ok(spec) = std::env::var("APIGW_PIPELINE_LOOP") {
        let (scenario, n) = spec.split_once(':').expect("<scenario>:<n>");
        let n: usize = n.parse().expect("a count");
        for _ in 0..n {
            let req = match scenario {
                "404" => request("ffff", "/x/y", None),
                "501" => request(
                    "0000000000000000000000000000f501",
                    "/full/items/42",
                    Some(&token_501),
                ),
                "plain" => request(API_PLAIN, "/plain/items/42", None),
                "full" => request(API_FULL, "/full/items/42", Some(&token)),
                other => panic!("unknown scenario {other}"),
            };
            rt.block_on(async { black_box(consume(handle(&gw, req, &peer).await).await) });
        }
        std::process::exit(0);
    }

    let batched = criterion::BatchSize::SmallInput;
    c.bench_function("pipeline/404 unknown host (gateway answer)", |b| {
        b.iter_batched(
            || request("ffff", "/x/y", None),
            |req| handle(&gw, req, &peer).now_or_never(),
            batched,
        )
    });
    c.bench_function("pipeline/every filter, then 501 (no I/O)", |b| {
        b.iter_batched(
            || {
                request(
                    "0000000000000000000000000000f501",
                    "/full/items/42",
                    Some(&token_501),
                )
            },
            |req| handle(&gw, req, &peer).now_or_never(),
            batched,
        )
    });
    c.bench_function("pipeline/plain stage, forwarded to a local backend", |b| {
        b.iter_batched(
            || request(API_PLAIN, "/plain/items/42", None),
            |req| rt.block_on(async { consume(handle(&gw, req, &peer).await).await }),
            batched,
        )
    });
    c.bench_function("pipeline/every filter, forwarded to a local backend", |b| {
        b.iter_batched(
            || request(API_FULL, "/full/items/42", Some(&token)),
            |req| rt.block_on(async { consume(handle(&gw, req, &peer).await).await }),
            batched,
        )
    });
}

/// Read a response to its end (so the upstream connection goes back to
/// the pool).
async fn consume(resp: http::Response<apigw::dataplane::RespBody>) -> usize {
    use http_body_util::BodyExt;
    resp.into_body()
        .collect()
        .await
        .map_or(0, |b| b.to_bytes().len())
}

criterion_group!(hot_path, benches, pipeline);
criterion_main!(hot_path);
