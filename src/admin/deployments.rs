//! Deployments: an immutable copy of the API's resources and methods,
//! optionally activated on a new or an existing stage.

use super::extract::JsonBody;
use super::stages::{new_stage, MAX_STAGES};
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, PartialEq, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = deployments::StageType)]
enum StageType {
    New,
    Existing,
    None,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = deployments::CreateReq)]
pub struct CreateReq {
    #[schema(max_length = 50)]
    description: Option<String>,
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    stage_name: Option<String>,
    stage_type: StageType,
}

/// Freeze the API's current resources and methods.
pub fn freeze(a: &ApiState, api_id: &str, description: String) -> Deployment {
    let mut paths: Vec<String> = a.resources.values().map(|r| r.path.clone()).collect();
    paths.sort();
    let methods = a
        .methods
        .values()
        .filter_map(|m| {
            a.resources.get(&m.resource_id).map(|r| DeployedMethod {
                path: r.path.clone(),
                method: m.clone(),
            })
        })
        .collect();
    Deployment {
        id: new_id(),
        api_id: api_id.to_string(),
        description,
        created_at: now_rfc3339(),
        paths,
        methods,
    }
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/deployments",
    operation_id = "deployments_create",
    tag = "Deployments",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ApiDeploymentResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::ApiDeploymentResponse>, ApiError> {
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 50)?;
    let stage_name = match req.stage_type {
        StageType::None => None,
        _ => {
            let n = req.stage_name.filter(|s| !s.is_empty()).ok_or_else(|| {
                ApiError::field("stage_name", "is required unless stage_type is none")
            })?;
            validate::name("stage_name", &n)?;
            Some(n)
        }
    };
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let dep = freeze(a, &api_id, description);
    let mut changes = Vec::new();
    if let Some(name) = &stage_name {
        match req.stage_type {
            StageType::New => {
                if a.stages.contains_key(name) {
                    return Err(ApiError::conflict(format!("stage {name} already exists")));
                }
                if a.stages.len() >= MAX_STAGES {
                    return Err(ApiError::field(
                        "stage_name",
                        format!("an API has at most {MAX_STAGES} stages"),
                    ));
                }
                let stage = new_stage(a, name, &dep.id, String::new())?;
                changes.push(Change::Put(Entity::Stage(stage)));
            }
            StageType::Existing => {
                let mut stage = a
                    .stages
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(format!("stage {name} not found")))?;
                stage.deployment_id = dep.id.clone();
                stage.activated_at = now_rfc3339();
                changes.push(Change::Put(Entity::Stage(stage)));
            }
            StageType::None => {}
        }
    }
    let out = views::ApiDeploymentResponse {
        deployment_id: dep.id.clone(),
        description: dep.description.clone(),
    };
    changes.insert(0, Change::Put(Entity::Deployment(dep)));
    app.commit(&mut st, changes).await?;
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/deployments",
    operation_id = "deployments_list",
    tag = "Deployments",
    params(crate::admin::openapi::ListQueryParams, ("stage_name" = Option<String>, Query, description = "Filter: stage_name contains / equals this value"), ("deployment_id" = Option<String>, Query, description = "Filter: deployment_id contains / equals this value")),
    responses((status = 200, description = "OK.", body = views::ApiDeploymentListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::ApiDeploymentListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at"])?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let stage = q.get("stage_name");
    if let Some(s) = stage {
        if !a.stages.contains_key(s) {
            return Err(ApiError::not_found(format!("stage {s} not found")));
        }
    }
    let filter_id = q.get("deployment_id");
    let all: Vec<&Deployment> = a
        .deployments
        .values()
        .filter(|d| filter_id.is_none_or(|id| d.id == id))
        .collect();
    let count = all.len();
    let page = q.page_of(all, |d, _| (d.created_at.clone(), d.id.clone()));
    Ok(Json(views::ApiDeploymentListResponse {
        count,
        deployments: page
            .into_iter()
            .map(|d| views::deployment(a, d, stage))
            .collect(),
    }))
}
