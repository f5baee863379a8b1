//! Custom domain names and their base path mappings: an extension beside
//! the SCP operations, after AWS API Gateway's domain-name and
//! base-path-mapping model. Account-scoped, signed, answered with the SCP
//! error envelope like every other operation.
//!
//! A request whose Host is a custom domain is routed by the domain's base
//! paths (see `dataplane::route::route_domain`): the first path segment
//! picks the mapping (the "" mapping takes the requests no other does),
//! the rest of the path is routed in the mapped API stage, without a
//! stage segment.
//!
//! Choices:
//! - A domain name is a DNS host name: lower-cased, a trailing dot
//!   dropped, at least two labels of 1 to 63 of `a-z 0-9 -` (no leading or
//!   trailing `-`), at most 253 characters, the last label not all digits
//!   (no IP addresses). No wildcards. It may not be the invoke domain or
//!   under it (those are the APIs' invoke hosts). Names are unique across
//!   accounts (409).
//! - A base path is "" or one segment of 1 to 128 of `A-Z a-z 0-9 . _ ~ -`
//!   (not `.` or `..`), matched case-sensitively on a segment boundary.
//!   In URLs, the "" base path is written `(none)`, as AWS does.
//! - Mappings target REGION APIs (a PRIVATE API is reached only through
//!   PrivateLink). Deleting a domain, an API or a stage that a mapping
//!   uses is refused (409) until the mappings are deleted, as AWS refuses
//!   deleting a mapped API: nothing disappears from a domain silently.
//! - `certificate_file` / `private_key_file`: both or neither, names under
//!   `tls.cert_dir` (see [`crate::net::confined`]), checked at create to
//!   parse as a PEM certificate chain and a private key that matches it.
//!   Their contents are never stored or shown; the TLS listener reads the
//!   files ([`domain_certificates`]).

use super::extract::JsonBody;
use super::{api_of, views, AdminState, ApiError, Caller};
use crate::net::confined::Confined;
use crate::store::model::*;
use crate::store::State as St;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::path::PathBuf;

/// Domain names per account.
pub const MAX_DOMAIN_NAMES: usize = 100;
/// Base path mappings per domain.
pub const MAX_MAPPINGS: usize = 100;
/// Largest certificate or key file read.
pub const MAX_PEM_BYTES: usize = 1024 * 1024;
/// How the "" base path is written in a URL (AWS's spelling).
pub const NONE_BASE_PATH: &str = "(none)";

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = domains::DomainReq)]
pub struct DomainReq {
    domain_name: String,
    certificate_file: Option<String>,
    private_key_file: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = domains::MappingReq)]
pub struct MappingReq {
    base_path: Option<String>,
    api_id: String,
    stage_name: String,
}

/// A domain name as typed: lower case, no trailing dot.
fn canonical(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

/// The caller's domain, or 404 (also for another account's).
pub fn domain_of<'a>(st: &'a St, caller: &Caller, name: &str) -> Result<&'a DomainName, ApiError> {
    st.domain_names
        .get(&canonical(name))
        .filter(|d| d.account_id == caller.account_id)
        .ok_or_else(|| ApiError::not_found(format!("domain name {name} not found")))
}

/// Whether `name` (canonical) is a DNS host name as custom domains take.
fn check_domain_name(name: &str, invoke_domain: &str) -> Result<(), ApiError> {
    let bad = |msg: &str| Err(ApiError::field("domain_name", msg));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("must have at least two labels (e.g. api.example.com)");
    }
    for l in &labels {
        let ok = (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return bad(
                "each label must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
            );
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("must be a host name, not an IP address");
    }
    let invoke = canonical(invoke_domain);
    if !invoke.is_empty()
        && (name == invoke
            || name
                .strip_suffix(invoke.as_str())
                .is_some_and(|p| p.ends_with('.')))
    {
        return bad("is the invoke domain or under it: those hosts are the APIs' invoke hosts");
    }
    Ok(())
}

/// Both files or neither; each readable under `tls.cert_dir` and of the
/// right PEM kind, the key matching the certificate.
async fn check_certificate(
    cert_dir: &str,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<(), ApiError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(()),
        (Some(_), None) => {
            return Err(ApiError::field(
                "private_key_file",
                "is required with certificate_file",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::field(
                "certificate_file",
                "is required with private_key_file",
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    if cert_dir.is_empty() {
        return Err(ApiError::field(
            "certificate_file",
            "certificate files are off on this gateway (tls.cert_dir is not set)",
        ));
    }
    let dir = Confined {
        dir: std::path::Path::new(cert_dir),
        setting: "tls.cert_dir",
        max_bytes: MAX_PEM_BYTES,
        max_setting: "the certificate file limit",
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_pem = dir
        .read(cert)
        .await
        .map_err(|e| ApiError::field("certificate_file", e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::field("certificate_file", "is not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(ApiError::field(
            "certificate_file",
            "holds no PEM certificate",
        ));
    }
    let key_pem = dir
        .read(key)
        .await
        .map_err(|e| ApiError::field("private_key_file", e))?;
    // The key's bytes are never quoted, whatever fails.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| ApiError::field("private_key_file", "holds no PEM private key"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => ApiError::field(
            "private_key_file",
            "does not match the certificate of certificate_file",
        ),
        rustls::Error::InvalidCertificate(_) => {
            ApiError::field("certificate_file", "is not a valid X.509 certificate")
        }
        _ => ApiError::field("private_key_file", "is not a supported private key"),
    })?;
    Ok(())
}

/// Every custom domain with certificate files, with the files resolved
/// under `cert_dir` (canonical paths; the same confinement as at create):
/// `(domain name, certificate chain file, private key file)`, in name
/// order. A domain whose files no longer resolve inside `cert_dir` is left
/// out (logged without the path): it gets the default certificate.
pub fn domain_certificates(
    state: &St,
    cert_dir: &std::path::Path,
) -> Vec<(String, PathBuf, PathBuf)> {
    if cert_dir.as_os_str().is_empty() {
        return Vec::new();
    }
    let dir = Confined {
        dir: cert_dir,
        setting: "tls.cert_dir",
        max_bytes: MAX_PEM_BYTES,
        max_setting: "the certificate file limit",
    };
    state
        .domain_names
        .values()
        .filter_map(|d| {
            let (c, k) = (d.certificate_file.as_deref()?, d.private_key_file.as_deref()?);
            match (dir.resolve(c), dir.resolve(k)) {
                (Ok(c), Ok(k)) => Some((d.domain_name.clone(), c, k)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(domain = %d.domain_name, reason = %e,
                        "custom domain certificate files not usable: the default certificate is served");
                    None
                }
            }
        })
        .collect()
}

/// 409 when a base path mapping uses the API (or its stage): deleting
/// them first is asked, as AWS does for a mapped API.
pub fn refuse_if_mapped(st: &St, api_id: &str, stage_name: Option<&str>) -> Result<(), ApiError> {
    match st.mappings_to(api_id, stage_name).next() {
        None => Ok(()),
        Some(m) => Err(ApiError::conflict(format!(
            "{} is mapped by custom domain {} (base path {:?}); delete the base path mapping first",
            match stage_name {
                Some(s) => format!("stage {s}"),
                None => format!("api {api_id}"),
            },
            m.domain_name,
            m.base_path
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/domain-names",
    operation_id = "domains_create",
    tag = "Custom domain names (extension)",
    request_body(content = DomainReq, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = views::DomainNameShowResponse, content_type = "application/json"))
)]
pub async fn create(
    State(app): State<AdminState>,
    caller: Caller,
    JsonBody(req): JsonBody<DomainReq>,
) -> Result<(StatusCode, Json<views::DomainNameShowResponse>), ApiError> {
    let name = canonical(&req.domain_name);
    check_domain_name(&name, &app.cfg.data.invoke_domain)?;
    check_certificate(
        &app.cfg.tls.cert_dir,
        req.certificate_file.as_deref(),
        req.private_key_file.as_deref(),
    )
    .await?;
    let mut st = app.state.write().await;
    if st.domain_names.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "domain name {name} already exists"
        )));
    }
    let n = st
        .domain_names
        .values()
        .filter(|d| d.account_id == caller.account_id)
        .count();
    if n >= MAX_DOMAIN_NAMES {
        return Err(ApiError::field(
            "domain_name",
            format!("at most {MAX_DOMAIN_NAMES} domain names per account: limit reached"),
        ));
    }
    let d = DomainName {
        domain_name: name,
        account_id: caller.account_id.clone(),
        certificate_file: req.certificate_file,
        private_key_file: req.private_key_file,
        created_at: now_rfc3339(),
    };
    let out = views::domain_name(&d, &st);
    app.commit(&mut st, vec![Change::Put(Entity::DomainName(d))])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::DomainNameShowResponse { domain_name: out }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/domain-names",
    operation_id = "domains_list",
    tag = "Custom domain names (extension)",
    responses((status = 200, description = "OK.", body = views::DomainNameListResponse, content_type = "application/json"))
)]
pub async fn list(
    State(app): State<AdminState>,
    caller: Caller,
) -> Result<Json<views::DomainNameListResponse>, ApiError> {
    let st = app.state.read().await;
    let all: Vec<views::DomainName> = st
        .domain_names
        .values()
        .filter(|d| d.account_id == caller.account_id)
        .map(|d| views::domain_name(d, &st))
        .collect();
    Ok(Json(views::DomainNameListResponse {
        count: all.len(),
        domain_names: all,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/domain-names/{domain_name}",
    operation_id = "domains_show",
    tag = "Custom domain names (extension)",
    responses((status = 200, description = "OK.", body = views::DomainNameShowResponse, content_type = "application/json"))
)]
pub async fn show(
    State(app): State<AdminState>,
    caller: Caller,
    Path(domain_name): Path<String>,
) -> Result<Json<views::DomainNameShowResponse>, ApiError> {
    let st = app.state.read().await;
    let d = domain_of(&st, &caller, &domain_name)?;
    Ok(Json(views::DomainNameShowResponse {
        domain_name: views::domain_name(d, &st),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/domain-names/{domain_name}",
    operation_id = "domains_delete",
    tag = "Custom domain names (extension)",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete(
    State(app): State<AdminState>,
    caller: Caller,
    Path(domain_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let d = domain_of(&st, &caller, &domain_name)?;
    let n = st.mappings_of(&d.domain_name).count();
    if n > 0 {
        return Err(ApiError::conflict(format!(
            "domain name {} has {n} base path mapping(s); delete them first",
            d.domain_name
        )));
    }
    let change = Change::Delete {
        kind: Kind::DomainName,
        key: d.domain_name.clone(),
        api_id: String::new(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// "" or one path segment of unreserved characters.
fn check_base_path(p: &str) -> Result<(), ApiError> {
    if p.is_empty() {
        return Ok(());
    }
    let ok = p.len() <= 128
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if !ok {
        return Err(ApiError::field(
            "base_path",
            "must be \"\" or one path segment of 1 to 128 of A-Z, a-z, 0-9, '.', '_', '~' and '-' (not \".\" or \"..\")",
        ));
    }
    Ok(())
}

/// A base path as it appears in a URL: `(none)` is "".
fn base_path_param(p: &str) -> &str {
    if p == NONE_BASE_PATH {
        ""
    } else {
        p
    }
}

#[utoipa::path(
    post,
    path = "/v1/domain-names/{domain_name}/base-path-mappings",
    operation_id = "domains_create_mapping",
    tag = "Custom domain names (extension)",
    request_body(content = MappingReq, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = views::BasePathMappingShowResponse, content_type = "application/json"))
)]
pub async fn create_mapping(
    State(app): State<AdminState>,
    caller: Caller,
    Path(domain_name): Path<String>,
    JsonBody(req): JsonBody<MappingReq>,
) -> Result<(StatusCode, Json<views::BasePathMappingShowResponse>), ApiError> {
    let base_path = req.base_path.unwrap_or_default();
    check_base_path(&base_path)?;
    let mut st = app.state.write().await;
    let d = domain_of(&st, &caller, &domain_name)?;
    let a = api_of(&st, &caller, &req.api_id)?;
    if a.api()
        .is_some_and(|x| x.endpoint_type == EndpointType::Private)
    {
        return Err(ApiError::field(
            "api_id",
            "is a PRIVATE API: custom domains serve REGION APIs (PRIVATE ones are reached through PrivateLink)",
        ));
    }
    if !a.stages.contains_key(&req.stage_name) {
        return Err(ApiError::not_found(format!(
            "stage {} not found",
            req.stage_name
        )));
    }
    let key = BasePathMapping::key(&d.domain_name, &base_path);
    if st.base_path_mappings.contains_key(&key) {
        return Err(ApiError::conflict(format!(
            "domain name {} already has base path {base_path:?}",
            d.domain_name
        )));
    }
    if st.mappings_of(&d.domain_name).count() >= MAX_MAPPINGS {
        return Err(ApiError::field(
            "base_path",
            format!("at most {MAX_MAPPINGS} base path mappings per domain name: limit reached"),
        ));
    }
    let m = BasePathMapping {
        domain_name: d.domain_name.clone(),
        base_path,
        account_id: caller.account_id.clone(),
        api_id: req.api_id,
        stage_name: req.stage_name,
        created_at: now_rfc3339(),
    };
    let out = views::base_path_mapping(&m);
    app.commit(&mut st, vec![Change::Put(Entity::BasePathMapping(m))])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::BasePathMappingShowResponse {
            base_path_mapping: out,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/domain-names/{domain_name}/base-path-mappings",
    operation_id = "domains_list_mappings",
    tag = "Custom domain names (extension)",
    responses((status = 200, description = "OK.", body = views::BasePathMappingListResponse, content_type = "application/json"))
)]
pub async fn list_mappings(
    State(app): State<AdminState>,
    caller: Caller,
    Path(domain_name): Path<String>,
) -> Result<Json<views::BasePathMappingListResponse>, ApiError> {
    let st = app.state.read().await;
    let d = domain_of(&st, &caller, &domain_name)?;
    let all: Vec<views::BasePathMapping> = st
        .mappings_of(&d.domain_name)
        .map(views::base_path_mapping)
        .collect();
    Ok(Json(views::BasePathMappingListResponse {
        count: all.len(),
        base_path_mappings: all,
    }))
}

fn mapping_of<'a>(
    st: &'a St,
    caller: &Caller,
    domain_name: &str,
    base_path: &str,
) -> Result<&'a BasePathMapping, ApiError> {
    let d = domain_of(st, caller, domain_name)?;
    let base_path = base_path_param(base_path);
    st.base_path_mappings
        .get(&BasePathMapping::key(&d.domain_name, base_path))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "base path {base_path:?} of domain name {} not found",
                d.domain_name
            ))
        })
}

#[utoipa::path(
    get,
    path = "/v1/domain-names/{domain_name}/base-path-mappings/{base_path}",
    operation_id = "domains_show_mapping",
    tag = "Custom domain names (extension)",
    responses((status = 200, description = "OK.", body = views::BasePathMappingShowResponse, content_type = "application/json"))
)]
pub async fn show_mapping(
    State(app): State<AdminState>,
    caller: Caller,
    Path((domain_name, base_path)): Path<(String, String)>,
) -> Result<Json<views::BasePathMappingShowResponse>, ApiError> {
    let st = app.state.read().await;
    let m = mapping_of(&st, &caller, &domain_name, &base_path)?;
    Ok(Json(views::BasePathMappingShowResponse {
        base_path_mapping: views::base_path_mapping(m),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/domain-names/{domain_name}/base-path-mappings/{base_path}",
    operation_id = "domains_delete_mapping",
    tag = "Custom domain names (extension)",
    responses((status = 204, description = "Done; no body."))
)]
pub async fn delete_mapping(
    State(app): State<AdminState>,
    caller: Caller,
    Path((domain_name, base_path)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut st = app.state.write().await;
    let m = mapping_of(&st, &caller, &domain_name, &base_path)?;
    let change = Change::Delete {
        kind: Kind::BasePathMapping,
        key: BasePathMapping::key(&m.domain_name, &m.base_path),
        api_id: String::new(),
    };
    app.commit(&mut st, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_host_names_outside_the_invoke_domain() {
        let ok = |n: &str| check_domain_name(&canonical(n), "apigw.localhost").is_ok();
        assert!(ok("api.example.com"));
        assert!(ok("API.Example.COM."));
        assert!(ok("a-1.b2.example"));
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.example.com",
            "a-.example.com",
            "a_b.example.com",
            "*.example.com",
            "127.0.0.1",
            "apigw.localhost",
            "x.apigw.localhost",
            "a.b.apigw.localhost",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(127)),
        ] {
            assert!(!ok(bad), "{bad}");
        }
        // Ends with the invoke domain but not under it.
        assert!(ok("xapigw.localhost"));
    }

    #[test]
    fn certificates_are_resolved_inside_cert_dir() {
        let top = tempfile::tempdir().unwrap();
        let certs = top.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        for f in ["a.crt", "a.key"] {
            std::fs::write(certs.join(f), "pem").unwrap();
        }
        std::fs::write(top.path().join("out.key"), "pem").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(top.path().join("out.key"), certs.join("link.key")).unwrap();
        let mut st = St::default();
        let domain = |name: &str, files: Option<(&str, &str)>| DomainName {
            domain_name: name.into(),
            account_id: "acct".into(),
            certificate_file: files.map(|f| f.0.into()),
            private_key_file: files.map(|f| f.1.into()),
            created_at: now_rfc3339(),
        };
        st.apply(&[
            Change::Put(Entity::DomainName(domain(
                "a.example.test",
                Some(("a.crt", "a.key")),
            ))),
            Change::Put(Entity::DomainName(domain("b.example.test", None))),
            Change::Put(Entity::DomainName(domain(
                "c.example.test",
                Some(("a.crt", "link.key")),
            ))),
            Change::Put(Entity::DomainName(domain(
                "d.example.test",
                Some(("a.crt", "gone.key")),
            ))),
        ]);
        let got = domain_certificates(&st, &certs);
        let base = std::fs::canonicalize(&certs).unwrap();
        assert_eq!(
            got,
            vec![(
                "a.example.test".to_string(),
                base.join("a.crt"),
                base.join("a.key")
            )]
        );
        assert!(domain_certificates(&st, std::path::Path::new("")).is_empty());
    }

    #[test]
    fn base_paths_are_one_segment() {
        for good in ["", "v1", "Users_2", "a.b~c-d"] {
            assert!(check_base_path(good).is_ok(), "{good}");
        }
        for bad in ["/v1", "v1/", "a/b", ".", "..", "a b", "é", &"a".repeat(129)] {
            assert!(check_base_path(bad).is_err(), "{bad}");
        }
    }
}
