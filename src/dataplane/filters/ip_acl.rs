//! Network access: a REGION API's stage admits only sources its connected
//! access control allows (the `Default` one allows nothing). A PRIVATE API
//! is reachable only through an approved PrivateLink endpoint, so nothing
//! arriving on the public listener gets through (403 `PrivateApi`); the
//! PrivateLink listener will admit its approved, connected endpoints here,
//! and JWT (forced on for PRIVATE stages) applies after.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::store::model::EndpointType;
use http::request::Parts;

pub struct IpAcl;

impl RequestFilter for IpAcl {
    fn request_filter(ctx: &mut RequestCtx<'_>, _req: &Parts) -> Result<Flow, ErrorCode> {
        let routed = ctx.routed()?;
        if routed.api.endpoint_type == EndpointType::Private {
            return Err(ErrorCode::PrivateApi);
        }
        if routed.stage.acl.allows(ctx.client_ip) {
            Ok(Flow::Continue)
        } else {
            Err(ErrorCode::Forbidden)
        }
    }
}
