//! `[tls]`: the TLS data-plane listener and where certificates come from
//! (owner: `dataplane::tls`; `admin::domain_names` reads `cert_dir`).

use anyhow::{bail, Context};
use std::net::SocketAddr;

settings! {
    /// TLS termination on the data plane (rustls; SNI, ALPN h2/http1.1).
    pub struct TlsConfig ["tls"] {
        /// TLS data-plane listener, `host:port` (port 0: any free port);
        /// empty: no TLS listener.
        listen: String = String::new(), flat "tls_listen";
        /// The default certificate chain (PEM), served to names without
        /// their own certificate. Required when `listen` is set.
        cert_file: String = String::new(), flat "tls_cert_file";
        /// The default certificate's private key (PEM).
        key_file: String = String::new(), flat "tls_key_file";
        /// Directory custom domains' `certificate_file` / `private_key_file`
        /// are read from (names resolved under it; no `..`, no absolute
        /// path, no symlink out). Empty: custom domains may not name
        /// certificate files (they get the default certificate).
        cert_dir: String = String::new(), flat "tls_cert_dir";
    }
}

impl TlsConfig {
    /// The TLS listener's address, `None` when it is off.
    pub fn addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .with_context(|| format!("config: tls.listen {:?}", self.listen))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.addr()?.is_some() && (self.cert_file.is_empty() || self.key_file.is_empty()) {
            bail!("config: tls.listen needs tls.cert_file and tls.key_file");
        }
        Ok(())
    }
}
