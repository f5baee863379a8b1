//! Route: Host → API, first path segment → stage, rest → matchit trie of
//! the stage's active deployment → method (404 / 405 with `Allow`).

use super::error::ErrorCode;
use crate::snapshot::{ApiRoutes, RouteMethod, Snapshot, StageRoutes};
use crate::store::model::MethodType;
use std::borrow::Cow;
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
    pub fn method(&self) -> Result<&Arc<RouteMethod>, ErrorCode> {
        match (&self.method, &self.allow) {
            (Some(m), _) => Ok(m),
            (None, Some(allow)) => Err(ErrorCode::MethodNotAllowed {
                allow: allow.clone(),
            }),
            (None, None) => Err(ErrorCode::ResourceNotFound),
        }
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The API id from a Host value `{api_id}.{invoke_domain}[:port]`. Host
/// names are case-insensitive: the id comes back in lower case (borrowed
/// when it already is).
pub fn api_id_from_host<'a>(host: &'a str, invoke_domain: &str) -> Option<Cow<'a, str>> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Clients send the domain as configured almost always: a memcmp; the
    // case-insensitive comparison only when that fails.
    let prefix = match host.strip_suffix(invoke_domain) {
        Some(p) => p,
        None => {
            let cut = host.len().checked_sub(invoke_domain.len())?;
            let (prefix, domain) = (host.get(..cut)?, host.get(cut..)?);
            if !domain.eq_ignore_ascii_case(invoke_domain) {
                return None;
            }
            prefix
        }
    };
    let prefix = prefix.strip_suffix('.')?;
    // One pass: no dot (a single label), and whether it needs lowering.
    let mut upper = false;
    for b in prefix.bytes() {
        if b == b'.' {
            return None;
        }
        upper |= b.is_ascii_uppercase();
    }
    if prefix.is_empty() {
        return None;
    }
    Some(if upper {
        Cow::Owned(prefix.to_ascii_lowercase())
    } else {
        Cow::Borrowed(prefix)
    })
}

/// Route a request whose Host is not an invoke host: a custom domain's
/// base path mapping names the API and stage, and the rest of the path is
/// routed in that stage as if it had come as `/{stage}{rest}` to the
/// API's invoke host. Returns that stage-form path too: the filters after
/// routing (resource policy SRN, function event) read the path as one
/// that starts with the stage. 404 `ApiNotFound` for a host that is no
/// custom domain, `BasePathNotFound` for a path no mapping takes.
pub fn route_domain(
    snap: &Snapshot,
    host: &str,
    invoke_domain: &str,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<(Routed, String), ErrorCode> {
    if snap.domains.is_empty() {
        return Err(ErrorCode::ApiNotFound);
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let domain = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        snap.domains.get(&host.to_ascii_lowercase())
    } else {
        snap.domains.get(host)
    }
    .ok_or(ErrorCode::ApiNotFound)?;
    let (target, rest) = domain.select(path).ok_or(ErrorCode::BasePathNotFound)?;
    let stage_path = if rest == "/" {
        format!("/{}", target.stage_name)
    } else {
        format!("/{}{rest}", target.stage_name)
    };
    let api_host = format!("{}.{invoke_domain}", target.api_id);
    // The mapped API or stage may be gone (a hand-edited store): 404
    // ApiNotFound / StageNotFound as on the invoke host.
    let routed = route(snap, &api_host, invoke_domain, method, &stage_path, headers)?;
    Ok((routed, stage_path))
}

/// RFC 3986 §5.2.4 dot-segment removal on a request path: `.` segments go,
/// `..` removes the segment before it (never above the root). Borrowed
/// when the path has none (the common case costs one scan for "/.").
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    // A byte scan: `str::contains("/.")` sets up a substring searcher
    // (~350 instructions per request on a short path).
    if !path
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'/' && w[1] == b'.')
    {
        return Cow::Borrowed(path);
    }
    let segments = path.strip_prefix('/').unwrap_or(path).split('/');
    if !segments.clone().any(|s| s == "." || s == "..") {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in segments {
        trailing_slash = false;
        match seg {
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            s => out.push(s),
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing_slash || p.is_empty() {
        p.push('/');
    }
    Cow::Owned(p)
}

/// What a path parameter may not carry once percent-decoded: a dot
/// segment (`.`, `..`: never), and `/`, `\\` or NUL (refused unless
/// `keep_escaped_separators`, then forwarded still encoded).
pub fn check_params(routed: &Routed, keep_escaped_separators: bool) -> Result<(), ErrorCode> {
    for (_, v) in &routed.params {
        if !v.contains(['%', '\\', '.']) {
            continue;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(v).collect();
        if decoded == b"." || decoded == b".." {
            return Err(ErrorCode::InvalidPathParameter);
        }
        if !keep_escaped_separators && decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(ErrorCode::InvalidPathParameter);
        }
    }
    Ok(())
}

pub fn route(
    snap: &Snapshot,
    host: &str,
    invoke_domain: &str,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Routed, ErrorCode> {
    let api_id = api_id_from_host(host, invoke_domain).ok_or(ErrorCode::ApiNotFound)?;
    let api = snap
        .apis
        .get(api_id.as_ref())
        .ok_or(ErrorCode::ApiNotFound)?;
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (stage_name, sub) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stage = api.stages.get(stage_name).ok_or(ErrorCode::StageNotFound)?;
    // The canary's share of the stage is served by its deployment.
    let stage = stage.serving(headers);
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
        let id = |h: &str| api_id_from_host(h, "apigw.localhost").map(|c| c.into_owned());
        assert_eq!(id("abc.apigw.localhost:8080").as_deref(), Some("abc"));
        assert_eq!(id("abc.apigw.localhost").as_deref(), Some("abc"));
        assert_eq!(id("ABC.APIGW.LOCALHOST").as_deref(), Some("abc"));
        assert_eq!(id("Abc.Apigw.Localhost.:80").as_deref(), Some("abc"));
        assert_eq!(id("apigw.localhost"), None);
        assert_eq!(id("a.b.apigw.localhost"), None);
        assert_eq!(id("abcapigw.localhost"), None);
        assert_eq!(id("x"), None);
        assert_eq!(id("é.apigw.localhost").as_deref(), Some("é"));
        assert_eq!(id("éapigw.localhost"), None);
    }

    #[test]
    fn dot_segments_removed() {
        for (raw, want) in [
            ("/dev/items", "/dev/items"),
            ("/dev/items/..", "/dev/"),
            ("/dev/base/../details", "/dev/details"),
            ("/dev/./x", "/dev/x"),
            ("/dev/x/.", "/dev/x/"),
            ("/../../etc", "/etc"),
            ("/..", "/"),
            ("/dev/.hidden/x", "/dev/.hidden/x"),
            ("/dev/..x/y", "/dev/..x/y"),
            ("/a/b/../../..", "/"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
        assert!(matches!(normalize_path("/dev/a.b/c"), Cow::Borrowed(_)));
    }
}
