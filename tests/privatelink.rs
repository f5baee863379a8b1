//! PrivateLink endpoints, management side (issue [7], items 2 and 3):
//! account B (the consumer) creates an endpoint for account A's PRIVATE
//! API (the service), A approves, blocks and reconnects it, B cancels and
//! re-requests it; every illegal transition is a 409 that changes nothing.

mod common;

use common::*;
use serde_json::{json, Value};

fn second_account(admin: &Admin) -> Admin {
    admin.second_account()
}

/// A PRIVATE API of the caller: (api id, its privatelink_service_id).
async fn private_api(admin: &Admin, name: &str) -> (String, String) {
    let r = admin
        .post(
            "/v1/apis",
            &json!({"name": name, "endpoint_type": "PRIVATE"}),
        )
        .await;
    let id = r.expect(202)["id"].as_str().unwrap().to_string();
    let shown = admin.get(&format!("/v1/apis/{id}")).await;
    let sid = shown.expect(200)["api"]["privatelink_service_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no privatelink_service_id: {}", shown.text()))
        .to_string();
    assert!(is_id(&sid), "{sid}");
    (id, sid)
}

fn ep_path(id: &str) -> String {
    format!("/v1/privatelink-endpoints/{id}")
}

async fn status_of_ep(admin: &Admin, id: &str) -> String {
    admin.get(&ep_path(id)).await.expect(200)["privatelink_endpoint"]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn connected(admin: &Admin, api: &str) -> Value {
    admin
        .get(&format!("/v1/apis/{api}/connected-endpoints"))
        .await
        .expect(200)
        .clone()
}

async fn act(admin: &Admin, id: &str, what: &str, body: Value) -> Resp {
    admin.put(&format!("{}/{what}", ep_path(id)), &body).await
}

/// A 409 naming the current status, and the status unchanged.
async fn refused(admin_b: &Admin, r: Resp, id: &str, status: &str) {
    r.expect_error(409, "Conflict");
    assert!(r.err_detail().contains(status), "{}", r.text());
    assert_eq!(status_of_ep(admin_b, id).await, status);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_is_requested_approved_blocked_cancelled_and_deleted_across_accounts() {
    let gw = Gateway::start();
    let a = gw.admin();
    let b = second_account(&a);

    // Only PRIVATE APIs are services.
    let (api, sid) = private_api(&a, "svc-api").await;
    let region = a.create_api("region-api").await;
    let shown = a.get(&format!("/v1/apis/{region}")).await;
    assert!(shown.expect(200)["api"]
        .get("privatelink_service_id")
        .is_none());
    let listed = a.get("/v1/apis").await.expect(200).clone();
    let row = listed["apis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == api.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["privatelink_service_id"], sid.as_str());
    // The service id is stable.
    let (_, again) = (
        (),
        a.get(&format!("/v1/apis/{api}")).await.expect(200)["api"]["privatelink_service_id"]
            .clone(),
    );
    assert_eq!(again, sid.as_str());

    // B creates an endpoint for A's service: Requesting.
    let r = b
        .post(
            "/v1/privatelink-endpoints",
            &json!({"name": "myEndpoint1", "description": "to A", "privatelink_service_id": sid}),
        )
        .await;
    let ep = r.expect(200)["privatelink_endpoint"].clone();
    let id = ep["id"].as_str().unwrap().to_string();
    assert!(is_id(&id));
    assert_eq!(ep["name"], "myEndpoint1");
    assert_eq!(ep["description"], "to A");
    assert_eq!(ep["privatelink_service_id"], sid.as_str());
    assert_eq!(ep["status"], "Requesting");
    assert!(is_rfc3339(&ep["created_at"]));
    assert_eq!(
        b.get(&ep_path(&id)).await.expect(200)["privatelink_endpoint"],
        ep
    );

    // B's list; A's list holds none of B's.
    let l = b.get("/v1/privatelink-endpoints").await.expect(200).clone();
    assert_eq!(l["count"], 1);
    assert_eq!(l["privatelink_endpoints"][0]["id"], id.as_str());
    assert_eq!(l["privatelink_endpoints"][0]["status"], "Requesting");
    assert_eq!(
        l["privatelink_endpoints"][0]["privatelink_service_id"],
        sid.as_str()
    );
    assert_eq!(
        b.get("/v1/privatelink-endpoints?name=nomatch")
            .await
            .expect(200)["count"],
        0
    );
    assert_eq!(
        a.get("/v1/privatelink-endpoints").await.expect(200)["count"],
        0
    );

    // A sees it as a connection request on its API (not on another API).
    let c = connected(&a, &api).await;
    assert_eq!(c["count"], 1);
    assert_eq!(c["connected_endpoints"][0]["id"], id.as_str());
    assert_eq!(c["connected_endpoints"][0]["status"], "Requesting");
    assert!(is_rfc3339(&c["connected_endpoints"][0]["created_at"]));
    assert_eq!(connected(&a, &region).await["count"], 0);
    // B does not own the API: 404.
    b.get(&format!("/v1/apis/{api}/connected-endpoints"))
        .await
        .expect_error(404, "NotFound");

    // The endpoint is B's: A cannot show, set, request or delete it.
    a.get(&ep_path(&id)).await.expect_error(404, "NotFound");
    a.put(&ep_path(&id), &json!({"description": "x"}))
        .await
        .expect_error(404, "NotFound");
    act(&a, &id, "request", json!({"type": "CANCEL"}))
        .await
        .expect_error(404, "NotFound");
    a.delete(&ep_path(&id)).await.expect_error(404, "NotFound");
    // The API is A's: B cannot approve or connect its own endpoint, and A
    // names the API the endpoint targets, not another of its APIs.
    act(
        &b,
        &id,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await
    .expect_error(404, "NotFound");
    act(
        &b,
        &id,
        "connection",
        json!({"api_id": api, "type": "DISCONNECT"}),
    )
    .await
    .expect_error(404, "NotFound");
    act(
        &a,
        &id,
        "approval",
        json!({"api_id": region, "type": "APPROVE"}),
    )
    .await
    .expect_error(404, "NotFound");
    assert_eq!(status_of_ep(&b, &id).await, "Requesting");

    // Requesting: no connection action, no re-request.
    for t in ["DISCONNECT", "RECONNECT"] {
        let r = act(&a, &id, "connection", json!({"api_id": api, "type": t})).await;
        refused(&b, r, &id, "Requesting").await;
    }
    let r = act(&b, &id, "request", json!({"type": "RE_REQUEST"})).await;
    refused(&b, r, &id, "Requesting").await;

    // A approves: Active (summary answer).
    let r = act(
        &a,
        &id,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await;
    let s = r.expect(200)["privatelink_endpoint"].clone();
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["status"], "Active");
    assert!(is_rfc3339(&s["created_at"]));
    assert_eq!(status_of_ep(&b, &id).await, "Active");
    assert_eq!(
        connected(&a, &api).await["connected_endpoints"][0]["status"],
        "Active"
    );

    // Active: no approval, no cancel, no re-request, no reconnect.
    for t in ["APPROVE", "REJECT"] {
        let r = act(&a, &id, "approval", json!({"api_id": api, "type": t})).await;
        refused(&b, r, &id, "Active").await;
    }
    for t in ["CANCEL", "RE_REQUEST"] {
        let r = act(&b, &id, "request", json!({"type": t})).await;
        refused(&b, r, &id, "Active").await;
    }
    let r = act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "RECONNECT"}),
    )
    .await;
    refused(&b, r, &id, "Active").await;

    // Block, then reconnect.
    let r = act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "DISCONNECT"}),
    )
    .await;
    assert_eq!(
        r.expect(200)["privatelink_endpoint"]["status"],
        "Disconnected"
    );
    assert_eq!(status_of_ep(&b, &id).await, "Disconnected");
    let r = act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "DISCONNECT"}),
    )
    .await;
    refused(&b, r, &id, "Disconnected").await;
    let r = act(&b, &id, "request", json!({"type": "CANCEL"})).await;
    refused(&b, r, &id, "Disconnected").await;
    let r = act(
        &a,
        &id,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await;
    refused(&b, r, &id, "Disconnected").await;
    let r = act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "RECONNECT"}),
    )
    .await;
    assert_eq!(r.expect(200)["privatelink_endpoint"]["status"], "Active");

    // A second endpoint: B cancels and re-requests, A rejects, B asks again.
    let r = b
        .post(
            "/v1/privatelink-endpoints",
            &json!({"name": "second", "privatelink_service_id": sid}),
        )
        .await;
    let id2 = r.expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = act(&b, &id2, "request", json!({"type": "CANCEL"})).await;
    let e = r.expect(200)["privatelink_endpoint"].clone();
    assert_eq!(e["status"], "Canceled");
    assert_eq!(e["name"], "second");
    let r = act(&b, &id2, "request", json!({"type": "CANCEL"})).await;
    refused(&b, r, &id2, "Canceled").await;
    let r = act(
        &a,
        &id2,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await;
    refused(&b, r, &id2, "Canceled").await;
    let r = act(&b, &id2, "request", json!({"type": "RE_REQUEST"})).await;
    assert_eq!(
        r.expect(200)["privatelink_endpoint"]["status"],
        "Requesting"
    );
    let r = act(
        &a,
        &id2,
        "approval",
        json!({"api_id": api, "type": "REJECT"}),
    )
    .await;
    assert_eq!(r.expect(200)["privatelink_endpoint"]["status"], "Rejected");
    // The guide: no approval/rejection of a Rejected one.
    for t in ["APPROVE", "REJECT"] {
        let r = act(&a, &id2, "approval", json!({"api_id": api, "type": t})).await;
        refused(&b, r, &id2, "Rejected").await;
    }
    let r = act(
        &a,
        &id2,
        "connection",
        json!({"api_id": api, "type": "RECONNECT"}),
    )
    .await;
    refused(&b, r, &id2, "Rejected").await;
    let r = act(&b, &id2, "request", json!({"type": "CANCEL"})).await;
    refused(&b, r, &id2, "Rejected").await;
    let r = act(&b, &id2, "request", json!({"type": "RE_REQUEST"})).await;
    assert_eq!(
        r.expect(200)["privatelink_endpoint"]["status"],
        "Requesting"
    );
    let c = connected(&a, &api).await;
    assert_eq!(c["count"], 2);
    assert_eq!(
        a.get(&format!("/v1/apis/{api}/connected-endpoints?size=1&page=1"))
            .await
            .expect(200)["connected_endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Set description (only B), cleared by an absent one.
    let r = b
        .put(&ep_path(&id), &json!({"description": "new words"}))
        .await;
    let e = r.expect(200)["privatelink_endpoint"].clone();
    assert_eq!(e["description"], "new words");
    assert_eq!(e["status"], "Active");
    let r = b.put(&ep_path(&id), &json!({})).await;
    assert_eq!(r.expect(200)["privatelink_endpoint"]["description"], "");

    // Delete: 409 while a PRIVATELINK method names it.
    let own = b.create_api("consumer-api").await;
    let root = b.root_id(&own).await;
    b.post(
        &format!("/v1/apis/{own}/resources/{root}/methods"),
        &json!({"method_type": "GET", "integration_type": "PRIVATELINK", "privatelink_endpoint_id": id, "endpoint_url": "http://a.internal/ping"}),
    )
    .await
    .expect(200);
    b.delete(&ep_path(&id)).await.expect_error(409, "Conflict");
    assert_eq!(status_of_ep(&b, &id).await, "Active");
    b.delete(&format!("/v1/apis/{own}/resources/{root}/methods/GET"))
        .await
        .expect(204);
    b.delete(&ep_path(&id)).await.expect(204);
    b.get(&ep_path(&id)).await.expect_error(404, "NotFound");
    act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "DISCONNECT"}),
    )
    .await
    .expect_error(404, "NotFound");
    let c = connected(&a, &api).await;
    assert_eq!(c["count"], 1);
    assert_eq!(c["connected_endpoints"][0]["id"], id2.as_str());
    assert_eq!(
        b.get("/v1/privatelink-endpoints").await.expect(200)["count"],
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_requests_are_validated_naming_the_field() {
    let gw = Gateway::start();
    let a = gw.admin();
    let b = second_account(&a);
    let (api, sid) = private_api(&a, "svc-api").await;
    let region = a.create_api("region-api").await;

    let create = |body: Value| {
        let b = b.clone();
        async move { b.post("/v1/privatelink-endpoints", &body).await }
    };
    for name in ["ab", "a-b-c", "abcdefghijklmnopqrstu", "with space", ""] {
        create(json!({"name": name, "privatelink_service_id": sid}))
            .await
            .expect_bad_field("name");
    }
    create(json!({"privatelink_service_id": sid}))
        .await
        .expect_bad_field("name");
    create(json!({"name": "okname"}))
        .await
        .expect_bad_field("privatelink_service_id");
    // Not a service: unknown, or the id of a REGION API / of an API.
    for bad in [
        "0123456789abcdef0123456789abcdef",
        region.as_str(),
        api.as_str(),
    ] {
        create(json!({"name": "okname", "privatelink_service_id": bad}))
            .await
            .expect_bad_field("privatelink_service_id");
    }
    create(
        json!({"name": "okname", "privatelink_service_id": sid, "description": "x".repeat(101)}),
    )
    .await
    .expect_bad_field("description");
    create(json!({"name": "okname", "privatelink_service_id": 5}))
        .await
        .expect_bad_field("privatelink_service_id");
    assert_eq!(
        b.get("/v1/privatelink-endpoints").await.expect(200)["count"],
        0
    );

    let r = create(json!({"name": "Okname9", "privatelink_service_id": sid})).await;
    let id = r.expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Same name in the same account: 409.
    create(json!({"name": "Okname9", "privatelink_service_id": sid}))
        .await
        .expect_error(409, "Conflict");

    act(&b, &id, "request", json!({"type": "STOP"}))
        .await
        .expect_bad_field("type");
    act(&b, &id, "request", json!({}))
        .await
        .expect_bad_field("type");
    act(
        &a,
        &id,
        "approval",
        json!({"api_id": api, "type": "DISCONNECT"}),
    )
    .await
    .expect_bad_field("type");
    act(&a, &id, "approval", json!({"type": "APPROVE"}))
        .await
        .expect_bad_field("api_id");
    act(
        &a,
        &id,
        "connection",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await
    .expect_bad_field("type");
    act(
        &a,
        &id,
        "connection",
        json!({"api_id": "", "type": "DISCONNECT"}),
    )
    .await
    .expect_bad_field("api_id");
    b.put(&ep_path(&id), &json!({"description": "y".repeat(101)}))
        .await
        .expect_bad_field("description");
    b.get("/v1/privatelink-endpoints?size=0")
        .await
        .expect_bad_field("size");
    b.get("/v1/privatelink-endpoints?sort=status:asc")
        .await
        .expect_bad_field("sort");
    a.get(&format!("/v1/apis/{api}/connected-endpoints?page=x"))
        .await
        .expect_bad_field("page");
    assert_eq!(status_of_ep(&b, &id).await, "Requesting");

    // Unsigned: refused like every operation.
    let anon = a.with_opts(SignOpts {
        unsigned: true,
        ..Default::default()
    });
    anon.get("/v1/privatelink-endpoints")
        .await
        .expect_error(401, "Unauthorized");
    b.get(&ep_path("0123456789abcdef0123456789abcdef"))
        .await
        .expect_error(404, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_survive_a_restart_and_end_in_error_when_the_service_api_is_deleted() {
    let mut gw = Gateway::start();
    let a = gw.admin();
    let b = second_account(&a);
    let (api, sid) = private_api(&a, "svc-api").await;
    let r = b
        .post(
            "/v1/privatelink-endpoints",
            &json!({"name": "durable", "privatelink_service_id": sid}),
        )
        .await;
    let id = r.expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    act(
        &a,
        &id,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await
    .expect(200);

    gw.restart();
    let a = gw.admin();
    let b = second_account(&a);
    assert_eq!(status_of_ep(&b, &id).await, "Active");
    assert_eq!(connected(&a, &api).await["count"], 1);

    a.delete(&format!("/v1/apis/{api}")).await.expect(204);
    assert_eq!(status_of_ep(&b, &id).await, "Error");
    // Error: only Delete.
    for t in ["CANCEL", "RE_REQUEST"] {
        let r = act(&b, &id, "request", json!({"type": t})).await;
        refused(&b, r, &id, "Error").await;
    }
    act(
        &a,
        &id,
        "approval",
        json!({"api_id": api, "type": "APPROVE"}),
    )
    .await
    .expect_error(404, "NotFound");
    // The service is gone: a new endpoint for it is refused.
    b.post(
        "/v1/privatelink-endpoints",
        &json!({"name": "late", "privatelink_service_id": sid}),
    )
    .await
    .expect_bad_field("privatelink_service_id");
    b.delete(&ep_path(&id)).await.expect(204);
    assert_eq!(
        b.get("/v1/privatelink-endpoints").await.expect(200)["count"],
        0
    );
}
