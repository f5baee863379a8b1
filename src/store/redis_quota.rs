//! Quota counters shared by the nodes of a cluster through Redis, with
//! leased allowances: a node takes a block of calls from the key's
//! counter (`INCRBY quota:{key_id}:{window} n`, atomic) and answers from
//! that lease in memory; Redis is never on the common path.
//!
//! * A lease is at most `lease_block` calls and at most
//!   remaining / (2 × nodes), so it shrinks as the quota runs out.
//! * Each INCRBY grants only the part of its range below the limit, so
//!   while Redis answers the nodes together never allow more than the
//!   quota: the grants are disjoint slices of [0, limit). What a node
//!   leased and did not spend is lost for the window (an undershoot of at
//!   most nodes × lease at the window's end, when traffic stops).
//! * The next lease is fetched in the background when half of the
//!   current one is spent; a call that finds its lease empty anyway (a
//!   burst, the first call of a window) waits for one refill, bounded by
//!   `redis_timeout_ms` (the data plane defers it, no worker blocks).
//! * Redis unreachable (an error or the timeout): the node marks it down
//!   and stops asking on the request path; a background task probes it
//!   every `flush_interval_ms`. Meanwhile, once a lease is spent,
//!   `open` counts calls locally against the last known total (each node
//!   alone: overshoot at most (nodes − 1) × what was left at the outage),
//!   and the local count is added to Redis when it answers again;
//!   `closed` answers [`Acquire::Unavailable`] (429 `QuotaUnavailable`).

use super::quota::{Acquire, Acquiring, QuotaCounters};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counters live a little over a month in Redis (the longest window).
const KEY_TTL_SECS: i64 = 33 * 86400;

#[derive(Debug, Default)]
struct Lease {
    window: i64,
    /// Calls granted by Redis and not yet spent.
    allowance: u64,
    /// The key's total in Redis at the last answer (every node's grants).
    global: u64,
    /// Redis's total reached the limit: nothing more to lease.
    exhausted: bool,
    /// Calls allowed while Redis was unreachable, to add to it.
    unsynced: u64,
    /// Size of the last lease (the prefetch mark is half of it).
    last_take: u64,
    /// A background refill is in flight.
    refilling: bool,
    /// Refills in flight: a caller that finds its lease empty while one
    /// is on its way leases just its own call, so concurrent callers do
    /// not each lease a block (which the node might never spend).
    inflight: u32,
}

enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(tokio::sync::Mutex<Option<redis::cluster_async::ClusterConnection>>),
}

pub struct RedisQuota {
    conn: Conn,
    cluster: Option<redis::cluster::ClusterClient>,
    leases: DashMap<String, Lease, ahash::RandomState>,
    fail_open: bool,
    nodes: u64,
    block: u64,
    timeout: Duration,
    down: AtomicBool,
    /// The runtime refills run on (the main one, not a data worker's).
    rt: tokio::runtime::Handle,
}

impl RedisQuota {
    /// Counters on `url` (one `redis://` URL, or several separated by
    /// commas for a Redis Cluster). Nothing is connected yet: a Redis
    /// that is down at start is just down.
    pub fn open(cfg: &crate::config::QuotaConfig) -> anyhow::Result<Arc<RedisQuota>> {
        let urls: Vec<&str> = cfg
            .redis_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1));
        let (conn, cluster) = if urls.len() > 1 {
            let client = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            (Conn::Cluster(tokio::sync::Mutex::new(None)), Some(client))
        } else {
            let client = redis::Client::open(urls.first().copied().unwrap_or_default())?;
            let mc = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            (
                Conn::Single(redis::aio::ConnectionManager::new_lazy_with_config(
                    client, mc,
                )?),
                None,
            )
        };
        Ok(Arc::new(RedisQuota {
            conn,
            cluster,
            leases: DashMap::with_hasher(ahash::RandomState::new()),
            fail_open: cfg.fail_open(),
            nodes: cfg.nodes.max(1),
            block: cfg.lease_block.max(1),
            timeout,
            down: AtomicBool::new(false),
            rt: tokio::runtime::Handle::try_current()?,
        }))
    }

    /// Whether the node currently counts Redis as unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Run one command, bounded by the timeout.
    async fn query(&self, cmd: &redis::Pipeline) -> Result<Vec<i64>, String> {
        let run = async {
            match &self.conn {
                Conn::Single(m) => {
                    let mut m = m.clone();
                    cmd.query_async::<Vec<i64>>(&mut m)
                        .await
                        .map_err(|e| e.to_string())
                }
                Conn::Cluster(slot) => {
                    let mut guard = slot.lock().await;
                    if guard.is_none() {
                        let client = self.cluster.as_ref().ok_or("no cluster client")?;
                        *guard = Some(
                            client
                                .get_async_connection()
                                .await
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    let Some(c) = guard.as_mut() else {
                        return Err("no cluster connection".to_string());
                    };
                    let mut c = c.clone();
                    drop(guard);
                    let r = cmd.query_async::<Vec<i64>>(&mut c).await;
                    if r.is_err() {
                        // Connect afresh next time.
                        *slot.lock().await = None;
                    }
                    r.map_err(|e| e.to_string())
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        }
    }

    /// The size of the next lease of a key.
    fn take(&self, limit: u64, global: u64) -> u64 {
        let remaining = limit.saturating_sub(global);
        (remaining / (2 * self.nodes)).clamp(1, self.block)
    }

    /// Lease more calls for `key_id` (and add what was counted while Redis
    /// was down); with `one`, spend one call of the result for the caller.
    async fn refill(
        self: Arc<Self>,
        key_id: String,
        window: i64,
        limit: u64,
        one: bool,
    ) -> Acquire {
        let (take, unsynced) = {
            let mut l = self.leases.entry(key_id.clone()).or_default();
            if l.window != window {
                *l = Lease {
                    window,
                    ..Lease::default()
                };
            }
            let u = std::mem::take(&mut l.unsynced);
            let take = if l.exhausted {
                0
            } else if one && l.inflight > 0 {
                1
            } else {
                self.take(limit, l.global)
            };
            l.inflight += 1;
            l.last_take = take.max(l.last_take);
            (take, u)
        };
        let key = format!("quota:{{{key_id}}}:{window}");
        let mut p = redis::pipe();
        p.cmd("INCRBY")
            .arg(&key)
            .arg(take + unsynced)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(KEY_TTL_SECS)
            .ignore();
        let answer = self.query(&p).await;
        let mut l = self.leases.entry(key_id).or_default();
        l.refilling = false;
        l.inflight = l.inflight.saturating_sub(1);
        let same = l.window == window;
        match answer {
            Ok(v) if same => {
                self.down.store(false, Ordering::Release);
                let total = v.first().copied().unwrap_or(0).max(0) as u64;
                // Our range is [total - take, total): the part below the
                // limit is ours.
                let granted = total.min(limit).saturating_sub(total.saturating_sub(take));
                l.allowance += granted;
                l.global = l.global.max(total);
                if total >= limit {
                    l.exhausted = true;
                }
            }
            Ok(_) => {
                self.down.store(false, Ordering::Release);
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "quota: Redis unreachable, counting locally until it answers");
                }
                if same {
                    l.unsynced += unsynced;
                }
            }
        }
        if !one {
            return Acquire::Allowed { remaining: 0 };
        }
        if l.window != window {
            return Acquire::Exceeded;
        }
        self.spend(&mut l, limit)
    }

    /// Spend one call of a lease: the allowance, or (Redis down) the
    /// policy.
    fn spend(&self, l: &mut Lease, limit: u64) -> Acquire {
        if l.allowance > 0 {
            l.allowance -= 1;
            return Acquire::Allowed {
                remaining: limit.saturating_sub(l.global) + l.allowance,
            };
        }
        if l.exhausted {
            return Acquire::Exceeded;
        }
        if !self.is_down() {
            // Redis answered but granted nothing (limit reached by
            // others between our reads).
            return Acquire::Exceeded;
        }
        if !self.fail_open {
            return Acquire::Unavailable;
        }
        if l.global + l.unsynced < limit {
            l.unsynced += 1;
            Acquire::Allowed {
                remaining: limit - l.global - l.unsynced,
            }
        } else {
            Acquire::Exceeded
        }
    }

    /// Every `interval`: add what was counted locally to Redis, and probe
    /// an unreachable Redis.
    pub fn spawn_reconciler(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if me.is_down() {
                    let mut p = redis::pipe();
                    p.cmd("INCRBY").arg("apigw:probe").arg(0);
                    if me.query(&p).await.is_ok() {
                        tracing::info!("quota: Redis answers again");
                        me.down.store(false, Ordering::Release);
                    } else {
                        continue;
                    }
                }
                let pending: Vec<(String, i64)> = me
                    .leases
                    .iter()
                    .filter(|l| l.unsynced > 0)
                    .map(|l| (l.key().clone(), l.window))
                    .collect();
                for (key, window) in pending {
                    // A limit of 0 leases nothing: only the local count
                    // is added.
                    let _ = me.clone().refill_unsynced(key, window).await;
                }
            }
        })
    }

    /// Add a key's local count to Redis (no new lease).
    async fn refill_unsynced(self: Arc<Self>, key_id: String, window: i64) -> Result<(), String> {
        let unsynced = match self.leases.get_mut(&key_id) {
            Some(mut l) if l.window == window => std::mem::take(&mut l.unsynced),
            _ => return Ok(()),
        };
        if unsynced == 0 {
            return Ok(());
        }
        let key = format!("quota:{{{key_id}}}:{window}");
        let mut p = redis::pipe();
        p.cmd("INCRBY")
            .arg(&key)
            .arg(unsynced)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(KEY_TTL_SECS)
            .ignore();
        let r = self.query(&p).await;
        let mut l = self.leases.entry(key_id).or_default();
        match r {
            Ok(v) if l.window == window => {
                let total = v.first().copied().unwrap_or(0).max(0) as u64;
                l.global = l.global.max(total);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.down.store(true, Ordering::Release);
                if l.window == window {
                    l.unsynced += unsynced;
                }
                Err(e)
            }
        }
    }
}

/// The reconciler's handle on the counters (the data plane holds them as
/// `dyn QuotaCounters`).
pub struct Shared(pub Arc<RedisQuota>);

impl QuotaCounters for Shared {
    fn acquire(&self, key_id: &str, window: i64, limit: u64) -> Acquiring {
        let me = &self.0;
        let mut l = match me.leases.get_mut(key_id) {
            Some(l) => l,
            None => me.leases.entry(key_id.to_string()).or_default(),
        };
        if l.window != window {
            *l = Lease {
                window,
                ..Lease::default()
            };
        }
        if l.allowance > 0 || l.exhausted || me.is_down() {
            let outcome = me.spend(&mut l, limit);
            // Prefetch the next lease when half of this one is spent.
            if !l.exhausted
                && !l.refilling
                && !me.is_down()
                && l.allowance <= l.last_take / 2
                && matches!(outcome, Acquire::Allowed { .. })
            {
                l.refilling = true;
                drop(l);
                me.rt
                    .spawn(me.clone().refill(key_id.to_string(), window, limit, false));
            }
            return Acquiring::Ready(outcome);
        }
        // The lease is empty: wait for a refill of our own (bounded).
        l.refilling = true;
        drop(l);
        Acquiring::Pending(Box::pin(me.clone().refill(
            key_id.to_string(),
            window,
            limit,
            true,
        )))
    }

    fn used(&self, key_id: &str, window: i64) -> u64 {
        self.0
            .leases
            .get(key_id)
            .filter(|l| l.window == window)
            .map_or(0, |l| (l.global - l.allowance.min(l.global)) + l.unsynced)
    }
}
