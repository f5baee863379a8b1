//! Management response bodies, with the field names of the v1.2 reference.

use super::Inner;
use crate::snapshot::{method_srn, BuildContext};
use crate::store::model::*;
use crate::store::ApiState;
use serde_json::{json, Value};

pub fn api(a: &Api) -> Value {
    let mut v = json!({
        "account_id": a.account_id,
        "created_at": a.created_at,
        "description": a.description,
        "dns_record_status": "Active",
        "endpoint_type": a.endpoint_type.as_str(),
        "id": a.id,
        "name": a.name,
        "status": "Active",
        "tags": a.tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
    });
    // Extension: a PRIVATE API is a PrivateLink service; its id is what a
    // consumer's Create PrivateLink Endpoint names.
    if let (Some(id), Some(o)) = (a.privatelink_service_id(), v.as_object_mut()) {
        o.insert("privatelink_service_id".into(), Value::String(id));
    }
    v
}

/// `functions`: the registered functions (to name an SCF method's).
pub fn method(
    app: &Inner,
    functions: &crate::snapshot::Functions,
    a: &Api,
    m: &Method,
    path: &str,
    stage: &str,
) -> Value {
    let function_name = m
        .function_id
        .as_ref()
        .and_then(|id| functions.get(id))
        .filter(|f| f.account_id == a.account_id)
        .map(|f| f.name.clone());
    let ctx = BuildContext::from_config(&app.cfg);
    json!({
        "api_key_required": m.api_key_required,
        "endpoint_url": m.endpoint_url,
        "function_id": m.function_id,
        "function_name": function_name,
        "integration_type": m.integration_type.as_str(),
        "method_type": m.method_type.as_str(),
        "privatelink_endpoint_id": m.privatelink_endpoint_id,
        "query_strings": m.query_strings,
        "request_headers": m.request_headers,
        "request_path": path,
        "srn": method_srn(&ctx, &a.account_id, &a.id, stage, m.method_type.as_str(), path),
    })
}

pub fn resource(
    app: &Inner,
    functions: &crate::snapshot::Functions,
    st: &ApiState,
    r: &Resource,
) -> Value {
    let a = st.api().cloned();
    let methods: Vec<Value> = match &a {
        Some(a) => st
            .methods_of(&r.id)
            .map(|m| method(app, functions, a, m, &r.path, "*"))
            .collect(),
        None => Vec::new(),
    };
    json!({
        "id": r.id,
        "methods": methods,
        "parent_id": r.parent_id,
        "path": r.path,
        "path_part": r.path_part,
    })
}

pub fn access_control(st: &ApiState, ac: &AccessControl) -> Value {
    let stages: Vec<&str> = st
        .stages_of_access_control(&ac.id)
        .map(|s| s.name.as_str())
        .collect();
    json!({
        "allowed_ip_addr": ac.allowed_ip_addr,
        "connected_stages": stages,
        "created_at": ac.created_at,
        "description": ac.description,
        "id": ac.id,
        "name": ac.name,
    })
}

pub fn deployment(st: &ApiState, d: &Deployment, stage_filter: Option<&str>) -> Value {
    let active = match stage_filter {
        Some(name) => st.stages.get(name).is_some_and(|s| s.deployment_id == d.id),
        None => st.stages_on_deployment(&d.id).next().is_some(),
    };
    // Extension: the canary deployment of a stage (of the named one).
    let canary = |s: &Stage| s.canary.as_ref().is_some_and(|c| c.deployment_id == d.id);
    let canary = match stage_filter {
        Some(name) => st.stages.get(name).is_some_and(canary),
        None => st.stages.values().any(canary),
    };
    json!({
        "deployment_date": d.created_at,
        "deployment_id": d.id,
        "description": d.description,
        "status": if active { "Active" } else if canary { "Canary" } else { "Inactive" },
    })
}

pub fn stage(app: &Inner, st: &ApiState, s: &Stage, with_summary: bool) -> Value {
    let dep = st.deployments.get(&s.deployment_id);
    let api_key_required = dep.is_some_and(|d| d.methods.iter().any(|m| m.method.api_key_required));
    let plan = s
        .usage_plan_id
        .as_ref()
        .and_then(|id| st.usage_plans.get(id));
    let mut v = json!({
        "access_control_id": s.access_control_id,
        "active_deployment": s.activated_at,
        "allow_credentials": s.cors.allow_credentials,
        "allow_headers": s.cors.allow_headers,
        "allow_methods": s.cors.allow_methods,
        "allow_origins": s.cors.allow_origins,
        "api_id": s.api_id,
        "api_key_required": api_key_required,
        "cors_enabled": s.cors.cors_enabled,
        "created_at": s.created_at,
        "deployment_id": s.deployment_id,
        "description": s.description,
        "expose_headers": s.cors.expose_headers,
        "invoke_url": app.invoke_url(&s.api_id, &s.name),
        "ip_restriction_enabled": true,
        "jwt_enabled": s.jwt_enabled,
        "max_age": s.cors.max_age,
        "name": s.name,
        "usage_plan_api_keys": s.connected_api_keys.iter().filter_map(|k| st.api_keys.get(k))
            .map(|k| json!({"id": k.id, "name": k.name})).collect::<Vec<_>>(),
        "usage_plan_id": s.usage_plan_id,
        "usage_plan_limit": plan.map(|p| p.limit),
        "usage_plan_name": plan.map(|p| p.name.clone()),
        "usage_plan_rate": plan.map(|p| p.rate.as_str()),
        "throttle": s.throttle,
        "method_throttles": s.method_throttles,
        "hide_credentials": s.hide_credentials,
        "canary": s.canary,
        "variables": s.variables,
    });
    if with_summary {
        let mut summary: Vec<Value> = Vec::new();
        if let Some(d) = dep {
            let mut by_path: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
            for p in &d.paths {
                by_path.entry(p.as_str()).or_default();
            }
            for m in &d.methods {
                by_path.entry(m.path.as_str()).or_default().push(json!({
                    "api_key_required": m.method.api_key_required,
                    "type": m.method.method_type.as_str(),
                }));
            }
            summary = by_path
                .into_iter()
                .map(|(p, ms)| json!({"path": p, "methods": ms}))
                .collect();
        }
        v["api_summary"] = Value::Array(summary);
    }
    v
}
