//! apigw: an API gateway reproducing the Samsung Cloud Platform API Gateway.
//!
//! Data flows one way: store → snapshot → data plane → upstream. Folders
//! by role; imports go down this list, never up (see README, Architecture):
//! - [`server`]: process wiring (load, bind, serve, shut down).
//! - [`admin`]: the management API (SCP OpenAPI v1.2), its listener and
//!   the JWKS fetcher; writes go through [`store`].
//! - [`dataplane`]: listeners, connection drivers, routing, the filters,
//!   the pipeline's phases and the integrations (upstream).
//! - [`snapshot`]: the compiled routing state of every API, rebuilt on
//!   every committed change and published with arc-swap.
//! - [`telemetry`]: reports (and, later, metrics and access logs), off the
//!   request path.
//! - [`jwt`], [`policy`]: pure logic (tokens, resource policies, SCP
//!   signatures), no I/O.
//! - [`store`]: durable state behind traits (SQLite), the object model and
//!   the quota counters.
//! - [`config`] holds the settings, one section per owning module; [`net`]
//!   the network pieces every listener shares; [`clock`] wall-clock time
//!   (the system's, or a test offset). Leaves.

pub mod admin;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod jwt;
pub mod net;
pub mod policy;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
