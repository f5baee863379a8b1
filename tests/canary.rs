//! Canary releases on a stage (issue [8] item 4) against the real binary:
//! the share of requests each side gets, sticky callers, promotion under
//! load, the `x-apigw-deployment` header, the Canary status of List Api
//! Deployments, reports counting the canary apart, and validation.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    api: String,
    stable: Backend,
    canary: Backend,
    /// The stage's active deployment (to `stable`).
    dep1: String,
    /// Not active anywhere (to `canary`).
    dep2: String,
}

/// Stage `dev` on a deployment whose GET /items goes to `stable`, and a
/// second deployment (not active) whose GET /items goes to `canary`.
async fn setup(gw: &Gateway, name: &str) -> Setup {
    let stable = Backend::start("stable");
    let canary = Backend::start("canary");
    let admin = gw.admin();
    let api = deployed_api(gw, name, &[("items", "GET", &stable.url("/items"))]).await;
    let dep1 = stage(&admin, &api).await["deployment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rid = admin
        .resources(&api)
        .await
        .into_iter()
        .find(|r| r["path"] == "/items")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin
        .set_http_method(&api, &rid, "GET", &canary.url("/items"))
        .await;
    let dep2 = admin.deploy(&api, "none", None).await;
    stable.clear();
    Setup {
        api,
        stable,
        canary,
        dep1,
        dep2,
    }
}

async fn stage(admin: &Admin, api: &str) -> Value {
    admin
        .get(&format!("/v1/apis/{api}/stages/dev"))
        .await
        .expect(200)["stage"]
        .clone()
}

async fn set_config(admin: &Admin, api: &str, extra: Value) -> Resp {
    let mut body = json!({"cors_enabled": false, "jwt_enabled": false});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    admin
        .put(&format!("/v1/apis/{api}/stages/dev/config"), &body)
        .await
}

async fn set_canary(admin: &Admin, api: &str, canary: Value) -> Value {
    set_config(admin, api, json!({ "canary": canary }))
        .await
        .expect(200)["stage"]
        .clone()
}

async fn deployment_status(admin: &Admin, api: &str, dep: &str) -> String {
    let list = admin
        .get(&format!("/v1/apis/{api}/deployments"))
        .await
        .expect(200)
        .clone();
    list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment_id"] == dep)
        .unwrap_or_else(|| panic!("{dep} not listed: {list}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// GET with optional `x-user`; (status, x-apigw-deployment, backend tag).
async fn call(c: &reqwest::Client, url: &str, user: Option<&str>) -> (u16, String, String) {
    let mut rq = c.get(url);
    if let Some(u) = user {
        rq = rq.header("x-user", u);
    }
    let r = match rq.send().await {
        Ok(r) => r,
        Err(_) => return (0, String::new(), String::new()),
    };
    let status = r.status().as_u16();
    let dep = r
        .headers()
        .get("x-apigw-deployment")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let tag = r
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v["tag"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, dep, tag)
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_percent_of_ten_thousand_requests_reach_the_canary_and_reports_count_them_apart() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let s = setup(&gw, "canary-split").await;
    let view = set_canary(
        &admin,
        &s.api,
        json!({"deployment_id": s.dep2, "percent": 10.0}),
    )
    .await;
    assert_eq!(
        view["canary"],
        json!({"deployment_id": s.dep2, "percent": 10.0, "sticky_header": null})
    );
    assert_eq!(view["deployment_id"], s.dep1);
    assert_eq!(deployment_status(&admin, &s.api, &s.dep2).await, "Canary");
    assert_eq!(deployment_status(&admin, &s.api, &s.dep1).await, "Active");

    const N: usize = 10_000;
    let c = data_client();
    let url = gw.invoke_url(&s.api, "/dev/items");
    let results: Vec<(u16, String, String)> = futures_util::stream::iter(0..N)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            async move { call(&c, &url, None).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut on_canary = 0;
    for (status, dep, tag) in &results {
        assert_eq!(*status, 200);
        // The header names the deployment whose backend answered.
        if *dep == s.dep2 {
            assert_eq!(tag, "canary");
            on_canary += 1;
        } else {
            assert_eq!(*dep, s.dep1);
            assert_eq!(tag, "stable");
        }
    }
    assert_eq!(s.canary.count(), on_canary);
    assert_eq!(s.stable.count(), N - on_canary);
    let share = on_canary as f64 / N as f64 * 100.0;
    println!("canary share: {on_canary} of {N} = {share:.2} %");
    assert!(
        (8.5..=11.5).contains(&share),
        "canary got {share:.2} % of the requests, want 10 ± 1.5 %"
    );

    // Reports: the canary's answers in their own row, `canary: true`.
    let today = chrono::Utc::now().date_naive().to_string();
    let r = admin
        .get(&format!(
            "/v1/apis/{}/reports?stage_name=dev&start_date={today}&end_date={today}",
            s.api
        ))
        .await
        .expect(200)
        .clone();
    let rows = r["reports"].as_array().unwrap();
    let canary_rows: Vec<&Value> = rows.iter().filter(|x| x["canary"] == true).collect();
    let stable_rows: Vec<&Value> = rows.iter().filter(|x| x.get("canary").is_none()).collect();
    assert_eq!((canary_rows.len(), stable_rows.len()), (1, 1), "{r}");
    assert_eq!(canary_rows[0]["call_count"], on_canary as u64, "{r}");
    assert_eq!(canary_rows[0]["total_count"], on_canary as u64, "{r}");
    // The stable side also counts the setup's requests (waiting for 200).
    let stable_calls = stable_rows[0]["call_count"].as_u64().unwrap();
    assert!(stable_calls >= (N - on_canary) as u64, "{r}");
    assert_eq!(r["count"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sticky_header_keeps_each_caller_on_one_side() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let s = setup(&gw, "canary-sticky").await;
    let view = set_canary(
        &admin,
        &s.api,
        json!({"deployment_id": s.dep2, "percent": 50, "sticky_header": "X-User"}),
    )
    .await;
    assert_eq!(view["canary"]["sticky_header"], "x-user");
    let c = data_client();
    let url = gw.invoke_url(&s.api, "/dev/items");
    let sides: Vec<(usize, std::collections::BTreeSet<String>)> =
        futures_util::stream::iter(0..100usize)
            .map(|i| {
                let (c, url) = (c.clone(), url.clone());
                async move {
                    let user = format!("caller-{i}");
                    let mut seen = std::collections::BTreeSet::new();
                    for _ in 0..10 {
                        let (status, dep, _) = call(&c, &url, Some(&user)).await;
                        assert_eq!(status, 200);
                        seen.insert(dep);
                    }
                    (i, seen)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
    let mut on_canary = 0;
    for (i, seen) in &sides {
        assert_eq!(seen.len(), 1, "caller-{i} was served by {seen:?}");
        if seen.contains(&s.dep2) {
            on_canary += 1;
        }
    }
    println!("sticky: 100 callers x 10 requests, each on one side; {on_canary} on the canary");
    assert!(
        (20..=80).contains(&on_canary),
        "{on_canary} of 100 callers on the canary at 50 %"
    );
    // Without the header: random per request, both sides.
    let mut deps = std::collections::BTreeSet::new();
    for _ in 0..60 {
        deps.insert(call(&c, &url, None).await.1);
    }
    assert_eq!(deps.len(), 2, "{deps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_the_canary_under_load_fails_no_request() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let s = setup(&gw, "canary-promote").await;
    set_canary(
        &admin,
        &s.api,
        json!({"deployment_id": s.dep2, "percent": 30.0}),
    )
    .await;
    let c = data_client();
    let url = gw.invoke_url(&s.api, "/dev/items");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (c, url, stop, ok, failed) = (
            c.clone(),
            url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, dep, _) = call(&c, &url, None).await;
                if status == 200 && !dep.is_empty() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = ok.load(Ordering::Relaxed);
    let promoted = admin.set_stage_deployment(&s.api, "dev", &s.dep2).await;
    let v = promoted.expect(200)["stage"].clone();
    assert_eq!(v["deployment_id"], s.dep2);
    assert_eq!(v["canary"], Value::Null);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("promote under load: {ok} requests answered 200, {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        before > 20 && ok > before + 20,
        "too little load: {before} / {ok}"
    );
    // Only the promoted deployment serves now.
    for _ in 0..30 {
        let (status, dep, tag) = call(&c, &url, None).await;
        assert_eq!(
            (status, dep.as_str(), tag.as_str()),
            (200, s.dep2.as_str(), "canary")
        );
    }
    assert_eq!(deployment_status(&admin, &s.api, &s.dep2).await, "Active");
    assert_eq!(deployment_status(&admin, &s.api, &s.dep1).await, "Inactive");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_settings_are_checked_kept_removed_and_named_in_every_answer() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let s = setup(&gw, "canary-checks").await;
    let api = &s.api;
    let c = data_client();

    // The deployment id on answers, gateway errors after routing included.
    let (status, dep, _) = call(&c, &gw.invoke_url(api, "/dev/items"), None).await;
    assert_eq!((status, dep.as_str()), (200, s.dep1.as_str()));
    let r = c
        .get(gw.invoke_url(api, "/dev/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-apigw-error"], "ResourceNotFound");
    assert_eq!(r.headers()["x-apigw-deployment"], s.dep1.as_str());
    let r = c
        .post(gw.invoke_url(api, "/dev/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["x-apigw-deployment"], s.dep1.as_str());
    // Before a stage is known: none.
    let r = c
        .get(gw.invoke_url(api, "/nostage/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-apigw-error"], "StageNotFound");
    assert!(r.headers().get("x-apigw-deployment").is_none());
    let r = c
        .get(gw.invoke_url("nosuchapi", "/dev/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-apigw-error"], "ApiNotFound");
    assert!(r.headers().get("x-apigw-deployment").is_none());

    // Validation: 400 naming the field, 404 for an unknown deployment.
    let cases = [
        (
            json!({"deployment_id": s.dep2, "percent": 100.5}),
            "canary.percent",
        ),
        (
            json!({"deployment_id": s.dep2, "percent": -1}),
            "canary.percent",
        ),
        (json!({"deployment_id": s.dep2, "percent": "10"}), "canary"),
        (json!({"deployment_id": s.dep2}), "canary"),
        (
            json!({"deployment_id": s.dep1, "percent": 10}),
            "canary.deployment_id",
        ),
        (
            json!({"deployment_id": "", "percent": 10}),
            "canary.deployment_id",
        ),
        (
            json!({"deployment_id": s.dep2, "percent": 10, "sticky_header": "bad header"}),
            "canary.sticky_header",
        ),
        (
            json!({"deployment_id": s.dep2, "percent": 10, "weight": 3}),
            "canary",
        ),
        (json!([s.dep2, 10]), "canary"),
    ];
    for (canary, field) in cases {
        let r = set_config(&admin, api, json!({ "canary": canary })).await;
        assert_eq!(r.status, 400, "{canary} -> {}", r.text());
        r.expect_bad_field(field);
    }
    let r = set_config(
        &admin,
        api,
        json!({"canary": {"deployment_id": "0123456789abcdef0123456789abcdef", "percent": 5}}),
    )
    .await;
    r.expect_error(404, "NotFound");
    // Another API's deployment is not found in this one.
    let other = deployed_api(
        &gw,
        "canary-other",
        &[("items", "GET", &s.stable.url("/x"))],
    )
    .await;
    let other_dep = stage(&admin, &other).await["deployment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = set_config(
        &admin,
        api,
        json!({"canary": {"deployment_id": other_dep, "percent": 5}}),
    )
    .await;
    r.expect_error(404, "NotFound");
    // Another account cannot touch it.
    let r = admin
        .second_account()
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &json!({"cors_enabled": false, "jwt_enabled": false,
                    "canary": {"deployment_id": s.dep2, "percent": 5}}),
        )
        .await;
    r.expect_error(404, "NotFound");
    assert_eq!(stage(&admin, api).await["canary"], Value::Null);

    // Set; kept by a configuration without the field; shown in List Stages.
    set_canary(
        &admin,
        api,
        json!({"deployment_id": s.dep2, "percent": 100}),
    )
    .await;
    let v = set_config(&admin, api, json!({"description": "still canary"}))
        .await
        .expect(200)["stage"]
        .clone();
    assert_eq!(v["canary"]["percent"], 100.0);
    let listed = admin
        .get(&format!("/v1/apis/{api}/stages"))
        .await
        .expect(200)
        .clone();
    assert_eq!(listed["stages"][0]["canary"]["deployment_id"], s.dep2);
    // At 100 % every answer is the canary's, errors included.
    let (_, dep, tag) = call(&c, &gw.invoke_url(api, "/dev/items"), None).await;
    assert_eq!((dep.as_str(), tag.as_str()), (s.dep2.as_str(), "canary"));
    let r = c
        .get(gw.invoke_url(api, "/dev/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-apigw-deployment"], s.dep2.as_str());

    // Activating a third deployment keeps the canary (as AWS does).
    let dep3 = admin.deploy(api, "none", None).await;
    let v = admin
        .set_stage_deployment(api, "dev", &dep3)
        .await
        .expect(200)["stage"]
        .clone();
    assert_eq!(v["deployment_id"], dep3);
    assert_eq!(v["canary"]["deployment_id"], s.dep2);
    assert_eq!(deployment_status(&admin, api, &s.dep1).await, "Inactive");

    // null removes it; the deployment is no longer Canary.
    let v = set_canary(&admin, api, Value::Null).await;
    assert_eq!(v["canary"], Value::Null);
    assert_eq!(deployment_status(&admin, api, &s.dep2).await, "Inactive");
    let (_, dep, _) = call(&c, &gw.invoke_url(api, "/dev/items"), None).await;
    assert_eq!(dep, dep3);
    // And after a restart, a canary set before it is still there.
    set_canary(
        &admin,
        api,
        json!({"deployment_id": s.dep2, "percent": 100}),
    )
    .await;
    let mut gw = gw;
    gw.restart();
    let admin = gw.admin();
    assert_eq!(stage(&admin, api).await["canary"]["deployment_id"], s.dep2);
    let (_, dep, _) = call(&data_client(), &gw.invoke_url(api, "/dev/items"), None).await;
    assert_eq!(dep, s.dep2);
}
