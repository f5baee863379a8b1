//! Cloud Function (SCF) integration: the slot for issue [7]. Methods of
//! this type are stored and deployed; the data plane answers 501 until
//! the integration is built.

use crate::dataplane::error::{ErrorCode, Unbuilt};

/// The answer for a method whose integration is the function `_function_id`.
pub fn prepare(_function_id: &str) -> Result<super::Outbound, ErrorCode> {
    Err(ErrorCode::NotImplemented(Unbuilt::Function))
}
