//! SCP request signature, as SCP's own client library computes it:
//! `base64(HMAC-SHA256(secret, METHOD + URL + timestamp + access key +
//! account id + client type))`, concatenated with no separators.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fields that are signed.
pub struct Signed<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub timestamp: &'a str,
    pub access_key: &'a str,
    pub account_id: &'a str,
    pub client_type: &'a str,
}

fn mac(secret: &str, s: &Signed<'_>) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    for part in [
        s.method,
        s.url,
        s.timestamp,
        s.access_key,
        s.account_id,
        s.client_type,
    ] {
        m.update(part.as_bytes());
    }
    m
}

/// The signature a client sends in `Scp-Signature`.
pub fn sign(secret: &str, s: &Signed<'_>) -> String {
    B64.encode(mac(secret, s).finalize().into_bytes())
}

/// Constant-time check of a received signature.
pub fn verify(secret: &str, s: &Signed<'_>, signature_b64: &str) -> bool {
    let Ok(sig) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    mac(secret, s).verify_slice(&sig).is_ok()
}

/// Why a request's SCP signature headers were not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingAccessKey,
    MissingSignature,
    MissingTimestamp,
    BadTimestamp,
    StaleTimestamp,
    /// Unknown access key or wrong signature (not told apart on purpose).
    Invalid,
}

impl Rejection {
    pub fn message(self) -> &'static str {
        match self {
            Rejection::MissingAccessKey => "Scp-AccessKey header is required",
            Rejection::MissingSignature => "Scp-Signature header is required",
            Rejection::MissingTimestamp => "Scp-Timestamp header is required",
            Rejection::BadTimestamp => "Scp-Timestamp must be Unix time in milliseconds",
            Rejection::StaleTimestamp => "Scp-Timestamp is too far from the server's clock",
            Rejection::Invalid => "unknown access key or bad signature",
        }
    }
}

/// Check the SCP signature headers of a request whose full URL is `url`
/// against the configured credentials; the management API and signed
/// data-plane calls both use it. Returns the signing credential.
pub fn authenticate<'c>(
    credentials: &'c [crate::config::Credential],
    max_skew_ms: i64,
    method: &str,
    url: &str,
    headers: &http::HeaderMap,
) -> Result<&'c crate::config::Credential, Rejection> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let access_key = get("scp-accesskey").ok_or(Rejection::MissingAccessKey)?;
    let signature = get("scp-signature").ok_or(Rejection::MissingSignature)?;
    let timestamp = get("scp-timestamp").ok_or(Rejection::MissingTimestamp)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTimestamp)?;
    let now = chrono::Utc::now().timestamp_millis();
    if (now - ts).abs() > max_skew_ms {
        return Err(Rejection::StaleTimestamp);
    }
    let cred = credentials
        .iter()
        .find(|c| c.access_key == access_key)
        .ok_or(Rejection::Invalid)?;
    let signed = Signed {
        method,
        url,
        timestamp,
        access_key,
        account_id: get("scp-accountid").unwrap_or(""),
        client_type: get("scp-clienttype").unwrap_or(""),
    };
    if verify(&cred.secret_key, &signed, signature) {
        Ok(cred)
    } else {
        Err(Rejection::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vector_get_with_empty_account() {
        let s = Signed {
            method: "GET",
            url: "https://apigateway.kr-west1.e.samsungsdscloud.com/v1/apis?name=test-api&page=0&size=20",
            timestamp: "1605290625682",
            access_key: "AKEXAMPLE",
            account_id: "",
            client_type: "Openapi",
        };
        assert_eq!(
            sign("SKEXAMPLE", &s),
            "cbVXgAJAv3YNPaElEkzkkj+/zd8emYo6A/BG0NLyeEA="
        );
        assert!(verify(
            "SKEXAMPLE",
            &s,
            "cbVXgAJAv3YNPaElEkzkkj+/zd8emYo6A/BG0NLyeEA="
        ));
        assert!(!verify(
            "SKEXAMPLX",
            &s,
            "cbVXgAJAv3YNPaElEkzkkj+/zd8emYo6A/BG0NLyeEA="
        ));
    }

    #[test]
    fn spec_vector_post_with_account() {
        let s = Signed {
            method: "POST",
            url: "http://127.0.0.1:8080/v1/apis",
            timestamp: "1605290625682",
            access_key: "AKEXAMPLE",
            account_id: "27bb070b564349f8a31cc60734cc36a5",
            client_type: "Openapi",
        };
        assert_eq!(
            sign("SKEXAMPLE", &s),
            "6qrWi6WOWySI6MakfqgajH88dgxTguKzRXX+5kWAM5c="
        );
        assert!(!verify("SKEXAMPLE", &s, "not base64!"));
    }
}
