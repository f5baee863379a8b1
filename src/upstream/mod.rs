//! Integrations the gateway forwards to. HTTP is here; Cloud Function
//! (Lambda-style event) and PrivateLink plug in beside it.

pub mod body;
pub mod http;
pub mod pool;

pub use body::LimitedBody;
