//! Every operation of the management API's own description
//! (`GET /v1/openapi.json`), called on the real binary in a realistic
//! sequence (an API with resources, HTTP and Cloud Function methods,
//! deployments, stages with a canary, throttles and variables, access
//! controls, auths (own and external issuer), usage plans and keys, data
//! plane calls and their report, a resource policy, a custom domain and
//! its mapping, a PrivateLink endpoint between two accounts), and each
//! answer's body validated against the schema the description gives for
//! that operation and status (Python's `jsonschema`, Draft 2020-12, which
//! OpenAPI 3.1 schemas are; tests/run.sh installs it with
//! openapi-spec-validator). Error answers are validated too (the SCP
//! envelope). The test fails when an operation of the description is not
//! exercised with a success, when a status is answered that the
//! description does not list, when a response schema is not closed
//! (`additionalProperties: false` and `required` on every object with
//! properties), and it checks that the validation itself catches an
//! added field, a missing one and a mistyped one.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Operations deliberately not exercised with a success, and why. Empty:
/// every operation is called.
const SKIPPED: &[(&str, &str, &str)] = &[];

/// What was called and answered.
struct Calls {
    records: Vec<Value>,
}

/// `template` with its `{...}` segments replaced by `args`, in order.
fn fill(template: &str, args: &[&str]) -> String {
    let mut it = args.iter();
    let out: Vec<String> = template
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                it.next()
                    .unwrap_or_else(|| panic!("too few arguments for {template}"))
                    .to_string()
            } else {
                s.to_string()
            }
        })
        .collect();
    assert!(it.next().is_none(), "too many arguments for {template}");
    out.join("/")
}

impl Calls {
    fn record(&mut self, method: &str, template: &str, r: &Resp) {
        self.records.push(json!({
            "method": method,
            "template": template,
            "status": r.status,
            "body": r.text(),
        }));
    }

    /// Calls `method template` (filled with `args`, then `query`), expects
    /// `want`, records the answer and returns its JSON.
    #[allow(clippy::too_many_arguments)]
    async fn op(
        &mut self,
        admin: &Admin,
        method: &str,
        template: &str,
        args: &[&str],
        query: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let path = format!("{}{query}", fill(template, args));
        let r = admin.call(method, &path, body.as_ref()).await;
        assert_eq!(
            r.status,
            want,
            "{method} {path}: expected {want}, got {}: {}",
            r.status,
            r.text()
        );
        self.record(method, template, &r);
        r.json.clone()
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

const JWKS_X: &str = "-GLJv0jOAyCdpygn7l7IAEskd1K134nBiMutHhtuFYc";

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_what_the_description_says() {
    let gw = Gateway::start();
    let a = gw.admin();
    let b = a.second_account();
    let backend = Backend::start("oaresp");
    let mut c = Calls {
        records: Vec::new(),
    };

    // The description itself (unsigned) and the versions.
    let unsigned = SignOpts {
        unsigned: true,
        ..SignOpts::default()
    };
    let r = a
        .send_raw("GET", "/v1/openapi.json", None, None, &unsigned)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    c.record("GET", "/v1/openapi.json", &r);
    let doc = r.json.clone();
    c.op(&a, "GET", "/", &[], "", None, 200).await;

    // Cloud Functions (extension): one for an SCF method, one deleted.
    let fun = "/v1/functions";
    let fun_id = "/v1/functions/{function_id}";
    let f1 = c
        .op(
            &a,
            "POST",
            fun,
            &[],
            "",
            Some(json!({"name": "oa-fn", "url": backend.url("/fn"), "description": "a function", "timeout_ms": 5000,
                        "auth_header": {"name": "x-fn-key", "value": "s3cret"}})),
            201,
        )
        .await;
    let f1 = s(&f1["function"]["id"]);
    let f2 = c
        .op(
            &a,
            "POST",
            fun,
            &[],
            "",
            Some(json!({"name": "oa-fn-two", "url": backend.url("/fn2")})),
            201,
        )
        .await;
    let f2 = s(&f2["function"]["id"]);
    c.op(&a, "GET", fun, &[], "", None, 200).await;
    c.op(&a, "GET", fun_id, &[&f1], "", None, 200).await;
    c.op(
        &a,
        "PUT",
        fun_id,
        &[&f2],
        "",
        Some(json!({"name": "oa-fn-two", "url": backend.url("/fn2b"), "description": "renamed"})),
        200,
    )
    .await;

    // An API, its resources and methods.
    let apis = "/v1/apis";
    let api_t = "/v1/apis/{api_id}";
    let created = c
        .op(
            &a,
            "POST",
            apis,
            &[],
            "",
            Some(json!({"name": "oa-api", "description": "described", "tags": [{"key": "team", "value": "gw"}]})),
            202,
        )
        .await;
    let api = s(&created["id"]);
    c.op(&a, "GET", apis, &[], "?size=10", None, 200).await;
    c.op(&a, "GET", api_t, &[&api], "", None, 200).await;
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/description",
        &[&api],
        "",
        Some(json!({"description": "described again"})),
        200,
    )
    .await;
    let res = c
        .op(
            &a,
            "GET",
            "/v1/apis/{api_id}/resources",
            &[&api],
            "",
            None,
            200,
        )
        .await;
    let root = res["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["path"] == "/"))
        .map(|r| s(&r["id"]))
        .expect("root resource");
    let res_t = "/v1/apis/{api_id}/resources/{resource_id}";
    let items = c
        .op(
            &a,
            "POST",
            res_t,
            &[&api, &root],
            "",
            Some(json!({"path_part": "items"})),
            200,
        )
        .await;
    let items = s(&items["id"]);
    let fnres = c
        .op(
            &a,
            "POST",
            res_t,
            &[&api, &items],
            "",
            Some(json!({"path_part": "{item-id}"})),
            200,
        )
        .await;
    let fnres = s(&fnres["id"]);
    let methods = "/v1/apis/{api_id}/resources/{resource_id}/methods";
    let method_t = "/v1/apis/{api_id}/resources/{resource_id}/methods/{method_type}";
    c.op(
        &a,
        "POST",
        methods,
        &[&api, &items],
        "",
        Some(json!({"method_type": "GET", "integration_type": "HTTP", "endpoint_url": backend.url("/items"),
                    "api_key_required": false, "query_strings": {"page": false}, "request_headers": {"x-trace": false}})),
        200,
    )
    .await;
    c.op(
        &a,
        "POST",
        methods,
        &[&api, &fnres],
        "",
        Some(json!({"method_type": "POST", "integration_type": "SCF", "function_id": f1})),
        200,
    )
    .await;
    c.op(&a, "GET", methods, &[&api, &items], "", None, 200)
        .await;
    c.op(&a, "GET", method_t, &[&api, &fnres, "POST"], "", None, 200)
        .await;
    c.op(
        &a,
        "PUT",
        method_t,
        &[&api, &items, "GET"],
        "",
        Some(json!({"api_key_required": false, "integration_type": "HTTP", "endpoint_url": backend.url("/items2"),
                    "query_strings": {}, "request_headers": {}})),
        200,
    )
    .await;
    c.op(&a, "GET", res_t, &[&api, &items], "", None, 200).await;

    // Deployments and stages.
    let deps = "/v1/apis/{api_id}/deployments";
    let d1 = c
        .op(
            &a,
            "POST",
            deps,
            &[&api],
            "",
            Some(json!({"stage_type": "new", "stage_name": "dev", "description": "first"})),
            200,
        )
        .await;
    let d1 = s(&d1["deployment_id"]);
    let d2 = c
        .op(
            &a,
            "POST",
            deps,
            &[&api],
            "",
            Some(json!({"stage_type": "none", "description": "second"})),
            200,
        )
        .await;
    let d2 = s(&d2["deployment_id"]);
    let stages = "/v1/apis/{api_id}/stages";
    let stage_t = "/v1/apis/{api_id}/stages/{stage_name}";
    c.op(
        &a,
        "POST",
        stages,
        &[&api],
        "",
        Some(json!({"stage_name": "stg", "deployment_id": d2, "description": "staging"})),
        200,
    )
    .await;
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/stages/{stage_name}/deployment",
        &[&api, "dev"],
        "",
        Some(json!({"deployment_id": d2})),
        200,
    )
    .await;

    // Access controls: one for the data plane, one deleted.
    let acs = "/v1/apis/{api_id}/access-controls";
    let ac_t = "/v1/apis/{api_id}/access-controls/{access_control_id}";
    let ac = c
        .op(
            &a,
            "POST",
            acs,
            &[&api],
            "",
            Some(json!({"name": "allow-local", "allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": ["dev"], "description": "loopback"})),
            201,
        )
        .await;
    let ac = s(&ac["id"]);
    let ac2 = c
        .op(
            &a,
            "POST",
            acs,
            &[&api],
            "",
            Some(json!({"name": "spare", "allowed_ip_addr": ["10.0.0.0/8"], "connected_stages": null})),
            201,
        )
        .await;
    let ac2 = s(&ac2["id"]);
    c.op(&a, "GET", acs, &[&api], "", None, 200).await;
    c.op(&a, "GET", ac_t, &[&api, &ac], "", None, 200).await;
    c.op(
        &a,
        "PUT",
        ac_t,
        &[&api, &ac],
        "",
        Some(json!({"allowed_ip_addr": ["127.0.0.1/32", "::1/128"], "connected_stages": ["dev", "stg"], "description": "loopback v4 and v6"})),
        200,
    )
    .await;

    // Auths: the gateway's own token, and an external issuer's (no token).
    let auths = "/v1/apis/{api_id}/auths";
    let auth_t = "/v1/apis/{api_id}/auths/{auth_id}";
    let own = c
        .op(
            &a,
            "POST",
            auths,
            &[&api],
            "",
            Some(json!({"name": "tok", "expiration_period": 90, "connected_stages": ["dev"]})),
            201,
        )
        .await;
    assert!(own["access_token"].is_string(), "{own}");
    let own = s(&own["id"]);
    let ext = c
        .op(
            &a,
            "POST",
            auths,
            &[&api],
            "",
            Some(json!({"name": "ext", "expiration_period": 30, "connected_stages": ["stg"],
                        "external_issuer": {"issuer": "https://idp.oaresp.example", "audience": "oa",
                            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": JWKS_X}]}}})),
            201,
        )
        .await;
    assert!(ext["access_token"].is_null(), "{ext}");
    let ext = s(&ext["id"]);
    c.op(&a, "GET", auths, &[&api], "", None, 200).await;
    c.op(&a, "GET", auth_t, &[&api, &ext], "", None, 200).await;
    c.op(
        &a,
        "PUT",
        auth_t,
        &[&api, &own],
        "",
        Some(json!({"connected_stages": ["dev", "stg"]})),
        200,
    )
    .await;

    // Usage plans and keys: one of each is deleted.
    let plans = "/v1/apis/{api_id}/usage-plans";
    let plan_t = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}";
    let gold = c
        .op(
            &a,
            "POST",
            plans,
            &[&api],
            "",
            Some(json!({"name": "gold", "description": "d", "limit": 1000, "rate": "day"})),
            200,
        )
        .await;
    let gold = s(&gold["usage_plan"]["id"]);
    let silver = c
        .op(
            &a,
            "POST",
            plans,
            &[&api],
            "",
            Some(json!({"name": "silver", "limit": 10, "rate": "month"})),
            200,
        )
        .await;
    let silver = s(&silver["usage_plan"]["id"]);
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/description",
        &[&api, &gold],
        "",
        Some(json!({"description": "the gold plan"})),
        200,
    )
    .await;
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/quota",
        &[&api, &gold],
        "",
        Some(json!({"limit": 5000, "rate": "hour"})),
        200,
    )
    .await;
    let keys = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys";
    let key_t = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys/{api_key_id}";
    let k1 = c
        .op(
            &a,
            "POST",
            keys,
            &[&api, &gold],
            "",
            Some(json!({"name": "client-one", "description": "first"})),
            200,
        )
        .await;
    let k1 = s(&k1["api_key"]["id"]);
    let k2 = c
        .op(
            &a,
            "POST",
            keys,
            &[&api, &gold],
            "",
            Some(json!({"name": "client-two"})),
            200,
        )
        .await;
    let k2 = s(&k2["api_key"]["id"]);
    c.op(&a, "GET", keys, &[&api, &gold], "", None, 200).await;
    c.op(
        &a,
        "PUT",
        &format!("{key_t}/description"),
        &[&api, &gold, &k1],
        "",
        Some(json!({"description": "the first client"})),
        200,
    )
    .await;
    c.op(&a, "GET", plans, &[&api], "", None, 200).await;
    c.op(&a, "GET", plan_t, &[&api, &gold], "", None, 200).await;

    // The stage's configuration with every extension set: CORS, a usage
    // plan and a key, a throttle and a method's, variables, a canary on
    // the first deployment.
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/stages/{stage_name}/config",
        &[&api, "dev"],
        "",
        Some(json!({
            "cors_enabled": true, "allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"],
            "allow_headers": ["content-type"], "expose_headers": ["x-request-id"], "max_age": 600,
            "allow_credentials": true, "jwt_enabled": false,
            "usage_plan_id": gold, "connected_api_keys": [k1],
            "throttle": {"rate": 1000, "burst": 2000},
            "method_throttles": [{"path": "/items", "method": "GET", "rate": 500, "burst": 500}],
            "variables": {"backend": "items"},
            "canary": {"deployment_id": d1, "percent": 10.0},
        })),
        200,
    )
    .await;
    c.op(&a, "GET", stages, &[&api], "", None, 200).await;
    c.op(&a, "GET", stage_t, &[&api, "dev"], "", None, 200)
        .await;
    // The first deployment is now the canary's: status Canary.
    let listed = c.op(&a, "GET", deps, &[&api], "", None, 200).await;
    assert!(
        listed["deployments"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["status"] == "Canary")),
        "{listed}"
    );

    // Data plane calls, then their report (rows and top resources).
    let client = data_client();
    let url = gw.invoke_url(&api, "/dev/items");
    let served = eventually(Duration::from_secs(20), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(served, "GET {url} never answered 200");
    for _ in 0..20 {
        let st = client.get(&url).send().await.map(|r| r.status().as_u16());
        assert_eq!(st.ok(), Some(200), "GET {url}");
    }
    let today = chrono::Utc::now().date_naive().to_string();
    let report = c
        .op(
            &a,
            "GET",
            "/v1/apis/{api_id}/reports",
            &[&api],
            &format!("?stage_name=dev&start_date={today}&end_date={today}"),
            None,
            200,
        )
        .await;
    assert!(
        report["reports"].as_array().is_some_and(|r| !r.is_empty())
            && report["top_resources"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
        "{report}"
    );

    // A resource policy (extension).
    let method_srn = s(&c
        .op(&a, "GET", method_t, &[&api, &items, "GET"], "", None, 200)
        .await["method"]["srn"]);
    let api_srn = method_srn
        .split(":method/")
        .next()
        .map(|p| format!("{p}:api/{api}"))
        .expect("srn");
    let pol = "/v1/apis/{api_id}/resource-policies";
    c.op(
        &a,
        "PUT",
        pol,
        &[&api],
        "",
        Some(json!({"Version": "", "Statement": [{
            "Action": ["apigateway:InvokeApigatewayRegion"],
            "Condition": {"NotIpAddress": {"scp:SourceIp": ["192.0.2.0/24"]}},
            "Effect": "Allow", "Principal": "*", "Resource": [api_srn], "Sid": "NotTestNet"}]})),
        200,
    )
    .await;
    c.op(&a, "GET", pol, &[&api], "", None, 200).await;
    c.op(&a, "DELETE", pol, &[&api], "", None, 204).await;

    // A custom domain and a base path mapping (extension).
    let domains = "/v1/domain-names";
    let domain_t = "/v1/domain-names/{domain_name}";
    let maps = "/v1/domain-names/{domain_name}/base-path-mappings";
    let map_t = "/v1/domain-names/{domain_name}/base-path-mappings/{base_path}";
    let dn = "api.oaresp.example.test";
    c.op(
        &a,
        "POST",
        domains,
        &[],
        "",
        Some(json!({ "domain_name": dn })),
        201,
    )
    .await;
    c.op(
        &a,
        "POST",
        maps,
        &[dn],
        "",
        Some(json!({"base_path": "shop", "api_id": api, "stage_name": "dev"})),
        201,
    )
    .await;
    c.op(&a, "GET", domains, &[], "", None, 200).await;
    c.op(&a, "GET", domain_t, &[dn], "", None, 200).await;
    c.op(&a, "GET", maps, &[dn], "", None, 200).await;
    c.op(&a, "GET", map_t, &[dn, "shop"], "", None, 200).await;
    c.op(&a, "DELETE", map_t, &[dn, "shop"], "", None, 204)
        .await;
    c.op(&a, "DELETE", domain_t, &[dn], "", None, 204).await;

    // A PrivateLink endpoint of the second account to a PRIVATE API of
    // the first, through every transition.
    let (papi, sid) = a.create_private_api("oa-private").await;
    let eps = "/v1/privatelink-endpoints";
    let ep_t = "/v1/privatelink-endpoints/{privatelink_endpoint_id}";
    let ep = c
        .op(
            &b,
            "POST",
            eps,
            &[],
            "",
            Some(
                json!({"name": "oaEndpoint", "description": "to A", "privatelink_service_id": sid}),
            ),
            200,
        )
        .await;
    let ep = s(&ep["privatelink_endpoint"]["id"]);
    let req_t = "/v1/privatelink-endpoints/{privatelink_endpoint_id}/request";
    c.op(
        &b,
        "PUT",
        req_t,
        &[&ep],
        "",
        Some(json!({"type": "CANCEL"})),
        200,
    )
    .await;
    c.op(
        &b,
        "PUT",
        req_t,
        &[&ep],
        "",
        Some(json!({"type": "RE_REQUEST"})),
        200,
    )
    .await;
    c.op(
        &a,
        "PUT",
        "/v1/privatelink-endpoints/{privatelink_endpoint_id}/approval",
        &[&ep],
        "",
        Some(json!({"api_id": papi, "type": "APPROVE"})),
        200,
    )
    .await;
    c.op(
        &a,
        "PUT",
        "/v1/privatelink-endpoints/{privatelink_endpoint_id}/connection",
        &[&ep],
        "",
        Some(json!({"api_id": papi, "type": "DISCONNECT"})),
        200,
    )
    .await;
    c.op(
        &a,
        "GET",
        "/v1/apis/{api_id}/connected-endpoints",
        &[&papi],
        "",
        None,
        200,
    )
    .await;
    c.op(
        &b,
        "PUT",
        ep_t,
        &[&ep],
        "",
        Some(json!({"description": "to A, disconnected"})),
        200,
    )
    .await;
    c.op(&b, "GET", ep_t, &[&ep], "", None, 200).await;
    c.op(&b, "GET", eps, &[], "", None, 200).await;
    c.op(&b, "DELETE", ep_t, &[&ep], "", None, 204).await;

    // Error answers: the SCP envelope, for the statuses described.
    c.op(&a, "GET", api_t, &["nosuch-api"], "", None, 404).await;
    c.op(&a, "POST", apis, &[], "", Some(json!({})), 400).await;
    c.op(
        &a,
        "POST",
        apis,
        &[],
        "",
        Some(json!({"name": "oa-api"})),
        409,
    )
    .await;
    c.op(
        &a,
        "PUT",
        "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/quota",
        &[&api, &gold],
        "",
        Some(json!({"limit": 0, "rate": "day"})),
        400,
    )
    .await;
    let r = a
        .send_raw("GET", &fill(api_t, &[&api]), None, None, &unsigned)
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    c.record("GET", api_t, &r);
    let r = a
        .send_raw(
            "POST",
            apis,
            Some(b"name=x".to_vec()),
            Some("application/x-www-form-urlencoded"),
            &a.opts,
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
    c.record("POST", apis, &r);

    // Deletions.
    c.op(&a, "DELETE", key_t, &[&api, &gold, &k2], "", None, 204)
        .await;
    c.op(&a, "DELETE", plan_t, &[&api, &silver], "", None, 204)
        .await;
    c.op(&a, "DELETE", auth_t, &[&api, &ext], "", None, 204)
        .await;
    c.op(&a, "DELETE", ac_t, &[&api, &ac2], "", None, 204).await;
    c.op(&a, "DELETE", stage_t, &[&api, "stg"], "", None, 204)
        .await;
    c.op(
        &a,
        "DELETE",
        method_t,
        &[&api, &fnres, "POST"],
        "",
        None,
        204,
    )
    .await;
    c.op(&a, "DELETE", res_t, &[&api, &fnres], "", None, 204)
        .await;
    c.op(&a, "DELETE", fun_id, &[&f2], "", None, 204).await;
    c.op(&a, "DELETE", api_t, &[&api], "", None, 204).await;

    // Validate everything recorded against the description.
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("openapi.json", doc.clone()),
        ("records.json", Value::Array(c.records.clone())),
        (
            "skipped.json",
            json!(SKIPPED.iter().map(|(m, p, _)| [m, p]).collect::<Vec<_>>()),
        ),
    ];
    for (name, v) in &files {
        std::fs::write(dir.path().join(name), v.to_string()).unwrap();
    }
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/validate_responses.py"
        ))
        .arg(dir.path().join("openapi.json"))
        .arg(dir.path().join("records.json"))
        .arg(dir.path().join("skipped.json"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "validator failed (tests/run.sh installs jsonschema with openapi-spec-validator): {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("validator report");
    println!(
        "validated {} answers; {} operations; {} closed response schemas; self-checks {}",
        report["validated"], report["operations"], report["closed_schemas"], report["self_checks"]
    );
    let failures = report["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(report["validated"], json!(c.records.len()));
    assert!(report["operations"].as_u64().is_some_and(|n| n > 60));
    for check in report["self_checks"].as_array().expect("self checks") {
        assert_eq!(check[1], json!(true), "self-check {} failed", check[0]);
    }
}
