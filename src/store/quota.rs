//! API-key quotas: calls per key in the plan's calendar window (UTC hour,
//! day or month). Counting is exact on one node: each key's counter is
//! updated under its own shard lock, so N racing clients on a quota of Q
//! get exactly Q successes. Counters live behind the [`QuotaCounters`]
//! trait (a shared Redis implementation can replace the local one for
//! clusters) and are flushed to the store every `flush_interval`, so a
//! crash loses at most that much counting.
//!
//! Flushes are additive: each adds the calls counted here since the
//! last flush to the stored count (`count = count + delta` in one SQLite
//! statement) and reads the sum back. Two processes on one SQLite file (a
//! zero-downtime restart's overlap, where the old one still answers its
//! connections while the new one counts from what it loaded) therefore
//! add up instead of overwriting each other, and each learns the other's
//! calls at its next flush.
//!
//! Counting answers now ([`Acquiring::Ready`]: local counters, the hot
//! path, nothing allocated) or later ([`Acquiring::Pending`]: a counter
//! shared over the network); the data plane's API-key filter defers the
//! request on the second and never blocks its worker.

use crate::store::model::QuotaRate;
use chrono::{Datelike, TimeZone, Utc};
use dashmap::DashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The window a timestamp falls in: (window id, unix second it ends).
pub fn window(rate: QuotaRate, now: i64) -> (i64, i64) {
    match rate {
        QuotaRate::Hour => (now.div_euclid(3600), (now.div_euclid(3600) + 1) * 3600),
        QuotaRate::Day => (now.div_euclid(86400), (now.div_euclid(86400) + 1) * 86400),
        QuotaRate::Month => {
            let t = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
            let (y, m) = (t.year(), t.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = Utc
                .with_ymd_and_hms(ny, nm, 1, 0, 0, 0)
                .single()
                .map_or(now + 86400, |e| e.timestamp());
            (i64::from(y) * 12 + i64::from(m), end)
        }
    }
}

/// Outcome of counting one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Allowed; this many calls are left in the window.
    Allowed { remaining: u64 },
    /// Over the quota.
    Exceeded,
    /// The shared counters cannot be reached and the policy is to refuse.
    Unavailable,
}

/// Counting one call: answered now, or by a future (a shared store's round
/// trip). A store that cannot answer decides inside its future whether
/// the call is allowed.
pub enum Acquiring {
    Ready(Acquire),
    Pending(PendingAcquire),
}

/// The answer of a shared counter: owns what it needs (no borrow of the
/// request), and is awaited off the worker's synchronous path.
pub type PendingAcquire = Pin<Box<dyn Future<Output = Acquire> + Send + 'static>>;

pub trait QuotaCounters: Send + Sync {
    /// Count one call of `key_id` in window `window` against `limit`.
    fn acquire(&self, key_id: &str, window: i64, limit: u64) -> Acquiring;
    /// Calls counted so far in the window (for tests and reports).
    fn used(&self, key_id: &str, window: i64) -> u64;
}

#[derive(Debug, Default)]
struct Counter {
    window: i64,
    /// Calls in `window` as this process knows them: the stored count
    /// (at load or the last flush) plus `pending`.
    count: u64,
    /// Calls counted here in `window` and not yet added to the store.
    pending: u64,
}

/// In-process counters, persisted by [`LocalQuota::flush`].
pub struct LocalQuota {
    counters: DashMap<String, Counter, ahash::RandomState>,
    dirty: AtomicBool,
    store: Option<Mutex<rusqlite::Connection>>,
}

impl LocalQuota {
    /// Counters persisted in table `quota_counters` of the SQLite file (a
    /// connection of its own; WAL lets it sit beside the object store).
    pub fn open(sqlite_path: Option<&Path>) -> anyhow::Result<Arc<LocalQuota>> {
        let counters = DashMap::with_hasher(ahash::RandomState::new());
        let store = match sqlite_path {
            Some(p) => {
                let conn = rusqlite::Connection::open(p)?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS quota_counters (
                         key_id TEXT PRIMARY KEY, window INTEGER NOT NULL, count INTEGER NOT NULL);",
                )?;
                {
                    let mut stmt =
                        conn.prepare("SELECT key_id, window, count FROM quota_counters")?;
                    let rows = stmt.query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?;
                    for row in rows {
                        let (k, w, c) = row?;
                        counters.insert(
                            k,
                            Counter {
                                window: w,
                                count: c.max(0) as u64,
                                pending: 0,
                            },
                        );
                    }
                }
                Some(Mutex::new(conn))
            }
            None => None,
        };
        Ok(Arc::new(LocalQuota {
            counters,
            dirty: AtomicBool::new(false),
            store,
        }))
    }

    /// Add the calls counted since the last flush to the store (one
    /// transaction), and take the stored sums back: what other processes
    /// on the same file counted meanwhile is then counted here too. A
    /// failed flush keeps its calls for the next one.
    pub fn flush(&self) -> anyhow::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        // The deltas, taken out of the counters (calls counted from here
        // on go to the next flush).
        let mut rows: Vec<(String, i64, u64)> = Vec::new();
        for mut e in self.counters.iter_mut() {
            let (key, c) = e.pair_mut();
            if c.pending > 0 {
                rows.push((key.clone(), c.window, std::mem::take(&mut c.pending)));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let written = (|| -> anyhow::Result<Vec<(i64, i64)>> {
            let mut conn = store
                .lock()
                .map_err(|_| anyhow::anyhow!("quota store lock poisoned"))?;
            let tx = conn.transaction()?;
            let mut stored = Vec::with_capacity(rows.len());
            {
                // A row of an older window starts over with the delta; a
                // newer one (another process is in the next window
                // already) is left alone: these calls' window is over.
                let mut add = tx.prepare(
                    "INSERT INTO quota_counters(key_id, window, count) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key_id) DO UPDATE SET
                         count = CASE WHEN window = excluded.window
                                      THEN count + excluded.count ELSE excluded.count END,
                         window = excluded.window
                     WHERE excluded.window >= window",
                )?;
                let mut read =
                    tx.prepare("SELECT window, count FROM quota_counters WHERE key_id = ?1")?;
                for (k, w, delta) in &rows {
                    let delta = i64::try_from(*delta).unwrap_or(i64::MAX);
                    add.execute(rusqlite::params![k, w, delta])?;
                    stored.push(read.query_row([k], |r| Ok((r.get(0)?, r.get(1)?)))?);
                }
            }
            tx.commit()?;
            Ok(stored)
        })();
        match written {
            Ok(stored) => {
                for ((k, w, _), (sw, sc)) in rows.iter().zip(stored) {
                    if let Some(mut c) = self.counters.get_mut(k) {
                        // Same window still: the stored sum (this
                        // process's calls and others') plus the calls
                        // counted here since the deltas were taken.
                        if c.window == *w && sw == *w {
                            c.count = (sc.max(0) as u64).saturating_add(c.pending);
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Not written: back into the counters, for the next flush.
                for (k, w, delta) in rows {
                    if let Some(mut c) = self.counters.get_mut(&k) {
                        if c.window == w {
                            c.pending += delta;
                        }
                    }
                }
                self.dirty.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Flush every `interval` until the process ends.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let m = me.clone();
                let r = tokio::task::spawn_blocking(move || m.flush()).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "quota flush failed");
                }
            }
        })
    }

    /// Forget a deleted key's counter.
    pub fn forget(&self, key_id: &str) {
        self.counters.remove(key_id);
    }
}

impl QuotaCounters for LocalQuota {
    /// Always ready: the counters are in this process.
    fn acquire(&self, key_id: &str, window: i64, limit: u64) -> Acquiring {
        Acquiring::Ready(self.count(key_id, window, limit))
    }

    fn used(&self, key_id: &str, window: i64) -> u64 {
        self.counters
            .get(key_id)
            .filter(|c| c.window == window)
            .map_or(0, |c| c.count)
    }
}

impl LocalQuota {
    /// Count one call now (see [`QuotaCounters::acquire`]).
    pub fn count(&self, key_id: &str, window: i64, limit: u64) -> Acquire {
        let outcome = match self.counters.get_mut(key_id) {
            Some(mut c) => bump(&mut c, window, limit),
            None => {
                let mut c = self.counters.entry(key_id.to_string()).or_default();
                bump(&mut c, window, limit)
            }
        };
        if matches!(outcome, Acquire::Allowed { .. }) {
            self.dirty.store(true, Ordering::Release);
        }
        outcome
    }
}

fn bump(c: &mut Counter, window: i64, limit: u64) -> Acquire {
    if c.window != window {
        c.window = window;
        c.count = 0;
        c.pending = 0;
    }
    if c.count >= limit {
        return Acquire::Exceeded;
    }
    c.count += 1;
    c.pending += 1;
    Acquire::Allowed {
        remaining: limit - c.count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        // 2026-11-24T17:00:00Z
        let t = 1_795_539_600;
        assert_eq!(window(QuotaRate::Hour, t + 10).1, t + 3600);
        assert_eq!(window(QuotaRate::Day, t).1 % 86400, 0);
        let (m, end) = window(QuotaRate::Month, t);
        assert_eq!(m, 2026 * 12 + 11);
        assert_eq!(
            end,
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
                .unwrap()
                .timestamp()
        );
        let dec = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(
            window(QuotaRate::Month, dec).1,
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .unwrap()
                .timestamp()
        );
    }

    #[test]
    fn exact_under_threads_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let q = LocalQuota::open(Some(&db)).unwrap();
        let ok = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if let Acquire::Allowed { .. } = q.count("k1", 7, 1000) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 1000);
        assert_eq!(q.count("k1", 7, 1000), Acquire::Exceeded);
        // A new window starts from zero.
        assert_eq!(q.count("k1", 8, 1000), Acquire::Allowed { remaining: 999 });
        q.flush().unwrap();
        let q2 = LocalQuota::open(Some(&db)).unwrap();
        assert_eq!(q2.used("k1", 8), 1);
        assert_eq!(q2.used("k1", 7), 0);
        // Flushing again without new calls changes nothing.
        q.flush().unwrap();
        q.count("k1", 8, 1000);
        q.flush().unwrap();
        q.flush().unwrap();
        assert_eq!(LocalQuota::open(Some(&db)).unwrap().used("k1", 8), 2);
    }

    #[test]
    fn two_processes_on_one_file_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let old = LocalQuota::open(Some(&db)).unwrap();
        for _ in 0..5 {
            old.count("k", 7, 100);
        }
        old.flush().unwrap();
        // The new process loads 5; both count on from there.
        let new = LocalQuota::open(Some(&db)).unwrap();
        assert_eq!(new.used("k", 7), 5);
        for _ in 0..4 {
            old.count("k", 7, 100);
        }
        for _ in 0..3 {
            new.count("k", 7, 100);
        }
        old.flush().unwrap();
        new.flush().unwrap();
        // Each sees the other's calls after its flush; the file has all.
        assert_eq!(new.used("k", 7), 12);
        old.count("k", 7, 100);
        old.flush().unwrap();
        assert_eq!(old.used("k", 7), 13);
        assert_eq!(LocalQuota::open(Some(&db)).unwrap().used("k", 7), 13);
        // A stale window does not overwrite a newer one.
        new.count("k", 8, 100);
        new.flush().unwrap();
        old.count("k", 7, 100);
        old.flush().unwrap();
        assert_eq!(LocalQuota::open(Some(&db)).unwrap().used("k", 8), 1);
    }
}
