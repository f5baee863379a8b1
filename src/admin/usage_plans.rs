//! Usage plans (quota of `limit` calls per hour/day/month per API key) and
//! their API keys. Limits of the user guide: 10 plans per API, 5 keys per
//! plan, limit 1..=2,000,000,000. Key values come from the OS CSPRNG.

use super::extract::JsonBody;
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

pub const MAX_PLANS: usize = 10;
pub const MAX_KEYS_PER_PLAN: usize = 5;
pub const MAX_LIMIT: u64 = 2_000_000_000;

fn plan_of<'a>(a: &'a ApiState, id: &str) -> Result<&'a UsagePlan, ApiError> {
    a.usage_plans
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("usage plan {id} not found")))
}

fn check_limit(limit: u64) -> Result<(), ApiError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(())
}

fn show_after(
    st: &crate::store::State,
    api_id: &str,
    id: &str,
) -> Result<Json<views::UsagePlanShowResponse>, ApiError> {
    let a = st
        .api(api_id)
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    Ok(Json(views::UsagePlanShowResponse {
        usage_plan: views::usage_plan_detail(a, plan_of(a, id)?),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = usage_plans::CreateReq)]
pub struct CreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    name: String,
    #[schema(max_length = 100)]
    description: Option<String>,
    #[schema(minimum = 1, maximum = 2000000000)]
    limit: u64,
    #[schema(value_type = super::openapi::QuotaRate)]
    rate: QuotaRate,
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/usage-plans",
    operation_id = "usage_plans_create",
    tag = "Usage plans",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::UsagePlanShowResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::UsagePlanShowResponse>, ApiError> {
    validate::name("name", &req.name)?;
    check_limit(req.limit)?;
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    validate::room_for(
        "usage plan",
        &req.name,
        a.usage_plans.values().map(|p| p.name.as_str()),
        MAX_PLANS,
    )?;
    let now = now_rfc3339();
    let p = UsagePlan {
        id: new_id(),
        api_id: api_id.clone(),
        name: req.name,
        description,
        limit: req.limit,
        rate: req.rate,
        created_at: now.clone(),
        modified_at: now,
        created_by: caller.access_key.clone(),
        modified_by: caller.access_key.clone(),
    };
    let id = p.id.clone();
    app.commit(&mut st, vec![Change::Put(Entity::UsagePlan(p))])
        .await?;
    show_after(&st, &api_id, &id)
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/usage-plans",
    operation_id = "usage_plans_list",
    tag = "Usage plans",
    params(crate::admin::openapi::ListQueryParams, ("name" = Option<String>, Query, description = "Filter: name contains / equals this value")),
    responses((status = 200, description = "OK.", body = views::UsagePlanListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::UsagePlanListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let name = q.get("name");
    let all: Vec<&UsagePlan> = a
        .usage_plans
        .values()
        .filter(|p| name.is_none_or(|n| p.name.contains(n)))
        .collect();
    let (count, page) = q.page_named(all);
    Ok(Json(views::UsagePlanListResponse {
        count,
        usage_plans: page.into_iter().map(|p| views::usage_plan(a, p)).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}",
    operation_id = "usage_plans_show",
    tag = "Usage plans",
    responses((status = 200, description = "OK.", body = views::UsagePlanShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<Json<views::UsagePlanShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    Ok(Json(views::UsagePlanShowResponse {
        usage_plan: views::usage_plan_detail(a, plan_of(a, &id)?),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = usage_plans::DescriptionReq)]
pub struct DescriptionReq {
    #[schema(max_length = 100)]
    description: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/description",
    operation_id = "usage_plans_set_description",
    tag = "Usage plans",
    request_body(content = DescriptionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::UsagePlanShowResponse, content_type = "application/json"))
)]
pub async fn set_description(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
    JsonBody(req): JsonBody<DescriptionReq>,
) -> Result<Json<views::UsagePlanShowResponse>, ApiError> {
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut p = plan_of(a, &id)?.clone();
    p.description = description;
    p.modified_at = now_rfc3339();
    p.modified_by = caller.access_key.clone();
    app.commit(&mut st, vec![Change::Put(Entity::UsagePlan(p))])
        .await?;
    show_after(&st, &api_id, &id)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = usage_plans::QuotaReq)]
pub struct QuotaReq {
    #[schema(minimum = 1, maximum = 2000000000)]
    limit: u64,
    #[schema(value_type = super::openapi::QuotaRate)]
    rate: QuotaRate,
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/quota",
    operation_id = "usage_plans_set_quota",
    tag = "Usage plans",
    request_body(content = QuotaReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::UsagePlanShowResponse, content_type = "application/json"))
)]
pub async fn set_quota(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
    JsonBody(req): JsonBody<QuotaReq>,
) -> Result<Json<views::UsagePlanShowResponse>, ApiError> {
    check_limit(req.limit)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut p = plan_of(a, &id)?.clone();
    p.limit = req.limit;
    p.rate = req.rate;
    p.modified_at = now_rfc3339();
    p.modified_by = caller.access_key.clone();
    app.commit(&mut st, vec![Change::Put(Entity::UsagePlan(p))])
        .await?;
    show_after(&st, &api_id, &id)
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}",
    operation_id = "usage_plans_delete",
    tag = "Usage plans",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    plan_of(a, &id)?;
    if let Some(s) = a
        .stages
        .values()
        .find(|s| s.usage_plan_id.as_deref() == Some(&id))
    {
        return Err(ApiError::bad_request(format!(
            "usage plan {id} is connected to stage {}; disconnect it first",
            s.name
        )));
    }
    let mut changes: Vec<Change> = a
        .keys_of_plan(&id)
        .map(|k| Change::Delete {
            kind: Kind::ApiKey,
            key: k.id.clone(),
            api_id: api_id.clone(),
        })
        .collect();
    changes.push(Change::Delete {
        kind: Kind::UsagePlan,
        key: id,
        api_id: api_id.clone(),
    });
    app.commit(&mut st, changes).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- API keys ----------------------------------------------------------

/// 40 characters from the OS CSPRNG (alphanumeric, ~238 bits).
pub fn new_key_value() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = usage_plans::KeyCreateReq)]
pub struct KeyCreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    name: String,
    #[schema(max_length = 100)]
    description: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys",
    operation_id = "usage_plans_create_key",
    tag = "Usage plans",
    request_body(content = KeyCreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ApiKeyShowResponse, content_type = "application/json"))
)]
pub async fn create_key(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, plan_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<KeyCreateReq>,
) -> Result<Json<views::ApiKeyShowResponse>, ApiError> {
    validate::name("name", &req.name)?;
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    plan_of(a, &plan_id)?;
    validate::room_for(
        "API key",
        &req.name,
        a.keys_of_plan(&plan_id).map(|k| k.name.as_str()),
        MAX_KEYS_PER_PLAN,
    )?;
    let k = ApiKey {
        id: new_id(),
        api_id: api_id.clone(),
        usage_plan_id: plan_id,
        name: req.name,
        description,
        key: new_key_value(),
        created_at: now_rfc3339(),
    };
    let out = views::api_key(&k);
    app.commit(&mut st, vec![Change::Put(Entity::ApiKey(k))])
        .await?;
    Ok(Json(views::ApiKeyShowResponse { api_key: out }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys",
    operation_id = "usage_plans_list_keys",
    tag = "Usage plans",
    params(crate::admin::openapi::ListQueryParams, ("name" = Option<String>, Query, description = "Filter: name contains / equals this value")),
    responses((status = 200, description = "OK.", body = views::ApiKeyListResponse, content_type = "application/json"))
)]
pub async fn list_keys(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, plan_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::ApiKeyListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    plan_of(a, &plan_id)?;
    let name = q.get("name");
    let all: Vec<&ApiKey> = a
        .keys_of_plan(&plan_id)
        .filter(|k| name.is_none_or(|n| k.name.contains(n)))
        .collect();
    let (count, page) = q.page_named(all);
    Ok(Json(views::ApiKeyListResponse {
        api_keys: page.into_iter().map(views::api_key).collect(),
        count,
    }))
}

fn key_of<'a>(a: &'a ApiState, plan_id: &str, id: &str) -> Result<&'a ApiKey, ApiError> {
    a.api_keys
        .get(id)
        .filter(|k| k.usage_plan_id == plan_id)
        .ok_or_else(|| ApiError::not_found(format!("API key {id} not found")))
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys/{api_key_id}/description",
    operation_id = "usage_plans_set_key_description",
    tag = "Usage plans",
    request_body(content = DescriptionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ApiKeyShowResponse, content_type = "application/json"))
)]
pub async fn set_key_description(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, plan_id, key_id)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<DescriptionReq>,
) -> Result<Json<views::ApiKeyShowResponse>, ApiError> {
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    plan_of(a, &plan_id)?;
    let mut k = key_of(a, &plan_id, &key_id)?.clone();
    k.description = description;
    let out = views::api_key(&k);
    app.commit(&mut st, vec![Change::Put(Entity::ApiKey(k))])
        .await?;
    Ok(Json(views::ApiKeyShowResponse { api_key: out }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/usage-plans/{usage_plan_id}/api-keys/{api_key_id}",
    operation_id = "usage_plans_delete_key",
    tag = "Usage plans",
    responses((status = 204, description = "Done; no body."))
)]
/// Deletes the key; stages that connected it stop accepting it at once.
pub async fn delete_key(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, plan_id, key_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    plan_of(a, &plan_id)?;
    key_of(a, &plan_id, &key_id)?;
    let mut changes = vec![Change::Delete {
        kind: Kind::ApiKey,
        key: key_id.clone(),
        api_id: api_id.clone(),
    }];
    for s in a
        .stages
        .values()
        .filter(|s| s.connected_api_keys.contains(&key_id))
    {
        let mut s = s.clone();
        s.connected_api_keys.retain(|k| *k != key_id);
        changes.push(Change::Put(Entity::Stage(s)));
    }
    app.commit(&mut st, changes).await?;
    Ok(StatusCode::NO_CONTENT)
}
