//! Resources: the tree of path parts under `/`. Limits: 300 resources
//! (the root not counted), depth 30 including the root, one parameter
//! child per resource.

use super::extract::JsonBody;
use super::validate::PATH_PART;
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

pub const MAX_RESOURCES: usize = 300;
pub const MAX_DEPTH: usize = 30;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = resources::CreateReq)]
pub struct CreateReq {
    /// A path segment, or a `{parameter}`.
    #[schema(
        pattern = r"^(\{[a-z][a-z0-9\-]{1,46}[a-z0-9]\}|[a-z][a-z0-9\-]{1,48}[a-z0-9])$",
        min_length = 3,
        max_length = 50
    )]
    path_part: String,
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/resources/{resource_id}",
    operation_id = "resources_create",
    tag = "Resources",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ResourceCreateResponse, content_type = "application/json"))
)]
/// `POST /v1/apis/{api_id}/resources/{parent_id}`.
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, parent_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::ResourceCreateResponse>, ApiError> {
    let part = req.path_part;
    if part.len() < 3 || part.len() > 50 {
        return Err(ApiError::field("path_part", "must be 3 to 50 characters"));
    }
    if !PATH_PART.is_match(&part) {
        return Err(ApiError::field(
            "path_part",
            "must be a lowercase name ([a-z][a-z0-9-]*[a-z0-9]) or a parameter {name}",
        ));
    }
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let parent = a
        .resources
        .get(&parent_id)
        .ok_or_else(|| ApiError::not_found(format!("resource {parent_id} not found")))?;
    if a.resources.len() > MAX_RESOURCES {
        return Err(ApiError::field(
            "path_part",
            format!("an API has at most {MAX_RESOURCES} resources"),
        ));
    }
    if parent.depth() + 1 > MAX_DEPTH {
        return Err(ApiError::field(
            "path_part",
            format!("resources nest at most {MAX_DEPTH} levels including the root"),
        ));
    }
    let is_param = part.starts_with('{');
    for sib in a.children_of(&parent.id) {
        if sib.path_part == part {
            return Err(ApiError::conflict(format!(
                "resource {} already exists",
                sib.path
            )));
        }
        if is_param && sib.path_part.starts_with('{') {
            return Err(ApiError::conflict(format!(
                "{} already has a parameter child {}; only one is allowed",
                parent.path, sib.path_part
            )));
        }
    }
    let path = if parent.path == "/" {
        format!("/{part}")
    } else {
        format!("{}/{part}", parent.path)
    };
    if is_param && parent.path.split('/').any(|p| p == part) {
        return Err(ApiError::field(
            "path_part",
            format!("parameter {part} is already used in {}", parent.path),
        ));
    }
    let r = Resource {
        id: new_id(),
        api_id: api_id.clone(),
        parent_id: parent.id.clone(),
        path_part: part,
        path,
        created_at: now_rfc3339(),
    };
    let out = views::ResourceCreateResponse {
        api_id: r.api_id.clone(),
        id: r.id.clone(),
        parent_id: r.parent_id.clone(),
        path: r.path.clone(),
        path_part: r.path_part.clone(),
    };
    app.commit(&mut st, vec![Change::Put(Entity::Resource(r))])
        .await?;
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/resources",
    operation_id = "resources_list",
    tag = "Resources",
    responses((status = 200, description = "OK.", body = views::ResourceListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<Json<views::ResourceListResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut rs: Vec<&Resource> = a.resources.values().collect();
    rs.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(Json(views::ResourceListResponse {
        resources: rs
            .into_iter()
            .map(|r| views::resource(&app, &st.functions, a, r))
            .collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/resources/{resource_id}",
    operation_id = "resources_show",
    tag = "Resources",
    responses((status = 200, description = "OK.", body = views::ResourceShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id)): Path<(String, String)>,
) -> Result<Json<views::ResourceShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = a
        .resources
        .get(&resource_id)
        .ok_or_else(|| ApiError::not_found(format!("resource {resource_id} not found")))?;
    Ok(Json(views::ResourceShowResponse {
        resource: views::resource(&app, &st.functions, a, r),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/resources/{resource_id}",
    operation_id = "resources_delete",
    tag = "Resources",
    responses((status = 204, description = "Done; no body."))
)]
/// Deletes the resource, its descendants and their methods.
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = a
        .resources
        .get(&resource_id)
        .ok_or_else(|| ApiError::not_found(format!("resource {resource_id} not found")))?;
    if r.is_root() {
        return Err(ApiError::field(
            "resource_id",
            "the root resource cannot be deleted",
        ));
    }
    let mut changes = Vec::new();
    for res in a.subtree(&resource_id) {
        for m in a.methods_of(&res.id) {
            changes.push(Change::Delete {
                kind: Kind::Method,
                key: Method::key(&m.resource_id, m.method_type),
                api_id: api_id.clone(),
            });
        }
        changes.push(Change::Delete {
            kind: Kind::Resource,
            key: res.id.clone(),
            api_id: api_id.clone(),
        });
    }
    app.commit(&mut st, changes).await?;
    Ok(StatusCode::NO_CONTENT)
}
