//! Network access: a REGION API's stage admits only sources its connected
//! access control allows (the `Default` one allows nothing). A PRIVATE API
//! is reachable only through an approved PrivateLink endpoint, so nothing
//! arriving on the public listener gets through (403 `PrivateApi`); the
//! private listener admits a connection whose PROXY v2 header names an
//! endpoint that is Active and connected to the API (else 403
//! `PrivateEndpointNotConnected`), and JWT (forced on for PRIVATE stages)
//! applies after. The private listener serves no REGION API (403
//! `PrivateEndpointNotConnected`), as AWS serves only private APIs
//! through VPC endpoints. The endpoint set is the snapshot's, so a status
//! change applies from the next request.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use crate::store::model::EndpointType;
use http::request::Parts;

pub struct IpAcl;

impl RequestFilter for IpAcl {
    fn request_filter(ctx: &mut RequestCtx<'_>, _req: &Parts) -> Result<Flow, ErrorCode> {
        let routed = ctx.routed()?;
        let private_api = routed.api.endpoint_type == EndpointType::Private;
        if ctx.peer.private {
            let connected = private_api
                && ctx
                    .peer
                    .endpoint_id
                    .as_deref()
                    .is_some_and(|id| routed.api.endpoints.contains(id));
            return if connected {
                Ok(Flow::Continue)
            } else {
                Err(ErrorCode::PrivateEndpointNotConnected)
            };
        }
        if private_api {
            return Err(ErrorCode::PrivateApi);
        }
        if routed.stage.acl.allows(ctx.client_ip) {
            Ok(Flow::Continue)
        } else {
            Err(ErrorCode::Forbidden)
        }
    }
}
