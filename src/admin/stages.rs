//! Stages: a name pointing at one active deployment, with its own CORS,
//! JWT and usage-plan settings and one connected access control (the
//! API's `Default` one, which allows nothing, until another is connected).

use super::extract::JsonBody;
use super::validate;
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const MAX_STAGES: usize = 10;

/// A new stage on a deployment, connected to the Default access control.
pub fn new_stage(
    a: &ApiState,
    name: &str,
    deployment_id: &str,
    description: String,
) -> Result<Stage, ApiError> {
    let api = a
        .api()
        .ok_or_else(|| ApiError::not_found("api not found".into()))?;
    let default_ac = a.default_access_control().ok_or_else(|| {
        ApiError::internal(format!("api {} has no Default access control", api.id))
    })?;
    let now = now_rfc3339();
    Ok(Stage {
        api_id: api.id.clone(),
        name: name.to_string(),
        description,
        deployment_id: deployment_id.to_string(),
        activated_at: now.clone(),
        created_at: now,
        cors: Cors::default(),
        jwt_enabled: api.endpoint_type == EndpointType::Private,
        usage_plan_id: None,
        connected_api_keys: Vec::new(),
        access_control_id: default_ac.id.clone(),
        throttle: None,
        method_throttles: Vec::new(),
        hide_credentials: false,
        canary: None,
        variables: Default::default(),
    })
}

fn stage_of<'a>(a: &'a ApiState, name: &str) -> Result<&'a Stage, ApiError> {
    a.stages
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("stage {name} not found")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = stages::CreateReq)]
pub struct CreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    stage_name: String,
    deployment_id: String,
    #[schema(max_length = 100)]
    description: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/stages",
    operation_id = "stages_create",
    tag = "Stages",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::StageShowResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::StageShowResponse>, ApiError> {
    validate::name("stage_name", &req.stage_name)?;
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    if !a.deployments.contains_key(&req.deployment_id) {
        return Err(ApiError::not_found(format!(
            "deployment {} not found",
            req.deployment_id
        )));
    }
    if a.stages.contains_key(&req.stage_name) {
        return Err(ApiError::conflict(format!(
            "stage {} already exists",
            req.stage_name
        )));
    }
    if a.stages.len() >= MAX_STAGES {
        return Err(ApiError::field(
            "stage_name",
            format!("an API has at most {MAX_STAGES} stages"),
        ));
    }
    let stage = new_stage(a, &req.stage_name, &req.deployment_id, description)?;
    let name = stage.name.clone();
    app.commit(&mut st, vec![Change::Put(Entity::Stage(stage))])
        .await?;
    show_after(&app, &st, &api_id, &name)
}

fn show_after(
    app: &super::Inner,
    st: &crate::store::State,
    api_id: &str,
    name: &str,
) -> Result<Json<views::StageShowResponse>, ApiError> {
    let a = st
        .api(api_id)
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    let s = stage_of(a, name)?;
    Ok(Json(views::StageShowResponse {
        stage: views::stage(app, a, s),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/stages",
    operation_id = "stages_list",
    tag = "Stages",
    responses((status = 200, description = "OK.", body = views::StageListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<Json<views::StageListResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut stages: Vec<&Stage> = a.stages.values().collect();
    stages.sort_by(|x, y| (&x.created_at, &x.name).cmp(&(&y.created_at, &y.name)));
    Ok(Json(views::StageListResponse {
        stages: stages
            .into_iter()
            .map(|s| views::stage_listed(&app, a, s))
            .collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/stages/{stage_name}",
    operation_id = "stages_show",
    tag = "Stages",
    responses((status = 200, description = "OK.", body = views::StageShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, stage_name)): Path<(String, String)>,
) -> Result<Json<views::StageShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let s = stage_of(a, &stage_name)?;
    Ok(Json(views::StageShowResponse {
        stage: views::stage(&app, a, s),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/stages/{stage_name}",
    operation_id = "stages_delete",
    tag = "Stages",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, stage_name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let s = stage_of(a, &stage_name)?;
    super::domains::refuse_if_mapped(&st, &api_id, Some(&stage_name))?;
    let mut changes = vec![Change::Delete {
        kind: Kind::Stage,
        key: Stage::key(&s.api_id, &s.name),
        api_id: api_id.clone(),
    }];
    // A stage created later under the same name starts unconnected.
    for auth in a
        .auths
        .values()
        .filter(|x| x.connected_stages.contains(&s.name))
    {
        let mut auth = auth.clone();
        auth.connected_stages.retain(|n| *n != stage_name);
        changes.push(Change::Put(Entity::Auth(auth)));
    }
    app.commit(&mut st, changes).await?;
    app.stats.forget_stage(&api_id, &stage_name);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = stages::SetDeploymentReq)]
pub struct SetDeploymentReq {
    deployment_id: String,
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/stages/{stage_name}/deployment",
    operation_id = "stages_set_deployment",
    tag = "Stages",
    request_body(content = SetDeploymentReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::StageShowResponse, content_type = "application/json"))
)]
pub async fn set_deployment(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, stage_name)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetDeploymentReq>,
) -> Result<Json<views::StageShowResponse>, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut s = stage_of(a, &stage_name)?.clone();
    if !a.deployments.contains_key(&req.deployment_id) {
        return Err(ApiError::not_found(format!(
            "deployment {} not found",
            req.deployment_id
        )));
    }
    // Naming the canary's deployment promotes it: the canary is done.
    // Naming another keeps the canary (as AWS keeps canarySettings).
    if s.canary
        .as_ref()
        .is_some_and(|c| c.deployment_id == req.deployment_id)
    {
        s.canary = None;
    }
    s.deployment_id = req.deployment_id;
    s.activated_at = now_rfc3339();
    app.commit(&mut st, vec![Change::Put(Entity::Stage(s))])
        .await?;
    show_after(&app, &st, &api_id, &stage_name)
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY",
];

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = stages::SetConfigReq)]
pub struct SetConfigReq {
    cors_enabled: bool,
    jwt_enabled: bool,
    allow_credentials: Option<bool>,
    allow_headers: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_origins: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<i64>,
    connected_api_keys: Option<Vec<String>>,
    usage_plan_id: Option<String>,
    description: Option<String>,
    /// Extension: absent leaves the setting as it is; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<super::openapi::Throttle>, nullable)]
    throttle: Option<Option<validate::Obj<Throttle>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<super::openapi::MethodThrottle>>, nullable, max_items = 100)]
    method_throttles: Option<Option<Vec<validate::Obj<MethodThrottle>>>>,
    /// Extension: absent leaves the setting as it is.
    hide_credentials: Option<bool>,
    /// Extension: absent leaves the canary as it is; null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CanaryReq>, nullable)]
    canary: Option<Option<validate::Obj<CanaryReq>>>,
    /// Extension: absent leaves the stage variables as they are; null
    /// removes them all; an object replaces them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>, nullable)]
    variables: Option<Option<BTreeMap<String, String>>>,
}

#[derive(Deserialize, Debug, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = stages::CanaryReq)]
pub struct CanaryReq {
    deployment_id: String,
    #[schema(minimum = 0, maximum = 100)]
    percent: f64,
    #[serde(default)]
    #[schema(max_length = 100)]
    sticky_header: Option<String>,
}

pub const MAX_STAGE_VARIABLES: usize = 100;
pub const MAX_STAGE_VARIABLE_VALUE: usize = 512;

/// Names `[A-Za-z0-9_]{1,64}`; values AWS's charset
/// `[A-Za-z0-9-._~:/?#&=,]{1,512}`, and never a dot segment.
fn check_variables(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if vars.len() > MAX_STAGE_VARIABLES {
        return Err(ApiError::field(
            "variables",
            format!("at most {MAX_STAGE_VARIABLES} stage variables"),
        ));
    }
    for (k, v) in vars {
        let name_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(ApiError::field(
                "variables",
                format!("name {k:?} must be 1 to 64 of letters, digits and '_'"),
            ));
        }
        let f = format!("variables.{k}");
        if v.is_empty() || v.len() > MAX_STAGE_VARIABLE_VALUE {
            return Err(ApiError::field(
                &f,
                format!("must be 1 to {MAX_STAGE_VARIABLE_VALUE} characters"),
            ));
        }
        if let Some(bad) = v
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._~:/?#&=,".contains(*c)))
        {
            return Err(ApiError::field(
                &f,
                format!("character {bad:?} is not allowed (letters, digits and -._~:/?#&=,)"),
            ));
        }
        if v == "." || v == ".." {
            return Err(ApiError::field(&f, "must not be a dot segment"));
        }
    }
    Ok(())
}

/// The canary, checked against the API: another deployment of it (not
/// the stage's active one), a percentage, a header name.
fn check_canary(a: &ApiState, s: &Stage, c: &CanaryReq) -> Result<Canary, ApiError> {
    if !c.percent.is_finite() || !(0.0..=100.0).contains(&c.percent) {
        return Err(ApiError::field(
            "canary.percent",
            "must be a number from 0.0 to 100.0",
        ));
    }
    let sticky_header = match c.sticky_header.as_deref() {
        None | Some("") => None,
        Some(h) => {
            if h.len() > 100 || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ApiError::field(
                    "canary.sticky_header",
                    format!("{h:?} is not a header name"),
                ));
            }
            Some(h.to_ascii_lowercase())
        }
    };
    if c.deployment_id.is_empty() {
        return Err(ApiError::field("canary.deployment_id", "is required"));
    }
    if !a.deployments.contains_key(&c.deployment_id) {
        return Err(ApiError::not_found(format!(
            "canary.deployment_id: deployment {} not found",
            c.deployment_id
        )));
    }
    if c.deployment_id == s.deployment_id {
        return Err(ApiError::field(
            "canary.deployment_id",
            "must not be the stage's active deployment",
        ));
    }
    Ok(Canary {
        deployment_id: c.deployment_id.clone(),
        percent: c.percent,
        sticky_header,
    })
}

/// Distinguishes an absent field (None) from an explicit null (Some(None)).
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub const MAX_THROTTLE_RATE: u32 = 1_000_000;

fn check_throttle(field: &str, rate: u32, burst: u32) -> Result<(), ApiError> {
    if rate == 0 || rate > MAX_THROTTLE_RATE {
        return Err(ApiError::field(
            field,
            format!("rate must be from 1 to {MAX_THROTTLE_RATE} requests per second"),
        ));
    }
    if burst == 0 || burst > MAX_THROTTLE_RATE {
        return Err(ApiError::field(
            field,
            format!("burst must be from 1 to {MAX_THROTTLE_RATE}"),
        ));
    }
    Ok(())
}

fn header_names(field: &str, v: &Option<Vec<String>>) -> Result<(), ApiError> {
    if let Some(list) = v {
        if list.len() > 100 {
            return Err(ApiError::field(field, "at most 100 entries"));
        }
        for h in list {
            if h != "*" && http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ApiError::field(
                    field,
                    format!("{h:?} is not a header name"),
                ));
            }
        }
    }
    Ok(())
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/stages/{stage_name}/config",
    operation_id = "stages_set_config",
    tag = "Stages",
    request_body(content = SetConfigReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::StageShowResponse, content_type = "application/json"))
)]
pub async fn set_config(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, stage_name)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetConfigReq>,
) -> Result<Json<views::StageShowResponse>, ApiError> {
    header_names("allow_headers", &req.allow_headers)?;
    header_names("expose_headers", &req.expose_headers)?;
    if let Some(ms) = &req.allow_methods {
        if let Some(bad) = ms.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(ApiError::field(
                "allow_methods",
                format!("{bad:?} is not a method type"),
            ));
        }
    }
    if let Some(os) = &req.allow_origins {
        if os.len() > 100 {
            return Err(ApiError::field("allow_origins", "at most 100 entries"));
        }
        for o in os {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://")) && o.len() <= 300);
            if !ok {
                return Err(ApiError::field(
                    "allow_origins",
                    format!("{o:?} is not * or an http(s) origin"),
                ));
            }
        }
    }
    if let Some(age) = req.max_age {
        if !(0..=86400).contains(&age) {
            return Err(ApiError::field("max_age", "must be 0 to 86400 seconds"));
        }
    }
    if let Some(d) = &req.description {
        validate::max_len("description", d, 100)?;
    }
    if let Some(Some(v)) = &req.variables {
        check_variables(v)?;
    }
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut s = stage_of(a, &stage_name)?.clone();
    let plan = match req.usage_plan_id.as_deref().filter(|p| !p.is_empty()) {
        Some(id) => Some(a.usage_plans.get(id).ok_or_else(|| {
            ApiError::not_found(format!("usage_plan_id: usage plan {id} not found"))
        })?),
        None => None,
    };
    // Connected keys, by id or name, must belong to the plan.
    let mut keys: Vec<String> = Vec::new();
    for k in split_items(req.connected_api_keys.as_deref().unwrap_or(&[])) {
        let Some(plan) = plan else {
            return Err(ApiError::field(
                "connected_api_keys",
                "needs a usage_plan_id",
            ));
        };
        let found = a
            .keys_of_plan(&plan.id)
            .find(|x| x.id == k || x.name == k)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "connected_api_keys: API key {k} not found in the usage plan"
                ))
            })?;
        if !keys.contains(&found.id) {
            keys.push(found.id.clone());
        }
    }
    if let Some(Some(t)) = &req.throttle {
        check_throttle("throttle", t.rate, t.burst)?;
    }
    if let Some(Some(list)) = &req.method_throttles {
        if list.len() > 100 {
            return Err(ApiError::field("method_throttles", "at most 100 entries"));
        }
        for (i, m) in list.iter().enumerate() {
            let f = format!("method_throttles[{i}]");
            check_throttle(&f, m.rate, m.burst)?;
            if MethodType::parse(&m.method).is_none() {
                return Err(ApiError::field(
                    &f,
                    format!("method {:?} is not a method type", m.method),
                ));
            }
            if !m.path.starts_with('/') || m.path.len() > 2000 {
                return Err(ApiError::field(
                    &f,
                    "path must be a resource path starting with /",
                ));
            }
        }
    }
    let private = a
        .api()
        .is_some_and(|x| x.endpoint_type == EndpointType::Private);
    if private && !req.jwt_enabled {
        return Err(ApiError::field(
            "jwt_enabled",
            "must be true on a PRIVATE API",
        ));
    }
    s.cors = Cors {
        cors_enabled: req.cors_enabled,
        allow_origins: req.allow_origins,
        allow_methods: req.allow_methods,
        allow_headers: req.allow_headers,
        expose_headers: req.expose_headers,
        max_age: req.max_age,
        allow_credentials: req.allow_credentials,
    };
    s.jwt_enabled = req.jwt_enabled;
    s.usage_plan_id = plan.map(|p| p.id.clone());
    s.connected_api_keys = keys;
    if let Some(t) = req.throttle {
        s.throttle = t.map(|t| t.0);
    }
    if let Some(m) = req.method_throttles {
        s.method_throttles = m.unwrap_or_default().into_iter().map(|m| m.0).collect();
    }
    if let Some(d) = req.description {
        s.description = d;
    }
    if let Some(h) = req.hide_credentials {
        s.hide_credentials = h;
    }
    match &req.canary {
        None => {}
        Some(None) => s.canary = None,
        Some(Some(c)) => s.canary = Some(check_canary(a, &s, c)?),
    }
    if let Some(v) = req.variables {
        s.variables = v.unwrap_or_default();
    }
    app.commit(&mut st, vec![Change::Put(Entity::Stage(s))])
        .await?;
    show_after(&app, &st, &api_id, &stage_name)
}
