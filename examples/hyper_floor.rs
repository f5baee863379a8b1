//! The hyper floor: the least work an HTTP/1 reverse proxy built from the
//! parts apigw's data plane is built from does per request, as a peer for
//! `benches/load.py` (target `hyper-floor`).
//!
//! It has apigw's shape and nothing of its gateway work: one
//! current-thread tokio runtime per worker, each with its own
//! `SO_REUSEPORT` listener; hyper 1's HTTP/1 server on every accepted
//! connection; a per-worker, lock-free list of idle upstream keep-alive
//! connections (hyper's HTTP/1 client, each driven by its own task, as
//! apigw's pool does); a connection goes back to the list when the
//! response body has been read; mimalloc through apigw's own allocator
//! shim. Every request is forwarded as it came (method, target, headers
//! and body untouched) and every response returned as it came: no route,
//! no filter, no header added or removed, no timeout, no access log. What
//! apigw spends beyond this per request is its gateway work; what this
//! spends beyond nginx or haproxy is the cost of hyper and tokio.
//!
//! ```sh
//! cargo build --release --example hyper_floor
//! target/release/examples/hyper_floor 127.0.0.1:8085 127.0.0.1:9001 1
//! ```
//!
//! Arguments: listen address, upstream address, workers (default 1).
//! A benchmark peer, not a product: it has no timeouts, no connection
//! cap and no hop-by-hop handling.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use apigw::dataplane::alloc::Mimalloc;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

type Sender = SendRequest<Incoming>;

thread_local! {
    /// This worker's idle upstream connections, most recent last.
    static IDLE: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

/// The upstream's response body; hands its connection back to the idle
/// list once the body has been read to its end.
struct PooledBody {
    inner: Option<Incoming>,
    tx: Option<Sender>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(tx) = self.tx.take() {
            IDLE.with(|idle| idle.borrow_mut().push(tx));
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = std::task::ready!(Pin::new(inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Err(_)) => this.tx = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper stops polling a body whose length says it has ended.
        if self.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
            self.release();
        }
    }
}

fn bad_gateway() -> Response<PooledBody> {
    let mut resp = Response::new(PooledBody {
        inner: None,
        tx: None,
    });
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn connect(upstream: SocketAddr) -> Option<Sender> {
    let tcp = TcpStream::connect(upstream).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(tx)
}

async fn proxy(
    req: Request<Incoming>,
    upstream: SocketAddr,
) -> Result<Response<PooledBody>, Infallible> {
    let mut tx = loop {
        match IDLE.with(|idle| idle.borrow_mut().pop()) {
            Some(tx) if tx.is_closed() => continue,
            Some(tx) => break tx,
            None => match connect(upstream).await {
                Some(tx) => break tx,
                None => return Ok(bad_gateway()),
            },
        }
    };
    if tx.ready().await.is_err() {
        return Ok(bad_gateway());
    }
    match tx.send_request(req).await {
        Ok(resp) => Ok(resp.map(|body| PooledBody {
            inner: Some(body),
            tx: Some(tx),
        })),
        Err(_) => Ok(bad_gateway()),
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn worker(addr: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = listener(addr)?;
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.max_headers(256);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let _ = tcp.set_nodelay(true);
        let conn = h1.serve_connection(
            TokioIo::new(tcp),
            service_fn(move |req| proxy(req, upstream)),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR [WORKERS]";
    let parse = |i: usize| -> SocketAddr {
        match args.get(i).and_then(|a| a.parse().ok()) {
            Some(a) => a,
            None => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    };
    let (addr, upstream) = (parse(1), parse(2));
    let workers: usize = match args.get(3).map(|w| w.parse()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(worker(addr, upstream)),
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("hyper_floor: {e}");
            std::process::exit(1);
        }
    }
}
