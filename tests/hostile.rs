//! Hostile clients and faulty backends, against the real binary over real
//! sockets: request smuggling and malformed HTTP/1 heads and bodies, slow
//! header senders, HTTP/2 floods (rapid reset, CONTINUATION, header-list
//! bombs) and h2-to-h1 downgrade smuggling, account isolation on the
//! management API, and upstreams that refuse, reset, stall, answer garbage
//! or send responses nobody asked for.
//!
//! The hostile client side is hand-written bytes (HTTP/1 text, HTTP/2
//! frames and HPACK). The backend is a raw socket ([`RawBackend`]) that
//! records every byte it receives and parses it itself, so a test can tell
//! exactly which requests the gateway let through and how they were framed.

mod common;

use bytes::BytesMut;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Raw recording backend
// ---------------------------------------------------------------------------

/// One request as the backend parsed it off the wire.
#[derive(Clone, Debug, Default)]
struct RawReq {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReq {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

/// Everything one upstream connection carried.
#[derive(Clone, Debug, Default)]
struct RawConn {
    /// Every byte received, as received.
    raw: Vec<u8>,
    requests: Vec<RawReq>,
    /// Bytes that did not parse as a request, and why (nothing is parsed
    /// or answered on the connection after them).
    garbage: Option<String>,
    /// The gateway closed or reset its side.
    closed: bool,
}

/// A backend on a raw socket that records every byte per connection,
/// parses requests itself (Content-Length and chunked bodies), and acts
/// on each request by its path:
/// - `/stall...`: never answers (reads on, to see the gateway close);
/// - `/garbage`: answers bytes that are not HTTP, keeps the connection;
/// - `/bighead`: a response head of 1 MiB;
/// - `/dupcl`: a response with two different Content-Length headers;
/// - `/extra`, `/extralate`, `/nocontent`: `200 backend-ok` (or a 204)
///   followed, at once or 100 ms later, by a second response ([`POISON`]);
/// - `/cutreset`: promises 100,000 body bytes, sends 10,000, then resets;
/// - `/cutfin`: the same, then closes cleanly (FIN);
/// - anything else: `200 backend-ok` (keep-alive).
struct RawBackend {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<RawConn>>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nbackend-ok";
/// What a desynchronising backend sends unasked: a whole response that
/// must never answer another request.
const POISON: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-poison: 1\r\n\r\nSMUGGLED";
const CUT_PROMISED: usize = 100_000;
const CUT_SENT: usize = 10_000;

impl RawBackend {
    fn start() -> RawBackend {
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let conns2 = conns.clone();
        std::thread::Builder::new()
            .name("raw-backend".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(l.local_addr().unwrap()).unwrap();
                    loop {
                        tokio::select! {
                            acc = l.accept() => {
                                let Ok((s, _)) = acc else { continue };
                                let _ = s.set_nodelay(true);
                                let idx = {
                                    let mut c = conns2.lock().unwrap();
                                    c.push(RawConn::default());
                                    c.len() - 1
                                };
                                tokio::spawn(raw_conn(s, idx, conns2.clone()));
                            }
                            _ = stop_rx.changed() => break,
                        }
                    }
                });
                // drops every connection task: their sockets close
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .unwrap();
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("raw backend address");
        RawBackend {
            addr,
            conns,
            stop: Some(stop_tx),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn conns(&self) -> Vec<RawConn> {
        self.conns.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<RawReq> {
        self.conns()
            .into_iter()
            .flat_map(|c| c.requests.into_iter())
            .collect()
    }

    /// Requests whose path starts with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Open connections that carried a request to a path starting with
    /// `prefix`.
    fn open_with(&self, prefix: &str) -> usize {
        self.conns()
            .iter()
            .filter(|c| !c.closed && c.requests.iter().any(|r| r.path.starts_with(prefix)))
            .count()
    }

    /// Not a byte since the last `clear` (on any connection).
    fn received_nothing(&self) -> bool {
        self.conns().iter().all(|c| c.raw.is_empty())
    }

    fn clear(&self) {
        let mut c = self.conns.lock().unwrap();
        for conn in c.iter_mut() {
            conn.raw.clear();
            conn.requests.clear();
        }
    }

    /// Every request, printed for failure messages.
    fn dump(&self) -> String {
        self.conns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "conn {i} closed={} garbage={:?} raw({} bytes)={:?}\n",
                    c.closed,
                    c.garbage,
                    c.raw.len(),
                    String::from_utf8_lossy(&c.raw[..c.raw.len().min(600)])
                )
            })
            .collect()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

enum ReqParse {
    Partial,
    Bad(String),
    Done(RawReq, usize),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request off the front of `buf` (RFC 9112 framing: chunked when the
/// last transfer coding is chunked, else Content-Length, else no body).
fn parse_request(buf: &[u8]) -> ReqParse {
    let mut headers = vec![httparse::EMPTY_HEADER; 512];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return ReqParse::Partial,
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return ReqParse::Bad(format!("request head: {e}")),
    };
    let out_headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let mut r = RawReq {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers: out_headers,
        body: Vec::new(),
    };
    let te = r
        .header("transfer-encoding")
        .map(|v| v.to_ascii_lowercase());
    if let Some(te) = te {
        if !te.trim_end().ends_with("chunked") {
            return ReqParse::Bad(format!("transfer-encoding {te:?} not chunked"));
        }
        return match dechunk(&buf[head..]) {
            Err(e) => ReqParse::Bad(e),
            Ok(None) => ReqParse::Partial,
            Ok(Some((body, used))) => {
                r.body = body;
                ReqParse::Done(r, head + used)
            }
        };
    }
    if let Some(cl) = r.header("content-length") {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return ReqParse::Bad(format!("content-length {cl:?}"));
        };
        if buf.len() < head + n {
            return ReqParse::Partial;
        }
        r.body = buf[head..head + n].to_vec();
        return ReqParse::Done(r, head + n);
    }
    ReqParse::Done(r, head)
}

/// A chunked body at the front of `data`: the body and the bytes used,
/// `None` while incomplete.
fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(&data[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[pos..pos + eol]).to_string();
        let size_str = line.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_str, 16)
            .map_err(|_| format!("chunk size line {line:?}"))?;
        pos += eol + 2;
        if size == 0 {
            // trailer fields, then the empty line
            loop {
                let Some(eol) = find(&data[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if data.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[pos..pos + size]);
        if &data[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

enum Act {
    /// Answered; serve the next request.
    Next,
    /// Answer nothing more on this connection; keep reading.
    Silent,
    /// Drop the connection now (reset or closed).
    Gone,
}

async fn write_within(s: &mut TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(bytes)).await;
}

async fn act(s: &mut TcpStream, path: &str) -> Act {
    let path = path.split('?').next().unwrap_or("");
    match path {
        p if p.starts_with("/stall") => Act::Silent,
        "/garbage" => {
            write_within(s, b"THIS IS NOT HTTP AT ALL\r\n\r\n").await;
            Act::Silent
        }
        "/bighead" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            let mut i = 0;
            while head.len() < 1024 * 1024 {
                head.extend_from_slice(format!("x-pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
                i += 1;
            }
            head.extend_from_slice(b"content-length: 2\r\n\r\nok");
            write_within(s, &head).await;
            Act::Silent
        }
        "/extra" => {
            // a second, unasked-for response right behind the first
            write_within(s, &[OK_RESPONSE, POISON].concat()).await;
            Act::Next
        }
        "/extralate" => {
            // the same, once the connection is idle in the gateway's pool
            write_within(s, OK_RESPONSE).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            write_within(s, POISON).await;
            Act::Next
        }
        "/nocontent" => {
            // a 204 has no body: what follows it is another response
            write_within(s, &[b"HTTP/1.1 204 No Content\r\n\r\n", POISON].concat()).await;
            Act::Next
        }
        "/dupcl" => {
            write_within(
                s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 30\r\n\r\nok0123456789012345678901234567",
            )
            .await;
            Act::Silent
        }
        "/cutreset" | "/cutfin" => {
            let mut r =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {CUT_PROMISED}\r\n\r\n")
                    .into_bytes();
            r.extend(std::iter::repeat_n(b'c', CUT_SENT));
            write_within(s, &r).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if path == "/cutreset" {
                // SO_LINGER 0: the close sends RST
                let _ = s.set_zero_linger();
            } else {
                let _ = s.shutdown().await;
            }
            Act::Gone
        }
        _ => {
            write_within(s, OK_RESPONSE).await;
            Act::Next
        }
    }
}

async fn raw_conn(mut s: TcpStream, idx: usize, conns: Arc<Mutex<Vec<RawConn>>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parsing = true;
    let mut answering = true;
    loop {
        while parsing {
            match parse_request(&buf) {
                ReqParse::Partial => break,
                ReqParse::Bad(why) => {
                    conns.lock().unwrap()[idx].garbage = Some(why);
                    parsing = false;
                }
                ReqParse::Done(req, used) => {
                    buf.drain(..used);
                    let path = req.path.clone();
                    conns.lock().unwrap()[idx].requests.push(req);
                    if answering {
                        match act(&mut s, &path).await {
                            Act::Next => {}
                            Act::Silent => answering = false,
                            Act::Gone => {
                                conns.lock().unwrap()[idx].closed = true;
                                return;
                            }
                        }
                    }
                }
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                conns.lock().unwrap()[idx].closed = true;
                return;
            }
            Ok(n) => {
                conns.lock().unwrap()[idx]
                    .raw
                    .extend_from_slice(&chunk[..n]);
                if parsing {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Test setup
// ---------------------------------------------------------------------------

/// A gateway and an API whose resource `/{part}` forwards to the raw
/// backend's `/{part}` (GET; POST too for `echo`, `smuggled`, `stall`),
/// deployed to `dev` with 127.0.0.1 allowed. The first part must answer
/// 200 (the setup waits for it).
struct Env {
    gw: Gateway,
    backend: RawBackend,
    api: String,
}

impl Env {
    fn host(&self) -> String {
        self.gw.host(&self.api)
    }
    fn url(&self, part: &str) -> String {
        self.gw.invoke_url(&self.api, &format!("/dev/{part}"))
    }
    fn addr(&self) -> SocketAddr {
        self.gw.data_addr
    }
}

async fn setup(settings: &[(&str, &str)], parts: &[&str]) -> Env {
    let gw = Gateway::start_with(settings);
    let backend = RawBackend::start();
    let mut routes: Vec<(String, &str, String)> = Vec::new();
    for p in parts {
        routes.push((p.to_string(), "GET", backend.url(&format!("/{p}"))));
        if matches!(*p, "echo" | "smuggled" | "stall") {
            routes.push((p.to_string(), "POST", backend.url(&format!("/{p}"))));
        }
    }
    let refs: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(p, m, u)| (p.as_str(), *m, u.as_str()))
        .collect();
    let api = deployed_api(&gw, "hostile", &refs).await;
    backend.clear();
    Env { gw, backend, api }
}

/// How a raw exchange ended.
#[derive(Debug, PartialEq)]
enum End {
    /// A whole response arrived (and we stopped reading).
    Complete,
    /// The gateway closed the connection.
    Eof,
    /// The connection failed (reset).
    Error(String),
    /// Nothing more within the time allowed.
    Timeout,
}

#[derive(Debug)]
struct Exchange {
    resp: Option<RawResponse>,
    raw: Vec<u8>,
    end: End,
    took: Duration,
}

impl Exchange {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).to_string()
    }
    /// Status lines in what came back.
    fn responses(&self) -> usize {
        self.raw.windows(7).filter(|w| w == b"HTTP/1.").count()
    }
    fn closed(&self) -> bool {
        matches!(self.end, End::Eof | End::Error(_))
    }
}

/// Writes `request` (while reading, so an early answer is seen), then
/// reads until one whole response arrived or, with `to_close`, until the
/// gateway closes the connection; `within` bounds it all.
async fn exchange(addr: SocketAddr, request: &[u8], to_close: bool, within: Duration) -> Exchange {
    let t0 = Instant::now();
    let s = TcpStream::connect(addr).await.expect("connect to gateway");
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr // keep our side open until the reader is done
    });
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if !to_close && matches!(parse_response(&raw), Some((_, true))) {
            break End::Complete;
        }
        let left = within.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, rd.read(&mut chunk)).await {
            Err(_) => break End::Timeout,
            Ok(Ok(0)) => break End::Eof,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break End::Error(e.to_string()),
        }
    };
    writer.abort();
    Exchange {
        resp: parse_response(&raw).map(|r| r.0),
        raw,
        end,
        took: t0.elapsed(),
    }
}

/// GET with the data client: status (0 when it failed) and time taken.
async fn timed_get(c: &reqwest::Client, url: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let st = match tokio::time::timeout(Duration::from_secs(5), c.get(url).send()).await {
        Ok(Ok(r)) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        _ => 0,
    };
    (st, t0.elapsed())
}

/// The gateway still serves a plain request on a fresh connection.
async fn assert_still_serving(env: &Env, what: &str) {
    let (st, took) = timed_get(&data_client(), &env.url("fine")).await;
    assert_eq!(
        st,
        200,
        "after {what} the gateway no longer answers (took {took:?}); logs:\n{}",
        env.gw.logs()
    );
}

/// Checks a hostile HTTP/1 request answered with one of `allowed` and
/// nothing reaching the backend.
async fn assert_rejected(env: &Env, name: &str, request: &[u8], allowed: &[u16]) -> Exchange {
    env.backend.clear();
    let ex = exchange(env.addr(), request, true, Duration::from_secs(5)).await;
    let resp = ex
        .resp
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no answer ({:?}): {:?}", ex.end, ex.text()));
    assert!(
        allowed.contains(&resp.status),
        "{name}: answered {} (wanted one of {allowed:?}): {}",
        resp.status,
        ex.text()
    );
    assert_eq!(
        ex.responses(),
        1,
        "{name}: more than one answer: {}",
        ex.text()
    );
    assert!(
        ex.closed(),
        "{name}: the connection stayed open after a rejected request ({:?})",
        ex.end
    );
    // let anything the gateway might have forwarded land
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        env.backend.received_nothing(),
        "{name}: the backend received something:\n{}",
        env.backend.dump()
    );
    ex
}

// ---------------------------------------------------------------------------
// 1-5: request smuggling and malformed HTTP/1 input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_never_smuggles_a_request() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    // Each hides `smuggled` where one of the two framings would read it
    // as the next request.
    let cl_te = format!(
        "POST /dev/echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let te_cl = format!(
        "POST /dev/echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let obfuscated = |te_lines: &str, version: &str| {
        format!(
            "POST /dev/echo HTTP/{version}\r\nHost: {host}\r\n{te_lines}Content-Length: {}\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("CL.TE", cl_te),
        ("TE.CL", te_cl),
        (
            "TE xchunked",
            obfuscated("Transfer-Encoding: xchunked\r\n", "1.1"),
        ),
        (
            "TE chunked then identity",
            obfuscated(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                "1.1",
            ),
        ),
        (
            "TE chunked, identity",
            obfuscated("Transfer-Encoding: chunked, identity\r\n", "1.1"),
        ),
        (
            "TE space before colon",
            obfuscated("Transfer-Encoding : chunked\r\n", "1.1"),
        ),
        (
            "TE on HTTP/1.0",
            obfuscated("Transfer-Encoding: chunked\r\n", "1.0"),
        ),
    ];
    for (name, req) in &cases {
        env.backend.clear();
        let ex = exchange(env.addr(), req.as_bytes(), true, Duration::from_secs(5)).await;
        let resp = ex
            .resp
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no answer ({:?}): {:?}", ex.end, ex.text()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reqs = env.backend.requests();
        assert!(
            reqs.iter().all(|r| !r.path.contains("smuggled")),
            "{name}: the smuggled request reached the backend:\n{}",
            env.backend.dump()
        );
        assert!(
            env.backend.conns().iter().all(|c| c.garbage.is_none()),
            "{name}: the backend got bytes that are no request:\n{}",
            env.backend.dump()
        );
        match resp.status {
            400 => assert!(
                env.backend.received_nothing(),
                "{name}: 400 but forwarded:\n{}",
                env.backend.dump()
            ),
            200 => {
                assert_eq!(reqs.len(), 1, "{name}:\n{}", env.backend.dump());
                let r = &reqs[0];
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/echo"));
                let framings = r.count("content-length") + r.count("transfer-encoding");
                assert_eq!(
                    framings, 1,
                    "{name}: forwarded with ambiguous framing: {:?}",
                    r.headers
                );
                // the chunked framing won: the body is the chunk data
                let want: &[u8] = if *name == "TE.CL" {
                    smuggled.as_bytes()
                } else {
                    b""
                };
                assert_eq!(r.body, want, "{name}: forwarded body");
            }
            s => panic!("{name}: answered {s}: {}", ex.text()),
        }
        eprintln!("{name}: {} ({} forwarded)", resp.status, reqs.len());
        assert_eq!(ex.responses(), 1, "{name}: {}", ex.text());
        // RFC 9112 §6.1: the server must close after such a request, so
        // the bytes after the body are never read as a request.
        assert!(
            ex.closed(),
            "{name}: the connection stayed open after CL+TE ({:?})",
            ex.end
        );
    }
    // control: the same bytes as a plain pipelined request do reach the
    // backend, so a smuggled one would have been seen
    env.backend.clear();
    let pipelined = format!(
        "GET /dev/echo HTTP/1.1\r\nHost: {host}\r\n\r\n{}",
        smuggled.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    );
    let ex = exchange(
        env.addr(),
        pipelined.as_bytes(),
        true,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ex.responses(), 2, "{}", ex.text());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(env.backend.count("/smuggled"), 1, "{}", env.backend.dump());
    assert_still_serving(&env, "CL+TE requests").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_400() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let body = format!("hello{smuggled}");
    let with =
        |cl_lines: &str| format!("POST /dev/echo HTTP/1.1\r\nHost: {host}\r\n{cl_lines}\r\n{body}");
    let n = body.len();
    let cases = [
        (
            "two different headers",
            with(&format!("Content-Length: 5\r\nContent-Length: {n}\r\n")),
        ),
        (
            "two different headers, long first",
            with(&format!("Content-Length: {n}\r\nContent-Length: 5\r\n")),
        ),
        (
            "a list in one header",
            with(&format!("Content-Length: 5, {n}\r\n")),
        ),
        ("signed", with("Content-Length: +5\r\n")),
        ("negative", with("Content-Length: -5\r\n")),
        ("hex", with("Content-Length: 0x5\r\n")),
    ];
    for (name, req) in &cases {
        assert_rejected(&env, name, req.as_bytes(), &[400]).await;
    }
    assert_still_serving(&env, "conflicting Content-Length").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_header_lines_are_400() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let cases = [
        (
            "space continuation",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}"),
        ),
        (
            "tab continuation",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n\tb\r\n\r\n{smuggled}"),
        ),
        (
            "folded Transfer-Encoding",
            format!(
                "POST /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "folded Host",
            format!("GET /dev/echo HTTP/1.1\r\nHost:\r\n {host}\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, req) in &cases {
        assert_rejected(&env, name, req.as_bytes(), &[400]).await;
    }
    assert_still_serving(&env, "obs-fold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_in_the_head_are_400() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let cases = [
        (
            "NUL in a header value",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-Nul: a\0b\r\n\r\n{smuggled}"),
        ),
        (
            "NUL ending a header value",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-Nul: a\0\r\n\r\n{smuggled}"),
        ),
        (
            "NUL in the Host value",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\0.evil\r\n\r\n{smuggled}"),
        ),
        (
            "NUL in a header name",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nX-N\0ul: a\r\n\r\n{smuggled}"),
        ),
        (
            "NUL in the request target",
            format!("GET /dev/echo\0/x HTTP/1.1\r\nHost: {host}\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, req) in &cases {
        assert_rejected(&env, name, req.as_bytes(), &[400]).await;
    }
    assert_still_serving(&env, "NUL bytes").await;
}

/// Chunked request bodies that break the chunked syntax, each followed
/// by a request that a lenient parser would read next.
fn bad_chunked_bodies(host: &str) -> Vec<(&'static str, String)> {
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    [
        ("chunk size not hex", format!("zz\r\nhello\r\n0\r\n\r\n{smuggled}")),
        (
            "chunk size overflowing 64 bits",
            format!("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunk data not followed by CRLF",
            format!("5\r\nhelloXX0\r\n\r\n{smuggled}"),
        ),
        ("bare LF line ends", format!("5\nhello\n0\n\n{smuggled}")),
    ]
    .into_iter()
    .map(|(name, body)| {
        (
            name,
            format!(
                "POST /dev/echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            ),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_never_smuggles() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    for (name, req) in bad_chunked_bodies(&env.host()) {
        env.backend.clear();
        let ex = exchange(env.addr(), req.as_bytes(), true, Duration::from_secs(5)).await;
        let resp = ex
            .resp
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no answer ({:?}): {:?}", ex.end, ex.text()));
        assert!(resp.status >= 400, "{name}: answered {}", resp.status);
        assert_eq!(ex.responses(), 1, "{name}: {}", ex.text());
        assert!(
            ex.closed(),
            "{name}: the connection stayed open ({:?})",
            ex.end
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            env.backend.count("/smuggled"),
            0,
            "{name}:\n{}",
            env.backend.dump()
        );
        // at most the start of the one request, and its connection dropped
        assert!(
            env.backend
                .conns()
                .iter()
                .all(|c| c.garbage.is_none() && c.requests.is_empty()),
            "{name}: the backend got a whole request or garbage:\n{}",
            env.backend.dump()
        );
    }
    assert_still_serving(&env, "malformed chunked bodies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_is_400() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    for (name, req) in bad_chunked_bodies(&env.host()) {
        let ex = exchange(env.addr(), req.as_bytes(), true, Duration::from_secs(5)).await;
        let resp = ex
            .resp
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no answer ({:?}): {:?}", ex.end, ex.text()));
        assert_eq!(resp.status, 400, "{name}: {}", ex.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_400() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let other = format!("0123456789abcdef0123456789abcdef.{INVOKE_DOMAIN}");
    for (name, req) in [
        (
            "real first",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\nHost: {other}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "real last",
            format!("GET /dev/echo HTTP/1.1\r\nHost: {other}\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        ),
    ] {
        assert_rejected(&env, name, req.as_bytes(), &[400]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_target_authority_wins_over_host() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let other = format!(
        "0123456789abcdef0123456789abcdef.{INVOKE_DOMAIN}:{}",
        env.gw.data_port()
    );
    env.backend.clear();
    let req = format!("GET http://{other}/dev/echo HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let ex = exchange(env.addr(), req.as_bytes(), false, Duration::from_secs(5)).await;
    let st = ex.resp.as_ref().map(|r| r.status);
    assert!(
        matches!(st, Some(400) | Some(404)),
        "absolute-form naming no API, Host naming one: {st:?} {}",
        ex.text()
    );
    let mut conn = H2Conn::open(env.addr()).await;
    let block = h2::block(b"GET", b"/dev/echo", &other, &[(b"host", host.as_bytes())]);
    conn.send(&h2::frame(
        h2::HEADERS,
        h2::END_STREAM | h2::END_HEADERS,
        1,
        &block,
    ))
    .await
    .expect("send");
    conn.wait_for(Duration::from_secs(5), |s| {
        s.statuses.contains_key(&1) || s.resets.contains_key(&1) || s.goaway.is_some()
    })
    .await;
    let st = conn.seen.lock().unwrap().statuses.get(&1).copied();
    assert!(
        st.is_none_or(|s| s == 400 || s == 404),
        "h2 :authority naming no API, host naming one: {st:?}"
    );
    assert_eq!(env.backend.count("/echo"), 0, "{}", env.backend.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_headers_are_refused_without_5xx() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let mut req = format!("GET /dev/echo HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..10_000 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&format!(
        "GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ));
    let ex = assert_rejected(&env, "10,000 headers", req.as_bytes(), &[431, 400]).await;
    eprintln!(
        "10,000 headers: {:?} after {:?}",
        ex.resp.as_ref().map(|r| r.status),
        ex.took
    );
    assert!(
        ex.took < Duration::from_secs(3),
        "the refusal took {:?}",
        ex.took
    );
    // several at once, then the gateway still answers
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = req.clone();
        let addr = env.addr();
        tasks.push(tokio::spawn(async move {
            exchange(addr, req.as_bytes(), true, Duration::from_secs(5)).await
        }));
    }
    for t in tasks {
        let ex = t.await.unwrap();
        let st = ex.resp.as_ref().map(|r| r.status);
        assert!(
            matches!(st, Some(431) | Some(400)),
            "concurrent 10,000-header request: {st:?} {:?}",
            ex.end
        );
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(env.backend.received_nothing(), "{}", env.backend.dump());
    assert_still_serving(&env, "10,000 headers").await;
}

// ---------------------------------------------------------------------------
// 6: slow header senders
// ---------------------------------------------------------------------------

/// What a trickling client saw: the answer, when the gateway ended the
/// connection (from the first byte), and how much of the head was sent.
struct Trickle {
    resp: Option<RawResponse>,
    raw: Vec<u8>,
    took: Duration,
    sent: usize,
    end: End,
}

/// Sends `head` one byte every `every` until the gateway ends the
/// connection (or 8 s pass).
async fn trickle(addr: SocketAddr, head: Vec<u8>, every: Duration) -> Trickle {
    let s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let done2 = done.clone();
    let reader = tokio::spawn(async move {
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 4096];
        let end = loop {
            let left = Duration::from_secs(8).saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, rd.read(&mut chunk)).await {
                Err(_) => break End::Timeout,
                Ok(Ok(0)) => break End::Eof,
                Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => break End::Error(e.to_string()),
            }
        };
        let took = t0.elapsed();
        done2.store(true, Ordering::SeqCst);
        (raw, end, took)
    });
    let mut sent = 0;
    for b in &head {
        if done.load(Ordering::SeqCst) {
            break;
        }
        if wr.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(every).await;
    }
    let (raw, end, took) = reader.await.unwrap();
    drop(wr);
    Trickle {
        resp: parse_response(&raw).map(|r| r.0),
        raw,
        took,
        sent,
        end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout_while_others_are_served() {
    let env = setup(
        &[
            ("header_read_timeout_ms", "500"),
            ("keepalive_park_ms", "250"),
        ],
        &["fine", "slow"],
    )
    .await;
    let host = env.host();
    // a complete, valid head, sent one byte every 30 ms: ~3.5 s in all
    let head = format!(
        "GET /dev/slow HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slowloris/1.0\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes();
    assert!(
        head.len() * 30 > 2500,
        "the head must take longer than the timeout"
    );
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        tricklers.push(tokio::spawn(trickle(
            env.addr(),
            head.clone(),
            Duration::from_millis(30),
        )));
    }
    // meanwhile, a normal client on other connections
    let c = data_client();
    let mut served = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        served.push(timed_get(&c, &env.url("fine")).await);
    }
    for (st, took) in &served {
        assert_eq!(*st, 200, "a normal client was not served during slowloris");
        assert!(
            *took < Duration::from_secs(1),
            "a normal client waited {took:?} during slowloris"
        );
    }
    for t in tricklers {
        let tr = t.await.unwrap();
        assert!(
            tr.end != End::Timeout,
            "a slow header sender was never cut ({} bytes sent)",
            tr.sent
        );
        assert!(
            tr.took >= Duration::from_millis(400) && tr.took < Duration::from_secs(3),
            "slow header sender cut after {:?} (header_read_timeout 500 ms)",
            tr.took
        );
        assert!(
            tr.sent < head.len(),
            "the whole head was accepted ({} bytes in {:?})",
            tr.sent,
            tr.took
        );
        if let Some(r) = &tr.resp {
            assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&tr.raw));
            assert_eq!(r.header("x-apigw-error").as_deref(), Some("RequestTimeout"));
            assert!(r.json()["message"].is_string(), "{}", r.text());
        } else {
            assert!(tr.raw.is_empty(), "{:?}", String::from_utf8_lossy(&tr.raw));
        }
    }
    assert_eq!(env.backend.count("/slow"), 0, "{}", env.backend.dump());
    assert_still_serving(&env, "slowloris").await;
}

// ---------------------------------------------------------------------------
// 7: HTTP/2 (h2c prior knowledge), frames by hand
// ---------------------------------------------------------------------------

mod h2 {
    //! RFC 9113 framing and the RFC 7541 HPACK subset the tests need.

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;

    /// 9-byte frame header and payload.
    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        assert!(len < 1 << 24);
        let mut f = Vec::with_capacity(9 + len);
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK integer with an `n`-bit prefix (§5.1); `first` holds the
    /// representation's pattern bits above the prefix.
    pub fn int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(first | v as u8);
            return;
        }
        out.push(first | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// A string literal, not Huffman-coded (§5.2).
    pub fn string(out: &mut Vec<u8>, s: &[u8]) {
        int(out, 7, 0x00, s.len());
        out.extend_from_slice(s);
    }

    /// Indexed header field (§6.1).
    pub fn indexed(out: &mut Vec<u8>, idx: usize) {
        int(out, 7, 0x80, idx);
    }

    /// Literal without indexing, name from the static table (§6.2.2).
    pub fn literal_indexed_name(out: &mut Vec<u8>, idx: usize, value: &[u8]) {
        int(out, 4, 0x00, idx);
        string(out, value);
    }

    /// Literal without indexing, new name (§6.2.2).
    pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x00);
        string(out, name);
        string(out, value);
    }

    /// Literal with incremental indexing, new name (§6.2.1): the field
    /// enters the dynamic table at index 62.
    pub fn literal_indexed_into_table(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x40);
        string(out, name);
        string(out, value);
    }

    /// A request head: `:method`, `:scheme http`, `:path`, `:authority`,
    /// then `fields`, all as literals that leave the dynamic table alone.
    pub fn block(
        method: &[u8],
        path: &[u8],
        authority: &str,
        fields: &[(&[u8], &[u8])],
    ) -> Vec<u8> {
        let mut b = Vec::new();
        literal_indexed_name(&mut b, 2, method); // :method
        indexed(&mut b, 6); // :scheme http
        literal_indexed_name(&mut b, 4, path); // :path
        literal_indexed_name(&mut b, 1, authority.as_bytes()); // :authority
        for (k, v) in fields {
            literal(&mut b, k, v);
        }
        b
    }

    /// `GET {path}` on `authority`, from the static table and literals.
    pub fn get_block(path: &str, authority: &str) -> Vec<u8> {
        let mut b = Vec::new();
        indexed(&mut b, 2); // :method GET
        indexed(&mut b, 6); // :scheme http
        literal_indexed_name(&mut b, 4, path.as_bytes()); // :path
        literal_indexed_name(&mut b, 1, authority.as_bytes()); // :authority
        b
    }

    pub struct Frame {
        pub ty: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub fn take_frame(buf: &mut bytes::BytesMut) -> Option<Frame> {
        if buf.len() < 9 {
            return None;
        }
        let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
        if buf.len() < 9 + len {
            return None;
        }
        let head = buf.split_to(9);
        let payload = buf.split_to(len).to_vec();
        Some(Frame {
            ty: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// The `:status` of a response header block: the first field, either
    /// indexed (static 8-14) or a literal with the `:status` name, plain or
    /// Huffman-coded digits.
    pub fn status(block: &[u8]) -> Option<u16> {
        let mut i = 0;
        // dynamic table size updates (001xxxxx) may come first
        while i < block.len() && block[i] & 0xe0 == 0x20 {
            let multi = block[i] & 0x1f == 0x1f;
            i += 1;
            if multi {
                while i < block.len() && block[i] & 0x80 != 0 {
                    i += 1;
                }
                i += 1;
            }
        }
        let b = *block.get(i)?;
        if b & 0x80 != 0 {
            return match b & 0x7f {
                8 => Some(200),
                9 => Some(204),
                10 => Some(206),
                11 => Some(304),
                12 => Some(400),
                13 => Some(404),
                14 => Some(500),
                _ => None,
            };
        }
        let idx = if b & 0xc0 == 0x40 {
            b & 0x3f
        } else if b & 0xe0 == 0x00 {
            b & 0x0f
        } else {
            return None;
        };
        if !(8..=14).contains(&idx) {
            return None;
        }
        let l = *block.get(i + 1)?;
        let len = (l & 0x7f) as usize;
        let s = block.get(i + 2..i + 2 + len)?;
        let digits = if l & 0x80 != 0 {
            huffman_digits(s)?
        } else {
            String::from_utf8(s.to_vec()).ok()?
        };
        digits.parse().ok()
    }

    /// Huffman-coded decimal digits (Appendix B: '0'-'2' are 5-bit codes
    /// 0-2, '3'-'9' 6-bit codes 0x19-0x1f), then EOS padding.
    fn huffman_digits(s: &[u8]) -> Option<String> {
        let total = s.len() * 8;
        let bit = |k: usize| (s[k / 8] >> (7 - k % 8)) & 1;
        let read =
            |from: usize, n: usize| (0..n).fold(0u32, |acc, j| acc << 1 | bit(from + j) as u32);
        let mut pos = 0;
        let mut out = String::new();
        while total - pos >= 5 {
            let five = read(pos, 5);
            if five <= 2 {
                out.push((b'0' + five as u8) as char);
                pos += 5;
                continue;
            }
            if total - pos >= 6 {
                let six = read(pos, 6);
                if (0x19..=0x1f).contains(&six) {
                    out.push((b'3' + (six - 0x19) as u8) as char);
                    pos += 6;
                    continue;
                }
            }
            break;
        }
        // what is left is padding: fewer than 8 bits, all ones
        if total - pos >= 8 || (pos..total).any(|k| bit(k) == 0) {
            return None;
        }
        Some(out)
    }
}

/// What the gateway sent on a raw HTTP/2 connection.
#[derive(Default, Debug)]
struct H2Seen {
    goaway: Option<(u32, u32)>,
    resets: HashMap<u32, u32>,
    statuses: HashMap<u32, u16>,
    frames: usize,
    /// EOF or the read error that ended the connection.
    ended: Option<String>,
}

/// A raw HTTP/2 client connection: we write frames, a task reads and
/// records what comes back.
struct H2Conn {
    wr: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<H2Seen>>,
    reader: tokio::task::JoinHandle<()>,
    written: usize,
}

impl H2Conn {
    /// Preface and SETTINGS, the server's SETTINGS acknowledged.
    async fn open(addr: SocketAddr) -> H2Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.set_nodelay(true);
        let (mut rd, mut wr) = s.into_split();
        let mut hello = h2::PREFACE.to_vec();
        hello.extend(h2::frame(h2::SETTINGS, 0, 0, &[]));
        wr.write_all(&hello).await.expect("write preface");
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut frames = Vec::new();
        'wait: loop {
            while let Some(f) = h2::take_frame(&mut buf) {
                let server_settings = f.ty == h2::SETTINGS && f.flags & h2::ACK == 0;
                frames.push(f);
                if server_settings {
                    break 'wait;
                }
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rd.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                other => panic!("no HTTP/2 SETTINGS from the gateway: {other:?}"),
            }
        }
        wr.write_all(&h2::frame(h2::SETTINGS, h2::ACK, 0, &[]))
            .await
            .expect("write settings ack");
        let seen = Arc::new(Mutex::new(H2Seen::default()));
        for f in frames {
            record_frame(&seen, f);
        }
        let seen2 = seen.clone();
        let reader = tokio::spawn(async move {
            let mut buf = buf;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Some(f) = h2::take_frame(&mut buf) {
                    record_frame(&seen2, f);
                }
                match rd.read(&mut chunk).await {
                    Ok(0) => {
                        seen2.lock().unwrap().ended = Some("eof".into());
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        seen2.lock().unwrap().ended = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        H2Conn {
            wr,
            seen,
            reader,
            written: 0,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(5), self.wr.write_all(bytes)).await {
            Ok(Ok(())) => {
                self.written += bytes.len();
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("write blocked for 5 s".into()),
        }
    }

    /// GOAWAY received, or the connection ended.
    fn closing(&self) -> bool {
        let s = self.seen.lock().unwrap();
        s.goaway.is_some() || s.ended.is_some()
    }

    /// Waits up to `within` for `f` to hold on what was seen.
    async fn wait_for(&self, within: Duration, f: impl Fn(&H2Seen) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if f(&self.seen.lock().unwrap()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn summary(&self) -> String {
        format!("{:?}", self.seen.lock().unwrap())
    }
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn record_frame(seen: &Mutex<H2Seen>, f: h2::Frame) {
    let mut s = seen.lock().unwrap();
    s.frames += 1;
    match f.ty {
        h2::GOAWAY if f.payload.len() >= 8 => {
            let last = u32::from_be_bytes(f.payload[0..4].try_into().unwrap()) & 0x7fff_ffff;
            let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
            s.goaway = Some((last, code));
        }
        h2::RST_STREAM if f.payload.len() >= 4 => {
            let code = u32::from_be_bytes(f.payload[0..4].try_into().unwrap());
            s.resets.insert(f.stream, code);
        }
        h2::HEADERS => {
            if let Some(st) = h2::status(&f.payload) {
                s.statuses.entry(f.stream).or_insert(st);
            }
        }
        h2::DATA => {}
        _ => {}
    }
}

/// Probes `url` every 50 ms until `stop`; the (status, time) of each.
fn spawn_prober(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u16, Duration)>> {
    tokio::spawn(async move {
        let c = data_client();
        let mut out = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            out.push(timed_get(&c, &url).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    })
}

/// One rapid-reset connection: up to `streams` GET streams, each opened
/// (HEADERS with END_STREAM) and cancelled (RST_STREAM) at once, written
/// 50 pairs at a time until the gateway ends the connection.
async fn rapid_reset(env: &Env, streams: u32) -> (u32, H2Conn) {
    let mut conn = H2Conn::open(env.addr()).await;
    let block = h2::get_block("/dev/rapid", &env.host());
    let mut opened = 0u32;
    while opened < streams && !conn.closing() {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let id = 2 * opened + 1;
            batch.extend(h2::frame(
                h2::HEADERS,
                h2::END_STREAM | h2::END_HEADERS,
                id,
                &block,
            ));
            batch.extend(h2::frame(h2::RST_STREAM, 0, id, &h2::CANCEL.to_be_bytes()));
            opened += 1;
        }
        if conn.send(&batch).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    // the gateway's verdict on this connection
    conn.wait_for(Duration::from_secs(3), |s| {
        s.goaway.is_some() || s.ended.is_some()
    })
    .await;
    (opened, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded_and_others_are_served() {
    const STREAMS: u32 = 5_000;
    // hyper's default SETTINGS_MAX_CONCURRENT_STREAMS: at most one
    // connection's worth of streams may reach the backend per connection
    const PER_CONN: usize = 200;
    let env = setup(&[], &["fine", "rapid"]).await;
    // control: the same streams, not reset, all reach the backend
    let mut conn = H2Conn::open(env.addr()).await;
    let block = h2::get_block("/dev/rapid", &env.host());
    for id in [1, 3, 5] {
        let f = h2::frame(h2::HEADERS, h2::END_STREAM | h2::END_HEADERS, id, &block);
        conn.send(&f).await.expect("send");
    }
    let ok = conn
        .wait_for(Duration::from_secs(5), |s| {
            [1, 3, 5].iter().all(|id| s.statuses.get(id) == Some(&200))
        })
        .await;
    assert!(ok, "three plain streams: {}", conn.summary());
    assert_eq!(env.backend.count("/rapid"), 3, "{}", env.backend.dump());
    drop(conn);
    env.backend.clear();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = spawn_prober(env.url("fine"), stop.clone());
    let t0 = Instant::now();
    let mut opened_total = 0;
    let mut conns = 0;
    // one connection after another for 1.5 s, the prober running alongside
    while t0.elapsed() < Duration::from_millis(1500) {
        let (opened, conn) = rapid_reset(&env, STREAMS).await;
        opened_total += opened;
        conns += 1;
        let seen = conn.summary();
        if conns == 1 {
            eprintln!("rapid reset: {opened} streams opened and reset; gateway sent {seen}");
        }
        let s = conn.seen.lock().unwrap();
        assert!(
            s.goaway.is_some() || s.ended.is_some(),
            "connection {conns}: {opened} streams opened and reset, and the gateway kept the connection: {seen}"
        );
        if let Some((last, _)) = s.goaway {
            assert!(
                last < 2 * STREAMS,
                "connection {conns}: GOAWAY after processing every stream: {seen}"
            );
        }
    }
    let attack = t0.elapsed();
    // what was forwarded lands, and the gateway settles
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let probes = prober.await.unwrap();
    let forwarded = env.backend.count("/rapid");
    eprintln!(
        "rapid reset: {opened_total} streams on {conns} connections in {attack:?}; \
         {forwarded} reached the backend; {} probes meanwhile",
        probes.len()
    );
    assert!(!probes.is_empty());
    for (st, took) in &probes {
        assert_eq!(*st, 200, "a client was not served during the rapid reset");
        assert!(
            *took < Duration::from_secs(2),
            "a client waited {took:?} during the rapid reset"
        );
    }
    assert!(
        forwarded <= conns * PER_CONN,
        "{forwarded} of {opened_total} reset streams were forwarded to the backend"
    );
    assert_still_serving(&env, "rapid reset").await;
}

/// An endless header block: `x-flood: fff...` literal fields back to
/// back, handed out in pieces that cut fields anywhere (as frame
/// boundaries may).
#[derive(Default)]
struct Fields {
    pending: Vec<u8>,
}

impl Fields {
    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            h2::literal(&mut self.pending, b"x-flood", &[b'f'; 100]);
        }
        self.pending.drain(..n).collect()
    }
}

/// Sends HEADERS without END_HEADERS, then CONTINUATION frames of
/// `frame_len` bytes of header block that never end; returns how many
/// bytes were written when the gateway was seen closing the connection.
async fn continuation_flood(env: &Env, frame_len: usize) -> Option<usize> {
    const LIMIT: usize = 4 * 1024 * 1024;
    let mut conn = H2Conn::open(env.addr()).await;
    let head = h2::get_block("/dev/flood", &env.host());
    conn.send(&h2::frame(h2::HEADERS, h2::END_STREAM, 1, &head))
        .await
        .expect("headers");
    let mut fields = Fields::default();
    let start = conn.written;
    let mut closed_at = None;
    while conn.written - start < LIMIT {
        if conn.closing() {
            closed_at = Some(conn.written - start);
            break;
        }
        // ~16 KiB per write
        let mut batch = Vec::new();
        while batch.len() < 16 * 1024 {
            batch.extend(h2::frame(h2::CONTINUATION, 0, 1, &fields.take(frame_len)));
        }
        if conn.send(&batch).await.is_err() {
            closed_at = Some(conn.written - start);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if closed_at.is_none() {
        // the last writes may have crossed the close
        if conn
            .wait_for(Duration::from_secs(2), |s| {
                s.goaway.is_some() || s.ended.is_some()
            })
            .await
        {
            closed_at = Some(conn.written - start);
        }
    }
    eprintln!(
        "CONTINUATION flood ({frame_len}-byte frames): closed after {closed_at:?} bytes; gateway sent {}",
        conn.summary()
    );
    assert!(
        !conn.seen.lock().unwrap().statuses.contains_key(&1),
        "the endless header block got a response"
    );
    closed_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_early() {
    let env = setup(&[], &["fine", "flood"]).await;
    // control: the same encoding, split over HEADERS and 4 CONTINUATION
    // frames that do end, is a request that reaches the backend
    let mut conn = H2Conn::open(env.addr()).await;
    let mut block = h2::get_block("/dev/flood", &env.host());
    let mut one = Vec::new();
    h2::literal(&mut one, b"x-flood", &[b'f'; 100]);
    block.extend(Fields::default().take(3 * one.len()));
    let pieces: Vec<&[u8]> = block.chunks(block.len().div_ceil(5)).collect();
    assert_eq!(pieces.len(), 5);
    for (i, piece) in pieces.iter().enumerate() {
        let (ty, flags) = match i {
            0 => (h2::HEADERS, h2::END_STREAM),
            4 => (h2::CONTINUATION, h2::END_HEADERS),
            _ => (h2::CONTINUATION, 0),
        };
        conn.send(&h2::frame(ty, flags, 1, piece))
            .await
            .expect("send");
    }
    let ok = conn
        .wait_for(Duration::from_secs(5), |s| s.statuses.get(&1) == Some(&200))
        .await;
    assert!(
        ok,
        "a header block in CONTINUATION frames: {}",
        conn.summary()
    );
    let r = &env.backend.requests()[0];
    assert_eq!(r.path, "/flood");
    assert_eq!(r.count("x-flood"), 3, "{:?}", r.headers);
    drop(conn);
    for frame_len in [16 * 1024, 16] {
        let closed_at = continuation_flood(&env, frame_len).await;
        let closed_at = closed_at.unwrap_or_else(|| {
            panic!("{frame_len}-byte CONTINUATION frames: the gateway kept reading 4 MiB")
        });
        assert!(
            closed_at <= 1024 * 1024,
            "{frame_len}-byte CONTINUATION frames: the connection was closed only after {closed_at} bytes"
        );
        assert_still_serving(&env, "a CONTINUATION flood").await;
    }
    assert_eq!(env.backend.count("/flood"), 1, "{}", env.backend.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_list_bomb_is_refused() {
    let env = setup(&[], &["fine", "bomb"]).await;
    let host = env.host();
    // max_header_bytes 16384: the h2 header list limit is 32 KiB. One
    // 4,000-byte field enters the dynamic table and is referenced again
    // by a one-byte index: `refs` x 4 KB decoded from ~4 KB on the wire.
    for refs in [20usize, 100] {
        let mut conn = H2Conn::open(env.addr()).await;
        let mut block = h2::get_block("/dev/bomb", &host);
        h2::literal_indexed_into_table(&mut block, b"x-bomb", &[b'b'; 4000]);
        for _ in 0..refs {
            h2::indexed(&mut block, 62);
        }
        assert!(block.len() < 16 * 1024);
        conn.send(&h2::frame(
            h2::HEADERS,
            h2::END_STREAM | h2::END_HEADERS,
            1,
            &block,
        ))
        .await
        .expect("send the bomb");
        let answered = conn
            .wait_for(Duration::from_secs(5), |s| {
                s.statuses.contains_key(&1)
                    || s.resets.contains_key(&1)
                    || s.goaway.is_some()
                    || s.ended.is_some()
            })
            .await;
        let summary = conn.summary();
        eprintln!("header list bomb x{refs}: {summary}");
        assert!(
            answered,
            "x{refs}: no answer to the header list bomb: {summary}"
        );
        let status = conn.seen.lock().unwrap().statuses.get(&1).copied();
        assert!(
            matches!(status, None | Some(431)),
            "x{refs}: the header list bomb was answered {status:?}: {summary}"
        );
        // the connection survives a refused stream: a normal request on it
        if !conn.closing() {
            conn.send(&h2::frame(
                h2::HEADERS,
                h2::END_STREAM | h2::END_HEADERS,
                3,
                &h2::get_block("/dev/fine", &host),
            ))
            .await
            .expect("send stream 3");
            let ok = conn
                .wait_for(Duration::from_secs(5), |s| s.statuses.get(&3) == Some(&200))
                .await;
            assert!(
                ok,
                "x{refs}: stream 3 after the refused bomb: {}",
                conn.summary()
            );
        }
        assert_still_serving(&env, "a header list bomb").await;
    }
    assert_eq!(env.backend.count("/bomb"), 0, "{}", env.backend.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h1_downgrade_never_smuggles() {
    let env = setup(&[], &["fine", "echo", "smuggled"]).await;
    let host = env.host();
    let smuggled = format!("GET /dev/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let crlf_value = format!("a\r\n\r\n{smuggled}");
    let crlf_path = format!("/dev/echo HTTP/1.1\r\nHost: {host}\r\n\r\n{smuggled}");
    let chunked_data = format!("0\r\n\r\n{smuggled}");
    let hello_data = format!("hello{smuggled}");
    // (name, method, path, extra fields, DATA, may it be forwarded)
    type Case<'a> = (
        &'a str,
        &'a [u8],
        &'a [u8],
        Vec<(&'a [u8], &'a [u8])>,
        Option<&'a [u8]>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "CRLF in a header value",
            b"GET",
            b"/dev/echo",
            vec![(b"x-inject", crlf_value.as_bytes())],
            None,
            false,
        ),
        (
            "LF in a header value",
            b"GET",
            b"/dev/echo",
            vec![(b"x-inject", b"a\nx-evil: 1")],
            None,
            false,
        ),
        (
            "CRLF in :path",
            b"GET",
            crlf_path.as_bytes(),
            vec![],
            None,
            false,
        ),
        (
            "space in :method",
            b"GET /dev/smuggled",
            b"/dev/echo",
            vec![],
            None,
            false,
        ),
        (
            "CRLF in a header name",
            b"GET",
            b"/dev/echo",
            vec![(b"x-a\r\ntransfer-encoding", b"chunked")],
            None,
            false,
        ),
        (
            "upper-case header name",
            b"GET",
            b"/dev/echo",
            vec![(b"Transfer-Encoding", b"chunked")],
            None,
            false,
        ),
        (
            "transfer-encoding: chunked",
            b"POST",
            b"/dev/echo",
            vec![(b"transfer-encoding", b"chunked")],
            Some(chunked_data.as_bytes()),
            false,
        ),
        (
            "content-length 0 with a body",
            b"POST",
            b"/dev/echo",
            vec![(b"content-length", b"0")],
            Some(smuggled.as_bytes()),
            true,
        ),
        (
            "content-length shorter than the body",
            b"POST",
            b"/dev/echo",
            vec![(b"content-length", b"5")],
            Some(hello_data.as_bytes()),
            true,
        ),
    ];
    for (name, method, path, fields, data, may_forward) in &cases {
        env.backend.clear();
        let mut conn = H2Conn::open(env.addr()).await;
        let block = h2::block(method, path, &host, fields);
        let flags = h2::END_HEADERS | if data.is_none() { h2::END_STREAM } else { 0 };
        conn.send(&h2::frame(h2::HEADERS, flags, 1, &block))
            .await
            .expect("send headers");
        if let Some(d) = data {
            // may fail: the stream or connection can be gone already
            let _ = conn.send(&h2::frame(h2::DATA, h2::END_STREAM, 1, d)).await;
        }
        let answered = conn
            .wait_for(Duration::from_secs(5), |s| {
                s.statuses.contains_key(&1)
                    || s.resets.contains_key(&1)
                    || s.goaway.is_some()
                    || s.ended.is_some()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = conn.summary();
        let reqs = env.backend.requests();
        eprintln!("h2 {name}: {seen}; {} forwarded", reqs.len());
        assert!(answered, "{name}: no answer: {seen}");
        assert!(
            reqs.iter().all(|r| !r.path.contains("smuggled")),
            "{name}: the smuggled request reached the backend:\n{}",
            env.backend.dump()
        );
        assert!(
            env.backend.conns().iter().all(|c| c.garbage.is_none()),
            "{name}: the backend got bytes that are no request:\n{}",
            env.backend.dump()
        );
        for r in &reqs {
            assert_eq!(r.path, "/echo", "{name}");
            let framings = r.count("content-length") + r.count("transfer-encoding");
            assert!(framings <= 1, "{name}: ambiguous framing {:?}", r.headers);
            assert!(
                r.headers
                    .iter()
                    .all(|(k, v)| !k.contains("evil") && !v.contains("evil")),
                "{name}: {:?}",
                r.headers
            );
            if let Some(cl) = r.header("content-length") {
                assert_eq!(cl.parse::<usize>().ok(), Some(r.body.len()), "{name}");
            }
        }
        if !may_forward {
            assert!(
                env.backend.received_nothing(),
                "{name}: forwarded:\n{}",
                env.backend.dump()
            );
            let status = conn.seen.lock().unwrap().statuses.get(&1).copied();
            assert!(
                status.is_none_or(|s| (400..500).contains(&s)),
                "{name}: answered {status:?}"
            );
        }
    }
    // control: a well-formed POST in the same frames is forwarded whole
    env.backend.clear();
    let mut conn = H2Conn::open(env.addr()).await;
    let block = h2::block(b"POST", b"/dev/echo", &host, &[(b"content-length", b"5")]);
    conn.send(&h2::frame(h2::HEADERS, h2::END_HEADERS, 1, &block))
        .await
        .expect("send");
    conn.send(&h2::frame(h2::DATA, h2::END_STREAM, 1, b"hello"))
        .await
        .expect("send");
    let ok = conn
        .wait_for(Duration::from_secs(5), |s| s.statuses.get(&1) == Some(&200))
        .await;
    assert!(ok, "a plain h2 POST: {}", conn.summary());
    let reqs = env.backend.requests();
    assert_eq!(reqs.len(), 1, "{}", env.backend.dump());
    assert_eq!(
        (reqs[0].method.as_str(), &reqs[0].body[..]),
        ("POST", &b"hello"[..])
    );
    assert_still_serving(&env, "h2 downgrade attempts").await;
}

// ---------------------------------------------------------------------------
// 8: account isolation on the management API
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_accounts_api_is_404_everywhere() {
    let gw = Gateway::start();
    let owner = gw.admin();
    let other = owner.with_opts(SignOpts {
        access_key: "second-access-key".into(),
        secret_key: "second-secret-key".into(),
        account_id: Some("secondaccount000000000000000002".into()),
        ..Default::default()
    });
    let s = simple_api(&owner, "owned-api", "things", "http://127.0.0.1:9/x").await;
    let api = &s.api_id;
    let rid = &s.resource_id;
    let root = &s.root_id;
    let dep = &s.deployment_id;
    let ac = &s.access_control_id;
    let before = owner
        .get(&format!("/v1/apis/{api}"))
        .await
        .expect(200)
        .clone();
    let before_res = owner.resources(api).await.len();

    // the other account's listing does not show it (and it has one of its own)
    other.create_api("other-api").await;
    let list = other.get("/v1/apis?size=100").await;
    let listed = list.expect(200)["apis"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        listed.iter().all(|a| a["id"] != json!(api)),
        "another account lists the API: {listed:?}"
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    let named = other.get("/v1/apis?name=owned").await;
    assert_eq!(named.expect(200)["count"], json!(0), "{}", named.text());

    let missing = "0123456789abcdef0123456789abcdef";
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let calls: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", format!("/v1/apis/{api}"), None),
        (
            "PUT",
            format!("/v1/apis/{api}/description"),
            Some(json!({"description": "taken"})),
        ),
        ("GET", format!("/v1/apis/{api}/resources"), None),
        ("GET", format!("/v1/apis/{api}/resources/{rid}"), None),
        (
            "POST",
            format!("/v1/apis/{api}/resources/{root}"),
            Some(json!({"path_part": "intruder"})),
        ),
        (
            "GET",
            format!("/v1/apis/{api}/resources/{rid}/methods"),
            None,
        ),
        (
            "GET",
            format!("/v1/apis/{api}/resources/{rid}/methods/GET"),
            None,
        ),
        (
            "PUT",
            format!("/v1/apis/{api}/resources/{rid}/methods/GET"),
            Some(
                json!({"api_key_required": false, "integration_type": "HTTP", "endpoint_url": "http://127.0.0.1:9/evil", "query_strings": {}, "request_headers": {}}),
            ),
        ),
        (
            "POST",
            format!("/v1/apis/{api}/resources/{rid}/methods"),
            Some(
                json!({"method_type": "POST", "integration_type": "HTTP", "endpoint_url": "http://127.0.0.1:9/evil", "api_key_required": false}),
            ),
        ),
        ("GET", format!("/v1/apis/{api}/deployments"), None),
        (
            "POST",
            format!("/v1/apis/{api}/deployments"),
            Some(json!({"stage_type": "existing", "stage_name": "dev", "description": "x"})),
        ),
        ("GET", format!("/v1/apis/{api}/stages"), None),
        ("GET", format!("/v1/apis/{api}/stages/dev"), None),
        (
            "PUT",
            format!("/v1/apis/{api}/stages/dev/deployment"),
            Some(json!({"deployment_id": dep})),
        ),
        ("GET", format!("/v1/apis/{api}/access-controls"), None),
        ("GET", format!("/v1/apis/{api}/access-controls/{ac}"), None),
        (
            "PUT",
            format!("/v1/apis/{api}/access-controls/{ac}"),
            Some(
                json!({"allowed_ip_addr": ["0.0.0.0/0"], "connected_stages": ["dev"], "description": "open"}),
            ),
        ),
        ("GET", format!("/v1/apis/{api}/auths"), None),
        ("GET", format!("/v1/apis/{api}/usage-plans"), None),
        ("GET", format!("/v1/apis/{api}/resource-policies"), None),
        (
            "GET",
            format!("/v1/apis/{api}/reports?stage_name=dev&start_date={today}&end_date={today}"),
            None,
        ),
        (
            "DELETE",
            format!("/v1/apis/{api}/access-controls/{ac}"),
            None,
        ),
        (
            "DELETE",
            format!("/v1/apis/{api}/resources/{rid}/methods/GET"),
            None,
        ),
        ("DELETE", format!("/v1/apis/{api}/resources/{rid}"), None),
        ("DELETE", format!("/v1/apis/{api}/stages/dev"), None),
        ("DELETE", format!("/v1/apis/{api}"), None),
    ];
    for (method, path, body) in &calls {
        let r = other.call(method, path, body.as_ref()).await;
        assert_eq!(
            (r.status, r.err_code().as_str()),
            (404, "NotFound"),
            "{method} {path} by another account: {}",
            r.text()
        );
        // the same answer as for an API that does not exist at all
        let ghost = other
            .call(method, &path.replace(api.as_str(), missing), body.as_ref())
            .await;
        assert_eq!(
            (ghost.status, ghost.err_code()),
            (r.status, r.err_code()),
            "{method} {path}: another account's API answers unlike a missing one"
        );
        assert_eq!(
            r.err_detail().replace(api.as_str(), missing),
            ghost.err_detail(),
            "{method} {path}: the detail tells another account's API from a missing one"
        );
    }
    // nothing changed for the owner
    let after = owner
        .get(&format!("/v1/apis/{api}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(before, after, "another account changed the API");
    assert_eq!(owner.resources(api).await.len(), before_res);
    owner
        .get(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await
        .expect(200);
    let acs = owner.access_controls(api).await;
    assert!(acs.iter().any(|a| a["id"] == json!(ac)), "{acs:?}");
    let m = owner
        .get(&format!("/v1/apis/{api}/resources/{rid}/methods/GET"))
        .await;
    assert!(
        !m.text().contains("evil"),
        "another account rewrote the method: {}",
        m.text()
    );
}

// ---------------------------------------------------------------------------
// 9-13: faulty backends
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_gw_error(resp: &RawResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(
        resp.header("x-apigw-error").as_deref(),
        Some(code),
        "{:?} {}",
        resp.headers,
        resp.text()
    );
    assert!(resp.json()["message"].is_string(), "{}", resp.text());
}

fn get_req(host: &str, part: &str) -> Vec<u8> {
    format!("GET /dev/{part} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502_quickly() {
    let gw = Gateway::start_with(&[("upstream_connect_timeout_ms", "3000")]);
    let backend = RawBackend::start();
    let dead = format!("http://127.0.0.1:{}/dead", closed_port());
    let ok = backend.url("/fine");
    let api = deployed_api(
        &gw,
        "refused",
        &[("fine", "GET", ok.as_str()), ("dead", "GET", dead.as_str())],
    )
    .await;
    let host = gw.host(&api);
    for _ in 0..3 {
        let ex = exchange(
            gw.data_addr,
            &get_req(&host, "dead"),
            false,
            Duration::from_secs(5),
        )
        .await;
        let resp = ex
            .resp
            .as_ref()
            .unwrap_or_else(|| panic!("no answer ({:?}): {}", ex.end, ex.text()));
        assert_gw_error(resp, 502, "BadGateway");
        assert!(
            ex.took < Duration::from_secs(1),
            "a refused connection took {:?} to become 502",
            ex.took
        );
    }
    let (st, _) = timed_get(&data_client(), &gw.invoke_url(&api, "/dev/fine")).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cut_mid_body_is_cut_for_the_client() {
    let env = setup(&[], &["fine", "cutreset", "cutfin"]).await;
    let host = env.host();
    for part in ["cutreset", "cutfin"] {
        let ex = exchange(
            env.addr(),
            &get_req(&host, part),
            true,
            Duration::from_secs(8),
        )
        .await;
        assert!(
            ex.end != End::Timeout,
            "{part}: the client hung after {:?} ({} bytes)",
            ex.took,
            ex.raw.len()
        );
        assert!(
            ex.took < Duration::from_secs(5),
            "{part}: took {:?}",
            ex.took
        );
        match parse_response(&ex.raw) {
            // the head went out before the upstream failed: the body is cut
            Some((resp, complete)) if resp.status == 200 => {
                assert!(
                    !complete,
                    "{part}: the client got a complete response from a cut upstream"
                );
                assert!(
                    resp.body.len() < CUT_PROMISED,
                    "{part}: {}",
                    resp.body.len()
                );
            }
            // or the gateway noticed before sending the head
            Some((resp, _)) => assert_gw_error(&resp, 502, "BadGateway"),
            // or the connection was just closed
            None => assert!(ex.raw.is_empty(), "{part}: {}", ex.text()),
        }
        assert_eq!(env.backend.count(&format!("/{part}")), 1);
        assert_still_serving(&env, part).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_at_the_timeout_and_others_are_served() {
    let env = setup(&[("upstream_timeout_ms", "2000")], &["fine", "stall"]).await;
    let backend = &env.backend;
    let host = env.host();
    let addr = env.addr();
    let stalled = tokio::spawn({
        let req = get_req(&host, "stall");
        async move { exchange(addr, &req, false, Duration::from_secs(8)).await }
    });
    // once the stalled request is at the backend, a healthy route answers promptly
    assert!(
        eventually(Duration::from_secs(3), move || async move {
            backend.count("/stall") == 1
        })
        .await,
        "{}",
        env.backend.dump()
    );
    let mut fast = Vec::new();
    for _ in 0..3 {
        let ex = exchange(addr, &get_req(&host, "fine"), false, Duration::from_secs(5)).await;
        assert_eq!(
            ex.resp.as_ref().map(|r| r.status),
            Some(200),
            "{}",
            ex.text()
        );
        fast.push(ex.took);
    }
    assert!(
        !stalled.is_finished(),
        "the stalled request ended before the healthy ones were served"
    );
    let ex = stalled.await.unwrap();
    let resp = ex
        .resp
        .as_ref()
        .unwrap_or_else(|| panic!("no answer ({:?}): {}", ex.end, ex.text()));
    assert_gw_error(resp, 504, "GatewayTimeout");
    assert!(
        ex.took >= Duration::from_millis(1900) && ex.took < Duration::from_millis(4000),
        "504 after {:?} (upstream_timeout_ms 2000)",
        ex.took
    );
    for took in fast {
        assert!(
            took < Duration::from_millis(1000),
            "a healthy route took {took:?} while another request stalled"
        );
    }
    // the gateway gave up on the upstream connection too
    assert!(
        eventually(Duration::from_secs(3), move || async move {
            backend.open_with("/stall") == 0
        })
        .await,
        "stalled upstream connections left open:\n{}",
        env.backend.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_answers_are_502() {
    let env = setup(&[], &["fine", "garbage", "bighead", "dupcl"]).await;
    let host = env.host();
    for part in ["garbage", "bighead", "dupcl"] {
        let ex = exchange(
            env.addr(),
            &get_req(&host, part),
            false,
            Duration::from_secs(8),
        )
        .await;
        let resp = ex
            .resp
            .as_ref()
            .unwrap_or_else(|| panic!("{part}: no answer ({:?}): {:?}", ex.end, ex.text()));
        assert_gw_error(resp, 502, "BadGateway");
        assert!(
            ex.took < Duration::from_secs(3),
            "{part}: 502 after {:?}",
            ex.took
        );
        assert!(
            !ex.text().contains("THIS IS NOT HTTP") && !ex.text().contains("x-pad-"),
            "{part}: upstream bytes leaked to the client"
        );
        assert_eq!(
            env.backend.count(&format!("/{part}")),
            1,
            "{}",
            env.backend.dump()
        );
        assert_still_serving(&env, part).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_extra_responses_never_answer_other_requests() {
    let env = setup(&[], &["fine", "extra", "extralate", "nocontent"]).await;
    // one keep-alive client: its requests stay on one gateway worker, so
    // they share that worker's pooled upstream connections
    let c = data_client();
    for part in ["extra", "extralate", "nocontent"] {
        for i in 0..10 {
            let r = c.get(env.url(part)).send().await.expect("send");
            let st = r.status().as_u16();
            let poisoned = r.headers().contains_key("x-poison");
            let body = r.bytes().await.unwrap_or_default();
            assert!(
                (st == 200 && &body[..] == b"backend-ok") || st == 204,
                "{part} #{i}: {st} {:?}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                !poisoned,
                "{part} #{i}: answered by the unasked-for response"
            );
            if part == "extralate" {
                // the extra response arrives while the connection is idle
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let r = c.get(env.url("fine")).send().await.expect("send");
            let st = r.status().as_u16();
            let poisoned = r.headers().contains_key("x-poison");
            let body = r.bytes().await.unwrap_or_default();
            assert!(
                st == 200 && &body[..] == b"backend-ok" && !poisoned,
                "after {part} #{i}, another request got {st} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert_eq!(env.backend.count("/fine"), 30, "{}", env.backend.dump());
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_mid_request_release_their_descriptors() {
    // per kind: a GET then FIN, a GET then RST, a POST cut mid-body then FIN
    const EACH: usize = 12;
    const CLIENTS: usize = 3 * EACH;
    // upstream_timeout_ms stays 29 s: what is released within 5 s is
    // released because the client left
    let env = setup(&[], &["fine", "stall"]).await;
    let backend = &env.backend;
    let host = env.host();
    let pid = env.gw.pid();
    // warm up: pooled upstream connections, allocator, timers
    for _ in 0..4 {
        let ex = exchange(
            env.addr(),
            &get_req(&host, "fine"),
            false,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ex.resp.map(|r| r.status), Some(200));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = fd_count(pid);
    let post = format!(
        "POST /dev/stall HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n{}",
        "p".repeat(10_000)
    );
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut s = TcpStream::connect(env.addr()).await.expect("connect");
        let req = match i % 3 {
            2 => post.clone().into_bytes(),
            _ => get_req(&host, "stall"),
        };
        s.write_all(&req).await.expect("write");
        clients.push(s);
    }
    let arrived = move || {
        let gets = backend.count("/stall");
        let posts = backend
            .conns()
            .iter()
            .filter(|c| find(&c.raw, b"POST /stall").is_some())
            .count();
        (gets, posts)
    };
    assert!(
        eventually(Duration::from_secs(5), move || async move {
            arrived() == (2 * EACH, EACH)
        })
        .await,
        "(GETs, POSTs) at the backend: {:?} of ({}, {EACH})",
        arrived(),
        2 * EACH
    );
    let busy = fd_count(pid);
    assert!(
        busy >= baseline + CLIENTS,
        "{CLIENTS} clients in flight but fds {baseline} -> {busy}"
    );
    for (i, s) in clients.into_iter().enumerate() {
        if i % 3 == 1 {
            let _ = s.set_zero_linger(); // the close resets
        }
        drop(s);
    }
    let t0 = Instant::now();
    let released = eventually(Duration::from_secs(5), move || async move {
        fd_count(pid) <= baseline + 4
    })
    .await;
    let now = fd_count(pid);
    eprintln!(
        "fds: baseline {baseline}, {busy} with {CLIENTS} stalled clients, {now} {:?} after they left",
        t0.elapsed(),
    );
    assert!(
        released,
        "the gateway still holds {now} fds (baseline {baseline}) 5 s after {CLIENTS} clients left; \
         stalled upstream connections still open: {}",
        backend.open_with("/stall")
    );
    // what went: the upstream exchanges of the clients that left
    assert!(
        eventually(Duration::from_secs(2), move || async move {
            backend.open_with("/stall") == 0
                && backend
                    .conns()
                    .iter()
                    .all(|c| c.closed || find(&c.raw, b"POST /stall").is_none())
        })
        .await,
        "stalled upstream requests kept after their clients left:\n{}",
        backend.dump()
    );
    assert_still_serving(&env, "clients leaving mid-request").await;
}
