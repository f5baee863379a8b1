//! Test harness shared by the integration tests: starts the real `apigw`
//! binary on free ports with a temporary SQLite store (or, when
//! `APIGW_TEST_STORE=postgres`, a fresh database on the PostgreSQL server
//! of `APIGW_TEST_PG_URL`: tests/run.sh runs the management suite a second
//! time that way), signs management
//! calls exactly as an SCP client does, runs a recording hyper backend, and
//! offers raw-socket helpers for the limit tests.
#![allow(dead_code)]

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Constants of the contract
// ---------------------------------------------------------------------------

pub const DEV_ACCESS_KEY: &str = "apigw-dev-access-key";
pub const DEV_SECRET_KEY: &str = "apigw-dev-secret-key";
pub const DEV_ACCOUNT_ID: &str = "devaccount0000000000000000000001";
pub const CLIENT_TYPE: &str = "Openapi";
pub const INVOKE_DOMAIN: &str = "apigw.localhost";

// ---------------------------------------------------------------------------
// SCP signature (independent implementation)
// ---------------------------------------------------------------------------

/// base64(HMAC-SHA256(secret, METHOD + url + timestamp + access_key + account_id + client_type)).
pub fn scp_signature(
    secret: &str,
    method: &str,
    url: &str,
    timestamp: &str,
    access_key: &str,
    account_id: &str,
    client_type: &str,
) -> String {
    let message = format!("{method}{url}{timestamp}{access_key}{account_id}{client_type}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A signing timestamp never used before by this test process: the
/// gateway refuses a signature it has already seen (replay), and two
/// identical requests signed within one millisecond would share one.
pub fn fresh_ts_ms() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

// ---------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------

/// Default TOML settings written to every test gateway's config file
/// (values are TOML literals). Tests override single keys.
fn default_settings() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("data_listen".into(), "\"127.0.0.1:0\"".into());
    m.insert("admin_listen".into(), "\"127.0.0.1:0\"".into());
    m.insert("invoke_domain".into(), format!("\"{INVOKE_DOMAIN}\""));
    m.insert("public_base_url".into(), "\"\"".into());
    m.insert("region".into(), "\"kr-west1\"".into());
    m.insert("srn_offering".into(), "\"scp\"".into());
    m.insert("max_header_bytes".into(), "16384".into());
    m.insert("max_body_bytes".into(), "10485760".into());
    m.insert("header_read_timeout_ms".into(), "10000".into());
    m.insert("upstream_connect_timeout_ms".into(), "5000".into());
    m.insert("upstream_timeout_ms".into(), "29000".into());
    m.insert("log".into(), "\"warn\"".into());
    m
}

/// Captured stdout/stderr of the gateway (bounded).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<String>>);

impl Logs {
    fn push(&self, line: &str) {
        let mut s = self.0.lock().unwrap();
        s.push_str(line);
        s.push('\n');
        // keep the tail only
        if s.len() > 256 * 1024 {
            let cut = s.len() - 128 * 1024;
            let cut = (cut..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(cut);
            s.drain(..cut);
        }
    }
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

pub struct Gateway {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub env: Vec<(String, String)>,
    pub logs: Logs,
}

impl Gateway {
    /// A gateway with the default test settings.
    pub fn start() -> Gateway {
        Self::start_with(&[])
    }

    /// Settings overridden in the config file; values are TOML literals,
    /// e.g. `("max_body_bytes", "1000")`, `("log", "\"debug\"")`.
    pub fn start_with(settings: &[(&str, &str)]) -> Gateway {
        Self::start_full(settings, &[])
    }

    /// Settings in the file and extra environment variables (APIGW_...).
    pub fn start_full(settings: &[(&str, &str)], env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("apigw-test-")
            .tempdir()
            .expect("tempdir");
        let mut s = default_settings();
        let store_url = if std::env::var("APIGW_TEST_STORE").as_deref() == Ok("postgres") {
            let base = pg_url().expect("APIGW_TEST_STORE=postgres needs APIGW_TEST_PG_URL");
            pg_fresh_database(&base)
        } else {
            format!("sqlite://{}", dir.path().join("apigw.db").display())
        };
        s.insert("store_url".into(), format!("\"{store_url}\""));
        for (k, v) in settings {
            s.insert((*k).to_string(), (*v).to_string());
        }
        let mut toml = String::from("# written by tests/common\n");
        for (k, v) in &s {
            toml.push_str(&format!("{k} = {v}\n"));
        }
        toml.push_str(&format!(
            "\n[[credentials]]\naccess_key = \"{DEV_ACCESS_KEY}\"\nsecret_key = \"{DEV_SECRET_KEY}\"\naccount_id = \"{DEV_ACCOUNT_ID}\"\n"
        ));
        toml.push_str(
            "\n[[credentials]]\naccess_key = \"second-access-key\"\nsecret_key = \"second-secret-key\"\naccount_id = \"secondaccount000000000000000002\"\n",
        );
        let config_path = dir.path().join("apigw.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let logs = Logs::default();
        let (child, data_addr, admin_addr) = spawn_gateway(&config_path, dir.path(), &env, &logs);
        Gateway {
            data_addr,
            admin_addr,
            child,
            dir,
            config_path,
            env,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to 10 s (then SIGKILL).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kill the process (SIGKILL: nothing gets a chance to flush) and
    /// start it again on the same config file and store. Ports change.
    pub fn restart(&mut self) {
        self.kill();
        let (child, data_addr, admin_addr) =
            spawn_gateway(&self.config_path, self.dir.path(), &self.env, &self.logs);
        self.child = child;
        self.data_addr = data_addr;
        self.admin_addr = admin_addr;
    }

    /// Start a second process on the same config file and store while
    /// this one may still run (with `drain_handover_socket` set it takes
    /// the listeners over; otherwise this one must have exited). This
    /// gateway follows the new process; the previous one is returned, to
    /// be stopped with [`sigterm`] and [`wait_exit`].
    pub fn start_successor(&mut self) -> Child {
        let (child, data_addr, admin_addr) =
            spawn_gateway(&self.config_path, self.dir.path(), &self.env, &self.logs);
        self.data_addr = data_addr;
        self.admin_addr = admin_addr;
        std::mem::replace(&mut self.child, child)
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.admin_addr)
    }

    pub fn data_port(&self) -> u16 {
        self.data_addr.port()
    }

    /// Host header of an API's invoke URL.
    pub fn host(&self, api_id: &str) -> String {
        format!("{api_id}.{INVOKE_DOMAIN}:{}", self.data_port())
    }

    /// `http://{api}.apigw.localhost:{port}{path}` (path starts with `/stage`).
    pub fn invoke_url(&self, api_id: &str, path: &str) -> String {
        format!("http://{}{}", self.host(api_id), path)
    }

    /// Peak resident set size of the gateway process, in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn vm_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// An address of the startup line (`apigw listening data=... tls=...
    /// metrics=...`) by its name; panics when the line has none.
    pub fn listening(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        let logs = self.logs();
        logs.lines()
            .filter(|l| l.contains("apigw listening"))
            .flat_map(|l| l.split_whitespace())
            .find_map(|t| t.strip_prefix(prefix.as_str()))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {prefix} in the listening line:\n{logs}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send SIGTERM to a gateway process.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// Wait up to `within` for a process to exit (`None`: still running,
/// then it is killed).
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            let n = rest.trim().trim_end_matches("kB").trim();
            return n.parse().expect("parse kB");
        }
    }
    panic!("{key} not in /proc/{pid}/status");
}

/// The PostgreSQL server of the cluster tests (tests/run.sh starts one and
/// sets it): `postgres://user@host:port/db`.
pub fn pg_url() -> Option<String> {
    std::env::var("APIGW_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// `url` naming database `db` instead (the path after host[:port]).
pub fn pg_url_with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("postgres url has a scheme");
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{db}{query}")
}

/// A new, empty database on the server of `base` (named t_<random>);
/// its URL. Run on a thread of its own: the client is synchronous.
pub fn pg_fresh_database(base: &str) -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let base = base.to_string();
    let n = name.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&base, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to APIGW_TEST_PG_URL {base}: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {n}"))
            .expect("create test database");
        pg_url_with_database(&base, &n)
    })
    .join()
    .expect("create database thread")
}

pub fn gateway_binary() -> &'static str {
    env!("CARGO_BIN_EXE_apigw")
}

fn spawn_gateway(
    config: &Path,
    cwd: &Path,
    env: &[(String, String)],
    logs: &Logs,
) -> (Child, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(gateway_binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // the test must not inherit overrides from the caller's environment
    for (k, _) in std::env::vars() {
        if k.starts_with("APIGW_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn apigw");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();

    let (tx, rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let reader = BufReader::new(stdout);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).to_string();
                logs.push(&format!("[stdout] {line}"));
                if tx.is_some() {
                    if let Some(addrs) = parse_listening_line(&line) {
                        let _ = tx.take().unwrap().send(addrs);
                    }
                }
            }
        });
    }
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let reader = BufReader::new(stderr);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                logs.push(&format!("[stderr] {}", String::from_utf8_lossy(&line)));
            }
        });
    }
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((data, admin)) => (child, data, admin),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "apigw did not print its listening line ({e:?}); exit: {status:?}\n--- output ---\n{}",
                logs.text()
            );
        }
    }
}

/// `apigw listening data=127.0.0.1:PORT admin=127.0.0.1:PORT`
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("apigw listening")?;
    let mut data = None;
    let mut admin = None;
    for tok in rest.split_whitespace() {
        if let Some(v) = tok.strip_prefix("data=") {
            data = v.parse().ok();
        } else if let Some(v) = tok.strip_prefix("admin=") {
            admin = v.parse().ok();
        }
    }
    Some((data?, admin?))
}

// ---------------------------------------------------------------------------
// Management API client
// ---------------------------------------------------------------------------

/// How a management request is authenticated (for the 401 tests).
#[derive(Clone, Debug)]
pub struct SignOpts {
    pub access_key: String,
    pub secret_key: String,
    /// None: the Scp-AccountId header is not sent (and "" is signed).
    pub account_id: Option<String>,
    pub timestamp_ms: Option<i64>,
    /// Use this signature instead of computing one.
    pub signature: Option<String>,
    /// Sign this URL instead of the one requested.
    pub signed_url: Option<String>,
    /// Send no Scp-* headers at all.
    pub unsigned: bool,
    /// Headers left out.
    pub omit: Vec<&'static str>,
    pub api_version: Option<String>,
}

impl Default for SignOpts {
    fn default() -> Self {
        SignOpts {
            access_key: DEV_ACCESS_KEY.into(),
            secret_key: DEV_SECRET_KEY.into(),
            account_id: Some(DEV_ACCOUNT_ID.into()),
            timestamp_ms: None,
            signature: None,
            signed_url: None,
            unsigned: false,
            omit: Vec::new(),
            api_version: Some("apigateway 1.2".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// `errors[0].code`
    pub fn err_code(&self) -> String {
        self.json["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    pub fn err_detail(&self) -> String {
        self.json["errors"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
    }
    /// Panics with the body when the status differs; returns the JSON.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {}: {}",
            self.status,
            self.text()
        );
        &self.json
    }
    /// Asserts the SCP error envelope with this status/code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        self.expect(status);
        let errs = self.json["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array in error answer: {}", self.text()));
        assert!(!errs.is_empty(), "empty errors array: {}", self.text());
        assert_eq!(self.err_code(), code, "error code: {}", self.text());
        assert_eq!(
            errs[0]["status"].as_u64(),
            Some(status as u64),
            "errors[0].status must be the JSON number {status}: {}",
            self.text()
        );
    }
    /// 400 BadRequest whose detail starts with `field`.
    #[track_caller]
    pub fn expect_bad_field(&self, field: &str) {
        self.expect_error(400, "BadRequest");
        let d = self.err_detail();
        assert!(
            d.starts_with(field),
            "detail should start with the field name {field:?}, got {d:?}"
        );
    }
}

#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub opts: SignOpts,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Admin {
        Admin {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            opts: SignOpts::default(),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client signing with other credentials.
    pub fn with_opts(&self, opts: SignOpts) -> Admin {
        Admin {
            opts,
            ..self.clone()
        }
    }

    pub async fn send_raw(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        opts: &SignOpts,
    ) -> Resp {
        let url = format!("{}{}", self.base(), path_and_query);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, &url);
        if !opts.unsigned {
            let ts = opts.timestamp_ms.unwrap_or_else(fresh_ts_ms).to_string();
            let account = opts.account_id.clone().unwrap_or_default();
            let signed_url = opts.signed_url.clone().unwrap_or_else(|| url.clone());
            let sig = opts.signature.clone().unwrap_or_else(|| {
                scp_signature(
                    &opts.secret_key,
                    method,
                    &signed_url,
                    &ts,
                    &opts.access_key,
                    &account,
                    CLIENT_TYPE,
                )
            });
            let mut headers: Vec<(&'static str, String)> = vec![
                ("Scp-AccessKey", opts.access_key.clone()),
                ("Scp-Timestamp", ts),
                ("Scp-ClientType", CLIENT_TYPE.to_string()),
                ("Scp-Signature", sig),
            ];
            if let Some(a) = &opts.account_id {
                headers.push(("Scp-AccountId", a.clone()));
            }
            if let Some(v) = &opts.api_version {
                headers.push(("Scp-Api-Version", v.clone()));
            }
            for (k, v) in headers {
                if !opts.omit.iter().any(|o| o.eq_ignore_ascii_case(k)) {
                    rb = rb.header(k, v);
                }
            }
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("read body").to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            json,
        }
    }

    /// The Scp-* headers for a request (for hand-made raw requests).
    pub fn signed_headers(&self, method: &str, path_and_query: &str) -> Vec<(String, String)> {
        let url = format!("{}{}", self.base(), path_and_query);
        let ts = fresh_ts_ms().to_string();
        let sig = scp_signature(
            DEV_SECRET_KEY,
            method,
            &url,
            &ts,
            DEV_ACCESS_KEY,
            DEV_ACCOUNT_ID,
            CLIENT_TYPE,
        );
        vec![
            ("Scp-AccessKey".into(), DEV_ACCESS_KEY.into()),
            ("Scp-Timestamp".into(), ts),
            ("Scp-ClientType".into(), CLIENT_TYPE.into()),
            ("Scp-AccountId".into(), DEV_ACCOUNT_ID.into()),
            ("Scp-Signature".into(), sig),
        ]
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(|v| serde_json::to_vec(v).unwrap());
        self.send_raw(method, path, b, None, &self.opts).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None).await
    }

    // ---- builders used by many tests --------------------------------------

    /// The same client signing as the second configured account
    /// (`second-access-key`, account `secondaccount000000000000000002`).
    pub fn second_account(&self) -> Admin {
        self.with_opts(SignOpts {
            access_key: "second-access-key".into(),
            secret_key: "second-secret-key".into(),
            account_id: Some("secondaccount000000000000000002".into()),
            ..Default::default()
        })
    }

    /// A PRIVATE API named `name`: its id and its PrivateLink service id.
    pub async fn create_private_api(&self, name: &str) -> (String, String) {
        let r = self
            .post(
                "/v1/apis",
                &json!({"name": name, "endpoint_type": "PRIVATE"}),
            )
            .await;
        let api = r.expect(202)["id"].as_str().expect("id").to_string();
        let sid = self.get(&format!("/v1/apis/{api}")).await.expect(200)["api"]
            ["privatelink_service_id"]
            .as_str()
            .expect("privatelink_service_id")
            .to_string();
        (api, sid)
    }

    /// A PRIVATE API `priv-api` with GET /{part} to `url` deployed on stage
    /// dev and a token for dev: (api id, service id, token).
    pub async fn private_api_with_token(&self, part: &str, url: &str) -> (String, String, String) {
        let (api, sid) = self.create_private_api("priv-api").await;
        let root = self.root_id(&api).await;
        let rid = self.create_resource(&api, &root, part).await;
        self.create_http_method(&api, &rid, "GET", url).await;
        self.deploy(&api, "new", Some("dev")).await;
        let token = self
            .post(
                &format!("/v1/apis/{api}/auths"),
                &json!({"name": "tok", "expiration_period": 90, "connected_stages": ["dev"]}),
            )
            .await
            .expect(201)["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        (api, sid, token)
    }

    pub async fn create_api(&self, name: &str) -> String {
        let r = self
            .post(
                "/v1/apis",
                &json!({"name": name, "description": "test api"}),
            )
            .await;
        let v = r.expect(202);
        let id = v["id"].as_str().expect("id").to_string();
        assert!(is_id(&id), "api id {id:?}");
        id
    }

    pub async fn resources(&self, api: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/apis/{api}/resources")).await;
        r.expect(200)["resources"]
            .as_array()
            .expect("resources array")
            .clone()
    }

    pub async fn root_id(&self, api: &str) -> String {
        let res = self.resources(api).await;
        let root = res
            .iter()
            .find(|r| r["path"] == "/")
            .unwrap_or_else(|| panic!("no root resource in {res:?}"));
        root["id"].as_str().unwrap().to_string()
    }

    pub async fn create_resource(&self, api: &str, parent: &str, part: &str) -> String {
        let r = self
            .post(
                &format!("/v1/apis/{api}/resources/{parent}"),
                &json!({ "path_part": part }),
            )
            .await;
        r.expect(200)["id"]
            .as_str()
            .expect("resource id")
            .to_string()
    }

    pub async fn create_http_method(&self, api: &str, rid: &str, method: &str, url: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/apis/{api}/resources/{rid}/methods"),
                &json!({
                    "method_type": method,
                    "integration_type": "HTTP",
                    "endpoint_url": url,
                    "api_key_required": false,
                }),
            )
            .await;
        r.expect(200).clone()
    }

    /// PUT .../methods/{TYPE} with a new HTTP endpoint.
    pub async fn set_http_method(&self, api: &str, rid: &str, method: &str, url: &str) {
        self.put(
            &format!("/v1/apis/{api}/resources/{rid}/methods/{method}"),
            &json!({
                "api_key_required": false,
                "integration_type": "HTTP",
                "endpoint_url": url,
                "query_strings": {},
                "request_headers": {},
            }),
        )
        .await
        .expect(200);
    }

    /// POST /deployments; returns the deployment id.
    pub async fn deploy(&self, api: &str, stage_type: &str, stage: Option<&str>) -> String {
        let mut body =
            json!({"stage_type": stage_type, "description": format!("deploy {stage_type}")});
        if let Some(s) = stage {
            body["stage_name"] = json!(s);
        }
        let r = self
            .post(&format!("/v1/apis/{api}/deployments"), &body)
            .await;
        let id = r.expect(200)["deployment_id"]
            .as_str()
            .expect("deployment_id")
            .to_string();
        assert!(is_id(&id), "deployment id {id:?}");
        id
    }

    pub async fn set_stage_deployment(&self, api: &str, stage: &str, deployment: &str) -> Resp {
        self.put(
            &format!("/v1/apis/{api}/stages/{stage}/deployment"),
            &json!({ "deployment_id": deployment }),
        )
        .await
    }

    /// Creates an access control; returns its id.
    pub async fn create_access_control(
        &self,
        api: &str,
        name: &str,
        ips: &[&str],
        stages: &[&str],
    ) -> String {
        let r = self
            .post(
                &format!("/v1/apis/{api}/access-controls"),
                &json!({"name": name, "allowed_ip_addr": ips, "connected_stages": stages, "description": "test"}),
            )
            .await;
        r.expect(201)["id"]
            .as_str()
            .expect("access control id")
            .to_string()
    }

    pub async fn access_controls(&self, api: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/apis/{api}/access-controls")).await;
        r.expect(200)["access_controls"]
            .as_array()
            .expect("access_controls array")
            .clone()
    }

    /// POST /v1/functions (the gateway's function registry); returns its id.
    pub async fn register_function(&self, name: &str, url: &str) -> String {
        let r = self
            .post("/v1/functions", &json!({"name": name, "url": url}))
            .await;
        r.expect(201)["function"]["id"]
            .as_str()
            .expect("function id")
            .to_string()
    }

    /// The access control named `name` of the API.
    pub async fn access_control_named(&self, api: &str, name: &str) -> Value {
        self.access_controls(api)
            .await
            .into_iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no access control named {name}"))
    }
}

/// 32 lowercase hex chars.
pub fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
        .unwrap_or(false)
}

/// A list field whose entries may each hold comma-separated items
/// (`["dev,stg"]`), flattened and sorted.
pub fn flat_list(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One API with a GET method on `/{part}` to `endpoint`, deployed to
/// stage `dev`, with an access control allowing 127.0.0.1 connected.
pub struct SimpleApi {
    pub api_id: String,
    pub root_id: String,
    pub resource_id: String,
    pub deployment_id: String,
    pub access_control_id: String,
}

pub async fn simple_api(admin: &Admin, name: &str, part: &str, endpoint: &str) -> SimpleApi {
    let api_id = admin.create_api(name).await;
    let root_id = admin.root_id(&api_id).await;
    let resource_id = admin.create_resource(&api_id, &root_id, part).await;
    admin
        .create_http_method(&api_id, &resource_id, "GET", endpoint)
        .await;
    let deployment_id = admin.deploy(&api_id, "new", Some("dev")).await;
    let access_control_id = admin
        .create_access_control(&api_id, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    SimpleApi {
        api_id,
        root_id,
        resource_id,
        deployment_id,
        access_control_id,
    }
}

// ---------------------------------------------------------------------------
// Data-plane client
// ---------------------------------------------------------------------------

/// Resolves every name to 127.0.0.1 (the port comes from the URL), so that
/// invoke URLs `http://{api}.apigw.localhost:{port}/...` reach the test
/// gateway with the right Host header.
struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter());
            Ok(addrs)
        })
    }
}

pub fn data_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(LoopbackResolver))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// HTTP/2 cleartext with prior knowledge.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(LoopbackResolver))
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Retries `f` until it returns true or `within` passes; returns the last result.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET status of an invoke URL with the data client.
pub async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------
// Deterministic byte pattern for the streaming tests
// ---------------------------------------------------------------------------

const PATTERN_PERIOD: usize = 251;
const PIECE: usize = 64 * 1024;

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..PIECE + PATTERN_PERIOD)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect()
    })
}

/// The pattern bytes [offset, offset+len), len <= 64 KiB.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    assert!(len <= PIECE);
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    Bytes::copy_from_slice(&pattern_table()[start..start + len])
}

/// Whether `data` equals the pattern at `offset`.
pub fn pattern_matches(offset: u64, data: &[u8]) -> bool {
    let t = pattern_table();
    let mut off = offset;
    for piece in data.chunks(PIECE) {
        let start = (off % PATTERN_PERIOD as u64) as usize;
        if &t[start..start + piece.len()] != piece {
            return false;
        }
        off += piece.len() as u64;
    }
    true
}

/// A stream of `total` pattern bytes in 64 KiB chunks.
pub fn pattern_stream(
    total: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(0u64, move |off| async move {
        if off >= total {
            return None;
        }
        let len = std::cmp::min(PIECE as u64, total - off) as usize;
        Some((Ok(pattern_chunk(off, len)), off + len as u64))
    })
}

// ---------------------------------------------------------------------------
// Recording backend (a real hyper server)
// ---------------------------------------------------------------------------

/// What the backend received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// path + query exactly as received
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// First MiB of the body.
    pub body: Vec<u8>,
    pub pattern_ok: bool,
    pub body_error: bool,
    /// The gateway's side of the upstream connection.
    pub peer: SocketAddr,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }
}

pub struct Backend {
    pub addr: SocketAddr,
    pub tag: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Behaviour, chosen by the request path the gateway sends to:
/// - `/sleep/{ms}...`: read the body, sleep, then answer as below;
/// - `/big/{n}`: answer `n` pattern bytes (with content-length), streamed;
/// - `/status/{code}...`: answer with that status;
/// - anything else: 200.
///   The answer (except /big) is JSON describing the request:
///   `{"tag","method","uri","headers":{..},"body_len","pattern_ok","body"}`,
///   plus headers `x-backend-tag`, `x-backend: yes`. When the request has
///   `x-backend-hop: 1` the answer also carries hop-by-hop headers
///   (`keep-alive`, `connection: x-resp-hop`, `x-resp-hop`); with
///   `x-backend-cookies: 1` it sets two `set-cookie` headers.
impl Backend {
    pub fn start(tag: &str) -> Backend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (addr_tx, addr_rx) = mpsc::channel();
        let seen2 = seen.clone();
        let tag2 = tag.to_string();
        std::thread::Builder::new()
            .name(format!("backend-{tag}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(backend_main(tag2, seen2, stop_rx, addr_tx));
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .unwrap();
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("backend addr");
        Backend {
            addr,
            tag: tag.to_string(),
            seen,
            stop: Some(stop_tx),
        }
    }

    /// `http://127.0.0.1:{port}{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend received nothing")
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

async fn backend_main(
    tag: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    addr_tx.send(listener.local_addr().unwrap()).unwrap();
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let Ok((stream, peer)) = acc else { continue };
                let _ = stream.set_nodelay(true);
                let seen = seen.clone();
                let tag = tag.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        backend_handle(req, tag.clone(), seen.clone(), peer)
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}

fn full_body(b: impl Into<Bytes>) -> BoxBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn backend_handle(
    req: hyper::Request<hyper::body::Incoming>,
    tag: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    peer: SocketAddr,
) -> Result<hyper::Response<BoxBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let mut len = 0u64;
    let mut kept = Vec::new();
    let mut pattern_ok = true;
    let mut body_error = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if pattern_ok && !pattern_matches(len, &data) {
                        pattern_ok = false;
                    }
                    if kept.len() < 1024 * 1024 {
                        let room = 1024 * 1024 - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    len += data.len() as u64;
                }
            }
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let s = Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        version: format!("{:?}", parts.version),
        headers: headers.clone(),
        body_len: len,
        body: kept.clone(),
        pattern_ok,
        body_error,
        peer,
    };
    seen.lock().unwrap().push(s);

    let path = parts.uri.path().to_string();
    let mut status = 200u16;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() == Some(&"sleep") {
        let ms: u64 = segs.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if segs.first() == Some(&"big") {
        let n: u64 = segs.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let stream =
            futures_util::StreamExt::map(pattern_stream(n), |r| r.map(hyper::body::Frame::data));
        let body = http_body_util::StreamBody::new(stream).boxed();
        let resp = hyper::Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header("content-length", n.to_string())
            .header("x-backend-tag", tag)
            .body(body)
            .unwrap();
        return Ok(resp);
    }
    if segs.first() == Some(&"status") {
        status = segs.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    }
    let mut hmap = serde_json::Map::new();
    for (k, v) in &headers {
        match hmap.get_mut(k) {
            Some(Value::String(old)) => {
                old.push_str(", ");
                old.push_str(v);
            }
            _ => {
                hmap.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let small_body = if kept.len() <= 64 * 1024 {
        Value::String(String::from_utf8_lossy(&kept).to_string())
    } else {
        Value::Null
    };
    let doc = json!({
        "tag": tag,
        "method": parts.method.as_str(),
        "uri": uri,
        "headers": Value::Object(hmap),
        "body_len": len,
        "pattern_ok": pattern_ok,
        "body": small_body,
    });
    let mut rb = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-backend", "yes")
        .header("x-backend-tag", tag.as_str());
    if parts
        .headers
        .get("x-backend-hop")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        rb = rb
            .header("keep-alive", "timeout=5")
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "secret");
    }
    if parts
        .headers
        .get("x-backend-cookies")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        rb = rb
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; Path=/; HttpOnly");
    }
    Ok(rb.body(full_body(doc.to_string())).unwrap())
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over a socket (for hop-by-hop, limit and slow-client tests)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Sends `request` as is, reads until the peer closes (send `Connection:
/// close`) or `timeout`, and parses one response. Returns the raw bytes too.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> (Option<RawResponse>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    // write while reading, so that an early answer (413, 431) is read even
    // when the peer stops reading what we send
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        // keep the write half open until the reader is done
        wr
    });
    let s = &mut rd;
    let mut buf = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf) {
                    if r.1 {
                        // complete (length known and reached)
                        writer.abort();
                        return (Some(r.0), buf);
                    }
                }
            }
            Ok(Err(_)) => break,
            Err(_) => break,
        }
    }
    writer.abort();
    (parse_response(&buf).map(|r| r.0), buf)
}

/// Parses a response; the flag tells whether the body is complete.
pub fn parse_response(buf: &[u8]) -> Option<(RawResponse, bool)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let rest = &buf[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let (body, complete) =
        if let Some(cl) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            (rest[..rest.len().min(cl)].to_vec(), rest.len() >= cl)
        } else if get("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
        {
            decode_chunked(rest)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), true)
        } else {
            (rest.to_vec(), false)
        };
    Some((
        RawResponse {
            status,
            headers,
            body,
        },
        complete,
    ))
}

fn decode_chunked(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(pos) = data.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_str = String::from_utf8_lossy(&data[..pos]).to_string();
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_str, 16) else {
            return (out, false);
        };
        data = &data[pos + 2..];
        if size == 0 {
            return (out, true);
        }
        if data.len() < size + 2 {
            out.extend_from_slice(&data[..data.len().min(size)]);
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// A port that nothing listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    drop(l);
    p
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Unit tests of the harness itself (run once per test binary that has them)
// ---------------------------------------------------------------------------

/// The two test vectors of SPEC.md.
pub fn check_signature_vectors() {
    assert_eq!(
        scp_signature(
            "SKEXAMPLE",
            "GET",
            "https://apigateway.kr-west1.e.samsungsdscloud.com/v1/apis?name=test-api&page=0&size=20",
            "1605290625682",
            "AKEXAMPLE",
            "",
            "Openapi",
        ),
        "cbVXgAJAv3YNPaElEkzkkj+/zd8emYo6A/BG0NLyeEA="
    );
    assert_eq!(
        scp_signature(
            "SKEXAMPLE",
            "POST",
            "http://127.0.0.1:8080/v1/apis",
            "1605290625682",
            "AKEXAMPLE",
            "27bb070b564349f8a31cc60734cc36a5",
            "Openapi",
        ),
        "6qrWi6WOWySI6MakfqgajH88dgxTguKzRXX+5kWAM5c="
    );
}

/// An API named `name` with one resource per `(path part, method, upstream
/// URL)`, deployed to stage `dev` with an access control allowing
/// 127.0.0.1; returns its id once `GET /dev/{first part}` answers 200.
pub async fn deployed_api(gw: &Gateway, name: &str, routes: &[(&str, &str, &str)]) -> String {
    let admin = gw.admin();
    let api = admin.create_api(name).await;
    let root = admin.root_id(&api).await;
    let mut parts: BTreeMap<&str, String> = BTreeMap::new();
    for (part, method, url) in routes {
        if !parts.contains_key(part) {
            let id = admin.create_resource(&api, &root, part).await;
            parts.insert(part, id);
        }
        admin
            .create_http_method(&api, &parts[part], method, url)
            .await;
    }
    admin.deploy(&api, "new", Some("dev")).await;
    admin
        .create_access_control(&api, "allow-local", &["127.0.0.1/32"], &["dev"])
        .await;
    let url = gw.invoke_url(&api, &format!("/dev/{}", routes[0].0));
    wait_for_status(gw, &data_client(), &url, 200, Duration::from_secs(3), name).await;
    api
}

/// Wait up to `within` for `GET url` to answer `want` (a change reaching
/// the data plane); fails the test with the gateway's logs.
pub async fn wait_for_status(
    gw: &Gateway,
    c: &reqwest::Client,
    url: &str,
    want: u16,
    within: Duration,
    what: &str,
) {
    assert!(
        eventually(within, || {
            let c = c.clone();
            let url = url.to_string();
            async move { status_of(&c, &url).await == want }
        })
        .await,
        "{what}: GET {url} never answered {want}; logs:\n{}",
        gw.logs()
    );
}
