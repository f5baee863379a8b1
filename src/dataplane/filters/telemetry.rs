//! Metrics and the access log: the logging phase, once the response is
//! built. Metrics are relaxed atomic adds into counters the snapshot
//! looked up (the stage's) or fixed slots (error codes); the access log
//! line is formatted here and queued for the writer thread (dropped and
//! counted when its queue is full). Both off: two `None` checks.

use super::{Logging, ResponseCtx};
use crate::dataplane::RespBody;
use http::Response;
use http_body::Body as _;

pub struct Telemetry;

impl Logging for Telemetry {
    #[inline]
    fn logging(ctx: &ResponseCtx, resp: &Response<RespBody>) {
        let Some(t) = crate::telemetry::global() else {
            return;
        };
        let status = resp.status().as_u16();
        let total_us = ctx.started.elapsed().as_micros() as u64;
        let logged = &ctx.logged;
        if let Some(m) = ctx.stage.as_ref().and_then(|s| s.metrics.as_ref()) {
            m.record(
                crate::telemetry::metrics::method_index(&logged.method),
                status,
                total_us,
                ctx.integration_us,
            );
        }
        if let (Some(code), Some(metrics)) = (logged.error, t.metrics.as_ref()) {
            metrics.gateway_error(code);
        }
        if let Some(log) = &t.access_log {
            let request_id = resp
                .headers()
                .get(&super::request_id::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let line = crate::telemetry::access_log::Entry {
                request_id,
                trace_id: logged.trace.trace_id,
                api: ctx.api.as_ref().map(|a| a.api_id.as_str()),
                stage: ctx.stage.as_ref().map(|s| s.name.as_str()),
                resource_path: ctx.method.as_ref().map(|m| m.resource_path.as_str()),
                method: logged.method.as_str(),
                status,
                latency_us: total_us,
                integration_us: ctx.integration_us,
                bytes_in: logged.bytes_in,
                bytes_out: resp.body().size_hint().exact(),
                client: ctx.client_ip,
                api_key_id: logged.key_id.as_deref(),
                auth_id: logged.auth_id.as_deref(),
                error: logged.error,
            }
            .format();
            log.send(line);
        }
    }
}
