//! Methods of a resource: create (ANY creates all seven), list, show,
//! set, delete. HTTP integrations need an `endpoint_url` whose `{param}`
//! placeholders name path parameters of the resource.

use super::extract::JsonBody;
use super::validate;
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::snapshot::UrlTemplate;
use crate::store::model::*;
use crate::store::ApiState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = methods::CreateReq)]
pub struct CreateReq {
    #[schema(pattern = "^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|ANY)$")]
    method_type: String,
    #[schema(value_type = super::openapi::IntegrationType)]
    integration_type: IntegrationType,
    #[schema(max_length = 500)]
    endpoint_url: Option<String>,
    function_id: Option<String>,
    privatelink_endpoint_id: Option<String>,
    api_key_required: Option<bool>,
    #[serde(default, deserialize_with = "param_map_opt")]
    query_strings: Option<BTreeMap<String, bool>>,
    #[serde(default, deserialize_with = "param_map_opt")]
    request_headers: Option<BTreeMap<String, bool>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = methods::SetReq)]
pub struct SetReq {
    api_key_required: bool,
    #[schema(value_type = super::openapi::IntegrationType)]
    integration_type: IntegrationType,
    #[schema(max_length = 500)]
    endpoint_url: Option<String>,
    function_id: Option<String>,
    privatelink_endpoint_id: Option<String>,
    #[serde(deserialize_with = "param_map")]
    query_strings: BTreeMap<String, bool>,
    #[serde(deserialize_with = "param_map")]
    request_headers: BTreeMap<String, bool>,
}

/// `query_strings` / `request_headers`: `{name: required}` as a JSON
/// object of booleans, or as the reference's examples write it, a string
/// holding a Python-style dict: `"{'test1' : True}"` (single or double
/// quotes, `True`/`False`/`true`/`false`; a quoted value such as the
/// reference's `'value1'` declares the parameter, not required).
#[derive(Deserialize)]
#[serde(untagged)]
enum ParamMap {
    Object(BTreeMap<String, bool>),
    Text(String),
}

fn param_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, bool>, D::Error> {
    use serde::de::Error;
    match ParamMap::deserialize(d) {
        Ok(ParamMap::Object(m)) => Ok(m),
        Ok(ParamMap::Text(s)) => parse_param_dict(&s).map_err(D::Error::custom),
        Err(_) => Err(D::Error::custom(
            "must be a JSON object of booleans ({\"name\": true}) or a string like \"{'name': True}\"",
        )),
    }
}

fn param_map_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, bool>>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "param_map")] BTreeMap<String, bool>);
    Option::<W>::deserialize(d).map(|o| o.map(|w| w.0))
}

/// Parse `{'a': True, "b": false, 'c': 'x'}`; "" is no parameters.
pub fn parse_param_dict(s: &str) -> Result<BTreeMap<String, bool>, String> {
    let bad = |what: &str| format!("{what} in {s:?}: expected a dict like \"{{'name': True}}\"");
    let mut out = BTreeMap::new();
    let t = s.trim();
    if t.is_empty() {
        return Ok(out);
    }
    let inner = t
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("not a dict"))?;
    let mut rest = inner.trim_start();
    // One quoted string at the start of `rest`: (content, what follows).
    fn quoted(r: &str) -> Option<(&str, &str)> {
        let q = r.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let body = &r[1..];
        let end = body.find(q)?;
        Some((&body[..end], &body[end + 1..]))
    }
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| bad("a name must be quoted"))?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("':' expected"))?
            .trim_start();
        let (required, after) = if let Some((_, a)) = quoted(after) {
            (false, a)
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            let v = match &after[..end] {
                "True" | "true" => true,
                "False" | "false" => false,
                _ => return Err(bad("a value must be True, False or a quoted string")),
            };
            (v, &after[end..])
        };
        out.insert(key.to_string(), required);
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.is_empty() => after,
            None => return Err(bad("',' expected")),
        };
    }
    Ok(out)
}

/// Integration fields, checked together.
struct Integration {
    integration_type: IntegrationType,
    endpoint_url: Option<String>,
    function_id: Option<String>,
    privatelink_endpoint_id: Option<String>,
}

fn check_endpoint_url(url: &str, resource: &Resource) -> Result<(), ApiError> {
    const F: &str = "endpoint_url";
    if url.len() > 500 {
        return Err(ApiError::field(F, "must be at most 500 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "$-_.+!*'(){}/:?=&%~,;@[]".contains(c);
    if let Some(bad) = url.chars().find(|c| !allowed(*c)) {
        return Err(ApiError::field(
            F,
            format!("character {bad:?} is not allowed"),
        ));
    }
    // Scheme and authority fixed, placeholders in the path and query only,
    // and the URL valid once they are filled.
    let tpl = UrlTemplate::parse(url).map_err(|e| ApiError::field(F, e))?;
    let params: Vec<&str> = resource
        .path
        .split('/')
        .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
        .collect();
    for p in tpl.params() {
        if !params.contains(&p) {
            return Err(ApiError::field(
                F,
                format!(
                    "placeholder {{{p}}} is not a path parameter of {}",
                    resource.path
                ),
            ));
        }
    }
    Ok(())
}

fn check_integration(i: &Integration, resource: &Resource) -> Result<(), ApiError> {
    let nonempty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    match i.integration_type {
        IntegrationType::HTTP => match &i.endpoint_url {
            Some(u) if !u.is_empty() => check_endpoint_url(u, resource),
            _ => Err(ApiError::field(
                "endpoint_url",
                "is required for HTTP integration",
            )),
        },
        IntegrationType::SCF => {
            if !nonempty(&i.function_id) {
                return Err(ApiError::field(
                    "function_id",
                    "is required for SCF integration",
                ));
            }
            validate::max_len("function_id", i.function_id.as_deref().unwrap_or(""), 64)
        }
        IntegrationType::PRIVATELINK => {
            if !nonempty(&i.privatelink_endpoint_id) {
                return Err(ApiError::field(
                    "privatelink_endpoint_id",
                    "is required for PRIVATELINK integration",
                ));
            }
            validate::max_len(
                "privatelink_endpoint_id",
                i.privatelink_endpoint_id.as_deref().unwrap_or(""),
                64,
            )?;
            // The URL on the service side: its scheme, Host and path.
            match &i.endpoint_url {
                Some(u) if !u.is_empty() => check_endpoint_url(u, resource),
                _ => Err(ApiError::field(
                    "endpoint_url",
                    "is required for PRIVATELINK integration",
                )),
            }
        }
    }
}

/// An SCF method's function must be registered by the caller's account;
/// a PRIVATELINK method's endpoint must be one of the caller's.
fn check_function(
    st: &crate::store::State,
    caller: &Caller,
    i: &Integration,
) -> Result<(), ApiError> {
    match (&i.integration_type, &i.function_id) {
        (IntegrationType::SCF, Some(id)) => super::functions::function_of(st, caller, id)
            .map(drop)
            .map_err(|_| {
                ApiError::field(
                    "function_id",
                    format!("function {id} is not registered (POST /v1/functions)"),
                )
            }),
        (IntegrationType::PRIVATELINK, _) => {
            let id = i.privatelink_endpoint_id.as_deref().unwrap_or("");
            let own = st
                .privatelink_endpoints
                .get(id)
                .is_some_and(|e| e.account_id == caller.account_id);
            if own {
                Ok(())
            } else {
                Err(ApiError::field(
                    "privatelink_endpoint_id",
                    format!("privatelink endpoint {id} is not an endpoint of this account"),
                ))
            }
        }
        _ => Ok(()),
    }
}

fn check_params(qs: &BTreeMap<String, bool>, hs: &BTreeMap<String, bool>) -> Result<(), ApiError> {
    if qs.len() > 50 {
        return Err(ApiError::field("query_strings", "at most 50 entries"));
    }
    if hs.len() > 50 {
        return Err(ApiError::field("request_headers", "at most 50 entries"));
    }
    for k in qs.keys() {
        if k.is_empty()
            || k.len() > 100
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ApiError::field(
                "query_strings",
                format!("name {k:?} must use letters, digits and '_'"),
            ));
        }
    }
    for k in hs.keys() {
        if k.is_empty()
            || k.len() > 100
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ApiError::field(
                "request_headers",
                format!("name {k:?} must use letters, digits and '-'"),
            ));
        }
    }
    Ok(())
}

/// Keep only the fields that belong to the integration type (PRIVATELINK
/// keeps `endpoint_url`: the URL on the service side).
fn normalized(i: Integration) -> Integration {
    let t = i.integration_type;
    Integration {
        integration_type: t,
        endpoint_url: i.endpoint_url.filter(|_| t != IntegrationType::SCF),
        function_id: i.function_id.filter(|_| t == IntegrationType::SCF),
        privatelink_endpoint_id: i
            .privatelink_endpoint_id
            .filter(|_| t == IntegrationType::PRIVATELINK),
    }
}

fn resource_of<'a>(a: &'a ApiState, id: &str) -> Result<&'a Resource, ApiError> {
    a.resources
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("resource {id} not found")))
}

fn path_method_type(s: &str) -> Result<Option<MethodType>, ApiError> {
    match s {
        "TRACE" | "CONNECT" => Ok(None),
        _ => MethodType::parse(s).map(Some).ok_or_else(|| {
            ApiError::field(
                "method_type",
                "must be one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, TRACE, CONNECT",
            )
        }),
    }
}

#[utoipa::path(
    post,
    path = "/v1/apis/{api_id}/resources/{resource_id}/methods",
    operation_id = "methods_create",
    tag = "Methods",
    request_body(content = CreateReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::MethodListResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateReq>,
) -> Result<Json<views::MethodListResponse>, ApiError> {
    let types: Vec<MethodType> = match req.method_type.as_str() {
        "ANY" => MethodType::ALL.to_vec(),
        s => vec![MethodType::parse(s).ok_or_else(|| {
            ApiError::field(
                "method_type",
                "must be one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ANY",
            )
        })?],
    };
    let integ = normalized(Integration {
        integration_type: req.integration_type,
        endpoint_url: req.endpoint_url,
        function_id: req.function_id,
        privatelink_endpoint_id: req.privatelink_endpoint_id,
    });
    let qs = req.query_strings.unwrap_or_default();
    let hs = req.request_headers.unwrap_or_default();
    check_params(&qs, &hs)?;

    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = resource_of(a, &resource_id)?;
    check_integration(&integ, r)?;
    check_function(&st, &caller, &integ)?;
    if let Some(t) = types
        .iter()
        .find(|t| a.methods.contains_key(&(r.id.clone(), **t)))
    {
        return Err(ApiError::conflict(format!(
            "method {} already exists on {}",
            t.as_str(),
            r.path
        )));
    }
    let now = now_rfc3339();
    let methods: Vec<Method> = types
        .into_iter()
        .map(|t| Method {
            api_id: api_id.clone(),
            resource_id: r.id.clone(),
            method_type: t,
            integration_type: integ.integration_type,
            endpoint_url: integ.endpoint_url.clone(),
            function_id: integ.function_id.clone(),
            privatelink_endpoint_id: integ.privatelink_endpoint_id.clone(),
            api_key_required: req.api_key_required.unwrap_or(false),
            query_strings: qs.clone(),
            request_headers: hs.clone(),
            created_at: now.clone(),
        })
        .collect();
    let api = a.api().cloned();
    let path = r.path.clone();
    let out: Vec<views::Method> = match &api {
        Some(api) => methods
            .iter()
            .map(|m| views::method(&app, &st.functions, api, m, &path, "*"))
            .collect(),
        None => Vec::new(),
    };
    app.commit(
        &mut st,
        methods
            .into_iter()
            .map(|m| Change::Put(Entity::Method(m)))
            .collect(),
    )
    .await?;
    Ok(Json(views::MethodListResponse { methods: out }))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/resources/{resource_id}/methods",
    operation_id = "methods_list",
    tag = "Methods",
    responses((status = 200, description = "OK.", body = views::MethodListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id)): Path<(String, String)>,
) -> Result<Json<views::MethodListResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = resource_of(a, &resource_id)?;
    let api = a.api().cloned();
    let out: Vec<views::Method> = match &api {
        Some(api) => a
            .methods_of(&r.id)
            .map(|m| views::method(&app, &st.functions, api, m, &r.path, "*"))
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(views::MethodListResponse { methods: out }))
}

fn find<'a>(a: &'a ApiState, r: &Resource, method_type: &str) -> Result<&'a Method, ApiError> {
    let t = path_method_type(method_type)?;
    t.and_then(|t| a.methods.get(&(r.id.clone(), t)))
        .ok_or_else(|| ApiError::not_found(format!("method {method_type} not found on {}", r.path)))
}

#[utoipa::path(
    get,
    path = "/v1/apis/{api_id}/resources/{resource_id}/methods/{method_type}",
    operation_id = "methods_show",
    tag = "Methods",
    responses((status = 200, description = "OK.", body = views::MethodShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id, method_type)): Path<(String, String, String)>,
) -> Result<Json<views::MethodShowResponse>, ApiError> {
    let st = app.state.read().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = resource_of(a, &resource_id)?;
    let m = find(a, r, &method_type)?;
    let api = a
        .api()
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    Ok(Json(views::MethodShowResponse {
        method: views::method(&app, &st.functions, &api, m, &r.path, "*"),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/apis/{api_id}/resources/{resource_id}/methods/{method_type}",
    operation_id = "methods_set",
    tag = "Methods",
    request_body(content = SetReq, content_type = "application/json"),
    responses((status = 200, description = "OK.", body = views::MethodShowResponse, content_type = "application/json"))
)]
pub async fn set(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id, method_type)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<SetReq>,
) -> Result<Json<views::MethodShowResponse>, ApiError> {
    path_method_type(&method_type)?;
    let integ = normalized(Integration {
        integration_type: req.integration_type,
        endpoint_url: req.endpoint_url,
        function_id: req.function_id,
        privatelink_endpoint_id: req.privatelink_endpoint_id,
    });
    check_params(&req.query_strings, &req.request_headers)?;
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = resource_of(a, &resource_id)?;
    let old = find(a, r, &method_type)?;
    check_integration(&integ, r)?;
    check_function(&st, &caller, &integ)?;
    let m = Method {
        integration_type: integ.integration_type,
        endpoint_url: integ.endpoint_url,
        function_id: integ.function_id,
        privatelink_endpoint_id: integ.privatelink_endpoint_id,
        api_key_required: req.api_key_required,
        query_strings: req.query_strings,
        request_headers: req.request_headers,
        ..old.clone()
    };
    let api = a
        .api()
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("api {api_id} not found")))?;
    let out = views::method(&app, &st.functions, &api, &m, &r.path, "*");
    app.commit(&mut st, vec![Change::Put(Entity::Method(m))])
        .await?;
    Ok(Json(views::MethodShowResponse { method: out }))
}

#[utoipa::path(
    delete,
    path = "/v1/apis/{api_id}/resources/{resource_id}/methods/{method_type}",
    operation_id = "methods_delete",
    tag = "Methods",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path((api_id, resource_id, method_type)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let a = api_of(&st, &caller, &api_id)?;
    let r = resource_of(a, &resource_id)?;
    let m = find(a, r, &method_type)?;
    let change = Change::Delete {
        kind: Kind::Method,
        key: Method::key(&m.resource_id, m.method_type),
        api_id: api_id.clone(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::parse_param_dict;

    #[test]
    fn reference_dict_strings() {
        let m = parse_param_dict("{'test1' : True}").unwrap();
        assert_eq!(m.get("test1"), Some(&true));
        let m = parse_param_dict("{'param1': 'value1', 'param2': 'value2'}").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("param1"), Some(&false));
        let m = parse_param_dict(r#"{"a": false, 'b':true,}"#).unwrap();
        assert_eq!((m["a"], m["b"]), (false, true));
        assert!(parse_param_dict("").unwrap().is_empty());
        assert!(parse_param_dict("{}").unwrap().is_empty());
        for bad in [
            "q=1",
            "{'a': yes}",
            "{a: True}",
            "{'a' True}",
            "{'a': True 'b': True}",
            "{'a",
        ] {
            assert!(parse_param_dict(bad).is_err(), "{bad}");
        }
    }
}
