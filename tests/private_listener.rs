//! The private listener (issue [7], item 3), against the real binary:
//! account A's PRIVATE API is served on `private_listen` only to a
//! connection whose PROXY v2 header names (TLV 0xEA, subtype 0x01) an
//! Active PrivateLink endpoint connected to it — here account B's — and
//! JWT still applies; on the public listener it stays 403 `PrivateApi`.
//! A status change applies from the next request.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free local port for the private listener (the gateway prints only
/// the data and admin addresses it picked).
/// The private listener's address, from the gateway's listening line
/// (`private=ADDR`, printed when the listener is on).
fn private_addr(gw: &Gateway) -> SocketAddr {
    gw.logs()
        .split_whitespace()
        .find_map(|t| t.strip_prefix("private=")?.parse().ok())
        .unwrap_or_else(|| panic!("no private= in the listening line:\n{}", gw.logs()))
}

/// A PROXY v2 header (PROXY, TCP over IPv4) from 10.1.2.3:40000 to
/// 10.0.0.1:443, with the PrivateLink TLV when `tlv` is given (its
/// subtype byte then the endpoint id).
fn proxy_v2(tlv: Option<(u8, &str)>) -> Vec<u8> {
    let mut rest = Vec::new();
    rest.extend_from_slice(&[10, 1, 2, 3, 10, 0, 0, 1]);
    rest.extend_from_slice(&40000u16.to_be_bytes());
    rest.extend_from_slice(&443u16.to_be_bytes());
    if let Some((subtype, id)) = tlv {
        rest.push(0xEA);
        rest.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
        rest.push(subtype);
        rest.extend_from_slice(id.as_bytes());
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(0x11);
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&rest);
    h
}

/// One GET over a fresh connection to `addr`, after `header`:
/// (status, x-apigw-error).
async fn call(
    addr: SocketAddr,
    header: &[u8],
    host: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut req = header.to_vec();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    req.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    let (resp, raw) = raw_exchange(addr, &req, Duration::from_secs(10)).await;
    let resp = resp.unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&raw)));
    (
        resp.status,
        resp.header("x-apigw-error").unwrap_or_default(),
    )
}

/// Gateway with the private listener on, account A (the dev account) and
/// account B, a backend, and A's PRIVATE API (GET /ping on stage dev)
/// with a token for dev.
struct PrivateSetup {
    gw: Gateway,
    private: SocketAddr,
    a: Admin,
    b: Admin,
    backend: Backend,
    api: String,
    /// The API's PrivateLink service id.
    sid: String,
    token: String,
}

async fn private_setup() -> PrivateSetup {
    let gw = Gateway::start_with(&[("private_listen", "\"127.0.0.1:0\"")]);
    let private = private_addr(&gw);
    let a = gw.admin();
    let b = a.second_account();
    let backend = Backend::start("private");

    // A: a PRIVATE API, GET /ping on stage dev, with a token for dev.
    let (api, sid, token) = a
        .private_api_with_token("ping", &backend.url("/ping"))
        .await;
    PrivateSetup {
        gw,
        private,
        a,
        b,
        backend,
        api,
        sid,
        token,
    }
}

/// B's endpoint `name` for the service `sid` (Requesting).
async fn create_endpoint(b: &Admin, name: &str, sid: &str) -> String {
    b.post(
        "/v1/privatelink-endpoints",
        &json!({"name": name, "privatelink_service_id": sid}),
    )
    .await
    .expect(200)["privatelink_endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A acts on endpoint `ep` for `api`: `what` is `approval` or
/// `connection`, `t` the action (APPROVE, DISCONNECT, RECONNECT, ...).
async fn act_on(a: &Admin, api: &str, ep: &str, what: &str, t: &str) {
    a.put(
        &format!("/v1/privatelink-endpoints/{ep}/{what}"),
        &json!({"api_id": api, "type": t}),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_api_is_served_to_its_active_endpoints_on_the_private_listener() {
    let PrivateSetup {
        gw,
        private,
        a,
        b,
        backend,
        api,
        sid,
        token,
    } = private_setup().await;

    // A REGION API of A, to show the private listener refuses it.
    let region = simple_api(&a, "region-api", "ping", &backend.url("/ping")).await;

    // B: an endpoint for A's service, approved by A; another one left
    // Requesting.
    let ep = create_endpoint(&b, "ep1", &sid).await;
    let pending = create_endpoint(&b, "ep2", &sid).await;

    let host = gw.host(&api);
    let through = proxy_v2(Some((0x01, &ep)));

    // Requesting: not yet.
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token)).await,
        (403, "PrivateEndpointNotConnected".into())
    );
    act_on(&a, &api, &ep, "approval", "APPROVE").await;

    // Active: served with the JWT, 401 without.
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(backend.count(), 1);
    let (s, _) = call(private, &through, &host, "/dev/ping", None).await;
    assert_eq!(s, 401);

    // Another endpoint, no TLV, another subtype, an unknown id: 403.
    for header in [
        proxy_v2(Some((0x01, &pending))),
        proxy_v2(None),
        proxy_v2(Some((0x02, &ep))),
        proxy_v2(Some((0x01, "vpce-0000000000000000"))),
    ] {
        assert_eq!(
            call(private, &header, &host, "/dev/ping", Some(&token)).await,
            (403, "PrivateEndpointNotConnected".into())
        );
    }
    // No PROXY header at all: the private listener does not answer.
    let plain = format!("GET /dev/ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (resp, _) = raw_exchange(private, plain.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.is_none(), "no answer without a PROXY header");

    // A REGION API is not served on the private listener.
    assert_eq!(
        call(
            private,
            &through,
            &gw.host(&region.api_id),
            "/dev/ping",
            None
        )
        .await,
        (403, "PrivateEndpointNotConnected".into())
    );
    // ... and is on the public one.
    assert_eq!(
        status_of(&data_client(), &gw.invoke_url(&region.api_id, "/dev/ping")).await,
        200
    );

    // The public listener: still PrivateApi, even with the token.
    assert_eq!(
        call(gw.data_addr, b"", &host, "/dev/ping", Some(&token)).await,
        (403, "PrivateApi".into())
    );

    // DISCONNECT: the next request is refused; RECONNECT: served again.
    act_on(&a, &api, &ep, "connection", "DISCONNECT").await;
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token)).await,
        (403, "PrivateEndpointNotConnected".into())
    );
    act_on(&a, &api, &ep, "connection", "RECONNECT").await;
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(backend.count(), 3);

    // Deleting the endpoint closes it too.
    b.delete(&format!("/v1/privatelink-endpoints/{ep}"))
        .await
        .expect(204);
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token)).await,
        (403, "PrivateEndpointNotConnected".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_listener_is_off_by_default() {
    let gw = Gateway::start();
    assert!(
        !gw.logs().contains("private="),
        "no private listener: {}",
        gw.logs()
    );
}

/// One request of the load test: when it was sent and answered (relative
/// to the test's start), and its answer.
struct Sample {
    sent: Instant,
    done: Instant,
    answer: (u16, String),
}

/// Issue [7]: a DISCONNECT applies from the next request even under
/// continuous load. Four clients send back to back over the private
/// listener (each request on its own connection with B's endpoint TLV);
/// every request sent after the DISCONNECT's 200 came back and answered
/// before the RECONNECT was sent is 403, every request sent after the
/// RECONNECT's 200 is 200, and nothing else (no other status, no dropped
/// connection) happens at any time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_applies_from_the_next_request_under_load() {
    let PrivateSetup {
        gw,
        private,
        a,
        b,
        api,
        sid,
        token,
        backend: _backend, // kept alive: `..` would drop it here
        ..
    } = private_setup().await;
    let ep = create_endpoint(&b, "ep1", &sid).await;
    act_on(&a, &api, &ep, "approval", "APPROVE").await;
    let host = gw.host(&api);
    let through = proxy_v2(Some((0x01, &ep)));
    assert_eq!(
        call(private, &through, &host, "/dev/ping", Some(&token))
            .await
            .0,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, through, host, token) =
                (stop.clone(), through.clone(), host.clone(), token.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    // `call` panics on a refused or unanswered connection,
                    // which fails the test through the join below.
                    let answer = call(private, &through, &host, "/dev/ping", Some(&token)).await;
                    samples.push(Sample {
                        sent,
                        done: Instant::now(),
                        answer,
                    });
                }
                samples
            })
        })
        .collect();

    // Each request is its own loopback connection (about 4,000 a second
    // here): short phases keep the sockets left in TIME_WAIT few.
    let phase = Duration::from_millis(250);
    tokio::time::sleep(phase).await;
    act_on(&a, &api, &ep, "connection", "DISCONNECT").await;
    let disconnected = Instant::now();
    tokio::time::sleep(phase).await;
    let reconnect_sent = Instant::now();
    act_on(&a, &api, &ep, "connection", "RECONNECT").await;
    let reconnected = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.expect("a client failed (connection error?)"));
    }
    let ok = (200, String::new());
    let refused = (403, "PrivateEndpointNotConnected".to_string());
    let (mut ok_before, mut refused_after, mut ok_after_reconnect) = (0, 0, 0);
    for s in &samples {
        let at = |t: Instant| {
            format!(
                "sent {:?} after the DISCONNECT's 200, answered {:?} after it: {:?}",
                s.sent.saturating_duration_since(t),
                s.done.saturating_duration_since(t),
                s.answer
            )
        };
        assert!(
            s.answer == ok || s.answer == refused,
            "neither 200 nor 403 PrivateEndpointNotConnected: {}",
            at(disconnected)
        );
        if s.sent >= reconnected {
            assert_eq!(
                s.answer,
                ok,
                "after the RECONNECT's 200: {}",
                at(reconnected)
            );
            ok_after_reconnect += 1;
        } else if s.sent >= disconnected && s.done <= reconnect_sent {
            assert_eq!(
                s.answer,
                refused,
                "after the DISCONNECT's 200: {}",
                at(disconnected)
            );
            refused_after += 1;
        } else if s.sent < disconnected && s.answer == ok {
            ok_before += 1;
        }
    }
    eprintln!(
        "load: {} requests; 200 before DISCONNECT: {ok_before}; 403 after it: {refused_after}; \
         200 after RECONNECT: {ok_after_reconnect}",
        samples.len()
    );
    assert!(ok_before > 0, "no 200 before the DISCONNECT");
    assert!(refused_after > 0, "no 403 after the DISCONNECT");
    assert!(ok_after_reconnect > 0, "no 200 after the RECONNECT");
}
