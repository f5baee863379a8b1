//! Graceful drain: one flag every accept loop and connection watches, and
//! a count of the connections still open.
//!
//! [`Drain::start`] flips the flag (a `tokio::sync::watch`, so it works
//! across the per-worker runtimes). Accept loops stop and drop their
//! listening sockets; connections finish what they are doing and close:
//! HTTP/2 sends GOAWAY; HTTP/1 answers the request in flight, or the next
//! one that arrives within [`Drain::idle_grace`], with `Connection: close`
//! and closes a connection idle that long. Every connection holds a
//! [`DrainGuard`]; [`Drain::all_closed`] resolves when none is left.
//!
//! May import: nothing of the gateway (std, tokio).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Debug)]
pub struct Drain {
    flag: watch::Sender<bool>,
    open: AtomicUsize,
    closed: Notify,
    idle_grace: Duration,
}

impl Drain {
    pub fn new(idle_grace: Duration) -> Arc<Drain> {
        Arc::new(Drain {
            flag: watch::Sender::new(false),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            idle_grace,
        })
    }

    /// Start draining (idempotent).
    pub fn start(&self) {
        self.flag.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.flag.borrow()
    }

    /// How long a connection idle when the drain starts may stay open for
    /// its next request (answered with `Connection: close`).
    pub fn idle_grace(&self) -> Duration {
        self.idle_grace
    }

    /// What a task awaits to learn that the drain started.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal(self.flag.subscribe())
    }

    /// One open connection, until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> DrainGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.clone())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection counted by [`Drain::all_closed`].
#[derive(Debug)]
pub struct DrainGuard(Arc<Drain>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// A receiver of the drain flag.
#[derive(Clone, Debug)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// Resolves when the drain has started (at once if it has).
    pub async fn started(&mut self) {
        // The sender lives as long as the `Drain`; if it is gone there is
        // nothing left to serve for either.
        let _ = self.0.wait_for(|d| *d).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_closed_waits_for_every_guard() {
        let d = Drain::new(Duration::from_millis(10));
        let mut s = d.signal();
        assert!(!s.is_draining());
        let g1 = d.track();
        let g2 = d.track();
        d.start();
        s.started().await;
        assert!(d.is_draining());
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.all_closed().await }
        });
        drop(g1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g2);
        assert!(tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .is_ok());
    }
}
