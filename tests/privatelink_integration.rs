//! The PRIVATELINK integration (issue [7], item 4), against the real
//! binary: account B's REGION API has a PRIVATELINK method whose endpoint
//! (B's, approved by A) targets account A's PRIVATE API. Through B's
//! public invoke URL the call reaches A's PRIVATE API over the private
//! listener (PROXY v2 header with the endpoint TLV), with no public path
//! to A; A disconnecting the endpoint makes B's call 503
//! `PrivateLinkUnavailable` from the next request, reconnecting serves
//! it again.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// One GET to the public listener for `host`: (status, x-apigw-error).
async fn call(gw: &Gateway, host: &str, path: &str, bearer: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    );
    let (resp, raw) = raw_exchange(gw.data_addr, req.as_bytes(), Duration::from_secs(10)).await;
    let resp = resp.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
    (
        resp.status,
        resp.header("x-apigw-error").unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privatelink_method_reaches_another_accounts_private_api() {
    let gw = Gateway::start_with(&[("private_listen", "\"127.0.0.1:0\"")]);
    let a = gw.admin();
    let b = a.second_account();
    let backend = Backend::start("private");

    // A: a PRIVATE API, GET /data on stage dev, with a token for dev.
    let (api_a, sid, token) = a
        .private_api_with_token("data", &backend.url("/data"))
        .await;

    // B: an endpoint to A's service, approved by A.
    let ep = b
        .post(
            "/v1/privatelink-endpoints",
            &json!({"name": "toa", "privatelink_service_id": sid}),
        )
        .await
        .expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let act = |what: &'static str, t: &'static str| {
        let a = a.clone();
        let api = api_a.clone();
        let ep = ep.clone();
        async move {
            a.put(
                &format!("/v1/privatelink-endpoints/{ep}/{what}"),
                &json!({"api_id": api, "type": t}),
            )
            .await
            .expect(200);
        }
    };

    // B's REGION API: GET /fetch integrates A's PRIVATE API through the
    // endpoint; the Host is A's invoke host.
    let api_b = b.create_api("consumer").await;
    let root_b = b.root_id(&api_b).await;
    let rid_b = b.create_resource(&api_b, &root_b, "fetch").await;
    let methods = format!("/v1/apis/{api_b}/resources/{rid_b}/methods");
    // Another account's endpoint, or none: 400 naming the field; the URL
    // is required.
    let r = a.create_api("other").await;
    let root_o = a.root_id(&r).await;
    let r = a
        .post(
            &format!("/v1/apis/{r}/resources/{root_o}/methods"),
            &json!({"method_type": "GET", "integration_type": "PRIVATELINK",
                    "privatelink_endpoint_id": ep, "endpoint_url": "http://a.internal/x"}),
        )
        .await;
    r.expect_error(400, "BadRequest");
    assert!(r.text().contains("privatelink_endpoint_id"), "{}", r.text());
    let r = b
        .post(
            &methods,
            &json!({"method_type": "GET", "integration_type": "PRIVATELINK",
                    "privatelink_endpoint_id": ep}),
        )
        .await;
    r.expect_error(400, "BadRequest");
    assert!(r.text().contains("endpoint_url"), "{}", r.text());
    let url = format!("http://{api_a}.{INVOKE_DOMAIN}/dev/data");
    b.post(
        &methods,
        &json!({"method_type": "GET", "integration_type": "PRIVATELINK",
                "privatelink_endpoint_id": ep, "endpoint_url": url}),
    )
    .await
    .expect(200);
    b.deploy(&api_b, "new", Some("dev")).await;
    b.create_access_control(&api_b, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let host_b = gw.host(&api_b);

    // Requesting: not yet.
    assert_eq!(
        call(&gw, &host_b, "/dev/fetch", &token).await,
        (503, "PrivateLinkUnavailable".into())
    );
    assert_eq!(backend.count(), 0);

    // Approved: reaches A's backend, with the token forwarded.
    act("approval", "APPROVE").await;
    assert_eq!(call(&gw, &host_b, "/dev/fetch", &token).await.0, 200);
    assert_eq!(backend.count(), 1);
    assert_eq!(backend.last().uri, "/data");

    // A's PRIVATE API stays closed on the public listener.
    assert_eq!(
        call(&gw, &gw.host(&api_a), "/dev/data", &token).await,
        (403, "PrivateApi".into())
    );

    // DISCONNECT: 503 from the next request; RECONNECT: served again.
    act("connection", "DISCONNECT").await;
    assert_eq!(
        call(&gw, &host_b, "/dev/fetch", &token).await,
        (503, "PrivateLinkUnavailable".into())
    );
    assert_eq!(backend.count(), 1);
    act("connection", "RECONNECT").await;
    assert_eq!(call(&gw, &host_b, "/dev/fetch", &token).await.0, 200);
    assert_eq!(backend.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privatelink_method_is_503_without_the_private_listener() {
    let gw = Gateway::start();
    let a = gw.admin();
    let b = a.second_account();
    let (api_a, sid) = a.create_private_api("priv-api").await;
    let ep = b
        .post(
            "/v1/privatelink-endpoints",
            &json!({"name": "toa", "privatelink_service_id": sid}),
        )
        .await
        .expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.put(
        &format!("/v1/privatelink-endpoints/{ep}/approval"),
        &json!({"api_id": api_a, "type": "APPROVE"}),
    )
    .await
    .expect(200);
    let api_b = b.create_api("consumer").await;
    let root_b = b.root_id(&api_b).await;
    let url = format!("http://{api_a}.{INVOKE_DOMAIN}/dev/data");
    b.post(
        &format!("/v1/apis/{api_b}/resources/{root_b}/methods"),
        &json!({"method_type": "GET", "integration_type": "PRIVATELINK",
                "privatelink_endpoint_id": ep, "endpoint_url": url}),
    )
    .await
    .expect(200);
    b.deploy(&api_b, "new", Some("dev")).await;
    b.create_access_control(&api_b, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    assert_eq!(
        call(&gw, &gw.host(&api_b), "/dev/", "x").await,
        (503, "PrivateLinkUnavailable".into())
    );
}

/// An external service of `[[privatelink_services]]`: with auto_approve
/// the endpoint is Active at once and the method reaches the service's
/// `target` (Host from `endpoint_url`); without, it waits for the
/// service's account's approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privatelink_method_reaches_an_external_service() {
    let backend = Backend::start("external");
    let services = format!(
        "[{{ id = \"ext-auto\", target = \"{0}\", auto_approve = true, account_id = \"devaccount0000000000000000000001\" }}, \
          {{ id = \"ext-manual\", target = \"{0}\", account_id = \"devaccount0000000000000000000001\" }}]",
        backend.addr
    );
    let gw = Gateway::start_with(&[("privatelink_services", &services)]);
    let a = gw.admin();
    let b = a.second_account();
    let create = |sid: &'static str| {
        let b = b.clone();
        async move {
            let r = b
                .post(
                    "/v1/privatelink-endpoints",
                    &json!({"name": sid.replace('-', ""), "privatelink_service_id": sid}),
                )
                .await;
            let e = r.expect(200)["privatelink_endpoint"].clone();
            (
                e["id"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        }
    };
    let (auto, s) = create("ext-auto").await;
    assert_eq!(s, "Active");
    let (manual, s) = create("ext-manual").await;
    assert_eq!(s, "Requesting");

    let api_b = b.create_api("consumer").await;
    let root_b = b.root_id(&api_b).await;
    for (path, ep) in [("auto", &auto), ("manual", &manual)] {
        let rid = b.create_resource(&api_b, &root_b, path).await;
        b.post(
            &format!("/v1/apis/{api_b}/resources/{rid}/methods"),
            &json!({"method_type": "GET", "integration_type": "PRIVATELINK",
                    "privatelink_endpoint_id": ep, "endpoint_url": "http://svc.internal/v1/{}".replace("{}", path)}),
        )
        .await
        .expect(200);
    }
    b.deploy(&api_b, "new", Some("dev")).await;
    b.create_access_control(&api_b, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let host_b = gw.host(&api_b);

    assert_eq!(call(&gw, &host_b, "/dev/auto", "t").await.0, 200);
    let seen = backend.last();
    assert_eq!(seen.uri, "/v1/auto");
    assert!(
        seen.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("host") && v == "svc.internal"),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        call(&gw, &host_b, "/dev/manual", "t").await,
        (503, "PrivateLinkUnavailable".into())
    );
    // Another account may not approve; the service's account does.
    b.put(
        &format!("/v1/privatelink-endpoints/{manual}/approval"),
        &json!({"api_id": "ext-manual", "type": "APPROVE"}),
    )
    .await
    .expect_error(404, "NotFound");
    a.put(
        &format!("/v1/privatelink-endpoints/{manual}/approval"),
        &json!({"api_id": "ext-manual", "type": "APPROVE"}),
    )
    .await
    .expect(200);
    assert_eq!(call(&gw, &host_b, "/dev/manual", "t").await.0, 200);
    assert_eq!(backend.last().uri, "/v1/manual");
    a.put(
        &format!("/v1/privatelink-endpoints/{manual}/connection"),
        &json!({"api_id": "ext-manual", "type": "DISCONNECT"}),
    )
    .await
    .expect(200);
    assert_eq!(
        call(&gw, &host_b, "/dev/manual", "t").await,
        (503, "PrivateLinkUnavailable".into())
    );
}
