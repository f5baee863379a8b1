//! Custom domain names and base path mappings: the management operations
//! (CRUD, every refusal, account scoping, certificate files confined to
//! `tls.cert_dir`) and routing by a custom domain's Host over real
//! sockets (curl `--resolve`).

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

const DOMAIN: &str = "api.example.test";

/// An API with GET `/{part}` and GET `/{part}/{item-id}` to `backend`
/// (`/{part}` and `/{part}/{item-id}`), deployed on `stage`, open to
/// 127.0.0.1. Returns the API id.
async fn api_on(admin: &Admin, name: &str, part: &str, stage: &str, backend: &Backend) -> String {
    let api = admin.create_api(name).await;
    let root = admin.root_id(&api).await;
    let rid = admin.create_resource(&api, &root, part).await;
    admin
        .create_http_method(&api, &rid, "GET", &backend.url(&format!("/{part}")))
        .await;
    let item = admin.create_resource(&api, &rid, "{item-id}").await;
    admin
        .create_http_method(
            &api,
            &item,
            "GET",
            &backend.url(&format!("/{part}/{{item-id}}")),
        )
        .await;
    admin.deploy(&api, "new", Some(stage)).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &[stage])
        .await;
    api
}

/// curl to `http://{host}:{port}{path}` with `--resolve host:port:127.0.0.1`:
/// (status, x-apigw-error header or "", body).
fn curl(host: &str, port: u16, path: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-D",
            "-",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("http://{host}:{port}{path}"),
        ])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-apigw-error")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, code, body.to_string())
}

fn mapping(base_path: &str, api: &str, stage: &str) -> serde_json::Value {
    json!({"base_path": base_path, "api_id": api, "stage_name": stage})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_names_crud_and_refusals() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let other = admin.second_account();
    let backend = Backend::start("crud");

    // Create: lower-cased, trailing dot dropped; no certificate files.
    let r = admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "API.Example.Test."}),
        )
        .await;
    let d = &r.expect(201)["domain_name"];
    assert_eq!(d["domain_name"], DOMAIN);
    assert!(d["certificate_file"].is_null());
    assert!(is_rfc3339(&d["created_at"]), "{d}");

    // Name clashes, also with another account's domain.
    admin
        .post("/v1/domain-names", &json!({"domain_name": DOMAIN}))
        .await
        .expect_error(409, "Conflict");
    other
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "Api.Example.Test"}),
        )
        .await
        .expect_error(409, "Conflict");

    // Not a host name, or an invoke host: 400 naming domain_name.
    for bad in [
        "localhost",
        "bad_label.example.test",
        "-x.example.test",
        "*.example.test",
        "127.0.0.1",
        "a..example.test",
        INVOKE_DOMAIN,
        &format!("someapi.{INVOKE_DOMAIN}"),
        &format!("A.B.{}", INVOKE_DOMAIN.to_uppercase()),
    ] {
        admin
            .post("/v1/domain-names", &json!({"domain_name": bad}))
            .await
            .expect_bad_field("domain_name");
    }
    admin
        .post("/v1/domain-names", &json!({}))
        .await
        .expect_bad_field("domain_name");
    // Certificate files: both or neither, and none without tls.cert_dir.
    admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "b.example.test", "certificate_file": "c.pem"}),
        )
        .await
        .expect_bad_field("private_key_file");
    admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "b.example.test", "private_key_file": "k.pem"}),
        )
        .await
        .expect_bad_field("certificate_file");
    let r = admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "b.example.test", "certificate_file": "c.pem", "private_key_file": "k.pem"}),
        )
        .await;
    r.expect_bad_field("certificate_file");
    assert!(
        r.err_detail().contains("tls.cert_dir"),
        "{}",
        r.err_detail()
    );

    // List and show are the account's own.
    let l = admin.get("/v1/domain-names").await;
    let l = l.expect(200);
    assert_eq!(l["count"], 1);
    assert_eq!(l["domain_names"][0]["domain_name"], DOMAIN);
    let l = other.get("/v1/domain-names").await;
    assert_eq!(l.expect(200)["count"], 0);
    let path = format!("/v1/domain-names/{DOMAIN}");
    let maps = format!("{path}/base-path-mappings");
    assert_eq!(
        admin
            .get("/v1/domain-names/API.example.test")
            .await
            .expect(200)["domain_name"]["domain_name"],
        DOMAIN
    );
    other.get(&path).await.expect_error(404, "NotFound");
    other.delete(&path).await.expect_error(404, "NotFound");
    other.get(&maps).await.expect_error(404, "NotFound");
    admin
        .get("/v1/domain-names/nope.example.test")
        .await
        .expect_error(404, "NotFound");

    // Mappings.
    let api = api_on(&admin, "crud-api", "users", "dev", &backend).await;
    let r = admin.post(&maps, &mapping("v1", &api, "dev")).await;
    let m = &r.expect(201)["base_path_mapping"];
    assert_eq!(m["domain_name"], DOMAIN);
    assert_eq!(m["base_path"], "v1");
    assert_eq!(m["api_id"], api.as_str());
    assert_eq!(m["stage_name"], "dev");
    admin
        .post(&maps, &mapping("v1", &api, "dev"))
        .await
        .expect_error(409, "Conflict");
    for bad in ["a/b", "/v1", "..", "sp ace", &"x".repeat(129)] {
        admin
            .post(&maps, &mapping(bad, &api, "dev"))
            .await
            .expect_bad_field("base_path");
    }
    admin
        .post(
            &maps,
            &mapping("v2", "0123456789abcdef0123456789abcdef", "dev"),
        )
        .await
        .expect_error(404, "NotFound");
    admin
        .post(&maps, &mapping("v2", &api, "nope"))
        .await
        .expect_error(404, "NotFound");
    // Another account's API, or another account mapping my domain: 404.
    let their_api = other.create_api("their-api").await;
    admin
        .post(&maps, &mapping("v2", &their_api, "dev"))
        .await
        .expect_error(404, "NotFound");
    other
        .post(&maps, &mapping("v2", &their_api, "dev"))
        .await
        .expect_error(404, "NotFound");
    // A PRIVATE API is not served on a custom domain.
    let (private, _) = admin.create_private_api("priv-api").await;
    admin
        .post(&maps, &mapping("v2", &private, "dev"))
        .await
        .expect_bad_field("api_id");

    // The "" base path: absent in the body, `(none)` in URLs.
    let r = admin
        .post(&maps, &json!({"api_id": api, "stage_name": "dev"}))
        .await;
    assert_eq!(r.expect(201)["base_path_mapping"]["base_path"], "");
    let l = admin.get(&maps).await;
    let l = l.expect(200);
    assert_eq!(l["count"], 2);
    assert_eq!(l["base_path_mappings"][0]["base_path"], "");
    assert_eq!(l["base_path_mappings"][1]["base_path"], "v1");
    assert_eq!(
        admin.get(&format!("{maps}/(none)")).await.expect(200)["base_path_mapping"]["api_id"],
        api.as_str()
    );
    assert_eq!(
        admin.get(&path).await.expect(200)["domain_name"]["base_path_mapping_count"],
        2
    );

    // Nothing mapped disappears silently: 409 for the domain, API, stage.
    admin.delete(&path).await.expect_error(409, "Conflict");
    admin
        .delete(&format!("/v1/apis/{api}"))
        .await
        .expect_error(409, "Conflict");
    admin
        .delete(&format!("/v1/apis/{api}/stages/dev"))
        .await
        .expect_error(409, "Conflict");
    other
        .delete(&format!("{maps}/v1"))
        .await
        .expect_error(404, "NotFound");

    // Delete the mappings, then the domain.
    admin.delete(&format!("{maps}/v1")).await.expect(204);
    admin
        .delete(&format!("{maps}/v1"))
        .await
        .expect_error(404, "NotFound");
    admin.delete(&format!("{maps}/(none)")).await.expect(204);
    assert_eq!(admin.get(&maps).await.expect(200)["count"], 0);
    admin.delete(&path).await.expect(204);
    admin.get(&path).await.expect_error(404, "NotFound");
    // Now the API and its stage may go.
    admin
        .delete(&format!("/v1/apis/{api}/stages/dev"))
        .await
        .expect(204);

    // Survives a restart (stored).
    admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "kept.example.test"}),
        )
        .await
        .expect(201);
    let mut gw = gw;
    gw.restart();
    let admin = gw.admin();
    admin
        .get("/v1/domain-names/kept.example.test")
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_routes_base_paths_to_api_stages() {
    let gw = Gateway::start();
    let admin = gw.admin();
    let a = Backend::start("users");
    let b = Backend::start("orders");
    let users = api_on(&admin, "users-api", "users", "dev", &a).await;
    let orders = api_on(&admin, "orders-api", "orders", "prod", &b).await;
    let port = gw.data_port();

    // Before any domain: an unknown host is 404 ApiNotFound.
    let (s, code, _) = curl(DOMAIN, port, "/v1/users");
    assert_eq!((s, code.as_str()), (404, "ApiNotFound"));

    admin
        .post("/v1/domain-names", &json!({"domain_name": DOMAIN}))
        .await
        .expect(201);
    let maps = format!("/v1/domain-names/{DOMAIN}/base-path-mappings");
    // Known domain, no mapping at all yet.
    let (s, code, _) = curl(DOMAIN, port, "/v1/users");
    assert_eq!((s, code.as_str()), (404, "BasePathNotFound"));

    admin
        .post(&maps, &mapping("v1", &users, "dev"))
        .await
        .expect(201);
    admin
        .post(&maps, &mapping("shop", &orders, "prod"))
        .await
        .expect(201);

    // Two base paths, two APIs: the base path is stripped, no stage segment.
    let (s, _, body) = curl(DOMAIN, port, "/v1/users");
    assert_eq!(s, 200, "{body}");
    assert_eq!(a.last().uri, "/users");
    let (s, _, _) = curl(DOMAIN, port, "/v1/users/u42");
    assert_eq!(s, 200);
    assert_eq!(a.last().uri, "/users/u42");
    let (s, _, _) = curl(DOMAIN, port, "/shop/orders/o7?x=1");
    assert_eq!(s, 200);
    assert_eq!(b.last().uri, "/orders/o7?x=1");
    assert_eq!(b.count(), 1);
    // Trailing slash and host case / trailing dot / port are not significant.
    let (s, _, _) = curl(DOMAIN, port, "/v1/users/");
    assert_eq!(s, 200);
    let (s, _, _) = curl("API.Example.TEST", port, "/v1/users");
    assert_eq!(s, 200);

    // Base paths match whole segments; the stage is not in the path.
    for (path, want) in [
        ("/v1x/users", "BasePathNotFound"),
        ("/v2/users", "BasePathNotFound"),
        ("/users", "BasePathNotFound"),
        ("/v1/dev/users", "ResourceNotFound"),
        ("/v1", "ResourceNotFound"),
        ("/shop/users", "ResourceNotFound"),
    ] {
        let (s, code, _) = curl(DOMAIN, port, path);
        assert_eq!((s, code.as_str()), (404, want), "{path}");
    }
    // Another host is still unknown.
    let (s, code, _) = curl("other.example.test", port, "/v1/users");
    assert_eq!((s, code.as_str()), (404, "ApiNotFound"));

    // The "" mapping takes every path no other base path takes.
    admin
        .post(&maps, &mapping("", &orders, "prod"))
        .await
        .expect(201);
    let (s, _, _) = curl(DOMAIN, port, "/orders/o8");
    assert_eq!(s, 200);
    assert_eq!(b.last().uri, "/orders/o8");
    let (s, code, _) = curl(DOMAIN, port, "/v2/users");
    assert_eq!((s, code.as_str()), (404, "ResourceNotFound"));
    let (s, _, _) = curl(DOMAIN, port, "/v1/users/u43");
    assert_eq!(s, 200);
    assert_eq!(a.last().uri, "/users/u43");

    // Invoke hosts route as before, stage segment first.
    let c = data_client();
    let r = c
        .get(gw.invoke_url(&users, "/dev/users/u44"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.last().uri, "/users/u44");
    assert_eq!(
        status_of(&c, &gw.invoke_url(&users, "/v1/users")).await,
        404
    );

    // The resource policy sees the method SRN of the mapped stage and the
    // path after the base path.
    let acct = DEV_ACCOUNT_ID;
    let api_srn = format!("srn:scp::{acct}:kr-west1::apigateway:api/{users}");
    let method_srn = format!("srn:scp::{acct}:kr-west1::apigateway:method/{users}/dev/GET/users");
    admin
        .put(
            &format!("/v1/apis/{users}/resource-policies"),
            &json!({"Version": "", "Statement": [{
                "Action": ["apigateway:InvokeApigatewayRegion"],
                "Condition": {"SrnLike": {"scp:RequestAttribute/body['method-srn']": [method_srn]}},
                "Effect": "Allow", "Principal": "*", "Resource": [api_srn], "Sid": "OnlyList"}]}),
        )
        .await
        .expect(200);
    let (s, _, _) = curl(DOMAIN, port, "/v1/users");
    assert_eq!(s, 200);
    let (s, code, _) = curl(DOMAIN, port, "/v1/users/u45");
    assert_eq!(s, 403, "{code}");
    assert!(code.starts_with("Policy"), "{code}");

    // A deleted mapping stops routing at once.
    admin.delete(&format!("{maps}/shop")).await.expect(204);
    let (s, code, _) = curl(DOMAIN, port, "/shop/orders");
    assert_eq!(
        (s, code.as_str()),
        (404, "ResourceNotFound"),
        "now the \"\" mapping's"
    );
    admin.delete(&format!("{maps}/(none)")).await.expect(204);
    let (s, code, _) = curl(DOMAIN, port, "/shop/orders");
    assert_eq!((s, code.as_str()), (404, "BasePathNotFound"));

    // Mappings are kept across a restart.
    let mut gw = gw;
    gw.restart();
    let (s, _, _) = curl(DOMAIN, gw.data_port(), "/v1/users");
    assert_eq!(s, 200);
}

/// `openssl` writes a self-signed EC certificate and its key into `dir`.
fn self_signed(dir: &std::path::Path, stem: &str, cn: &str) {
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{stem}.key")))
        .arg("-out")
        .arg(dir.join(format!("{stem}.crt")))
        .output()
        .expect("run openssl");
    assert!(
        st.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_read_only_under_cert_dir() {
    let top = tempfile::tempdir().unwrap();
    let certs = top.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    self_signed(&certs, "api", DOMAIN);
    self_signed(&certs, "other", "other.example.test");
    self_signed(top.path(), "outside", DOMAIN);
    std::os::unix::fs::symlink(top.path().join("outside.crt"), certs.join("link.crt")).unwrap();
    std::os::unix::fs::symlink(top.path().join("outside.key"), certs.join("link.key")).unwrap();
    std::fs::create_dir(certs.join("sub")).unwrap();
    let gw = Gateway::start_with(&[("tls_cert_dir", &format!("\"{}\"", certs.display()))]);
    let admin = gw.admin();
    let top_path = top.path().display().to_string();
    let key_pem = std::fs::read_to_string(certs.join("api.key")).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_string();

    let create = |cert: String, key: String| {
        let admin = admin.clone();
        async move {
            admin
                .post(
                    "/v1/domain-names",
                    &json!({"domain_name": DOMAIN, "certificate_file": cert, "private_key_file": key}),
                )
                .await
        }
    };
    let outside_abs = top.path().join("outside.crt").display().to_string();
    let cases: Vec<(String, String, &str)> = vec![
        (
            "../outside.crt".into(),
            "api.key".into(),
            "certificate_file",
        ),
        (
            "api.crt".into(),
            "../outside.key".into(),
            "private_key_file",
        ),
        (outside_abs, "api.key".into(), "certificate_file"),
        (
            "sub/../../outside.crt".into(),
            "api.key".into(),
            "certificate_file",
        ),
        ("link.crt".into(), "api.key".into(), "certificate_file"),
        ("api.crt".into(), "link.key".into(), "private_key_file"),
        ("missing.crt".into(), "api.key".into(), "certificate_file"),
        ("sub".into(), "api.key".into(), "certificate_file"),
        ("".into(), "api.key".into(), "certificate_file"),
        // The wrong kind of PEM in each field.
        ("api.key".into(), "api.key".into(), "certificate_file"),
        ("api.crt".into(), "api.crt".into(), "private_key_file"),
        // A key that is not the certificate's.
        ("api.crt".into(), "other.key".into(), "private_key_file"),
    ];
    for (cert, key, field) in cases {
        let r = create(cert.clone(), key.clone()).await;
        r.expect_bad_field(field);
        let d = r.err_detail();
        assert!(!d.contains(&top_path), "detail names a path: {d}");
        assert!(
            !d.contains("BEGIN") && !d.contains(&key_line),
            "detail quotes a file: {d}"
        );
        eprintln!("{cert} / {key}: {d}");
    }
    // Nothing was created by the refusals.
    assert_eq!(admin.get("/v1/domain-names").await.expect(200)["count"], 0);

    // A matching pair under cert_dir.
    let r = create("api.crt".into(), "api.key".into()).await;
    let d = &r.expect(201)["domain_name"];
    assert_eq!(d["certificate_file"], "api.crt");
    assert_eq!(d["private_key_file"], "api.key");
    assert!(!r.text().contains("BEGIN"), "{}", r.text());
    // A domain without files is fine too.
    admin
        .post(
            "/v1/domain-names",
            &json!({"domain_name": "plain.example.test"}),
        )
        .await
        .expect(201);
}
