//! Graceful drain: one flag every accept loop and connection watches, and
//! a count of the connections still open.
//!
//! [`Drain::start`] sets the flag and wakes every waiter (a
//! `tokio::sync::Notify`, so it works across the per-worker runtimes; its
//! waiter is small, and every parked connection holds one). Accept loops stop and drop their
//! listening sockets; connections finish what they are doing and close:
//! HTTP/2 sends GOAWAY; HTTP/1 answers the request in flight, or the next
//! one that arrives within [`Drain::idle_grace`], with `Connection: close`
//! and closes a connection idle that long. Every connection holds a
//! [`DrainGuard`]; [`Drain::all_closed`] resolves when none is left.
//!
//! May import: nothing of the gateway (std, tokio).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Drain {
    flag: AtomicBool,
    started: Notify,
    open: AtomicUsize,
    closed: Notify,
    idle_grace: Duration,
}

impl Drain {
    pub fn new(idle_grace: Duration) -> Arc<Drain> {
        Arc::new(Drain {
            flag: AtomicBool::new(false),
            started: Notify::new(),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            idle_grace,
        })
    }

    /// Start draining (idempotent).
    pub fn start(&self) {
        self.flag.store(true, Ordering::Release);
        self.started.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// How long a connection idle when the drain starts may stay open for
    /// its next request (answered with `Connection: close`).
    pub fn idle_grace(&self) -> Duration {
        self.idle_grace
    }

    /// What a task awaits to learn that the drain started.
    pub fn signal(self: &Arc<Self>) -> DrainSignal {
        DrainSignal(self.clone())
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

/// What a task holds to learn that the drain started.
#[derive(Clone, Debug)]
pub struct DrainSignal(Arc<Drain>);

impl DrainSignal {
    /// Resolves when the drain has started (at once if it has).
    pub async fn started(&mut self) {
        loop {
            let notified = self.0.started.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read: a start in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.0.is_draining() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_draining(&self) -> bool {
        self.0.is_draining()
    }

    /// `fut` until `deadline`, or until `grace` after the drain starts if
    /// that comes first: what a connection waits for before its first
    /// request (a PROXY header, a TLS handshake, the first bytes) is cut
    /// at the drain's idle grace, not left to its header-read timeout.
    pub async fn until<F: std::future::Future>(
        &mut self,
        deadline: tokio::time::Instant,
        grace: Duration,
        fut: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        let mut fut = std::pin::pin!(fut);
        tokio::select! {
            r = tokio::time::timeout_at(deadline, &mut fut) => r,
            _ = self.started() => {
                let cut = deadline.min(tokio::time::Instant::now() + grace);
                tokio::time::timeout_at(cut, fut).await
            }
        }
    }

    /// [`DrainSignal::until`] `limit` from now.
    pub async fn within<F: std::future::Future>(
        &mut self,
        limit: Duration,
        grace: Duration,
        fut: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        self.until(tokio::time::Instant::now() + limit, grace, fut)
            .await
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

    #[tokio::test]
    async fn waits_before_a_first_request_end_at_the_grace() {
        let d = Drain::new(Duration::from_millis(100));
        let mut s = d.signal();
        let grace = d.idle_grace();
        let long = Duration::from_secs(60);
        let never = std::future::pending::<()>;
        // Not draining: the limit holds.
        let t = std::time::Instant::now();
        assert!(s
            .within(Duration::from_millis(150), grace, never())
            .await
            .is_err());
        assert!(t.elapsed() >= Duration::from_millis(150));
        // The drain starts during a long wait: cut `grace` later.
        let t = std::time::Instant::now();
        let wait = tokio::spawn({
            let mut s = d.signal();
            async move { s.within(long, grace, never()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        d.start();
        assert!(wait.await.unwrap().is_err());
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(10),
            "{took:?}"
        );
        // Already draining: `grace` at most; what finishes first is kept.
        let t = std::time::Instant::now();
        assert!(s.within(long, grace, never()).await.is_err());
        assert!(t.elapsed() >= grace && t.elapsed() < Duration::from_secs(10));
        assert_eq!(s.within(long, grace, async { 7 }).await, Ok(7));
    }
}
