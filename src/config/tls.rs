//! `[tls]`: the TLS data-plane listener and where certificates come from
//! (owner: `dataplane::tls`; `admin::domain_names` reads `cert_dir`).

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One more certificate of `[[tls.certificates]]`: served to the DNS names
/// of its subjectAltName (a `*.` name matches one label).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    pub cert_file: String,
    pub key_file: String,
}

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
        /// More certificates, chosen by SNI: `[[tls.certificates]]` tables
        /// of `cert_file` and `key_file` (PEM); each is served to the DNS
        /// names of its subjectAltName.
        certificates: Vec<TlsCertificate> = Vec::new(), flat "tls_certificates";
        /// HTTP/2 (over TLS and h2c): most concurrent streams a client
        /// may open on one connection.
        h2_max_concurrent_streams: u32 = 128, flat "h2_max_concurrent_streams";
        /// HTTP/2: streams a client may reset before the server accepted
        /// them, pending at once (rapid-reset protection); more is a
        /// GOAWAY.
        h2_max_pending_accept_reset_streams: usize = 20, flat "h2_max_pending_accept_reset_streams";
        /// HTTP/2: streams the server may reset because of the client's
        /// protocol errors before the connection is closed with GOAWAY.
        h2_max_local_error_reset_streams: usize = 256, flat "h2_max_local_error_reset_streams";
        /// HTTP/2: a PING is sent after this long without frames; a
        /// connection whose peer does not answer within the same time is
        /// closed (0: no PINGs).
        h2_keepalive_interval_ms: u64 = 60_000, flat "h2_keepalive_interval_ms";
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

    /// The HTTP/2 keep-alive PING interval, `None` when off.
    pub fn h2_keepalive_interval(&self) -> Option<std::time::Duration> {
        (self.h2_keepalive_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(self.h2_keepalive_interval_ms))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.addr()?.is_some() && (self.cert_file.is_empty() || self.key_file.is_empty()) {
            bail!("config: tls.listen needs tls.cert_file and tls.key_file");
        }
        for c in &self.certificates {
            if c.cert_file.is_empty() || c.key_file.is_empty() {
                bail!("config: tls.certificates need cert_file and key_file");
            }
        }
        if self.h2_max_concurrent_streams == 0 {
            bail!("config: tls.h2_max_concurrent_streams must be at least 1");
        }
        Ok(())
    }
}
