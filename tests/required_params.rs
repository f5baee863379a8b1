//! Required request parameters (issue [8] item 5) against the real
//! binary: a method's `query_strings` / `request_headers` entries marked
//! required are checked before forwarding (400 `MissingRequiredParameter`
//! naming the parameter), in the JSON form and the reference's string form.

mod common;

use common::*;
use serde_json::{json, Value};

async fn method_with_params(
    admin: &Admin,
    api: &str,
    rid: &str,
    method: &str,
    url: &str,
    qs: Value,
    hs: Value,
) -> Resp {
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({
                "method_type": method,
                "integration_type": "HTTP",
                "endpoint_url": url,
                "api_key_required": false,
                "query_strings": qs,
                "request_headers": hs,
            }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_required_query_or_header_is_a_400_naming_it() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("req");
    let api = admin.create_api("required-params").await;
    let root = admin.root_id(&api).await;
    let json_form = admin.create_resource(&api, &root, "json-form").await;
    let text_form = admin.create_resource(&api, &root, "text-form").await;
    let optional = admin.create_resource(&api, &root, "optional").await;
    // JSON objects.
    let m = method_with_params(
        &admin,
        &api,
        &json_form,
        "GET",
        &backend.url("/json"),
        json!({"page_no": true, "verbose": false}),
        json!({"X-Trace-Id": true, "x-opt": false}),
    )
    .await;
    let m = m.expect(200)["methods"][0].clone();
    assert_eq!(
        m["query_strings"],
        json!({"page_no": true, "verbose": false})
    );
    assert_eq!(
        m["request_headers"],
        json!({"X-Trace-Id": true, "x-opt": false})
    );
    // The reference's own example strings (Python-style dicts).
    let m = method_with_params(
        &admin,
        &api,
        &text_form,
        "GET",
        &backend.url("/text"),
        json!("{'param1': 'value1', 'param2': 'value2', 'must' : True}"),
        json!("{'test1' : True}"),
    )
    .await;
    let m = m.expect(200)["methods"][0].clone();
    assert_eq!(
        m["query_strings"],
        json!({"param1": false, "param2": false, "must": true})
    );
    assert_eq!(m["request_headers"], json!({"test1": true}));
    // false: declared, optional.
    method_with_params(
        &admin,
        &api,
        &optional,
        "GET",
        &backend.url("/optional"),
        json!("{'q': False}"),
        json!({"x-maybe": false}),
    )
    .await
    .expect(200);
    // Set Method takes the string form too.
    admin
        .put(
            &format!("/v1/apis/{api}/resources/{optional}/methods/GET"),
            &json!({"api_key_required": false, "integration_type": "HTTP",
                    "endpoint_url": backend.url("/optional"),
                    "query_strings": "{\"q\": false}", "request_headers": "{}"}),
        )
        .await
        .expect(200);
    // Malformed strings and non-boolean JSON values name the field.
    for (qs, hs, field) in [
        (json!("q=1"), json!({}), "query_strings"),
        (json!("{'q': yes}"), json!({}), "query_strings"),
        (json!({}), json!("{test1: True}"), "request_headers"),
        (json!({}), json!({"x-a": "yes"}), "request_headers"),
        (json!({}), json!(["x-a"]), "request_headers"),
    ] {
        let r = method_with_params(&admin, &api, &root, "POST", &backend.url("/x"), qs, hs).await;
        assert_eq!(r.status, 400, "{}", r.text());
        r.expect_bad_field(field);
    }
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let c = data_client();
    let url = |p: &str| gw.invoke_url(&api, &format!("/dev{p}"));
    wait_for_status(
        &gw,
        &c,
        &url("/optional"),
        200,
        std::time::Duration::from_secs(3),
        "optional",
    )
    .await;
    backend.clear();

    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut rq = c.get(url(path));
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        rq.send()
    };
    let expect_missing = |r: reqwest::Response, what: &'static str| async move {
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(r.headers()["x-apigw-error"], "MissingRequiredParameter");
        assert!(r.headers().get("x-apigw-deployment").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["message"], what);
    };
    // Missing query string, then blank, then a header missing.
    let r = get("/json-form", &[("x-trace-id", "t1")]).await.unwrap();
    expect_missing(
        r,
        "Missing required request parameter: query string 'page_no'",
    )
    .await;
    let r = get("/json-form?page_no=&verbose=1", &[("x-trace-id", "t1")])
        .await
        .unwrap();
    expect_missing(
        r,
        "Missing required request parameter: query string 'page_no'",
    )
    .await;
    let r = get("/json-form?page_no=2", &[]).await.unwrap();
    expect_missing(r, "Missing required request parameter: header 'X-Trace-Id'").await;
    let r = get("/json-form?page_no=2", &[("x-trace-id", "")])
        .await
        .unwrap();
    expect_missing(r, "Missing required request parameter: header 'X-Trace-Id'").await;
    assert_eq!(
        backend.count(),
        0,
        "nothing missing a parameter is forwarded"
    );
    // Present (header names are case-insensitive): forwarded.
    let r = get("/json-form?page_no=2", &[("X-TRACE-ID", "t1")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.last().uri, "/json?page_no=2");
    // The string form's requirement.
    let r = get("/text-form?must=1", &[]).await.unwrap();
    expect_missing(r, "Missing required request parameter: header 'test1'").await;
    let r = get("/text-form", &[("test1", "x")]).await.unwrap();
    expect_missing(r, "Missing required request parameter: query string 'must'").await;
    let r = get("/text-form?must=1", &[("test1", "x")]).await.unwrap();
    assert_eq!(r.status(), 200);
    // Optional parameters are not required.
    let r = get("/optional", &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.count(), 3);
}
