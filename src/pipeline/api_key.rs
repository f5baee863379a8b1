//! API key and quota: on methods with `api_key_required`, the key comes from
//! `x-scp-apikey` and must be one connected to the stage; each call counts
//! against the key's quota in the plan's calendar window (UTC).
//! 403 `ApiKeyMissing` / `ApiKeyInvalid` / `ApiKeyNotConnected`; over the
//! quota 429 `QuotaExceeded` with `Retry-After`. Every keyed answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
//! (seconds until the window ends).

use super::error::GwError;
use super::route::Routed;
use crate::quota::{window, Acquire, QuotaCounters};
use http::{HeaderMap, HeaderValue, StatusCode};

pub static X_SCP_APIKEY: http::HeaderName = http::HeaderName::from_static("x-scp-apikey");

/// What the X-RateLimit headers say.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: i64,
}

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

impl RateInfo {
    pub fn apply(&self, h: &mut HeaderMap) {
        h.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        h.insert(
            X_RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        h.insert(
            X_RATELIMIT_RESET.clone(),
            HeaderValue::from(self.reset_secs.max(0)),
        );
    }
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
                limit: entry.limit,
                remaining,
                reset_secs: reset,
            });
            Ok(())
        }
        Acquire::Exceeded => {
            *info = Some(RateInfo {
                limit: entry.limit,
                remaining: 0,
                reset_secs: reset,
            });
            Err(GwError {
                header: Some((http::header::RETRY_AFTER, HeaderValue::from(reset.max(1)))),
                ..GwError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "QuotaExceeded",
                    "The API key's quota for this period is used up",
                )
            })
        }
    }
}
