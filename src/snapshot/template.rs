//! Where a method's requests go: its endpoint URL compiled once per
//! snapshot into a fixed scheme and authority (the connection pool's key,
//! hashed once) and a path-and-query template whose `{param}`
//! placeholders the request fills.

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};

/// Which connections can serve a request: scheme and authority, with a
/// hash computed once (templates without placeholders keep their key in
/// the snapshot, so the hot path hashes nothing).
#[derive(Clone, Debug)]
pub struct PoolKey {
    scheme: Scheme,
    authority: Authority,
    hash: u64,
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.scheme == other.scheme && self.authority == other.authority
    }
}
impl Eq for PoolKey {}

impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// FNV-1a over the lower-cased bytes (authorities compare case-insensitively).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(b.to_ascii_lowercase());
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl PoolKey {
    pub fn of(uri: &Uri) -> Option<PoolKey> {
        PoolKey::new(uri.scheme()?.clone(), uri.authority()?.clone())
    }

    /// The key of an http(s) scheme and authority; `None` for other schemes.
    pub fn new(scheme: Scheme, authority: Authority) -> Option<PoolKey> {
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return None;
        }
        Some(PoolKey {
            hash: fnv1a(&[scheme.as_str().as_bytes(), authority.as_str().as_bytes()]),
            scheme,
            authority,
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `host[:port]` for the Host header (port only when not the default).
    pub fn host_header(&self) -> std::borrow::Cow<'_, str> {
        host_header(self.scheme == Scheme::HTTPS, &self.authority)
    }
}

/// `host[:port]` of an authority, the port only when it is not the
/// scheme's default (what an upstream's `Host` header carries).
pub fn host_header(https: bool, authority: &Authority) -> std::borrow::Cow<'_, str> {
    let default = if https { 443 } else { 80 };
    match authority.port_u16() {
        Some(p) if p != default => format!("{}:{p}", authority.host()).into(),
        _ => authority.host().into(),
    }
}

/// An endpoint URL with `{param}` placeholders in its path and query,
/// split once at build time. The scheme and authority are fixed: a
/// request can never choose where the gateway connects.
#[derive(Clone, Debug, PartialEq)]
pub struct UrlTemplate {
    /// Where every request goes (scheme and authority).
    key: PoolKey,
    /// The upstream `Host` value (what the client would otherwise format
    /// on every request).
    host: HeaderValue,
    /// The path and query, literal parts and placeholders.
    parts: Vec<UrlPart>,
    has_query: bool,
    /// Length of the literal parts, for one right-sized allocation.
    literal_len: usize,
    /// The target when the path has no placeholders: a request without a
    /// query string then clones it (a reference count) instead of
    /// building and parsing a string.
    fixed: Option<Target>,
}

#[derive(Clone, Debug, PartialEq)]
enum UrlPart {
    Lit(String),
    Param(String),
    /// `${stageVariables.NAME}`: filled per stage at snapshot build
    /// ([`UrlTemplate::with_stage_variables`]).
    StageVar(String),
}

/// The `${stageVariables.NAME}` placeholder's prefix inside the braces.
const STAGE_VAR: &str = "stageVariables.";

/// Why an endpoint URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// Not `http://` or `https://`.
    Scheme,
    /// No host after the scheme.
    NoHost,
    /// A `{param}` placeholder in the host or port.
    PlaceholderInAuthority,
    /// The authority does not parse.
    Authority,
    /// The path and query do not parse once placeholders are filled.
    Path,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateError::Scheme => "must start with http:// or https://",
            TemplateError::NoHost => "must name a host",
            TemplateError::PlaceholderInAuthority => {
                "placeholders are allowed in the path and query only, not in the host, port or user"
            }
            TemplateError::Authority => "has no valid host and port",
            TemplateError::Path => "is not a valid URL",
        })
    }
}

/// Split `{param}` placeholders out of `s`.
fn split_placeholders(s: &str) -> (Vec<UrlPart>, usize) {
    let mut parts = Vec::new();
    let mut rest = s;
    let mut literal_len = 0;
    while let Some(open) = rest.find('{') {
        let Some(close_rel) = rest[open..].find('}') else {
            break;
        };
        let close = open + close_rel;
        let inner = &rest[open + 1..close];
        let stage_var = inner.strip_prefix(STAGE_VAR).filter(|n| {
            open > 0
                && rest.as_bytes()[open - 1] == b'$'
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        // The literal before it (without the `$` of a stage variable).
        let lit_end = if stage_var.is_some() { open - 1 } else { open };
        if lit_end > 0 {
            literal_len += lit_end;
            parts.push(UrlPart::Lit(rest[..lit_end].to_string()));
        }
        parts.push(match stage_var {
            Some(n) => UrlPart::StageVar(n.to_string()),
            None => UrlPart::Param(inner.to_string()),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        literal_len += rest.len();
        parts.push(UrlPart::Lit(rest.to_string()));
    }
    (parts, literal_len)
}

impl UrlTemplate {
    pub fn parse(url: &str) -> Result<UrlTemplate, TemplateError> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            (http::uri::Scheme::HTTP, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (http::uri::Scheme::HTTPS, r)
        } else {
            return Err(TemplateError::Scheme);
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(TemplateError::NoHost);
        }
        if authority.contains(['{', '}']) {
            return Err(TemplateError::PlaceholderInAuthority);
        }
        let authority: http::uri::Authority =
            authority.parse().map_err(|_| TemplateError::Authority)?;
        if authority.host().is_empty() {
            return Err(TemplateError::NoHost);
        }
        let key = PoolKey::new(scheme, authority).ok_or(TemplateError::Authority)?;
        let host =
            HeaderValue::from_str(&key.host_header()).map_err(|_| TemplateError::Authority)?;
        // Origin form: "" → "/", "?q" → "/?q".
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let (parts, literal_len) = split_placeholders(&path);
        let mut tpl = UrlTemplate {
            key,
            host,
            parts,
            has_query: path.contains('?'),
            literal_len,
            fixed: None,
        };
        if tpl.parts.iter().all(|p| matches!(p, UrlPart::Lit(_))) {
            tpl.fixed = Some(tpl.target_of(&path).ok_or(TemplateError::Path)?);
        }
        // The path must parse once placeholders are filled.
        tpl.target_of(&tpl.render_path(|_| Some("x"), None))
            .ok_or(TemplateError::Path)?;
        Ok(tpl)
    }

    /// The template with its `${stageVariables.NAME}` placeholders filled
    /// from a stage's variables: each value percent-encoded (all but
    /// letters, digits, `-._~`), so it stays inside its path segment or
    /// query value; an undefined variable is empty (as AWS). `None` when
    /// the filled-in URL does not parse.
    pub fn with_stage_variables(
        &self,
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Option<UrlTemplate> {
        if !self.parts.iter().any(|p| matches!(p, UrlPart::StageVar(_))) {
            return Some(self.clone());
        }
        let mut parts: Vec<UrlPart> = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            let (lit, param) = match p {
                UrlPart::Lit(s) => (Some(s.clone()), None),
                UrlPart::StageVar(n) => (
                    Some(encode_stage_variable(
                        vars.get(n).map(String::as_str).unwrap_or(""),
                    )),
                    None,
                ),
                UrlPart::Param(n) => (None, Some(n.clone())),
            };
            match (lit, parts.last_mut()) {
                (Some(l), Some(UrlPart::Lit(prev))) => prev.push_str(&l),
                (Some(l), _) => parts.push(UrlPart::Lit(l)),
                (None, _) => parts.extend(param.map(UrlPart::Param)),
            }
        }
        let literal_len = parts
            .iter()
            .map(|p| match p {
                UrlPart::Lit(s) => s.len(),
                _ => 0,
            })
            .sum();
        let mut tpl = UrlTemplate {
            key: self.key.clone(),
            host: self.host.clone(),
            parts,
            has_query: self.has_query,
            literal_len,
            fixed: None,
        };
        if tpl.params().next().is_none() {
            tpl.fixed = Some(tpl.target_of(&tpl.render_path(|_| None, None))?);
        }
        tpl.target_of(&tpl.render_path(|_| Some("x"), None))?;
        Some(tpl)
    }

    /// Whether the template names stage variables.
    pub fn has_stage_variables(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, UrlPart::StageVar(_)))
    }

    /// The `Host` header for the upstream.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    fn target_of(&self, path_and_query: &str) -> Option<Target> {
        let pq = http::uri::PathAndQuery::try_from(path_and_query).ok()?;
        Some(Target {
            key: self.key.clone(),
            uri: http::Uri::from(pq),
        })
    }

    /// The target, without building a string when nothing varies; `None`
    /// when the filled-in path does not parse.
    pub fn target<'a>(
        &self,
        params: impl Fn(&str) -> Option<&'a str>,
        query: Option<&str>,
    ) -> Option<Target> {
        match (&self.fixed, query.filter(|q| !q.is_empty())) {
            (Some(t), None) => Some(t.clone()),
            _ => self.target_of(&self.render_path(params, query)),
        }
    }

    /// Placeholder names used by the template.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            UrlPart::Param(n) => Some(n.as_str()),
            UrlPart::Lit(_) | UrlPart::StageVar(_) => None,
        })
    }

    /// The path and query sent upstream: placeholders filled from the
    /// matched path (raw, still percent-encoded as the client sent them)
    /// and the client's query string appended.
    pub fn render_path<'a>(
        &self,
        params: impl Fn(&str) -> Option<&'a str>,
        query: Option<&str>,
    ) -> String {
        let mut out = String::with_capacity(self.literal_len + 32 + query.map_or(0, str::len));
        for p in &self.parts {
            match p {
                UrlPart::Lit(s) => out.push_str(s),
                UrlPart::Param(n) => {
                    if let Some(v) = params(n) {
                        out.push_str(v)
                    }
                }
                // Not filled for a stage: empty.
                UrlPart::StageVar(_) => {}
            }
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push(if self.has_query { '&' } else { '?' });
            out.push_str(q);
        }
        out
    }

    /// The whole upstream URL (scheme, authority, path and query).
    pub fn render<'a>(
        &self,
        params: impl Fn(&str) -> Option<&'a str>,
        query: Option<&str>,
    ) -> String {
        format!(
            "{}://{}{}",
            self.key.scheme(),
            self.key.authority(),
            self.render_path(params, query)
        )
    }
}

/// A stage variable's value as it goes into a URL: everything but
/// letters, digits and `-._~` percent-encoded (`/`, `?`, `#`, `&`, `=`
/// cannot end the segment or value it is in), and a dot segment's dots
/// too.
fn encode_stage_variable(v: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    if v == "." || v == ".." {
        return "%2E".repeat(v.len());
    }
    utf8_percent_encode(v, KEEP).to_string()
}

/// Where a request goes: the connection pool's key (scheme and authority)
/// and the origin-form URI (path and query) of the request line.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub key: PoolKey,
    pub uri: http::Uri,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_params_and_query() {
        let t = UrlTemplate::parse("http://b:1/users/{user-id}/x").unwrap();
        let got = t.render(|n| (n == "user-id").then_some("42"), Some("a=1"));
        assert_eq!(got, "http://b:1/users/42/x?a=1");
        let t = UrlTemplate::parse("http://b/q?k=v").unwrap();
        assert_eq!(t.render(|_| None, Some("a=1")), "http://b/q?k=v&a=1");
        assert_eq!(t.render(|_| None, None), "http://b/q?k=v");
        let target = t.target(|_| None, Some("a=1")).unwrap();
        assert_eq!(target.uri, "/q?k=v&a=1");
        assert_eq!(target.key.authority().as_str(), "b");
    }

    #[test]
    fn stage_variables_fill_path_and_query_encoded() {
        let vars: std::collections::BTreeMap<String, String> = [
            ("ver".to_string(), "v2".to_string()),
            ("evil".to_string(), "../x/y?z#w".to_string()),
            ("dots".to_string(), "..".to_string()),
        ]
        .into();
        let t =
            UrlTemplate::parse("http://b:1/${stageVariables.ver}/u/{id}?k=${stageVariables.evil}")
                .unwrap();
        assert!(t.has_stage_variables());
        assert_eq!(t.params().collect::<Vec<_>>(), ["id"]);
        let f = t.with_stage_variables(&vars).unwrap();
        assert_eq!(
            f.render(|_| Some("7"), None),
            "http://b:1/v2/u/7?k=..%2Fx%2Fy%3Fz%23w"
        );
        let t = UrlTemplate::parse(
            "http://b/a/${stageVariables.evil}/${stageVariables.dots}/${stageVariables.none}/z",
        )
        .unwrap();
        let f = t.with_stage_variables(&vars).unwrap();
        let target = f.target(|_| None, None).unwrap();
        assert_eq!(target.uri, "/a/..%2Fx%2Fy%3Fz%23w/%2E%2E//z");
        assert_eq!(
            UrlTemplate::parse("http://${stageVariables.host}/x"),
            Err(TemplateError::PlaceholderInAuthority)
        );
        assert_eq!(
            UrlTemplate::parse("http://b:${stageVariables.port}/x"),
            Err(TemplateError::PlaceholderInAuthority)
        );
    }

    #[test]
    fn template_host_values() {
        let host = |u: &str| {
            UrlTemplate::parse(u)
                .map(|t| t.host().to_str().unwrap().to_string())
                .ok()
        };
        assert_eq!(host("http://b:1/users/{user-id}/x").as_deref(), Some("b:1"));
        assert_eq!(host("https://x.example/a").as_deref(), Some("x.example"));
        assert_eq!(host("http://x:80/").as_deref(), Some("x"));
        assert_eq!(host("https://x:443/?q=1").as_deref(), Some("x"));
        assert_eq!(host("http://b:1").as_deref(), Some("b:1"));
    }

    #[test]
    fn template_refuses_placeholders_outside_the_path() {
        for u in [
            "http://{host}/x",
            "http://{host}.example/x",
            "http://127.0.0.1:{port}/x",
            "http://user@{host}/x",
            "http://127.0.0.1{host}/x",
            "http://{host}",
            "http://{host}?q=1",
        ] {
            assert_eq!(
                UrlTemplate::parse(u),
                Err(TemplateError::PlaceholderInAuthority),
                "{u}"
            );
        }
        assert_eq!(UrlTemplate::parse("ftp://x/"), Err(TemplateError::Scheme));
        assert_eq!(UrlTemplate::parse("http:///x"), Err(TemplateError::NoHost));
        // Whatever a parameter holds, the request goes to the fixed authority.
        let t = UrlTemplate::parse("http://b:1/u/{id}").unwrap();
        let target = t.target(|_| Some("@evil:2/x"), None).unwrap();
        assert_eq!(target.key.authority().as_str(), "b:1");
        assert!(t.target(|_| Some("a b"), None).is_none());
    }
}
