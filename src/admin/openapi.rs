//! The management API's own OpenAPI 3 description, served unsigned at
//! `GET /v1/openapi.json`: generated from the handlers' `#[utoipa::path]`
//! attributes and their request types (`ToSchema`, with the reference's
//! patterns and limits), plus what every operation shares: the SCP
//! signature headers as security schemes, the path parameters, and the
//! SCP error envelope for each status an operation can answer.
//!
//! Every route the router serves is in [`ApiDoc`] and every operation of
//! it is served: `tests::router_and_description_agree` compares the two.

use super::*;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, HttpMethod, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Where the description is served (unsigned).
pub const PATH: &str = "/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "apigw management API",
        description = "Samsung Cloud Platform API Gateway OpenAPI v1.2 operations, plus this gateway's extensions (Cloud Functions, PrivateLink endpoints, custom domain names and base path mappings, canary and stage variables in stage configuration, resource policies, reports). Every request is signed with the SCP signature (Scp-AccessKey, Scp-Timestamp, Scp-Signature, Scp-ClientType; Scp-AccountId optional); only this description is served unsigned.",
        version = "1.2"
    ),
    paths(
        super::versions,
        openapi_json,
        functions::list,
        functions::create,
        functions::show,
        functions::set,
        functions::delete,
        privatelink::list,
        privatelink::create,
        privatelink::show,
        privatelink::set,
        privatelink::delete,
        privatelink::request,
        privatelink::approval,
        privatelink::connection,
        privatelink::list_connected,
        domains::list,
        domains::create,
        domains::show,
        domains::delete,
        domains::list_mappings,
        domains::create_mapping,
        domains::show_mapping,
        domains::delete_mapping,
        apis::list,
        apis::create,
        apis::show,
        apis::delete,
        apis::set_description,
        resources::list,
        resources::show,
        resources::create,
        resources::delete,
        methods::list,
        methods::create,
        methods::show,
        methods::set,
        methods::delete,
        deployments::list,
        deployments::create,
        stages::list,
        stages::create,
        stages::show,
        stages::delete,
        stages::set_deployment,
        stages::set_config,
        access_controls::list,
        access_controls::create,
        access_controls::show,
        access_controls::set,
        access_controls::delete,
        auths::list,
        auths::create,
        auths::show,
        auths::set,
        auths::delete,
        usage_plans::list,
        usage_plans::create,
        usage_plans::show,
        usage_plans::delete,
        usage_plans::set_description,
        usage_plans::set_quota,
        usage_plans::list_keys,
        usage_plans::create_key,
        usage_plans::delete_key,
        usage_plans::set_key_description,
        reports::list,
        resource_policies::show,
        resource_policies::put,
        resource_policies::delete
    ),
    components(schemas(ErrorEnvelope, ErrorItem, Tag, Throttle, MethodThrottle, EndpointType, IntegrationType, QuotaRate, FunctionAuthHeader)),
    modifiers(&Shared)
)]
pub struct ApiDoc;

/// The description, as served.
pub fn description() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This description (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi_json",
    tag = "Description",
    security(()),
    responses((status = 200, description = "This OpenAPI 3 description.", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: std::sync::LazyLock<Result<String, String>> =
        std::sync::LazyLock::new(|| description().to_json().map_err(|e| e.to_string()));
    match &*JSON {
        Ok(s) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            s.clone(),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("openapi description: {e}")).into_response(),
    }
}

pub use super::error::{ErrorEnvelope, ErrorItem};

/// `page`, `size` and `sort` of list operations.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQueryParams {
    /// Page number, from 0.
    #[param(minimum = 0, maximum = 1000000)]
    page: Option<u64>,
    /// Page size.
    #[param(minimum = 1, maximum = 10000)]
    size: Option<u64>,
    /// `field` or `field:asc|desc` (created_at, or name where the objects have one).
    #[param(pattern = r"^[a-z_]+(:(asc|desc))?$")]
    sort: Option<String>,
}

/// The stage and the range (at most 31 days) of List Reports.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReportQuery {
    /// The stage whose calls are counted.
    #[param(
        pattern = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$",
        min_length = 3,
        max_length = 50
    )]
    stage_name: String,
    /// First UTC day, YYYY-MM-DD.
    #[param(pattern = r"^\d{4}-\d{2}-\d{2}$")]
    start_date: String,
    /// Last UTC day, YYYY-MM-DD.
    #[param(pattern = r"^\d{4}-\d{2}-\d{2}$")]
    end_date: String,
    /// Page number, from 0.
    #[param(minimum = 0, maximum = 1000000)]
    page: Option<u64>,
    /// Page size.
    #[param(minimum = 1, maximum = 10000)]
    size: Option<u64>,
    /// `date` or `date:asc|desc`.
    #[param(pattern = r"^date(:(asc|desc))?$")]
    sort: Option<String>,
}

/// A tag of an API.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Tag {
    #[schema(max_length = 128)]
    key: String,
    #[schema(max_length = 256)]
    value: String,
}

#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum EndpointType {
    REGION,
    PRIVATE,
}

#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum IntegrationType {
    HTTP,
    SCF,
    PRIVATELINK,
}

#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum QuotaRate {
    hour,
    day,
    month,
}

/// A header the gateway sends to a Cloud Function (its value is never shown).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FunctionAuthHeader {
    name: String,
    value: String,
}

/// The reference's name pattern (APIs, stages, usage plans, keys...).
pub const NAME_PATTERN: &str = r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$";

/// What every operation shares.
struct Shared;

const SIGNATURE_HEADERS: [(&str, &str, &str); 4] = [
    ("scp_access_key", "Scp-AccessKey", "The access key."),
    ("scp_signature", "Scp-Signature", "Base64 HMAC-SHA256 of method, URL, timestamp, access key, account id and client type, with the secret key."),
    ("scp_timestamp", "Scp-Timestamp", "Milliseconds since the epoch; within the configured skew."),
    ("scp_client_type", "Scp-ClientType", "The client type that was signed (e.g. OpenApi)."),
];

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorEnvelope")))),
        )
        .build()
}

/// The statuses an operation can answer besides its success: every one
/// the signature check can (401, 403) and the store (500, 503); by path
/// parameter 404; by body 400, 409 (writes), 413, 415.
fn errors_of(
    method: &HttpMethod,
    has_params: bool,
    has_body: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("401", "Signature missing, wrong, expired or replayed."),
        ("403", "Scp-AccountId does not belong to the access key."),
    ];
    let write = !matches!(method, HttpMethod::Get | HttpMethod::Head);
    if has_params || write {
        out.push((
            "404",
            "A named object does not exist (or belongs to another account).",
        ));
    }
    out.push((
        "400",
        "A parameter or field is invalid; the detail names it.",
    ));
    if write {
        out.push(("409", "Conflicts with an existing object or state."));
        out.push(("413", "The body is larger than max_admin_body_bytes."));
    }
    if has_body {
        out.push(("415", "Content-Type is not application/json."));
    }
    out.push((
        "500",
        "Internal error, or committed but not served in time.",
    ));
    if write {
        out.push((
            "503",
            "The store cannot be reached, or concurrent changes kept overtaking this one.",
        ));
    }
    out
}

fn path_params(template: &str) -> Vec<String> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

fn add_shared(op: &mut Operation, method: &HttpMethod, template: &str, signed: bool) {
    let params = path_params(template);
    let declared: Vec<String> = op
        .parameters
        .iter()
        .flatten()
        .filter(|p| p.parameter_in == ParameterIn::Path)
        .map(|p| p.name.clone())
        .collect();
    for name in &params {
        if !declared.contains(name) {
            let p: Parameter = ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .min_length(Some(1)),
                ))
                .build();
            op.parameters.get_or_insert_with(Vec::new).push(p);
        }
    }
    if !signed {
        return;
    }
    let has_body = op.request_body.is_some();
    for (status, desc) in errors_of(method, !params.is_empty(), has_body) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(desc)));
    }
}

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (scheme, header, desc) in SIGNATURE_HEADERS {
            components.add_security_scheme(
                scheme,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(header, desc))),
            );
        }
        components.add_security_scheme(
            "scp_account_id",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Scp-AccountId",
                "Optional: the account the access key belongs to.",
            ))),
        );
        // All four signature headers together.
        doc.security = Some(vec![SecurityRequirement::new(
            "scp_access_key",
            Vec::<String>::new(),
        )
        .add("scp_signature", Vec::<String>::new())
        .add("scp_timestamp", Vec::<String>::new())
        .add("scp_client_type", Vec::<String>::new())]);
        for (template, item) in doc.paths.paths.iter_mut() {
            let signed = template != PATH;
            for (method, op) in [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
                (HttpMethod::Patch, item.patch.as_mut()),
            ] {
                if let Some(op) = op {
                    add_shared(op, &method, template, signed);
                }
            }
        }
    }
}

/// A stage's throttle: `rate` requests per second refilled, `burst` at once.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Throttle {
    #[schema(minimum = 1, maximum = 1000000)]
    rate: u32,
    #[schema(minimum = 1, maximum = 1000000)]
    burst: u32,
}

/// A throttle of one method of a stage.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MethodThrottle {
    #[schema(max_length = 2000, pattern = "^/")]
    path: String,
    method: String,
    #[schema(minimum = 1, maximum = 1000000)]
    rate: u32,
    #[schema(minimum = 1, maximum = 1000000)]
    burst: u32,
}

/// A method and a path template (`/v1/apis/{api_id}`).
pub type Route = (String, String);

/// The (method, path template) pairs a router serves, read from its
/// `Debug` output (axum does not expose its route table otherwise): the
/// paths of its route ids, and for each route id the methods whose
/// endpoint is set. Paths are axum's (`/v1/apis/{api_id}`), as in the
/// description. HEAD (served with GET) is left out.
pub fn served_routes<S>(router: &Router<S>) -> Result<Vec<Route>, String> {
    let dbg = format!("{router:?}");
    // The router's own routes come before its fallback router's.
    let main = dbg
        .split("fallback_router:")
        .next()
        .ok_or("no Router debug output")?;
    let path_re = regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#).map_err(|e| e.to_string())?;
    let methods = [
        "get", "head", "delete", "options", "patch", "post", "put", "trace", "connect",
    ];
    let mr_re = regex::Regex::new(&format!(
        r"RouteId\((\d+)\): MethodRouter\(MethodRouter \{{ {}",
        methods.map(|m| format!("{m}: (\\w+)")).join(", ")
    ))
    .map_err(|e| e.to_string())?;
    let paths: std::collections::HashMap<&str, &str> = path_re
        .captures_iter(main)
        .filter_map(|c| Some((c.get(1)?.as_str(), c.get(2)?.as_str())))
        .collect();
    let mut out = Vec::new();
    for c in mr_re.captures_iter(main) {
        let id = c.get(1).map_or("", |m| m.as_str());
        let path = paths
            .get(id)
            .ok_or_else(|| format!("route id {id} has no path in {main}"))?;
        for (i, m) in methods.iter().enumerate() {
            let set = c.get(i + 2).is_some_and(|e| e.as_str() != "None");
            if set && *m != "head" {
                out.push((m.to_uppercase(), path.to_string()));
            }
        }
    }
    if out.is_empty() || out.len() < paths.len() {
        return Err(format!(
            "could not read the routes from the router's Debug output (axum changed it?): {} paths, {} routes",
            paths.len(),
            out.len()
        ));
    }
    out.sort();
    Ok(out)
}

/// The (method, path template) pairs of the description.
pub fn documented_routes(doc: &utoipa::openapi::OpenApi) -> Vec<Route> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if op.is_some() {
                out.push((m.to_string(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{publisher, BuildContext, Published};
    use crate::store::feed;
    use crate::store::sqlite::SqliteStore;

    fn app(dir: &tempfile::TempDir) -> AdminState {
        let cfg = Config::default();
        let (_relay_tx, relay_rx) = feed::channel();
        let store = SqliteStore::open(dir.path().join("objects.db")).unwrap();
        let published = Arc::new(Published::new(
            &State::default(),
            BuildContext::from_config(&cfg),
        ));
        let served = publisher::spawn(published, State::default(), 0, relay_rx);
        let (_, applied) = feed::channel();
        Inner::new(
            cfg,
            Arc::new(store),
            State::default(),
            served,
            applied,
            8080,
            crate::telemetry::reports::Stats::new(None),
        )
    }

    /// What the router serves and the description lists differ by these.
    fn differences(r: &Router) -> (Vec<Route>, Vec<Route>) {
        let served = served_routes(r).unwrap();
        let documented = documented_routes(&description());
        let undocumented = served
            .iter()
            .filter(|x| !documented.contains(x))
            .cloned()
            .collect();
        let unserved = documented
            .iter()
            .filter(|x| !served.contains(x))
            .cloned()
            .collect();
        (undocumented, unserved)
    }

    #[tokio::test]
    async fn router_and_description_agree() {
        let dir = tempfile::tempdir().unwrap();
        let r = router(app(&dir));
        let served = served_routes(&r).unwrap();
        // The reading of the route table is not vacuous.
        assert!(served.len() > 60, "{served:?}");
        assert!(served.contains(&("DELETE".into(), "/v1/apis/{api_id}".into())));
        assert!(served.contains(&(
            "PUT".into(),
            "/v1/apis/{api_id}/stages/{stage_name}/config".into()
        )));
        let (undocumented, unserved) = differences(&r);
        assert!(
            undocumented.is_empty(),
            "served but not in the description: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in the description but not served: {unserved:?}"
        );
    }

    /// The comparison catches a route added without its description (and
    /// a method added to a documented path).
    #[tokio::test]
    async fn an_undocumented_route_is_caught() {
        async fn extra() {}
        let dir = tempfile::tempdir().unwrap();
        let r = router(app(&dir))
            .route("/v1/apis/{api_id}/undocumented", axum::routing::get(extra))
            .route(
                "/v1/functions/{function_id}/x",
                axum::routing::post(extra).delete(extra),
            );
        let (undocumented, unserved) = differences(&r);
        assert_eq!(
            undocumented,
            vec![
                (
                    "DELETE".to_string(),
                    "/v1/functions/{function_id}/x".to_string()
                ),
                (
                    "GET".to_string(),
                    "/v1/apis/{api_id}/undocumented".to_string()
                ),
                (
                    "POST".to_string(),
                    "/v1/functions/{function_id}/x".to_string()
                ),
            ]
        );
        assert!(unserved.is_empty(), "{unserved:?}");
    }

    #[test]
    fn every_operation_has_a_unique_id_errors_and_its_path_parameters() {
        let doc = description();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.put, &item.delete]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(ids.insert(id.clone()), "operation id {id:?} twice");
                let params: Vec<&str> = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| p.parameter_in == ParameterIn::Path)
                    .map(|p| p.name.as_str())
                    .collect();
                for name in path_params(path) {
                    assert!(params.contains(&name.as_str()), "{path}: {name} undeclared");
                }
                if path != PATH {
                    assert!(op.responses.responses.contains_key("401"), "{path}");
                    assert!(op.responses.responses.contains_key("500"), "{path}");
                }
            }
        }
    }
}
