//! The metrics listener's routes: `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process is up) and `GET /readyz` (200 once the
//! first snapshot is loaded and until draining begins, else 503; the
//! body says whether the store answers now).

use super::health::Health;
use super::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// Whether the store answers now.
pub type Reachable = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    store_reachable: Reachable,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>, store_reachable: Reachable) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ctx {
            metrics,
            health,
            store_reachable,
        })
}

async fn scrape(State(c): State<Ctx>) -> Response {
    match c.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "up"})).into_response()
}

async fn readyz(State(c): State<Ctx>) -> Response {
    let store = (c.store_reachable)();
    let draining = c.health.is_draining();
    let ready = c.health.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "store": if store { "reachable" } else { "unreachable" },
    });
    (status, axum::Json(body)).into_response()
}

/// Count the management API's operations by method and route template
/// (`GET /v1/apis/{api_id}`; `unmatched` for a path no route takes) and
/// outcome (status class): bounded labels, whatever the paths sent.
pub fn count_admin_operations(app: Router, metrics: Arc<Metrics>) -> Router {
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = metrics.clone();
            async move {
                let operation = match req.extensions().get::<axum::extract::MatchedPath>() {
                    Some(p) => format!(
                        "{} {}",
                        super::metrics::METHODS[super::metrics::method_index(req.method())],
                        p.as_str()
                    ),
                    None => "unmatched".to_string(),
                };
                let resp = next.run(req).await;
                metrics.admin_operation(operation, resp.status().as_u16());
                resp
            }
        },
    ))
}
