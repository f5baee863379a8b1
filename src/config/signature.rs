//! `[signature]`: who may sign requests, and how old a signature may be
//! (owner: `policy::signature`, used by the management API and by the data
//! plane's signed calls).

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// One credential: the access key a client signs with, its secret, and
/// the account the requests act for.
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

settings! {
    /// SCP request signatures (`Scp-Signature`).
    pub struct SignatureConfig ["signature"] {
        /// Accepted skew of `Scp-Timestamp` from the server's clock, in
        /// seconds.
        max_skew_secs: i64 = 300, flat "signature_max_skew_secs";
        /// Keys clients sign with: `[[signature.credentials]]` tables of
        /// `access_key`, `secret_key`, `account_id` and optional `user_id`
        /// (several allowed); env
        /// `APIGW_CREDENTIALS='[{access_key="..",secret_key="..",account_id=".."}]'`.
        credentials: Vec<Credential> = Vec::new(), flat "credentials";
    }
}

impl SignatureConfig {
    pub fn max_skew_ms(&self) -> i64 {
        self.max_skew_secs.saturating_mul(1000)
    }

    /// Replace every secret by `***` (for printing).
    pub fn mask_secrets(&mut self) {
        for c in &mut self.credentials {
            c.secret_key = "***".into();
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for c in &self.credentials {
            if c.access_key.is_empty() || c.secret_key.is_empty() {
                bail!("config: signature.credentials need access_key and secret_key");
            }
        }
        Ok(())
    }
}
