//! The durable objects of the gateway, as stored and as the snapshot
//! builder reads them. Management responses are built from these in
//! `admin::views`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointType {
    #[serde(rename = "REGION")]
    Region,
    #[serde(rename = "PRIVATE")]
    Private,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Region => "REGION",
            EndpointType::Private => "PRIVATE",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Api {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: String,
    pub endpoint_type: EndpointType,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    pub id: String,
    pub api_id: String,
    /// "" for the root resource.
    pub parent_id: String,
    /// "/" for the root.
    pub path_part: String,
    /// Full path from the root, e.g. `/users/{user-id}`.
    pub path: String,
    pub created_at: String,
}

impl Resource {
    pub fn is_root(&self) -> bool {
        self.parent_id.is_empty()
    }
    /// Number of path levels including the root.
    pub fn depth(&self) -> usize {
        1 + self.path.split('/').filter(|s| !s.is_empty()).count()
    }
}

/// HTTP verbs a method can be created for (ANY expands to all seven).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MethodType {
    GET,
    POST,
    PUT,
    DELETE,
    PATCH,
    HEAD,
    OPTIONS,
}

impl MethodType {
    pub const ALL: [MethodType; 7] = [
        MethodType::GET,
        MethodType::POST,
        MethodType::PUT,
        MethodType::DELETE,
        MethodType::PATCH,
        MethodType::HEAD,
        MethodType::OPTIONS,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MethodType::GET => "GET",
            MethodType::POST => "POST",
            MethodType::PUT => "PUT",
            MethodType::DELETE => "DELETE",
            MethodType::PATCH => "PATCH",
            MethodType::HEAD => "HEAD",
            MethodType::OPTIONS => "OPTIONS",
        }
    }
    pub fn parse(s: &str) -> Option<MethodType> {
        MethodType::ALL.into_iter().find(|m| m.as_str() == s)
    }
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn from_http(m: &http::Method) -> Option<MethodType> {
        Some(match *m {
            http::Method::GET => MethodType::GET,
            http::Method::POST => MethodType::POST,
            http::Method::PUT => MethodType::PUT,
            http::Method::DELETE => MethodType::DELETE,
            http::Method::PATCH => MethodType::PATCH,
            http::Method::HEAD => MethodType::HEAD,
            http::Method::OPTIONS => MethodType::OPTIONS,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum IntegrationType {
    HTTP,
    SCF,
    PRIVATELINK,
}

impl IntegrationType {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationType::HTTP => "HTTP",
            IntegrationType::SCF => "SCF",
            IntegrationType::PRIVATELINK => "PRIVATELINK",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Method {
    pub api_id: String,
    pub resource_id: String,
    pub method_type: MethodType,
    pub integration_type: IntegrationType,
    pub endpoint_url: Option<String>,
    pub function_id: Option<String>,
    pub privatelink_endpoint_id: Option<String>,
    pub api_key_required: bool,
    #[serde(default)]
    pub query_strings: BTreeMap<String, bool>,
    #[serde(default)]
    pub request_headers: BTreeMap<String, bool>,
    pub created_at: String,
}

impl Method {
    pub fn key(resource_id: &str, t: MethodType) -> String {
        format!("{resource_id}:{}", t.as_str())
    }
}

/// One method as frozen into a deployment, with the resource path it had.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeployedMethod {
    pub path: String,
    pub method: Method,
}

/// An immutable copy of the API's resources and methods.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub api_id: String,
    pub description: String,
    pub created_at: String,
    /// Every resource path at deployment time (also those without methods).
    pub paths: Vec<String>,
    pub methods: Vec<DeployedMethod>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Cors {
    pub cors_enabled: bool,
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<i64>,
    pub allow_credentials: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    pub api_id: String,
    pub name: String,
    pub description: String,
    pub deployment_id: String,
    /// When the current deployment became active.
    pub activated_at: String,
    pub created_at: String,
    #[serde(default)]
    pub cors: Cors,
    #[serde(default)]
    pub jwt_enabled: bool,
    #[serde(default)]
    pub usage_plan_id: Option<String>,
    #[serde(default)]
    pub connected_api_keys: Vec<String>,
    /// The one access control this stage is connected to.
    pub access_control_id: String,
    /// Stage-wide request rate limit (beyond the SCP console, as AWS).
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// Per-method limits, applied on top of the stage-wide one.
    #[serde(default)]
    pub method_throttles: Vec<MethodThrottle>,
    /// Remove the credentials the gateway checked (`x-scp-apikey`, and the
    /// `Authorization` bearer token when JWT is on) before forwarding, as
    /// Kong's `hide_credentials`. Default false: forwarded, as AWS does.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Extension (AWS canarySettings): a share of the stage's requests
    /// goes to another deployment of the API.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Extension (AWS stage variables): `${stageVariables.NAME}` in an
    /// HTTP endpoint URL's path and query, and the function event's
    /// `stageVariables`.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// A canary release on a stage: `percent` (0.0–100.0) of the requests
/// are served by `deployment_id`; with `sticky_header`, a hash of that
/// header's value decides, so one caller stays on one side.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Canary {
    pub deployment_id: String,
    pub percent: f64,
    #[serde(default)]
    pub sticky_header: Option<String>,
}

/// Token bucket: `rate` requests per second refilled, `burst` at most at once.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Throttle {
    pub rate: u32,
    pub burst: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MethodThrottle {
    pub path: String,
    pub method: String,
    pub rate: u32,
    pub burst: u32,
}

impl Stage {
    pub fn key(api_id: &str, name: &str) -> String {
        format!("{api_id}:{name}")
    }
}

pub const DEFAULT_ACCESS_CONTROL_NAME: &str = "Default";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessControl {
    pub id: String,
    pub api_id: String,
    pub name: String,
    pub description: String,
    /// As given by the client (each entry may hold comma-separated values).
    pub allowed_ip_addr: Vec<String>,
    pub is_default: bool,
    pub created_at: String,
}

impl AccessControl {
    /// Every IP/CIDR item, split on commas and trimmed.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        split_items(&self.allowed_ip_addr)
    }
}

/// Split list entries that may each hold comma-separated values
/// (the SCP console sends `["10.0.0.1,10.0.0.2"]`).
pub fn split_items(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Parse an IP or CIDR as the access-control filter uses it.
pub fn parse_ip_item(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
}

/// An external identity provider whose tokens an auth accepts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExternalIssuer {
    pub issuer: String,
    #[serde(default)]
    pub audience: Option<String>,
    /// The JWKS document, as loaded when the auth was created or set.
    pub jwks: serde_json::Value,
    /// Where it was loaded from (`file:...`, a URL, or `inline`).
    #[serde(default)]
    pub jwks_source: String,
}

/// A JWT auth: the gateway mints tokens with its secret, or (beyond the
/// reference) accepts tokens of an external issuer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Auth {
    pub id: String,
    pub api_id: String,
    pub name: String,
    pub expiration_period: i64,
    pub expired_at: String,
    pub expires_at_unix: i64,
    pub created_at: String,
    #[serde(default)]
    pub connected_stages: Vec<String>,
    /// Base64 of the HS256 secret of gateway-minted tokens.
    pub secret: String,
    #[serde(default)]
    pub external: Option<ExternalIssuer>,
}

/// The resource-based policy of an API (one per API).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourcePolicy {
    pub api_id: String,
    pub document: serde_json::Value,
    pub created_at: String,
    pub modified_at: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum QuotaRate {
    Hour,
    Day,
    Month,
}

impl QuotaRate {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaRate::Hour => "hour",
            QuotaRate::Day => "day",
            QuotaRate::Month => "month",
        }
    }
}

/// A usage plan: a quota of `limit` calls per `rate` window for each of
/// its API keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UsagePlan {
    pub id: String,
    pub api_id: String,
    pub name: String,
    pub description: String,
    pub limit: u64,
    pub rate: QuotaRate,
    pub created_at: String,
    pub modified_at: String,
    pub created_by: String,
    pub modified_by: String,
}

/// An API key of a usage plan; `key` is what callers send in `x-scp-apikey`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub api_id: String,
    pub usage_plan_id: String,
    pub name: String,
    pub description: String,
    pub key: String,
    pub created_at: String,
}

/// A header the gateway adds to every call of a function (its value is
/// a secret: stored, never shown).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionAuthHeader {
    pub name: String,
    pub value: String,
}

/// The value is never printed (logs, panics).
impl std::fmt::Debug for FunctionAuthHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionAuthHeader")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A Cloud Function registered with the gateway (an extension beside the
/// SCP operations, standing in for the Cloud Functions service): the
/// endpoint that receives the Lambda proxy event. Account-scoped, not
/// under an API: stored with an empty `api_id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Function {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// None: the integration timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub auth_header: Option<FunctionAuthHeader>,
    pub created_at: String,
    pub modified_at: String,
}

/// Status of a PrivateLink endpoint (the user guide's names; Creating and
/// Deleting are instant here, so never stored).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PrivatelinkStatus {
    Requesting,
    Active,
    Rejected,
    Canceled,
    Disconnected,
    Error,
}

impl PrivatelinkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivatelinkStatus::Requesting => "Requesting",
            PrivatelinkStatus::Active => "Active",
            PrivatelinkStatus::Rejected => "Rejected",
            PrivatelinkStatus::Canceled => "Canceled",
            PrivatelinkStatus::Disconnected => "Disconnected",
            PrivatelinkStatus::Error => "Error",
        }
    }
}

/// A PrivateLink endpoint: the consumer account's entry point to a
/// PrivateLink service (here, a PRIVATE API, possibly of another account).
/// Account-scoped, not under an API: stored with an empty `api_id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrivatelinkEndpoint {
    pub id: String,
    /// The endpoint owner's account.
    pub account_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub privatelink_service_id: String,
    /// The PRIVATE API the service id named at creation.
    pub service_api_id: String,
    pub status: PrivatelinkStatus,
    pub created_at: String,
    pub modified_at: String,
}

/// A custom domain name (an extension beside the SCP operations, after
/// AWS's domain names): requests whose Host is this name are routed by
/// its base path mappings. Account-scoped, not under an API: stored with
/// an empty `api_id`; the name itself is the key (unique across accounts).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DomainName {
    /// Lower case, no trailing dot.
    pub domain_name: String,
    pub account_id: String,
    /// Certificate chain (PEM), a name under `tls.cert_dir`.
    #[serde(default)]
    pub certificate_file: Option<String>,
    /// Its private key (PEM), a name under `tls.cert_dir`.
    #[serde(default)]
    pub private_key_file: Option<String>,
    pub created_at: String,
}

/// A base path of a custom domain mapped to a stage of an API.
/// Account-scoped (its domain's): stored with an empty `api_id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BasePathMapping {
    pub domain_name: String,
    /// One path segment, or "" for the requests no other mapping takes.
    pub base_path: String,
    pub account_id: String,
    pub api_id: String,
    pub stage_name: String,
    pub created_at: String,
}

impl BasePathMapping {
    /// `{domain}/{base path}` (a domain name holds no `/`).
    pub fn key(domain_name: &str, base_path: &str) -> String {
        format!("{domain_name}/{base_path}")
    }
}

impl Api {
    /// The PrivateLink service id of a PRIVATE API: derived from its id
    /// (32 hex characters), so nothing new is stored on the API.
    pub fn privatelink_service_id(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        if self.endpoint_type != EndpointType::Private {
            return None;
        }
        let d = Sha256::digest(format!("privatelink-service:{}", self.id).as_bytes());
        Some(d.iter().take(16).map(|b| format!("{b:02x}")).collect())
    }
}

/// Every stored object, tagged by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Entity {
    Api(Api),
    Resource(Resource),
    Method(Method),
    Deployment(Deployment),
    Stage(Stage),
    AccessControl(AccessControl),
    Auth(Auth),
    ResourcePolicy(ResourcePolicy),
    UsagePlan(UsagePlan),
    ApiKey(ApiKey),
    Function(Function),
    PrivatelinkEndpoint(PrivatelinkEndpoint),
    DomainName(DomainName),
    BasePathMapping(BasePathMapping),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Api,
    Resource,
    Method,
    Deployment,
    Stage,
    AccessControl,
    Auth,
    ResourcePolicy,
    UsagePlan,
    ApiKey,
    Function,
    PrivatelinkEndpoint,
    DomainName,
    BasePathMapping,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Function,
        Kind::PrivatelinkEndpoint,
        Kind::UsagePlan,
        Kind::ApiKey,
        Kind::Api,
        Kind::Resource,
        Kind::Method,
        Kind::Deployment,
        Kind::Stage,
        Kind::AccessControl,
        Kind::Auth,
        Kind::ResourcePolicy,
        Kind::DomainName,
        Kind::BasePathMapping,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::Resource => "resource",
            Kind::Method => "method",
            Kind::Deployment => "deployment",
            Kind::Stage => "stage",
            Kind::AccessControl => "access_control",
            Kind::Auth => "auth",
            Kind::ResourcePolicy => "resource_policy",
            Kind::UsagePlan => "usage_plan",
            Kind::ApiKey => "api_key",
            Kind::Function => "function",
            Kind::PrivatelinkEndpoint => "privatelink_endpoint",
            Kind::DomainName => "domain_name",
            Kind::BasePathMapping => "base_path_mapping",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Entity {
    pub fn kind(&self) -> Kind {
        match self {
            Entity::Api(_) => Kind::Api,
            Entity::Resource(_) => Kind::Resource,
            Entity::Method(_) => Kind::Method,
            Entity::Deployment(_) => Kind::Deployment,
            Entity::Stage(_) => Kind::Stage,
            Entity::AccessControl(_) => Kind::AccessControl,
            Entity::Auth(_) => Kind::Auth,
            Entity::ResourcePolicy(_) => Kind::ResourcePolicy,
            Entity::UsagePlan(_) => Kind::UsagePlan,
            Entity::ApiKey(_) => Kind::ApiKey,
            Entity::Function(_) => Kind::Function,
            Entity::PrivatelinkEndpoint(_) => Kind::PrivatelinkEndpoint,
            Entity::DomainName(_) => Kind::DomainName,
            Entity::BasePathMapping(_) => Kind::BasePathMapping,
        }
    }
    /// Unique key within its kind.
    pub fn key(&self) -> String {
        match self {
            Entity::Api(a) => a.id.clone(),
            Entity::Resource(r) => r.id.clone(),
            Entity::Method(m) => Method::key(&m.resource_id, m.method_type),
            Entity::Deployment(d) => d.id.clone(),
            Entity::Stage(s) => Stage::key(&s.api_id, &s.name),
            Entity::AccessControl(a) => a.id.clone(),
            Entity::Auth(a) => a.id.clone(),
            Entity::ResourcePolicy(p) => p.api_id.clone(),
            Entity::UsagePlan(p) => p.id.clone(),
            Entity::ApiKey(k) => k.id.clone(),
            Entity::Function(f) => f.id.clone(),
            Entity::PrivatelinkEndpoint(e) => e.id.clone(),
            Entity::DomainName(d) => d.domain_name.clone(),
            Entity::BasePathMapping(m) => BasePathMapping::key(&m.domain_name, &m.base_path),
        }
    }
    pub fn api_id(&self) -> &str {
        match self {
            Entity::Api(a) => &a.id,
            Entity::Resource(r) => &r.api_id,
            Entity::Method(m) => &m.api_id,
            Entity::Deployment(d) => &d.api_id,
            Entity::Stage(s) => &s.api_id,
            Entity::AccessControl(a) => &a.api_id,
            Entity::Auth(a) => &a.api_id,
            Entity::ResourcePolicy(p) => &p.api_id,
            Entity::UsagePlan(p) => &p.api_id,
            Entity::ApiKey(k) => &k.api_id,
            // Not under an API.
            Entity::Function(_) | Entity::PrivatelinkEndpoint(_) => "",
            Entity::DomainName(_) | Entity::BasePathMapping(_) => "",
        }
    }
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Entity::Api(x) => serde_json::to_string(x),
            Entity::Resource(x) => serde_json::to_string(x),
            Entity::Method(x) => serde_json::to_string(x),
            Entity::Deployment(x) => serde_json::to_string(x),
            Entity::Stage(x) => serde_json::to_string(x),
            Entity::AccessControl(x) => serde_json::to_string(x),
            Entity::Auth(x) => serde_json::to_string(x),
            Entity::ResourcePolicy(x) => serde_json::to_string(x),
            Entity::UsagePlan(x) => serde_json::to_string(x),
            Entity::ApiKey(x) => serde_json::to_string(x),
            Entity::Function(x) => serde_json::to_string(x),
            Entity::PrivatelinkEndpoint(x) => serde_json::to_string(x),
            Entity::DomainName(x) => serde_json::to_string(x),
            Entity::BasePathMapping(x) => serde_json::to_string(x),
        }
    }
    pub fn from_json(kind: Kind, body: &str) -> serde_json::Result<Entity> {
        Ok(match kind {
            Kind::Api => Entity::Api(serde_json::from_str(body)?),
            Kind::Resource => Entity::Resource(serde_json::from_str(body)?),
            Kind::Method => Entity::Method(serde_json::from_str(body)?),
            Kind::Deployment => Entity::Deployment(serde_json::from_str(body)?),
            Kind::Stage => Entity::Stage(serde_json::from_str(body)?),
            Kind::AccessControl => Entity::AccessControl(serde_json::from_str(body)?),
            Kind::Auth => Entity::Auth(serde_json::from_str(body)?),
            Kind::ResourcePolicy => Entity::ResourcePolicy(serde_json::from_str(body)?),
            Kind::UsagePlan => Entity::UsagePlan(serde_json::from_str(body)?),
            Kind::ApiKey => Entity::ApiKey(serde_json::from_str(body)?),
            Kind::Function => Entity::Function(serde_json::from_str(body)?),
            Kind::PrivatelinkEndpoint => Entity::PrivatelinkEndpoint(serde_json::from_str(body)?),
            Kind::DomainName => Entity::DomainName(serde_json::from_str(body)?),
            Kind::BasePathMapping => Entity::BasePathMapping(serde_json::from_str(body)?),
        })
    }
}

/// One change of a committed write.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    Put(Entity),
    Delete {
        kind: Kind,
        key: String,
        api_id: String,
    },
    /// Remove the API and everything under it.
    DeleteApi(String),
}

impl Change {
    /// Whether the change is to a custom domain or a base path mapping
    /// (the snapshot's domain map is rebuilt after it).
    pub fn touches_domains(&self) -> bool {
        match self {
            Change::Put(e) => matches!(e.kind(), Kind::DomainName | Kind::BasePathMapping),
            Change::Delete { kind, .. } => {
                matches!(kind, Kind::DomainName | Kind::BasePathMapping)
            }
            Change::DeleteApi(_) => false,
        }
    }
    pub fn api_id(&self) -> &str {
        match self {
            Change::Put(e) => e.api_id(),
            Change::Delete { api_id, .. } => api_id,
            Change::DeleteApi(id) => id,
        }
    }
}

/// Current time, RFC 3339 UTC with milliseconds, as the reference shows.
pub fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A new object id: 32 lowercase hex characters.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
