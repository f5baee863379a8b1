//! API key and quota: on methods with `api_key_required`, the key comes from
//! `x-scp-apikey` and must be one connected to the stage; each call counts
//! against the key's quota in the plan's calendar window (UTC).
//! 403 `ApiKeyMissing` / `ApiKeyInvalid` / `ApiKeyNotConnected`; over the
//! quota 429 `QuotaExceeded` with `Retry-After`. Every keyed answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
//! (seconds until the window ends).

use super::{ErrorCode, Flow, RequestCtx, RequestFilter, ResponseCtx, ResponseFilter};
use crate::dataplane::RespBody;
use crate::store::quota::{window, Acquire, Acquiring};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};

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

pub struct ApiKey;

impl RequestFilter for ApiKey {
    /// Counting is the quota counters' `acquire`: answered now by local
    /// counters, or later by a shared store, then finished in `counted`
    /// after the pipeline awaited it.
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let required = ctx
            .routed()?
            .method
            .as_ref()
            .is_some_and(|m| m.api_key_required);
        if !required {
            return Ok(Flow::Continue);
        }
        let Some(key) = req
            .headers
            .get(&X_SCP_APIKEY)
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
        else {
            return Err(ErrorCode::ApiKeyMissing);
        };
        let now = ctx.now();
        let routed = ctx.routed()?;
        let Some(entry) = routed.stage.keys.get(key) else {
            return Err(if routed.api.all_keys.contains(key) {
                ErrorCode::ApiKeyNotConnected
            } else {
                ErrorCode::ApiKeyInvalid
            });
        };
        let (win, end) = window(entry.rate, now);
        let reset = end - now;
        let (key_id, count_limit) = (entry.key_id.clone(), entry.limit);
        let limit = entry.limit_value.clone();
        let gw = ctx.gw;
        let acquiring = gw.quota.acquire(&key_id, win, count_limit);
        ctx.logged.key_id = Some(key_id);
        match acquiring {
            Acquiring::Ready(outcome) => counted(ctx, limit, reset, outcome),
            Acquiring::Pending(io) => Ok(Flow::Defer(super::Deferred::new(
                io,
                move |ctx, outcome| counted(ctx, limit, reset, outcome),
            ))),
        }
    }
}

/// The call is counted: the rate-limit headers' values, and 429 when over
/// the quota (retry when the window ends).
fn counted(
    ctx: &mut RequestCtx<'_>,
    limit: HeaderValue,
    reset_secs: i64,
    outcome: Acquire,
) -> Result<Flow, ErrorCode> {
    let (remaining, verdict) = match outcome {
        Acquire::Allowed { remaining } => (remaining, Ok(Flow::Continue)),
        Acquire::Exceeded => (
            0,
            Err(ErrorCode::QuotaExceeded {
                retry_after: reset_secs.max(1) as u64,
            }),
        ),
        Acquire::Unavailable => (0, Err(ErrorCode::QuotaUnavailable)),
    };
    ctx.rate = Some(RateInfo {
        limit,
        remaining,
        reset_secs,
    });
    verdict
}

impl ResponseFilter for ApiKey {
    /// `X-RateLimit-*` on every answer to a keyed call.
    fn response_filter(ctx: &mut ResponseCtx, resp: &mut Response<RespBody>) {
        if let Some(info) = &ctx.rate {
            info.apply(resp.headers_mut());
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
