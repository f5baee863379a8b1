//! What the gateway reports about its traffic, off the request path:
//! [`reports`] (per stage and day, behind List Reports); metrics and
//! access logs come with their issue.
//!
//! May import: clock. The store persists its rows through the
//! `StatsStore` trait defined here (store imports telemetry, not the
//! other way). The data plane records
//! into it with relaxed atomics; nothing here blocks a request.

pub mod reports;
