//! Usage plans, API keys and quotas, and stage throttling (issue [3]),
//! against the real binary.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Keyed {
    api: String,
    plan: String,
    key_id: String,
    key: String,
    url: String,
}

/// API with GET /data (api_key_required) and GET /open on stage dev, a plan
/// with `limit` per `rate`, one key connected to dev.
async fn keyed_api(
    gw: &Gateway,
    admin: &Admin,
    backend: &Backend,
    limit: u64,
    rate: &str,
) -> Keyed {
    let s = simple_api(admin, "keyed-api", "open", &backend.url("/open")).await;
    let api = s.api_id.clone();
    let rid = admin.create_resource(&api, &s.root_id, "data").await;
    let r = admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({"method_type": "GET", "integration_type": "HTTP",
                    "endpoint_url": backend.url("/data"), "api_key_required": true}),
        )
        .await;
    r.expect(200);
    admin.deploy(&api, "existing", Some("dev")).await;
    let plan = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans"),
            &json!({"name": "gold", "description": "d", "limit": limit, "rate": rate}),
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
    let cfg = admin
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &json!({"cors_enabled": false, "jwt_enabled": false, "usage_plan_id": plan_id,
                    "connected_api_keys": [kv["id"]]}),
        )
        .await;
    let st = cfg.expect(200)["stage"].clone();
    assert_eq!(st["usage_plan_id"], plan_id.as_str());
    assert_eq!(st["usage_plan_limit"], limit);
    assert_eq!(st["usage_plan_rate"], rate);
    assert_eq!(st["usage_plan_api_keys"][0]["name"], "client-one");
    Keyed {
        url: gw.invoke_url(&api, "/dev/data"),
        api,
        plan: plan_id,
        key_id: kv["id"].as_str().unwrap().to_string(),
        key: kv["key"].as_str().unwrap().to_string(),
    }
}

async fn keyed_get(c: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut rb = c.get(url);
    if let Some(k) = key {
        rb = rb.header("x-scp-apikey", k);
    }
    rb.send().await.expect("request")
}

fn code(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-apigw-error")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_keys_management() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("plans-api").await;
    let base = format!("/v1/apis/{api}/usage-plans");
    admin
        .post(&base, &json!({"name": "p1", "limit": 10, "rate": "day"}))
        .await
        .expect_bad_field("name");
    admin
        .post(&base, &json!({"name": "plan-a", "limit": 0, "rate": "day"}))
        .await
        .expect_bad_field("limit");
    admin
        .post(
            &base,
            &json!({"name": "plan-a", "limit": 2_000_000_001u64, "rate": "day"}),
        )
        .await
        .expect_bad_field("limit");
    admin
        .post(
            &base,
            &json!({"name": "plan-a", "limit": 5, "rate": "week"}),
        )
        .await
        .expect_bad_field("rate");
    let p = admin
        .post(
            &base,
            &json!({"name": "plan-a", "limit": 5, "rate": "hour"}),
        )
        .await;
    let plan = p.expect(200)["usage_plan"].clone();
    for f in [
        "api_keys",
        "created_at",
        "created_by_id",
        "created_by_name",
        "description",
        "id",
        "limit",
        "modified_at",
        "modified_by_id",
        "modified_by_name",
        "name",
        "rate",
    ] {
        assert!(plan.get(f).is_some(), "usage_plan.{f} missing: {plan}");
    }
    let pid = plan["id"].as_str().unwrap().to_string();
    admin
        .post(
            &base,
            &json!({"name": "plan-a", "limit": 5, "rate": "hour"}),
        )
        .await
        .expect_error(409, "Conflict");
    for i in 1..10 {
        admin
            .post(
                &base,
                &json!({"name": format!("plan-{i}x"), "limit": 5, "rate": "day"}),
            )
            .await
            .expect(200);
    }
    admin
        .post(
            &base,
            &json!({"name": "plan-eleven", "limit": 5, "rate": "day"}),
        )
        .await
        .expect_bad_field("name");
    let list = admin.get(&format!("{base}?size=3&page=0")).await;
    let l = list.expect(200);
    assert_eq!(l["count"], 10);
    assert_eq!(l["usage_plans"].as_array().unwrap().len(), 3);

    let q = admin
        .put(
            &format!("{base}/{pid}/quota"),
            &json!({"limit": 77, "rate": "month"}),
        )
        .await;
    assert_eq!(q.expect(200)["usage_plan"]["limit"], 77);
    let d = admin
        .put(
            &format!("{base}/{pid}/description"),
            &json!({"description": "new"}),
        )
        .await;
    assert_eq!(d.expect(200)["usage_plan"]["description"], "new");

    let keys = format!("{base}/{pid}/api-keys");
    let mut values = Vec::new();
    for i in 0..5 {
        let k = admin
            .post(&keys, &json!({"name": format!("key-{i}x")}))
            .await;
        let v = k.expect(200)["api_key"].clone();
        let key = v["key"].as_str().unwrap().to_string();
        assert!(key.len() >= 32, "key value too short: {key}");
        values.push(key);
    }
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 5, "key values are unique");
    admin
        .post(&keys, &json!({"name": "key-six"}))
        .await
        .expect_bad_field("name");
    let kl = admin.get(&keys).await;
    let kid = kl.expect(200)["api_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kl.json["count"], 5);
    let r = admin
        .put(
            &format!("{keys}/{kid}/description"),
            &json!({"description": "renamed"}),
        )
        .await;
    assert_eq!(r.expect(200)["api_key"]["description"], "renamed");
    admin.delete(&format!("{keys}/{kid}")).await.expect(204);
    admin
        .delete(&format!("{keys}/{kid}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("{base}/nope"))
        .await
        .expect_error(404, "NotFound");
    admin.delete(&format!("{base}/{pid}")).await.expect(204);
    admin
        .get(&format!("{base}/{pid}"))
        .await
        .expect_error(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_checks_and_exact_quota_under_concurrency() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("quota");
    let k = keyed_api(&gw, &admin, &backend, 1000, "day").await;
    let c = data_client();

    // Methods without api_key_required need no key.
    assert_eq!(
        keyed_get(&c, &gw.invoke_url(&k.api, "/dev/open"), None)
            .await
            .status(),
        200
    );
    let r = keyed_get(&c, &k.url, None).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (403, "ApiKeyMissing".into())
    );
    let r = keyed_get(&c, &k.url, Some("no-such-key")).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (403, "ApiKeyInvalid".into())
    );
    // A key of the plan that is not connected to the stage.
    let other = admin
        .post(
            &format!("/v1/apis/{}/usage-plans/{}/api-keys", k.api, k.plan),
            &json!({"name": "unconnected"}),
        )
        .await;
    let other_key = other.expect(200)["api_key"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = keyed_get(&c, &k.url, Some(&other_key)).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (403, "ApiKeyNotConnected".into())
    );

    // 64 clients race on a quota of 1,000.
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other_status = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (c, url, key) = (c.clone(), k.url.clone(), k.key.clone());
        let (ok, limited, other_status) = (ok.clone(), limited.clone(), other_status.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let r = keyed_get(&c, &url, Some(&key)).await;
                match r.status().as_u16() {
                    200 => {
                        assert!(r.headers().contains_key("x-ratelimit-remaining"));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        let ra: i64 = r.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!((1..=86400).contains(&ra), "Retry-After {ra}");
                        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
                        assert_eq!(r.headers()["x-ratelimit-limit"], "1000");
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        other_status.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(other_status.load(Ordering::Relaxed), 0);
    assert_eq!(
        ok.load(Ordering::Relaxed),
        1000,
        "exactly the quota succeeds"
    );
    assert_eq!(limited.load(Ordering::Relaxed), 280);

    // Disconnecting the key takes effect on the next request.
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", k.api),
            &json!({"cors_enabled": false, "jwt_enabled": false, "usage_plan_id": k.plan, "connected_api_keys": []}),
        )
        .await
        .expect(200);
    let r = keyed_get(&c, &k.url, Some(&k.key)).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (403, "ApiKeyNotConnected".into())
    );
    // Deleting it too.
    admin
        .delete(&format!(
            "/v1/apis/{}/usage-plans/{}/api-keys/{}",
            k.api, k.plan, k.key_id
        ))
        .await
        .expect(204);
    let r = keyed_get(&c, &k.url, Some(&k.key)).await;
    assert_eq!(
        (r.status().as_u16(), code(&r)),
        (403, "ApiKeyInvalid".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_survives_sigkill_and_rolls_over_with_the_clock() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let mut gw = Gateway::start_with(&[
        ("test_clock_file", &format!("\"{}\"", clock.display())),
        ("quota_flush_interval_ms", "200"),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("roll");
    let k = keyed_api(&gw, &admin, &backend, 10, "hour").await;
    let c = data_client();
    for i in 0..6 {
        let r = keyed_get(&c, &k.url, Some(&k.key)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (9 - i).to_string().as_str()
        );
        let reset: i64 = r.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset > 0 && reset <= 3600);
    }
    // Wait past one flush interval, then SIGKILL: the counts are on disk.
    tokio::time::sleep(Duration::from_millis(600)).await;
    gw.restart();
    let url = gw.invoke_url(&k.api, "/dev/data");
    let mut ok = 0;
    for _ in 0..10 {
        if keyed_get(&c, &url, Some(&k.key)).await.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "6 of 10 were used before the restart");
    // Move the clock one hour on: a new window starts.
    std::fs::write(&clock, "3600").unwrap();
    let fresh = eventually(Duration::from_secs(5), || {
        let (c, url, key) = (c.clone(), url.clone(), k.key.clone());
        async move { keyed_get(&c, &url, Some(&key)).await.status() == 200 }
    })
    .await;
    assert!(fresh, "the next hour's window is open");
    let r = keyed_get(&c, &url, Some(&k.key)).await;
    assert_eq!(r.headers()["x-ratelimit-remaining"], "8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_throttle_holds_the_rate() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("throttle");
    let s = simple_api(&admin, "throttle-api", "data", &backend.url("/d")).await;
    let r = admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &json!({"cors_enabled": false, "jwt_enabled": false, "throttle": {"rate": 100, "burst": 10}}),
        )
        .await;
    assert_eq!(r.expect(200)["stage"]["throttle"]["rate"], 100);
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &json!({"cors_enabled": false, "jwt_enabled": false, "throttle": {"rate": 0, "burst": 10}}),
        )
        .await
        .expect_bad_field("throttle");

    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/data");
    let ok = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let secs = 10.0;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, ok, throttled) = (c.clone(), url.clone(), ok.clone(), throttled.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed().as_secs_f64() < secs {
                let r = c.get(&url).send().await.unwrap();
                match r.status().as_u16() {
                    200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        assert!(r.headers().contains_key("retry-after"));
                        throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    s => panic!("unexpected {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 100.0 * elapsed + 10.0;
    let got = ok.load(Ordering::Relaxed) as f64;
    assert!(
        throttled.load(Ordering::Relaxed) > 0,
        "the clients asked for more than the rate"
    );
    assert!(
        (got - expected).abs() <= expected * 0.05,
        "admitted {got} in {elapsed:.2}s, expected {expected:.0} ± 5%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_the_calls_and_survive_restart() {
    let mut gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("reports");
    let k = keyed_api(&gw, &admin, &backend, 1000, "day").await;
    // A third resource whose integration is refused: 502s.
    let root = admin.root_id(&k.api).await;
    let broken = admin.create_resource(&k.api, &root, "broken").await;
    admin
        .create_http_method(
            &k.api,
            &broken,
            "GET",
            &format!("http://127.0.0.1:{}/", closed_port()),
        )
        .await;
    admin.deploy(&k.api, "existing", Some("dev")).await;
    let c = data_client();
    let open = gw.invoke_url(&k.api, "/dev/open");
    for _ in 0..7 {
        assert_eq!(keyed_get(&c, &open, None).await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(keyed_get(&c, &k.url, Some(&k.key)).await.status(), 200);
    }
    for _ in 0..4 {
        assert_eq!(keyed_get(&c, &k.url, None).await.status(), 403);
    }
    for _ in 0..2 {
        let u = gw.invoke_url(&k.api, "/dev/nothing");
        assert_eq!(keyed_get(&c, &u, None).await.status(), 404);
    }
    for _ in 0..5 {
        let u = gw.invoke_url(&k.api, "/dev/broken");
        assert_eq!(keyed_get(&c, &u, None).await.status(), 502);
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = format!(
        "/v1/apis/{}/reports?stage_name=dev&start_date={today}&end_date={today}",
        k.api
    );
    let check = |v: &serde_json::Value| {
        assert_eq!(v["count"], 1, "{v}");
        let day = &v["reports"][0];
        assert_eq!(day["date"], today.as_str());
        assert_eq!(day["call_count"], 10, "2xx calls: {v}");
        assert_eq!(day["error_4xx_count"], 6, "{v}");
        assert_eq!(day["error_5xx_count"], 5, "{v}");
        assert!(day["latency"].as_f64().unwrap() > 0.0);
        assert!(day["integration_latency"].as_f64().unwrap() > 0.0);
        let top = v["top_resources"].as_array().unwrap();
        assert_eq!(top[0]["path"], "/open");
        assert_eq!(top[0]["type"], "GET");
        assert_eq!(top[0]["call_count"], 7);
        assert_eq!(top[1]["path"], "/data");
        assert_eq!(top[1]["call_count"], 3);
        assert_eq!(top.len(), 2, "only resources with 2xx calls: {v}");
    };
    let r = admin.get(&path).await;
    check(r.expect(200));
    // Bad input.
    admin
        .get(&format!(
            "/v1/apis/{}/reports?stage_name=dev&start_date=2025-13-01&end_date={today}",
            k.api
        ))
        .await
        .expect_bad_field("start_date");
    admin
        .get(&format!(
            "/v1/apis/{}/reports?start_date={today}&end_date={today}",
            k.api
        ))
        .await
        .expect_bad_field("stage_name");
    admin
        .get(&format!(
            "/v1/apis/{}/reports?stage_name=dev&start_date=2025-01-01&end_date=2025-03-01",
            k.api
        ))
        .await
        .expect_bad_field("end_date");
    // Counted figures survive a SIGKILL once flushed (every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.restart();
    let r = gw.admin().get(&path).await;
    check(r.expect(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_throttle_limits_only_its_method() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("mthrottle");
    let s = simple_api(&admin, "mthrottle-api", "data", &backend.url("/d")).await;
    let other = admin.create_resource(&s.api_id, &s.root_id, "other").await;
    admin
        .create_http_method(&s.api_id, &other, "GET", &backend.url("/o"))
        .await;
    admin.deploy(&s.api_id, "existing", Some("dev")).await;
    let cfg = |v: serde_json::Value| {
        let mut base = json!({"cors_enabled": false, "jwt_enabled": false});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        base
    };
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &cfg(json!({"method_throttles": [{"path": "/data", "method": "GETX", "rate": 1, "burst": 1}]})),
        )
        .await
        .expect_bad_field("method_throttles[0]");
    let r = admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &cfg(json!({"method_throttles": [{"path": "/data", "method": "GET", "rate": 1, "burst": 2}]})),
        )
        .await;
    assert_eq!(r.expect(200)["stage"]["method_throttles"][0]["burst"], 2);
    let c = data_client();
    let data = gw.invoke_url(&s.api_id, "/dev/data");
    let other_url = gw.invoke_url(&s.api_id, "/dev/other");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(c.get(&data).send().await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "burst 2 then throttled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    for _ in 0..6 {
        assert_eq!(
            c.get(&other_url).send().await.unwrap().status(),
            200,
            "other methods are not limited"
        );
    }
    // A config without the field keeps it; null clears it.
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &cfg(json!({})),
        )
        .await
        .expect(200);
    assert_eq!(c.get(&data).send().await.unwrap().status(), 429);
    admin
        .put(
            &format!("/v1/apis/{}/stages/dev/config", s.api_id),
            &cfg(json!({"method_throttles": null})),
        )
        .await
        .expect(200);
    for _ in 0..5 {
        assert_eq!(c.get(&data).send().await.unwrap().status(), 200);
    }
}
