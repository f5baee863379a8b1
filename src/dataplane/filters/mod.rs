//! The request filters, one file each, called in the order of
//! [`crate::dataplane::pipeline`]. A filter reads the request and the
//! routed stage's compiled data and answers "go on" or an error.

pub mod api_key;
pub mod client_ip;
pub mod cors;
pub mod ip_acl;
pub mod jwt;
pub mod limits;
pub mod request_id;
pub mod resource_policy;
pub mod throttle;
