//! API key and quota: on methods with `api_key_required`, the key comes from
//! `x-scp-apikey` and must be one connected to the stage; each call counts
//! against the key's quota in the plan's calendar window (UTC).
//! 403 `ApiKeyMissing` / `ApiKeyInvalid` / `ApiKeyNotConnected`; over the
//! quota 429 `QuotaExceeded` with `Retry-After`. Every keyed answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
//! (seconds until the window ends).

use crate::dataplane::error::GwError;
use crate::dataplane::route::Routed;
use crate::store::quota::{window, Acquire, QuotaCounters};
use http::{HeaderMap, HeaderValue, StatusCode};

pub static X_SCP_APIKEY: http::HeaderName = http::HeaderName::from_static("x-scp-apikey");

/// What the X-RateLimit headers say. The limit's header value is the
/// key's, made when the snapshot was built; the other two change per call.
#[derive(Debug, Clone)]
pub struct RateInfo {
    pub limit: HeaderValue,
    pub remaining: u64,
    pub reset_secs: i64,
}

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

impl RateInfo {
    pub fn apply(&self, h: &mut HeaderMap) {
        h.insert(X_RATELIMIT_LIMIT.clone(), self.limit.clone());
        h.insert(X_RATELIMIT_REMAINING.clone(), number(self.remaining));
        h.insert(
            X_RATELIMIT_RESET.clone(),
            number(self.reset_secs.max(0) as u64),
        );
    }
}

/// A decimal header value in one allocation (`HeaderValue::from(u64)`
/// grows a buffer and then shrinks it into place: two).
pub fn number(n: u64) -> HeaderValue {
    let mut buf = itoa::Buffer::new();
    // Digits only: always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(buf.format(n).as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

pub fn check(
    routed: &Routed,
    headers: &HeaderMap,
    now: i64,
    quota: &dyn QuotaCounters,
    info: &mut Option<RateInfo>,
) -> Result<(), GwError> {
    let Some(m) = &routed.method else {
        return Ok(());
    };
    if !m.api_key_required {
        return Ok(());
    }
    let Some(key) = headers
        .get(&X_SCP_APIKEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return Err(GwError::new(
            StatusCode::FORBIDDEN,
            "ApiKeyMissing",
            "This method requires an API key in the x-scp-apikey header",
        ));
    };
    let Some(entry) = routed.stage.keys.get(key) else {
        return Err(if routed.api.all_keys.contains(key) {
            GwError::new(
                StatusCode::FORBIDDEN,
                "ApiKeyNotConnected",
                "This API key is not connected to the stage",
            )
        } else {
            GwError::new(StatusCode::FORBIDDEN, "ApiKeyInvalid", "Unknown API key")
        });
    };
    let (win, end) = window(entry.rate, now);
    let reset = end - now;
    match quota.acquire(&entry.key_id, win, entry.limit) {
        Acquire::Allowed { remaining } => {
            *info = Some(RateInfo {
                limit: entry.limit_value.clone(),
                remaining,
                reset_secs: reset,
            });
            Ok(())
        }
        Acquire::Exceeded => {
            *info = Some(RateInfo {
                limit: entry.limit_value.clone(),
                remaining: 0,
                reset_secs: reset,
            });
            Err(GwError {
                header: Some((http::header::RETRY_AFTER, number(reset.max(1) as u64))),
                ..GwError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "QuotaExceeded",
                    "The API key's quota for this period is used up",
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_decimal_header_values() {
        assert_eq!(number(0), "0");
        assert_eq!(number(86_399), "86399");
        assert_eq!(number(u64::MAX), "18446744073709551615");
        let mut h = HeaderMap::new();
        RateInfo {
            limit: HeaderValue::from(1000u64),
            remaining: 999,
            reset_secs: -5,
        }
        .apply(&mut h);
        assert_eq!(h["x-ratelimit-limit"], "1000");
        assert_eq!(h["x-ratelimit-remaining"], "999");
        assert_eq!(h["x-ratelimit-reset"], "0");
    }
}
