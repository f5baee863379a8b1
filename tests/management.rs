//! Management API (SCP OpenAPI v1.2) against the real binary: CRUD, status
//! codes, field names, validation (400 naming the field), 404, 409 and the
//! SCP signature (401, with nothing changed afterwards).

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn signer_matches_spec_test_vectors() {
    check_signature_vectors();
}

#[test]
fn listening_line_is_parsed() {
    let (d, a) =
        parse_listening_line("apigw listening data=127.0.0.1:8080 admin=127.0.0.1:9080").unwrap();
    assert_eq!(d.port(), 8080);
    assert_eq!(a.port(), 9080);
    assert!(parse_listening_line("something else").is_none());
}

async fn api_count(admin: &Admin) -> usize {
    let r = admin.get("/v1/apis?size=100").await;
    r.expect(200)["apis"].as_array().expect("apis array").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn version_list_at_root() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let r = admin.get("/").await;
    let v = r.expect(200);
    let text = v.to_string();
    for needle in ["1.0", "1.1", "1.2", "DEPRECATED", "CURRENT"] {
        assert!(
            text.contains(needle),
            "{needle} missing from version list {text}"
        );
    }
    // 1.2 is the CURRENT one: find an object mentioning 1.2 and CURRENT together
    fn find(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                let s = Value::Object(m.clone()).to_string();
                (s.contains("\"1.2\"") && s.contains("CURRENT") && !s.contains("\"1.1\""))
                    || m.values().any(find)
            }
            Value::Array(a) => a.iter().any(find),
            _ => false,
        }
    }
    assert!(find(v), "no object pairs version 1.2 with CURRENT: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_failures_are_401_and_change_nothing() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("keep-me").await;
    let body = serde_json::to_vec(&json!({"name": "should-not-exist"})).unwrap();
    let before = api_count(&admin).await;

    let cases: Vec<(&str, SignOpts)> = vec![
        (
            "no scp headers",
            SignOpts {
                unsigned: true,
                ..Default::default()
            },
        ),
        (
            "bad signature",
            SignOpts {
                signature: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
                ..Default::default()
            },
        ),
        (
            "wrong secret",
            SignOpts {
                secret_key: "not-the-secret".into(),
                ..Default::default()
            },
        ),
        (
            "stale timestamp (6 min old)",
            SignOpts {
                timestamp_ms: Some(now_ms() - 6 * 60 * 1000),
                ..Default::default()
            },
        ),
        (
            "future timestamp (+6 min)",
            SignOpts {
                timestamp_ms: Some(now_ms() + 6 * 60 * 1000),
                ..Default::default()
            },
        ),
        (
            "unknown access key",
            SignOpts {
                access_key: "unknown-access-key".into(),
                ..Default::default()
            },
        ),
        (
            "other URL signed",
            SignOpts {
                signed_url: Some(format!("http://{}/v1/apis?x=1", gw.admin_addr)),
                ..Default::default()
            },
        ),
        (
            "signature header missing",
            SignOpts {
                omit: vec!["Scp-Signature"],
                ..Default::default()
            },
        ),
        (
            "timestamp header missing",
            SignOpts {
                omit: vec!["Scp-Timestamp"],
                ..Default::default()
            },
        ),
        (
            "access key header missing",
            SignOpts {
                omit: vec!["Scp-AccessKey"],
                ..Default::default()
            },
        ),
        (
            "account id differs from signed",
            SignOpts {
                signature: Some(scp_signature(
                    DEV_SECRET_KEY,
                    "POST",
                    &format!("http://{}/v1/apis", gw.admin_addr),
                    &now_ms().to_string(),
                    DEV_ACCESS_KEY,
                    "otheraccount",
                    CLIENT_TYPE,
                )),
                ..Default::default()
            },
        ),
    ];
    for (what, opts) in &cases {
        let r = admin
            .send_raw("POST", "/v1/apis", Some(body.clone()), None, opts)
            .await;
        assert_eq!(
            r.status,
            401,
            "{what}: expected 401, got {} {}",
            r.status,
            r.text()
        );
        r.expect_error(401, "Unauthorized");
    }
    // a GET and a DELETE with a bad signature too
    let bad = SignOpts {
        secret_key: "nope".into(),
        ..Default::default()
    };
    let r = admin.send_raw("GET", "/v1/apis", None, None, &bad).await;
    r.expect_error(401, "Unauthorized");
    let r = admin
        .send_raw("DELETE", &format!("/v1/apis/{api}"), None, None, &bad)
        .await;
    r.expect_error(401, "Unauthorized");
    let r = admin.send_raw("GET", "/", None, None, &bad).await;
    assert_eq!(r.status, 401, "GET / is authenticated too: {}", r.text());

    // nothing changed
    assert_eq!(api_count(&admin).await, before);
    admin.get(&format!("/v1/apis/{api}")).await.expect(200);
    let r = admin.get("/v1/apis?name=should-not-exist").await;
    let v = r.expect(200);
    assert!(
        v["apis"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["name"] != "should-not-exist"),
        "an unauthenticated create left an API: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_variants_that_must_be_accepted() {
    let gw = Gateway::start();
    let admin = gw.admin();
    // empty Scp-AccountId (what SCP's client sends): "" is signed
    let a = admin.with_opts(SignOpts {
        account_id: Some(String::new()),
        ..Default::default()
    });
    a.get("/v1/apis").await.expect(200);
    // no Scp-AccountId header at all
    let a = admin.with_opts(SignOpts {
        account_id: None,
        ..Default::default()
    });
    a.get("/v1/apis").await.expect(200);
    // no Scp-Api-Version header
    let a = admin.with_opts(SignOpts {
        api_version: None,
        ..Default::default()
    });
    a.get("/v1/apis").await.expect(200);
    // a timestamp 2 minutes old is inside the window
    let a = admin.with_opts(SignOpts {
        timestamp_ms: Some(now_ms() - 120_000),
        ..Default::default()
    });
    a.get("/v1/apis").await.expect(200);
    // the raw query is signed exactly as sent (percent-encoding kept)
    admin
        .get("/v1/apis?name=a%2Db&page=0&size=20")
        .await
        .expect(200);
    // a second configured credential works
    let a = admin.with_opts(SignOpts {
        access_key: "second-access-key".into(),
        secret_key: "second-secret-key".into(),
        account_id: Some("secondaccount000000000000000002".into()),
        ..Default::default()
    });
    a.get("/v1/apis").await.expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_header_names_are_case_insensitive() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let mut req = format!(
        "GET /v1/apis HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        gw.admin_addr
    );
    for (k, v) in admin.signed_headers("GET", "/v1/apis") {
        req.push_str(&format!("{}: {v}\r\n", k.to_ascii_uppercase()));
    }
    req.push_str("\r\n");
    let (resp, raw) = raw_exchange(
        gw.admin_addr,
        req.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .await;
    let resp = resp.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn public_base_url_is_what_is_signed() {
    let gw = Gateway::start_with(&[("public_base_url", "\"https://apigw.example.com\"")]);
    let admin = gw.admin();
    // the client reached https://apigw.example.com through a proxy: that URL is signed
    let ok = admin.with_opts(SignOpts {
        signed_url: Some("https://apigw.example.com/v1/apis?size=5".into()),
        ..Default::default()
    });
    ok.get("/v1/apis?size=5").await.expect(200);
    // the Host-derived URL is not what this deployment signs
    admin
        .get("/v1/apis?size=5")
        .await
        .expect_error(401, "Unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_crud() {
    let gw = Gateway::start();
    let admin = gw.admin();

    let r = admin
        .post(
            "/v1/apis",
            &json!({"name": "orders-api", "description": "orders", "endpoint_type": "REGION",
                    "tags": [{"key": "team", "value": "a"}]}),
        )
        .await;
    let v = r.expect(202).clone();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(is_id(&id), "id {id}");
    assert_eq!(v["name"], "orders-api");
    assert_eq!(v["description"], "orders");

    // show
    let r = admin.get(&format!("/v1/apis/{id}")).await;
    let a = r.expect(200)["api"].clone();
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["name"], "orders-api");
    assert_eq!(a["description"], "orders");
    assert_eq!(a["account_id"], DEV_ACCOUNT_ID);
    assert!(
        is_rfc3339(&a["created_at"]),
        "created_at {}",
        a["created_at"]
    );
    assert!(a["status"].is_string(), "status {a}");
    assert!(
        a.get("dns_record_status").is_some(),
        "dns_record_status missing: {a}"
    );

    // a second and third API; list, filter, page
    let id2 = admin.create_api("users-api").await;
    let _id3 = admin.create_api("users-api-v2").await;
    let r = admin.get("/v1/apis").await;
    let v = r.expect(200).clone();
    assert_eq!(v["apis"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["count"], 3);
    for a in v["apis"].as_array().unwrap() {
        for f in [
            "account_id",
            "created_at",
            "description",
            "id",
            "name",
            "status",
        ] {
            assert!(a.get(f).is_some(), "list item lacks {f}: {a}");
        }
    }
    let r = admin.get("/v1/apis?name=orders-api").await;
    let v = r.expect(200).clone();
    let names: Vec<&str> = v["apis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["orders-api"], "{v}");
    let p0 = admin
        .get("/v1/apis?page=0&size=2")
        .await
        .expect(200)
        .clone();
    let p1 = admin
        .get("/v1/apis?page=1&size=2")
        .await
        .expect(200)
        .clone();
    let mut ids: Vec<String> = p0["apis"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p1["apis"].as_array().unwrap())
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        p0["apis"].as_array().unwrap().len(),
        2,
        "page 0 size 2: {p0}"
    );
    assert_eq!(
        p1["apis"].as_array().unwrap().len(),
        1,
        "page 1 size 2: {p1}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "pages overlap: {p0} {p1}");

    // set description
    let r = admin
        .put(
            &format!("/v1/apis/{id}/description"),
            &json!({"description": "new words"}),
        )
        .await;
    let v = r.expect(200);
    assert_eq!(v["api"]["description"], "new words");
    assert_eq!(v["api"]["id"], id.as_str());
    let r = admin.get(&format!("/v1/apis/{id}")).await;
    assert_eq!(r.expect(200)["api"]["description"], "new words");

    // duplicate name
    let r = admin.post("/v1/apis", &json!({"name": "orders-api"})).await;
    r.expect_error(409, "Conflict");

    // delete
    let r = admin.delete(&format!("/v1/apis/{id2}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    admin
        .get(&format!("/v1/apis/{id2}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("/v1/apis/{id2}"))
        .await
        .expect_error(404, "NotFound");
    assert_eq!(api_count(&admin).await, 2);
    // the name is free again
    admin.create_api("users-api").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_validation_names_the_field() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let long = format!("a{}", "b".repeat(50)); // 51 chars
    for bad in [
        "Upper-case",
        "ab",
        "-abc",
        "abc-",
        "1abc",
        "has space",
        "has_underscore",
        "",
        long.as_str(),
    ] {
        let r = admin.post("/v1/apis", &json!({"name": bad})).await;
        r.expect_bad_field("name");
    }
    // 50 chars is fine
    let ok50 = format!("a{}", "b".repeat(49));
    admin
        .post("/v1/apis", &json!({"name": ok50}))
        .await
        .expect(202);
    // missing / wrong type
    admin
        .post("/v1/apis", &json!({"description": "x"}))
        .await
        .expect_bad_field("name");
    admin
        .post("/v1/apis", &json!({"name": 123}))
        .await
        .expect_bad_field("name");
    admin
        .post(
            "/v1/apis",
            &json!({"name": "good-name", "endpoint_type": "PUBLIC"}),
        )
        .await
        .expect_bad_field("endpoint_type");
    admin
        .post("/v1/apis", &json!({"name": "good-name", "description": 5}))
        .await
        .expect_bad_field("description");
    // malformed JSON
    let r = admin
        .send_raw(
            "POST",
            "/v1/apis",
            Some(b"{\"name\": ".to_vec()),
            None,
            &admin.opts,
        )
        .await;
    r.expect_error(400, "BadRequest");
    let r = admin
        .send_raw(
            "POST",
            "/v1/apis",
            Some(b"not json".to_vec()),
            None,
            &admin.opts,
        )
        .await;
    r.expect_error(400, "BadRequest");
    let r = admin
        .send_raw(
            "PUT",
            "/v1/apis/0123456789abcdef0123456789abcdef/description",
            Some(b"[1,2".to_vec()),
            None,
            &admin.opts,
        )
        .await;
    assert!(
        r.status == 400 || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
    // nothing but the one good API exists
    assert_eq!(api_count(&admin).await, 1);

    // unknown ids
    let unknown = "0123456789abcdef0123456789abcdef";
    admin
        .get(&format!("/v1/apis/{unknown}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .put(
            &format!("/v1/apis/{unknown}/description"),
            &json!({"description": "x"}),
        )
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("/v1/apis/{unknown}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{unknown}/resources"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{unknown}/stages"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{unknown}/deployments"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{unknown}/access-controls"))
        .await
        .expect_error(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_crud_and_limits() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("res-api").await;

    // root created with the API
    let res = admin.resources(&api).await;
    assert_eq!(res.len(), 1, "{res:?}");
    let root = &res[0];
    assert_eq!(root["path"], "/");
    assert_eq!(root["parent_id"], "");
    assert!(root["methods"].as_array().unwrap().is_empty());
    let root_id = root["id"].as_str().unwrap().to_string();
    assert!(is_id(&root_id));

    // create child and grandchild
    let r = admin
        .post(
            &format!("/v1/apis/{api}/resources/{root_id}"),
            &json!({"path_part": "users"}),
        )
        .await;
    let v = r.expect(200).clone();
    assert_eq!(v["api_id"], api.as_str());
    assert_eq!(v["parent_id"], root_id.as_str());
    assert_eq!(v["path"], "/users");
    let users = v["id"].as_str().unwrap().to_string();
    assert!(is_id(&users));
    let r = admin
        .post(
            &format!("/v1/apis/{api}/resources/{users}"),
            &json!({"path_part": "{user-id}"}),
        )
        .await;
    let v = r.expect(200).clone();
    assert_eq!(v["path"], "/users/{user-id}");
    let user = v["id"].as_str().unwrap().to_string();
    let orders = admin.create_resource(&api, &user, "orders").await;

    // list and show
    let res = admin.resources(&api).await;
    assert_eq!(res.len(), 4);
    let by_path = |p: &str| {
        res.iter()
            .find(|r| r["path"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} missing from {res:?}"))
    };
    let u = by_path("/users/{user-id}");
    assert_eq!(u["path_part"], "{user-id}");
    assert_eq!(u["parent_id"], users.as_str());
    assert!(u["methods"].is_array());
    by_path("/users/{user-id}/orders");
    let r = admin.get(&format!("/v1/apis/{api}/resources/{user}")).await;
    let v = r.expect(200);
    assert_eq!(v["resource"]["id"], user.as_str());
    assert_eq!(v["resource"]["path"], "/users/{user-id}");
    assert_eq!(v["resource"]["path_part"], "{user-id}");

    // 409: same sibling, second parameter sibling
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{root_id}"),
            &json!({"path_part": "users"}),
        )
        .await
        .expect_error(409, "Conflict");
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{users}"),
            &json!({"path_part": "{other-id}"}),
        )
        .await
        .expect_error(409, "Conflict");
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{users}"),
            &json!({"path_part": "{user-id}"}),
        )
        .await
        .expect_error(409, "Conflict");
    // a literal sibling of a parameter is fine
    admin.create_resource(&api, &users, "mine").await;

    // 400 naming path_part
    for bad in [
        "Users", "u", "{x}", "{Bad}", "a/b", "users-", "{user-id", "", "{ab}x",
    ] {
        let r = admin
            .post(
                &format!("/v1/apis/{api}/resources/{root_id}"),
                &json!({"path_part": bad}),
            )
            .await;
        r.expect_bad_field("path_part");
    }
    admin
        .post(&format!("/v1/apis/{api}/resources/{root_id}"), &json!({}))
        .await
        .expect_bad_field("path_part");
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{root_id}"),
            &json!({"path_part": 7}),
        )
        .await
        .expect_bad_field("path_part");
    // unknown parent / resource
    let unknown = "0123456789abcdef0123456789abcdef";
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{unknown}"),
            &json!({"path_part": "x-y"}),
        )
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{api}/resources/{unknown}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("/v1/apis/{api}/resources/{unknown}"))
        .await
        .expect_error(404, "NotFound");
    assert_eq!(admin.resources(&api).await.len(), 5);

    // root cannot be deleted
    admin
        .delete(&format!("/v1/apis/{api}/resources/{root_id}"))
        .await
        .expect_error(400, "BadRequest");

    // deleting /users removes its descendants
    let r = admin
        .delete(&format!("/v1/apis/{api}/resources/{users}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let res = admin.resources(&api).await;
    assert_eq!(res.len(), 1, "descendants left: {res:?}");
    admin
        .get(&format!("/v1/apis/{api}/resources/{orders}"))
        .await
        .expect_error(404, "NotFound");

    // depth: 30 levels including the root
    let mut parent = root_id.clone();
    for i in 1..30 {
        parent = admin
            .create_resource(&api, &parent, &format!("l{i:02}"))
            .await;
    }
    let r = admin
        .post(
            &format!("/v1/apis/{api}/resources/{parent}"),
            &json!({"path_part": "too-deep"}),
        )
        .await;
    r.expect_error(400, "BadRequest");
    assert_eq!(admin.resources(&api).await.len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_300_resources() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("many-res").await;
    let root = admin.root_id(&api).await;
    let mut first_fail = None;
    for i in 0..305 {
        let r = admin
            .post(
                &format!("/v1/apis/{api}/resources/{root}"),
                &json!({"path_part": format!("r{i:03}")}),
            )
            .await;
        if r.status != 200 {
            first_fail = Some((i, r));
            break;
        }
    }
    let (i, r) = first_fail.expect("more than 300 resources were accepted");
    r.expect_error(400, "BadRequest");
    let total = admin.resources(&api).await.len();
    // "up to 300 resources": with or without the root
    assert!(
        total == 300 || total == 301,
        "refused at #{i}, total {total}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_crud_and_validation() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("meth-api").await;
    let root = admin.root_id(&api).await;
    let users = admin.create_resource(&api, &root, "users").await;
    let user = admin.create_resource(&api, &users, "{user-id}").await;
    let base = format!("/v1/apis/{api}/resources/{user}/methods");

    let r = admin
        .post(
            &base,
            &json!({
                "method_type": "GET", "integration_type": "HTTP",
                "endpoint_url": "http://127.0.0.1:9/users/{user-id}",
                "api_key_required": false,
                "query_strings": {"q": false}, "request_headers": {"x-trace": true},
            }),
        )
        .await;
    let v = r.expect(200).clone();
    let ms = v["methods"].as_array().expect("methods array");
    assert_eq!(ms.len(), 1, "{v}");
    assert_eq!(ms[0]["method_type"], "GET");
    assert_eq!(ms[0]["integration_type"], "HTTP");
    assert_eq!(ms[0]["endpoint_url"], "http://127.0.0.1:9/users/{user-id}");
    assert_eq!(ms[0]["api_key_required"], false);

    // duplicate
    admin.post(&base, &json!({"method_type": "GET", "integration_type": "HTTP", "endpoint_url": "http://127.0.0.1:9/"}))
        .await.expect_error(409, "Conflict");

    // show, list
    let r = admin.get(&format!("{base}/GET")).await;
    let m = r.expect(200)["method"].clone();
    assert_eq!(m["method_type"], "GET");
    assert_eq!(m["endpoint_url"], "http://127.0.0.1:9/users/{user-id}");
    assert_eq!(m["query_strings"]["q"], false);
    assert_eq!(m["request_headers"]["x-trace"], true);
    let r = admin.get(&base).await;
    assert_eq!(r.expect(200)["methods"].as_array().unwrap().len(), 1);
    // the resource list shows it
    let res = admin.resources(&api).await;
    let u = res.iter().find(|r| r["id"] == user.as_str()).unwrap();
    assert_eq!(u["methods"].as_array().unwrap().len(), 1, "{u}");

    // set
    let r = admin
        .put(
            &format!("{base}/GET"),
            &json!({
                "api_key_required": true, "integration_type": "HTTP",
                "endpoint_url": "https://example.invalid/v2/{user-id}",
                "query_strings": {}, "request_headers": {},
            }),
        )
        .await;
    let m = r.expect(200)["method"].clone();
    assert_eq!(m["endpoint_url"], "https://example.invalid/v2/{user-id}");
    assert_eq!(m["api_key_required"], true);
    let r = admin.get(&format!("{base}/GET")).await;
    assert_eq!(
        r.expect(200)["method"]["endpoint_url"],
        "https://example.invalid/v2/{user-id}"
    );
    // PUT body requires api_key_required
    admin.put(&format!("{base}/GET"), &json!({"integration_type": "HTTP", "endpoint_url": "http://a.b/", "query_strings": {}, "request_headers": {}}))
        .await.expect_bad_field("api_key_required");
    admin.put(&format!("{base}/POST"), &json!({"api_key_required": false, "integration_type": "HTTP", "endpoint_url": "http://a.b/", "query_strings": {}, "request_headers": {}}))
        .await.expect_error(404, "NotFound");

    // validation
    let mk = |extra: Value| {
        let mut b = json!({"method_type": "POST", "integration_type": "HTTP", "endpoint_url": "http://127.0.0.1:9/"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            mk(json!({"endpoint_url": "ftp://127.0.0.1/"})),
            "endpoint_url",
        ),
        (mk(json!({"endpoint_url": "not a url"})), "endpoint_url"),
        (mk(json!({"endpoint_url": null})), "endpoint_url"),
        (
            mk(json!({"endpoint_url": format!("http://127.0.0.1/{}", "a".repeat(500))})),
            "endpoint_url",
        ),
        (
            mk(json!({"endpoint_url": "http://127.0.0.1:9/{nope}"})),
            "endpoint_url",
        ),
        (mk(json!({"endpoint_url": 42})), "endpoint_url"),
        (mk(json!({"method_type": "TRACE"})), "method_type"),
        (mk(json!({"method_type": null})), "method_type"),
        (mk(json!({"integration_type": "FTP"})), "integration_type"),
        (mk(json!({"integration_type": null})), "integration_type"),
        (mk(json!({"query_strings": "q=1"})), "query_strings"),
        (
            mk(json!({"request_headers": {"x": "yes"}})),
            "request_headers",
        ),
        (mk(json!({"api_key_required": "no"})), "api_key_required"),
        (
            mk(json!({"integration_type": "SCF", "endpoint_url": null})),
            "function_id",
        ),
        (
            mk(json!({"integration_type": "PRIVATELINK", "endpoint_url": null})),
            "privatelink_endpoint_id",
        ),
    ];
    for (body, field) in cases {
        let r = admin.post(&base, &body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text());
        r.expect_bad_field(field);
    }
    // nothing was created by those
    assert_eq!(
        admin.get(&base).await.expect(200)["methods"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // 500 chars exactly is accepted
    let url500 = format!(
        "http://127.0.0.1/{}",
        "a".repeat(500 - "http://127.0.0.1/".len())
    );
    assert_eq!(url500.len(), 500);
    admin
        .post(
            &base,
            &mk(json!({"method_type": "PATCH", "endpoint_url": url500})),
        )
        .await
        .expect(200);

    // SCF and PRIVATELINK are accepted and stored
    let function_id = admin
        .register_function("methods-fn", "http://127.0.0.1:9/")
        .await;
    let r = admin.post(&base, &json!({"method_type": "DELETE", "integration_type": "SCF", "function_id": function_id})).await;
    assert_eq!(r.expect(200)["methods"][0]["integration_type"], "SCF");
    // PRIVATELINK needs an endpoint of the caller's account (tests/privatelink_integration.rs).
    let r = admin.post(&base, &json!({"method_type": "PUT", "integration_type": "PRIVATELINK", "privatelink_endpoint_id": "0123456789abcdef0123456789abcdef", "endpoint_url": "http://a.internal/x"})).await;
    r.expect_error(400, "BadRequest");
    assert!(r.text().contains("privatelink_endpoint_id"), "{}", r.text());

    // ANY creates all seven on a fresh resource
    let any_res = admin.create_resource(&api, &root, "any-thing").await;
    let r = admin.post(&format!("/v1/apis/{api}/resources/{any_res}/methods"), &json!({"method_type": "ANY", "integration_type": "HTTP", "endpoint_url": "http://127.0.0.1:9/"})).await;
    let v = r.expect(200).clone();
    let mut types: Vec<String> = v["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method_type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec!["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]
    );

    // delete
    let r = admin.delete(&format!("{base}/GET")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    admin
        .get(&format!("{base}/GET"))
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("{base}/GET"))
        .await
        .expect_error(404, "NotFound");
    // unknown resource
    admin
        .get(&format!(
            "/v1/apis/{api}/resources/0123456789abcdef0123456789abcdef/methods"
        ))
        .await
        .expect_error(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_and_stages() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("stage-api").await;
    let root = admin.root_id(&api).await;
    let r1 = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &r1, "GET", "http://127.0.0.1:9/ping")
        .await;

    // new stage through a deployment
    let r = admin
        .post(
            &format!("/v1/apis/{api}/deployments"),
            &json!({"stage_type": "new", "stage_name": "dev", "description": "first"}),
        )
        .await;
    let v = r.expect(200).clone();
    let d1 = v["deployment_id"].as_str().unwrap().to_string();
    assert!(is_id(&d1));
    assert_eq!(v["description"], "first");

    let r = admin.get(&format!("/v1/apis/{api}/stages/dev")).await;
    let s = r.expect(200)["stage"].clone();
    assert_eq!(s["name"], "dev");
    assert_eq!(s["deployment_id"], d1.as_str());
    assert_eq!(s["cors_enabled"], false);
    assert_eq!(s["jwt_enabled"], false);
    let invoke = s["invoke_url"].as_str().expect("invoke_url").to_string();
    assert!(
        invoke.contains(&format!("{api}.{INVOKE_DOMAIN}")),
        "invoke_url {invoke}"
    );
    assert!(invoke.ends_with("/dev"), "invoke_url {invoke}");

    // deployment only, then existing stage switch
    let d2 = admin.deploy(&api, "none", None).await;
    let r = admin.get(&format!("/v1/apis/{api}/stages/dev")).await;
    assert_eq!(r.expect(200)["stage"]["deployment_id"], d1.as_str());
    let d3 = admin.deploy(&api, "existing", Some("dev")).await;
    let r = admin.get(&format!("/v1/apis/{api}/stages/dev")).await;
    assert_eq!(r.expect(200)["stage"]["deployment_id"], d3.as_str());

    // list deployments
    let r = admin.get(&format!("/v1/apis/{api}/deployments")).await;
    let v = r.expect(200).clone();
    assert_eq!(v["count"], 3, "{v}");
    let ds = v["deployments"].as_array().unwrap();
    let mut ids: Vec<&str> = ds
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![d1.as_str(), d2.as_str(), d3.as_str()];
    want.sort();
    assert_eq!(ids, want);
    for d in ds {
        assert!(is_rfc3339(&d["deployment_date"]), "{d}");
        assert!(d.get("description").is_some(), "{d}");
    }

    // deployment errors
    let dep = format!("/v1/apis/{api}/deployments");
    admin
        .post(&dep, &json!({"stage_type": "sometimes"}))
        .await
        .expect_bad_field("stage_type");
    admin
        .post(&dep, &json!({}))
        .await
        .expect_bad_field("stage_type");
    admin
        .post(&dep, &json!({"stage_type": "new"}))
        .await
        .expect_bad_field("stage_name");
    admin
        .post(
            &dep,
            &json!({"stage_type": "new", "stage_name": "Bad_Name"}),
        )
        .await
        .expect_bad_field("stage_name");
    admin
        .post(&dep, &json!({"stage_type": "new", "stage_name": "dev"}))
        .await
        .expect_error(409, "Conflict");
    admin
        .post(
            &dep,
            &json!({"stage_type": "existing", "stage_name": "nostage"}),
        )
        .await
        .expect_error(404, "NotFound");
    assert_eq!(
        admin.get(&dep).await.expect(200)["count"],
        3,
        "failed deployments were stored"
    );

    // create stage directly
    let stages = format!("/v1/apis/{api}/stages");
    let r = admin
        .post(
            &stages,
            &json!({"stage_name": "prod", "deployment_id": d1, "description": "production"}),
        )
        .await;
    let s = r.expect(200)["stage"].clone();
    assert_eq!(s["name"], "prod");
    assert_eq!(s["deployment_id"], d1.as_str());
    assert!(s["invoke_url"].as_str().unwrap().ends_with("/prod"), "{s}");
    admin
        .post(&stages, &json!({"stage_name": "prod", "deployment_id": d1}))
        .await
        .expect_error(409, "Conflict");
    admin
        .post(&stages, &json!({"stage_name": "Prod", "deployment_id": d1}))
        .await
        .expect_bad_field("stage_name");
    admin
        .post(&stages, &json!({"deployment_id": d1}))
        .await
        .expect_bad_field("stage_name");
    admin
        .post(&stages, &json!({"stage_name": "qa-1"}))
        .await
        .expect_bad_field("deployment_id");
    let r = admin
        .post(
            &stages,
            &json!({"stage_name": "qa-1", "deployment_id": "0123456789abcdef0123456789abcdef"}),
        )
        .await;
    assert!(
        r.status == 404 || r.status == 400,
        "unknown deployment: {} {}",
        r.status,
        r.text()
    );

    // list / show
    let r = admin.get(&stages).await;
    let list = r.expect(200)["stages"].as_array().unwrap().clone();
    let mut names: Vec<&str> = list.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["dev", "prod"]);

    // set active deployment
    let r = admin.set_stage_deployment(&api, "prod", &d2).await;
    assert_eq!(r.expect(200)["stage"]["deployment_id"], d2.as_str());
    admin
        .set_stage_deployment(&api, "prod", "0123456789abcdef0123456789abcdef")
        .await;
    let r = admin.get(&format!("{stages}/prod")).await;
    assert_eq!(
        r.expect(200)["stage"]["deployment_id"],
        d2.as_str(),
        "unknown deployment changed the stage"
    );
    admin
        .set_stage_deployment(&api, "nostage", &d2)
        .await
        .expect_error(404, "NotFound");

    // config
    let r = admin.put(&format!("{stages}/prod/config"), &json!({"cors_enabled": true, "jwt_enabled": false, "allow_origins": ["*"], "max_age": 600, "description": "cfg"})).await;
    let s = r.expect(200)["stage"].clone();
    assert_eq!(s["cors_enabled"], true);
    assert_eq!(s["jwt_enabled"], false);
    let r = admin.get(&format!("{stages}/prod")).await;
    assert_eq!(r.expect(200)["stage"]["cors_enabled"], true);
    admin
        .put(
            &format!("{stages}/prod/config"),
            &json!({"cors_enabled": "yes", "jwt_enabled": false}),
        )
        .await
        .expect_bad_field("cors_enabled");
    admin
        .put(
            &format!("{stages}/prod/config"),
            &json!({"jwt_enabled": false}),
        )
        .await
        .expect_bad_field("cors_enabled");

    // delete
    let r = admin.delete(&format!("{stages}/prod")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    admin
        .get(&format!("{stages}/prod"))
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("{stages}/prod"))
        .await
        .expect_error(404, "NotFound");

    // at most 10 stages
    for i in 0..9 {
        admin
            .post(
                &stages,
                &json!({"stage_name": format!("st{i}"), "deployment_id": d1}),
            )
            .await
            .expect(200);
    }
    let r = admin
        .post(
            &stages,
            &json!({"stage_name": "st-eleven", "deployment_id": d1}),
        )
        .await;
    r.expect_error(400, "BadRequest");
    let r = admin
        .post(
            &dep,
            &json!({"stage_type": "new", "stage_name": "st-eleven"}),
        )
        .await;
    r.expect_error(400, "BadRequest");
    assert_eq!(
        admin.get(&stages).await.expect(200)["stages"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_controls_crud_and_stage_connection() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("acl-api").await;
    let root = admin.root_id(&api).await;
    let r1 = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &r1, "GET", "http://127.0.0.1:9/")
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    admin.deploy(&api, "new", Some("stg")).await;

    let base = format!("/v1/apis/{api}/access-controls");
    // Default exists, allows nothing, holds the new stages
    let r = admin.get(&base).await;
    let v = r.expect(200).clone();
    assert_eq!(v["count"], 1, "{v}");
    let def = v["access_controls"][0].clone();
    assert_eq!(def["name"], "Default");
    assert!(flat_list(&def["allowed_ip_addr"]).is_empty(), "{def}");
    assert_eq!(flat_list(&def["connected_stages"]), vec!["dev", "stg"]);
    let def_id = def["id"].as_str().unwrap().to_string();
    assert!(is_id(&def_id));

    // create (201, flat object), comma-separated entries
    let r = admin
        .post(
            &base,
            &json!({
                "name": "office", "description": "office nets",
                "allowed_ip_addr": ["127.0.0.1/32,10.0.0.0/8", "192.168.1.7"],
                "connected_stages": ["dev"],
            }),
        )
        .await;
    let ac = r.expect(201).clone();
    let ac_id = ac["id"].as_str().unwrap().to_string();
    assert!(is_id(&ac_id), "{ac}");
    assert_eq!(ac["name"], "office");
    assert_eq!(ac["description"], "office nets");
    assert!(is_rfc3339(&ac["created_at"]), "{ac}");
    assert_eq!(
        flat_list(&ac["allowed_ip_addr"]),
        vec!["10.0.0.0/8", "127.0.0.1/32", "192.168.1.7"]
    );
    assert_eq!(flat_list(&ac["connected_stages"]), vec!["dev"]);
    // dev moved away from Default
    let def = admin.access_control_named(&api, "Default").await;
    assert_eq!(flat_list(&def["connected_stages"]), vec!["stg"]);

    // show
    let r = admin.get(&format!("{base}/{ac_id}")).await;
    let a = r.expect(200)["access_control"].clone();
    assert_eq!(a["id"], ac_id.as_str());
    assert_eq!(flat_list(&a["connected_stages"]), vec!["dev"]);

    // a second ACL taking "dev,stg" moves dev from office too: one ACL per stage
    let r = admin.post(&base, &json!({"name": "second", "allowed_ip_addr": ["10.1.2.3"], "connected_stages": ["dev,stg"]})).await;
    let second = r.expect(201)["id"].as_str().unwrap().to_string();
    let office = admin.access_control_named(&api, "office").await;
    assert!(
        flat_list(&office["connected_stages"]).is_empty(),
        "{office}"
    );
    let def = admin.access_control_named(&api, "Default").await;
    assert!(flat_list(&def["connected_stages"]).is_empty(), "{def}");

    // set: take stg off "second" -> back on Default
    let r = admin.put(&format!("{base}/{second}"), &json!({"allowed_ip_addr": ["10.1.2.3", "10.1.2.4"], "connected_stages": ["dev"], "description": "changed"})).await;
    let a = r.expect(200)["access_control"].clone();
    assert_eq!(flat_list(&a["connected_stages"]), vec!["dev"]);
    assert_eq!(
        flat_list(&a["allowed_ip_addr"]),
        vec!["10.1.2.3", "10.1.2.4"]
    );
    assert_eq!(a["description"], "changed");
    let def = admin.access_control_named(&api, "Default").await;
    assert_eq!(flat_list(&def["connected_stages"]), vec!["stg"]);

    // delete "second" -> dev back on Default
    let r = admin.delete(&format!("{base}/{second}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let def = admin.access_control_named(&api, "Default").await;
    assert_eq!(flat_list(&def["connected_stages"]), vec!["dev", "stg"]);
    admin
        .get(&format!("{base}/{second}"))
        .await
        .expect_error(404, "NotFound");
    admin
        .delete(&format!("{base}/{second}"))
        .await
        .expect_error(404, "NotFound");

    // Default cannot be deleted
    admin
        .delete(&format!("{base}/{def_id}"))
        .await
        .expect_error(400, "BadRequest");

    // validation: nothing is stored by these
    let count_before = admin.access_controls(&api).await.len();
    let hundred_one: Vec<String> = (0..101)
        .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let hundred_one_joined = vec![hundred_one.join(",")];
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "bad-ip", "allowed_ip_addr": ["300.1.1.1"], "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "allowed_ip_addr": ["127.0.0.1,hello"], "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "allowed_ip_addr": ["10.0.0.0/33"], "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "allowed_ip_addr": hundred_one, "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "allowed_ip_addr": hundred_one_joined, "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "allowed_ip_addr": "127.0.0.1", "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "bad-ip", "connected_stages": []}),
            "allowed_ip_addr",
        ),
        (
            json!({"name": "Bad Name", "allowed_ip_addr": ["127.0.0.1"], "connected_stages": []}),
            "name",
        ),
        (
            json!({"allowed_ip_addr": ["127.0.0.1"], "connected_stages": []}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let r = admin.post(&base, &body).await;
        r.expect_bad_field(field);
    }
    // exactly 100 is fine
    let hundred: Vec<String> = (0..100)
        .map(|i| format!("10.9.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let r = admin
        .post(
            &base,
            &json!({"name": "hundred", "allowed_ip_addr": hundred, "connected_stages": []}),
        )
        .await;
    let hundred_id = r.expect(201)["id"].as_str().unwrap().to_string();
    // unknown stage -> 404, and nothing moved
    admin.post(&base, &json!({"name": "ghost", "allowed_ip_addr": ["127.0.0.1"], "connected_stages": ["nostage"]})).await.expect_error(404, "NotFound");
    admin
        .put(
            &format!("{base}/{hundred_id}"),
            &json!({"allowed_ip_addr": ["127.0.0.1"], "connected_stages": ["dev,nostage"]}),
        )
        .await
        .expect_error(404, "NotFound");
    admin
        .put(
            &format!("{base}/{hundred_id}"),
            &json!({"allowed_ip_addr": ["1.2.3.999"], "connected_stages": ["dev"]}),
        )
        .await
        .expect_bad_field("allowed_ip_addr");
    let def = admin.access_control_named(&api, "Default").await;
    assert_eq!(
        flat_list(&def["connected_stages"]),
        vec!["dev", "stg"],
        "a refused change moved a stage"
    );
    // duplicate name
    admin
        .post(
            &base,
            &json!({"name": "office", "allowed_ip_addr": ["127.0.0.1"], "connected_stages": []}),
        )
        .await
        .expect_error(409, "Conflict");
    assert_eq!(admin.access_controls(&api).await.len(), count_before + 1);
    admin
        .get(&format!("{base}/0123456789abcdef0123456789abcdef"))
        .await
        .expect_error(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_api_removes_its_children() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let api = admin.create_api("gone-soon").await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, "ping").await;
    admin
        .create_http_method(&api, &rid, "GET", "http://127.0.0.1:9/")
        .await;
    admin.deploy(&api, "new", Some("dev")).await;
    let r = admin.delete(&format!("/v1/apis/{api}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    admin
        .get(&format!("/v1/apis/{api}/resources"))
        .await
        .expect_error(404, "NotFound");
    admin
        .get(&format!("/v1/apis/{api}/stages/dev"))
        .await
        .expect_error(404, "NotFound");
    // the invoke URL is gone as well
    let c = data_client();
    let ok = eventually(std::time::Duration::from_secs(3), || {
        let c = c.clone();
        let url = gw.invoke_url(&api, "/dev/ping");
        async move { status_of(&c, &url).await == 404 }
    })
    .await;
    assert!(ok, "a deleted API is still routed");
    // recreate with the same name works
    admin.create_api("gone-soon").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_body_and_unknown_routes() {
    let gw = Gateway::start();
    let admin = gw.admin();
    // unknown management path: 404 in the SCP envelope
    let r = admin.get("/v1/nothing-here").await;
    r.expect_error(404, "NotFound");
    // a body over 1 MiB is refused (413) and creates nothing; sent on a raw
    // socket that keeps reading while it writes, so an early answer is seen
    let big = json!({"name": "big-body", "description": "x".repeat(2 * 1024 * 1024)}).to_string();
    let mut req = format!("POST /v1/apis HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", gw.admin_addr, big.len());
    for (k, v) in admin.signed_headers("POST", "/v1/apis") {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(big.as_bytes());
    let (resp, raw) = raw_exchange(gw.admin_addr, &bytes, std::time::Duration::from_secs(20)).await;
    let resp = resp.unwrap_or_else(|| {
        panic!(
            "no answer: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    });
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(
        resp.json()["errors"][0]["code"],
        "PayloadTooLarge",
        "{}",
        resp.text()
    );
    assert_eq!(api_count(&admin).await, 0);
}
