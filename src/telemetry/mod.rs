//! What the gateway reports about its traffic, off the request path:
//! [`reports`] (per stage and day, behind List Reports), [`metrics`]
//! (Prometheus, on the metrics listener), [`access_log`] (one JSON line
//! per request, written by a thread of its own), [`trace`] (W3C
//! `traceparent`), [`otlp`] (its spans, exported over OTLP/HTTP by a
//! thread of its own) and [`health`] (`/healthz`, `/readyz`), served by
//! [`endpoint`].
//!
//! May import: clock. The store persists its rows through the
//! `StatsStore` trait defined here (store imports telemetry, not the
//! other way). The data plane records
//! into it with relaxed atomics; nothing here blocks a request.

pub mod access_log;
pub mod endpoint;
pub mod health;
pub mod metrics;
pub mod otlp;
pub mod reports;
pub mod trace;

/// What the data plane records into (both off: nothing recorded).
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Option<std::sync::Arc<metrics::Metrics>>,
    pub access_log: Option<access_log::AccessLog>,
    pub otlp: Option<otlp::Otlp>,
}

/// A mutex of this module's bookkeeping, taken even if a thread panicked
/// while holding it (what it guards stays usable: counters, lists,
/// buffers).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static GLOBAL: std::sync::OnceLock<Telemetry> = std::sync::OnceLock::new();

/// The process's telemetry, installed once at start by the server (a
/// read is one load: no lock, no reference count). Until then, and in
/// processes that never install one (benches, in-process tests), both
/// are off.
#[inline]
pub fn global() -> Option<&'static Telemetry> {
    GLOBAL.get()
}

/// Install the process's telemetry (the first call wins).
pub fn install(t: Telemetry) {
    if GLOBAL.set(t).is_err() {
        tracing::warn!("telemetry already installed");
    }
}
