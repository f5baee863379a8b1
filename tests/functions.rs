//! Cloud Function integration (issue [7], item 1) against the real
//! binary: registering functions (the management extension beside the SCP
//! operations), SCF methods that name them, and the Lambda proxy event
//! (payload format 1.0) through the example function host.

mod common;

use common::*;
use serde_json::{json, Value};

fn second_account(admin: &Admin) -> Admin {
    admin.with_opts(SignOpts {
        access_key: "second-access-key".into(),
        secret_key: "second-secret-key".into(),
        account_id: Some("secondaccount000000000000000002".into()),
        ..Default::default()
    })
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
