//! Zero-downtime restart (issue [10] item 6): a new process takes the
//! running one's listening sockets over (`drain_handover_socket`), the
//! old one gets SIGTERM and drains; three times, under continuous load
//! from HTTP/1 keep-alive and h2c clients. Not one request may fail. The
//! same over TLS: every per-worker TLS socket is handed over, and new TLS
//! connections (curl) keep being served through the restarts.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

async fn load(client: reqwest::Client, url: String, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    while !stop.load(Ordering::Relaxed) {
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    counts.errors.lock().unwrap().push(format!("body: {e:?}"));
                }
            },
            Ok(r) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                counts
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("status {}", r.status()));
            }
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                counts.errors.lock().unwrap().push(format!("{e:?}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_restarts_under_load_fail_no_request() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("handover.sock");
    let mut gw = Gateway::start_with(&[
        ("drain_handover_socket", &format!("\"{}\"", sock.display())),
        ("drain_timeout_ms", "10000"),
        ("log", "\"info\""),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("restart");
    let s = simple_api(&admin, "restart-api", "okay", &backend.url("/ok")).await;
    let url = gw.invoke_url(&s.api_id, "/dev/okay");
    let (data_addr, admin_addr) = (gw.data_addr, gw.admin_addr);
    assert_eq!(status_of(&data_client(), &url).await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (h1, h2) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(tokio::spawn(load(
            data_client(),
            url.clone(),
            stop.clone(),
            h1.clone(),
        )));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(load(
            h2c_client(),
            url.clone(),
            stop.clone(),
            h2.clone(),
        )));
    }
    let total = || {
        (
            h1.ok.load(Ordering::Relaxed) + h2.ok.load(Ordering::Relaxed),
            h1.failed.load(Ordering::Relaxed) + h2.failed.load(Ordering::Relaxed),
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = total();
    for round in 1..=3 {
        // The new process takes the listeners over; both serve a moment.
        let mut old = tokio::task::block_in_place(|| gw.start_successor());
        assert_eq!(gw.data_addr, data_addr, "same data port");
        assert_eq!(gw.admin_addr, admin_addr, "same admin port");
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigterm(&old);
        let st = tokio::task::spawn_blocking(move || wait_exit(&mut old, Duration::from_secs(15)))
            .await
            .unwrap()
            .expect("the old process exits");
        assert!(st.success(), "old process exit {st:?}");
        // Load on the new process alone for a while.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = total();
        eprintln!(
            "restart {round}: {} requests ok, {} failed since the previous one",
            now.0 - last.0,
            now.1 - last.1
        );
        assert!(
            now.0 > last.0,
            "requests went through around restart {round}"
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok1, f1) = (
        h1.ok.load(Ordering::Relaxed),
        h1.failed.load(Ordering::Relaxed),
    );
    let (ok2, f2) = (
        h2.ok.load(Ordering::Relaxed),
        h2.failed.load(Ordering::Relaxed),
    );
    eprintln!("HTTP/1: {ok1} ok, {f1} failed; h2c: {ok2} ok, {f2} failed");
    let errors: Vec<String> = h1
        .errors
        .lock()
        .unwrap()
        .iter()
        .chain(h2.errors.lock().unwrap().iter())
        .take(10)
        .cloned()
        .collect();
    assert_eq!(f1 + f2, 0, "failed requests: {errors:#?}\n{}", gw.logs());
    assert!(ok1 > 0 && ok2 > 0);
}

/// One keyed GET on a raw HTTP/1 keep-alive connection: the status line
/// and `x-ratelimit-remaining`.
fn keyed_get_on(s: &mut std::net::TcpStream, host: &str, path: &str, key: &str) -> (u16, u64) {
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nx-scp-apikey: {key}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let header = |name: &str| {
            text[..end].lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            let status = text[9..12].parse().unwrap_or(0);
            let remaining = header("x-ratelimit-remaining")
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            return (status, remaining);
        }
    }
}

async fn keyed_get(url: &str, key: &str) -> (u16, u64) {
    // A new client: a new connection, to whichever process accepts it.
    let r = data_client()
        .get(url)
        .header("x-scp-apikey", key)
        .send()
        .await
        .unwrap();
    let remaining = r
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(u64::MAX);
    (r.status().as_u16(), remaining)
}

/// Quota counts over a restart's overlap: the new process loads the
/// stored count while the old one still answers its connections, and
/// both flush to the same SQLite file. Flushes add what each counted
/// (they used to write absolute counts, so the last writer erased the
/// other's calls): the new process, after its next flush, and a third
/// process started on the file afterwards both see every call made
/// through either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counts_add_up_over_a_restarts_overlap() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("handover.sock");
    let mut gw = Gateway::start_with(&[
        ("drain_handover_socket", &format!("\"{}\"", sock.display())),
        ("drain_timeout_ms", "10000"),
        ("quota_flush_interval_ms", "200"),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("quota-overlap");
    let s = simple_api(&admin, "quota-overlap", "open", &backend.url("/open")).await;
    let api = s.api_id.clone();
    let rid = admin.create_resource(&api, &s.root_id, "data").await;
    admin
        .post(
            &format!("/v1/apis/{api}/resources/{rid}/methods"),
            &serde_json::json!({"method_type": "GET", "integration_type": "HTTP",
                    "endpoint_url": backend.url("/data"), "api_key_required": true}),
        )
        .await
        .expect(200);
    admin.deploy(&api, "existing", Some("dev")).await;
    let plan_id = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans"),
            &serde_json::json!({"name": "gold", "description": "d", "limit": 100, "rate": "day"}),
        )
        .await
        .expect(200)["usage_plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kv = admin
        .post(
            &format!("/v1/apis/{api}/usage-plans/{plan_id}/api-keys"),
            &serde_json::json!({"name": "client-one", "description": "first"}),
        )
        .await
        .expect(200)["api_key"]
        .clone();
    let key = kv["key"].as_str().unwrap().to_string();
    admin
        .put(
            &format!("/v1/apis/{api}/stages/dev/config"),
            &serde_json::json!({"cors_enabled": false, "jwt_enabled": false,
                    "usage_plan_id": plan_id, "connected_api_keys": [kv["id"]]}),
        )
        .await
        .expect(200);
    let host = gw.host(&api);
    let url = gw.invoke_url(&api, "/dev/data");

    // Five calls through the old process, on a keep-alive connection
    // that stays with it; flushed (every 200 ms).
    let mut old_conn = std::net::TcpStream::connect(gw.data_addr).unwrap();
    old_conn
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for i in 1..=5 {
        assert_eq!(
            keyed_get_on(&mut old_conn, &host, "/dev/data", &key),
            (200, 100 - i)
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The new process takes the listeners over and loads 5.
    let mut old = tokio::task::block_in_place(|| gw.start_successor());
    // Overlap: four more through the old process, three on new
    // connections (either process may take them).
    for i in 6..=9 {
        assert_eq!(
            keyed_get_on(&mut old_conn, &host, "/dev/data", &key),
            (200, 100 - i)
        );
    }
    for _ in 0..3 {
        assert_eq!(keyed_get(&url, &key).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The old one drains (its last flush) and exits.
    sigterm(&old);
    let st = tokio::task::block_in_place(|| wait_exit(&mut old, Duration::from_secs(15)))
        .expect("the old process exits");
    assert!(st.success(), "old process exit {st:?}");
    // Two through the new process alone; after its next flush it counts
    // all 14, and the 15th call leaves 85.
    for _ in 0..2 {
        assert_eq!(keyed_get(&url, &key).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        keyed_get(&url, &key).await,
        (200, 85),
        "the new process's count after its flush: 5 + 4 + 3 + 2 + 1 calls of 100\n{}",
        gw.logs()
    );
    // The file has them all: a process started on it afterwards counts
    // the 16th.
    sigterm(&gw.child);
    let st = tokio::task::block_in_place(|| wait_exit(&mut gw.child, Duration::from_secs(15)))
        .expect("the new process exits");
    assert!(st.success(), "new process exit {st:?}");
    let mut exited = tokio::task::block_in_place(|| gw.start_successor());
    let _ = exited.wait(); // reaped already by wait_exit; a no-op
    let url = gw.invoke_url(&api, "/dev/data");
    assert_eq!(
        keyed_get(&url, &key).await,
        (200, 84),
        "16 calls of 100 stored"
    );
}

/// The listening sockets (inodes) on 127.0.0.1:`port`, from /proc/net/tcp.
fn listening_inodes(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    let mut out: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].parse().expect("inode"))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The socket inodes among `pid`'s open files.
fn socket_inodes_of(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                out.push(n.parse().expect("inode"));
            }
        }
    }
    out
}

/// One request over a new TLS connection (curl, certificate not checked:
/// the test is about sockets, tls.rs about certificates); `Ok` on 200.
fn curl_tls(proto: &str, host: &str, port: u16) -> Result<(), String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}", proto])
        .args(["--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/dev/okay"))
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && code == "200" {
        Ok(())
    } else {
        Err(format!(
            "curl {proto}: {code} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The TLS listener has one SO_REUSEPORT socket per worker; a restart
/// hands every one of them over (the same sockets, not new ones bound
/// beside them), and new TLS connections (HTTP/1.1 and h2, a handshake
/// each) keep being served through two restarts without one failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tls_socket_is_handed_over_and_new_tls_connections_never_fail() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("handover.sock");
    let (cert, key) = (sock_dir.path().join("c.pem"), sock_dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=apigw-restart",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:*.{INVOKE_DOMAIN}"))
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let mut gw = Gateway::start_with(&[
        ("drain_handover_socket", &format!("\"{}\"", sock.display())),
        ("drain_timeout_ms", "10000"),
        ("worker_threads", "2"),
        ("tls_listen", "\"127.0.0.1:0\""),
        (
            "tls_cert_file",
            &format!("{:?}", cert.display().to_string()),
        ),
        ("tls_key_file", &format!("{:?}", key.display().to_string())),
        ("log", "\"info\""),
    ]);
    let admin = gw.admin();
    let backend = Backend::start("restart-tls");
    let s = simple_api(&admin, "restart-tls-api", "okay", &backend.url("/ok")).await;
    let host = format!("{}.{INVOKE_DOMAIN}", s.api_id);
    let port: u16 = gw
        .listening("tls")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("tls port");
    let sockets = listening_inodes(port);
    assert_eq!(sockets.len(), 2, "one TLS socket per worker: {sockets:?}");
    let owned = socket_inodes_of(gw.pid());
    assert!(
        sockets.iter().all(|s| owned.contains(s)),
        "{sockets:?} not in {owned:?}"
    );
    curl_tls("--http1.1", &host, port).expect("first request");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, counts, host) = (stop.clone(), counts.clone(), host.clone());
        let proto = if i % 2 == 0 { "--http1.1" } else { "--http2" };
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match curl_tls(proto, &host, port) {
                    Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        counts.errors.lock().unwrap().push(e);
                        counts.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = counts.ok.load(Ordering::Relaxed);
    for round in 1..=2 {
        let mut old = tokio::task::block_in_place(|| gw.start_successor());
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigterm(&old);
        let st = tokio::task::spawn_blocking(move || wait_exit(&mut old, Duration::from_secs(15)))
            .await
            .unwrap()
            .expect("the old process exits");
        assert!(st.success(), "old process exit {st:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The same sockets, now held by the new process alone.
        assert_eq!(
            listening_inodes(port),
            sockets,
            "restart {round}: TLS sockets"
        );
        let owned = socket_inodes_of(gw.pid());
        assert!(
            sockets.iter().all(|s| owned.contains(s)),
            "restart {round}: {sockets:?} not all in the new process ({owned:?})"
        );
        let now = counts.ok.load(Ordering::Relaxed);
        eprintln!(
            "TLS restart {round}: {} requests ok since the previous one",
            now - last
        );
        assert!(
            now > last,
            "TLS requests went through around restart {round}"
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    eprintln!("TLS (a new connection each): {ok} ok, {failed} failed");
    let errors: Vec<String> = counts
        .errors
        .lock()
        .unwrap()
        .iter()
        .take(10)
        .cloned()
        .collect();
    assert_eq!(failed, 0, "failed requests: {errors:#?}\n{}", gw.logs());
}
