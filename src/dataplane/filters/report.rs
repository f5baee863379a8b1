//! Report counters (the management API's usage reports): one record per
//! answered request in the routed stage's counters, a few relaxed atomic
//! adds, no lock. The logging phase: it runs once the response is built,
//! and is where metrics and access logs join it.

use super::{Logging, ResponseCtx};
use crate::dataplane::RespBody;
use http::Response;

pub struct Report;

impl Logging for Report {
    fn logging(ctx: &ResponseCtx, resp: &Response<RespBody>) {
        if let Some(stats) = ctx.stage.as_ref().and_then(|s| s.stats.as_ref()) {
            let total = ctx.started.elapsed().as_micros() as u64;
            stats.record(
                ctx.route_ix,
                resp.status().as_u16(),
                total,
                ctx.integration_us,
            );
        }
    }
}
