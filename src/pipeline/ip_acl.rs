//! IP access control: the stage's connected access control must allow the
//! client address (the `Default` one allows nothing). PRIVATE APIs are not
//! subject to IP access control (they are reached through PrivateLink).

use super::error::GwError;
use super::route::Routed;
use crate::model::EndpointType;
use std::net::IpAddr;

pub fn check(routed: &Routed, client_ip: IpAddr) -> Result<(), GwError> {
    if routed.api.endpoint_type == EndpointType::Private {
        return Ok(());
    }
    if routed.stage.acl.allows(client_ip) {
        Ok(())
    } else {
        Err(GwError::ip_denied())
    }
}
