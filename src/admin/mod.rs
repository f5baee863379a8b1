//! The management API: SCP OpenAPI v1.2 operations, one module per SCP
//! resource, every request authenticated with the SCP signature.
//!
//! Writes hold the state lock, validate against the in-memory state,
//! commit their changes to the store ([`Inner::commit`]), apply them to
//! the in-memory state, then wait until the snapshot publisher has
//! published the batch the store announced on its change feed: a 2xx
//! means committed and served. The management API never builds or
//! publishes snapshots itself.
//!
//! **Several nodes on one store.** The in-memory state also follows every
//! batch the publisher applies (forwarded to [`Inner`], applied by
//! [`spawn_follower`] and before each commit), so another node's commits
//! reach validation and reads here. A write commits only if the store is
//! still at the version its state was validated against
//! ([`crate::store::Store::apply`]'s `base`). When another node committed
//! in between, [`Inner::commit`] catches the state up to the store's head
//! and answers a "stale" error that [`rerun_stale`], a layer around every
//! operation, turns into a second run of the whole request (parsing,
//! validation, commit) against the newer state, up to [`STALE_RERUNS`]
//! times; so two nodes creating the same name at once give one 2xx and
//! one ordinary 409. A store that cannot be reached is a 503 (nothing is
//! known to be committed), never a client's mistake.
//!
//! May import: store (writes), snapshot (the published version to wait
//! on), jwt, policy, telemetry, config, net. Never dataplane.

pub mod access_controls;
pub mod apis;
pub mod auth;
pub mod auths;
pub mod deployments;
pub mod domains;
pub mod error;
pub mod extract;
pub mod functions;
pub mod jwks;
pub mod listener;
pub mod methods;
pub mod openapi;
pub mod privatelink;
pub mod replay;
pub mod reports;
pub mod resource_policies;
pub mod resources;
pub mod stages;
pub mod usage_plans;
pub mod validate;
pub mod views;

use crate::config::Config;
use crate::snapshot::{NotPublished, PublishedVersion};
use crate::store::model::Change;
use crate::store::{ApiState, FeedReceiver, State, Store, StoreError};
use axum::routing::{get, put};
use axum::Router;
pub use error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{RwLock, RwLockWriteGuard};

/// How long a write waits for its committed change to be served before
/// answering 500. Republishing one API takes milliseconds.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// How many times a request is run again after another node's commit
/// overtook it, before it answers 503.
pub const STALE_RERUNS: usize = 5;

pub struct Inner {
    pub cfg: Config,
    pub store: Arc<dyn Store>,
    pub state: RwLock<State>,
    /// The version the data plane serves (the snapshot publisher's).
    pub published: PublishedVersion,
    pub data_port: u16,
    pub stats: Arc<crate::telemetry::reports::Stats>,
    /// Signatures already used within the timestamp window.
    pub replay: replay::ReplayCache,
    /// Every batch the publisher applied, for `state` to follow
    /// ([`Inner::catch_up`]).
    applied: std::sync::Mutex<FeedReceiver>,
}

pub type AdminState = Arc<Inner>;

/// The account a signed request acts for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account_id: String,
    pub access_key: String,
}

impl Inner {
    /// `applied` carries the batches the publisher applies
    /// ([`crate::snapshot::publisher::spawn_forwarding`]); `state` is at
    /// `state.version` of the store.
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        state: State,
        published: PublishedVersion,
        applied: FeedReceiver,
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
            applied: std::sync::Mutex::new(applied),
        })
    }

    /// Apply to `st` every forwarded batch it does not have yet.
    pub fn catch_up(&self, st: &mut State) {
        let Ok(mut applied) = self.applied.lock() else {
            return;
        };
        while let Some(batch) = applied.try_recv() {
            if batch.version > st.version {
                st.apply(&batch.changes);
                st.version = batch.version;
            }
        }
    }

    /// Commit changes durably, apply them to the in-memory state, then
    /// wait (at most [`PUBLISH_WAIT`]) until the data plane serves them.
    /// A failed wait is a 500 that says the change is committed: the
    /// state lock is released, the change stays.
    pub async fn commit(
        &self,
        st: &mut RwLockWriteGuard<'_, State>,
        changes: Vec<Change>,
    ) -> Result<(), ApiError> {
        if changes.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let changes: Arc<[Change]> = changes.into();
        let c2 = changes.clone();
        let base = st.version;
        let applied = tokio::task::spawn_blocking(move || store.apply(base, c2))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))?;
        let version = match applied {
            Ok(v) => v,
            Err(StoreError::Conflict { head }) => {
                // Another node committed first: catch up to its head
                // (published here, hence forwarded), then run the request
                // again against that state.
                self.published
                    .wait_for(head, PUBLISH_WAIT)
                    .await
                    .map_err(|e| {
                        ApiError::internal(format!("store at version {head}, not published: {e}"))
                    })?;
                self.catch_up(st);
                return Err(ApiError::stale());
            }
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "management write refused: store unreachable");
                return Err(ApiError::unavailable(
                    "the store cannot be reached; nothing was changed, retry later".to_string(),
                ));
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        st.apply(&changes);
        st.version = version;
        self.published
            .wait_for(version, PUBLISH_WAIT)
            .await
            .map_err(|e| not_served(version, e))
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

/// Keep the management API's state following the batches the publisher
/// applies (other nodes' commits), whenever the published version moves.
pub fn spawn_follower(app: AdminState) {
    tokio::spawn(async move {
        let mut published = app.published.clone();
        while published.changed().await.is_ok() {
            let mut st = app.state.write().await;
            app.catch_up(&mut st);
        }
    });
}

/// Run a write again while it answers [`ApiError::stale`] (its commit was
/// overtaken by another node's; the state has caught up), at most
/// [`STALE_RERUNS`] times. Inside the signature check: a rerun is the same
/// signed request, not a replay. Reads pass straight through.
pub async fn rerun_stale(
    axum::extract::State(app): axum::extract::State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, app.cfg.admin.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large("request body is larger than max_admin_body_bytes".into())
                .into_response()
        }
    };
    let mut runs = 0;
    loop {
        let req = http::Request::from_parts(parts.clone(), axum::body::Body::from(bytes.clone()));
        let resp = next.clone().run(req).await;
        if resp.extensions().get::<error::Stale>().is_none() || runs == STALE_RERUNS {
            return resp;
        }
        runs += 1;
        tracing::debug!(runs, "write overtaken by another node's commit: run again");
    }
}

/// The 500 of a write that is committed but not served.
fn not_served(version: crate::store::Version, e: NotPublished) -> ApiError {
    tracing::error!(version, error = %e, "committed change not served");
    let detail = match e {
        NotPublished::PublisherGone => {
            "the change was committed but cannot be served: the snapshot publisher has stopped; restart the gateway"
                .to_string()
        }
        NotPublished::TimedOut(d) => format!(
            "the change was committed but was not served within {} s; it is served once published",
            d.as_secs()
        ),
    };
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        detail,
    )
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
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/functions", get(functions::list).post(functions::create))
        .route(
            "/functions/{function_id}",
            get(functions::show)
                .put(functions::set)
                .delete(functions::delete),
        )
        .route(
            "/privatelink-endpoints",
            get(privatelink::list).post(privatelink::create),
        )
        .route(
            "/privatelink-endpoints/{privatelink_endpoint_id}",
            get(privatelink::show)
                .put(privatelink::set)
                .delete(privatelink::delete),
        )
        .route(
            "/privatelink-endpoints/{privatelink_endpoint_id}/request",
            put(privatelink::request),
        )
        .route(
            "/privatelink-endpoints/{privatelink_endpoint_id}/approval",
            put(privatelink::approval),
        )
        .route(
            "/privatelink-endpoints/{privatelink_endpoint_id}/connection",
            put(privatelink::connection),
        )
        .route(
            "/apis/{api_id}/connected-endpoints",
            get(privatelink::list_connected),
        )
        .route("/domain-names", get(domains::list).post(domains::create))
        .route(
            "/domain-names/{domain_name}",
            get(domains::show).delete(domains::delete),
        )
        .route(
            "/domain-names/{domain_name}/base-path-mappings",
            get(domains::list_mappings).post(domains::create_mapping),
        )
        .route(
            "/domain-names/{domain_name}/base-path-mappings/{base_path}",
            get(domains::show_mapping).delete(domains::delete_mapping),
        )
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
            rerun_stale,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_signature,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.admin.max_body_bytes,
        ))
        .with_state(state)
}

/// The API versions (SCP's version list).
#[utoipa::path(
    get,
    path = "/",
    operation_id = "versions",
    tag = "Versions",
    responses((status = 200, description = "The API versions.", body = views::VersionListResponse, content_type = "application/json"))
)]
async fn versions() -> axum::Json<views::VersionListResponse> {
    let v = |version, status, supported_until| views::Version {
        version,
        status,
        supported_until,
    };
    axum::Json(views::VersionListResponse {
        versions: vec![
            v("1.0", "DEPRECATED", Some("20251231")),
            v("1.1", "DEPRECATED", Some("20260430")),
            v("1.2", "CURRENT", None),
        ],
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{publisher, BuildContext, Published};
    use crate::store::feed;
    use crate::store::model::{now_rfc3339, Api, EndpointType, Entity};
    use crate::store::sqlite::SqliteStore;

    fn new_api(id: &str) -> Vec<Change> {
        vec![Change::Put(Entity::Api(Api {
            id: id.into(),
            account_id: "acct".into(),
            name: id.into(),
            description: String::new(),
            endpoint_type: EndpointType::Region,
            tags: vec![],
            created_at: now_rfc3339(),
        }))]
    }

    /// An admin whose store announces to `store_feed`, and a publisher
    /// that reads what the test relays to it.
    fn wired(
        dir: &tempfile::TempDir,
    ) -> (
        AdminState,
        Arc<Published>,
        feed::FeedReceiver,
        feed::FeedSender,
    ) {
        let cfg = Config::default();
        let (store_tx, store_rx) = feed::channel();
        let (relay_tx, relay_rx) = feed::channel();
        let store = SqliteStore::open(dir.path().join("objects.db"))
            .unwrap()
            .announcing_to(store_tx);
        let published = Arc::new(Published::new(
            &State::default(),
            BuildContext::from_config(&cfg),
        ));
        let served = publisher::spawn(published.clone(), State::default(), 0, relay_rx);
        let (_, applied) = feed::channel();
        let app = Inner::new(
            cfg,
            Arc::new(store),
            State::default(),
            served,
            applied,
            8080,
            crate::telemetry::reports::Stats::new(None),
        );
        (app, published, store_rx, relay_tx)
    }

    fn write(app: &AdminState, api: &str) -> tokio::task::JoinHandle<Result<(), ApiError>> {
        let app = app.clone();
        let changes = new_api(api);
        tokio::spawn(async move {
            let mut st = app.state.write().await;
            app.commit(&mut st, changes).await
        })
    }

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_write_answers_only_once_its_change_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let (app, published, mut store_feed, relay) = wired(&dir);
        let task = write(&app, "a1");

        // Committed and announced, but not yet published: still waiting.
        let batch = tokio::time::timeout(SOON, store_feed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.version, 1);
        assert_eq!(batch.changes.len(), 1);
        assert_eq!(batch.changes[0].api_id(), "a1");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "answered before publication");
        assert!(published.load().apis.is_empty());

        // The publisher gets it: the write answers, and the change is served.
        assert!(relay.announce(batch));
        tokio::time::timeout(SOON, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(published.load().apis.contains_key("a1"));
        assert_eq!(app.published.current(), 1);
        assert!(app.state.read().await.api("a1").is_some());
    }

    #[tokio::test]
    async fn a_write_with_no_publisher_is_a_500_that_says_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (app, published, mut store_feed, relay) = wired(&dir);
        drop(relay); // the publisher's feed closes: it stops
        let e = tokio::time::timeout(SOON, write(&app, "a1"))
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code, "InternalServerError");
        assert!(e.detail.contains("committed"), "{}", e.detail);
        // Committed all the same: in the store and its feed.
        assert_eq!(store_feed.try_recv().map(|b| b.version), Some(1));
        let loaded = app.store.load().unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.entities.len(), 1);
        assert!(published.load().apis.is_empty());
    }
}
