//! The management API: SCP OpenAPI v1.2 operations, one module per SCP
//! resource, every request authenticated with the SCP signature.
//!
//! Writes hold the state lock, validate against the in-memory state,
//! commit their changes to the store, then apply them in memory and
//! republish the snapshot before answering: a 2xx means committed and
//! served.

pub mod access_controls;
pub mod apis;
pub mod auth;
pub mod auths;
pub mod deployments;
pub mod error;
pub mod extract;
pub mod jwks;
pub mod listener;
pub mod methods;
pub mod replay;
pub mod reports;
pub mod resource_policies;
pub mod resources;
pub mod stages;
pub mod usage_plans;
pub mod validate;
pub mod views;

use crate::config::Config;
use crate::snapshot::Published;
use crate::store::model::Change;
use crate::store::{ApiState, State, Store};
use axum::routing::{get, put};
use axum::Router;
pub use error::ApiError;
use std::sync::Arc;
use tokio::sync::{RwLock, RwLockWriteGuard};

pub struct Inner {
    pub cfg: Config,
    pub store: Arc<dyn Store>,
    pub state: RwLock<State>,
    pub published: Arc<Published>,
    pub data_port: u16,
    pub stats: Arc<crate::telemetry::reports::Stats>,
    /// Signatures already used within the timestamp window.
    pub replay: replay::ReplayCache,
}

pub type AdminState = Arc<Inner>;

/// The account a signed request acts for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account_id: String,
    pub access_key: String,
}

impl Inner {
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        state: State,
        published: Arc<Published>,
        data_port: u16,
        stats: Arc<crate::telemetry::reports::Stats>,
    ) -> AdminState {
        let replay =
            replay::ReplayCache::new(cfg.signature.max_skew_ms(), replay::DEFAULT_MAX_ENTRIES);
        Arc::new(Inner {
            replay,
            cfg,
            store,
            state: RwLock::new(state),
            published,
            data_port,
            stats,
        })
    }

    /// Commit changes durably, then apply them in memory and republish.
    pub async fn commit(
        &self,
        st: &mut RwLockWriteGuard<'_, State>,
        changes: Vec<Change>,
    ) -> Result<(), ApiError> {
        if changes.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let changes = Arc::new(changes);
        let c2 = changes.clone();
        tokio::task::spawn_blocking(move || store.apply(&c2))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let touched = st.apply(&changes);
        self.published.republish(st, &touched);
        Ok(())
    }

    /// Invoke URL of a stage.
    pub fn invoke_url(&self, api_id: &str, stage: &str) -> String {
        let scheme = if self.cfg.admin.public_invoke_scheme.is_empty() {
            "http"
        } else {
            &self.cfg.admin.public_invoke_scheme
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        if self.data_port == default_port {
            format!(
                "{scheme}://{api_id}.{}/{stage}",
                self.cfg.data.invoke_domain
            )
        } else {
            format!(
                "{scheme}://{api_id}.{}:{}/{stage}",
                self.cfg.data.invoke_domain, self.data_port
            )
        }
    }
}

/// The caller's API, or 404 (also for another account's API).
pub fn api_of<'a>(st: &'a State, caller: &Caller, api_id: &str) -> Result<&'a ApiState, ApiError> {
    match st.api(api_id) {
        Some(a) if a.api().is_some_and(|x| x.account_id == caller.account_id) => Ok(a),
        _ => Err(ApiError::not_found(format!("api {api_id} not found"))),
    }
}

/// Stage names of a `connected_stages` field (entries may hold
/// comma-separated names), each of which must exist; duplicates dropped.
pub fn connected_stages(a: &ApiState, list: &Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for name in crate::store::model::split_items(list.as_deref().unwrap_or(&[])) {
        if !a.stages.contains_key(name) {
            return Err(ApiError::not_found(format!(
                "connected_stages: stage {name} not found"
            )));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/apis", get(apis::list).post(apis::create))
        .route("/apis/{api_id}", get(apis::show).delete(apis::delete))
        .route("/apis/{api_id}/description", put(apis::set_description))
        .route("/apis/{api_id}/resources", get(resources::list))
        .route(
            "/apis/{api_id}/resources/{resource_id}",
            get(resources::show)
                .post(resources::create)
                .delete(resources::delete),
        )
        .route(
            "/apis/{api_id}/resources/{resource_id}/methods",
            get(methods::list).post(methods::create),
        )
        .route(
            "/apis/{api_id}/resources/{resource_id}/methods/{method_type}",
            get(methods::show).put(methods::set).delete(methods::delete),
        )
        .route(
            "/apis/{api_id}/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/apis/{api_id}/stages",
            get(stages::list).post(stages::create),
        )
        .route(
            "/apis/{api_id}/stages/{stage_name}",
            get(stages::show).delete(stages::delete),
        )
        .route(
            "/apis/{api_id}/stages/{stage_name}/deployment",
            put(stages::set_deployment),
        )
        .route(
            "/apis/{api_id}/stages/{stage_name}/config",
            put(stages::set_config),
        )
        .route(
            "/apis/{api_id}/access-controls",
            get(access_controls::list).post(access_controls::create),
        )
        .route(
            "/apis/{api_id}/access-controls/{access_control_id}",
            get(access_controls::show)
                .put(access_controls::set)
                .delete(access_controls::delete),
        )
        .route("/apis/{api_id}/auths", get(auths::list).post(auths::create))
        .route(
            "/apis/{api_id}/auths/{auth_id}",
            get(auths::show).put(auths::set).delete(auths::delete),
        )
        .route(
            "/apis/{api_id}/usage-plans",
            get(usage_plans::list).post(usage_plans::create),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}",
            get(usage_plans::show).delete(usage_plans::delete),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}/description",
            put(usage_plans::set_description),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}/quota",
            put(usage_plans::set_quota),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys",
            get(usage_plans::list_keys).post(usage_plans::create_key),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys/{api_key_id}",
            axum::routing::delete(usage_plans::delete_key),
        )
        .route(
            "/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys/{api_key_id}/description",
            put(usage_plans::set_key_description),
        )
        .route("/apis/{api_id}/reports", get(reports::list))
        .route(
            "/apis/{api_id}/resource-policies",
            get(resource_policies::show)
                .put(resource_policies::put)
                .delete(resource_policies::delete),
        );
    Router::new()
        .route("/", get(versions))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_signature,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.admin.max_body_bytes,
        ))
        .with_state(state)
}

async fn versions() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "versions": [
            {"version": "1.0", "status": "DEPRECATED", "supported_until": "20251231"},
            {"version": "1.1", "status": "DEPRECATED", "supported_until": "20260430"},
            {"version": "1.2", "status": "CURRENT", "supported_until": null}
        ]
    }))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such operation".to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this path does not support the HTTP method".to_string(),
    )
}
