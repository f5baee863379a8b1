//! Resource-based policy: evaluated when the API has one (explicit Deny
//! wins, otherwise an Allow must match). The caller is anonymous unless the
//! request carries a valid SCP signature by a configured credential; the
//! principal is then `srn:{offering}::{account}:::iam:user/{user}`.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::dataplane::DataPlane;
use crate::policy::signature::authenticate;
use crate::policy::{Decision, Request};
use http::request::Parts;
use http::HeaderMap;

static SCP_ACCESSKEY: http::HeaderName = http::HeaderName::from_static("scp-accesskey");

thread_local! {
    static SRN_BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The caller principal SRN when the request is validly signed.
pub fn principal(
    gw: &DataPlane,
    method: &http::Method,
    host: &str,
    pq: &str,
    h: &HeaderMap,
) -> Option<String> {
    // Unsigned requests (the common case) build no URL to check.
    if !h.contains_key(&SCP_ACCESSKEY) {
        return None;
    }
    let url = format!("http://{host}{pq}");
    let cred = authenticate(
        &gw.credentials,
        gw.signature_max_skew_ms,
        method.as_str(),
        &url,
        h,
    )
    .ok()?;
    let user = if cred.user_id.is_empty() {
        &cred.access_key
    } else {
        &cred.user_id
    };
    Some(format!(
        "srn:{}::{}:::iam:user/{}",
        gw.srn_offering, cred.account_id, user
    ))
}

pub struct ResourcePolicy;

impl RequestFilter for ResourcePolicy {
    /// The signature covers the request target as the client sent it; the
    /// policy sees the normalized path the request was routed by.
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let routed = ctx.routed()?;
        let Some(policy) = &routed.api.policy else {
            return Ok(Flow::Continue);
        };
        let (method, headers) = (&req.method, &req.headers);
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = ctx.path(req);
        let principal = principal(ctx.gw, method, ctx.host_str(), pq, headers);
        // The path after the stage segment, without its leading slash.
        let rest = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, r)| r)
            .trim_end_matches('/');
        // The method's SRN is built in a buffer the worker thread keeps, not
        // allocated per request.
        let decision = SRN_BUF.with_borrow_mut(|method_srn| {
            method_srn.clear();
            method_srn.push_str(&routed.stage.srn_prefix);
            method_srn.push_str(method.as_str());
            method_srn.push('/');
            method_srn.push_str(rest);
            policy.evaluate(&Request {
                source_ip: ctx.client_ip,
                method_srn,
                api_srn: &routed.api.api_srn,
                principal: principal.as_deref(),
                headers,
            })
        });
        match decision {
            Decision::Allow => Ok(Flow::Continue),
            Decision::ExplicitDeny => Err(ErrorCode::PolicyDenied),
            Decision::ImplicitDeny => Err(ErrorCode::PolicyNotAllowed),
        }
    }
}
