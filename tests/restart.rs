//! Zero-downtime restart (issue [10] item 6): a new process takes the
//! running one's listening sockets over (`drain_handover_socket`), the
//! old one gets SIGTERM and drains; three times, under continuous load
//! from HTTP/1 keep-alive and h2c clients. Not one request may fail.

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
