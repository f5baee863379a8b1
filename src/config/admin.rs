//! `[admin]`: the management API's listener and how its URLs are shown
//! (owner: `admin`, `admin::listener`).

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::Duration;

settings! {
    /// The management API (`/v1/...`).
    pub struct AdminConfig ["admin"] {
        /// Management API listener, `host:port` (port 0: any free port).
        listen: String = "127.0.0.1:9080".into(), flat "admin_listen";
        /// Base URL clients use for the management API (e.g.
        /// `https://apigw.example.com`); the signed URL is rebuilt from it.
        /// Empty: rebuilt from the Host header as `http://{Host}`.
        public_base_url: String = String::new(), flat "public_base_url";
        /// Scheme of the invoke URLs the management API shows,
        /// `{scheme}://{api_id}.{invoke_domain}:{data port}/{stage}` (the
        /// port left out when it is the scheme's); empty: `http`.
        public_invoke_scheme: String = "http".into(), flat "public_invoke_scheme";
        /// Largest management request body (bytes): 413 above.
        max_body_bytes: usize = 1024 * 1024, flat "max_admin_body_bytes";
        /// A request head must be complete this long after its first byte
        /// (after the accept for a new connection; one that sends nothing
        /// is closed then); 408 in the SCP envelope.
        header_read_timeout_ms: u64 = 10_000, flat "admin_header_read_timeout_ms";
        /// An idle keep-alive connection is closed after this long.
        keepalive_timeout_ms: u64 = 75_000, flat "admin_keepalive_timeout_ms";
        /// Most connections open at once. The cap in force is the lesser of
        /// this and a quarter of the open-file limit (read at every
        /// accept), so the data plane keeps the rest of the descriptors; at
        /// the cap new connections wait in the listen queue.
        max_connections: usize = 1024, flat "admin_max_connections";
    }
}

impl AdminConfig {
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("config: admin.listen {:?}", self.listen))
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.max(1))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.addr()?;
        if self.max_connections == 0 {
            bail!("config: admin.max_connections must be at least 1");
        }
        Ok(())
    }
}
