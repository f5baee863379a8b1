//! apigw: an API gateway reproducing the Samsung Cloud Platform API Gateway.
//!
//! Data flows one way: store → snapshot → pipeline → upstream.
//! - [`store`]: durable state (SQLite) behind the [`store::Store`] trait;
//!   the management API ([`admin`]) is its only writer.
//! - [`snapshot`]: the compiled routing state of every API, rebuilt on
//!   every committed change and published with arc-swap.
//! - [`pipeline`]: the data-plane filters, in the order of the spec.
//! - [`upstream`]: integrations (HTTP now; Cloud Function, PrivateLink next).

pub mod admin;
pub mod alloc;
pub mod config;
pub mod conn;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod proxy_protocol;
pub mod quota;
pub mod server;
pub mod signature;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod upstream;
