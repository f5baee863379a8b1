//! `[quota]`: API-key quota counters (owner: `store::quota`).

use std::time::Duration;

settings! {
    /// Usage-plan quota counters.
    pub struct QuotaConfig ["quota"] {
        /// How often quota counters are written to the store (a crash
        /// loses at most this much counting; at least 10).
        flush_interval_ms: u64 = 1000, flat "quota_flush_interval_ms";
    }
}

impl QuotaConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(10))
    }
}
