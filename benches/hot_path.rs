//! Hot-path benchmarks: routing lookup with many APIs loaded, the IP
//! access-control check, request-id generation, each filter, header
//! rewriting, and republishing the snapshot after a change to one API.
//!
//! Size with APIGW_BENCH_APIS (default 1000) and APIGW_BENCH_RESOURCES
//! (default 300).

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
    };
    let published = Published::new(&state, ctx);
    let snap = published.load();
    let host = format!("{:032x}.apigw.localhost:8080", apis / 2);
    let get = http::Method::GET;
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
    stage_jwt.verify(Some(&authz), now).unwrap();
    c.bench_function("filter/jwt verify (warm cache)", |b| {
        b.iter(|| stage_jwt.verify(black_box(Some(&authz)), now).is_ok())
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
            cors.decorate(black_box(&origin), &mut h);
            h
        })
    });

    let quota = apigw::store::quota::LocalQuota::open(None).unwrap();
    use apigw::store::quota::QuotaCounters;
    c.bench_function("filter/quota acquire", |b| {
        b.iter(|| quota.acquire(black_box("key-id-1"), 1, u64::MAX))
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
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
