//! Durable state behind one trait. The management API is the only writer:
//! it validates against the in-memory [`State`], commits a list of
//! [`Change`]s to the store in one transaction ([`Store::apply`]), and
//! only then applies the same changes to its in-memory state. The store
//! gives each committed batch a [`Version`] and announces it on the change
//! feed ([`feed`]); the snapshot publisher consumes the feed, so a store
//! whose changes come from elsewhere too (another node) feeds it the same
//! way.
//!
//! Here: the [`Store`] trait and [`open`]; [`feed`]: the change feed;
//! [`sqlite`]: the SQLite store (in-process feed); [`state`]: the
//! in-memory mirror; [`model`]: the objects; [`quota`], [`sqlite_stats`]:
//! usage counters and report rows.
//!
//! May import: telemetry's report row types (for [`sqlite_stats`]) and
//! clock; never config, snapshot, admin or dataplane. Writers wait on
//! the feed through the snapshot, not here.

pub mod feed;
pub mod model;
pub mod quota;
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
    /// Commit the changes atomically: all or nothing, durable on return.
    /// Returns the version given to the batch, which the store announces
    /// on its feed (when it has one) before returning, after every lower
    /// version.
    fn apply(&self, changes: Arc<[Change]>) -> Result<Version, StoreError>;
}

/// Open the store named by a config URL; its committed batches are
/// announced on `feed`.
pub fn open(url: &str, feed: FeedSender) -> anyhow::Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(Box::new(
            sqlite::SqliteStore::open(path)?.announcing_to(feed),
        )),
        _ => anyhow::bail!("unsupported store url {url:?} (use sqlite://<path>)"),
    }
}
