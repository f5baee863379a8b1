//! PostgreSQL store: the objects of every node of a cluster, with a change
//! log that feeds each node's snapshot publisher.
//!
//! Tables (schema history [`MIGRATIONS`], in step with SQLite's):
//! - `apigw_objects(kind, key, api_id, body)`: the same JSON documents as
//!   SQLite's `objects`, so a new entity kind needs no schema change;
//! - `apigw_head(version)`: one row, the version of the last committed
//!   batch;
//! - `apigw_changes(version, changes, committed_at)`: each committed batch
//!   ([`super::changelog`]), the last [`KEEP_VERSIONS`] kept.
//!
//! **Writes.** [`Store::apply`] runs one transaction: it locks the head
//! row (`SELECT ... FOR UPDATE`, which serializes the writers of every
//! node), checks that the head is still the `base` version the node
//! validated against, writes the objects, sets the head to `base + 1`,
//! logs the batch and `NOTIFY apigw_changes` (delivered on commit). When
//! another node committed first the head is past `base`: nothing is
//! written and the answer is [`StoreError::Conflict`]; the management API
//! then catches up to that head and validates the request again, so of two
//! nodes creating the same name at once exactly one commits and the other
//! gets the 409 of normal validation. Versions are contiguous and commit
//! in order (the head row lock), so a reader that has seen version `v`
//! has seen everything below it.
//!
//! **Feed.** A committed batch is announced on the node's own feed right
//! away (its writer is waiting). Every batch, this node's and the others',
//! also reaches the feed from a listener thread with its own connection:
//! it LISTENs on `apigw_changes`, and on each notification, and every
//! [`CHECK_INTERVAL`] in any case (the consistency check: the head version
//! compared with the last one announced), reads the log past the last
//! version it announced. The publisher skips what it already has. After a
//! lost connection the listener reconnects with backoff and reads the log
//! from where it was (catch-up). A node further behind than the kept log
//! cannot catch up from it: it says so in the log and must be restarted
//! (it reloads everything on start); with [`KEEP_VERSIONS`] batches kept
//! that takes a very long outage.
//!
//! **Unreachable.** A write whose connection fails answers
//! [`StoreError::Unavailable`] (503 from the management API), the next one
//! reconnects; [`Store::reachable`] reports the state for readiness. The
//! data plane never touches the store: it keeps serving its snapshot.
//! A connection lost during COMMIT leaves the outcome unknown; if it did
//! commit, the feed brings it in like any other node's batch.
//!
//! The `postgres` client is synchronous (it runs its own small runtime):
//! every call is made from a blocking thread (`spawn_blocking`, or the
//! listener's own thread), never from an async worker.
//!
//! May import: the store's trait, feed, model and change log.

use super::{changelog, Committed, FeedSender, Loaded, Store, StoreError, Version};
use crate::store::model::{Change, Entity, Kind};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, IsolationLevel, NoTls, Row};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The schema history, one step per version (in step with SQLite's,
/// [`super::sqlite::MIGRATIONS`]): step `i` takes the database to version
/// `i + 1` (`apigw_schema.version`). Besides SQLite's objects, step 1
/// creates the head and the change log, which only a shared store needs.
pub const MIGRATIONS: &[&str] = &["
    CREATE TABLE apigw_objects (
        kind   TEXT NOT NULL,
        key    TEXT NOT NULL,
        api_id TEXT NOT NULL,
        body   TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX apigw_objects_api ON apigw_objects(api_id);
    CREATE TABLE apigw_head (
        one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        version BIGINT NOT NULL
    );
    INSERT INTO apigw_head(version) VALUES (0);
    CREATE TABLE apigw_changes (
        version      BIGINT PRIMARY KEY,
        changes      TEXT NOT NULL,
        committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
"];

/// The notification channel; its payload is the committed version.
pub const CHANNEL: &str = "apigw_changes";
/// How often the listener compares the head with what it announced, so a
/// missed notification is caught within this.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Batches kept in the change log (older ones are trimmed every
/// [`TRIM_EVERY`] commits).
pub const KEEP_VERSIONS: i64 = 100_000;
const TRIM_EVERY: i64 = 100;
/// How long a connection attempt may take (unset in the URL).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Key of the advisory lock that serializes migrations of nodes starting
/// together ("apigw" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_7069_6777;

pub struct PgStore {
    config: Config,
    /// The connection of loads and writes; `None` after it failed (the
    /// next use reconnects).
    conn: Mutex<Option<Client>>,
    feed: FeedSender,
    reachable: Arc<AtomicBool>,
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Whether an error means the server is gone (or going), rather than that
/// it refused the statement.
fn is_unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: I/O, connect or protocol failure.
        None => true,
        // Class 08 (connection exception), 57P01..57P03 (shutdown,
        // cannot connect now).
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || c.starts_with("57P")
        }
    }
}

impl PgStore {
    /// Connect, migrate, and start the listener that announces every
    /// node's batches on `feed`.
    pub fn open(url: &str, feed: FeedSender) -> anyhow::Result<PgStore> {
        let mut config: Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("apigw");
        let mut client = config.connect(NoTls)?;
        migrate(&mut client)?;
        let head = head(&mut client)?;
        let reachable = Arc::new(AtomicBool::new(true));
        let listener = Listener {
            config: config.clone(),
            feed: feed.clone(),
            reachable: reachable.clone(),
            last: head,
        };
        std::thread::Builder::new()
            .name("apigw-pg-listen".into())
            .spawn(move || listener.run())?;
        Ok(PgStore {
            config,
            conn: Mutex::new(Some(client)),
            feed,
            reachable,
        })
    }

    /// Run `f` on the store's connection, connecting first when there is
    /// none; a failure that means the server is gone drops the connection
    /// and is [`StoreError::Unavailable`].
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().map_err(be)?;
        if guard.as_ref().is_some_and(|c| c.is_closed()) {
            *guard = None;
        }
        let client = match guard.as_mut() {
            Some(c) => c,
            None => match self.config.connect(NoTls) {
                Ok(c) => guard.insert(c),
                Err(e) => {
                    self.reachable.store(false, Ordering::Relaxed);
                    return Err(StoreError::Unavailable(e.to_string()));
                }
            },
        };
        let out = f(client);
        match &out {
            Err(StoreError::Unavailable(_)) => {
                *guard = None;
                self.reachable.store(false, Ordering::Relaxed);
            }
            _ => self.reachable.store(true, Ordering::Relaxed),
        }
        out
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A client owns a small runtime, which may not be dropped on an
        // async worker (where the last Arc of the store may go).
        if let Some(c) = self.conn.get_mut().ok().and_then(Option::take) {
            let _ = std::thread::Builder::new().spawn(move || drop(c));
        }
    }
}

/// A statement's failure: unreachable or refused.
fn pe(e: postgres::Error) -> StoreError {
    if is_unreachable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS apigw_schema (version BIGINT NOT NULL)")?;
    let at: Option<i64> = tx
        .query_opt("SELECT max(version) FROM apigw_schema", &[])?
        .map(|r| r.try_get::<_, Option<i64>>(0))
        .transpose()?
        .flatten();
    let at = usize::try_from(at.unwrap_or(0)).unwrap_or(usize::MAX);
    if at > MIGRATIONS.len() {
        anyhow::bail!(
            "store schema version {at} is newer than this binary ({})",
            MIGRATIONS.len()
        );
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(at) {
        tx.batch_execute(step)?;
        let v = i64::try_from(i + 1)?;
        tx.execute("DELETE FROM apigw_schema", &[])?;
        tx.execute("INSERT INTO apigw_schema(version) VALUES ($1)", &[&v])?;
    }
    tx.commit()?;
    Ok(())
}

fn head(client: &mut Client) -> Result<Version, postgres::Error> {
    let v: i64 = client
        .query_one("SELECT version FROM apigw_head", &[])?
        .try_get(0)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Column `i` of a row of ours (a type mismatch is a refused statement,
/// not a panic).
fn col<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(pe)
}

fn corrupt(kind: &'static str, key: String, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        kind,
        key,
        err: err.to_string(),
    }
}

impl Store for PgStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.with_client(|client| {
            // One snapshot of the head and the objects.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pe)?;
            let version: i64 = col(
                &tx.query_one("SELECT version FROM apigw_head", &[])
                    .map_err(pe)?,
                0,
            )?;
            let rows = tx
                .query("SELECT kind, key, body FROM apigw_objects", &[])
                .map_err(pe)?;
            tx.commit().map_err(pe)?;
            let mut entities = Vec::with_capacity(rows.len());
            for row in rows {
                let (kind, key, body): (String, String, String) =
                    (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
                let Some(k) = Kind::parse(&kind) else {
                    return Err(corrupt("object", key, format!("unknown kind {kind:?}")));
                };
                let e = Entity::from_json(k, &body).map_err(|e| corrupt(k.as_str(), key, e))?;
                entities.push(e);
            }
            Ok(Loaded {
                version: u64::try_from(version).unwrap_or(0),
                entities,
            })
        })
    }

    fn apply(&self, base: Version, changes: Arc<[Change]>) -> Result<Version, StoreError> {
        let log = changelog::encode(&changes).map_err(be)?;
        let base_i = i64::try_from(base).map_err(be)?;
        let version = self.with_client(|client| {
            let mut tx = client.transaction().map_err(pe)?;
            let head: i64 = col(
                &tx.query_one("SELECT version FROM apigw_head FOR UPDATE", &[])
                    .map_err(pe)?,
                0,
            )?;
            if head != base_i {
                return Err(StoreError::Conflict {
                    head: u64::try_from(head).unwrap_or(0),
                });
            }
            for c in changes.iter() {
                match c {
                    Change::Put(e) => {
                        let body = e.to_json().map_err(be)?;
                        tx.execute(
                            "INSERT INTO apigw_objects(kind, key, api_id, body) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, api_id = excluded.api_id",
                            &[&e.kind().as_str(), &e.key(), &e.api_id(), &body],
                        )
                        .map_err(pe)?;
                    }
                    Change::Delete { kind, key, .. } => {
                        tx.execute(
                            "DELETE FROM apigw_objects WHERE kind = $1 AND key = $2",
                            &[&kind.as_str(), key],
                        )
                        .map_err(pe)?;
                    }
                    Change::DeleteApi(api_id) => {
                        tx.execute("DELETE FROM apigw_objects WHERE api_id = $1", &[api_id])
                            .map_err(pe)?;
                    }
                }
            }
            let version = head + 1;
            tx.execute("UPDATE apigw_head SET version = $1", &[&version])
                .map_err(pe)?;
            tx.execute(
                "INSERT INTO apigw_changes(version, changes) VALUES ($1, $2)",
                &[&version, &log],
            )
            .map_err(pe)?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &version.to_string()],
            )
            .map_err(pe)?;
            if version % TRIM_EVERY == 0 {
                tx.execute(
                    "DELETE FROM apigw_changes WHERE version <= $1",
                    &[&(version - KEEP_VERSIONS)],
                )
                .map_err(pe)?;
            }
            tx.commit().map_err(pe)?;
            Ok(u64::try_from(version).unwrap_or(0))
        })?;
        // The writer waits for it: announced now rather than after the
        // notification's round trip. Every lower version is already
        // announced: the caller validated against `base`, which its
        // publisher had published.
        if !self.feed.announce(Committed { version, changes }) {
            tracing::error!(
                version,
                "change committed but the snapshot publisher is gone"
            );
        }
        Ok(version)
    }

    fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}

/// The listener thread: announces every batch of the change log past
/// `last`, woken by notifications and by the periodic check.
struct Listener {
    config: Config,
    feed: FeedSender,
    reachable: Arc<AtomicBool>,
    /// The last version announced.
    last: Version,
}

/// Why a listening session ended.
enum Ended {
    /// The publisher is gone: the thread stops.
    FeedClosed,
    /// The connection failed: reconnect.
    Lost(postgres::Error),
}

impl From<postgres::Error> for Ended {
    fn from(e: postgres::Error) -> Ended {
        Ended::Lost(e)
    }
}

impl Listener {
    fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut connected = false;
            match self.session(&mut connected) {
                Ended::FeedClosed => return,
                Ended::Lost(e) => {
                    if connected {
                        backoff = BACKOFF_MIN;
                    }
                    if self.reachable.swap(false, Ordering::Relaxed) || connected {
                        tracing::warn!(error = %e, last = self.last, "store unreachable: serving the last snapshot; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "store still unreachable");
                    }
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn session(&mut self, connected: &mut bool) -> Ended {
        let mut client = match self.config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => return Ended::Lost(e),
        };
        // Dropped here, on the listener's own thread (a client owns a
        // runtime, which may be dropped only where blocking is allowed).
        self.follow(&mut client, connected)
    }

    fn follow(&mut self, client: &mut Client, connected: &mut bool) -> Ended {
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            return Ended::Lost(e);
        }
        *connected = true;
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(last = self.last, "store reachable again: catching up");
        }
        // After a (re)connect the log is read from `last`: what was
        // committed while this node was away.
        let mut behind = true;
        loop {
            if behind {
                if let Err(e) = self.catch_up(client) {
                    return e;
                }
            }
            if self.feed.is_closed() {
                return Ended::FeedClosed;
            }
            // Wait for a notification, at most CHECK_INTERVAL.
            let mut notifications = client.notifications();
            let woken = notifications.timeout_iter(CHECK_INTERVAL).next();
            match woken {
                Ok(Some(_)) => {
                    // Several commits may have notified: one read covers
                    // them all.
                    let mut pending = notifications.iter();
                    loop {
                        match pending.next() {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => return Ended::Lost(e),
                        }
                    }
                    behind = true;
                }
                Ok(None) => {
                    // The periodic check: was a notification missed?
                    drop(notifications);
                    match head(client) {
                        Ok(h) => behind = h > self.last,
                        Err(e) => return Ended::Lost(e),
                    }
                }
                Err(e) => return Ended::Lost(e),
            }
        }
    }

    /// Announce every logged batch past `last`, in order.
    fn catch_up(&mut self, client: &mut Client) -> Result<(), Ended> {
        let last = i64::try_from(self.last).unwrap_or(i64::MAX);
        let rows = client.query(
            "SELECT version, changes FROM apigw_changes WHERE version > $1 ORDER BY version",
            &[&last],
        )?;
        for row in rows {
            let version: i64 = row.try_get(0)?;
            let version = u64::try_from(version).unwrap_or(0);
            if version != self.last + 1 {
                tracing::error!(
                    last = self.last,
                    next = version,
                    "this node is further behind than the change log keeps: restart it to reload the store"
                );
            }
            let text: String = row.try_get(1)?;
            let changes = match changelog::decode(&text) {
                Ok(c) => c,
                Err(e) => {
                    // Skipping it would serve a state no node has.
                    tracing::error!(version, error = %e, "unreadable batch in the change log: this node stops following the store; restart it to reload");
                    return Err(Ended::FeedClosed);
                }
            };
            if !self.feed.announce(Committed {
                version,
                changes: changes.into(),
            }) {
                return Err(Ended::FeedClosed);
            }
            self.last = version;
        }
        Ok(())
    }
}
