//! Stage throttling (token buckets from `governor`): a stage-wide limit and
//! optional per-method limits; over the limit: 429 with `Retry-After`.

use crate::dataplane::error::GwError;
use crate::dataplane::route::Routed;
use governor::clock::{Clock, DefaultClock};
use http::{HeaderValue, StatusCode};

pub use crate::snapshot::Limiter;

fn limited(l: &Limiter) -> Result<(), GwError> {
    l.check().map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        GwError {
            header: Some((http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)))),
            ..GwError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Too many requests: the stage's rate limit is exceeded",
            )
        }
    })
}

pub fn check(routed: &Routed) -> Result<(), GwError> {
    if let Some(l) = &routed.stage.throttle {
        limited(l)?;
    }
    if !routed.stage.method_throttles.is_empty() {
        if let Some(m) = &routed.method {
            for (path, verb, l) in &routed.stage.method_throttles {
                if *verb == m.method_type && *path == m.resource_path {
                    limited(l)?;
                }
            }
        }
    }
    Ok(())
}
