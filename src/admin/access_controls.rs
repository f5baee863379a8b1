//! Access controls (IP allow lists). Every API has a `Default` one that
//! allows nothing and cannot be deleted or edited; each stage is connected
//! to exactly one access control, and goes back to `Default` when it is
//! disconnected or its access control is deleted.

use super::extract::JsonBody;
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

pub const MAX_IPS: usize = 100;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = access_controls::CreateReq)]
pub struct CreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    name: String,
    /// Addresses or CIDR blocks (entries may hold comma-separated items).
    #[schema(max_items = 100)]
    allowed_ip_addr: Vec<String>,
    /// Required by the reference; null connects no stage.
    #[serde(deserialize_with = "validate::nullable")]
    connected_stages: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = access_controls::SetReq)]
pub struct SetReq {
    allowed_ip_addr: Vec<String>,
    /// Required by the reference; null connects no stage.
    #[serde(deserialize_with = "validate::nullable")]
    connected_stages: Option<Vec<String>>,
    description: Option<String>,
}

fn check_ips(list: &[String]) -> Result<(), ApiError> {
    let mut n = 0;
    for item in split_items(list) {
        n += 1;
        if n > MAX_IPS {
            return Err(ApiError::field(
                "allowed_ip_addr",
                format!("at most {MAX_IPS} addresses"),
            ));
        }
        if parse_ip_item(item).is_none() {
            return Err(ApiError::field(
                "allowed_ip_addr",
                format!("{item:?} is not an IP address or CIDR"),
            ));
        }
    }
    if n == 0 {
        return Err(ApiError::field(
            "allowed_ip_addr",
            "at least one address is required",
        ));
    }
    Ok(())
}

/// Changes that leave exactly `wanted` connected to `ac_id` (others go
/// back to Default).
fn reconnect(a: &ApiState, ac_id: &str, wanted: &[String]) -> Result<Vec<Change>, ApiError> {
    let default_id = a
        .default_access_control()
        .map(|d| d.id.clone())
        .ok_or_else(|| ApiError::internal("api without Default access control".into()))?;
    let mut changes = Vec::new();
    for s in a.stages.values() {
        let want = wanted.contains(&s.name);
        let target = if want {
            ac_id
        } else if s.access_control_id == ac_id {
            default_id.as_str()
        } else {
            continue;
        };
        if s.access_control_id != target {
            let mut s2 = s.clone();
            s2.access_control_id = target.to_string();
            changes.push(Change::Put(Entity::Stage(s2)));
        }
    }
    Ok(changes)
}

fn not_private(a: &ApiState) -> Result<(), ApiError> {
    if a.api()
        .is_some_and(|x| x.endpoint_type == EndpointType::Private)
    {
        return Err(ApiError::bad_request(
            "access control is not supported on a PRIVATE API (JWT is enforced instead)".into(),
        ));
    }
    Ok(())
}

fn ac_of<'a>(a: &'a ApiState, id: &str) -> Result<&'a AccessControl, ApiError> {
    a.access_controls
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("access control {id} not found")))
}

fn view_after(
    st: &crate::store::State,
    api_id: &str,
    id: &str,
) -> Result<views::AccessControl, ApiError> {
    let a = st
        .api(api_id)
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    Ok(views::access_control(a, ac_of(a, id)?))
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/access-controls",
    operation_id = "access_controls_create",
    tag = "Access controls",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = views::AccessControl, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<(StatusCode, Json<views::AccessControl>), ApiError> {
    validate::name("name", &req.name)?;
    check_ips(&req.allowed_ip_addr)?;
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 50)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    not_private(a)?;
    if a.access_controls.values().any(|x| x.name == req.name) {
        return Err(ApiError::conflict(format!(
            "access control {} already exists",
            req.name
        )));
    }
    let stages = super::connected_stages(a, &req.connected_stages)?;
    let ac = AccessControl {
        id: new_id(),
        api_id: api_id.clone(),
        name: req.name,
        description,
        allowed_ip_addr: req.allowed_ip_addr,
        is_default: false,
        created_at: now_rfc3339(),
    };
    let id = ac.id.clone();
    let mut changes = reconnect(a, &id, &stages)?;
    changes.insert(0, Change::Put(Entity::AccessControl(ac)));
    app.commit(&mut st, changes).await?;
    Ok((StatusCode::CREATED, Json(view_after(&st, &api_id, &id)?)))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/access-controls",
    operation_id = "access_controls_list",
    tag = "Access controls",
    params(crate::admin::openapi::ListQueryParams),
    responses((status = 200, description = "OK.", body = views::AccessControlListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::AccessControlListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let all: Vec<&AccessControl> = a.access_controls.values().collect();
    let (count, page) = q.page_named(all);
    Ok(Json(views::AccessControlListResponse {
        access_controls: page
            .into_iter()
            .map(|x| views::access_control(a, x))
            .collect(),
        count,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/access-controls/{access_control_id}",
    operation_id = "access_controls_show",
    tag = "Access controls",
    responses((status = 200, description = "OK.", body = views::AccessControlShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<Json<views::AccessControlShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let ac = ac_of(a, &id)?;
    Ok(Json(views::AccessControlShowResponse {
        access_control: views::access_control(a, ac),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/access-controls/{access_control_id}",
    operation_id = "access_controls_set",
    tag = "Access controls",
    request_body(content = SetReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::AccessControlShowResponse, content_type = "application/json"))
)]
pub async fn set(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetReq>,
) -> Result<Json<views::AccessControlShowResponse>, ApiError> {
    check_ips(&req.allowed_ip_addr)?;
    if let Some(d) = &req.description {
        validate::max_len("description", d, 50)?;
    }
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut ac = ac_of(a, &id)?.clone();
    if ac.is_default {
        return Err(ApiError::bad_request(
            "the Default access control cannot be modified".into(),
        ));
    }
    let stages = super::connected_stages(a, &req.connected_stages)?;
    let mut changes = reconnect(a, &id, &stages)?;
    ac.allowed_ip_addr = req.allowed_ip_addr;
    if let Some(d) = req.description {
        ac.description = d;
    }
    changes.insert(0, Change::Put(Entity::AccessControl(ac)));
    app.commit(&mut st, changes).await?;
    Ok(Json(views::AccessControlShowResponse {
        access_control: view_after(&st, &api_id, &id)?,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/access-controls/{access_control_id}",
    operation_id = "access_controls_delete",
    tag = "Access controls",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let ac = ac_of(a, &id)?;
    if ac.is_default {
        return Err(ApiError::bad_request(
            "the Default access control cannot be deleted".into(),
        ));
    }
    let mut changes = reconnect(a, &id, &[])?;
    changes.push(Change::Delete {
        kind: Kind::AccessControl,
        key: id.clone(),
        api_id: api_id.clone(),
    });
    app.commit(&mut st, changes).await?;
    Ok(StatusCode::NO_CONTENT)
}
