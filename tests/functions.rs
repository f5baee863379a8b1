//! Cloud Function integration (issue [7], item 1) against the real
//! binary: registering functions (the management extension beside the SCP
//! operations), SCF methods that name them, and the Lambda proxy event
//! (payload format 1.0) through the example function host.

mod common;

use common::*;
use serde_json::{json, Value};

fn second_account(admin: &Admin) -> Admin {
    admin.second_account()
}

async fn create_function(admin: &Admin, body: Value) -> Value {
    let r = admin.post("/v1/functions", &body).await;
    r.expect(201)["function"].clone()
}

async fn scf_method(admin: &Admin, api: &str, rid: &str, method: &str, function_id: &str) -> Resp {
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({
                "method_type": method,
                "integration_type": "SCF",
                "function_id": function_id,
            }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_are_registered_listed_set_and_deleted_per_account() {
    let gw = Gateway::start();
    let admin = gw.admin();

    let f = create_function(
        &admin,
        json!({
            "name": "hello-fn",
            "url": "http://127.0.0.1:9/invoke",
            "description": "says hello",
            "timeout_ms": 1500,
            "auth_header": {"name": "X-Function-Key", "value": "s3cret-value"},
        }),
    )
    .await;
    let id = f["id"].as_str().unwrap().to_string();
    assert!(is_id(&id), "{f}");
    assert_eq!(f["name"], "hello-fn");
    assert_eq!(f["url"], "http://127.0.0.1:9/invoke");
    assert_eq!(f["description"], "says hello");
    assert_eq!(f["timeout_ms"], 1500);
    assert!(is_rfc3339(&f["created_at"]) && is_rfc3339(&f["modified_at"]));
    // The auth value is never returned, by any operation.
    assert!(!f.to_string().contains("s3cret-value"), "{f}");

    let shown = admin.get(&format!("/v1/functions/{id}")).await;
    assert!(!shown.text().contains("s3cret-value"));
    assert_eq!(shown.expect(200)["function"], f);
    let listed = admin.get("/v1/functions").await;
    assert!(!listed.text().contains("s3cret-value"));
    let listed = listed.expect(200).clone();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["functions"][0], f);

    // Another account sees none of it.
    let other = second_account(&admin);
    assert_eq!(other.get("/v1/functions").await.expect(200)["count"], 0);
    other
        .get(&format!("/v1/functions/{id}"))
        .await
        .expect_error(404, "NotFound");
    other
        .delete(&format!("/v1/functions/{id}"))
        .await
        .expect_error(404, "NotFound");

    // Bad input names the field.
    for (body, field) in [
        (json!({"url": "http://127.0.0.1:9/"}), "name"),
        (
            json!({"name": "Bad Name", "url": "http://127.0.0.1:9/"}),
            "name",
        ),
        (json!({"name": "fn-a", "url": "ftp://x/"}), "url"),
        (json!({"name": "fn-a", "url": "http://h/{x}"}), "url"),
        (
            json!({"name": "fn-a", "url": "http://h/", "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"name": "fn-a", "url": "http://h/", "timeout_ms": 10_000_000}),
            "timeout_ms",
        ),
        (
            json!({"name": "fn-a", "url": "http://h/", "auth_header": {"name": "bad name", "value": "v"}}),
            "auth_header.name",
        ),
        (
            json!({"name": "fn-a", "url": "http://h/", "auth_header": {"name": "host", "value": "v"}}),
            "auth_header.name",
        ),
        (
            json!({"name": "fn-a", "url": "http://h/", "auth_header": {"name": "x-k", "value": "a\u{7f}b"}}),
            "auth_header.value",
        ),
        (
            json!({"name": "fn-a", "url": "http://h/", "auth_header": ["x-k", "v"]}),
            "auth_header",
        ),
    ] {
        admin
            .post("/v1/functions", &body)
            .await
            .expect_bad_field(field);
    }
    // A name is unique within the account.
    admin
        .post(
            "/v1/functions",
            &json!({"name": "hello-fn", "url": "http://127.0.0.1:9/"}),
        )
        .await
        .expect_error(409, "Conflict");

    // PUT replaces every field.
    let set = admin
        .put(
            &format!("/v1/functions/{id}"),
            &json!({"name": "hello-fn2", "url": "http://127.0.0.1:10/x"}),
        )
        .await;
    let set = set.expect(200)["function"].clone();
    assert_eq!(set["name"], "hello-fn2");
    assert_eq!(set["timeout_ms"], Value::Null);
    assert_eq!(set["description"], "");
    assert_eq!(set["created_at"], f["created_at"]);

    // SCF methods need a registered function of the account.
    let api = admin.create_api("fn-api").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "hello").await;
    scf_method(
        &admin,
        &api,
        &rid,
        "GET",
        "0123456789abcdef0123456789abcdef",
    )
    .await
    .expect_bad_field("function_id");
    scf_method(&admin, &api, &rid, "GET", "")
        .await
        .expect_bad_field("function_id");
    let m = scf_method(&admin, &api, &rid, "GET", &id).await;
    let m = m.expect(200)["methods"][0].clone();
    assert_eq!(m["function_id"], id.as_str());
    assert_eq!(m["function_name"], "hello-fn2");
    let shown = admin
        .get(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await;
    assert_eq!(shown.expect(200)["method"]["function_name"], "hello-fn2");
    // Renaming the function shows in the method.
    admin
        .put(
            &format!("/v1/functions/{id}"),
            &json!({"name": "hello-fn3", "url": "http://127.0.0.1:10/x"}),
        )
        .await
        .expect(200);
    let shown = admin
        .get(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await;
    assert_eq!(shown.expect(200)["method"]["function_name"], "hello-fn3");
    // Set Method checks it too.
    let set_body = |fid: &str| {
        json!({
            "api_key_required": false,
            "integration_type": "SCF",
            "function_id": fid,
            "query_strings": {},
            "request_headers": {},
        })
    };
    admin
        .put(
            &format!("/v1/apis/{api}/resources/{rid}/methods/GET"),
            &set_body("ffffffffffffffffffffffffffffffff"),
        )
        .await
        .expect_bad_field("function_id");

    // Another account's function cannot be named.
    let theirs = create_function(
        &other,
        json!({"name": "their-fn", "url": "http://127.0.0.1:9/"}),
    )
    .await;
    admin
        .put(
            &format!("/v1/apis/{api}/resources/{rid}/methods/GET"),
            &set_body(theirs["id"].as_str().unwrap()),
        )
        .await
        .expect_bad_field("function_id");

    // In use: 409; once the method is gone (and no stage serves it), 204.
    admin
        .delete(&format!("/v1/functions/{id}"))
        .await
        .expect_error(409, "Conflict");
    admin
        .delete(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await
        .expect(204);
    admin
        .delete(&format!("/v1/functions/{id}"))
        .await
        .expect(204);
    admin
        .get(&format!("/v1/functions/{id}"))
        .await
        .expect_error(404, "NotFound");

    // Registered functions survive a restart (the store).
    let mut gw = gw;
    gw.restart();
    let admin = gw.admin();
    assert_eq!(admin.get("/v1/functions").await.expect(200)["count"], 0);
    let other = second_account(&admin);
    let after = other.get("/v1/functions").await;
    assert_eq!(after.expect(200)["functions"][0]["name"], "their-fn");
}

/// The example function host (examples/functions/host.py), killed on drop.
struct FunctionHost {
    child: std::process::Child,
    port: u16,
}

impl FunctionHost {
    fn start(auth: &str) -> FunctionHost {
        use std::io::BufRead;
        let dir = repo_root().join("examples/functions");
        let mut child = std::process::Command::new("python3")
            .arg(dir.join("host.py"))
            .args(["--port", "0", "--auth-header", auth])
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

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for FunctionHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_handlers_answer_through_the_gateway_and_bad_replies_get_their_code() {
    let host = FunctionHost::start("x-fn-key=k3y-secret");
    let gw = Gateway::start();
    let admin = gw.admin();
    let auth = json!({"name": "X-Fn-Key", "value": "k3y-secret"});
    let mut ids = std::collections::BTreeMap::new();
    for (name, handler, timeout_ms) in [
        ("hello", "hello", None),
        ("inspect", "inspect_event", None),
        ("no-status", "no_status", None),
        ("not-json", "not_json", None),
        ("huge", "huge", None),
        ("slow", "slow", Some(500)),
        ("fails", "fails", None),
    ] {
        let f = create_function(
            &admin,
            json!({"name": name, "url": host.url(handler), "timeout_ms": timeout_ms, "auth_header": auth}),
        )
        .await;
        ids.insert(name, f["id"].as_str().unwrap().to_string());
    }
    // The endpoint is down; the auth header is missing (the host says 401).
    let down = create_function(
        &admin,
        json!({"name": "down", "url": format!("http://127.0.0.1:{}/hello", closed_port())}),
    )
    .await;
    ids.insert("down", down["id"].as_str().unwrap().to_string());
    let noauth =
        create_function(&admin, json!({"name": "no-auth", "url": host.url("hello")})).await;
    ids.insert("no-auth", noauth["id"].as_str().unwrap().to_string());

    let api = admin.create_api("fn-data").await;
    let root = admin.root_id(&api).await;
    let hello = admin.create_resource(&api, &root, "hello").await;
    let hello_name = admin.create_resource(&api, &hello, "{name}").await;
    scf_method(&admin, &api, &hello_name, "GET", &ids["hello"])
        .await
        .expect(200);
    let inspect = admin.create_resource(&api, &root, "inspect").await;
    let ia = admin.create_resource(&api, &inspect, "{first}").await;
    let ib = admin.create_resource(&api, &ia, "{second}").await;
    scf_method(&admin, &api, &ib, "ANY", &ids["inspect"])
        .await
        .expect(200);
    for name in [
        "no-status",
        "not-json",
        "huge",
        "slow",
        "fails",
        "down",
        "no-auth",
    ] {
        let rid = admin.create_resource(&api, &root, name).await;
        scf_method(&admin, &api, &rid, "GET", &ids[name])
            .await
            .expect(200);
    }
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let client = data_client();
    let url = |p: &str| gw.invoke_url(&api, &format!("/dev{p}"));
    wait_for_status(
        &gw,
        &client,
        &url("/hello/kim"),
        200,
        std::time::Duration::from_secs(5),
        "hello",
    )
    .await;

    // Show Method names the function.
    let shown = admin
        .get(&format!(
            "/v1/apis/{api}/resources/{hello_name}/methods/GET"
        ))
        .await;
    assert_eq!(shown.expect(200)["method"]["function_name"], "hello");

    // An AWS handler, unchanged.
    let r = client.get(url("/hello/kim")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "hello, kim");
    assert_eq!(v["requestId"], rid.as_str());

    // Every event field, multi-value headers and query strings, path
    // parameters (the handler asserts them too: a failed assertion would
    // be a 502 here).
    let r = client
        .post(url("/inspect/x%20y/two?q=1&q=2&single=s%21&plus=a+b"))
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("content-type", "application/json")
        .body(r#"{"k":"v"}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    assert_eq!(headers["x-single"], "one");
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let rid = headers["x-request-id"].to_str().unwrap().to_string();
    let e = serde_json::from_str::<Value>(&text).unwrap()["event"].clone();
    assert_eq!(e["resource"], "/inspect/{first}/{second}");
    assert_eq!(e["path"], "/inspect/x%20y/two");
    assert_eq!(e["httpMethod"], "POST");
    assert_eq!(
        e["pathParameters"],
        json!({"first": "x y", "second": "two"})
    );
    assert_eq!(
        e["queryStringParameters"],
        json!({"q": "2", "single": "s!", "plus": "a b"})
    );
    assert_eq!(
        e["multiValueQueryStringParameters"],
        json!({"q": ["1", "2"], "single": ["s!"], "plus": ["a b"]})
    );
    assert_eq!(e["multiValueHeaders"]["x-multi"], json!(["a", "b"]));
    assert_eq!(e["headers"]["x-multi"], "b");
    assert_eq!(e["headers"]["content-type"], "application/json");
    assert!(
        e["headers"].get("x-fn-key").is_none(),
        "the function's key is not the client's"
    );
    assert_eq!(e["stageVariables"], Value::Null);
    assert_eq!(e["body"], r#"{"k":"v"}"#);
    assert_eq!(e["isBase64Encoded"], false);
    let c = &e["requestContext"];
    assert_eq!(c["requestId"], rid.as_str());
    assert_eq!(c["stage"], "dev");
    assert_eq!(c["apiId"], api.as_str());
    assert_eq!(c["resourcePath"], "/inspect/{first}/{second}");
    assert_eq!(c["httpMethod"], "POST");
    assert_eq!(c["path"], "/dev/inspect/x%20y/two");
    assert_eq!(c["identity"]["sourceIp"], "127.0.0.1");
    let epoch = c["requestTimeEpoch"].as_i64().unwrap();
    assert!((epoch - now_ms()).abs() < 60_000, "{epoch}");
    // No body, no query: null, as Lambda.
    let r = client.get(url("/inspect/a/b")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let e = r.json::<Value>().await.unwrap()["event"].clone();
    assert_eq!(e["body"], Value::Null);
    assert_eq!(e["queryStringParameters"], Value::Null);
    assert_eq!(e["multiValueQueryStringParameters"], Value::Null);

    // A binary body: base64 to the function and back.
    let bin: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00]).collect();
    let r = client
        .put(url("/inspect/bin/ary"))
        .header("content-type", "application/octet-stream")
        .body(bin.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-event-base64"], "true");
    let back = r.bytes().await.unwrap();
    let mut want = bin.clone();
    want.reverse();
    assert_eq!(back.as_ref(), want.as_slice());

    // Replies that are not the proxy shape, failures, a timeout.
    let expect = |p: &'static str, status: u16, code: &'static str| {
        let (client, u) = (client.clone(), url(p));
        async move {
            let started = std::time::Instant::now();
            let r = client.get(u).send().await.unwrap();
            let took = started.elapsed();
            let got = r.status().as_u16();
            let h = r
                .headers()
                .get("x-apigw-error")
                .map(|v| v.to_str().unwrap().to_string());
            let body = r.text().await.unwrap();
            assert_eq!((got, h.as_deref()), (status, Some(code)), "{p}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["message"].is_string(), "{p}: {body}");
            took
        }
    };
    expect("/no-status", 502, "FunctionBadReply").await;
    expect("/not-json", 502, "FunctionBadReply").await;
    expect("/huge", 502, "FunctionBadReply").await;
    let took = expect("/slow", 504, "FunctionTimeout").await;
    assert!(took < std::time::Duration::from_millis(2500), "{took:?}");
    expect("/fails", 502, "FunctionError").await;
    expect("/down", 502, "FunctionError").await;
    expect("/no-auth", 502, "FunctionError").await;

    // A request body over 6 MiB (declared, or chunked): 413, the
    // function is not called.
    let head = |framing: &str| {
        format!(
            "POST /dev/inspect/a/b HTTP/1.1\r\nHost: {}\r\n{framing}\r\nConnection: close\r\n\r\n",
            gw.host(&api)
        )
    };
    let declared = head(&format!("Content-Length: {}", 6 * 1024 * 1024 + 1));
    let mut chunked = head("Transfer-Encoding: chunked").into_bytes();
    for _ in 0..7 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b'z', 1024 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for req in [declared.into_bytes(), chunked] {
        let (r, raw) = raw_exchange(gw.data_addr, &req, std::time::Duration::from_secs(10)).await;
        let r = r.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
        assert_eq!(r.status, 413, "{}", r.text());
        assert_eq!(
            r.header("x-apigw-error").as_deref(),
            Some("PayloadTooLarge")
        );
    }

    // Setting a function republishes the routes that use it.
    admin
        .put(
            &format!("/v1/functions/{}", ids["down"]),
            &json!({"name": "down", "url": host.url("hello"), "auth_header": auth}),
        )
        .await
        .expect(200);
    let r = client.get(url("/down")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "hello, world");

    // The auth value never shows in the gateway's logs.
    assert!(!gw.logs().contains("k3y-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_functions_are_registered_at_start() {
    let host = FunctionHost::start("x-fn-key=cfg-secret");
    let entry = |url: &str| {
        format!(
            "[{{ id = \"cfg-hello\", account_id = \"{DEV_ACCOUNT_ID}\", name = \"cfg-hello\", url = \"{url}\", timeout_ms = 2000, auth_header = {{ name = \"x-fn-key\", value = \"cfg-secret\" }} }}]"
        )
    };
    let mut gw = Gateway::start_with(&[("functions", &entry(&host.url("hello")))]);
    let admin = gw.admin();
    let listed = admin.get("/v1/functions").await;
    assert!(!listed.text().contains("cfg-secret"));
    let f = listed.expect(200)["functions"][0].clone();
    assert_eq!(f["id"], "cfg-hello");
    assert_eq!(f["name"], "cfg-hello");
    assert_eq!(f["timeout_ms"], 2000);
    // Another account does not see it.
    assert_eq!(
        second_account(&admin)
            .get("/v1/functions")
            .await
            .expect(200)["count"],
        0
    );

    let api = admin.create_api("cfg-fn").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "hello").await;
    scf_method(&admin, &api, &rid, "GET", "cfg-hello")
        .await
        .expect(200);
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let client = data_client();
    let url = gw.invoke_url(&api, "/dev/hello");
    wait_for_status(
        &gw,
        &client,
        &url,
        200,
        std::time::Duration::from_secs(5),
        "cfg",
    )
    .await;

    // Restarted on the same store and config: the same function, served.
    gw.restart();
    let url = gw.invoke_url(&api, "/dev/hello");
    let r = data_client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "hello, world");
    let again = gw.admin().get("/v1/functions/cfg-hello").await;
    assert_eq!(again.expect(200)["function"]["created_at"], f["created_at"]);
    assert!(!gw.logs().contains("cfg-secret"));
}
