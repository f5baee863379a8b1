//! Listener limits against the real binary: the management listener's
//! header-read and keep-alive timeouts and connection cap, the
//! file-descriptor reserve that keeps the data plane answering while the
//! management port is flooded, and the data plane's connection cap.
//!
//! Connections are counted from the gateway's side: the sockets in
//! /proc/{pid}/fd that /proc/net/tcp shows ESTABLISHED on the listener's
//! port (connections still in the kernel's listen queue are not the
//! process's).

mod common;

use common::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Connections of process `pid` in state ESTABLISHED whose local port is
/// `port`.
fn established(pid: u32, port: u16) -> usize {
    let mut inodes = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy().to_string();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(n.to_string());
                }
            }
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && cols[3] == "01" && inodes.contains(cols[9]) {
                n += 1;
            }
        }
    }
    n
}

/// The most connections `established` shows over `during`, sampled.
async fn max_established(pid: u32, port: u16, during: Duration) -> usize {
    let end = Instant::now() + during;
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(established(pid, port));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    most
}

/// Reads until the peer closes (EOF or reset) or `within` passes; returns
/// what was read and how long until the close (`None`: still open).
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, Some(t0.elapsed())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, None),
        }
    }
}

/// Reads from `s` until one whole response is in (or the peer closes, or
/// `within` passes).
async fn read_one(s: &mut TcpStream, within: Duration) -> (Option<RawResponse>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + within;
    loop {
        if let Some((r, true)) = parse_response(&buf) {
            return (Some(r), buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (parse_response(&buf).map(|r| r.0), buf),
        }
    }
}

/// A signed keep-alive `GET {path}` to the management API, as raw bytes.
fn signed_get(gw: &Gateway, path: &str) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", gw.admin_addr);
    for (k, v) in gw.admin().signed_headers("GET", path) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Scp-Api-Version: apigateway 1.2\r\n\r\n");
    req.into_bytes()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect {addr}: timed out"))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// `n` connections to `addr` that send nothing.
async fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(connect(addr).await);
    }
    v
}

/// Up to `n` connections to `addr` that send nothing, opened at once;
/// those the kernel does not complete within 2 s (listen queue full: SYNs
/// dropped) are left out, as a flood would see them.
async fn flood_any(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(async move {
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        });
    }
    let mut v = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(Ok(s))) = r {
            v.push(s);
        }
    }
    v
}

/// Sets the open-file limit (soft and hard) of a running process, as
/// `prlimit --pid PID --nofile=N:N` does (same syscall; no util-linux
/// needed).
fn set_nofile(pid: u32, n: libc::rlim_t) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit reads `lim` and writes nothing (old limit: null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A signed `GET /v1/apis` answers 200 within `within` (each try bounded).
async fn admin_answers(gw: &Gateway, within: Duration) -> bool {
    let admin = gw.admin();
    eventually(within, || {
        let admin = admin.clone();
        async move {
            matches!(
                tokio::time::timeout(Duration::from_secs(2), admin.get("/v1/apis")).await,
                Ok(r) if r.status == 200
            )
        }
    })
    .await
}

/// GET `url` on a new connection, bounded; 0 when it fails or times out.
async fn status_within(url: &str, within: Duration) -> u16 {
    let c = data_client();
    tokio::time::timeout(within, status_of(&c, url))
        .await
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// 1. Header-read timeout of the management listener
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn admin_silent_and_slow_head_connections_are_cut() {
    let gw = Gateway::start_with(&[
        ("admin_header_read_timeout_ms", "500"),
        ("admin_keepalive_timeout_ms", "60000"),
    ]);

    // Sends nothing at all: closed at the header timeout, no answer.
    let mut s = connect(gw.admin_addr).await;
    let (got, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
    let took = closed.expect("a silent management connection was kept open for 5 s");
    eprintln!("silent connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "silent connection closed after {took:?} (timeout 500 ms)"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));

    // Part of a head, then nothing: 408 in SCP's envelope, then closed.
    let mut s = connect(gw.admin_addr).await;
    let partial = format!(
        "GET /v1/apis HTTP/1.1\r\nHost: {}\r\nScp-AccessKey: x\r\n",
        gw.admin_addr
    );
    s.write_all(partial.as_bytes()).await.expect("write");
    let (got, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
    let took = closed.expect("a partial request head was waited for 5 s");
    eprintln!("partial head cut after {took:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "partial head cut after {took:?} (timeout 500 ms)"
    );
    let r = parse_response(&got)
        .map(|r| r.0)
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&got)));
    assert_eq!(r.status, 408, "{}", r.text());
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], "RequestTimeout", "{v}");
    assert_eq!(v["errors"][0]["status"], 408, "{v}");

    // A head trickled one byte every 100 ms: still cut, the timeout counts
    // from the accept, not from the last byte.
    let s = connect(gw.admin_addr).await;
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        let _ = wr.write_all(b"GET /v1/apis HTTP/1.1\r\nX-Slow: ").await;
        while wr.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(t0.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => break None,
        }
    };
    trickle.abort();
    let took = closed.expect("a trickled head kept the connection open for 5 s");
    eprintln!("trickled head cut after {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "trickled head cut after {took:?}"
    );
    assert_eq!(
        parse_response(&got).map(|r| r.0.status),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // Ordinary requests are not affected.
    gw.admin().get("/v1/apis").await.expect(200);
}

// ---------------------------------------------------------------------------
// 2. Keep-alive idle timeout of the management listener
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn admin_idle_keepalive_connection_is_closed_after_its_own_timeout() {
    // The keep-alive timeout is longer than the header timeout: an idle
    // connection must outlive the header timeout and die at its own.
    let gw = Gateway::start_with(&[
        ("admin_header_read_timeout_ms", "400"),
        ("admin_keepalive_timeout_ms", "1600"),
    ]);
    let mut s = connect(gw.admin_addr).await;
    s.write_all(&signed_get(&gw, "/v1/apis"))
        .await
        .expect("write");
    let (r, raw) = read_one(&mut s, Duration::from_secs(5)).await;
    let r = r.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&raw)));
    assert_eq!(r.status, 200, "{}", r.text());

    // Idle longer than the header timeout, shorter than keep-alive.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(&signed_get(&gw, "/v1/apis"))
        .await
        .expect("write");
    let (r, raw) = read_one(&mut s, Duration::from_secs(5)).await;
    let r = r.unwrap_or_else(|| {
        panic!(
            "idle connection cut before admin_keepalive_timeout_ms: {}",
            String::from_utf8_lossy(&raw)
        )
    });
    assert_eq!(r.status, 200, "{}", r.text());

    let (got, closed) = until_closed(&mut s, Duration::from_secs(6)).await;
    let took = closed.expect("an idle keep-alive management connection was kept for 6 s");
    eprintln!("idle keep-alive connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
        "idle keep-alive connection closed after {took:?} (timeout 1600 ms)"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));

    // h2c with prior knowledge is still served (axum::serve did), and an
    // idle h2 connection is closed at the keep-alive timeout too.
    let h2 = Admin {
        addr: gw.admin_addr,
        client: reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        opts: SignOpts::default(),
    };
    h2.get("/v1/apis").await.expect(200);
    let mut s = connect(gw.admin_addr).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let (_, closed) = until_closed(&mut s, Duration::from_secs(6)).await;
    let took = closed.expect("an idle h2 management connection was kept for 6 s");
    eprintln!("idle h2 connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
        "idle h2 connection closed after {took:?} (timeout 1600 ms)"
    );
}

// ---------------------------------------------------------------------------
// 3. Connection cap of the management listener
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn admin_connection_cap_holds_and_frees() {
    const CAP: usize = 20;
    let gw = Gateway::start_with(&[
        ("admin_max_connections", "20"),
        ("admin_header_read_timeout_ms", "5000"),
    ]);
    let port = gw.admin_addr.port();
    let conns = flood(gw.admin_addr, 60).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let most = max_established(gw.pid(), port, Duration::from_millis(1500)).await;
    eprintln!("management connections held during a flood of 60: at most {most}");
    assert!(
        most <= CAP + 1,
        "the gateway held {most} management connections (admin_max_connections = {CAP})"
    );
    assert!(
        most >= CAP - 2,
        "the flood did not reach the gateway ({most} connections)"
    );

    drop(conns);
    assert!(
        admin_answers(&gw, Duration::from_secs(10)).await,
        "management API did not answer after the flood ended; logs:\n{}",
        gw.logs()
    );
}

// ---------------------------------------------------------------------------
// 4. File-descriptor reserve, and the data plane's own cap
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn data_plane_answers_while_admin_is_flooded_under_a_low_fd_limit() {
    let gw = Gateway::start();
    let backend = Backend::start("fd");
    let up = backend.url("/ping");
    let api = deployed_api(&gw, "fd-reserve", &[("ping", "GET", up.as_str())]).await;
    let url = gw.invoke_url(&api, "/dev/ping");

    set_nofile(gw.pid(), 256);
    let conns = flood_any(gw.admin_addr, 600).await;
    eprintln!("management flood: {} of 600 connected", conns.len());
    assert!(
        conns.len() > 256,
        "only {} flood connections: not a flood past the 256 limit",
        conns.len()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;

    for i in 0..3 {
        let status = status_within(&url, Duration::from_secs(5)).await;
        assert_eq!(
            status,
            200,
            "proxied request {i} while the management port is flooded (0: no answer); admin conns held: {}; logs:\n{}",
            established(gw.pid(), gw.admin_addr.port()),
            gw.logs()
        );
    }
    let held = established(gw.pid(), gw.admin_addr.port());
    eprintln!("management connections held during a flood of 600 (limit 256): {held}");
    assert!(
        held <= 256 / 4 + 1,
        "{held} management connections held under a 256 open-file limit"
    );

    drop(conns);
    assert!(
        admin_answers(&gw, Duration::from_secs(10)).await,
        "management API did not answer after the flood ended; logs:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_plane_connection_cap_holds_and_frees() {
    const CAP: usize = 50;
    let gw = Gateway::start_with(&[("max_connections", "50")]);
    let backend = Backend::start("cap");
    let up = backend.url("/ping");
    let api = deployed_api(&gw, "data-cap", &[("ping", "GET", up.as_str())]).await;
    let url = gw.invoke_url(&api, "/dev/ping");
    let port = gw.data_addr.port();

    let mut conns = flood(gw.data_addr, 120).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let most = max_established(gw.pid(), port, Duration::from_millis(1000)).await;
    eprintln!("data-plane connections held during a flood of 120: at most {most}");
    // +2: a connection over the cap is accepted, then closed at once, and
    // a sample may catch it in between.
    assert!(
        most <= CAP + 2,
        "the gateway held {most} data-plane connections (max_connections = {CAP})"
    );
    assert!(
        most >= CAP - 10,
        "the flood did not reach the gateway ({most} connections)"
    );
    // Those over the cap were closed at once, not left waiting.
    let mut closed = 0;
    for s in conns.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(10), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    eprintln!("flood connections closed by the gateway: {closed}");
    assert!(
        closed >= 120 - CAP - 5,
        "only {closed} of 120 flood connections were closed by the gateway"
    );

    drop(conns);
    let ok = eventually(Duration::from_secs(5), || {
        let url = url.clone();
        async move { status_within(&url, Duration::from_secs(2)).await == 200 }
    })
    .await;
    assert!(
        ok,
        "data plane did not answer after the flood; logs:\n{}",
        gw.logs()
    );
}
