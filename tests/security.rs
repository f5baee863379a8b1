//! Security filters end to end (issue [2]): JWT auths (gateway tokens and
//! an external issuer whose tokens PyJWT mints), resource-based policies
//! from the user guide, CORS in headless Chromium, trusted proxies and the
//! PROXY protocol. Real binary, real sockets, real clients.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// API with GET /data on stages dev and qa, both allowing 127.0.0.1.
async fn two_stage_api(admin: &Admin, name: &str, backend: &Backend) -> (String, String) {
    let s = simple_api(admin, name, "data", &backend.url("/data")).await;
    admin.deploy(&s.api_id, "new", Some("qas")).await;
    admin
        .put(
            &format!(
                "/v1/apis/{}/access-controls/{}",
                s.api_id, s.access_control_id
            ),
            &json!({"allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": ["dev", "qas"]}),
        )
        .await
        .expect(200);
    (s.api_id, s.resource_id)
}

async fn set_config(admin: &Admin, api: &str, stage: &str, cfg: Value) {
    admin
        .put(&format!("/v1/apis/{api}/stages/{stage}/config"), &cfg)
        .await
        .expect(200);
}

async fn get_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("data-plane request")
}

fn err_code(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-apigw-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_gateway_tokens_and_revocation() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let backend = Backend::start("jwt");
    let (api, _) = two_stage_api(&admin, "jwt-api", &backend).await;
    let jwt_on = json!({"cors_enabled": false, "jwt_enabled": true});
    set_config(&admin, &api, "dev", jwt_on.clone()).await;
    set_config(&admin, &api, "qas", jwt_on).await;

    // Management validation first: nothing is created by bad input.
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "Bad", "expiration_period": 90, "connected_stages": null}),
        )
        .await
        .expect_bad_field("name");
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "tok-zero", "expiration_period": 0, "connected_stages": null}),
        )
        .await
        .expect_bad_field("expiration_period");
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "tok-ghost", "expiration_period": 9, "connected_stages": ["nope"]}),
        )
        .await
        .expect_error(404, "NotFound");
    assert_eq!(
        admin
            .get(&format!("/v1/apis/{api}/auths"))
            .await
            .expect(200)["count"],
        0
    );

    // The reference's example sends the period as a string.
    let created = admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "token01", "expiration_period": "90", "connected_stages": ["dev"]}),
        )
        .await;
    let body = created.expect(201).clone();
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let auth_id = body["id"].as_str().expect("id").to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let listed = admin.get(&format!("/v1/apis/{api}/auths")).await;
    let a = &listed.expect(200)["auths"][0];
    assert_eq!(a["name"], "token01");
    assert_eq!(a["auth_method"], "JWT(JSON WEB Token)");
    assert_eq!(flat_list(&a["connected_stages"]), vec!["dev"]);
    assert!(
        a.get("access_token").is_none(),
        "the token is shown only once"
    );
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "token01", "expiration_period": 1, "connected_stages": null}),
        )
        .await
        .expect_error(409, "Conflict");

    let c = data_client();
    let dev = gw.invoke_url(&api, "/dev/data");
    let qa = gw.invoke_url(&api, "/qas/data");
    let bearer = format!("Bearer {token}");

    let r = get_with(&c, &dev, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(err_code(&r), "TokenMissing");
    let r = get_with(&c, &dev, &[("authorization", "Bearer not-a-jwt")]).await;
    assert_eq!(
        (r.status().as_u16(), err_code(&r)),
        (401, "TokenMalformed".into())
    );
    let r = get_with(&c, &dev, &[("authorization", &bearer)]).await;
    assert_eq!(r.status(), 200, "valid token on its stage");
    let r = get_with(&c, &qa, &[("authorization", &bearer)]).await;
    assert_eq!(
        (r.status().as_u16(), err_code(&r)),
        (401, "TokenNotForStage".into())
    );

    // Tampered payload and signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[5] = if sig[5] == 'A' { 'B' } else { 'A' };
    let tampered = format!(
        "Bearer {}.{}.{}",
        parts[0],
        parts[1],
        sig.iter().collect::<String>()
    );
    let r = get_with(&c, &dev, &[("authorization", &tampered)]).await;
    assert_eq!(
        (r.status().as_u16(), err_code(&r)),
        (401, "TokenBadSignature".into())
    );

    // A 64 KiB Authorization header is refused before any check.
    let huge = format!("Bearer {}", "a".repeat(64 * 1024));
    let r = get_with(&c, &dev, &[("authorization", &huge)]).await;
    assert_eq!(r.status(), 431);

    // Disconnecting the stage revokes at once; reconnecting restores.
    admin
        .put(
            &format!("/v1/apis/{api}/auths/{auth_id}"),
            &json!({"connected_stages": []}),
        )
        .await
        .expect(200);
    assert_eq!(
        get_with(&c, &dev, &[("authorization", &bearer)])
            .await
            .status(),
        401
    );
    admin
        .put(
            &format!("/v1/apis/{api}/auths/{auth_id}"),
            &json!({"connected_stages": ["dev,qas"]}),
        )
        .await
        .expect(200);
    assert_eq!(
        get_with(&c, &dev, &[("authorization", &bearer)])
            .await
            .status(),
        200
    );
    assert_eq!(
        get_with(&c, &qa, &[("authorization", &bearer)])
            .await
            .status(),
        200
    );
    // Many calls with the same token (the cached path) keep working.
    for _ in 0..50 {
        assert_eq!(
            get_with(&c, &dev, &[("authorization", &bearer)])
                .await
                .status(),
            200
        );
    }
    // Deleting the auth revokes at once, cache or not.
    admin
        .delete(&format!("/v1/apis/{api}/auths/{auth_id}"))
        .await
        .expect(204);
    let r = get_with(&c, &dev, &[("authorization", &bearer)]).await;
    assert_eq!(r.status(), 401);
    admin
        .get(&format!("/v1/apis/{api}/auths/{auth_id}"))
        .await
        .expect_error(404, "NotFound");

    // JWT off again: no token needed.
    set_config(
        &admin,
        &api,
        "dev",
        json!({"cors_enabled": false, "jwt_enabled": false}),
    )
    .await;
    assert_eq!(get_with(&c, &dev, &[]).await.status(), 200);
}

fn pyjwt_tokens(jwks_path: &std::path::Path, issuer: &str, audience: &str) -> Value {
    let script = repo_root().join("tests/fixtures/pyjwt_tokens.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(jwks_path)
        .arg(issuer)
        .arg(audience)
        .output()
        .expect("run python3 (PyJWT is installed by .ci/run)");
    assert!(
        out.status.success(),
        "pyjwt_tokens.py failed (pip install pyjwt cryptography): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tokens JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_external_issuer_tokens_from_pyjwt() {
    // jwks_file is read only under jwks_dir (relative to the gateway's
    // working directory, its temporary dir).
    let gw = Gateway::start_with(&[("jwks_dir", "\"jwks\"")]);
    let admin = gw.admin();
    let backend = Backend::start("ext");
    let (api, _) = two_stage_api(&admin, "ext-api", &backend).await;
    set_config(
        &admin,
        &api,
        "dev",
        json!({"cors_enabled": false, "jwt_enabled": true}),
    )
    .await;

    std::fs::create_dir(gw.dir.path().join("jwks")).expect("jwks dir");
    let jwks = gw.dir.path().join("jwks/jwks.json");
    let issuer = "https://idp.example.test";
    let tokens = pyjwt_tokens(&jwks, issuer, "apigw-tests");

    // A JWKS that is not one is refused and nothing is stored.
    admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "idp-bad", "expiration_period": 30, "connected_stages": ["dev"],
                    "external_issuer": {"issuer": issuer, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}),
        )
        .await
        .expect_bad_field("external_issuer.jwks");
    let r = admin
        .post(
            &format!("/v1/apis/{api}/auths"),
            &json!({"name": "idp", "expiration_period": 30, "connected_stages": ["dev"],
                    "external_issuer": {"issuer": issuer, "audience": "apigw-tests",
                                        "jwks_file": "jwks.json"}}),
        )
        .await;
    r.expect(201);

    let c = data_client();
    let dev = gw.invoke_url(&api, "/dev/data");
    let call = |name: &str| format!("Bearer {}", tokens[name].as_str().expect("token"));
    for ok in ["rs256", "es256", "within_leeway"] {
        let r = get_with(&c, &dev, &[("authorization", &call(ok))]).await;
        assert_eq!(r.status(), 200, "{ok} should pass");
    }
    for (bad, code) in [
        ("expired", "TokenExpired"),
        ("wrong_aud", "TokenNotForStage"),
        ("wrong_iss", "TokenNotForStage"),
        ("wrong_key", "TokenBadSignature"),
        ("alg_confusion", ""),
        ("no_exp", ""),
    ] {
        let r = get_with(&c, &dev, &[("authorization", &call(bad))]).await;
        assert_eq!(r.status(), 401, "{bad} must be refused");
        if !code.is_empty() {
            assert_eq!(err_code(&r), code, "{bad}");
        }
    }
}

/// Data-plane request signed with the SCP scheme (makes the caller a principal).
async fn signed_get(
    c: &reqwest::Client,
    url: &str,
    access_key: &str,
    secret: &str,
) -> reqwest::Response {
    let ts = now_ms().to_string();
    let sig = scp_signature(secret, "GET", url, &ts, access_key, "", CLIENT_TYPE);
    c.get(url)
        .header("Scp-AccessKey", access_key)
        .header("Scp-Timestamp", &ts)
        .header("Scp-ClientType", CLIENT_TYPE)
        .header("Scp-Signature", sig)
        .send()
        .await
        .expect("signed request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_policy_templates_allow_and_deny() {
    let gw = Gateway::start_with(&[("srn_offering", "\"e\"")]);
    let admin = gw.admin();
    let backend = Backend::start("policy");
    let s = simple_api(&admin, "policy-api", "resource1", &backend.url("/r")).await;
    let api = s.api_id.clone();
    let c = data_client();
    let url = gw.invoke_url(&api, "/dev/resource1");
    let acct = DEV_ACCOUNT_ID;
    let api_srn = format!("srn:e::{acct}:kr-west1::apigateway:api/{api}");
    let method_srn = format!("srn:e::{acct}:kr-west1::apigateway:method/{api}/dev/GET/resource1");
    let path = format!("/v1/apis/{api}/resource-policies");

    // No policy: allowed.
    admin.get(&path).await.expect_error(404, "NotFound");
    assert_eq!(get_with(&c, &url, &[]).await.status(), 200);

    // IP Range Deny List (user guide): allow unless the source is in the ranges.
    let deny_list = |ranges: Vec<&str>| {
        json!({"Version": "", "Statement": [{
            "Action": ["apigateway:InvokeApigatewayRegion"],
            "Condition": {
                "SrnLike": {"scp:RequestAttribute/body['method-srn']": [method_srn]},
                "NotIpAddress": {"scp:SourceIp": ranges}},
            "Effect": "Allow", "Principal": "*", "Resource": [api_srn], "Sid": "Statement1"}]})
    };
    admin
        .put(&path, &deny_list(vec!["1.2.3.4/24", "5.6.7.8/32"]))
        .await
        .expect(200);
    assert_eq!(
        get_with(&c, &url, &[]).await.status(),
        200,
        "127.0.0.1 is not in the deny list"
    );
    admin
        .put(&path, &deny_list(vec!["127.0.0.0/8"]))
        .await
        .expect(200);
    let r = get_with(&c, &url, &[]).await;
    assert_eq!(r.status(), 403);
    assert!(err_code(&r).starts_with("Policy"), "{}", err_code(&r));

    // Account Allow List: only the listed IAM user, identified by the SCP signature.
    let allow_user = |user: &str| {
        json!({"Version": "", "Statement": [{
            "Action": ["apigateway:InvokeApigatewayRegion"],
            "Condition": {"SrnLike": {"scp:RequestAttribute/body['method-srn']": [method_srn]}},
            "Effect": "Allow",
            "Principal": {"scp": [format!("srn:e::{acct}:::iam:user/{user}")]},
            "Resource": [api_srn], "Sid": "Statement1"}]})
    };
    admin
        .put(&path, &allow_user(DEV_ACCESS_KEY))
        .await
        .expect(200);
    assert_eq!(
        get_with(&c, &url, &[]).await.status(),
        403,
        "anonymous caller"
    );
    assert_eq!(
        signed_get(&c, &url, DEV_ACCESS_KEY, DEV_SECRET_KEY)
            .await
            .status(),
        200
    );
    assert_eq!(
        signed_get(&c, &url, DEV_ACCESS_KEY, "wrong-secret")
            .await
            .status(),
        403,
        "a bad signature is anonymous"
    );
    assert_eq!(
        signed_get(&c, &url, "second-access-key", "second-secret-key")
            .await
            .status(),
        403,
        "another user"
    );

    // Explicit Deny wins over Allow; method SRN wildcards.
    let hybrid = json!({"Version": "", "Statement": [
        {"Sid": "AllowAll", "Effect": "Allow", "Principal": "*",
         "Action": ["apigateway:InvokeApigatewayRegion"], "Resource": [api_srn],
         "Condition": {"SrnLike": {"scp:RequestAttribute/body['method-srn']":
             [format!("srn:e::{acct}:kr-west1::apigateway:method/{api}/*/*/*")]}}},
        {"Sid": "DenyLocal", "Effect": "Deny", "Principal": "*",
         "Action": ["apigateway:InvokeApigatewayRegion"], "Resource": [api_srn],
         "Condition": {"IpAddress": {"scp:SourceIp": ["127.0.0.1/32"]}}}]});
    admin.put(&path, &hybrid).await.expect(200);
    let r = get_with(&c, &url, &[]).await;
    assert_eq!(
        (r.status().as_u16(), err_code(&r)),
        (403, "PolicyDenied".into())
    );

    // Bad documents: 400/413 naming the element, and the stored policy is unchanged.
    let before = admin.get(&path).await.expect(200).clone();
    admin
        .put(&path, &json!({"Version": "", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "*", "Resource": "*"}]}))
        .await
        .expect_bad_field("Statement[0].Effect");
    let big = json!({"Version": "", "Statement": [], "pad": "x".repeat(1 << 20)});
    let r = admin.put(&path, &big).await;
    assert_eq!(r.status, 413);
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = admin
        .send_raw("PUT", &path, Some(nested.into_bytes()), None, &admin.opts)
        .await;
    assert_eq!(r.status, 400);
    let r = admin
        .send_raw(
            "PUT",
            &path,
            Some(vec![0xff, 0xfe, b'{', b'}']),
            None,
            &admin.opts,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(admin.get(&path).await.expect(200), &before);

    // Delete: allowed again.
    admin.delete(&path).await.expect(204);
    assert_eq!(get_with(&c, &url, &[]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_forwarded_for_and_proxy_protocol() {
    let gw = Gateway::start_with(&[("trusted_proxies", "[\"127.0.0.1/32\"]")]);
    let admin = gw.admin();
    let backend = Backend::start("xff");
    let s = simple_api(&admin, "xff-api", "data", &backend.url("/data")).await;
    admin
        .put(
            &format!(
                "/v1/apis/{}/access-controls/{}",
                s.api_id, s.access_control_id
            ),
            &json!({"allowed_ip_addr": ["203.0.113.7"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    let c = data_client();
    let url = gw.invoke_url(&s.api_id, "/dev/data");
    assert_eq!(
        get_with(&c, &url, &[]).await.status(),
        403,
        "the proxy itself is not allowed"
    );
    assert_eq!(
        get_with(&c, &url, &[("x-forwarded-for", "203.0.113.7")])
            .await
            .status(),
        200
    );
    // The rightmost untrusted hop counts, not a spoofed leftmost one.
    assert_eq!(
        get_with(
            &c,
            &url,
            &[("x-forwarded-for", "203.0.113.7, 198.51.100.1")]
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        get_with(
            &c,
            &url,
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 127.0.0.1")]
        )
        .await
        .status(),
        200
    );
    let seen = backend.last();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.1, 203.0.113.7, 127.0.0.1, 203.0.113.7")
    );

    // An untrusted peer's X-Forwarded-For is ignored.
    let gw2 = Gateway::start();
    let admin2 = gw2.admin();
    let s2 = simple_api(&admin2, "xff-api", "data", &backend.url("/data")).await;
    admin2
        .put(
            &format!(
                "/v1/apis/{}/access-controls/{}",
                s2.api_id, s2.access_control_id
            ),
            &json!({"allowed_ip_addr": ["203.0.113.7"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    let url2 = gw2.invoke_url(&s2.api_id, "/dev/data");
    assert_eq!(
        get_with(&c, &url2, &[("x-forwarded-for", "203.0.113.7")])
            .await
            .status(),
        403
    );

    // PROXY protocol v1 on a listener configured for it.
    let gw3 = Gateway::start_with(&[("proxy_protocol", "true")]);
    let admin3 = gw3.admin();
    let s3 = simple_api(&admin3, "pp-api", "data", &backend.url("/data")).await;
    admin3
        .put(
            &format!(
                "/v1/apis/{}/access-controls/{}",
                s3.api_id, s3.access_control_id
            ),
            &json!({"allowed_ip_addr": ["203.0.113.7"], "connected_stages": ["dev"]}),
        )
        .await
        .expect(200);
    let host = gw3.host(&s3.api_id);
    let send = |src: &str| {
        format!(
            "PROXY TCP4 {src} 127.0.0.1 40000 {}\r\nGET /dev/data HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            gw3.data_port()
        )
    };
    let (resp, _) = raw_exchange(
        gw3.data_addr,
        send("203.0.113.7").as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(resp.expect("response").status, 200);
    let (resp, _) = raw_exchange(
        gw3.data_addr,
        send("198.51.100.1").as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(resp.expect("response").status, 403);
    // Without the header the connection is refused.
    let plain = format!("GET /dev/data HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (resp, _) = raw_exchange(gw3.data_addr, plain.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.is_none(), "no answer without a PROXY header");
}
