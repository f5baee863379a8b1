//! Process life cycle and deployments: immutability of deployments,
//! restart keeping every committed object, switching the active deployment
//! under continuous load, and the examples/quickstart.sh script.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(3);

async fn body_uri(c: &reqwest::Client, url: &str) -> (u16, String) {
    match c.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (s, v["uri"].as_str().unwrap_or("").to_string())
        }
        Err(e) => (0, e.to_string()),
    }
}

async fn wait_uri(c: &reqwest::Client, url: &str, want: &str) -> bool {
    eventually(WAIT, || {
        let c = c.clone();
        let url = url.to_string();
        let want = want.to_string();
        async move { body_uri(&c, &url).await == (200, want) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_are_immutable() {
    let gw = Gateway::start();
    let backend = Backend::start("imm");
    let admin = gw.admin();
    let s = simple_api(&admin, "immutable-api", "item", &backend.url("/v1/item")).await;
    let (api, rid, root) = (s.api_id.clone(), s.resource_id.clone(), s.root_id.clone());
    let c = data_client();
    let item = gw.invoke_url(&api, "/dev/item");
    let extra = gw.invoke_url(&api, "/dev/extra");
    assert!(
        wait_uri(&c, &item, "/v1/item").await,
        "first deployment not served"
    );

    // edit after deploying: method endpoint changed, new resource+method,
    // a new POST method
    admin
        .set_http_method(&api, &rid, "GET", &backend.url("/v2/item"))
        .await;
    let extra_id = admin.create_resource(&api, &root, "extra").await;
    admin
        .create_http_method(&api, &extra_id, "GET", &backend.url("/v2/extra"))
        .await;
    admin
        .create_http_method(&api, &rid, "POST", &backend.url("/v2/post"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        body_uri(&c, &item).await,
        (200, "/v1/item".to_string()),
        "an undeployed edit changed what is served"
    );
    assert_eq!(
        body_uri(&c, &extra).await.0,
        404,
        "an undeployed resource is served"
    );
    let r = c.post(&item).send().await.unwrap();
    assert_eq!(r.status(), 405, "an undeployed method is served");

    // deleting the method (and even the resource) changes nothing served
    admin
        .delete(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(body_uri(&c, &item).await, (200, "/v1/item".to_string()));

    // put GET back with the v2 endpoint, then deploy: now v2 is served
    admin
        .create_http_method(&api, &rid, "GET", &backend.url("/v2/item"))
        .await;
    let d2 = admin.deploy(&api, "existing", Some("dev")).await;
    assert!(
        wait_uri(&c, &item, "/v2/item").await,
        "new deployment not served"
    );
    assert_eq!(body_uri(&c, &extra).await, (200, "/v2/extra".to_string()));

    // the old deployment is still intact: switch back and v1 is served again
    let r = admin
        .set_stage_deployment(&api, "dev", &s.deployment_id)
        .await;
    r.expect(200);
    assert!(
        wait_uri(&c, &item, "/v1/item").await,
        "rolling back to the first deployment failed"
    );
    assert_eq!(body_uri(&c, &extra).await.0, 404);
    admin
        .set_stage_deployment(&api, "dev", &d2)
        .await
        .expect(200);
    assert!(wait_uri(&c, &item, "/v2/item").await);

    // a second stage on the first deployment serves v1 alongside
    admin
        .post(
            &format!("/v1/apis/{api}/stages"),
            &json!({"stage_name": "old", "deployment_id": s.deployment_id}),
        )
        .await
        .expect(200);
    admin
        .put(
            &format!("/v1/apis/{api}/access-controls/{}", s.access_control_id),
            &json!({"allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": ["dev", "old"]}),
        )
        .await
        .expect(200);
    assert!(wait_uri(&c, &gw.invoke_url(&api, "/old/item"), "/v1/item").await);
    assert_eq!(body_uri(&c, &item).await, (200, "/v2/item".to_string()));
}

/// Everything the management API lists, for before/after comparison.
async fn dump(admin: &Admin) -> Value {
    let mut out = serde_json::Map::new();
    let apis = admin.get("/v1/apis?size=100").await.expect(200).clone();
    out.insert("apis".into(), apis.clone());
    for a in apis["apis"].as_array().unwrap() {
        let id = a["id"].as_str().unwrap();
        let mut per = serde_json::Map::new();
        per.insert(
            "api".into(),
            admin
                .get(&format!("/v1/apis/{id}"))
                .await
                .expect(200)
                .clone(),
        );
        let res = admin
            .get(&format!("/v1/apis/{id}/resources"))
            .await
            .expect(200)
            .clone();
        for r in res["resources"].as_array().unwrap() {
            let rid = r["id"].as_str().unwrap();
            per.insert(
                format!("methods {}", r["path"].as_str().unwrap()),
                admin
                    .get(&format!("/v1/apis/{id}/resources/{rid}/methods"))
                    .await
                    .expect(200)
                    .clone(),
            );
        }
        per.insert("resources".into(), res);
        per.insert(
            "deployments".into(),
            admin
                .get(&format!("/v1/apis/{id}/deployments"))
                .await
                .expect(200)
                .clone(),
        );
        let stages = admin
            .get(&format!("/v1/apis/{id}/stages"))
            .await
            .expect(200)
            .clone();
        for s in stages["stages"].as_array().unwrap() {
            let name = s["name"].as_str().unwrap();
            per.insert(
                format!("stage {name}"),
                admin
                    .get(&format!("/v1/apis/{id}/stages/{name}"))
                    .await
                    .expect(200)
                    .clone(),
            );
        }
        per.insert("stages".into(), stages);
        per.insert(
            "access_controls".into(),
            admin
                .get(&format!("/v1/apis/{id}/access-controls"))
                .await
                .expect(200)
                .clone(),
        );
        out.insert(id.to_string(), Value::Object(per));
    }
    Value::Object(out)
}

/// Arrays sorted (list order is not part of the comparison).
fn canon(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(canon).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), canon(v))).collect()),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_committed_object() {
    let mut gw = Gateway::start();
    let backend = Backend::start("rs");
    let admin = gw.admin();

    // API 1: params, several methods, two deployments, two stages, an ACL
    let a1 = admin.create_api("persist-one").await;
    admin
        .put(
            &format!("/v1/apis/{a1}/description"),
            &json!({"description": "kept across restarts"}),
        )
        .await
        .expect(200);
    let root = admin.root_id(&a1).await;
    let users = admin.create_resource(&a1, &root, "users").await;
    let user = admin.create_resource(&a1, &users, "{user-id}").await;
    admin
        .create_http_method(&a1, &users, "GET", &backend.url("/list"))
        .await;
    admin
        .post(&format!("/v1/apis/{a1}/resources/{user}/methods"), &json!({
            "method_type": "GET", "integration_type": "HTTP", "endpoint_url": backend.url("/user/{user-id}"),
            "api_key_required": false, "query_strings": {"verbose": true}, "request_headers": {"x-trace": false}}))
        .await
        .expect(200);
    let function_id = admin
        .register_function("lifecycle-fn", "http://127.0.0.1:9/")
        .await;
    admin
        .post(
            &format!("/v1/apis/{a1}/resources/{user}/methods"),
            &json!({
            "method_type": "DELETE", "integration_type": "SCF", "function_id": function_id}),
        )
        .await
        .expect(200);
    let d1 = admin.deploy(&a1, "new", Some("dev")).await;
    admin
        .set_http_method(&a1, &users, "GET", &backend.url("/list-v2"))
        .await;
    let d2 = admin.deploy(&a1, "none", None).await;
    admin
        .post(
            &format!("/v1/apis/{a1}/stages"),
            &json!({"stage_name": "prod", "deployment_id": d2, "description": "production"}),
        )
        .await
        .expect(200);
    admin
        .put(&format!("/v1/apis/{a1}/stages/prod/config"), &json!({"cors_enabled": true, "jwt_enabled": false, "allow_origins": ["https://a.example"], "max_age": 60}))
        .await
        .expect(200);
    admin
        .create_access_control(&a1, "local", &["127.0.0.1/32,10.0.0.0/8"], &["dev", "prod"])
        .await;

    // API 2: PRIVATE, with a deleted resource
    let r = admin.post("/v1/apis", &json!({"name": "persist-two", "endpoint_type": "PRIVATE", "tags": [{"key": "k", "value": "v"}]})).await;
    let a2 = r.expect(202)["id"].as_str().unwrap().to_string();
    let root2 = admin.root_id(&a2).await;
    let gone = admin.create_resource(&a2, &root2, "gone").await;
    admin.create_resource(&a2, &root2, "stays").await;
    admin
        .delete(&format!("/v1/apis/{a2}/resources/{gone}"))
        .await;
    // a deleted access control on API 1
    let ac = admin
        .create_access_control(&a1, "temp", &["127.0.0.1"], &[])
        .await;
    admin
        .delete(&format!("/v1/apis/{a1}/access-controls/{ac}"))
        .await;
    // API 3: created and deleted
    let a3 = admin.create_api("persist-three").await;
    admin.delete(&format!("/v1/apis/{a3}")).await;

    let c = data_client();
    let dev_url = |gw: &Gateway| gw.invoke_url(&a1, "/dev/users/9?verbose=1");
    let prod_url = |gw: &Gateway| gw.invoke_url(&a1, "/prod/users");
    assert!(wait_uri(&c, &dev_url(&gw), "/user/9?verbose=1").await);
    assert!(wait_uri(&c, &prod_url(&gw), "/list-v2").await);

    let old_port = gw.data_port();
    let before = dump(&admin).await;

    // SIGKILL: a 2xx must already be on disk
    gw.restart();
    let admin = gw.admin();
    let after = dump(&admin).await;
    let norm = |v: &Value, port: u16| canon(v).to_string().replace(&format!(":{port}/"), ":PORT/");
    assert_eq!(
        norm(&before, old_port),
        norm(&after, gw.data_port()),
        "state differs after restart"
    );
    assert!(before["apis"]["apis"].as_array().unwrap().len() == 2);
    let _ = d1;

    // the data plane serves the same deployments
    assert!(
        wait_uri(&c, &dev_url(&gw), "/user/9?verbose=1").await,
        "dev not served after restart; logs:\n{}",
        gw.logs()
    );
    assert!(
        wait_uri(&c, &prod_url(&gw), "/list-v2").await,
        "prod not served after restart"
    );
    assert_eq!(
        body_uri(&c, &gw.invoke_url(&a1, "/dev/users")).await,
        (200, "/list".to_string())
    );
    // and the management API still writes
    let a4 = admin.create_api("after-restart").await;
    admin.get(&format!("/v1/apis/{a4}")).await.expect(200);
    admin
        .post("/v1/apis", &json!({"name": "persist-one"}))
        .await
        .expect_error(409, "Conflict");

    // a second, graceful restart keeps everything too
    gw.terminate();
    gw.restart();
    let admin = gw.admin();
    let again = dump(&admin).await;
    assert_eq!(again["apis"]["apis"].as_array().unwrap().len(), 3);
    assert!(wait_uri(&c, &dev_url(&gw), "/user/9?verbose=1").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_deployments_under_load_drops_nothing() {
    // One worker: the gateway runs on a current-thread runtime, so admin
    // writes, snapshot rebuilds and traffic share one thread.
    let gw = Gateway::start_with(&[("worker_threads", "1")]);
    let backend = Backend::start("sw");
    let admin = gw.admin();
    let s = simple_api(&admin, "switch-api", "ping", &backend.url("/a")).await;
    let api = s.api_id.clone();
    let da = s.deployment_id.clone();
    admin
        .set_http_method(&api, &s.resource_id, "GET", &backend.url("/b"))
        .await;
    let db = admin.deploy(&api, "none", None).await;
    let url = gw.invoke_url(&api, "/dev/ping");
    let c = data_client();
    assert!(wait_uri(&c, &url, "/a").await);

    let duration = Duration::from_secs(15);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let seen_a = Arc::new(AtomicU64::new(0));
    let seen_b = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));

    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = data_client();
        let url = url.clone();
        let (stop, ok, failed, seen_a, seen_b, first_failure) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen_a.clone(),
            seen_b.clone(),
            first_failure.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, uri) = body_uri(&c, &url).await;
                match (status, uri.as_str()) {
                    (200, "/a") => {
                        seen_a.fetch_add(1, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    (200, "/b") => {
                        seen_b.fetch_add(1, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_failure.lock().unwrap();
                        if f.is_none() {
                            *f = Some(format!("{other:?}"));
                        }
                    }
                }
            }
        }));
    }
    // the flipper
    let t0 = Instant::now();
    let mut flips = 0u32;
    let mut flip_errors = Vec::new();
    while t0.elapsed() < duration {
        let target = if flips.is_multiple_of(2) { &db } else { &da };
        let r = admin.set_stage_deployment(&api, "dev", target).await;
        if r.status != 200 {
            flip_errors.push(format!("{} {}", r.status, r.text()));
        }
        flips += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.await.unwrap();
    }
    let (ok, failed, a, b) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        seen_a.load(Ordering::Relaxed),
        seen_b.load(Ordering::Relaxed),
    );
    eprintln!(
        "{flips} flips, {ok} ok ({a} a / {b} b), {failed} failed in {:?}",
        t0.elapsed()
    );
    assert!(
        flip_errors.is_empty(),
        "stage switches failed: {flip_errors:?}"
    );
    assert_eq!(
        failed,
        0,
        "requests failed during switches; first: {:?}",
        first_failure.lock().unwrap()
    );
    assert!(flips >= 50, "only {flips} flips");
    assert!(
        a > 0 && b > 0,
        "both deployments must have answered: a={a} b={b}"
    );
    assert!(ok > 500, "too few requests ({ok}) to mean anything");
}

#[test]
fn quickstart_script_works() {
    let gw = Gateway::start();
    let script = repo_root().join("examples/quickstart.sh");
    assert!(script.exists(), "examples/quickstart.sh missing");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("APIGW_ADMIN", format!("http://{}", gw.admin_addr))
        .env("APIGW_DATA", gw.data_addr.to_string())
        .env("APIGW_ACCESS_KEY", DEV_ACCESS_KEY)
        .env("APIGW_SECRET_KEY", DEV_SECRET_KEY)
        .env("APIGW_ACCOUNT_ID", DEV_ACCOUNT_ID)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run quickstart.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart.sh failed ({:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- gateway ---\n{}",
        out.status,
        gw.logs()
    );
    assert!(
        stdout.contains("hello from the backend"),
        "the backend's answer is not printed:\n{stdout}"
    );

    // the script left a working API behind: it is listed and served
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = gw.admin();
        let v = admin.get("/v1/apis").await.expect(200).clone();
        assert_eq!(v["apis"].as_array().unwrap().len(), 1, "{v}");
    });

    // a failing run exits non-zero (wrong secret)
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("APIGW_ADMIN", format!("http://{}", gw.admin_addr))
        .env("APIGW_DATA", gw.data_addr.to_string())
        .env("APIGW_SECRET_KEY", "wrong-secret")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run quickstart.sh");
    assert!(!out.status.success(), "quickstart.sh must fail on a 401");
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_store_path_is_created_and_reused() {
    // cwd of the gateway is its temp dir
    let mut gw = Gateway::start_with(&[("store_url", "\"sqlite://./data/apigw.db\"")]);
    let admin = gw.admin();
    let id = admin.create_api("relative-store").await;
    assert!(
        gw.dir.path().join("data/apigw.db").exists(),
        "store not created at ./data/apigw.db"
    );
    gw.restart();
    gw.admin().get(&format!("/v1/apis/{id}")).await.expect(200);
}

#[test]
fn sigterm_stops_the_process() {
    let mut gw = Gateway::start();
    let pid = gw.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            eprintln!("exit after SIGTERM: {status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_documents_the_settings() {
    let out = std::process::Command::new(gateway_binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("serve"), "{text}");
    let out = std::process::Command::new(gateway_binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for key in [
        "data_listen",
        "admin_listen",
        "invoke_domain",
        "store_url",
        "public_base_url",
        "max_header_bytes",
        "max_body_bytes",
        "header_read_timeout_ms",
        "upstream_connect_timeout_ms",
        "upstream_timeout_ms",
        "credentials",
        "APIGW_",
    ] {
        assert!(
            text.contains(key),
            "`apigw serve --help` does not mention {key}:\n{text}"
        );
    }
}

#[test]
fn bad_config_fails_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "data_listen = \"not an address\"\n").unwrap();
    let out = std::process::Command::new(gateway_binary())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad config must not start");
    assert!(
        !String::from_utf8_lossy(&out.stderr).is_empty(),
        "no error message"
    );
}

fn data_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .map(|c| c.starts_with("apigw-data-"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Each worker has its own runtime and SO_REUSEPORT listener (default), or
/// all share one work-stealing runtime (`reuse_port = false`): either way
/// every one of many concurrent connections is served.
#[tokio::test(flavor = "multi_thread")]
async fn per_worker_listeners_and_shared_runtime_both_serve() {
    for (reuse, want_threads) in [("true", 3), ("false", 0)] {
        let gw = Gateway::start_with(&[("worker_threads", "3"), ("reuse_port", reuse)]);
        let backend = Backend::start("workers");
        let api = deployed_api(&gw, "workers-api", &[("work", "GET", &backend.url("/w"))]).await;
        let url = gw.invoke_url(&api, "/dev/work");
        assert_eq!(
            data_threads(gw.pid()),
            want_threads,
            "reuse_port={reuse}: data worker threads"
        );
        // 60 clients, each on its own connection, 5 calls each.
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = data_client();
                let mut ok = 0;
                for _ in 0..5 {
                    if status_of(&c, &url).await == 200 {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        assert_eq!(ok, 300, "reuse_port={reuse}: calls answered 200");
    }
}
