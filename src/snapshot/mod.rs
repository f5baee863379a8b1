//! The routing state of every API as one immutable value, rebuilt from the
//! in-memory [`State`] after every committed change and published with
//! `arc-swap`. A request loads the snapshot once and keeps it to the end.
//! Rebuilding after a change touches only the changed API: the other
//! APIs' compiled routes are shared (`Arc`) with the previous snapshot.
//!
//! Here: the compiled routes and how to build them ([`build_api`]), the
//! published value ([`Published`]: built from the loaded state at start);
//! [`publisher`]: the task that follows the store's change feed and
//! republishes, and the published version writers wait on; [`template`]:
//! upstream URL templates; [`cors`]: compiled CORS settings.
//!
//! May import: config, store (state, model, feed), telemetry (report
//! counters), jwt, policy. Never dataplane or admin.

use crate::config::Config;
use crate::store::model::*;
use crate::store::{ApiState, State};
use crate::telemetry::reports::StageStats;
use arc_swap::ArcSwap;
use http::HeaderValue;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub mod apimap;
pub mod cors;
pub mod publisher;
pub mod template;

pub use apimap::ApiMap;
pub use cors::StageCors;
pub use publisher::{NotPublished, PublishedVersion};

/// A token bucket (stage or method throttle), shared by the snapshots
/// whose settings are the same.
pub type Limiter = governor::DefaultDirectRateLimiter;

pub use template::{PoolKey, Target, TemplateError, UrlTemplate};

/// Maps looked up on every request by client-supplied strings (host,
/// API key): ahash, keyed per process, instead of SipHash.
pub type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// Settings the compiled routes need from the config.
#[derive(Clone)]
pub struct BuildContext {
    pub region: String,
    pub srn_offering: String,
    /// Rate limiters by identity, so a rebuild keeps their buckets.
    pub limiters: Arc<dashmap::DashMap<String, Arc<Limiter>>>,
    /// Report counters (None in benches/tests that do not count).
    pub stats: Option<Arc<crate::telemetry::reports::Stats>>,
    /// Prometheus counters (None: metrics off).
    pub metrics: Option<Arc<crate::telemetry::metrics::Metrics>>,
    /// The private listener's bound address (PRIVATELINK methods whose
    /// endpoint targets a PRIVATE API connect there); None when it is off.
    pub private_addr: Option<std::net::SocketAddr>,
    /// PrivateLink external services (`[[privatelink_services]]`): their
    /// `target` by service id.
    pub external_services: Arc<HashMap<String, String>>,
}

impl BuildContext {
    pub fn from_config(cfg: &Config) -> Self {
        BuildContext {
            region: cfg.srn.region.clone(),
            srn_offering: cfg.srn.offering.clone(),
            limiters: Default::default(),
            stats: None,
            metrics: None,
            private_addr: None,
            external_services: Arc::new(
                cfg.privatelink_services
                    .iter()
                    .map(|p| (p.id.clone(), p.target.clone()))
                    .collect(),
            ),
        }
    }
}

#[derive(Default)]
pub struct Snapshot {
    /// Sharded so that a republish copies only the shards it changes.
    pub apis: ApiMap,
    /// Custom domain names (lower case, no trailing dot) and their base
    /// path mappings; looked up only for hosts not under the invoke domain.
    /// Shared whole with the next snapshot unless a domain changed.
    pub domains: Arc<FastMap<String, Arc<DomainRoutes>>>,
}

/// The base path mappings of one custom domain. Targets are named, not
/// compiled: a request resolves the API and stage in [`Snapshot::apis`],
/// so rebuilding an API never touches the domain map (and a mapping whose
/// API or stage is gone is simply not routable).
#[derive(Debug, Default)]
pub struct DomainRoutes {
    /// By base path (one segment).
    pub paths: FastMap<Box<str>, DomainTarget>,
    /// The "" mapping: every request no other base path takes.
    pub root: Option<DomainTarget>,
}

/// An API stage a base path is mapped to.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainTarget {
    pub api_id: String,
    pub stage_name: String,
}

impl DomainRoutes {
    /// The mapping for a request path (as routed: starting with `/`), and
    /// the path left after its base path (`/` when nothing is left).
    pub fn select<'p>(&self, path: &'p str) -> Option<(&DomainTarget, &'p str)> {
        let rest = path.strip_prefix('/').unwrap_or(path);
        let (first, sub) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !first.is_empty() {
            if let Some(t) = self.paths.get(first) {
                return Some((t, sub));
            }
        }
        self.root.as_ref().map(|t| (t, path))
    }
}

/// The domain map of the snapshot, from the stored domains and mappings.
pub fn build_domains(state: &State) -> FastMap<String, Arc<DomainRoutes>> {
    let mut out: FastMap<String, DomainRoutes> = FastMap::default();
    for d in state.domain_names.keys() {
        out.insert(d.clone(), DomainRoutes::default());
    }
    for m in state.base_path_mappings.values() {
        let Some(routes) = out.get_mut(&m.domain_name) else {
            continue;
        };
        let target = DomainTarget {
            api_id: m.api_id.clone(),
            stage_name: m.stage_name.clone(),
        };
        if m.base_path.is_empty() {
            routes.root = Some(target);
        } else {
            routes
                .paths
                .insert(m.base_path.clone().into_boxed_str(), target);
        }
    }
    out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

pub struct ApiRoutes {
    pub api_id: String,
    pub account_id: String,
    pub endpoint_type: EndpointType,
    /// `srn:{offering}::{account}:{region}::apigateway:api/{api}`.
    pub api_srn: String,
    /// The compiled resource-based policy, if the API has one.
    pub policy: Option<Arc<crate::policy::Policy>>,
    /// Every API key value of the API (to tell unknown from unconnected).
    pub all_keys: std::collections::HashSet<Box<str>, ahash::RandomState>,
    /// PRIVATE APIs: ids of the PrivateLink endpoints that are Active and
    /// target this API (the private listener serves only these); empty
    /// for REGION APIs.
    pub endpoints: std::collections::HashSet<Box<str>, ahash::RandomState>,
    pub stages: FastMap<String, Arc<StageRoutes>>,
}

pub struct StageRoutes {
    pub name: String,
    pub deployment_id: String,
    /// `deployment_id` as the `x-apigw-deployment` answer header.
    pub deployment_header: HeaderValue,
    /// The canary release of the stage, if any: the same stage served by
    /// another deployment (its own router and report counters).
    pub canary: Option<CanaryRoutes>,
    /// The stage variables as the function event's `stageVariables`
    /// (null when there are none).
    pub stage_variables: serde_json::Value,
    pub router: matchit::Router<RouteNode>,
    pub acl: IpAcl,
    pub cors: StageCors,
    /// Token checks when the stage has JWT on (always on PRIVATE APIs).
    pub jwt: Option<Arc<crate::jwt::StageJwt>>,
    /// Report counters of this stage (shared across snapshots).
    pub stats: Option<Arc<StageStats>>,
    /// Prometheus counters of this stage (shared across snapshots, and
    /// with its canary); None when metrics are off.
    pub metrics: Option<Arc<crate::telemetry::metrics::StageMetrics>>,
    /// `srn:...:apigateway:method/{api}/{stage}/`; verb and path follow.
    pub srn_prefix: String,
    /// `"api":…,"stage":…` of its access log lines, rendered once.
    pub log_api_stage: Box<str>,
    /// Keys connected to the stage, by the value callers send.
    pub keys: FastMap<Box<str>, StageKey>,
    pub throttle: Option<Arc<Limiter>>,
    /// Strip the checked credentials before forwarding.
    pub hide_credentials: bool,
    /// (resource path, verb, limiter).
    pub method_throttles: Vec<(String, MethodType, Arc<Limiter>)>,
}

/// Where a share of a stage's requests goes.
pub struct CanaryRoutes {
    pub routes: Arc<StageRoutes>,
    /// Served by the canary when the draw (or the sticky hash), a u32, is
    /// below this (percent of 2^32; 2^32 at 100 %).
    pub threshold: u64,
    /// The header whose value's hash decides, instead of a random draw.
    pub sticky: Option<http::HeaderName>,
}

impl StageRoutes {
    /// The routes that serve this request: the canary's for its share,
    /// else these. One random draw, or one hash of the sticky header's
    /// value (a request without it draws at random); no allocation.
    #[inline]
    pub fn serving<'a>(self: &'a Arc<Self>, headers: &http::HeaderMap) -> &'a Arc<StageRoutes> {
        let Some(c) = &self.canary else { return self };
        let draw = match c.sticky.as_ref().and_then(|h| headers.get(h)) {
            Some(v) => sticky_hash(v.as_bytes()),
            None => rand::random::<u32>(),
        };
        if u64::from(draw) < c.threshold {
            &c.routes
        } else {
            self
        }
    }
}

/// A stable 32-bit hash of a sticky header's value (FNV-1a, then the
/// splitmix64 finalizer so every bit depends on every byte): the same
/// caller lands on the same side across snapshots and restarts.
pub fn sticky_hash(bytes: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 32) as u32
}

/// `percent` (0–100) of the u32 draws: the canary threshold.
pub fn canary_threshold(percent: f64) -> u64 {
    let p = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    ((p / 100.0) * 4_294_967_296.0).round() as u64
}

/// The stage compiled again on its canary deployment: the stage's
/// settings, the canary's routes and report counters.
#[allow(clippy::too_many_arguments)]
fn add_canary(
    api: &ApiState,
    api_id: &str,
    stage: &Stage,
    primary: &mut StageRoutes,
    functions: &Functions,
    links: &Links<'_>,
    ctx: &BuildContext,
) {
    let Some(c) = &stage.canary else {
        return;
    };
    let Some(dep) = api.deployments.get(&c.deployment_id) else {
        tracing::warn!(stage = %stage.name, deployment = %c.deployment_id,
            "canary deployment not found: the stage serves its active deployment only");
        return;
    };
    let stats = ctx.stats.as_ref().map(|s| {
        s.stage(
            api_id,
            &crate::telemetry::reports::canary_stage(&stage.name),
        )
    });
    let canary = StageRoutes {
        name: primary.name.clone(),
        deployment_id: dep.id.clone(),
        deployment_header: deployment_header(&dep.id),
        canary: None,
        stage_variables: primary.stage_variables.clone(),
        router: compile_deployment(
            dep,
            stats.as_deref(),
            functions,
            Some(links),
            &stage.variables,
        ),
        stats,
        metrics: primary.metrics.clone(),
        acl: primary.acl.clone(),
        cors: primary.cors.clone(),
        jwt: primary.jwt.clone(),
        keys: compile_keys(api, stage),
        hide_credentials: primary.hide_credentials,
        throttle: primary.throttle.clone(),
        method_throttles: primary.method_throttles.clone(),
        srn_prefix: primary.srn_prefix.clone(),
        log_api_stage: primary.log_api_stage.clone(),
    };
    primary.canary = Some(CanaryRoutes {
        routes: Arc::new(canary),
        threshold: canary_threshold(c.percent),
        sticky: c
            .sticky_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
    });
}

fn deployment_header(id: &str) -> HeaderValue {
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static(""))
}

fn stage_variables_value(stage: &Stage) -> serde_json::Value {
    if stage.variables.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(stage.variables)
    }
}

/// A key connected to a stage, with its plan's quota.
pub struct StageKey {
    pub key_id: Arc<str>,
    pub limit: u64,
    /// `limit` as the X-RateLimit-Limit header value.
    pub limit_value: http::HeaderValue,
    pub rate: QuotaRate,
}

/// A limiter shared by every snapshot with the same identity.
fn limiter(ctx: &BuildContext, id: String, t: Throttle) -> Arc<Limiter> {
    ctx.limiters
        .entry(id)
        .or_insert_with(|| {
            let rate =
                std::num::NonZeroU32::new(t.rate.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
            let burst =
                std::num::NonZeroU32::new(t.burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
            Arc::new(governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            ))
        })
        .clone()
}

fn compile_keys(api: &ApiState, stage: &Stage) -> FastMap<Box<str>, StageKey> {
    let Some(plan) = stage
        .usage_plan_id
        .as_ref()
        .and_then(|id| api.usage_plans.get(id))
    else {
        return FastMap::default();
    };
    stage
        .connected_api_keys
        .iter()
        .filter_map(|id| api.api_keys.get(id))
        .filter(|k| k.usage_plan_id == plan.id)
        .map(|k| {
            (
                k.key.clone().into_boxed_str(),
                StageKey {
                    key_id: k.id.as_str().into(),
                    limit: plan.limit,
                    limit_value: http::HeaderValue::from(plan.limit),
                    rate: plan.rate,
                },
            )
        })
        .collect()
}

/// One resource path of a deployment.
pub struct RouteNode {
    pub path: String,
    pub methods: [Option<Arc<RouteMethod>>; 7],
    /// Value of the `Allow` header for 405 answers.
    pub allow: HeaderValue,
}

pub struct RouteMethod {
    pub method_type: MethodType,
    pub resource_path: String,
    /// `resource_path` quoted for its access log lines, rendered once.
    pub log_resource_path: Box<str>,
    pub api_key_required: bool,
    /// Query string names marked required (AWS request validation).
    pub required_query: Box<[Arc<str>]>,
    /// Header names marked required, and their names as configured.
    pub required_headers: Box<[(http::HeaderName, Arc<str>)]>,
    pub integration: Integration,
    /// Index of (path, verb) in the stage's report counters.
    pub route_ix: Option<u32>,
}

// Built once per method in the snapshot and read in place: the size of
// the HTTP variant costs nothing per request, a Box would cost a pointer
// chase.
#[allow(clippy::large_enum_variant)]
pub enum Integration {
    Http(UrlTemplate),
    /// A stored integration the gateway refuses to use (answers 502).
    Misconfigured,
    /// A Cloud Function; `None` when the function is not registered (or
    /// its stored url is not usable): answered 502.
    Scf {
        function_id: String,
        function: Option<Arc<FunctionTarget>>,
    },
    /// A PrivateLink endpoint; `target` is None (503
    /// `PrivateLinkUnavailable`) unless the endpoint is Active, of the
    /// method's account, and its service reachable.
    PrivateLink {
        endpoint_id: String,
        target: Option<Arc<PrivateLinkTarget>>,
    },
}

/// Where a PRIVATELINK method's requests go: the URL template (scheme,
/// Host, path) on the service side, and the address actually connected
/// to, with the PROXY v2 header naming the endpoint.
pub struct PrivateLinkTarget {
    pub endpoint_id: String,
    pub tpl: UrlTemplate,
    pub connect: PrivateLinkConnect,
}

/// Where a PrivateLink connection goes.
pub enum PrivateLinkConnect {
    /// This gateway's private listener (the service is a PRIVATE API):
    /// PROXY v2 header with the endpoint TLV first.
    Listener(std::net::SocketAddr),
    /// An external service's `target` (`host:port`), plain.
    External(String),
}

/// What PRIVATELINK methods compile against.
pub struct Links<'a> {
    pub endpoints: &'a Endpoints,
    pub account_id: &'a str,
    pub private_addr: Option<std::net::SocketAddr>,
    pub external_services: &'a HashMap<String, String>,
}

fn compile_privatelink(m: &Method, path: &str, links: Option<&Links<'_>>) -> Integration {
    let endpoint_id = m.privatelink_endpoint_id.clone().unwrap_or_default();
    let target = links.and_then(|l| {
        let e = l.endpoints.get(&endpoint_id)?;
        if e.account_id != l.account_id || e.status != PrivatelinkStatus::Active {
            return None;
        }
        let connect = if e.service_api_id.is_empty() {
            PrivateLinkConnect::External(
                l.external_services.get(&e.privatelink_service_id)?.clone(),
            )
        } else {
            PrivateLinkConnect::Listener(l.private_addr?)
        };
        let url = m.endpoint_url.as_deref().unwrap_or("");
        match UrlTemplate::parse(url) {
            Ok(tpl) => Some(Arc::new(PrivateLinkTarget {
                endpoint_id: endpoint_id.clone(),
                tpl,
                connect,
            })),
            Err(e) => {
                tracing::error!(resource = %path, endpoint_url = %url, error = %e,
                    "PRIVATELINK endpoint_url refused: the method answers 503");
                None
            }
        }
    });
    Integration::PrivateLink {
        endpoint_id,
        target,
    }
}

/// A registered function compiled for the hot path: where to POST the
/// event, with what Host, timeout and auth header.
pub struct FunctionTarget {
    pub id: String,
    pub target: Target,
    pub host: HeaderValue,
    /// None: the integration timeout (also the maximum).
    pub timeout: Option<std::time::Duration>,
    pub auth: Option<(http::HeaderName, HeaderValue)>,
}

/// Compile a registered function; `None` (logged) when its stored url or
/// header cannot be used.
pub fn compile_function(f: &Function) -> Option<FunctionTarget> {
    let tpl = match UrlTemplate::parse(&f.url) {
        Ok(t) if t.params().next().is_none() => t,
        _ => {
            tracing::error!(function = %f.id, "function url refused: its methods answer 502");
            return None;
        }
    };
    let target = tpl.target(|_| None, None)?;
    let auth = match &f.auth_header {
        None => None,
        Some(h) => {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok();
            let mut value = HeaderValue::from_str(&h.value).ok();
            if let Some(v) = value.as_mut() {
                v.set_sensitive(true);
            }
            match name.zip(value) {
                Some(nv) => Some(nv),
                None => {
                    tracing::error!(function = %f.id, "function auth header refused: its methods answer 502");
                    return None;
                }
            }
        }
    };
    Some(FunctionTarget {
        id: f.id.clone(),
        host: tpl.host().clone(),
        target,
        timeout: f.timeout_ms.map(std::time::Duration::from_millis),
        auth,
    })
}

/// The functions registered, by id, as the snapshot builder reads them.
pub type Functions = std::collections::BTreeMap<String, Function>;

/// The allowed source networks of a stage's access control.
#[derive(Clone, Debug, Default)]
pub struct IpAcl {
    nets: Vec<IpNet>,
}

impl IpAcl {
    pub fn new(nets: Vec<IpNet>) -> Self {
        IpAcl { nets }
    }
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Method SRN: `srn:{offering}::{account}:{region}::apigateway:method/{api}/{stage}/{VERB}/{path}`.
pub fn method_srn(
    ctx: &BuildContext,
    account: &str,
    api: &str,
    stage: &str,
    verb: &str,
    path: &str,
) -> String {
    format!(
        "srn:{}::{}:{}::apigateway:method/{}/{}/{}/{}",
        ctx.srn_offering,
        account,
        ctx.region,
        api,
        stage,
        verb,
        path.trim_start_matches('/')
    )
}

fn compile_method(
    m: &Method,
    path: &str,
    stats: Option<&StageStats>,
    functions: &Functions,
    links: Option<&Links<'_>>,
    vars: &std::collections::BTreeMap<String, String>,
) -> RouteMethod {
    let integration = match m.integration_type {
        IntegrationType::HTTP => {
            let url = m.endpoint_url.as_deref().unwrap_or("");
            match UrlTemplate::parse(url).map(|t| t.with_stage_variables(vars)) {
                Ok(Some(t)) => Integration::Http(t),
                Ok(None) => {
                    tracing::error!(resource = %path, method = %m.method_type.as_str(), endpoint_url = %url,
                        "endpoint_url not valid with the stage's variables: the method answers 502 IntegrationMisconfigured");
                    Integration::Misconfigured
                }
                Err(e) => {
                    // Stored before endpoint URLs were checked this way
                    // (an older database): never forwarded.
                    tracing::error!(
                        resource = %path,
                        method = %m.method_type.as_str(),
                        endpoint_url = %url,
                        error = %e,
                        "endpoint_url refused: the method answers 502 IntegrationMisconfigured"
                    );
                    Integration::Misconfigured
                }
            }
        }
        IntegrationType::SCF => {
            let function_id = m.function_id.clone().unwrap_or_default();
            let function = functions
                .get(&function_id)
                .and_then(compile_function)
                .map(Arc::new);
            if function.is_none() {
                tracing::warn!(resource = %path, method = %m.method_type.as_str(), function = %function_id,
                    "function not registered: the method answers 502 IntegrationMisconfigured");
            }
            Integration::Scf {
                function_id,
                function,
            }
        }
        IntegrationType::PRIVATELINK => compile_privatelink(m, path, links),
    };
    RouteMethod {
        method_type: m.method_type,
        resource_path: path.to_string(),
        log_resource_path: crate::telemetry::access_log::json_quoted(path),
        api_key_required: m.api_key_required,
        required_query: m
            .query_strings
            .iter()
            .filter(|(_, req)| **req)
            .map(|(n, _)| Arc::from(n.as_str()))
            .collect(),
        required_headers: m
            .request_headers
            .iter()
            .filter(|(_, req)| **req)
            .filter_map(|(n, _)| {
                Some((
                    http::HeaderName::from_bytes(n.as_bytes()).ok()?,
                    Arc::from(n.as_str()),
                ))
            })
            .collect(),
        integration,
        route_ix: stats.map(|s| s.route_index(path, m.method_type.as_str())),
    }
}

/// Compile a deployment into a trie of its paths.
pub fn compile_deployment(
    dep: &Deployment,
    stats: Option<&StageStats>,
    functions: &Functions,
    links: Option<&Links<'_>>,
    vars: &std::collections::BTreeMap<String, String>,
) -> matchit::Router<RouteNode> {
    let mut by_path: std::collections::BTreeMap<&str, [Option<Arc<RouteMethod>>; 7]> =
        Default::default();
    for dm in &dep.methods {
        let slot = by_path.entry(dm.path.as_str()).or_default();
        slot[dm.method.method_type.index()] = Some(Arc::new(compile_method(
            &dm.method, &dm.path, stats, functions, links, vars,
        )));
    }
    let mut router = matchit::Router::new();
    for (path, methods) in by_path {
        let allow = MethodType::ALL
            .iter()
            .filter(|t| methods[t.index()].is_some())
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let node = RouteNode {
            path: path.to_string(),
            methods,
            allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
        };
        if let Err(e) = router.insert(path, node) {
            tracing::warn!(deployment = %dep.id, %path, error = %e, "route not served");
        }
    }
    router
}

fn compile_acl(api: &ApiState, stage: &Stage) -> IpAcl {
    let Some(ac) = api.access_controls.get(&stage.access_control_id) else {
        return IpAcl::default();
    };
    IpAcl::new(ac.items().filter_map(parse_ip_item).collect())
}

/// The token checks of a stage: the auths connected to it. A stage whose
/// keys cannot be compiled accepts no token (fails closed).
fn compile_jwt(api: &ApiState, stage: &Stage) -> crate::jwt::StageJwt {
    use base64::Engine;
    let mut gateway = Vec::new();
    let mut external = Vec::new();
    for a in api
        .auths
        .values()
        .filter(|a| a.connected_stages.contains(&stage.name))
    {
        match &a.external {
            Some(x) => external.push(crate::jwt::IssuerKeys {
                auth_id: a.id.clone(),
                issuer: x.issuer.clone(),
                audience: x.audience.clone(),
                jwks: x.jwks.clone(),
            }),
            None => match base64::engine::general_purpose::STANDARD.decode(&a.secret) {
                Ok(secret) => gateway.push(crate::jwt::GatewayKey {
                    auth_id: a.id.clone(),
                    secret,
                    expires_at: a.expires_at_unix,
                }),
                Err(e) => tracing::warn!(auth = %a.id, error = %e, "auth secret unreadable"),
            },
        }
    }
    match crate::jwt::StageJwt::compile(&stage.api_id, gateway, external) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(stage = %stage.name, error = %e, "JWT keys not usable; stage accepts no token");
            crate::jwt::StageJwt::compile(&stage.api_id, Vec::new(), Vec::new())
                .unwrap_or_else(|_| unreachable!("an empty key set always compiles"))
        }
    }
}

/// The PrivateLink endpoints, by id, as the snapshot builder reads them.
pub type Endpoints = std::collections::BTreeMap<String, PrivatelinkEndpoint>;

/// Compile one API; `None` when it has no API object.
pub fn build_api(
    api: &ApiState,
    functions: &Functions,
    endpoints: &Endpoints,
    ctx: &BuildContext,
) -> Option<Arc<ApiRoutes>> {
    let meta = api.api()?;
    let private = meta.endpoint_type == EndpointType::Private;
    let policy = api.resource_policy.as_ref().map(|p| {
        crate::policy::compile(&p.document).unwrap_or_else(|e| {
            tracing::warn!(api = %meta.id, error = %e, "stored policy does not compile; denying all");
            crate::policy::Policy::deny_all()
        })
    });
    let links = Links {
        endpoints,
        account_id: &meta.account_id,
        private_addr: ctx.private_addr,
        external_services: &ctx.external_services,
    };
    let mut stages = FastMap::with_capacity_and_hasher(api.stages.len(), Default::default());
    for stage in api.stages.values() {
        let Some(dep) = api.deployments.get(&stage.deployment_id) else {
            continue;
        };
        let stats = ctx.stats.as_ref().map(|s| s.stage(&meta.id, &stage.name));
        stages.insert(
            stage.name.clone(),
            Arc::new(StageRoutes {
                name: stage.name.clone(),
                deployment_id: dep.id.clone(),
                deployment_header: deployment_header(&dep.id),
                canary: None,
                stage_variables: stage_variables_value(stage),
                router: compile_deployment(
                    dep,
                    stats.as_deref(),
                    functions,
                    Some(&links),
                    &stage.variables,
                ),
                stats,
                metrics: ctx.metrics.as_ref().map(|m| m.stage(&meta.id, &stage.name)),
                acl: compile_acl(api, stage),
                cors: StageCors::compile(&stage.cors),
                jwt: (stage.jwt_enabled || private).then(|| Arc::new(compile_jwt(api, stage))),
                keys: compile_keys(api, stage),
                hide_credentials: stage.hide_credentials,
                throttle: stage.throttle.map(|t| {
                    limiter(
                        ctx,
                        format!("{}/{}/{}/{}", meta.id, stage.name, t.rate, t.burst),
                        t,
                    )
                }),
                method_throttles: stage
                    .method_throttles
                    .iter()
                    .filter_map(|m| {
                        let verb = MethodType::parse(&m.method)?;
                        let t = Throttle {
                            rate: m.rate,
                            burst: m.burst,
                        };
                        let id = format!(
                            "{}/{}/{}/{}/{}/{}",
                            meta.id, stage.name, m.method, m.path, m.rate, m.burst
                        );
                        Some((m.path.clone(), verb, limiter(ctx, id, t)))
                    })
                    .collect(),
                srn_prefix: format!(
                    "srn:{}::{}:{}::apigateway:method/{}/{}/",
                    ctx.srn_offering, meta.account_id, ctx.region, meta.id, stage.name
                ),
                log_api_stage: crate::telemetry::access_log::api_stage_json(&meta.id, &stage.name),
            }),
        );
        // The canary: the stage compiled again on its deployment.
        if let Some(primary) = stages.get_mut(&stage.name).and_then(Arc::get_mut) {
            add_canary(api, &meta.id, stage, primary, functions, &links, ctx);
        }
    }
    Some(Arc::new(ApiRoutes {
        api_id: meta.id.clone(),
        account_id: meta.account_id.clone(),
        endpoint_type: meta.endpoint_type,
        api_srn: format!(
            "srn:{}::{}:{}::apigateway:api/{}",
            ctx.srn_offering, meta.account_id, ctx.region, meta.id
        ),
        policy: policy.map(Arc::new),
        all_keys: api
            .api_keys
            .values()
            .map(|k| k.key.clone().into_boxed_str())
            .collect(),
        endpoints: if private {
            endpoints
                .values()
                .filter(|e| e.service_api_id == meta.id && e.status == PrivatelinkStatus::Active)
                .map(|e| e.id.clone().into_boxed_str())
                .collect()
        } else {
            Default::default()
        },
        stages,
    }))
}

/// The published snapshot and how to rebuild it.
pub struct Published {
    current: ArcSwap<Snapshot>,
    ctx: BuildContext,
    /// Told the state after every publication that changed custom domains
    /// (the TLS listener's domain certificates follow them).
    on_domains: std::sync::OnceLock<DomainHook>,
}

/// What [`Published::on_domains_changed`] registers.
pub type DomainHook = Box<dyn Fn(&State) + Send + Sync>;

impl Published {
    pub fn new(state: &State, ctx: BuildContext) -> Self {
        let mut snap = Snapshot {
            domains: Arc::new(build_domains(state)),
            ..Default::default()
        };
        for (id, a) in &state.apis {
            if let Some(r) = build_api(a, &state.functions, &state.privatelink_endpoints, &ctx) {
                snap.apis.insert(id.clone(), r);
            }
        }
        if let Some(m) = &ctx.metrics {
            m.snapshot_published(state.version);
        }
        Published {
            current: ArcSwap::from_pointee(snap),
            ctx,
            on_domains: std::sync::OnceLock::new(),
        }
    }

    /// Call `hook` with the state after each publication whose batch
    /// changed a domain name or base path mapping (once only: a second
    /// registration is ignored). It runs on the publisher, before the
    /// writer's answer: keep it short.
    pub fn on_domains_changed(&self, hook: DomainHook) {
        if self.on_domains.set(hook).is_err() {
            tracing::warn!("a domain hook is already registered");
        }
    }

    /// The snapshot now includes this store version (metrics: version
    /// and time of the last publication).
    pub fn mark_published(&self, version: crate::store::Version) {
        if let Some(m) = &self.ctx.metrics {
            m.snapshot_published(version);
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn current(&self) -> &ArcSwap<Snapshot> {
        &self.current
    }

    /// Rebuild the given APIs and publish a new snapshot that shares every
    /// other API's routes with the current one (and every shard of
    /// [`ApiMap`] that holds none of them: the cost does not grow with
    /// the number of APIs). One writer at a time: the
    /// publisher task ([`publisher`]) is the only caller once serving.
    pub fn republish(&self, state: &State, api_ids: &[String]) {
        self.republish_with_domains(state, api_ids, false)
    }

    /// [`Self::republish`], and the domain map rebuilt when `domains`
    /// (else shared with the current snapshot).
    pub fn republish_with_domains(&self, state: &State, api_ids: &[String], domains: bool) {
        let old = self.current.load();
        let mut apis = old.apis.clone();
        for id in api_ids {
            match state.api(id).and_then(|a| {
                build_api(a, &state.functions, &state.privatelink_endpoints, &self.ctx)
            }) {
                Some(r) => {
                    apis.insert(id.clone(), r);
                }
                None => {
                    apis.remove(id);
                }
            }
        }
        let changed = domains;
        let domains = if domains {
            Arc::new(build_domains(state))
        } else {
            old.domains.clone()
        };
        self.current.store(Arc::new(Snapshot { apis, domains }));
        if changed {
            if let Some(hook) = self.on_domains.get() {
                hook(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_matches_cidr_and_mapped_v6() {
        let acl = IpAcl::new(vec![parse_ip_item("127.0.0.1/24").unwrap()]);
        assert!(acl.allows("127.0.0.9".parse().unwrap()));
        assert!(acl.allows("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!acl.allows("10.0.0.1".parse().unwrap()));
        assert!(!IpAcl::default().allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_domain_picks_the_mapping_by_whole_first_segment() {
        let t = |api: &str| DomainTarget {
            api_id: api.into(),
            stage_name: "dev".into(),
        };
        let mut d = DomainRoutes::default();
        d.paths.insert("v1".into(), t("a"));
        let pick =
            |d: &DomainRoutes, p: &'static str| d.select(p).map(|(t, r)| (t.api_id.clone(), r));
        assert_eq!(pick(&d, "/v1/users/7"), Some(("a".into(), "/users/7")));
        assert_eq!(pick(&d, "/v1"), Some(("a".into(), "/")));
        assert_eq!(pick(&d, "/v1/"), Some(("a".into(), "/")));
        assert_eq!(pick(&d, "/v1x/users"), None);
        assert_eq!(pick(&d, "/"), None);
        d.root = Some(t("root"));
        assert_eq!(pick(&d, "/v1x/users"), Some(("root".into(), "/v1x/users")));
        assert_eq!(pick(&d, "/"), Some(("root".into(), "/")));
        assert_eq!(pick(&d, "/v1/users"), Some(("a".into(), "/users")));
    }
}
