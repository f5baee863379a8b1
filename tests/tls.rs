//! TLS termination against the real binary and real clients: SNI picking
//! each domain's certificate (curl, HTTP/2 and HTTP/1.1), the default
//! certificate for other names, SIGHUP reloading a certificate replaced
//! on disk while a connection opened before stays usable, an expired
//! certificate (served, with a warning), and h2load over TLS with 100
//! concurrent streams per connection.
//!
//! Certificates are made by the openssl CLI in a temp dir: a CA, a
//! wildcard default certificate for the invoke domain, and one for each
//! of two names (`[[tls.certificates]]`, chosen by their SANs).

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALPHA: &str = "alpha.example.test";
const BETA: &str = "beta.example.test";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA (`ca.pem`) in a new temp dir.
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("apigw-tls-")
            .tempdir()
            .expect("tempdir");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=apigw-test-ca",
                "-days",
                "30",
            ],
        );
        std::fs::write(dir.path().join("index.txt"), "").expect("index");
        std::fs::write(dir.path().join("serial"), "1000\n").expect("serial");
        std::fs::write(
            dir.path().join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n\
             [p]\ncommonName = supplied\n",
        )
        .expect("ca.cnf");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A key and a CSR `{file}.csr` with subject CN=`cn` and DNS `sans`.
    fn csr(&self, file: &str, cn: &str, sans: &[&str]) {
        let san = sans
            .iter()
            .map(|s| format!("DNS:{s}"))
            .collect::<Vec<_>>()
            .join(",");
        openssl(
            self.dir.path(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{file}.key"),
                "-out",
                &format!("{file}.csr"),
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                &format!("subjectAltName={san}"),
            ],
        );
    }

    /// `{file}.pem` / `{file}.key`: CN=`cn`, valid now, signed by the CA.
    fn leaf(&self, file: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        self.signed(file, cn, sans, None)
    }

    /// Signed by the CA with `openssl ca`; `dates`: start and end
    /// (`YYYYMMDDHHMMSSZ`), else 30 days from now.
    fn signed(
        &self,
        file: &str,
        cn: &str,
        sans: &[&str],
        dates: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        self.csr(file, cn, sans);
        let csr = format!("{file}.csr");
        let out = format!("{file}.pem");
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
            "ca.key", "-in", &csr, "-out", &out,
        ];
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "30"]),
        }
        openssl(self.dir.path(), &args);
        (self.path(&out), self.path(&format!("{file}.key")))
    }
}

/// The leaf certificate (DER) of a PEM file.
fn leaf_der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .expect("open pem")
        .next()
        .expect("a certificate")
        .expect("parse pem")
        .to_vec()
}

/// Gateway settings for a TLS listener with `default` and more
/// certificates.
fn tls_settings(
    default: &(PathBuf, PathBuf),
    more: &[&(PathBuf, PathBuf)],
) -> Vec<(String, String)> {
    let mut s = vec![
        ("tls_listen".to_string(), "\"127.0.0.1:0\"".to_string()),
        (
            "tls_cert_file".into(),
            format!("{:?}", default.0.display().to_string()),
        ),
        (
            "tls_key_file".into(),
            format!("{:?}", default.1.display().to_string()),
        ),
    ];
    if !more.is_empty() {
        let items = more
            .iter()
            .map(|(c, k)| {
                format!(
                    "{{ cert_file = {:?}, key_file = {:?} }}",
                    c.display().to_string(),
                    k.display().to_string()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        s.push(("tls_certificates".into(), format!("[{items}]")));
    }
    s
}

fn start(settings: &[(String, String)]) -> Gateway {
    let s: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Gateway::start_with(&s)
}

/// The TLS listener's address from the startup line (` tls=ADDR`).
fn tls_addr(gw: &Gateway) -> SocketAddr {
    let a = gw.listening("tls");
    a.parse()
        .unwrap_or_else(|_| panic!("tls={a} is not an address"))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

struct Curl {
    status: u16,
    /// `curl -v`'s stderr: the handshake, the served certificate's
    /// subject, the protocol used.
    verbose: String,
}

/// `curl --http2|--http1.1 https://{sni}:{port}{path}` to the TLS
/// listener (`--resolve`), verifying with the test CA, with `Host` set to
/// `host` when given.
fn curl(
    proto: &str,
    pki: &Pki,
    sni: &str,
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-v",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        proto,
        "--max-time",
        "10",
    ])
    .arg("--resolve")
    .arg(format!("{sni}:{}:127.0.0.1", addr.port()))
    .arg("--cacert")
    .arg(pki.path("ca.pem"))
    .arg(format!("https://{sni}:{}{path}", addr.port()));
    if let Some(h) = host {
        cmd.arg("-H").arg(format!("Host: {h}"));
    }
    let out = cmd.output().expect("run curl");
    let verbose = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "curl {proto} {sni} failed ({code}):\n{verbose}"
    );
    Curl {
        status: code.parse().unwrap_or(0),
        verbose,
    }
}

/// A TLS connection of our own (rustls), kept open across a reload.
struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl TlsConn {
    fn open(pki: &Pki, sni: &str, addr: SocketAddr) -> TlsConn {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
            roots.add(c.expect("ca pem")).expect("add ca");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client conn");
        let tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.flush().expect("handshake");
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        TlsConn { tls }
    }

    fn peer_leaf(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().expect("peer certs")[0].to_vec()
    }

    /// GET `path` with `Host: host` on this connection; the status.
    fn get(&mut self, host: &str, path: &str) -> u16 {
        write!(self.tls, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
        self.tls.flush().expect("flush");
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.tls.read(&mut b).expect("read response");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        while buf.len() < head_end + len {
            let n = self.tls.read(&mut b).expect("read body");
            assert!(n > 0, "closed in the body");
            buf.extend_from_slice(&b[..n]);
        }
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status")
    }
}

fn invoke_host(api: &str) -> String {
    format!("{api}.{INVOKE_DOMAIN}")
}

fn wait_for_log(gw: &Gateway, needle: &str, within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if gw.logs().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_each_domains_certificate_over_h2_and_http1_and_others_get_the_default() {
    let pki = Pki::new();
    let default = pki.leaf("default", "apigw-default", &[&format!("*.{INVOKE_DOMAIN}")]);
    let alpha = pki.leaf("alpha", "alpha-cert", &[ALPHA]);
    let beta = pki.leaf("beta", "beta-cert", &[BETA]);
    let gw = start(&tls_settings(&default, &[&alpha, &beta]));
    let addr = tls_addr(&gw);
    let backend = Backend::start("tls");
    let api = deployed_api(&gw, "tls-sni", &[("hello", "GET", &backend.url("/hello"))]).await;
    let host = invoke_host(&api);

    for (proto, shows) in [("--http2", "using HTTP/2"), ("--http1.1", "using HTTP/1.1")] {
        let before = backend.count();
        // Each name gets its own certificate; the request routes by Host.
        for (sni, subject) in [(ALPHA, "CN=alpha-cert"), (BETA, "CN=beta-cert")] {
            let c = curl(proto, &pki, sni, addr, "/dev/hello", Some(&host));
            assert!(
                c.verbose.contains(&format!("subject: {subject}")),
                "{proto} {sni}: expected {subject}:\n{}",
                c.verbose
            );
            assert!(c.verbose.contains(shows), "{proto} {sni}:\n{}", c.verbose);
            assert_eq!(c.status, 200, "{proto} {sni}:\n{}", c.verbose);
        }
        // The invoke host itself: the (wildcard) default certificate.
        let c = curl(proto, &pki, &host, addr, "/dev/hello", None);
        assert!(
            c.verbose.contains("subject: CN=apigw-default"),
            "{}",
            c.verbose
        );
        assert_eq!(c.status, 200);
        assert_eq!(
            backend.count(),
            before + 3,
            "{proto}: three requests proxied"
        );
    }

    // A name without a certificate of its own gets the default one (which
    // does not cover it: curl refuses it, having verified what it got).
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "unknown.example.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN = apigw-default"), "s_client:\n{text}");
    // Names are case-insensitive.
    let c = curl(
        "--http1.1",
        &pki,
        "ALPHA.Example.TEST",
        addr,
        "/dev/hello",
        Some(&host),
    );
    assert!(
        c.verbose.contains("subject: CN=alpha-cert"),
        "{}",
        c.verbose
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_domain_serves_its_own_certificate_and_routes_its_base_paths() {
    const SHOP: &str = "shop.example.test";
    let pki = Pki::new();
    let default = pki.leaf("default", "apigw-default", &[&format!("*.{INVOKE_DOMAIN}")]);
    pki.leaf("shop", "shop-cert", &[SHOP]);
    let mut settings = tls_settings(&default, &[]);
    settings.push((
        "tls_cert_dir".into(),
        format!("{:?}", pki.dir.path().display().to_string()),
    ));
    let gw = start(&settings);
    let addr = tls_addr(&gw);
    let users_backend = Backend::start("users");
    let orders_backend = Backend::start("orders");
    let users = deployed_api(
        &gw,
        "tls-users",
        &[("users", "GET", &users_backend.url("/users"))],
    )
    .await;
    let orders = deployed_api(
        &gw,
        "tls-orders",
        &[("orders", "GET", &orders_backend.url("/orders"))],
    )
    .await;
    let served_subject = |sni: &str| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                sni,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Before the domain exists: the default certificate.
    assert!(served_subject(SHOP).contains("CN = apigw-default"));

    let admin = gw.admin();
    admin
        .post(
            "/v1/domain-names",
            &serde_json::json!({"domain_name": SHOP, "certificate_file": "shop.pem",
                "private_key_file": "shop.key"}),
        )
        .await
        .expect(201);
    let maps = format!("/v1/domain-names/{SHOP}/base-path-mappings");
    for (base, api) in [("v1", &users), ("v2", &orders)] {
        admin
            .post(
                &maps,
                &serde_json::json!({"base_path": base, "api_id": api, "stage_name": "dev"}),
            )
            .await
            .expect(201);
    }
    // The domain's certificate is served as soon as the create answered,
    // verified by curl against the CA, over HTTP/2 and HTTP/1.1; each
    // base path reaches its API's stage without the stage in the path.
    let (u0, o0) = (users_backend.count(), orders_backend.count());
    for proto in ["--http2", "--http1.1"] {
        let c = curl(proto, &pki, SHOP, addr, "/v1/users", None);
        assert!(c.verbose.contains("subject: CN=shop-cert"), "{}", c.verbose);
        assert_eq!(c.status, 200, "{}", c.verbose);
        let c = curl(proto, &pki, SHOP, addr, "/v2/orders", None);
        assert_eq!(c.status, 200, "{}", c.verbose);
    }
    assert_eq!(users_backend.count(), u0 + 2);
    assert_eq!(orders_backend.count(), o0 + 2);
    let c = curl("--http2", &pki, SHOP, addr, "/v3/nothing", None);
    assert_eq!(c.status, 404, "{}", c.verbose);

    // The domain deleted: its name gets the default certificate again.
    admin.delete(&format!("{maps}/v1")).await.expect(204);
    admin.delete(&format!("{maps}/v2")).await.expect(204);
    admin
        .delete(&format!("/v1/domain-names/{SHOP}"))
        .await
        .expect(204);
    assert!(served_subject(SHOP).contains("CN = apigw-default"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_replaced_certificate_and_open_connections_go_on() {
    let pki = Pki::new();
    let default = pki.leaf("default", "apigw-default", &[&format!("*.{INVOKE_DOMAIN}")]);
    let alpha = pki.leaf("alpha", "alpha-v1", &[ALPHA]);
    let mut settings = tls_settings(&default, &[&alpha]);
    // The reload is logged at info.
    settings.push(("log".into(), "\"info\"".into()));
    let gw = start(&settings);
    let addr = tls_addr(&gw);
    let backend = Backend::start("tls");
    let api = deployed_api(
        &gw,
        "tls-reload",
        &[("hello", "GET", &backend.url("/hello"))],
    )
    .await;
    let host = invoke_host(&api);

    let v1 = leaf_der(&alpha.0);
    let mut old = TlsConn::open(&pki, ALPHA, addr);
    assert_eq!(old.peer_leaf(), v1);
    assert_eq!(old.get(&host, "/dev/hello"), 200);

    // Replace alpha's files on disk (a new key too), then SIGHUP.
    let v2_files = pki.leaf("alpha-v2", "alpha-v2", &[ALPHA]);
    std::fs::copy(&v2_files.0, &alpha.0).expect("replace cert");
    std::fs::copy(&v2_files.1, &alpha.1).expect("replace key");
    let v2 = leaf_der(&alpha.0);
    assert_ne!(v1, v2);
    let hup = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    assert!(
        wait_for_log(
            &gw,
            "SIGHUP: TLS certificates reloaded",
            Duration::from_secs(5)
        ),
        "no reload in the log:\n{}",
        gw.logs()
    );

    // New connections get the new certificate...
    let new = TlsConn::open(&pki, ALPHA, addr);
    assert_eq!(new.peer_leaf(), v2);
    let c = curl("--http2", &pki, ALPHA, addr, "/dev/hello", Some(&host));
    assert!(c.verbose.contains("subject: CN=alpha-v2"), "{}", c.verbose);
    // ... the connection opened before the reload still serves requests.
    for _ in 0..3 {
        assert_eq!(old.get(&host, "/dev/hello"), 200);
    }
    // Idle past the park interval (parked TLS connection), then again.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(old.get(&host, "/dev/hello"), 200);

    // A broken file on reload: the name keeps its certificate, the log
    // names the file, the gateway keeps serving.
    std::fs::write(&alpha.0, "not a certificate").expect("break cert");
    Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill -HUP");
    let alpha_path = alpha.0.display().to_string();
    assert!(
        wait_for_log(&gw, &alpha_path, Duration::from_secs(5)),
        "the failed file is not named:\n{}",
        gw.logs()
    );
    let again = TlsConn::open(&pki, ALPHA, addr);
    assert_eq!(again.peer_leaf(), v2);
    assert!(
        !gw.logs().contains("PRIVATE KEY"),
        "key material in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_served_and_logged() {
    let pki = Pki::new();
    let expired = pki.signed(
        "expired",
        "apigw-expired",
        &[&format!("*.{INVOKE_DOMAIN}")],
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let gw = start(&tls_settings(&expired, &[]));
    let addr = tls_addr(&gw);
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("certificate has expired"))
        .unwrap_or_else(|| panic!("no expiry warning:\n{logs}"));
    assert!(line.contains(&expired.0.display().to_string()), "{line}");
    assert!(line.contains("2020-01-02T00:00:00Z"), "{line}");
    // Served: curl sees it (and, verifying, refuses it as expired).
    let out = Command::new("curl")
        .args(["-sS", "-v", "-k", "-o", "/dev/null", "--http1.1"])
        .arg(format!("https://127.0.0.1:{}/", addr.port()))
        .output()
        .expect("curl");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("subject: CN=apigw-expired"), "{verbose}");
    assert!(
        verbose.contains("expire date: Jan  2 00:00:00 2020 GMT"),
        "{verbose}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2load_over_tls_with_100_streams_per_connection_has_no_errors() {
    if Command::new("h2load").arg("--version").output().is_err() {
        panic!("h2load missing: apt-get install nghttp2-client (tests/run.sh does)");
    }
    let pki = Pki::new();
    let default = pki.leaf("default", "apigw-default", &[&format!("*.{INVOKE_DOMAIN}")]);
    let gw = start(&tls_settings(&default, &[]));
    let addr = tls_addr(&gw);
    let backend = Backend::start("tls");
    let api = deployed_api(
        &gw,
        "tls-h2load",
        &[("hello", "GET", &backend.url("/hello"))],
    )
    .await;
    let host = invoke_host(&api);
    let before = backend.count();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("h2load")
            .args(["-c", "2", "-m", "100", "-n", "2000", "-H"])
            .arg(format!(":authority: {host}"))
            .arg(format!("https://127.0.0.1:{}/dev/hello", addr.port()))
            .output()
            .expect("run h2load")
    })
    .await
    .expect("h2load task");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load failed:\n{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert_eq!(backend.count(), before + 2000);
}

/// HTTP/2 frame: 9-byte header and payload (RFC 9113 §4.1).
fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_over_tls_is_cut_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let default = pki.leaf("default", "apigw-default", &[&format!("*.{INVOKE_DOMAIN}")]);
    let gw = start(&tls_settings(&default, &[]));
    let addr = tls_addr(&gw);
    let backend = Backend::start("tls");
    let api = deployed_api(
        &gw,
        "tls-rapid",
        &[("rapid", "GET", &backend.url("/rapid"))],
    )
    .await;
    let host = invoke_host(&api);
    let before = backend.count();

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.clone()).expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut rd, mut wr) = tokio::io::split(tls);
    // What the gateway sends: GOAWAY (type 7) or the end of the connection.
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut b = [0u8; 16 * 1024];
        let mut goaway = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut b)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&b[..n]),
                _ => return (goaway, true),
            }
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                if buf[3] == 0x7 {
                    goaway = true;
                }
                buf.drain(..9 + len);
            }
            if goaway {
                return (true, false);
            }
        }
    });
    // HPACK: :method GET, :scheme https (static), :path and :authority
    // literals with indexed names, not added to the table.
    let mut block = vec![0x82, 0x87, 0x04, 10];
    block.extend_from_slice(b"/dev/rapid");
    block.push(0x01);
    block.push(host.len() as u8);
    block.extend_from_slice(host.as_bytes());
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    let _ = wr.write_all(&out).await;
    const STREAMS: u32 = 5_000;
    let mut opened = 0u32;
    'send: while opened < STREAMS {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let id = 2 * opened + 1;
            batch.extend(h2_frame(0x1, 0x1 | 0x4, id, &block));
            batch.extend(h2_frame(0x3, 0, id, &0x8u32.to_be_bytes()));
            opened += 1;
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            break 'send;
        }
    }
    let (goaway, ended) = reader.await.expect("reader");
    assert!(
        goaway || ended,
        "{opened} streams opened and reset over TLS and the connection went on"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forwarded = backend.count() - before;
    assert!(
        forwarded <= 128,
        "{forwarded} of {opened} reset streams reached the backend"
    );
    // Others are still served, over TLS h2.
    let c = curl("--http2", &pki, &host, addr, "/dev/rapid", None);
    assert_eq!(c.status, 200, "{}", c.verbose);
}
