//! Durable state behind one trait. The management API is the only writer:
//! it validates against the in-memory [`State`], commits a list of
//! [`Change`]s to the store in one transaction, and only then applies the
//! same changes to the in-memory state and republishes the snapshot.

pub mod model;
pub mod quota;
pub mod sqlite;
pub mod sqlite_stats;
pub mod state;

pub use state::{ApiState, State};

use crate::store::model::{Change, Entity};

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

/// A durable store of gateway objects.
pub trait Store: Send + Sync + 'static {
    /// Every stored object.
    fn load(&self) -> Result<Vec<Entity>, StoreError>;
    /// Commit the changes atomically: all or nothing, durable on return.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// Open the store named by a config URL.
pub fn open(url: &str) -> anyhow::Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(Box::new(sqlite::SqliteStore::open(path)?)),
        _ => anyhow::bail!("unsupported store url {url:?} (use sqlite://<path>)"),
    }
}
