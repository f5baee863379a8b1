//! `[jwks]`: external issuers' key sets (owner: `admin::jwks`).

use std::time::Duration;

settings! {
    /// Key sets of external JWT issuers (Create Auth's
    /// `external_issuer.jwks_file` / `jwks_url`).
    pub struct JwksConfig ["jwks"] {
        /// Directory an external issuer's `jwks_file` is read from (the
        /// name is resolved under it and may not leave it: no `..`, no
        /// absolute path, no symlink out). Empty: `jwks_file` is refused.
        dir: String = String::new(), flat "jwks_dir";
        /// Accept `http://` for an external issuer's `jwks_url` (else https
        /// only).
        allow_http: bool = false, flat "jwks_allow_http";
        /// A `jwks_url` must answer completely within this time.
        fetch_timeout_ms: u64 = 5_000, flat "jwks_fetch_timeout_ms";
        /// Largest JWKS read from a `jwks_url` or a `jwks_file` (bytes).
        max_bytes: usize = 1024 * 1024, flat "jwks_max_bytes";
        /// URL key sets are fetched again after the answer's
        /// `Cache-Control: max-age`, but at least this often (never sooner
        /// than 1 s; 0: never).
        refresh_max_secs: u64 = 300, flat "jwks_refresh_max_secs";
    }
}

impl JwksConfig {
    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_millis(self.fetch_timeout_ms.max(1))
    }
}
