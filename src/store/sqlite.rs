//! SQLite store: one table of JSON documents keyed by (kind, key), with the
//! owning API id for cascading deletes. WAL journal, synchronous=FULL: a
//! committed transaction is on disk.
//!
//! The change feed is in-process: this process is the only writer, so
//! versions are a counter that starts at 0 when the store is opened (the
//! loaded state) and goes up by one per committed batch. Each batch is
//! numbered and announced while the connection is still held, so the feed
//! sees batches in commit order.
//!
//! May import: the store's trait, feed and model.

use super::{Committed, FeedSender, Loaded, Store, StoreError, Version};
use crate::store::model::{Change, Entity, Kind};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The schema history, one step per version (in step with PostgreSQL's,
/// [`super::postgres::MIGRATIONS`]): step `i` takes the file to version
/// `i + 1` (`PRAGMA user_version`).
pub const MIGRATIONS: &[&str] = &[
    // 1: the objects, as JSON documents keyed by (kind, key).
    "CREATE TABLE IF NOT EXISTS objects (
         kind   TEXT NOT NULL,
         key    TEXT NOT NULL,
         api_id TEXT NOT NULL,
         body   TEXT NOT NULL,
         PRIMARY KEY (kind, key)
     );
     CREATE INDEX IF NOT EXISTS objects_api ON objects(api_id);",
];

pub struct SqliteStore {
    pub(crate) conn: Mutex<Connection>,
    /// The last committed batch's version; written under `conn`.
    version: AtomicU64,
    /// Where committed batches are announced (none: a store opened for
    /// report rows only, or a test).
    feed: Option<FeedSender>,
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<SqliteStore> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            version: AtomicU64::new(0),
            feed: None,
        })
    }

    /// Announce every committed batch on `feed`.
    pub fn announcing_to(mut self, feed: FeedSender) -> SqliteStore {
        self.feed = Some(feed);
        self
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "store schema version {version} is newer than this binary ({})",
            MIGRATIONS.len()
        );
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN;\n{step}\nPRAGMA user_version = {};\nCOMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let conn = self.conn.lock().map_err(be)?;
        let version = self.version.load(Ordering::Relaxed);
        let mut stmt = conn
            .prepare("SELECT kind, key, body FROM objects")
            .map_err(be)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(be)?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, key, body) = row.map_err(be)?;
            let Some(k) = Kind::parse(&kind) else {
                return Err(StoreError::Corrupt {
                    kind: "object",
                    key,
                    err: format!("unknown kind {kind:?}"),
                });
            };
            let e = Entity::from_json(k, &body).map_err(|err| StoreError::Corrupt {
                kind: k.as_str(),
                key,
                err: err.to_string(),
            })?;
            out.push(e);
        }
        Ok(Loaded {
            version,
            entities: out,
        })
    }

    fn apply(&self, base: Version, changes: Arc<[Change]>) -> Result<Version, StoreError> {
        let mut conn = self.conn.lock().map_err(be)?;
        // The only writer is this process, under its admin lock: a base
        // other than the head is a caller that skipped a batch.
        let head = self.version.load(Ordering::Relaxed);
        if base != head {
            return Err(StoreError::Conflict { head });
        }
        let tx = conn.transaction().map_err(be)?;
        for c in changes.iter() {
            match c {
                Change::Put(e) => {
                    let body = e.to_json().map_err(be)?;
                    tx.execute(
                        "INSERT INTO objects(kind, key, api_id, body) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body, api_id = excluded.api_id",
                        params![e.kind().as_str(), e.key(), e.api_id(), body],
                    )
                    .map_err(be)?;
                }
                Change::Delete { kind, key, .. } => {
                    tx.execute(
                        "DELETE FROM objects WHERE kind = ?1 AND key = ?2",
                        params![kind.as_str(), key],
                    )
                    .map_err(be)?;
                }
                Change::DeleteApi(api_id) => {
                    tx.execute("DELETE FROM objects WHERE api_id = ?1", params![api_id])
                        .map_err(be)?;
                }
            }
        }
        tx.commit().map_err(be)?;
        // Numbered and announced before the connection is released: the
        // next batch gets a higher number and is announced after this one.
        let version = self.version.load(Ordering::Relaxed) + 1;
        self.version.store(version, Ordering::Relaxed);
        if let Some(feed) = &self.feed {
            if !feed.announce(Committed { version, changes }) {
                tracing::error!(
                    version,
                    "change committed but the snapshot publisher is gone"
                );
            }
        }
        drop(conn);
        Ok(version)
    }
}
