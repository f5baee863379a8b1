//! `[quota]`: API-key quota counters (owner: `store::quota`).

use std::time::Duration;

settings! {
    /// Usage-plan quota counters.
    pub struct QuotaConfig ["quota"] {
        /// How often quota counters are written to the store (a crash
        /// loses at most this much counting; at least 10). With Redis:
        /// how often counts made while Redis was unreachable are added
        /// back and an unreachable Redis is probed.
        flush_interval_ms: u64 = 1000, flat "quota_flush_interval_ms";
        /// Shared counters for a cluster: `redis://host:port/db` (one
        /// server, or a Sentinel-managed primary behind that address), or
        /// several `redis://` URLs separated by commas (a Redis Cluster).
        /// Empty: each node counts alone (exact on one node).
        redis_url: String = String::new(), flat "quota_redis_url";
        /// What a key's call gets when Redis is unreachable and the node's
        /// leased allowance is spent: `open` (counted locally against the
        /// last known total, added to Redis when it is back) or `closed`
        /// (429 `QuotaUnavailable`).
        redis_unavailable: String = "open".into(), flat "quota_redis_unavailable";
        /// The most calls one node leases from Redis at a time.
        lease_block: u64 = 100, flat "quota_lease_block";
        /// How many nodes share the counters: leases shrink to
        /// remaining / (2 × nodes) near the end of a quota.
        nodes: u64 = 3, flat "quota_nodes";
        /// How long a lease refill may wait for Redis before Redis counts
        /// as unreachable.
        redis_timeout_ms: u64 = 250, flat "quota_redis_timeout_ms";
    }
}

impl QuotaConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(10))
    }

    /// Whether an unreachable Redis lets calls through (counted locally).
    pub fn fail_open(&self) -> bool {
        self.redis_unavailable != "closed"
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.redis_unavailable.as_str(), "open" | "closed") {
            anyhow::bail!(
                "config: quota.redis_unavailable must be \"open\" or \"closed\", got {:?}",
                self.redis_unavailable
            );
        }
        for u in self.redis_url.split(',').filter(|u| !u.trim().is_empty()) {
            if let Err(e) = redis::Client::open(u.trim()) {
                anyhow::bail!("config: quota.redis_url {u:?}: {e}");
            }
        }
        Ok(())
    }
}
