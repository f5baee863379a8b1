//! Resource-based policy: an IAM-style JSON document (user guide, "Resource-based
//! Policy") compiled once at deploy time into an immutable [`Policy`] that is
//! evaluated per request without allocating.
//!
//! Document: `{"Version"?, "Id"?, "Statement": statement | [statement]}`, 1..=100
//! statements, each `{Sid?, Effect: "Allow"|"Deny", Principal, Action, Resource,
//! Condition?}`.
//! - `Version`: a string, empty (as in the guide's templates) or a date
//!   `YYYY-MM-DD` such as `"2024-07-01"`.
//! - `Principal`: `"*"` (anyone, anonymous included) or `{"scp": srn | [srn]}`;
//!   a listed SRN (wildcards `*`/`?` allowed, `"*"` = anyone) must match the
//!   caller, so anonymous callers never match a list. An account root
//!   `srn:{o}::{account}:::iam:root` stands for every principal of the account.
//! - `Action`: string or array, `service:Name` patterns or `"*"`, compared
//!   case-insensitively with [`INVOKE_ACTION`] (the only action of the data
//!   plane); a statement whose actions cannot match it never applies.
//! - `Resource`: SRN pattern(s) or `"*"`; matches when it matches the API SRN
//!   or the method SRN of the request (case-sensitive).
//! - `Condition`: `{Operator: {Key: value | [values]}}`; all operators and keys
//!   must hold (AND), the values of one key are alternatives (OR).
//!   Operators: `StringEquals`, `StringNotEquals`, `StringEqualsIgnoreCase`,
//!   `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`, `SrnEquals`,
//!   `SrnNotEquals`, `SrnLike`, `SrnNotLike` (`Arn*` accepted as aliases),
//!   `IpAddress`, `NotIpAddress`, each optionally suffixed `IfExists`.
//!   Keys (case-insensitive): `scp:SourceIp` (IP operators only; values are
//!   addresses or CIDR blocks), `scp:RequestAttribute/body['method-srn']`,
//!   `scp:PrincipalSrn` (absent for anonymous callers), and
//!   `scp:RequestHeader/<name>` (a request header, name case-insensitive;
//!   absent when the request lacks it; with several values, a positive
//!   operator needs one value to match, a negated one needs none to match).
//!   As in IAM, a missing key fails positive operators and satisfies negated
//!   ones; `...IfExists` makes a missing key satisfy any operator.
//!
//! Evaluation: a matching Deny gives [`Decision::ExplicitDeny`], else a
//! matching Allow gives [`Decision::Allow`], else [`Decision::ImplicitDeny`].
//!
//! Pure logic (with [`signature`], the SCP request signature): may import
//! config (the credentials a signature is checked against), nothing else
//! of the gateway.

pub mod signature;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Larger documents are rejected by the caller before parsing.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;
pub const MAX_STATEMENTS: usize = 100;
/// The action every data-plane request performs.
pub const INVOKE_ACTION: &str = "apigateway:InvokeApigatewayRegion";
pub const METHOD_SRN_KEY: &str = "scp:RequestAttribute/body['method-srn']";
pub const SOURCE_IP_KEY: &str = "scp:SourceIp";
pub const PRINCIPAL_KEY: &str = "scp:PrincipalSrn";
/// Header condition keys are this prefix followed by the header name.
pub const HEADER_KEY_PREFIX: &str = "scp:RequestHeader/";

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub element: String,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.element, self.message)
    }
}

impl std::error::Error for PolicyError {}

fn err<T>(element: impl Into<String>, message: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError {
        element: element.into(),
        message: message.into(),
    })
}

/// The facts about one request a policy can look at.
pub struct Request<'a> {
    pub source_ip: IpAddr,
    /// `srn:{offering}::{account}:{region}::apigateway:method/{api}/{stage}/{VERB}/{path}`
    pub method_srn: &'a str,
    /// `srn:{offering}::{account}:{region}::apigateway:api/{api}`
    pub api_srn: &'a str,
    /// `srn:{offering}::{account}:::iam:user/{user}` when validly signed.
    pub principal: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// A compiled policy: immutable, `Send + Sync`, cheap to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    deny: Vec<Statement>,
    allow: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    /// `None`: anyone, anonymous callers included.
    principals: Option<Vec<Pattern>>,
    resources: Vec<Pattern>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    key: Key,
    negated: bool,
    if_exists: bool,
    values: Values,
}

#[derive(Debug, Clone)]
enum Key {
    SourceIp,
    MethodSrn,
    Principal,
    Header(HeaderName),
}

#[derive(Debug, Clone)]
enum Values {
    Patterns(Vec<Pattern>),
    Nets(Vec<IpNet>),
}

/// A precompiled pattern: exact (optionally ASCII case-insensitive) or a glob
/// where `*` matches any run of characters (`/` and `:` included) and `?`
/// exactly one character.
#[derive(Debug, Clone)]
struct Pattern {
    text: Box<[u8]>,
    glob: bool,
    ci: bool,
}

impl Pattern {
    fn new(s: &str, like: bool, ci: bool) -> Pattern {
        let glob = like && s.bytes().any(|b| b == b'*' || b == b'?');
        Pattern {
            text: s.as_bytes().into(),
            glob,
            ci,
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        match (self.glob, self.ci) {
            (false, false) => *self.text == *s,
            (false, true) => self.text.eq_ignore_ascii_case(s),
            (true, ci) => glob(&self.text, s, ci),
        }
    }
}

/// Iterative wildcard match (single backtrack point): O(|p|·|s|) worst case,
/// no recursion, no allocation. `?` consumes one UTF-8 character.
fn glob(p: &[u8], s: &[u8], ci: bool) -> bool {
    let eq = |a: u8, b: u8| a == b || (ci && a.eq_ignore_ascii_case(&b));
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            si += 1;
            while si < s.len() && s[si] & 0xC0 == 0x80 {
                si += 1;
            }
        } else if pi < p.len() && eq(p[pi], s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl Policy {
    /// A policy that allows nothing (used when a stored document no longer
    /// compiles: fail closed).
    pub fn deny_all() -> Policy {
        Policy {
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }

    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let ip = IpAddr::to_canonical(&req.source_ip);
        if self.deny.iter().any(|s| s.matches(req, ip)) {
            Decision::ExplicitDeny
        } else if self.allow.iter().any(|s| s.matches(req, ip)) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

impl Statement {
    fn matches(&self, req: &Request<'_>, ip: IpAddr) -> bool {
        if let Some(list) = &self.principals {
            let Some(p) = req.principal else { return false };
            if !list.iter().any(|pat| pat.matches(p.as_bytes())) {
                return false;
            }
        }
        let (api, method) = (req.api_srn.as_bytes(), req.method_srn.as_bytes());
        self.resources
            .iter()
            .any(|r| r.matches(api) || r.matches(method))
            && self.conditions.iter().all(|c| c.matches(req, ip))
    }
}

impl Condition {
    fn matches(&self, req: &Request<'_>, ip: IpAddr) -> bool {
        let hit = match (&self.key, &self.values) {
            (_, Values::Nets(nets)) => Some(nets.iter().any(|n| n.contains(&ip))),
            (Key::MethodSrn, Values::Patterns(p)) => Some(any(p, req.method_srn.as_bytes())),
            (Key::Principal, Values::Patterns(p)) => req.principal.map(|v| any(p, v.as_bytes())),
            (Key::Header(name), Values::Patterns(p)) => {
                let mut vals = req.headers.get_all(name).iter().peekable();
                vals.peek()
                    .is_some()
                    .then(|| vals.any(|v| any(p, v.as_bytes())))
            }
            (Key::SourceIp, Values::Patterns(_)) => None, // rejected by compile
        };
        match hit {
            Some(h) => h != self.negated,
            None => self.if_exists || self.negated,
        }
    }
}

fn any(pats: &[Pattern], s: &[u8]) -> bool {
    pats.iter().any(|p| p.matches(s))
}

// ---------------------------------------------------------------- compile

/// Validate and compile a policy document. Every error names the element
/// (e.g. `Statement[1].Condition.IpAddress.scp:SourceIp[0]`). The walk has a
/// fixed depth: nested input where a scalar is expected is rejected, never
/// descended into.
pub fn compile(doc: &Value) -> Result<Policy, PolicyError> {
    let Some(obj) = doc.as_object() else {
        return err("Policy", "must be a JSON object");
    };
    for k in obj.keys() {
        if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
            return err(k.as_str(), "unknown policy element");
        }
    }
    match obj.get("Version") {
        None => {}
        Some(Value::String(v)) if v.is_empty() || is_date(v) => {}
        Some(Value::String(_)) => {
            return err(
                "Version",
                "must be empty or a date YYYY-MM-DD (e.g. \"2024-07-01\")",
            )
        }
        Some(_) => return err("Version", "must be a string"),
    }
    if obj.get("Id").is_some_and(|v| !v.is_string()) {
        return err("Id", "must be a string");
    }
    let stmts: Vec<(String, &Value)> = match obj.get("Statement") {
        None => return err("Statement", "is required"),
        Some(Value::Array(a)) if a.is_empty() => {
            return err("Statement", "must contain at least one statement")
        }
        Some(Value::Array(a)) if a.len() > MAX_STATEMENTS => {
            return err(
                "Statement",
                format!(
                    "at most {MAX_STATEMENTS} statements are allowed, got {}",
                    a.len()
                ),
            )
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("Statement[{i}]"), s))
            .collect(),
        Some(s @ Value::Object(_)) => vec![("Statement".to_string(), s)],
        Some(_) => return err("Statement", "must be an object or an array of objects"),
    };
    let mut policy = Policy::deny_all();
    let mut sids: Vec<&str> = Vec::new();
    for (el, s) in stmts {
        let Some(s) = s.as_object() else {
            return err(el, "must be an object");
        };
        if let Some(sid) = s.get("Sid") {
            let ok = sid.as_str().filter(|v| {
                v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
            let Some(sid) = ok else {
                return err(
                    format!("{el}.Sid"),
                    "must be a string of letters, digits, '-', '_' or '.' (at most 128)",
                );
            };
            if !sid.is_empty() && sids.contains(&sid) {
                return err(format!("{el}.Sid"), format!("duplicate Sid \"{sid}\""));
            }
            sids.push(sid);
        }
        let (deny, applies, st) = compile_statement(&el, s)?;
        if applies {
            if deny {
                policy.deny.push(st)
            } else {
                policy.allow.push(st)
            }
        }
    }
    Ok(policy)
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// Returns (is Deny, applies to the invoke action, statement).
fn compile_statement(
    el: &str,
    s: &Map<String, Value>,
) -> Result<(bool, bool, Statement), PolicyError> {
    for k in s.keys() {
        match k.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
            "NotPrincipal" | "NotAction" | "NotResource" => {
                return err(format!("{el}.{k}"), "is not supported")
            }
            _ => return err(format!("{el}.{k}"), "unknown statement element"),
        }
    }
    let deny = match s.get("Effect") {
        None => return err(format!("{el}.Effect"), "is required"),
        Some(Value::String(e)) if e == "Allow" => false,
        Some(Value::String(e)) if e == "Deny" => true,
        Some(_) => return err(format!("{el}.Effect"), "must be \"Allow\" or \"Deny\""),
    };
    let principals = match s.get("Principal") {
        None => return err(format!("{el}.Principal"), "is required"),
        Some(Value::String(p)) if p == "*" => None,
        Some(Value::Object(m)) => {
            let pel = format!("{el}.Principal");
            if let Some(k) = m.keys().find(|k| *k != "scp") {
                return err(
                    format!("{pel}.{k}"),
                    "unknown principal type (only \"scp\")",
                );
            }
            let Some(v) = m.get("scp") else {
                return err(format!("{pel}.scp"), "is required");
            };
            let list = strings(&format!("{pel}.scp"), v, false)?;
            let mut pats = Vec::with_capacity(list.len());
            let mut anyone = false;
            for (e, p) in list {
                if p == "*" {
                    anyone = true;
                } else if !p.starts_with("srn:") {
                    return err(e, "must be \"*\" or a principal SRN (srn:...)");
                } else if let Some(acct) = p.strip_suffix(":::iam:root") {
                    pats.push(Pattern::new(&format!("{acct}:::iam:*"), true, false));
                } else {
                    pats.push(Pattern::new(&p, true, false));
                }
            }
            (!anyone).then_some(pats)
        }
        Some(_) => {
            return err(
                format!("{el}.Principal"),
                "must be \"*\" or {\"scp\": srn | [srn, ...]}",
            )
        }
    };
    let Some(action) = s.get("Action") else {
        return err(format!("{el}.Action"), "is required");
    };
    let mut applies = false;
    for (e, a) in strings(&format!("{el}.Action"), action, false)? {
        let valid = a == "*"
            || a.split_once(':').is_some_and(|(svc, name)| {
                !svc.is_empty()
                    && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
            });
        if !valid {
            return err(
                e,
                "must be \"*\" or service:Action (e.g. apigateway:InvokeApigatewayRegion)",
            );
        }
        applies |= glob(a.as_bytes(), INVOKE_ACTION.as_bytes(), true);
    }
    let Some(res) = s.get("Resource") else {
        return err(format!("{el}.Resource"), "is required");
    };
    let mut resources = Vec::new();
    for (e, r) in strings(&format!("{el}.Resource"), res, false)? {
        if r != "*" && !r.starts_with("srn:") {
            return err(e, "must be \"*\" or an SRN (srn:...)");
        }
        resources.push(Pattern::new(&r, true, false));
    }
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(c) => compile_conditions(&format!("{el}.Condition"), c)?,
    };
    Ok((
        deny,
        applies,
        Statement {
            principals,
            resources,
            conditions,
        },
    ))
}

fn compile_conditions(el: &str, c: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Some(ops) = c.as_object() else {
        return err(el, "must be an object {Operator: {Key: values}}");
    };
    let mut out = Vec::new();
    for (op_name, block) in ops {
        let oel = format!("{el}.{op_name}");
        let (base, if_exists) = match op_name.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (op_name.as_str(), false),
        };
        // (negated, ip, like, ignore case, srn)
        let (negated, ip, like, ci, srn) = match base {
            "StringEquals" => (false, false, false, false, false),
            "StringNotEquals" => (true, false, false, false, false),
            "StringEqualsIgnoreCase" => (false, false, false, true, false),
            "StringNotEqualsIgnoreCase" => (true, false, false, true, false),
            "StringLike" => (false, false, true, false, false),
            "StringNotLike" => (true, false, true, false, false),
            "SrnEquals" | "ArnEquals" => (false, false, false, false, true),
            "SrnNotEquals" | "ArnNotEquals" => (true, false, false, false, true),
            "SrnLike" | "ArnLike" => (false, false, true, false, true),
            "SrnNotLike" | "ArnNotLike" => (true, false, true, false, true),
            "IpAddress" => (false, true, false, false, false),
            "NotIpAddress" => (true, true, false, false, false),
            _ => return err(oel, "unknown condition operator"),
        };
        let Some(keys) = block.as_object() else {
            return err(oel, "must be an object {Key: value | [values]}");
        };
        if keys.is_empty() {
            return err(oel, "must name at least one condition key");
        }
        for (key_name, vals) in keys {
            let kel = format!("{oel}.{key_name}");
            let lower = key_name.to_ascii_lowercase();
            let key = if lower == SOURCE_IP_KEY.to_ascii_lowercase() {
                Key::SourceIp
            } else if lower == METHOD_SRN_KEY.to_ascii_lowercase()
                || lower == "scp:requestattribute/body[\"method-srn\"]"
            {
                Key::MethodSrn
            } else if lower == PRINCIPAL_KEY.to_ascii_lowercase() {
                Key::Principal
            } else if let Some(h) = lower.strip_prefix(&HEADER_KEY_PREFIX.to_ascii_lowercase()) {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => Key::Header(n),
                    Err(_) => return err(kel, "invalid header name"),
                }
            } else {
                return err(kel, format!("unknown condition key (known: {SOURCE_IP_KEY}, {METHOD_SRN_KEY}, {PRINCIPAL_KEY}, {HEADER_KEY_PREFIX}<name>)"));
            };
            let is_ip_key = matches!(key, Key::SourceIp);
            if ip != is_ip_key {
                return err(
                    kel,
                    if ip {
                        "IP operators apply only to scp:SourceIp"
                    } else {
                        "scp:SourceIp takes IpAddress or NotIpAddress"
                    },
                );
            }
            let list = strings(&kel, vals, !ip)?;
            let values = if ip {
                let mut nets = Vec::with_capacity(list.len());
                for (e, v) in list {
                    let net = v
                        .parse::<IpNet>()
                        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from));
                    match net {
                        Ok(n) => nets.push(n),
                        Err(_) => {
                            return err(e, format!("\"{v}\" is not an IP address or CIDR block"))
                        }
                    }
                }
                Values::Nets(nets)
            } else {
                let mut pats = Vec::with_capacity(list.len());
                for (e, v) in list {
                    if srn && v != "*" && !v.starts_with("srn:") {
                        return err(e, "must be an SRN (srn:...)");
                    }
                    pats.push(Pattern::new(&v, like, ci));
                }
                Values::Patterns(pats)
            };
            out.push(Condition {
                key,
                negated,
                if_exists,
                values,
            });
        }
    }
    Ok(out)
}

/// A string or a non-empty array of strings, each with its element name.
/// With `scalars`, numbers and booleans count as their JSON text. Rejects
/// unreplaced template placeholders (`{{...}}`).
fn strings<'v>(
    el: &str,
    v: &'v Value,
    scalars: bool,
) -> Result<Vec<(String, std::borrow::Cow<'v, str>)>, PolicyError> {
    let one = |e: String,
               v: &'v Value|
     -> Result<(String, std::borrow::Cow<'v, str>), PolicyError> {
        let s = match v {
            Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            Value::Number(_) | Value::Bool(_) if scalars => std::borrow::Cow::Owned(v.to_string()),
            _ => return err(e, "must be a string"),
        };
        if s.is_empty() {
            return err(e, "must not be empty");
        }
        if s.contains("{{") {
            return err(
                e,
                format!("\"{s}\" contains an unreplaced template placeholder"),
            );
        }
        Ok((e, s))
    };
    match v {
        Value::Array(a) if a.is_empty() => err(el, "must not be an empty array"),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| one(format!("{el}[{i}]"), x))
            .collect(),
        _ => Ok(vec![one(el.to_string(), v)?]),
    }
}

/// Parse a policy body as the guide writes it: besides plain JSON, trailing
/// commas before `]`/`}` are tolerated (the guide's cross-account and hybrid
/// examples have them). Does not compile; see [`compile`].
pub fn parse_document(body: &[u8]) -> Result<Value, PolicyError> {
    if body.len() > MAX_POLICY_BYTES {
        return err(
            "Policy",
            format!("a policy is at most {MAX_POLICY_BYTES} bytes"),
        );
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return err("Policy", "is not valid UTF-8");
    };
    serde_json::from_str(&strip_trailing_commas(text))
        .or_else(|e| err("Policy", format!("malformed JSON: {e}")))
}

fn strip_trailing_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut esc) = (false, false);
    let mut last = ' '; // last significant character outside strings
    for (i, c) in s.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ','
            && !matches!(last, '[' | '{' | ',')
            && s[i + 1..].trim_start().starts_with([']', '}'])
        {
            continue;
        }
        if !in_str && !c.is_whitespace() {
            last = c;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API: &str = "srn:e::accountId1:kr-west1::apigateway:api/apiId1";
    const U1: &str = "srn:e::accountId1:::iam:user/userId1";
    const U2: &str = "srn:e::accountId2:::iam:user/userId2";
    const U3: &str = "srn:e::accountId2:::iam:user/userId3";

    fn method(stage: &str, verb: &str, path: &str) -> String {
        format!("srn:e::accountId1:kr-west1::apigateway:method/apiId1/{stage}/{verb}/{path}")
    }

    fn policy(text: &str) -> Policy {
        compile(&parse_document(text.as_bytes()).unwrap()).unwrap()
    }

    /// Evaluate a request to apiId1 (`api` overrides the API SRN).
    fn eval_full(
        p: &Policy,
        api: &str,
        ip: &str,
        m: &str,
        who: Option<&str>,
        h: &HeaderMap,
    ) -> Decision {
        let req = Request {
            source_ip: ip.parse().unwrap(),
            method_srn: m,
            api_srn: api,
            principal: who,
            headers: h,
        };
        p.evaluate(&req)
    }

    fn eval(
        p: &Policy,
        ip: &str,
        stage: &str,
        verb: &str,
        path: &str,
        who: Option<&str>,
    ) -> Decision {
        eval_full(
            p,
            API,
            ip,
            &method(stage, verb, path),
            who,
            &HeaderMap::new(),
        )
    }

    use Decision::*;

    const DEFAULT_TEMPLATE: &str = r#"{
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
      "Effect": "Allow",
      "Principal": "*",
      "Resource": [
        "srn:{{Offering}}::{{AccountID}}:kr-west1::apigateway:api/{{ApiId}}"
      ],
      "Sid": "DefaultStatement"
    }
  ],
  "Version": "2024-07-01"
}"#;

    const ACCOUNT_ALLOW_TEMPLATE: &str = r#"{
  "Version": "",
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
      "Condition": {
        "SrnLike": {
          "scp:RequestAttribute/body['method-srn']": [
            "srn:{{Offering}}::{{AccountID}}:kr-west1::apigateway:method/{{ApiId}}/{{stageNameOrWildcard*}}/{{httpVerbOrWildcard*}}/{{resourcePathOrWildcard*}}"
          ]
        }
      },
      "Effect": "Allow",
      "Principal": {
        "scp": [
          "srn:{{Offering}}::{{AccountID}}:::iam:user/{{UserSrn}}"
        ]
      },
      "Resource": [
        "srn:{{Offering}}::{{AccountID}}:kr-west1::apigateway:api/{{ApiId}}"
      ],
      "Sid": "Statement1"
    }
  ]
}"#;

    const IP_DENY_TEMPLATE: &str = r#"{
  "Version": "",
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
      "Condition": {
        "SrnLike": {
          "scp:RequestAttribute/body['method-srn']": [
            "srn:{{Offering}}::{{AccountID}}:kr-west1::apigateway:method/{{ApiId}}/{{stageNameOrWildcard*}}/{{httpVerbOrWildcard*}}/{{resourcePathOrWildcard*}}"
          ]
        },
        "NotIpAddress": {
          "scp:SourceIp": [
            "{{sourceIpOrCIDRBlock}}",
            "{{sourceIpOrCIDRBlock}}"
          ]
        }
      },
      "Effect": "Allow",
      "Principal": "*",
      "Resource": [
        "srn:{{Offering}}::{{AccountID}}:kr-west1::apigateway:api/{{ApiId}}"
      ],
      "Sid": "Statement1"
    }
  ]
}"#;

    /// The guide's "Policy Example" of a template: fixed values for the
    /// placeholders (stage1/GET/resource1, userId1, 1.2.3.4/24 and 5.6.7.8/32).
    fn example_of(template: &str) -> String {
        template
            .replace("{{Offering}}", "e")
            .replace("{{AccountID}}", "accountId1")
            .replace("{{ApiId}}", "apiId1")
            .replace("{{stageNameOrWildcard*}}", "stage1")
            .replace("{{httpVerbOrWildcard*}}", "GET")
            .replace("{{resourcePathOrWildcard*}}", "resource1")
            .replace("{{UserSrn}}", "userId1")
            .replacen("{{sourceIpOrCIDRBlock}}", "1.2.3.4/24", 1)
            .replacen("{{sourceIpOrCIDRBlock}}", "5.6.7.8/32", 1)
    }

    #[test]
    fn default_policy_allows_anyone_on_its_api_only() {
        let example = r#"{
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
      "Effect": "Allow",
      "Principal": "*",
      "Resource": [
        "srn:e::accountId1:kr-west1::apigateway:api/apiId1"
      ],
      "Sid": "DefaultStatement"
    }
  ],
  "Version": "2024-07-01"
}"#;
        assert_eq!(example_of(DEFAULT_TEMPLATE), example);
        let p = policy(example);
        assert_eq!(
            eval(&p, "203.0.113.9", "stage1", "GET", "resource1", None),
            Allow
        );
        assert_eq!(
            eval(&p, "2001:db8::1", "prod", "DELETE", "a/b/c", Some(U3)),
            Allow
        );
        let other = "srn:e::accountId1:kr-west1::apigateway:method/apiId2/s/GET/x";
        let h = HeaderMap::new();
        assert_eq!(
            eval_full(
                &p,
                "srn:e::accountId1:kr-west1::apigateway:api/apiId2",
                "1.1.1.1",
                other,
                None,
                &h
            ),
            ImplicitDeny
        );
        // The unsubstituted template is rejected, naming the element.
        let e = compile(&parse_document(DEFAULT_TEMPLATE.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.element, "Statement[0].Resource[0]");
    }

    #[test]
    fn account_allow_list_example() {
        let p = policy(&example_of(ACCOUNT_ALLOW_TEMPLATE));
        assert_eq!(
            eval(&p, "10.0.0.1", "stage1", "GET", "resource1", Some(U1)),
            Allow
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "stage1", "GET", "resource1", None),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "stage1", "GET", "resource1", Some(U2)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "stage1", "POST", "resource1", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "stage2", "GET", "resource1", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "stage1", "GET", "resource1/sub", Some(U1)),
            ImplicitDeny
        );
    }

    #[test]
    fn account_allow_list_template_with_wildcards() {
        let doc = ACCOUNT_ALLOW_TEMPLATE
            .replace("{{Offering}}", "e")
            .replace("{{AccountID}}", "accountId1")
            .replace("{{ApiId}}", "apiId1")
            .replace("{{stageNameOrWildcard*}}", "*")
            .replace("{{httpVerbOrWildcard*}}", "GET")
            .replace("{{resourcePathOrWildcard*}}", "items/*")
            .replace("{{UserSrn}}", "userId1");
        let p = policy(&doc);
        assert_eq!(
            eval(&p, "10.0.0.1", "dev", "GET", "items/42", Some(U1)),
            Allow
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "prod", "GET", "items/42/parts/7", Some(U1)),
            Allow
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "prod", "GET", "orders/1", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "prod", "PUT", "items/42", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "10.0.0.1", "prod", "GET", "items/42", None),
            ImplicitDeny
        );
    }

    #[test]
    fn ip_range_deny_list_example() {
        let p = policy(&example_of(IP_DENY_TEMPLATE));
        // 1.2.3.4/24 (host bits set, as in the guide) covers 1.2.3.0-1.2.3.255.
        for ip in [
            "1.2.3.0",
            "1.2.3.4",
            "1.2.3.255",
            "5.6.7.8",
            "::ffff:1.2.3.9",
        ] {
            assert_eq!(
                eval(&p, ip, "stage1", "GET", "resource1", None),
                ImplicitDeny,
                "{ip}"
            );
        }
        for ip in ["1.2.4.1", "5.6.7.9", "2001:db8::5"] {
            assert_eq!(
                eval(&p, ip, "stage1", "GET", "resource1", None),
                Allow,
                "{ip}"
            );
            assert_eq!(
                eval(&p, ip, "stage1", "GET", "resource1", Some(U2)),
                Allow,
                "{ip}"
            );
            assert_eq!(
                eval(&p, ip, "stage1", "POST", "resource1", None),
                ImplicitDeny,
                "{ip}"
            );
        }
    }

    #[test]
    fn ip_range_deny_as_explicit_deny_statement() {
        let p = compile(&json!({"Version": "2024-07-01", "Statement": [
            {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "apigateway:*", "Resource": API},
            {"Sid": "Block", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "srn:e::accountId1:kr-west1::apigateway:*",
             "Condition": {"IpAddress": {"scp:SourceIp": ["198.51.100.0/24", "2001:db8::/32"]}}}
        ]}))
        .unwrap();
        assert_eq!(
            eval(&p, "198.51.100.7", "s", "GET", "x", Some(U1)),
            ExplicitDeny
        );
        assert_eq!(eval(&p, "2001:db8::9", "s", "GET", "x", None), ExplicitDeny);
        assert_eq!(eval(&p, "198.51.101.7", "s", "GET", "x", None), Allow);
    }

    const CROSS_ACCOUNT_EXAMPLE: &str = r#"{
  "Version": "",
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
      "Condition": {
        "SrnLike": {
          "scp:RequestAttribute/body['method-srn']": [
            "srn:e::accountId1:kr-west1::apigateway:method/apiId1/*/*/*"
          ]
        }
      },
      "Effect": "Allow",
      "Principal": {
        "scp": [
          "srn:e::accountId1:::iam:user/userId1",
          "srn:e::accountId2:::iam:user/userId2",
        ]
      },
      "Resource": [
        "srn:e::accountId1:kr-west1::apigateway:api/apiId1"
      ],
      "Sid": "Statement1"
    }
  ]
}"#;

    #[test]
    fn cross_account_example_verbatim() {
        assert!(
            serde_json::from_str::<Value>(CROSS_ACCOUNT_EXAMPLE).is_err(),
            "the guide's example has a trailing comma"
        );
        let p = policy(CROSS_ACCOUNT_EXAMPLE);
        for who in [U1, U2] {
            assert_eq!(
                eval(&p, "8.8.8.8", "stage1", "GET", "resource1", Some(who)),
                Allow
            );
            assert_eq!(
                eval(&p, "8.8.8.8", "prod", "DELETE", "a/b", Some(who)),
                Allow
            );
            assert_eq!(eval(&p, "8.8.8.8", "prod", "GET", "", Some(who)), Allow);
        }
        assert_eq!(
            eval(&p, "8.8.8.8", "stage1", "GET", "resource1", Some(U3)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "8.8.8.8", "stage1", "GET", "resource1", None),
            ImplicitDeny
        );
        let h = HeaderMap::new();
        let m2 = "srn:e::accountId1:kr-west1::apigateway:method/apiId2/stage1/GET/x";
        assert_eq!(
            eval_full(&p, API, "8.8.8.8", m2, Some(U2), &h),
            ImplicitDeny
        );
    }

    const HYBRID_EXAMPLE: &str = r#"{
  "Version": "",
  "Statement": [
    {
      "Action": [
        "apigateway:InvokeApigatewayRegion"
      ],
       "Condition": {
        "SrnLike": {
          "scp:RequestAttribute/body['method-srn']": [
            "srn:e::accountId1:kr-west1::apigateway:method/apiId1/*/*/*"
          ]
        },
        "NotIpAddress": {
          "scp:SourceIp": [
            "1.2.3.4/24",
            "5.6.7.8/32"
          ]
        }
      },
      "Effect": "Allow",
      "Principal": {
        "scp": [
          "srn:e::accountId1:::iam:user/userId1",
        ]
      },
      "Resource": [
        "srn:e::accountId1:kr-west1::apigateway:api/apiId1"
      ],
      "Sid": "Statement1"
    }
  ]
}"#;

    #[test]
    fn hybrid_example_verbatim() {
        let p = policy(HYBRID_EXAMPLE);
        assert_eq!(
            eval(&p, "9.9.9.9", "stage1", "GET", "resource1", Some(U1)),
            Allow
        );
        assert_eq!(eval(&p, "9.9.9.9", "prod", "POST", "x/y", Some(U1)), Allow);
        assert_eq!(
            eval(&p, "1.2.3.200", "stage1", "GET", "resource1", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "5.6.7.8", "stage1", "GET", "resource1", Some(U1)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "9.9.9.9", "stage1", "GET", "resource1", Some(U2)),
            ImplicitDeny
        );
        assert_eq!(
            eval(&p, "9.9.9.9", "stage1", "GET", "resource1", None),
            ImplicitDeny
        );
    }

    #[test]
    fn header_principal_and_root_conditions() {
        let p = compile(&json!({"Statement": [{
            "Effect": "Allow", "Principal": {"scp": "srn:e::accountId2:::iam:root"}, "Action": "apigateway:Invoke*", "Resource": "*",
            "Condition": {
                "StringEquals": {"scp:RequestHeader/X-Env": ["prod", "stage"]},
                "StringNotLike": {"scp:requestheader/x-debug": "*"},
                "StringLikeIfExists": {"scp:RequestHeader/User-Agent": "curl/*"},
                "SrnLike": {"scp:PrincipalSrn": "srn:e::accountId2:::iam:user/*"}
            }}]}))
        .unwrap();
        let mut h = HeaderMap::new();
        let m = method("s", "GET", "x");
        let run = |h: &HeaderMap, who| eval_full(&p, API, "1.1.1.1", &m, who, h);
        assert_eq!(run(&h, Some(U2)), ImplicitDeny, "x-env missing");
        h.insert("x-env", "prod".parse().unwrap());
        assert_eq!(run(&h, Some(U2)), Allow);
        assert_eq!(run(&h, Some(U3)), Allow, "root stands for the account");
        assert_eq!(run(&h, Some(U1)), ImplicitDeny, "other account");
        assert_eq!(run(&h, None), ImplicitDeny);
        h.insert("user-agent", "curl/8.0".parse().unwrap());
        assert_eq!(run(&h, Some(U2)), Allow);
        h.insert("user-agent", "Mozilla/5.0".parse().unwrap());
        assert_eq!(run(&h, Some(U2)), ImplicitDeny);
        h.remove("user-agent");
        h.insert("x-debug", "1".parse().unwrap());
        assert_eq!(
            run(&h, Some(U2)),
            ImplicitDeny,
            "StringNotLike * with the header present"
        );
        h.remove("x-debug");
        h.insert("x-env", "PROD".parse().unwrap());
        assert_eq!(
            run(&h, Some(U2)),
            ImplicitDeny,
            "StringEquals is case-sensitive"
        );
        h.insert("x-env", b"\xff\xfe".as_slice().try_into().unwrap());
        assert_eq!(run(&h, Some(U2)), ImplicitDeny, "opaque bytes never match");
    }

    #[test]
    fn statement_may_be_single_object_and_other_actions_never_apply() {
        let p = compile(&json!({"Statement": {"Effect": "Deny", "Principal": "*", "Action": "iam:*", "Resource": "*"}})).unwrap();
        assert_eq!(eval(&p, "1.1.1.1", "s", "GET", "x", None), ImplicitDeny);
        let p = compile(&json!({"Statement": {"Effect": "Allow", "Principal": {"scp": ["*"]}, "Action": "APIGATEWAY:invoke?pigatewayregion", "Resource": "srn:e::accountId1:kr-west1::apigateway:method/apiId1/s/GET/*"}})).unwrap();
        assert_eq!(eval(&p, "1.1.1.1", "s", "GET", "x", None), Allow);
        assert_eq!(eval(&p, "1.1.1.1", "s", "PUT", "x", None), ImplicitDeny);
        assert_eq!(
            Policy::deny_all().evaluate(&Request {
                source_ip: "1.1.1.1".parse().unwrap(),
                method_srn: "",
                api_srn: API,
                principal: None,
                headers: &HeaderMap::new()
            }),
            ImplicitDeny
        );
    }

    #[test]
    #[rustfmt::skip]
    fn validation_errors_name_the_element() {
        let ok = || json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"});
        let with = |k: &str, v: Value| {
            let mut s = ok();
            if v.is_null() { s.as_object_mut().unwrap().remove(k); } else { s[k] = v; }
            json!({"Version": "2024-07-01", "Statement": [ok(), s]})
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "Policy"),
            (json!({"Statement": []}), "Statement"),
            (json!({"Version": 1, "Statement": [ok()]}), "Version"),
            (json!({"Version": "v1", "Statement": [ok()]}), "Version"),
            (json!({"Statement": [ok()], "Extra": 1}), "Extra"),
            (json!({"Statement": (0..101).map(|_| ok()).collect::<Vec<_>>()}), "Statement"),
            (json!({"Statement": [ok(), 3]}), "Statement[1]"),
            (with("Effect", Value::Null), "Statement[1].Effect"),
            (with("Effect", json!("allow")), "Statement[1].Effect"),
            (with("Resource", Value::Null), "Statement[1].Resource"),
            (with("Resource", json!([])), "Statement[1].Resource"),
            (with("Resource", json!(["*", "api/x"])), "Statement[1].Resource[1]"),
            (with("Action", Value::Null), "Statement[1].Action"),
            (with("Action", json!(["apigateway:Invoke", "Invoke"])), "Statement[1].Action[1]"),
            (with("Principal", Value::Null), "Statement[1].Principal"),
            (with("Principal", json!("anyone")), "Statement[1].Principal"),
            (with("Principal", json!({"AWS": "*"})), "Statement[1].Principal.AWS"),
            (with("Principal", json!({"scp": [U1, 7]})), "Statement[1].Principal.scp[1]"),
            (with("Sid", json!("a b")), "Statement[1].Sid"),
            (with("NotAction", json!("*")), "Statement[1].NotAction"),
            (with("Condition", json!([])), "Statement[1].Condition"),
            (with("Condition", json!({"NumericEquals": {"scp:SourceIp": "1"}})), "Statement[1].Condition.NumericEquals"),
            (with("Condition", json!({"IpAddress": {"scp:SourceIp": ["10.0.0.0/8", "10.0.0.0/33"]}})), "Statement[1].Condition.IpAddress.scp:SourceIp[1]"),
            (with("Condition", json!({"IpAddress": {"scp:RequestHeader/x": "10.0.0.1"}})), "Statement[1].Condition.IpAddress.scp:RequestHeader/x"),
            (with("Condition", json!({"StringEquals": {"scp:SourceIp": "10.0.0.1"}})), "Statement[1].Condition.StringEquals.scp:SourceIp"),
            (with("Condition", json!({"StringEquals": {"scp:Nope": "x"}})), "Statement[1].Condition.StringEquals.scp:Nope"),
            (with("Condition", json!({"StringEquals": {"scp:RequestHeader/bad header": "x"}})), "Statement[1].Condition.StringEquals.scp:RequestHeader/bad header"),
            (with("Condition", json!({"StringEquals": {"scp:RequestHeader/x": {"a": 1}}})), "Statement[1].Condition.StringEquals.scp:RequestHeader/x"),
            (with("Condition", json!({"SrnLike": {METHOD_SRN_KEY: ["GET/*"]}})), "Statement[1].Condition.SrnLike.scp:RequestAttribute/body['method-srn'][0]"),
            (with("Condition", json!({"StringLike": {}})), "Statement[1].Condition.StringLike"),
        ];
        for (doc, element) in cases {
            let e = compile(&doc).err().unwrap_or_else(|| panic!("accepted: {doc}"));
            assert_eq!(e.element, element, "{doc} -> {e}");
            assert_eq!(e.to_string(), format!("{}: {}", e.element, e.message));
        }
        let dup = json!({"Statement": [{"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
                                       {"Sid": "A", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]});
        assert_eq!(compile(&dup).unwrap_err().element, "Statement[1].Sid");
        assert_eq!(parse_document(&vec![b' '; MAX_POLICY_BYTES + 1]).unwrap_err().element, "Policy");
        assert!(parse_document(b"{\"a\": [,]}").is_err());
        assert!(parse_document(b"{\"a\": \"x,]\"}").is_ok());
    }

    #[test]
    fn deeply_nested_input_is_rejected_without_recursion() {
        let text = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse_document(text.as_bytes()).is_err());
        // Built by hand: json!/to_value would serialize `deep` recursively.
        let obj = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_string(), v)]));
        // Fresh each time: Value::clone is recursive too.
        let deep = || (0..1000).fold(json!("x"), |d, _| obj("k", Value::Array(vec![d])));
        let stmt = |k: &str, v: Value| {
            let mut s =
                json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"});
            s.as_object_mut().unwrap().insert(k.to_string(), v);
            obj("Statement", Value::Array(vec![s]))
        };
        let cond = obj("StringEquals", obj("scp:RequestHeader/a", deep()));
        for bad in [
            stmt("Condition", cond),
            stmt("Principal", deep()),
            stmt("Resource", Value::Array(vec![deep()])),
            obj("Statement", deep()),
            deep(),
        ] {
            assert!(compile(&bad).is_err());
        }
    }

    #[test]
    fn glob_and_policy_are_threadsafe_and_correct() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Policy>();
        assert!(glob(b"a*b?c", b"aXXbYc", false));
        assert!(glob(b"a*b?c", "a b€c".as_bytes(), false));
        assert!(!glob(b"a*b?c", b"abc", false));
        assert!(glob(b"*", b"", false) && glob(b"**", b"x", false));
        assert!(!glob(b"*a*a*a*b", &[b'a'; 200], false));
        assert!(glob(b"AB*", b"abc", true) && !glob(b"AB*", b"abc", false));
    }
}
