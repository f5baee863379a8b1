//! Signed management requests are accepted once: the signatures seen
//! within the accepted timestamp window are kept (bounded), and a repeat
//! is refused (401 `ReplayedRequest`).
//!
//! An entry can be forgotten once its timestamp is out of the window
//! (`ts + skew < now`): the request would be refused as stale anyway. At
//! most `max` entries are kept; past that the oldest is forgotten first
//! (the window then shrinks for the flood's duration: the cost of bounded
//! memory, 100,000 entries ≈ 6 MiB by default).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

pub struct ReplayCache {
    skew_ms: i64,
    max: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashSet<[u8; 32]>,
    /// (expiry in Unix ms, signature), in arrival order.
    order: VecDeque<(i64, [u8; 32])>,
}

impl ReplayCache {
    pub fn new(skew_ms: i64, max: usize) -> Self {
        ReplayCache {
            skew_ms,
            max: max.max(1),
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Record a verified signature sent with timestamp `ts_ms`; false when
    /// it was seen already (a replay).
    pub fn first_use(&self, signature: [u8; 32], ts_ms: i64, now_ms: i64) -> bool {
        let mut seen = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some(&(expiry, sig)) = seen.order.front() {
            if expiry >= now_ms && seen.order.len() < self.max {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&sig);
        }
        if !seen.set.insert(signature) {
            return false;
        }
        seen.order
            .push_back((ts_ms.saturating_add(self.skew_ms), signature));
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.set.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_until_they_expire() {
        let c = ReplayCache::new(1000, 10);
        assert!(c.first_use([1; 32], 5000, 5000));
        assert!(!c.first_use([1; 32], 5000, 5500));
        assert!(c.first_use([2; 32], 5000, 5500));
        // Out of the window: forgotten (the request would be stale anyway).
        assert!(c.first_use([3; 32], 7000, 7000));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let c = ReplayCache::new(1_000_000, 3);
        for i in 0..10u8 {
            assert!(c.first_use([i; 32], 0, 0));
        }
        assert_eq!(c.len(), 3);
        assert!(!c.first_use([9; 32], 0, 0));
    }
}
