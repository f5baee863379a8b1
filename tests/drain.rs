//! Graceful drain on SIGTERM (issue [10] item 5): a slow request in flight
//! completes with 200 (and `Connection: close`), new connections are
//! refused, idle keep-alive connections are closed (HTTP/1: EOF; HTTP/2:
//! GOAWAY), quota counters are flushed, and the process exits 0.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// GET /dev/data needs an API key of a plan of `limit` per hour.
async fn keyed(admin: &Admin, api: &str, root: &str, backend: &Backend, limit: u64) -> String {
    let rid = admin.create_resource(api, root, "data").await;
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &json!({"method_type": "GET", "integration_type": "HTTP",
                    "endpoint_url": backend.url("/data"), "api_key_required": true}),
        )
        .await
        .expect(200);
    admin.deploy(api, "existing", Some("dev")).await;
    let plan = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans"),
            &json!({"name": "gold", "description": "d", "limit": limit, "rate": "hour"}),
        )
        .await;
    let plan_id = plan.expect(200)["usage_plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let k = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans/{plan_id}/api-keys"),
            &json!({"name": "client-one", "description": "first"}),
        )
        .await;
    let kv = k.expect(200)["api_key"].clone();
    admin
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &json!({"cors_enabled": false, "jwt_enabled": false, "usage_plan_id": plan_id,
                    "connected_api_keys": [kv["id"]]}),
        )
        .await
        .expect(200);
    kv["key"].as_str().unwrap().to_string()
}

/// One HTTP/1 request on a raw keep-alive connection; returns the head.
fn raw_get(s: &mut std::net::TcpStream, host: &str, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text[..end].to_string();
            }
        }
    }
}

/// Read HTTP/2 frames until the connection ends; the frame types seen.
/// Closes its side on GOAWAY.
fn h2_frames_until_eof(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return types,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            types.push(buf[3]);
            if buf[3] == 7 {
                // GOAWAY: an idle client closes its side, as real ones do
                // (the server reads until then: lingering close).
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            buf.drain(..9 + len);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_closes_idle_flushes_and_exits_0() {
    let mut gw = Gateway::start_with(&[
        ("drain_idle_grace_ms", "300"),
        ("drain_timeout_ms", "10000"),
        // Only the final flush writes the counts.
        ("quota_flush_interval_ms", "600000"),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("drain");
    let s = simple_api(&admin, "drain-api", "slow", &backend.url("/sleep/1500")).await;
    let key = keyed(&admin, &s.api_id, &s.root_id, &backend, 10).await;
    let slow_url = gw.invoke_url(&s.api_id, "/dev/slow");
    let data_url = gw.invoke_url(&s.api_id, "/dev/data");
    let host = gw.host(&s.api_id);
    let c = data_client();
    // Three counted requests just before the signal.
    for _ in 0..3 {
        let r = c
            .get(&data_url)
            .header("x-scp-apikey", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Idle keep-alive connections: HTTP/1 (one answered request) and h2c.
    let mut idle_h1 = std::net::TcpStream::connect(gw.data_addr).unwrap();
    let head = raw_get(&mut idle_h1, &host, "/dev/data");
    assert!(
        head.starts_with("HTTP/1.1 4"),
        "no key: refused, kept alive: {head}"
    );
    let mut idle_h2 = std::net::TcpStream::connect(gw.data_addr).unwrap();
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    idle_h2
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    idle_h1
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();

    // The slow request is in flight when SIGTERM arrives.
    let slow = tokio::spawn({
        let c = data_client();
        async move {
            let t = Instant::now();
            let r = c.get(&slow_url).send().await.unwrap();
            let conn = r
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap_or("").to_string());
            (r.status().as_u16(), conn, t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    sigterm(&gw.child);

    // New connections are refused once the listeners close (the process
    // still runs: the slow request is in flight).
    let data_addr = gw.data_addr;
    let refused = eventually(Duration::from_secs(2), || async move {
        std::net::TcpStream::connect_timeout(&data_addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "new connections refused while draining");
    assert!(gw.child.try_wait().unwrap().is_none(), "still draining");

    // Idle HTTP/1: closed (EOF) after the grace, well before the drain ends.
    let t = Instant::now();
    let mut b = [0u8; 64];
    let n = idle_h1.read(&mut b).unwrap_or(usize::MAX);
    assert_eq!(n, 0, "idle HTTP/1 connection closed");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Idle HTTP/2: GOAWAY (type 7), then closed.
    let frames = tokio::task::spawn_blocking(move || h2_frames_until_eof(&mut idle_h2))
        .await
        .unwrap();
    assert!(frames.contains(&7), "GOAWAY among {frames:?}");

    let (status, conn, took) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes");
    assert_eq!(conn.as_deref(), Some("close"));
    assert!(took >= Duration::from_millis(1500), "{took:?}");

    let st = wait_exit(&mut gw.child, Duration::from_secs(10)).expect("exited within the timeout");
    assert!(st.success(), "exit status {st:?}\n{}", gw.logs());
    assert!(signalled.elapsed() < Duration::from_secs(5));

    // Restarted on the same store: the 3 counted requests are remembered.
    let mut exited = gw.start_successor();
    let _ = exited.wait(); // reaped already by wait_exit; a no-op
    let r = c
        .get(gw.invoke_url(&s.api_id, "/dev/data"))
        .header("x-scp-apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "6", "10 - 3 - 1");
}
