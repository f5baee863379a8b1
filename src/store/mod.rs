//! Durable state behind one trait. The management API is the only writer:
//! it validates against the in-memory [`State`], commits a list of
//! [`Change`]s to the store in one transaction ([`Store::apply`]), and
//! only then applies the same changes to its in-memory state. The store
//! gives each committed batch a [`Version`] and announces it on the change
//! feed ([`feed`]); the snapshot publisher consumes the feed, so a store
//! whose changes come from elsewhere too (another node) feeds it the same
//! way.
//!
//! Every write names the version its validation saw (`base`); the store
//! commits only when that is still its head and answers
//! [`StoreError::Conflict`] otherwise. With one writer (SQLite) that never
//! happens; with a store shared by several nodes (PostgreSQL) it is how a
//! node learns that another one committed first, so that it re-validates
//! against the newer state instead of overwriting it.
//!
//! Both stores keep the same schema history: [`SCHEMA_VERSION`] is the
//! number of migrations each lists (a test checks they are in step).
//!
//! Here: the [`Store`] trait and [`open`]; [`feed`]: the change feed;
//! [`sqlite`]: the SQLite store (in-process feed); [`postgres`]: the
//! PostgreSQL store (LISTEN/NOTIFY feed, shared by the nodes of a
//! cluster); [`changelog`]: batches as JSON for the PostgreSQL change log;
//! [`state`]: the in-memory mirror; [`model`]: the objects; [`quota`],
//! [`sqlite_stats`]: usage counters and report rows (a node-local SQLite
//! file, also when the store is PostgreSQL).
//!
//! May import: telemetry's report row types (for [`sqlite_stats`]) and
//! clock; never config, snapshot, admin or dataplane. Writers wait on
//! the feed through the snapshot, not here.

pub mod changelog;
pub mod feed;
pub mod model;
pub mod pg_stats;
pub mod postgres;
pub mod quota;
pub mod redis_quota;
pub mod sqlite;
pub mod sqlite_stats;
pub mod state;

pub use feed::{Committed, FeedReceiver, FeedSender, Version};
pub use state::{ApiState, State};

use crate::store::model::{Change, Entity};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    /// The store cannot be reached (connection refused or lost): nothing
    /// is known to be committed; the same write may succeed later.
    #[error("store unreachable: {0}")]
    Unavailable(String),
    /// The write was validated against `base`, but the store's head has
    /// moved on (another node committed): nothing was committed.
    #[error(
        "store: head is at version {head}, not the base version the write was validated against"
    )]
    Conflict { head: Version },
    #[error("store: corrupt {kind} {key}: {err}")]
    Corrupt {
        kind: &'static str,
        key: String,
        err: String,
    },
}

/// Every stored object and the version they are at.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The version of the last batch included; the feed announces only
    /// later ones to whoever builds from this.
    pub version: Version,
    pub entities: Vec<Entity>,
}

/// A durable store of gateway objects.
pub trait Store: Send + Sync + 'static {
    /// Every stored object, with the version it is at.
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Commit the changes atomically: all or nothing, durable on return,
    /// provided the store is still at `base` (the version of the state
    /// the changes were validated against); [`StoreError::Conflict`] with
    /// the head otherwise. Returns the version given to the batch, which
    /// the store announces on its feed (when it has one) before
    /// returning, after every lower version.
    fn apply(&self, base: Version, changes: Arc<[Change]>) -> Result<Version, StoreError>;
    /// Whether the store answered its last use (a shared store that is
    /// down is reported here while the node keeps serving its snapshot).
    fn reachable(&self) -> bool {
        true
    }
}

/// Migrations of both stores: the schema history has this many steps.
pub const SCHEMA_VERSION: usize = 1;

/// Open the store named by a config URL; its committed batches are
/// announced on `feed`. Blocking (a PostgreSQL store connects): call it
/// off the async workers.
pub fn open(url: &str, feed: FeedSender) -> anyhow::Result<Box<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(postgres::PgStore::open(url, feed)?));
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(Box::new(
            sqlite::SqliteStore::open(path)?.announcing_to(feed),
        )),
        _ => anyhow::bail!("unsupported store url {url:?} (use sqlite://<path> or postgres://...)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_stores_have_the_same_schema_history() {
        assert_eq!(super::sqlite::MIGRATIONS.len(), super::SCHEMA_VERSION);
        assert_eq!(super::postgres::MIGRATIONS.len(), super::SCHEMA_VERSION);
    }
}
