//! Gateway configuration: a TOML file with every key overridable by an
//! `APIGW_<KEY>` environment variable (e.g. `APIGW_MAX_BODY_BYTES=1048576`).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One management credential: the access key a client signs with, its
/// secret, and the account the requests act for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: String,
    pub account_id: String,
    /// IAM user of the key, used in the principal SRN of signed data-plane
    /// calls (`srn:{offering}::{account}:::iam:user/{user_id}`); defaults to
    /// the access key.
    #[serde(default)]
    pub user_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data-plane listener (invoke URLs).
    pub data_listen: String,
    /// Management API listener (`/v1/...`).
    pub admin_listen: String,
    /// Invoke host is `{api_id}.{invoke_domain}`.
    pub invoke_domain: String,
    /// `sqlite://<path>`; the file is created and migrated on first start.
    pub store_url: String,
    /// Base URL clients use for the management API (e.g.
    /// `https://apigw.example.com`); the signed URL is rebuilt from it.
    /// Empty: rebuilt from the Host header as `http://{Host}`.
    pub public_base_url: String,
    /// Base URL of invoke URLs shown by the management API; empty:
    /// `http://{api_id}.{invoke_domain}:{data port}`.
    pub public_invoke_scheme: String,
    /// Region and offering used in SRNs.
    pub region: String,
    pub srn_offering: String,
    /// Largest accepted request header block (bytes) on the data plane: 431 above.
    pub max_header_bytes: usize,
    /// Largest accepted request body (bytes) on the data plane: 413 above.
    pub max_body_bytes: u64,
    /// Largest management API request body (bytes): 413 above.
    pub max_admin_body_bytes: usize,
    /// A client must send its whole header block within this time.
    pub header_read_timeout_ms: u64,
    /// An idle keep-alive client connection is closed after this long.
    pub keepalive_timeout_ms: u64,
    /// An HTTP/1 connection idle this long is parked: its HTTP state and
    /// buffers are dropped until the client sends again (0 = never park).
    pub keepalive_park_ms: u64,
    /// Upstream TCP(+TLS) connect timeout: 502 when exceeded.
    pub upstream_connect_timeout_ms: u64,
    /// Time for the upstream to answer with a response head: 504 when exceeded.
    pub upstream_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
    pub upstream_pool_max_idle_per_host: usize,
    /// A response body from the upstream that sends nothing for this long
    /// is ended (the client's connection is closed).
    pub upstream_body_idle_timeout_ms: u64,
    /// Path parameters whose percent-decoded value holds `/`, `\` or NUL:
    /// `reject` (400 InvalidPathParameter) or `keep` (forwarded encoded).
    pub escaped_path_separators: String,
    /// Allowed clock skew of Scp-Timestamp, in seconds.
    pub signature_max_skew_secs: i64,
    /// Management listener: a client must send its whole header block
    /// within this time (counted from accept for a new connection, from
    /// the first byte for a later request); a connection that sends
    /// nothing at all is closed after it too.
    pub admin_header_read_timeout_ms: u64,
    /// Management listener: an idle keep-alive connection is closed after
    /// this long.
    pub admin_keepalive_timeout_ms: u64,
    /// Management listener: most connections open at once. The cap in
    /// force is the lesser of this and a quarter of the process's
    /// open-file limit (read at every accept), so the data plane keeps
    /// the rest of the descriptors; at the cap new connections wait in
    /// the listen queue until one closes.
    pub admin_max_connections: usize,
    /// Data plane: most client connections open at once, over all
    /// workers; a connection beyond it is closed as soon as accepted.
    pub max_connections: usize,
    /// Data-plane worker threads (0 = one per core).
    pub worker_threads: usize,
    /// With more than one worker: one single-threaded runtime per worker,
    /// each with its own SO_REUSEPORT listener (the kernel spreads new
    /// connections), instead of one work-stealing runtime.
    pub reuse_port: bool,
    /// Proxies (IPs/CIDRs) whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol v1/v2 header on every data-plane connection.
    pub proxy_protocol: bool,
    /// Directory an external issuer's `jwks_file` is read from (the name
    /// given is resolved under it and may not leave it). Empty: `jwks_file`
    /// is refused.
    pub jwks_dir: String,
    /// Accept `http://` for an external issuer's `jwks_url` (else https only).
    pub jwks_allow_http: bool,
    /// A `jwks_url` must answer completely within this time.
    pub jwks_fetch_timeout_ms: u64,
    /// Largest JWKS read from a `jwks_url` or a `jwks_file` (bytes).
    pub jwks_max_bytes: usize,
    /// URL-sourced JWKS are fetched again after the answer's
    /// `Cache-Control: max-age`, but at least this often (0 = never).
    pub jwks_refresh_max_secs: u64,
    /// How often quota counters are written to the store (a crash loses at
    /// most this much counting).
    pub quota_flush_interval_ms: u64,
    /// TEST ONLY: a file holding a clock offset in seconds, re-read every
    /// 20 ms, to move time across quota windows.
    pub test_clock_file: String,
    /// tracing filter (RUST_LOG wins when set).
    pub log: String,
    pub credentials: Vec<Credential>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9080".into(),
            invoke_domain: "apigw.localhost".into(),
            store_url: "sqlite://./data/apigw.db".into(),
            public_base_url: String::new(),
            public_invoke_scheme: "http".into(),
            region: "kr-west1".into(),
            srn_offering: "scp".into(),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            max_admin_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            keepalive_timeout_ms: 75_000,
            keepalive_park_ms: 1_000,
            upstream_connect_timeout_ms: 5_000,
            upstream_timeout_ms: 29_000,
            upstream_pool_max_idle_per_host: 1024,
            upstream_body_idle_timeout_ms: 30_000,
            escaped_path_separators: "reject".into(),
            signature_max_skew_secs: 300,
            admin_header_read_timeout_ms: 10_000,
            admin_keepalive_timeout_ms: 75_000,
            admin_max_connections: 1024,
            max_connections: 100_000,
            worker_threads: 0,
            reuse_port: true,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            jwks_dir: String::new(),
            jwks_allow_http: false,
            jwks_fetch_timeout_ms: 5_000,
            jwks_max_bytes: 1024 * 1024,
            jwks_refresh_max_secs: 300,
            quota_flush_interval_ms: 1000,
            test_clock_file: String::new(),
            log: "info".into(),
            credentials: Vec::new(),
        }
    }
}

/// The documented list of settings, shown by `apigw --help`.
pub const SETTINGS_HELP: &str = "\
SETTINGS (TOML keys of --config; each also read from the env as APIGW_<KEY>):
  data_listen                      data plane address            [127.0.0.1:8080]
  admin_listen                     management API address        [127.0.0.1:9080]
  invoke_domain                    invoke host = {api_id}.{invoke_domain} [apigw.localhost]
  store_url                        sqlite://<path>               [sqlite://./data/apigw.db]
  public_base_url                  management URL clients sign   [from Host header]
  public_invoke_scheme             scheme shown in invoke_url    [http]
  region, srn_offering             used in method SRNs           [kr-west1, scp]
  max_header_bytes                 request header block limit, 431 above [16384]
  max_body_bytes                   request body limit, 413 above [10485760]
  max_admin_body_bytes             management body limit         [1048576]
  header_read_timeout_ms           slow header senders are cut   [10000]
  keepalive_timeout_ms             idle client connections closed [75000]
  keepalive_park_ms                idle HTTP/1 conns drop buffers  [1000]
  upstream_connect_timeout_ms      502 when exceeded             [5000]
  upstream_timeout_ms              504 when exceeded             [29000]
  upstream_pool_max_idle_per_host  idle keep-alive conns per host [1024]
  upstream_body_idle_timeout_ms    a stalled response body is ended [30000]
  escaped_path_separators          %2F %5C %00 in path parameters: reject|keep [reject]
  signature_max_skew_secs          Scp-Timestamp tolerance       [300]
  admin_header_read_timeout_ms     management: slow/silent clients cut [10000]
  admin_keepalive_timeout_ms       management: idle conns closed  [75000]
  admin_max_connections            management: open conns cap (and at most
                                   1/4 of the open-file limit)   [1024]
  max_connections                  data plane: open conns cap, over it
                                   closed at once                [100000]
  worker_threads                   0 = one per core              [0]
  reuse_port                       per-worker runtime + SO_REUSEPORT listener [true]
  trusted_proxies                  CIDRs whose X-Forwarded-For is believed [none]
  proxy_protocol                   expect PROXY v1/v2 on data conns [false]
  jwks_dir                         dir external_issuer.jwks_file is read from [none: off]
  jwks_allow_http                  allow http:// for external_issuer.jwks_url [false]
  jwks_fetch_timeout_ms            a jwks_url must answer within this [5000]
  jwks_max_bytes                   largest JWKS file or response   [1048576]
  jwks_refresh_max_secs            URL JWKS refetched at least this often,
                                   sooner per max-age (0 = never) [300]
  quota_flush_interval_ms          quota counters flushed to the store [1000]
  test_clock_file                  TEST ONLY: clock offset file (seconds) [none]
  log                              tracing filter                [info]
  [[credentials]] access_key, secret_key, account_id  (several allowed;
                  env: APIGW_CREDENTIALS='[{access_key=\"..\",secret_key=\"..\",account_id=\"..\"}]')";

impl Config {
    /// Data-plane workers: `worker_threads`, or the cores when 0.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// One current-thread runtime per worker, each with its own listener.
    pub fn per_worker_runtimes(&self) -> bool {
        self.worker_threads == 1 || (self.reuse_port && cfg!(unix))
    }

    /// Defaults, then the file (if any), then `APIGW_*` environment variables.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                anyhow::bail!("config file {} does not exist", p.display());
            }
            fig = fig.merge(Toml::file(p));
        }
        fig = fig.merge(Env::prefixed("APIGW_"));
        let cfg: Config = fig.extract().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.data_addr()?;
        self.admin_addr()?;
        self.sqlite_path()?;
        if self.invoke_domain.is_empty() || self.invoke_domain.contains('/') {
            anyhow::bail!("config: invoke_domain must be a host name");
        }
        if self.max_header_bytes < 1024 {
            anyhow::bail!("config: max_header_bytes must be at least 1024");
        }
        if self.admin_max_connections == 0 || self.max_connections == 0 {
            anyhow::bail!("config: admin_max_connections and max_connections must be at least 1");
        }
        self.trusted_proxy_nets()?;
        if !matches!(self.escaped_path_separators.as_str(), "reject" | "keep") {
            anyhow::bail!("config: escaped_path_separators must be \"reject\" or \"keep\"");
        }
        for c in &self.credentials {
            if c.access_key.is_empty() || c.secret_key.is_empty() {
                anyhow::bail!("config: credentials need access_key and secret_key");
            }
        }
        Ok(())
    }

    pub fn data_addr(&self) -> anyhow::Result<SocketAddr> {
        self.data_listen
            .parse()
            .map_err(|e| anyhow::anyhow!("config: data_listen {:?}: {e}", self.data_listen))
    }

    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        self.admin_listen
            .parse()
            .map_err(|e| anyhow::anyhow!("config: admin_listen {:?}: {e}", self.admin_listen))
    }

    pub fn sqlite_path(&self) -> anyhow::Result<PathBuf> {
        match self.store_url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => anyhow::bail!(
                "config: store_url {:?} is not supported (use sqlite://<path>)",
                self.store_url
            ),
        }
    }

    pub fn trusted_proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                crate::store::model::parse_ip_item(s).ok_or_else(|| {
                    anyhow::anyhow!("config: trusted_proxies: {s:?} is not an IP or CIDR")
                })
            })
            .collect()
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.max(1))
    }
    /// `None`: never park. Kept below half the header read timeout: the
    /// connection driver checks for slow header senders on this tick
    /// (`conn::Idle::header`), so a longer tick would cut them late.
    pub fn keepalive_park(&self) -> Option<Duration> {
        (self.keepalive_park_ms > 0).then(|| {
            Duration::from_millis(
                self.keepalive_park_ms
                    .min(self.header_read_timeout_ms.max(2) / 2),
            )
        })
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }
    pub fn admin_header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_header_read_timeout_ms.max(1))
    }
    pub fn admin_keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_keepalive_timeout_ms.max(1))
    }
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms.max(1))
    }
    pub fn keep_escaped_separators(&self) -> bool {
        self.escaped_path_separators == "keep"
    }
    pub fn upstream_body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_body_idle_timeout_ms.max(1))
    }
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use std::time::Duration;

    #[test]
    fn park_stays_below_the_header_timeout() {
        let mut c = Config::default();
        assert_eq!(c.keepalive_park(), Some(Duration::from_millis(1000)));
        c.header_read_timeout_ms = 800;
        assert_eq!(c.keepalive_park(), Some(Duration::from_millis(400)));
        c.keepalive_park_ms = 0;
        assert_eq!(c.keepalive_park(), None);
    }
}
