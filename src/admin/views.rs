//! Management response bodies, with the field names of the v1.2 reference.
//!
//! Every body is a struct that derives both `Serialize` (what is sent) and
//! `utoipa::ToSchema` (what `GET /v1/openapi.json` says is sent), so the
//! description cannot drift from the answers. `deny_unknown_fields` makes
//! the schema closed (`additionalProperties: false`); an `Option` field
//! that is always sent (as `null` when empty) is marked `required`, one
//! that is left out when empty has `skip_serializing_if`. Schema names are
//! the reference's model names where it has one (`ApiListResponse`,
//! `StageDetail`...). Fields are declared in the order the hand-built JSON
//! had them (alphabetical), so the bytes sent did not change.

use super::Inner;
use crate::snapshot::{method_srn, BuildContext};
use crate::store::model;
use crate::store::ApiState;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

// ----- enumerations shown as strings ------------------------------------

/// `Active` (a stage serves it), `Canary` (a stage's canary serves it),
/// `Inactive`.
#[derive(Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentStatus {
    Active,
    Canary,
    Inactive,
}

/// A PrivateLink endpoint's status (the user guide's names).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum PrivateLinkStatus {
    Requesting,
    Active,
    Rejected,
    Canceled,
    Disconnected,
    Error,
}

/// `GET /`: the API versions.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionListResponse {
    pub versions: Vec<Version>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Version {
    #[schema(example = "1.2")]
    pub version: &'static str,
    #[schema(pattern = "^(CURRENT|DEPRECATED)$")]
    pub status: &'static str,
    /// YYYYMMDD; null for the current version.
    #[schema(required = true, pattern = r"^\d{8}$")]
    pub supported_until: Option<&'static str>,
}

// ----- APIs -----------------------------------------------------------

/// A tag of an API.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApiTag)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// An API (the reference's `Api` / `ApiDetail`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub account_id: String,
    pub created_at: String,
    pub description: String,
    #[schema(required = true)]
    pub dns_record_status: Option<&'static str>,
    #[schema(value_type = super::openapi::EndpointType)]
    pub endpoint_type: &'static str,
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub tags: Vec<Tag>,
    /// Extension: a PRIVATE API is a PrivateLink service; its id is what a
    /// consumer's Create PrivateLink Endpoint names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privatelink_service_id: Option<String>,
}

/// `202` of Create API.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiCreateResponse {
    pub description: String,
    pub id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiListResponse {
    pub apis: Vec<Api>,
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiShowResponse {
    pub api: Api,
}

pub fn api(a: &model::Api) -> Api {
    Api {
        account_id: a.account_id.clone(),
        created_at: a.created_at.clone(),
        description: a.description.clone(),
        dns_record_status: Some("Active"),
        endpoint_type: a.endpoint_type.as_str(),
        id: a.id.clone(),
        name: a.name.clone(),
        status: "Active",
        tags: a
            .tags
            .iter()
            .map(|t| Tag {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect(),
        privatelink_service_id: a.privatelink_service_id(),
    }
}

// ----- resources and methods ---------------------------------------------

/// A method (the reference's `MethodV1Dot2`; `request_path` is the
/// resource's path).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub api_key_required: bool,
    #[schema(required = true)]
    pub endpoint_url: Option<String>,
    #[schema(required = true)]
    pub function_id: Option<String>,
    #[schema(required = true)]
    pub function_name: Option<String>,
    #[schema(value_type = super::openapi::IntegrationType)]
    pub integration_type: &'static str,
    #[schema(pattern = "^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)$")]
    pub method_type: &'static str,
    #[schema(required = true)]
    pub privatelink_endpoint_id: Option<String>,
    pub query_strings: BTreeMap<String, bool>,
    pub request_headers: BTreeMap<String, bool>,
    #[schema(pattern = "^/")]
    pub request_path: String,
    #[schema(pattern = "^srn:")]
    pub srn: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodListResponse {
    pub methods: Vec<Method>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodShowResponse {
    pub method: Method,
}

/// A resource and its methods (the reference's `ResourceV1Dot2`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    pub methods: Vec<Method>,
    /// Empty for the root resource.
    pub parent_id: String,
    #[schema(pattern = "^/")]
    pub path: String,
    pub path_part: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceCreateResponse {
    pub api_id: String,
    pub id: String,
    pub parent_id: String,
    #[schema(pattern = "^/")]
    pub path: String,
    pub path_part: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceListResponse {
    pub resources: Vec<Resource>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceShowResponse {
    pub resource: Resource,
}

/// `functions`: the registered functions (to name an SCF method's).
pub fn method(
    app: &Inner,
    functions: &crate::snapshot::Functions,
    a: &model::Api,
    m: &model::Method,
    path: &str,
    stage: &str,
) -> Method {
    let function_name = m
        .function_id
        .as_ref()
        .and_then(|id| functions.get(id))
        .filter(|f| f.account_id == a.account_id)
        .map(|f| f.name.clone());
    let ctx = BuildContext::from_config(&app.cfg);
    Method {
        api_key_required: m.api_key_required,
        endpoint_url: m.endpoint_url.clone(),
        function_id: m.function_id.clone(),
        function_name,
        integration_type: m.integration_type.as_str(),
        method_type: m.method_type.as_str(),
        privatelink_endpoint_id: m.privatelink_endpoint_id.clone(),
        query_strings: m.query_strings.clone(),
        request_headers: m.request_headers.clone(),
        request_path: path.to_string(),
        srn: method_srn(
            &ctx,
            &a.account_id,
            &a.id,
            stage,
            m.method_type.as_str(),
            path,
        ),
    }
}

pub fn resource(
    app: &Inner,
    functions: &crate::snapshot::Functions,
    st: &ApiState,
    r: &model::Resource,
) -> Resource {
    let methods: Vec<Method> = match st.api() {
        Some(a) => st
            .methods_of(&r.id)
            .map(|m| method(app, functions, a, m, &r.path, "*"))
            .collect(),
        None => Vec::new(),
    };
    Resource {
        id: r.id.clone(),
        methods,
        parent_id: r.parent_id.clone(),
        path: r.path.clone(),
        path_part: r.path_part.clone(),
    }
}

// ----- access controls ----------------------------------------------------

/// An access control (also the body of `201` of its creation, as the
/// reference's `AccessControlCreateResponse`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessControl {
    pub allowed_ip_addr: Vec<String>,
    pub connected_stages: Vec<String>,
    pub created_at: String,
    pub description: String,
    pub id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessControlListResponse {
    pub access_controls: Vec<AccessControl>,
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessControlShowResponse {
    pub access_control: AccessControl,
}

pub fn access_control(st: &ApiState, ac: &model::AccessControl) -> AccessControl {
    AccessControl {
        allowed_ip_addr: ac.allowed_ip_addr.clone(),
        connected_stages: st
            .stages_of_access_control(&ac.id)
            .map(|s| s.name.clone())
            .collect(),
        created_at: ac.created_at.clone(),
        description: ac.description.clone(),
        id: ac.id.clone(),
        name: ac.name.clone(),
    }
}

// ----- deployments --------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiDeployment {
    pub deployment_date: String,
    pub deployment_id: String,
    pub description: String,
    pub status: DeploymentStatus,
}

/// Of Deploy API.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiDeploymentResponse {
    pub deployment_id: String,
    pub description: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiDeploymentListResponse {
    pub count: usize,
    pub deployments: Vec<ApiDeployment>,
}

pub fn deployment(
    st: &ApiState,
    d: &model::Deployment,
    stage_filter: Option<&str>,
) -> ApiDeployment {
    let active = match stage_filter {
        Some(name) => st.stages.get(name).is_some_and(|s| s.deployment_id == d.id),
        None => st.stages_on_deployment(&d.id).next().is_some(),
    };
    // Extension: the canary deployment of a stage (of the named one).
    let canary = |s: &model::Stage| s.canary.as_ref().is_some_and(|c| c.deployment_id == d.id);
    let canary = match stage_filter {
        Some(name) => st.stages.get(name).is_some_and(canary),
        None => st.stages.values().any(canary),
    };
    ApiDeployment {
        deployment_date: d.created_at.clone(),
        deployment_id: d.id.clone(),
        description: d.description.clone(),
        status: if active {
            DeploymentStatus::Active
        } else if canary {
            DeploymentStatus::Canary
        } else {
            DeploymentStatus::Inactive
        },
    }
}

// ----- stages ---------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInStage {
    pub id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodInStage {
    pub api_key_required: bool,
    #[serde(rename = "type")]
    #[schema(pattern = "^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)$")]
    pub method_type: &'static str,
}

/// A path of the stage's deployment and its methods.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSummary {
    pub methods: Vec<MethodInStage>,
    #[schema(pattern = "^/")]
    pub path: String,
}

/// A canary release on a stage (extension).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCanary {
    pub deployment_id: String,
    #[schema(minimum = 0, maximum = 100)]
    pub percent: f64,
    #[schema(required = true)]
    pub sticky_header: Option<String>,
}

/// Writes the stage fields shared by [`StageDetail`] and [`Stage`] (the
/// list's, which adds `api_summary`), so that both are one definition.
macro_rules! stage_struct {
    ($(#[$attr:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$attr])*
        #[derive(Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub access_control_id: String,
            pub active_deployment: String,
            #[schema(required = true)]
            pub allow_credentials: Option<bool>,
            #[schema(required = true)]
            pub allow_headers: Option<Vec<String>>,
            #[schema(required = true)]
            pub allow_methods: Option<Vec<String>>,
            #[schema(required = true)]
            pub allow_origins: Option<Vec<String>>,
            pub api_id: String,
            pub api_key_required: bool,
            $($extra)*
            /// Extension: a canary release (null: none).
            #[schema(required = true)]
            pub canary: Option<StageCanary>,
            pub cors_enabled: bool,
            pub created_at: String,
            pub deployment_id: String,
            pub description: String,
            #[schema(required = true)]
            pub expose_headers: Option<Vec<String>>,
            /// Extension: credentials (Authorization, the API key header)
            /// are not passed to the integration.
            pub hide_credentials: bool,
            pub invoke_url: String,
            pub ip_restriction_enabled: bool,
            pub jwt_enabled: bool,
            #[schema(required = true)]
            pub max_age: Option<i64>,
            /// Extension: per-method throttles.
            #[schema(value_type = Vec<super::openapi::MethodThrottle>)]
            pub method_throttles: Vec<model::MethodThrottle>,
            pub name: String,
            /// Extension: the stage's throttle (null: none).
            #[schema(required = true, value_type = Option<super::openapi::Throttle>)]
            pub throttle: Option<model::Throttle>,
            pub usage_plan_api_keys: Vec<ApiKeyInStage>,
            #[schema(required = true)]
            pub usage_plan_id: Option<String>,
            #[schema(required = true)]
            pub usage_plan_limit: Option<u64>,
            #[schema(required = true)]
            pub usage_plan_name: Option<String>,
            #[schema(required = true, value_type = Option<super::openapi::QuotaRate>)]
            pub usage_plan_rate: Option<&'static str>,
            /// Extension: stage variables (`${stageVariables.name}`).
            pub variables: BTreeMap<String, String>,
        }
    };
}

stage_struct!(
    /// A stage (the reference's `StageDetailV1Dot1`, with this gateway's
    /// extensions).
    StageDetail {}
);

stage_struct!(
    /// A stage as listed: with `api_summary`, the paths and methods of its
    /// deployment (the reference's `StageV1Dot1`).
    Stage {
        pub api_summary: Vec<ResourceSummary>,
    }
);

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageListResponse {
    pub stages: Vec<Stage>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageShowResponse {
    pub stage: StageDetail,
}

macro_rules! stage_value {
    ($name:ident, $app:expr, $st:expr, $s:expr, $dep:expr, { $($extra:tt)* }) => {{
        let (app, st, s, dep) = ($app, $st, $s, $dep);
        let plan = s
            .usage_plan_id
            .as_ref()
            .and_then(|id| st.usage_plans.get(id));
        $name {
            access_control_id: s.access_control_id.clone(),
            active_deployment: s.activated_at.clone(),
            allow_credentials: s.cors.allow_credentials,
            allow_headers: s.cors.allow_headers.clone(),
            allow_methods: s.cors.allow_methods.clone(),
            allow_origins: s.cors.allow_origins.clone(),
            api_id: s.api_id.clone(),
            api_key_required: dep
                .is_some_and(|d: &model::Deployment| d.methods.iter().any(|m| m.method.api_key_required)),
            $($extra)*
            canary: s.canary.as_ref().map(|c| StageCanary {
                deployment_id: c.deployment_id.clone(),
                percent: c.percent,
                sticky_header: c.sticky_header.clone(),
            }),
            cors_enabled: s.cors.cors_enabled,
            created_at: s.created_at.clone(),
            deployment_id: s.deployment_id.clone(),
            description: s.description.clone(),
            expose_headers: s.cors.expose_headers.clone(),
            hide_credentials: s.hide_credentials,
            invoke_url: app.invoke_url(&s.api_id, &s.name),
            ip_restriction_enabled: true,
            jwt_enabled: s.jwt_enabled,
            max_age: s.cors.max_age,
            method_throttles: s.method_throttles.clone(),
            name: s.name.clone(),
            throttle: s.throttle,
            usage_plan_api_keys: s
                .connected_api_keys
                .iter()
                .filter_map(|k| st.api_keys.get(k))
                .map(|k| ApiKeyInStage {
                    id: k.id.clone(),
                    name: k.name.clone(),
                })
                .collect(),
            usage_plan_id: s.usage_plan_id.clone(),
            usage_plan_limit: plan.map(|p| p.limit),
            usage_plan_name: plan.map(|p| p.name.clone()),
            usage_plan_rate: plan.map(|p| p.rate.as_str()),
            variables: s.variables.clone(),
        }
    }};
}

pub fn stage(app: &Inner, st: &ApiState, s: &model::Stage) -> StageDetail {
    let dep = st.deployments.get(&s.deployment_id);
    stage_value!(StageDetail, app, st, s, dep, {})
}

/// A stage as listed, with the summary of its deployment.
pub fn stage_listed(app: &Inner, st: &ApiState, s: &model::Stage) -> Stage {
    let dep = st.deployments.get(&s.deployment_id);
    let mut by_path: BTreeMap<&str, Vec<MethodInStage>> = BTreeMap::new();
    if let Some(d) = dep {
        for p in &d.paths {
            by_path.entry(p.as_str()).or_default();
        }
        for m in &d.methods {
            by_path
                .entry(m.path.as_str())
                .or_default()
                .push(MethodInStage {
                    api_key_required: m.method.api_key_required,
                    method_type: m.method.method_type.as_str(),
                });
        }
    }
    let api_summary = by_path
        .into_iter()
        .map(|(p, methods)| ResourceSummary {
            methods,
            path: p.to_string(),
        })
        .collect();
    stage_value!(Stage, app, st, s, dep, { api_summary, })
}

// ----- auths ----------------------------------------------------------------

/// Extension: the external issuer whose tokens an auth accepts.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerView {
    pub issuer: String,
    #[schema(required = true)]
    pub audience: Option<String>,
    /// `inline`, `file:<name>` or the URL.
    pub jwks_source: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[schema(pattern = r"^JWT\(JSON WEB Token\)$")]
    pub auth_method: &'static str,
    pub connected_stages: Vec<String>,
    pub expired_at: String,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_issuer: Option<ExternalIssuerView>,
}

/// `201` of Create Auth: the token (shown once; null for an external
/// issuer's auth, which mints none) and the auth's id.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthCreateResponse {
    #[schema(required = true)]
    pub access_token: Option<String>,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthListResponse {
    pub auths: Vec<Auth>,
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthShowResponse {
    pub auth: Auth,
}

pub fn auth(a: &model::Auth) -> Auth {
    Auth {
        auth_method: "JWT(JSON WEB Token)",
        connected_stages: a.connected_stages.clone(),
        expired_at: a.expired_at.clone(),
        id: a.id.clone(),
        name: a.name.clone(),
        external_issuer: a.external.as_ref().map(|x| ExternalIssuerView {
            issuer: x.issuer.clone(),
            audience: x.audience.clone(),
            jwks_source: x.jwks_source.clone(),
        }),
    }
}

// ----- usage plans and API keys ----------------------------------------------

/// An API key; `key` is its value.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub created_at: String,
    pub description: String,
    pub id: String,
    pub key: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyListResponse {
    pub api_keys: Vec<ApiKey>,
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyShowResponse {
    pub api_key: ApiKey,
}

/// A usage plan as listed.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePlan {
    /// The names of its API keys.
    pub connected_api_keys: Vec<String>,
    pub created_at: String,
    pub description: String,
    pub id: String,
    #[schema(minimum = 1, maximum = 2000000000)]
    pub limit: u64,
    pub name: String,
    #[schema(value_type = super::openapi::QuotaRate)]
    pub rate: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanDetail {
    pub api_keys: Vec<ApiKey>,
    pub created_at: String,
    pub created_by_id: String,
    pub created_by_name: String,
    pub description: String,
    pub id: String,
    #[schema(minimum = 1, maximum = 2000000000)]
    pub limit: u64,
    pub modified_at: String,
    pub modified_by_id: String,
    pub modified_by_name: String,
    pub name: String,
    #[schema(value_type = super::openapi::QuotaRate)]
    pub rate: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanListResponse {
    pub count: usize,
    pub usage_plans: Vec<UsagePlan>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanShowResponse {
    pub usage_plan: UsagePlanDetail,
}

pub fn api_key(k: &model::ApiKey) -> ApiKey {
    ApiKey {
        created_at: k.created_at.clone(),
        description: k.description.clone(),
        id: k.id.clone(),
        key: k.key.clone(),
        name: k.name.clone(),
    }
}

pub fn usage_plan_detail(a: &ApiState, p: &model::UsagePlan) -> UsagePlanDetail {
    UsagePlanDetail {
        api_keys: a.keys_of_plan(&p.id).map(api_key).collect(),
        created_at: p.created_at.clone(),
        created_by_id: p.created_by.clone(),
        created_by_name: p.created_by.clone(),
        description: p.description.clone(),
        id: p.id.clone(),
        limit: p.limit,
        modified_at: p.modified_at.clone(),
        modified_by_id: p.modified_by.clone(),
        modified_by_name: p.modified_by.clone(),
        name: p.name.clone(),
        rate: p.rate.as_str(),
    }
}

pub fn usage_plan(a: &ApiState, p: &model::UsagePlan) -> UsagePlan {
    UsagePlan {
        connected_api_keys: a.keys_of_plan(&p.id).map(|k| k.name.clone()).collect(),
        created_at: p.created_at.clone(),
        description: p.description.clone(),
        id: p.id.clone(),
        limit: p.limit,
        name: p.name.clone(),
        rate: p.rate.as_str(),
    }
}

// ----- resource policies (extension) --------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePolicy {
    pub api_id: String,
    /// The IAM-style policy document, as stored.
    #[schema(value_type = Object)]
    pub policy_document: serde_json::Value,
    pub created_at: String,
    pub modified_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePolicyShowResponse {
    pub resource_policy: ResourcePolicy,
}

pub fn resource_policy(p: &model::ResourcePolicy) -> ResourcePolicyShowResponse {
    ResourcePolicyShowResponse {
        resource_policy: ResourcePolicy {
            api_id: p.api_id.clone(),
            policy_document: p.document.clone(),
            created_at: p.created_at.clone(),
            modified_at: p.modified_at.clone(),
        },
    }
}

// ----- Cloud Functions (extension) ------------------------------------------------

/// A registered function (its auth header's value is never shown).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub id: String,
    pub name: String,
    pub url: String,
    pub description: String,
    #[schema(required = true)]
    pub timeout_ms: Option<u64>,
    pub created_at: String,
    pub modified_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionListResponse {
    pub functions: Vec<Function>,
    pub count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionShowResponse {
    pub function: Function,
}

pub fn function(f: &model::Function) -> Function {
    Function {
        id: f.id.clone(),
        name: f.name.clone(),
        url: f.url.clone(),
        description: f.description.clone(),
        timeout_ms: f.timeout_ms,
        created_at: f.created_at.clone(),
        modified_at: f.modified_at.clone(),
    }
}

// ----- PrivateLink endpoints (extension) ----------------------------------------------

/// As listed (the reference's `PrivateLinkEndpoint`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpoint {
    pub created_at: String,
    pub id: String,
    pub name: String,
    pub privatelink_service_id: String,
    #[schema(value_type = PrivateLinkStatus)]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpointDetail {
    pub created_at: String,
    pub description: String,
    pub id: String,
    pub name: String,
    pub privatelink_service_id: String,
    #[schema(value_type = PrivateLinkStatus)]
    pub status: &'static str,
}

/// The reference's `PrivateLinkEndpointSummary` (also its
/// `ApiConnectedEndpoint`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpointSummary {
    pub created_at: String,
    pub id: String,
    #[schema(value_type = PrivateLinkStatus)]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpointListResponse {
    pub count: usize,
    pub privatelink_endpoints: Vec<PrivateLinkEndpoint>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpointShowResponse {
    pub privatelink_endpoint: PrivateLinkEndpointDetail,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateLinkEndpointSummaryShowResponse {
    pub privatelink_endpoint: PrivateLinkEndpointSummary,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConnectedEndpointListResponse {
    pub connected_endpoints: Vec<PrivateLinkEndpointSummary>,
    pub count: usize,
}

pub fn privatelink_detail(e: &model::PrivatelinkEndpoint) -> PrivateLinkEndpointDetail {
    PrivateLinkEndpointDetail {
        created_at: e.created_at.clone(),
        description: e.description.clone(),
        id: e.id.clone(),
        name: e.name.clone(),
        privatelink_service_id: e.privatelink_service_id.clone(),
        status: e.status.as_str(),
    }
}

pub fn privatelink_listed(e: &model::PrivatelinkEndpoint) -> PrivateLinkEndpoint {
    PrivateLinkEndpoint {
        created_at: e.created_at.clone(),
        id: e.id.clone(),
        name: e.name.clone(),
        privatelink_service_id: e.privatelink_service_id.clone(),
        status: e.status.as_str(),
    }
}

pub fn privatelink_summary(e: &model::PrivatelinkEndpoint) -> PrivateLinkEndpointSummary {
    PrivateLinkEndpointSummary {
        created_at: e.created_at.clone(),
        id: e.id.clone(),
        status: e.status.as_str(),
    }
}

// ----- custom domain names (extension) --------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainName {
    pub domain_name: String,
    #[schema(required = true)]
    pub certificate_file: Option<String>,
    #[schema(required = true)]
    pub private_key_file: Option<String>,
    pub base_path_mapping_count: usize,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainNameListResponse {
    pub count: usize,
    pub domain_names: Vec<DomainName>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainNameShowResponse {
    pub domain_name: DomainName,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasePathMapping {
    pub domain_name: String,
    /// Empty: the whole domain.
    pub base_path: String,
    pub api_id: String,
    pub stage_name: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasePathMappingListResponse {
    pub count: usize,
    pub base_path_mappings: Vec<BasePathMapping>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasePathMappingShowResponse {
    pub base_path_mapping: BasePathMapping,
}

pub fn domain_name(d: &model::DomainName, st: &crate::store::State) -> DomainName {
    DomainName {
        domain_name: d.domain_name.clone(),
        certificate_file: d.certificate_file.clone(),
        private_key_file: d.private_key_file.clone(),
        base_path_mapping_count: st.mappings_of(&d.domain_name).count(),
        created_at: d.created_at.clone(),
    }
}

pub fn base_path_mapping(m: &model::BasePathMapping) -> BasePathMapping {
    BasePathMapping {
        domain_name: m.domain_name.clone(),
        base_path: m.base_path.clone(),
        api_id: m.api_id.clone(),
        stage_name: m.stage_name.clone(),
        created_at: m.created_at.clone(),
    }
}
