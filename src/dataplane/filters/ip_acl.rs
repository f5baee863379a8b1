//! Network access: a REGION API's stage admits only sources its connected
//! access control allows (the `Default` one allows nothing). A PRIVATE API
//! is reachable only through an approved PrivateLink endpoint, so nothing
//! arriving on the public listener gets through (403 `PrivateApi`); the
//! PrivateLink listener will admit its approved, connected endpoints here,
//! and JWT (forced on for PRIVATE stages) applies after.

use crate::dataplane::error::GwError;
use crate::dataplane::route::Routed;
use crate::store::model::EndpointType;
use std::net::IpAddr;

pub fn check(routed: &Routed, client_ip: IpAddr) -> Result<(), GwError> {
    if routed.api.endpoint_type == EndpointType::Private {
        return Err(GwError::private_api());
    }
    if routed.stage.acl.allows(client_ip) {
        Ok(())
    } else {
        Err(GwError::ip_denied())
    }
}
