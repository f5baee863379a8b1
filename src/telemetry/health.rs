//! Liveness and readiness, answered by the metrics listener
//! (`/healthz`, `/readyz`).
//!
//! Ready once the first snapshot is loaded, until draining starts: the
//! process that handles SIGTERM calls [`Health::set_draining`] before it
//! closes its listeners, so load balancers see 503 on `/readyz` and stop
//! sending first. A store outage after start keeps the node ready (it
//! serves its last snapshot); `/readyz`'s body says whether the store
//! answers now.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn new() -> std::sync::Arc<Health> {
        std::sync::Arc::new(Health::default())
    }

    /// The first snapshot is loaded and published.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Draining has begun: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ready for traffic: loaded and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_load_until_draining() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
        h.set_draining();
        assert!(!h.is_ready());
        assert!(h.is_draining());
    }
}
