//! Stage variables (issue [8] item 6) against the real binary:
//! `${stageVariables.NAME}` in an HTTP endpoint URL's path and query,
//! filled per stage (encoded so it stays in its segment), refused in the
//! host; the function event's `stageVariables`.

mod common;

use common::*;
use serde_json::{json, Value};

async fn set_variables(admin: &Admin, api: &str, stage: &str, vars: Value) -> Resp {
    admin
        .put(
            &format!("/v1/apis/{api}/stages/{stage}/config"),
            &json!({"cors_enabled": false, "jwt_enabled": false, "variables": vars}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_variables_fill_the_endpoint_path_per_stage() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("vars");
    let api = admin.create_api("stage-vars").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "items").await;
    let pid = admin.create_resource(&api, &rid, "{item-id}").await;
    admin
        .create_http_method(
            &api,
            &rid,
            "GET",
            &backend.url("/${stageVariables.version}/items?env=${stageVariables.env}"),
        )
        .await;
    admin
        .create_http_method(
            &api,
            &pid,
            "GET",
            &backend.url("/${stageVariables.version}/items/{item-id}/${stageVariables.missing}"),
        )
        .await;
    // Not in the host, port or user: 400 naming endpoint_url.
    for url in [
        "http://${stageVariables.host}/x".to_string(),
        "http://127.0.0.1:${stageVariables.port}/x".to_string(),
        "http://${stageVariables.user}@127.0.0.1/x".to_string(),
    ] {
        let r = admin
            .post(
                &format!("/v1/apis/{api}/resources/{root}/methods"),
                &json!({"method_type": "POST", "integration_type": "HTTP", "endpoint_url": url}),
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        r.expect_bad_field("endpoint_url");
    }

    admin.deploy(&api, "new", Some("dev")).await;
    let dep = admin.deploy(&api, "none", None).await;
    admin
        .post(
            &format!("/v1/apis/{api}/stages"),
            &json!({"stage_name": "prod", "deployment_id": dep}),
        )
        .await
        .expect(200);
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev", "prod"])
        .await;
    let v = set_variables(
        &admin,
        &api,
        "dev",
        json!({"version": "v1", "env": "dev-1"}),
    )
    .await
    .expect(200)["stage"]
        .clone();
    assert_eq!(v["variables"], json!({"version": "v1", "env": "dev-1"}));
    // A value cannot leave its segment: `/`, `?`, `#` are encoded.
    set_variables(
        &admin,
        &api,
        "prod",
        json!({"version": "../v2/x?y#z", "env": "a&b=c"}),
    )
    .await
    .expect(200);

    let c = data_client();
    let r = c
        .get(gw.invoke_url(&api, "/dev/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.last().uri, "/v1/items?env=dev-1");
    let r = c
        .get(gw.invoke_url(&api, "/dev/items?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.last().uri, "/v1/items?env=dev-1&q=1");
    // Path parameters still fill; an undefined variable is empty.
    let r = c
        .get(gw.invoke_url(&api, "/dev/items/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.last().uri, "/v1/items/42/");
    let r = c
        .get(gw.invoke_url(&api, "/prod/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        backend.last().uri,
        "/..%2Fv2%2Fx%3Fy%23z/items?env=a%26b%3Dc"
    );

    // Changing a variable takes effect; null removes them all.
    set_variables(&admin, &api, "dev", json!({"version": "v9"}))
        .await
        .expect(200);
    c.get(gw.invoke_url(&api, "/dev/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(backend.last().uri, "/v9/items?env=");
    let v = set_variables(&admin, &api, "dev", Value::Null)
        .await
        .expect(200)["stage"]
        .clone();
    assert_eq!(v["variables"], json!({}));
    c.get(gw.invoke_url(&api, "/dev/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(backend.last().uri, "//items?env=");

    // Validation: 400 naming variables.NAME (or variables).
    let long = "a".repeat(513);
    for (vars, field) in [
        (json!({"v": "a b"}), "variables.v"),
        (json!({"v": "x%2F"}), "variables.v"),
        (json!({"v": ""}), "variables.v"),
        (json!({"v": ".."}), "variables.v"),
        (json!({"v": long}), "variables.v"),
        (json!({"bad-name": "x"}), "variables"),
        (json!({"v": 1}), "variables"),
        (json!(["v"]), "variables"),
    ] {
        let r = set_variables(&admin, &api, "dev", vars.clone()).await;
        assert_eq!(r.status, 400, "{vars}: {}", r.text());
        r.expect_bad_field(field);
    }
    let ok = "a".repeat(512);
    set_variables(
        &admin,
        &api,
        "dev",
        json!({"v": ok, "u": "A-z0.9_~:/?#&=,"}),
    )
    .await
    .expect(200);
}

/// The example function host (examples/functions/host.py), killed on drop.
struct FunctionHost {
    child: std::process::Child,
    port: u16,
}

impl FunctionHost {
    fn start() -> FunctionHost {
        use std::io::BufRead;
        let dir = repo_root().join("examples/functions");
        let mut child = std::process::Command::new("python3")
            .arg(dir.join("host.py"))
            .args(["--port", "0"])
            .arg("--dir")
            .arg(dir.join("handlers"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the function host");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("the host's first line");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        FunctionHost { child, port }
    }
}

impl Drop for FunctionHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_event_carries_the_stage_variables() {
    let host = FunctionHost::start();
    let gw = Gateway::start();
    let admin = gw.admin();
    let f = admin
        .post(
            "/v1/functions",
            &json!({"name": "inspect", "url": format!("http://127.0.0.1:{}/inspect_event", host.port)}),
        )
        .await
        .expect(201)["function"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let api = admin.create_api("stage-vars-fn").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "inspect").await;
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({"method_type": "GET", "integration_type": "SCF", "function_id": f}),
        )
        .await
        .expect(200);
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/inspect");
    let event = |c: reqwest::Client, url: String| async move {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["event"].clone()
    };
    wait_for_status(&gw, &c, &url, 201, std::time::Duration::from_secs(5), "fn").await;
    // None set: null, as before.
    assert_eq!(
        event(c.clone(), url.clone()).await["stageVariables"],
        Value::Null
    );
    set_variables(
        &admin,
        &api,
        "dev",
        json!({"table": "users_dev", "mode": "a/b"}),
    )
    .await
    .expect(200);
    let e = event(c.clone(), url.clone()).await;
    assert_eq!(
        e["stageVariables"],
        json!({"table": "users_dev", "mode": "a/b"})
    );
    assert_eq!(e["requestContext"]["stage"], "dev");
}
