//! Route: Host → API, first path segment → stage, rest → matchit trie of
//! the stage's active deployment → method (404 / 405 with `Allow`).

use super::error::GwError;
use crate::model::MethodType;
use crate::snapshot::{ApiRoutes, RouteMethod, Snapshot, StageRoutes};
use std::sync::Arc;

pub struct Routed {
    pub api: Arc<ApiRoutes>,
    pub stage: Arc<StageRoutes>,
    /// None when no resource matches (404) or the resource has no method
    /// for the verb (405): answered after the CORS preflight had its
    /// chance, so browsers can read those errors too.
    pub method: Option<Arc<RouteMethod>>,
    /// `Allow` of the matched resource; None when no resource matched.
    pub allow: Option<http::HeaderValue>,
    /// Path parameters (raw, as sent).
    pub params: Vec<(String, String)>,
}

impl Routed {
    pub fn method(&self) -> Result<&Arc<RouteMethod>, GwError> {
        match (&self.method, &self.allow) {
            (Some(m), _) => Ok(m),
            (None, Some(allow)) => Err(GwError::method_not_allowed(allow.clone())),
            (None, None) => Err(GwError::resource_not_found()),
        }
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The API id from a Host value `{api_id}.{invoke_domain}[:port]`.
pub fn api_id_from_host<'a>(host: &'a str, invoke_domain: &str) -> Option<&'a str> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let prefix = host.strip_suffix(invoke_domain)?.strip_suffix('.')?;
    (!prefix.is_empty() && !prefix.contains('.')).then_some(prefix)
}

pub fn route(
    snap: &Snapshot,
    host: &str,
    invoke_domain: &str,
    method: &http::Method,
    path: &str,
) -> Result<Routed, GwError> {
    let api_id = api_id_from_host(host, invoke_domain).ok_or_else(GwError::api_not_found)?;
    let api = snap.apis.get(api_id).ok_or_else(GwError::api_not_found)?;
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (stage_name, sub) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stage = api
        .stages
        .get(stage_name)
        .ok_or_else(GwError::stage_not_found)?;
    // A trailing slash is not significant.
    let sub = if sub.len() > 1 {
        sub.strip_suffix('/').unwrap_or(sub)
    } else {
        sub
    };
    let Ok(m) = stage.router.at(sub) else {
        return Ok(Routed {
            api: api.clone(),
            stage: stage.clone(),
            method: None,
            allow: None,
            params: Vec::new(),
        });
    };
    let node = m.value;
    let found = MethodType::from_http(method).and_then(|v| node.methods[v.index()].clone());
    let params = m
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Routed {
        api: api.clone(),
        stage: stage.clone(),
        method: found,
        allow: Some(node.allow.clone()),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn host_parsing() {
        assert_eq!(
            api_id_from_host("abc.apigw.localhost:8080", "apigw.localhost"),
            Some("abc")
        );
        assert_eq!(
            api_id_from_host("abc.apigw.localhost", "apigw.localhost"),
            Some("abc")
        );
        assert_eq!(api_id_from_host("apigw.localhost", "apigw.localhost"), None);
        assert_eq!(
            api_id_from_host("a.b.apigw.localhost", "apigw.localhost"),
            None
        );
        assert_eq!(
            api_id_from_host("abcapigw.localhost", "apigw.localhost"),
            None
        );
    }
}
