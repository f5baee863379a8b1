//! `[drain]`: graceful shutdown and restarts (owner: `server`,
//! `net::drain`, `net::handover`).

use std::time::Duration;

settings! {
    /// Graceful drain on SIGTERM/SIGINT and listener hand-over.
    pub struct DrainConfig ["drain"] {
        /// On SIGTERM/SIGINT, connections get this long to finish their
        /// requests; then quota counters and report figures are flushed
        /// and the process exits (0) whatever is still open.
        timeout_ms: u64 = 30_000, flat "drain_timeout_ms";
        /// Between the signal (readiness turns unready) and closing the
        /// listeners: time for a load balancer to notice and stop sending
        /// new connections. 0 with a listener hand-over.
        unready_delay_ms: u64 = 0, flat "drain_unready_delay_ms";
        /// While draining, an HTTP/1 connection idle when the drain
        /// started stays open this long for a next request (answered with
        /// `Connection: close`) before it is closed: a client that sends
        /// on a kept-alive connection just as it closes would see an
        /// error.
        idle_grace_ms: u64 = 500, flat "drain_idle_grace_ms";
        /// A unix socket path (empty: off) where this process hands its
        /// listening sockets to a new process started with the same
        /// setting, which takes them over instead of binding (see README,
        /// "Restarts and upgrades"). Both must run as the same user.
        handover_socket: String = String::new(), flat "drain_handover_socket";
    }
}

impl DrainConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn unready_delay(&self) -> Duration {
        Duration::from_millis(self.unready_delay_ms)
    }
    pub fn idle_grace(&self) -> Duration {
        Duration::from_millis(self.idle_grace_ms)
    }
}
