//! Metrics and the access log: the logging phase, once the response is
//! built. Metrics are relaxed atomic adds into counters the snapshot
//! looked up (the stage's) or fixed slots (error codes); the access log
//! line is formatted here and queued for the writer thread (dropped and
//! counted when its queue is full); the OTLP span's record is queued for
//! the exporter thread likewise. All off: one `None` check.

use super::{Logging, ResponseCtx};
use crate::dataplane::RespBody;
use crate::snapshot::{ApiRoutes, RouteMethod, StageRoutes};
use crate::telemetry::otlp::{RouteNames, SpanRecord};
use http::Response;
use http_body::Body as _;
use std::sync::Arc;

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
            let request_id = logged
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            log.log(&crate::telemetry::access_log::Entry {
                request_id,
                trace_id: logged.trace.trace_id,
                api_stage_json: ctx.stage.as_ref().map(|s| &*s.log_api_stage),
                api: ctx.api.as_ref().map(|a| a.api_id.as_str()),
                resource_path_json: ctx.method.as_ref().map(|m| &*m.log_resource_path),
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
            });
        }
        if let (Some(otlp), Some(span)) = (&t.otlp, &logged.span) {
            let names = (ctx.api.is_some() || ctx.stage.is_some()).then(|| {
                Box::new(Names {
                    api: ctx.api.clone(),
                    stage: ctx.stage.clone(),
                    method: ctx.method.clone(),
                }) as Box<dyn RouteNames>
            });
            otlp.send(SpanRecord {
                trace_id: logged.trace.trace_id,
                span_id: logged.trace.span_id,
                parent_id: logged.trace.parent_id,
                flags: logged.trace.flags,
                end: std::time::SystemTime::now(),
                duration: std::time::Duration::from_micros(total_us),
                method: logged.method.clone(),
                uri: span.uri.clone(),
                host: span.host.clone(),
                status,
                error: logged.error,
                integration_us: ctx.integration_us,
                client: ctx.client_ip,
                request_id: logged.request_id.clone(),
                names,
            });
        }
    }
}

/// The routed API, stage and method a span names, read by the exporter
/// thread (the snapshot's own values, shared).
struct Names {
    api: Option<Arc<ApiRoutes>>,
    stage: Option<Arc<StageRoutes>>,
    method: Option<Arc<RouteMethod>>,
}

impl RouteNames for Names {
    fn api_id(&self) -> Option<&str> {
        self.api.as_deref().map(|a| a.api_id.as_str())
    }
    fn stage(&self) -> Option<&str> {
        self.stage.as_deref().map(|s| s.name.as_str())
    }
    fn deployment_id(&self) -> Option<&str> {
        self.stage.as_deref().map(|s| s.deployment_id.as_str())
    }
    fn route(&self) -> Option<&str> {
        self.method.as_deref().map(|m| m.resource_path.as_str())
    }
}
