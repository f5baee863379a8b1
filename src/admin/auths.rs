//! JWT auths: create (returns the access token once), list, show, set
//! connected stages, delete. Beyond the reference, an auth may name an
//! external issuer (`external_issuer`: issuer, audience, and a JWKS given
//! inline, from a file under `jwks_dir`, or from a URL, see [`crate::admin::jwks`])
//! whose tokens it then accepts; URL key sets are refreshed in the
//! background.

use super::extract::JsonBody;
use super::validate::{self, ListQuery};
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

pub const MAX_AUTHS: usize = 50;
pub const MAX_EXPIRATION_DAYS: i64 = 3650;

/// `expiration_period` is an integer in the model but a string in the
/// reference's example; both are accepted.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = auths::Days)]
enum Days {
    Int(i64),
    Text(String),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = auths::ExternalReq)]
pub struct ExternalReq {
    #[schema(min_length = 1, max_length = 500)]
    issuer: String,
    audience: Option<String>,
    jwks: Option<Value>,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = auths::CreateReq)]
pub struct CreateReq {
    #[schema(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    name: String,
    /// Days, 1 to 3650 (a number or a string of digits).
    expiration_period: Days,
    /// Required by the reference; null connects no stage.
    #[serde(deserialize_with = "validate::nullable")]
    connected_stages: Option<Vec<String>>,
    #[schema(value_type = Option<ExternalReq>)]
    external_issuer: Option<validate::Obj<ExternalReq>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = auths::SetReq)]
pub struct SetReq {
    /// Required by the reference; null connects no stage.
    #[serde(deserialize_with = "validate::nullable")]
    connected_stages: Option<Vec<String>>,
}

/// The key set of an external issuer and where it came from. Files and
/// URLs are read within the bounds of [`crate::admin::jwks`]; errors name the
/// field and never echo a file's content or a path outside `jwks_dir`.
async fn load_jwks(
    x: &ExternalReq,
    cfg: &crate::config::JwksConfig,
) -> Result<(Value, String), ApiError> {
    const F: &str = "external_issuer.jwks";
    let given = [
        x.jwks.is_some(),
        x.jwks_file.is_some(),
        x.jwks_url.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::field(
            F,
            "give exactly one of jwks, jwks_file, jwks_url",
        ));
    }
    if let Some(v) = &x.jwks {
        return Ok((v.clone(), "inline".into()));
    }
    if let Some(name) = &x.jwks_file {
        let v = crate::admin::jwks::read_file(cfg, name)
            .await
            .map_err(|e| ApiError::field("external_issuer.jwks_file", e))?;
        return Ok((v, format!("file:{name}")));
    }
    let url = x.jwks_url.as_deref().unwrap_or("");
    let fetched = crate::admin::jwks::fetcher(cfg)
        .fetch(url)
        .await
        .map_err(|e| ApiError::field("external_issuer.jwks_url", e))?;
    Ok((fetched.jwks, url.to_string()))
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/auths",
    operation_id = "auths_create",
    tag = "Authentications",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = views::AuthCreateResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<(StatusCode, Json<views::AuthCreateResponse>), ApiError> {
    validate::name("name", &req.name)?;
    let days = match &req.expiration_period {
        Days::Int(n) => Some(*n),
        Days::Text(s) => s.trim().parse().ok(),
    }
    .filter(|d| (1..=MAX_EXPIRATION_DAYS).contains(d))
    .ok_or_else(|| {
        ApiError::field(
            "expiration_period",
            format!("must be a number of days from 1 to {MAX_EXPIRATION_DAYS}"),
        )
    })?;
    let external = match &req.external_issuer {
        None => None,
        Some(x) => {
            if x.issuer.is_empty() || x.issuer.len() > 500 {
                return Err(ApiError::field(
                    "external_issuer.issuer",
                    "is required (at most 500 characters)",
                ));
            }
            let (jwks, source) = load_jwks(x, &app.cfg.jwks).await?;
            crate::jwt::validate_jwks(&jwks)
                .map_err(|e| ApiError::field("external_issuer.jwks", e))?;
            Some(ExternalIssuer {
                issuer: x.issuer.clone(),
                audience: x.audience.clone().filter(|a| !a.is_empty()),
                jwks,
                jwks_source: source,
            })
        }
    };
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    validate::room_for(
        "auth",
        &req.name,
        a.auths.values().map(|x| x.name.as_str()),
        MAX_AUTHS,
    )?;
    let stages = super::connected_stages(a, &req.connected_stages)?;
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::days(days);
    let secret = crate::jwt::new_secret();
    let auth = Auth {
        id: new_id(),
        api_id: api_id.clone(),
        name: req.name,
        expiration_period: days,
        expired_at: expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        expires_at_unix: expires.timestamp(),
        created_at: now_rfc3339(),
        connected_stages: stages,
        secret: B64.encode(&secret),
        external,
    };
    let token = if auth.external.is_some() {
        None
    } else {
        let t = crate::jwt::mint(&secret, &auth.id, &api_id, auth.expires_at_unix)
            .map_err(|e| ApiError::internal(format!("mint token: {e:?}")))?;
        Some(t)
    };
    let id = auth.id.clone();
    app.commit(&mut st, vec![Change::Put(Entity::Auth(auth))])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::AuthCreateResponse {
            access_token: token,
            id,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/auths",
    operation_id = "auths_list",
    tag = "Authentications",
    params(crate::admin::openapi::ListQueryParams),
    responses((status = 200, description = "OK.", body = views::AuthListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::AuthListResponse>, ApiError> {
    let q = ListQuery::parse(q.as_deref(), &["created_at", "name"])?;
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let all: Vec<&Auth> = a.auths.values().collect();
    let (count, page) = q.page_named(all);
    Ok(Json(views::AuthListResponse {
        auths: page.into_iter().map(views::auth).collect(),
        count,
    }))
}

fn auth_of<'a>(a: &'a ApiState, id: &str) -> Result<&'a Auth, ApiError> {
    a.auths
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("auth {id} not found")))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/auths/{auth_id}",
    operation_id = "auths_show",
    tag = "Authentications",
    responses((status = 200, description = "OK.", body = views::AuthShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<Json<views::AuthShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    Ok(Json(views::AuthShowResponse {
        auth: views::auth(auth_of(a, &id)?),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/auths/{auth_id}",
    operation_id = "auths_set",
    tag = "Authentications",
    request_body(content = SetReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::AuthShowResponse, content_type = "application/json"))
)]
pub async fn set(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetReq>,
) -> Result<Json<views::AuthShowResponse>, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let mut auth = auth_of(a, &id)?.clone();
    auth.connected_stages = super::connected_stages(a, &req.connected_stages)?;
    let out = views::auth(&auth);
    app.commit(&mut st, vec![Change::Put(Entity::Auth(auth))])
        .await?;
    Ok(Json(views::AuthShowResponse { auth: out }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/auths/{auth_id}",
    operation_id = "auths_delete",
    tag = "Authentications",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    auth_of(a, &id)?;
    let change = Change::Delete {
        kind: Kind::Auth,
        key: id,
        api_id: api_id.clone(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}
