//! APIs: create, list, show, set description, delete.

use super::extract::JsonBody;
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = apis::CreateReq)]
pub struct CreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    name: String,
    #[schema(max_length = 100)]
    description: Option<String>,
    #[schema(value_type = Option<super::openapi::EndpointType>)]
    endpoint_type: Option<EndpointType>,
    /// Ignored: the gateway assigns the id.
    #[allow(dead_code)]
    id: Option<String>,
    #[schema(value_type = Option<Vec<super::openapi::Tag>>, max_items = 50)]
    tags: Option<Vec<validate::Obj<Tag>>>,
}

#[utoipa::path(
    post,
    path = "/v1/apis",
    operation_id = "apis_create",
    tag = "APIs",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 202, description = "Accepted.", body = views::ApiCreateResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<(StatusCode, Json<views::ApiCreateResponse>), ApiError> {
    validate::name("name", &req.name)?;
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let tags: Vec<Tag> = req
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.0)
        .collect();
    if tags.len() > 50 {
        return Err(ApiError::field("tags", "at most 50 tags"));
    }
    for t in &tags {
        validate::max_len("tags.key", &t.key, 128)?;
        validate::max_len("tags.value", &t.value, 256)?;
    }
    let mut st = app.state.write().await;
    if st.api_name_taken(&caller.account_id, &req.name) {
        return Err(ApiError::conflict(format!(
            "an API named {} already exists",
            req.name
        )));
    }
    let now = now_rfc3339();
    let api = Api {
        id: new_id(),
        account_id: caller.account_id.clone(),
        name: req.name,
        description,
        endpoint_type: req.endpoint_type.unwrap_or(EndpointType::Region),
        tags,
        created_at: now.clone(),
    };
    let root = Resource {
        id: new_id(),
        api_id: api.id.clone(),
        parent_id: String::new(),
        path_part: "/".into(),
        path: "/".into(),
        created_at: now.clone(),
    };
    let default_ac = AccessControl {
        id: new_id(),
        api_id: api.id.clone(),
        name: DEFAULT_ACCESS_CONTROL_NAME.into(),
        description: "Denies every source address".into(),
        allowed_ip_addr: Vec::new(),
        is_default: true,
        created_at: now,
    };
    let out = views::ApiCreateResponse {
        description: api.description.clone(),
        id: api.id.clone(),
        name: api.name.clone(),
    };
    app.commit(
        &mut st,
        vec![
            Change::Put(Entity::Api(api)),
            Change::Put(Entity::Resource(root)),
            Change::Put(Entity::AccessControl(default_ac)),
        ],
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[utoipa::path(
    get,
    path = "/v1/apis",
    operation_id = "apis_list",
    tag = "APIs",
    params(crate::admin::openapi::ListQueryParams, ("name" = Option<String>, Query, description = "Filter: name contains / equals this value")),
    responses((status = 200, description = "OK.", body = views::ApiListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<views::ApiListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let name = q.get("name");
    let all: Vec<&Api> = st
        .apis
        .values()
        .filter_map(|a| a.api())
        .filter(|a| a.account_id == caller.account_id)
        .filter(|a| name.is_none_or(|n| a.name.contains(n)))
        .collect();
    let (count, page) = q.page_named(all);
    Ok(Json(views::ApiListResponse {
        apis: page.into_iter().map(views::api).collect(),
        count,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}",
    operation_id = "apis_show",
    tag = "APIs",
    responses((status = 200, description = "OK.", body = views::ApiShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<Json<views::ApiShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let api = a
        .api()
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    Ok(Json(views::ApiShowResponse {
        api: views::api(api),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = apis::DescriptionReq)]
pub struct DescriptionReq {
    #[schema(max_length = 100)]
    description: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/description",
    operation_id = "apis_set_description",
    tag = "APIs",
    request_body(content = DescriptionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ApiShowResponse, content_type = "application/json"))
)]
pub async fn set_description(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<DescriptionReq>,
) -> Result<Json<views::ApiShowResponse>, ApiError> {
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut api = a
        .api()
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    api.description = description;
    let out = views::api(&api);
    app.commit(&mut st, vec![Change::Put(Entity::Api(api))])
        .await?;
    Ok(Json(views::ApiShowResponse { api: out }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}",
    operation_id = "apis_delete",
    tag = "APIs",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    api_of(&st, &caller, &api_id)?;
    super::domains::refuse_if_mapped(&st, &api_id, None)?;
    let mut changes = vec![Change::DeleteApi(api_id.clone())];
    // Its PrivateLink service is gone: the endpoints that target it (of
    // any account) end in Error, which only Delete leaves.
    let now = now_rfc3339();
    changes.extend(
        st.privatelink_endpoints
            .values()
            .filter(|e| e.service_api_id == api_id && e.status != PrivatelinkStatus::Error)
            .map(|e| {
                Change::Put(Entity::PrivatelinkEndpoint(PrivatelinkEndpoint {
                    status: PrivatelinkStatus::Error,
                    modified_at: now.clone(),
                    ..e.clone()
                }))
            }),
    );
    app.commit(&mut st, changes).await?;
    app.stats.forget_api(&api_id);
    Ok(StatusCode::NO_CONTENT)
}
