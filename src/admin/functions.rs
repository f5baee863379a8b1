//! Cloud Functions registered with the gateway: an extension beside the
//! SCP operations (the stand-in for the Cloud Functions service). A
//! function is the endpoint that receives the Lambda proxy event of the
//! methods whose integration is SCF; it belongs to the account, not to an
//! API. The auth header's value is stored and sent, never returned.

use super::extract::JsonBody;
use super::validate::{self, Obj};
use super::{views, AdminState, ApiError, Caller};
use crate::snapshot::UrlTemplate;
use crate::store::model::*;
use crate::store::State as St;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

/// Functions per account.
pub const MAX_FUNCTIONS: usize = 100;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = functions::FunctionReq)]
pub struct FunctionReq {
    name: String,
    url: String,
    description: Option<String>,
    timeout_ms: Option<u64>,
    #[schema(value_type = Option<super::openapi::FunctionAuthHeader>)]
    auth_header: Option<Obj<FunctionAuthHeader>>,
}

/// The caller's function, or 404 (also for another account's).
pub fn function_of<'a>(st: &'a St, caller: &Caller, id: &str) -> Result<&'a Function, ApiError> {
    st.functions
        .get(id)
        .filter(|f| f.account_id == caller.account_id)
        .ok_or_else(|| ApiError::not_found(format!("function {id} not found")))
}

/// Headers the gateway sets itself on a function call.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// The checked fields of a create or set.
struct Checked {
    name: String,
    url: String,
    description: String,
    timeout_ms: Option<u64>,
    auth_header: Option<FunctionAuthHeader>,
}

fn check(req: FunctionReq, max_timeout_ms: u64) -> Result<Checked, ApiError> {
    validate::name("name", &req.name)?;
    validate::max_len("url", &req.url, 500)?;
    match UrlTemplate::parse(&req.url) {
        Ok(t) if t.params().next().is_none() => {}
        Ok(_) => return Err(ApiError::field("url", "must not hold {placeholders}")),
        Err(e) => return Err(ApiError::field("url", e)),
    }
    let description = req.description.unwrap_or_default();
    validate::max_len("description", &description, 100)?;
    if let Some(t) = req.timeout_ms {
        if !(1..=max_timeout_ms).contains(&t) {
            return Err(ApiError::field(
                "timeout_ms",
                format!("must be from 1 to {max_timeout_ms} (the integration timeout)"),
            ));
        }
    }
    let auth_header = match req.auth_header {
        None => None,
        Some(Obj(h)) => {
            let name = h.name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ApiError::field("auth_header.name", "is not a header name"));
            }
            if RESERVED.contains(&name.as_str()) {
                return Err(ApiError::field(
                    "auth_header.name",
                    "is a header the gateway sets itself",
                ));
            }
            // The value is a secret: the message never repeats it.
            if h.value.is_empty()
                || h.value.len() > 4096
                || http::HeaderValue::from_str(&h.value).is_err()
            {
                return Err(ApiError::field(
                    "auth_header.value",
                    "must be 1 to 4096 visible ASCII characters",
                ));
            }
            Some(FunctionAuthHeader {
                name,
                value: h.value,
            })
        }
    };
    Ok(Checked {
        name: req.name,
        url: req.url,
        description,
        timeout_ms: req.timeout_ms,
        auth_header,
    })
}

/// The `[[functions]]` of the config as store changes: each one created,
/// or set back to its configured fields when they differ. An invalid entry
/// or a name another function of the account holds stops the start.
pub fn configured_changes(cfg: &crate::config::Config, st: &St) -> anyhow::Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for c in &cfg.functions {
        let what = format!("config: [[functions]] id {:?}", c.id);
        if c.id.is_empty()
            || c.id.len() > 64
            || !c
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            anyhow::bail!("{what}: id must be 1 to 64 of a-z, 0-9 and '-'");
        }
        if c.account_id.is_empty() {
            anyhow::bail!("{what}: account_id is required");
        }
        if seen.contains(&c.id.as_str()) {
            anyhow::bail!("{what}: id given twice");
        }
        seen.push(&c.id);
        let req = FunctionReq {
            name: c.name.clone(),
            url: c.url.clone(),
            description: Some(c.description.clone()),
            timeout_ms: c.timeout_ms,
            auth_header: c.auth_header.as_ref().map(|h| {
                Obj(FunctionAuthHeader {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
            }),
        };
        let checked = check(req, cfg.upstream.timeout_ms)
            .map_err(|e| anyhow::anyhow!("{what}: {}", e.detail))?;
        let caller = Caller {
            account_id: c.account_id.clone(),
            access_key: String::new(),
        };
        name_taken(st, &caller, &checked.name, &c.id)
            .map_err(|e| anyhow::anyhow!("{what}: {}", e.detail))?;
        if cfg
            .functions
            .iter()
            .any(|o| o.id != c.id && o.account_id == c.account_id && o.name == c.name)
        {
            anyhow::bail!("{what}: name {:?} is given twice for the account", c.name);
        }
        let now = now_rfc3339();
        let old = st.functions.get(&c.id);
        if let Some(o) = old {
            if o.account_id != c.account_id {
                anyhow::bail!("{what}: the id is another account's function");
            }
        }
        let f = Function {
            id: c.id.clone(),
            account_id: c.account_id.clone(),
            name: checked.name,
            url: checked.url,
            description: checked.description,
            timeout_ms: checked.timeout_ms,
            auth_header: checked.auth_header,
            created_at: old.map_or(now.clone(), |o| o.created_at.clone()),
            modified_at: now,
        };
        let same = old.is_some_and(|o| {
            Function {
                modified_at: String::new(),
                ..o.clone()
            } == Function {
                modified_at: String::new(),
                ..f.clone()
            }
        });
        if !same {
            out.push(Change::Put(Entity::Function(f)));
        }
    }
    Ok(out)
}

fn name_taken(st: &St, caller: &Caller, name: &str, except: &str) -> Result<(), ApiError> {
    if st
        .functions
        .values()
        .any(|f| f.account_id == caller.account_id && f.name == name && f.id != except)
    {
        return Err(ApiError::conflict(format!(
            "function {name} already exists"
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/functions",
    operation_id = "functions_create",
    tag = "Cloud Functions (extension)",
    request_body(content = FunctionReq, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = views::FunctionShowResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    JsonBody(req): JsonBody<FunctionReq>,
) -> Result<(StatusCode, Json<views::FunctionShowResponse>), ApiError> {
    let c = check(req, app.cfg.upstream.timeout_ms)?;
    let mut st = app.state.write().await;
    name_taken(&st, &caller, &c.name, "")?;
    let n = st
        .functions
        .values()
        .filter(|f| f.account_id == caller.account_id)
        .count();
    if n >= MAX_FUNCTIONS {
        return Err(ApiError::field(
            "name",
            format!("at most {MAX_FUNCTIONS} functions per account: limit reached"),
        ));
    }
    let now = now_rfc3339();
    let f = Function {
        id: new_id(),
        account_id: caller.account_id.clone(),
        name: c.name,
        url: c.url,
        description: c.description,
        timeout_ms: c.timeout_ms,
        auth_header: c.auth_header,
        created_at: now.clone(),
        modified_at: now,
    };
    let out = views::function(&f);
    app.commit(&mut st, vec![Change::Put(Entity::Function(f))])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::FunctionShowResponse { function: out }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/functions",
    operation_id = "functions_list",
    tag = "Cloud Functions (extension)",
    responses((status = 200, description = "OK.", body = views::FunctionListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
) -> Result<Json<views::FunctionListResponse>, ApiError> {
    let st = app.state.read().await;
    let mut all: Vec<&Function> = st
        .functions
        .values()
        .filter(|f| f.account_id == caller.account_id)
        .collect();
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(Json(views::FunctionListResponse {
        count: all.len(),
        functions: all.into_iter().map(views::function).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/functions/{function_id}",
    operation_id = "functions_show",
    tag = "Cloud Functions (extension)",
    responses((status = 200, description = "OK.", body = views::FunctionShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path(function_id): Path<String>,
) -> Result<Json<views::FunctionShowResponse>, ApiError> {
    let st = app.state.read().await;
    let f = function_of(&st, &caller, &function_id)?;
    Ok(Json(views::FunctionShowResponse {
        function: views::function(f),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/functions/{function_id}",
    operation_id = "functions_set",
    tag = "Cloud Functions (extension)",
    request_body(content = FunctionReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::FunctionShowResponse, content_type = "application/json"))
)]
/// Replace every field (an absent `auth_header` removes it).
pub async fn set(
    State(app): State<AdminState>,
    caller: Caller,
    Path(function_id): Path<String>,
    JsonBody(req): JsonBody<FunctionReq>,
) -> Result<Json<views::FunctionShowResponse>, ApiError> {
    let c = check(req, app.cfg.upstream.timeout_ms)?;
    let mut st = app.state.write().await;
    let old = function_of(&st, &caller, &function_id)?;
    name_taken(&st, &caller, &c.name, &old.id)?;
    let f = Function {
        name: c.name,
        url: c.url,
        description: c.description,
        timeout_ms: c.timeout_ms,
        auth_header: c.auth_header,
        modified_at: now_rfc3339(),
        ..old.clone()
    };
    let out = views::function(&f);
    app.commit(&mut st, vec![Change::Put(Entity::Function(f))])
        .await?;
    Ok(Json(views::FunctionShowResponse { function: out }))
}

#[utoipa::path(
    delete,
    path = "/v1/functions/{function_id}",
    operation_id = "functions_delete",
    tag = "Cloud Functions (extension)",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path(function_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let f = function_of(&st, &caller, &function_id)?;
    if let Some(api) = st.apis_using_function(&f.id).first() {
        return Err(ApiError::conflict(format!(
            "function {} is used by a method of api {api} (or a deployment a stage serves)",
            f.id
        )));
    }
    let change = Change::Delete {
        kind: Kind::Function,
        key: f.id.clone(),
        api_id: String::new(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}
