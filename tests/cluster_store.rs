//! Two gateway processes on one PostgreSQL database (issue 9, part 1):
//! a change through one node is served by the other (propagation measured
//! over 200 changes), two nodes creating the same name at once give one
//! 2xx and one 409, and a node cut off from PostgreSQL keeps serving its
//! snapshot, answers writes 503, and catches up when it is back.
//!
//! The cut-off node reaches PostgreSQL through a TCP relay that the test
//! cuts (closing every connection and refusing new ones) and restores:
//! the server itself is shared with the other tests running at the same
//! time, so it is not stopped. Needs APIGW_TEST_PG_URL (tests/run.sh
//! starts a server and sets it); without it each test says so and passes.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// A fresh database's URL, or None (with a message) when no server is set.
fn database(test: &str) -> Option<String> {
    match pg_url() {
        Some(base) => Some(pg_fresh_database(&base)),
        None => {
            eprintln!("SKIPPED {test}: APIGW_TEST_PG_URL is not set (tests/run.sh starts PostgreSQL and sets it)");
            None
        }
    }
}

fn node(url: &str) -> Gateway {
    Gateway::start_with(&[("store_url", &format!("\"{url}\""))])
}

/// The status `GET url` answers now.
async fn status(c: &reqwest::Client, url: &str) -> u16 {
    status_of(c, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_is_served_by_the_other_within_a_second() {
    let Some(url) = database("propagation") else {
        return;
    };
    let backend = Backend::start("b");
    let n1 = node(&url);
    let n2 = node(&url);
    let (a1, a2) = (n1.admin(), n2.admin());
    let c = data_client();

    // An API made through node 1 is served, and listed, by node 2.
    let api = simple_api(&a1, "pets", "items", &backend.url("/items")).await;
    let on2 = n2.invoke_url(&api.api_id, "/dev/items");
    wait_for_status(&n2, &c, &on2, 200, Duration::from_secs(1), "api via node 1").await;
    let listed = a2.get("/v1/apis").await;
    assert!(
        listed.expect(200).to_string().contains(&api.api_id),
        "node 2's management API does not list node 1's API: {}",
        listed.text()
    );

    // 200 changes through node 1, alternately deploying to a new stage
    // and deleting it again (an API has at most 10 stages): from node 1's
    // 2xx (committed and served there) until node 2 serves the change.
    let live_on2 = n2.invoke_url(&api.api_id, "/live/items");
    let missing = status(&c, &live_on2).await;
    let mut took = Vec::with_capacity(200);
    for i in 0..200 {
        if i % 2 == 0 {
            a1.post(
                &format!("/v1/apis/{}/deployments", api.api_id),
                &json!({"stage_type": "new", "stage_name": "live", "description": "p"}),
            )
            .await
            .expect(200);
        } else {
            let r = a1
                .delete(&format!("/v1/apis/{}/stages/live", api.api_id))
                .await;
            assert_eq!(r.status, 204, "{}", r.text());
        }
        let committed = Instant::now();
        loop {
            let missing_now = status(&c, &live_on2).await == missing;
            if missing_now == (i % 2 == 1) {
                break;
            }
            assert!(
                committed.elapsed() < Duration::from_secs(5),
                "change {i} not served by node 2 within 5 s; logs:\n{}",
                n2.logs()
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        took.push(committed.elapsed());
    }
    took.sort();
    let p = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    let max = took[took.len() - 1];
    println!(
        "propagation node 1 -> node 2 over {} changes: p50 {:?} p99 {:?} max {:?}",
        took.len(),
        p(0.50),
        p(0.99),
        max
    );
    assert!(
        max < Duration::from_secs(1),
        "a change took {max:?} to reach node 2"
    );

    // And the other way: a change through node 2 reaches node 1.
    let r = a2
        .delete(&format!("/v1/apis/{}/stages/dev", api.api_id))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let dev_on1 = n1.invoke_url(&api.api_id, "/dev/items");
    wait_for_status(
        &n1,
        &c,
        &dev_on1,
        missing,
        Duration::from_secs(1),
        "delete via node 2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_creating_one_name_at_once_give_one_2xx_and_one_409() {
    let Some(url) = database("conflict") else {
        return;
    };
    let n1 = node(&url);
    let n2 = node(&url);
    let (a1, a2) = (n1.admin(), n2.admin());
    for round in 0..10 {
        let name = format!("same-{round}");
        let body = json!({"name": name, "description": "race"});
        let (r1, r2) = tokio::join!(a1.post("/v1/apis", &body), a2.post("/v1/apis", &body));
        let mut got = [r1.status, r2.status];
        got.sort();
        assert_eq!(
            got,
            [202, 409],
            "round {round}: node 1 {} {}, node 2 {} {}",
            r1.status,
            r1.text(),
            r2.status,
            r2.text()
        );
        let loser = if r1.status == 409 { &r1 } else { &r2 };
        loser.expect_error(409, "Conflict");
    }
    // Both nodes list each name once.
    for a in [&a1, &a2] {
        assert!(
            eventually(Duration::from_secs(1), || async {
                let text = a.get("/v1/apis?size=100").await.text();
                (0..10).all(|r| text.matches(&format!("\"same-{r}\"")).count() == 1)
            })
            .await,
            "an API name is listed other than once: {}",
            a.get("/v1/apis?size=100").await.text()
        );
    }
}

/// A TCP relay to PostgreSQL that the test can cut and restore.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { port, cut, conns }
    }

    /// Close every relayed connection and refuse new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_serves_its_snapshot_refuses_writes_and_catches_up() {
    let Some(url) = database("outage") else {
        return;
    };
    let cfg: postgres::Config = url.parse().unwrap();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let relay = Relay::start(([127, 0, 0, 1], port).into()).await;
    let user = cfg.get_user().unwrap_or("postgres");
    let db = cfg.get_dbname().unwrap_or("postgres");
    let via_relay = format!("postgres://{user}@127.0.0.1:{}/{db}", relay.port);

    let backend = Backend::start("b");
    let n1 = node(&url);
    // Node 2 also serves /readyz (metrics listener).
    let n2 = Gateway::start_with(&[
        ("store_url", &format!("\"{via_relay}\"")),
        ("metrics_listen", "\"127.0.0.1:0\""),
    ]);
    let readyz = format!("http://{}/readyz", n2.listening("metrics"));
    let (a1, a2) = (n1.admin(), n2.admin());
    let c = data_client();
    let before = simple_api(&a1, "before", "items", &backend.url("/items")).await;
    let before_on2 = n2.invoke_url(&before.api_id, "/dev/items");
    wait_for_status(
        &n2,
        &c,
        &before_on2,
        200,
        Duration::from_secs(1),
        "before the cut",
    )
    .await;

    let r = c.get(&readyz).send().await.expect("readyz");
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.expect("readyz json");
    assert_eq!(body["store"], "reachable", "{body}");

    relay.cut();
    // Node 2 serves its snapshot, answers reads, and refuses writes with
    // a 503 in the SCP envelope (nothing is committed).
    assert_eq!(status(&c, &before_on2).await, 200);
    a2.get("/v1/apis").await.expect(200);
    let refused = a2
        .post("/v1/apis", &json!({"name": "during", "description": "x"}))
        .await;
    refused.expect_error(503, "ServiceUnavailable");
    assert!(refused.err_detail().contains("store"), "{}", refused.text());
    // It stays ready (a load balancer must not drop every node when the
    // shared store blinks) and says the store is unreachable.
    let r = c.get(&readyz).send().await.expect("readyz");
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.expect("readyz json");
    assert_eq!(body["store"], "unreachable", "{body}");
    // Node 1 still writes; node 2 cannot see it yet.
    let during = simple_api(&a1, "made-while-cut", "items", &backend.url("/items")).await;
    let during_on2 = n2.invoke_url(&during.api_id, "/dev/items");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(
        status(&c, &during_on2).await,
        200,
        "served through a cut link"
    );
    assert_eq!(status(&c, &before_on2).await, 200);

    relay.restore();
    // Node 2 reconnects and catches up with what it missed ...
    wait_for_status(
        &n2,
        &c,
        &during_on2,
        200,
        Duration::from_secs(10),
        "after the cut",
    )
    .await;
    // ... and writes again, validated against the state it caught up to.
    let clash = a2
        .post(
            "/v1/apis",
            &json!({"name": "made-while-cut", "description": "x"}),
        )
        .await;
    clash.expect_error(409, "Conflict");
    let made = a2
        .post("/v1/apis", &json!({"name": "after", "description": "x"}))
        .await;
    let id = made.expect(202)["id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(1), || async {
            a1.get(&format!("/v1/apis/{id}")).await.status == 200
        })
        .await,
        "node 1 does not see node 2's API after the outage"
    );
}
