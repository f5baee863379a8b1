//! Stage throttling (token buckets from `governor`): a stage-wide limit and
//! optional per-method limits; over the limit: 429 with `Retry-After`.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use governor::clock::{Clock, DefaultClock};
use http::request::Parts;

pub use crate::snapshot::Limiter;

fn limited(l: &Limiter) -> Result<(), ErrorCode> {
    l.check().map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ErrorCode::Throttled {
            retry_after: secs.max(1),
        }
    })
}

pub struct Throttle;

impl RequestFilter for Throttle {
    fn request_filter(ctx: &mut RequestCtx<'_>, _req: &Parts) -> Result<Flow, ErrorCode> {
        let routed = ctx.routed()?;
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
        Ok(Flow::Continue)
    }
}
