//! Resource-based policy of an API: GET / PUT / DELETE
//! `/v1/apis/{api_id}/resource-policies`. PUT takes the IAM-style policy
//! document itself (or `{"policy_document": <document or JSON string>}`),
//! validates it, and stores it; the data plane evaluates its compiled form.

use super::extract::JsonBytes;
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::store::model::*;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde_json::Value;

/// Parse and validate a policy body; every error names the element.
pub fn document_of(body: &Bytes) -> Result<Value, ApiError> {
    if body.len() > crate::policy::MAX_POLICY_BYTES {
        return Err(ApiError::too_large(format!(
            "policy_document: a policy is at most {} bytes",
            crate::policy::MAX_POLICY_BYTES
        )));
    }
    // The guide's own examples carry trailing commas: parse leniently.
    let v =
        crate::policy::parse_document(body).map_err(|e| ApiError::field(&e.element, e.message))?;
    let doc = match v.get("policy_document") {
        Some(Value::String(s)) => crate::policy::parse_document(s.as_bytes())
            .map_err(|e| ApiError::field("policy_document", e.message))?,
        Some(d) => d.clone(),
        None => v,
    };
    crate::policy::compile(&doc).map_err(|e| ApiError::field(&e.element, e.message))?;
    Ok(doc)
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/resource-policies",
    operation_id = "resource_policies_show",
    tag = "Resource policies (extension)",
    responses((status = 200, description = "OK.", body = views::ResourcePolicyShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<Json<views::ResourcePolicyShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let p = a
        .resource_policy
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} has no resource policy")))?;
    Ok(Json(views::resource_policy(p)))
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/resource-policies",
    operation_id = "resource_policies_put",
    tag = "Resource policies (extension)",
    request_body(content = Object, description = "The policy document (JSON object with Version and Statement).", content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::ResourcePolicyShowResponse, content_type = "application/json"))
)]
pub async fn put(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<views::ResourcePolicyShowResponse>, ApiError> {
    let doc = document_of(&body)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let now = now_rfc3339();
    let p = ResourcePolicy {
        api_id: api_id.clone(),
        document: doc,
        created_at: a
            .resource_policy
            .as_ref()
            .map_or(now.clone(), |p| p.created_at.clone()),
        modified_at: now,
    };
    let out = views::resource_policy(&p);
    app.commit(&mut st, vec![Change::Put(Entity::ResourcePolicy(p))])
        .await?;
    Ok(Json(out))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/resource-policies",
    operation_id = "resource_policies_delete",
    tag = "Resource policies (extension)",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path(api_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    if a.resource_policy.is_none() {
        return Err(ApiError::not_found(format!(
            "api {api_id} has no resource policy"
        )));
    }
    let change = Change::Delete {
        kind: Kind::ResourcePolicy,
        key: api_id.clone(),
        api_id: api_id.clone(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}
