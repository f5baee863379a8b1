//! The management API's own OpenAPI description (`GET /v1/openapi.json`)
//! against the real binary: served unsigned (and nothing else is), a
//! structurally valid OpenAPI 3 document with the reference's patterns
//! and limits, and every operation it lists is served by the router (a
//! signed request reaches the operation: never the router's 404 "no such
//! operation" nor its 405). That every route the router serves is in the
//! description is checked on the router itself
//! (`apigw::admin::openapi` tests, which read its route table).

mod common;

use common::*;
use serde_json::{json, Value};

async fn description(admin: &Admin) -> Value {
    let unsigned = SignOpts {
        unsigned: true,
        ..SignOpts::default()
    };
    let r = admin
        .send_raw("GET", "/v1/openapi.json", None, None, &unsigned)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    r.json.clone()
}

/// Every (method, path template) of the description.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in ["get", "post", "put", "delete", "patch"] {
            if item.get(m).is_some() {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// A concrete path of a template: every parameter a name nothing has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                "nosuch-object"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_router_miss(r: &Resp) -> bool {
    r.status == 405 || (r.status == 404 && r.err_detail() == "no such operation")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_is_public_and_every_operation_in_it_is_served() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let doc = description(&admin).await;
    let ops = operations(&doc);
    assert!(ops.len() > 60, "{} operations", ops.len());
    let unsigned = SignOpts {
        unsigned: true,
        ..SignOpts::default()
    };
    for (m, template) in &ops {
        let path = concrete(template);
        let body = matches!(m.as_str(), "POST" | "PUT").then(|| b"{}".to_vec());
        if path != "/v1/openapi.json" {
            // Only the description is public.
            let r = admin
                .send_raw(m, &path, body.clone(), None, &unsigned)
                .await;
            assert_eq!(r.status, 401, "unsigned {m} {path}: {}", r.text());
        }
        // Signed, it reaches the operation (which may well refuse it).
        let r = admin.send_raw(m, &path, body, None, &admin.opts).await;
        assert!(
            !is_router_miss(&r),
            "{m} {path} is not served: {} {}",
            r.status,
            r.text()
        );
        assert!(r.status < 500, "{m} {path}: {} {}", r.status, r.text());
    }
    // Not the description: other methods, other paths.
    for (m, path) in [
        ("POST", "/v1/openapi.json"),
        ("GET", "/v1/openapi.json/x"),
        ("GET", "/openapi.json"),
    ] {
        let r = admin.send_raw(m, path, None, None, &unsigned).await;
        assert_eq!(r.status, 401, "unsigned {m} {path}: {}", r.text());
    }
    // And paths or methods the description does not list are not served.
    for (m, path) in [
        ("GET", "/v1/nothing"),
        ("GET", "/v1/apis/x/nothing"),
        ("PATCH", "/v1/apis"),
        ("POST", "/v1/apis/x"),
        ("PUT", "/v1/openapi.json"),
    ] {
        assert!(!ops.contains(&(m.to_string(), path.to_string())));
        let r = admin.call(m, path, None).await;
        assert!(is_router_miss(&r), "{m} {path}: {} {}", r.status, r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_is_openapi_3_with_the_references_patterns() {
    let gw = Gateway::start();
    let doc = description(&gw.admin()).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemas = &doc["components"]["schemas"];
    // Every reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = r.split('"').next().unwrap_or("");
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("$ref outside components: {target}"));
        assert!(schemas.get(name).is_some(), "$ref to missing schema {name}");
    }
    // Unique operation ids, responses on every operation.
    let mut ids = std::collections::HashSet::new();
    for (m, path) in operations(&doc) {
        let op = &doc["paths"][&path][m.to_lowercase()];
        assert!(
            ids.insert(op["operationId"].as_str().unwrap_or("").to_string()),
            "{m} {path}"
        );
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }
    // The reference's name pattern and limits.
    let name = &schemas["apis.CreateReq"]["properties"]["name"];
    assert_eq!(
        name["pattern"],
        json!("^[a-z][a-z0-9\\-]{1,48}[a-z0-9]$"),
        "{name}"
    );
    assert_eq!(name["maxLength"], json!(50));
    assert_eq!(name["minLength"], json!(3));
    assert_eq!(
        schemas["apis.CreateReq"]["properties"]["description"]["maxLength"],
        json!(100)
    );
    assert!(schemas["apis.CreateReq"]["required"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("name"))));
    let stage = &schemas["stages.CreateReq"]["properties"]["stage_name"];
    assert_eq!(stage["pattern"], name["pattern"], "{stage}");
    assert_eq!(
        schemas["usage_plans.CreateReq"]["properties"]["limit"]["maximum"],
        json!(2_000_000_000)
    );
    assert!(schemas["resources.CreateReq"]["properties"]["path_part"]["pattern"].is_string());
    // The SCP signature headers, and the error envelope.
    let sec = &doc["components"]["securitySchemes"];
    for (scheme, header) in [
        ("scp_access_key", "Scp-AccessKey"),
        ("scp_signature", "Scp-Signature"),
        ("scp_timestamp", "Scp-Timestamp"),
        ("scp_client_type", "Scp-ClientType"),
    ] {
        assert_eq!(sec[scheme]["type"], json!("apiKey"));
        assert_eq!(sec[scheme]["in"], json!("header"));
        assert_eq!(sec[scheme]["name"], json!(header));
    }
    assert!(doc["security"][0].get("scp_signature").is_some());
    let create_api = &doc["paths"]["/v1/apis"]["post"]["responses"];
    for s in ["400", "401", "409", "413", "415", "500"] {
        assert_eq!(
            create_api[s]["content"]["application/json"]["schema"]["$ref"],
            json!("#/components/schemas/ErrorEnvelope"),
            "{s}"
        );
    }
    assert!(schemas["ErrorEnvelope"]["properties"]["errors"].is_object());
    // An SCP error body matches the envelope's fields.
    let r = gw.admin().get("/v1/apis/nosuch").await;
    let e = &r.json["errors"][0];
    for f in ["code", "status", "detail"] {
        assert!(e.get(f).is_some(), "{}", r.text());
        assert!(schemas["ErrorItem"]["properties"].get(f).is_some());
    }
    // With Python's openapi-spec-validator where there is one (tests/run.sh installs it).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, json\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')"])
        .arg(&file)
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            eprintln!("openapi-spec-validator not installed: structural checks only");
        }
        Ok(o) => assert!(
            o.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("python3: {e}: structural checks only"),
    }
}
