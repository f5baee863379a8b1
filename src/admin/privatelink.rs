//! PrivateLink endpoints (management side): a consumer account creates an
//! endpoint naming a PrivateLink service — here every PRIVATE API is one,
//! its id shown as `privatelink_service_id` — and the API's owner, possibly
//! another account, approves, rejects, blocks or reconnects it.
//!
//! Who may do what: the endpoint owner creates, lists, shows, sets,
//! cancels / re-requests and deletes; the service (API) owner lists the
//! endpoints that target its API and approves / connects them. Anyone
//! else gets 404. An action that the current status does not allow is a
//! 409 naming that status, and changes nothing.

use super::extract::JsonBody;
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::State as St;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use regex::Regex;
use serde::Deserialize;
use std::sync::LazyLock;

use PrivatelinkStatus as S;

/// Endpoints per account.
pub const MAX_ENDPOINTS: usize = 100;

static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9]{3,20}$").expect("static regex"));

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = privatelink::CreateReq)]
pub struct CreateReq {
    name: String,
    description: Option<String>,
    privatelink_service_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = privatelink::SetReq)]
pub struct SetReq {
    description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = privatelink::RequestReq)]
pub struct RequestReq {
    r#type: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = privatelink::OwnerActionReq)]
pub struct OwnerActionReq {
    api_id: String,
    r#type: String,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("privatelink endpoint {id} not found"))
}

/// The caller's endpoint, or 404 (also for another account's).
fn endpoint_of<'a>(
    st: &'a St,
    caller: &Caller,
    id: &str,
) -> Result<&'a PrivatelinkEndpoint, ApiError> {
    st.privatelink_endpoints
        .get(id)
        .filter(|e| e.account_id == caller.account_id)
        .ok_or_else(|| not_found(id))
}

/// An endpoint that targets `api_id`, an API of the caller (or the id
/// of an external service of the caller's account), or 404.
fn endpoint_for_owner<'a>(
    st: &'a St,
    external: Option<&crate::config::ConfiguredPrivatelinkService>,
    caller: &Caller,
    id: &str,
    api_id: &str,
) -> Result<&'a PrivatelinkEndpoint, ApiError> {
    // An external service's endpoint: its account owns it, and `api_id`
    // names the service id.
    if let Some(e) = st.privatelink_endpoints.get(id).filter(|e| {
        e.service_api_id.is_empty()
            && e.privatelink_service_id == api_id
            && external.is_some_and(|x| x.id == api_id && x.account_id == caller.account_id)
    }) {
        return Ok(e);
    }
    api_of(st, caller, api_id)?;
    st.privatelink_endpoints
        .get(id)
        .filter(|e| e.service_api_id == api_id)
        .ok_or_else(|| not_found(id))
}

/// The external service of `[[privatelink_services]]` with this id.
fn external_service<'a>(
    app: &'a AdminState,
    id: &str,
) -> Option<&'a crate::config::ConfiguredPrivatelinkService> {
    app.cfg.privatelink_services.iter().find(|x| x.id == id)
}

/// The PRIVATE API whose service id this is.
fn service_api<'a>(st: &'a St, service_id: &str) -> Option<&'a Api> {
    st.apis
        .values()
        .filter_map(|a| a.api())
        .find(|a| a.privatelink_service_id().as_deref() == Some(service_id))
}

fn description(d: Option<String>) -> Result<String, ApiError> {
    let d = d.unwrap_or_default();
    validate::max_len("description", &d, 100)?;
    Ok(d)
}

fn illegal(e: &PrivatelinkEndpoint, action: &str) -> ApiError {
    ApiError::conflict(format!(
        "privatelink endpoint {} is {}: {action} is not allowed in that status",
        e.id,
        e.status.as_str()
    ))
}

/// Store the endpoint with its new status, or 409 when `from` does not
/// hold its current status.
async fn transition(
    app: &AdminState,
    st: &mut tokio::sync::RwLockWriteGuard<'_, St>,
    e: PrivatelinkEndpoint,
    from: &[PrivatelinkStatus],
    to: PrivatelinkStatus,
    action: &str,
) -> Result<PrivatelinkEndpoint, ApiError> {
    if !from.contains(&e.status) {
        return Err(illegal(&e, action));
    }
    let e = PrivatelinkEndpoint {
        status: to,
        modified_at: now_rfc3339(),
        ..e
    };
    app.commit(
        st,
        vec![Change::Put(Entity::PrivatelinkEndpoint(e.clone()))],
    )
    .await?;
    Ok(e)
}

#[utoipa::path(
    post,
    path = "/v1/privatelink-endpoints",
    operation_id = "privatelink_create",
    tag = "PrivateLink endpoints (extension)",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointShowResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::PrivateLinkEndpointShowResponse>, ApiError> {
    if !NAME.is_match(&req.name) {
        return Err(ApiError::field(
            "name",
            "must be 3 to 20 letters and digits (^[a-zA-Z0-9]*$)",
        ));
    }
    let description = description(req.description)?;
    let mut st = app.state.write().await;
    // A PRIVATE API's service, or an external one of the config (no API:
    // `service_api_id` stays empty; auto_approve makes it Active at once).
    let (service_api_id, status) = match service_api(&st, &req.privatelink_service_id) {
        Some(api) => (api.id.clone(), S::Requesting),
        None => match external_service(&app, &req.privatelink_service_id) {
            Some(x) if x.auto_approve => (String::new(), S::Active),
            Some(_) => (String::new(), S::Requesting),
            None => {
                return Err(ApiError::field(
                    "privatelink_service_id",
                    format!(
                        "no PrivateLink service {:?} (the privatelink_service_id of a PRIVATE API, or an id of [[privatelink_services]])",
                        req.privatelink_service_id
                    ),
                ))
            }
        },
    };
    validate::room_for(
        "privatelink endpoint",
        &req.name,
        st.privatelink_endpoints
            .values()
            .filter(|e| e.account_id == caller.account_id)
            .map(|e| e.name.as_str()),
        MAX_ENDPOINTS,
    )?;
    let now = now_rfc3339();
    let e = PrivatelinkEndpoint {
        id: new_id(),
        account_id: caller.account_id.clone(),
        name: req.name,
        description,
        privatelink_service_id: req.privatelink_service_id,
        service_api_id,
        status,
        created_at: now.clone(),
        modified_at: now,
    };
    let out = views::privatelink_detail(&e);
    app.commit(&mut st, vec![Change::Put(Entity::PrivatelinkEndpoint(e))])
        .await?;
    Ok(Json(views::PrivateLinkEndpointShowResponse {
        privatelink_endpoint: out,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/privatelink-endpoints",
    operation_id = "privatelink_list",
    tag = "PrivateLink endpoints (extension)",
    params(crate::admin::openapi::ListQueryParams, ("name" = Option<String>, Query, description = "Filter: name contains / equals this value")),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<views::PrivateLinkEndpointListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let name = q.get("name");
    let all: Vec<&PrivatelinkEndpoint> = st
        .privatelink_endpoints
        .values()
        .filter(|e| e.account_id == caller.account_id)
        .filter(|e| name.is_none_or(|n| e.name.contains(n)))
        .collect();
    let count = all.len();
    let page = q.page_of(all, |e, f| {
        let primary = if f == "name" { &e.name } else { &e.created_at };
        (primary.clone(), e.id.clone())
    });
    Ok(Json(views::PrivateLinkEndpointListResponse {
        count,
        privatelink_endpoints: page.into_iter().map(views::privatelink_listed).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}",
    operation_id = "privatelink_show",
    tag = "PrivateLink endpoints (extension)",
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<views::PrivateLinkEndpointShowResponse>, ApiError> {
    let st = app.state.read().await;
    let e = endpoint_of(&st, &caller, &id)?;
    Ok(Json(views::PrivateLinkEndpointShowResponse {
        privatelink_endpoint: views::privatelink_detail(e),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}",
    operation_id = "privatelink_set",
    tag = "PrivateLink endpoints (extension)",
    request_body(content = SetReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointShowResponse, content_type = "application/json"))
)]
/// Set Description (the only settable field; absent or null clears it).
pub async fn set(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetReq>,
) -> Result<Json<views::PrivateLinkEndpointShowResponse>, ApiError> {
    let description = description(req.description)?;
    let mut st = app.state.write().await;
    let old = endpoint_of(&st, &caller, &id)?;
    let e = PrivatelinkEndpoint {
        description,
        modified_at: now_rfc3339(),
        ..old.clone()
    };
    let out = views::privatelink_detail(&e);
    app.commit(&mut st, vec![Change::Put(Entity::PrivatelinkEndpoint(e))])
        .await?;
    Ok(Json(views::PrivateLinkEndpointShowResponse {
        privatelink_endpoint: out,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}",
    operation_id = "privatelink_delete",
    tag = "PrivateLink endpoints (extension)",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let e = endpoint_of(&st, &caller, &id)?;
    if let Some(api) = st.apis_using_privatelink_endpoint(&e.id).first() {
        return Err(ApiError::conflict(format!(
            "privatelink endpoint {} is used by a method of api {api} (or a deployment a stage serves)",
            e.id
        )));
    }
    let change = Change::Delete {
        kind: Kind::PrivatelinkEndpoint,
        key: e.id.clone(),
        api_id: String::new(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}/request",
    operation_id = "privatelink_request",
    tag = "PrivateLink endpoints (extension)",
    request_body(content = RequestReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointShowResponse, content_type = "application/json"))
)]
/// The endpoint owner: CANCEL a pending request, or RE_REQUEST after a
/// cancel or a rejection.
pub async fn request(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RequestReq>,
) -> Result<Json<views::PrivateLinkEndpointShowResponse>, ApiError> {
    let (from, to): (&[S], S) = match req.r#type.as_str() {
        "CANCEL" => (&[S::Requesting], S::Canceled),
        "RE_REQUEST" => (&[S::Canceled, S::Rejected], S::Requesting),
        _ => return Err(ApiError::field("type", "must be CANCEL or RE_REQUEST")),
    };
    let mut st = app.state.write().await;
    let e = endpoint_of(&st, &caller, &id)?.clone();
    let e = transition(&app, &mut st, e, from, to, &req.r#type).await?;
    Ok(Json(views::PrivateLinkEndpointShowResponse {
        privatelink_endpoint: views::privatelink_detail(&e),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}/approval",
    operation_id = "privatelink_approval",
    tag = "PrivateLink endpoints (extension)",
    request_body(content = OwnerActionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointSummaryShowResponse, content_type = "application/json"))
)]
/// The service owner: APPROVE or REJECT a pending request.
pub async fn approval(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<OwnerActionReq>,
) -> Result<Json<views::PrivateLinkEndpointSummaryShowResponse>, ApiError> {
    let to = match req.r#type.as_str() {
        "APPROVE" => S::Active,
        "REJECT" => S::Rejected,
        _ => return Err(ApiError::field("type", "must be APPROVE or REJECT")),
    };
    owner_action(app, caller, id, req, &[S::Requesting], to).await
}

#[utoipa::path(
    put,
    path = "/v1/privatelink-endpoints/{privatelink_endpoint_id}/connection",
    operation_id = "privatelink_connection",
    tag = "PrivateLink endpoints (extension)",
    request_body(content = OwnerActionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::PrivateLinkEndpointSummaryShowResponse, content_type = "application/json"))
)]
/// The service owner: DISCONNECT (block) an active endpoint, or RECONNECT
/// a disconnected one.
pub async fn connection(
    State(app): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<OwnerActionReq>,
) -> Result<Json<views::PrivateLinkEndpointSummaryShowResponse>, ApiError> {
    let (from, to) = match req.r#type.as_str() {
        "DISCONNECT" => (S::Active, S::Disconnected),
        "RECONNECT" => (S::Disconnected, S::Active),
        _ => return Err(ApiError::field("type", "must be DISCONNECT or RECONNECT")),
    };
    owner_action(app, caller, id, req, &[from], to).await
}

async fn owner_action(
    app: AdminState,
    caller: Caller,
    id: String,
    req: OwnerActionReq,
    from: &[S],
    to: S,
) -> Result<Json<views::PrivateLinkEndpointSummaryShowResponse>, ApiError> {
    if req.api_id.is_empty() {
        return Err(ApiError::field("api_id", "is required"));
    }
    let mut st = app.state.write().await;
    let external = external_service(&app, &req.api_id);
    let e = endpoint_for_owner(&st, external, &caller, &id, &req.api_id)?.clone();
    let e = transition(&app, &mut st, e, from, to, &req.r#type).await?;
    Ok(Json(views::PrivateLinkEndpointSummaryShowResponse {
        privatelink_endpoint: views::privatelink_summary(&e),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/connected-endpoints",
    operation_id = "privatelink_list_connected",
    tag = "PrivateLink endpoints (extension)",
    params(crate::admin::openapi::ListQueryParams),
    responses((status = 200, description = "OK.", body = views::ApiConnectedEndpointListResponse, content_type = "application/json"))
)]
/// The API owner's view of the endpoints that target its API (every
/// status, so that rejected and blocked ones stay visible).
pub async fn list_connected(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::ApiConnectedEndpointListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at"])?;
    let st = app.state.read().await;
    api_of(&st, &caller, &api_id)?;
    let all: Vec<&PrivatelinkEndpoint> = st
        .privatelink_endpoints
        .values()
        .filter(|e| e.service_api_id == api_id)
        .collect();
    let count = all.len();
    let page = q.page_of(all, |e, _| (e.created_at.clone(), e.id.clone()));
    Ok(Json(views::ApiConnectedEndpointListResponse {
        connected_endpoints: page.into_iter().map(views::privatelink_summary).collect(),
        count,
    }))
}
