//! Wall-clock time for quota windows, token expiry and report days.
//!
//! A leaf module (it imports nothing of the gateway). Production runs on
//! [`SystemClock`]: a `clock_gettime` per call, no task, no file. Tests
//! that must cross a quota window or a report day without waiting set
//! `test_clock_file` and get an [`OffsetFileClock`]: the system time plus
//! a number of seconds read from that file, re-read when the time is asked
//! for and the last read is older than [`OffsetFileClock::REREAD`] (no
//! background polling).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of Unix time.
pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;

    /// Unix time in whole seconds.
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// A closure returning Unix seconds is a clock (tests set the time by hand).
impl<F: Fn() -> i64 + Send + Sync> Clock for F {
    fn now_ms(&self) -> i64 {
        self().saturating_mul(1000)
    }
    fn now(&self) -> i64 {
        self()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

fn system_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now().as_millis() as i64
    }
    fn now(&self) -> i64 {
        system_now().as_secs() as i64
    }
}

/// TEST ONLY: the system clock moved by an offset in seconds held in a
/// file (e.g. `3600`). The file is read when the time is asked for, at most
/// once per [`Self::REREAD`]; a missing or unreadable file keeps the last
/// offset read (0 at first).
#[derive(Debug)]
pub struct OffsetFileClock {
    path: PathBuf,
    origin: Instant,
    /// Milliseconds after `origin` from which the next call reads the file.
    next_read_ms: AtomicU64,
    offset_secs: AtomicI64,
}

impl OffsetFileClock {
    /// Longest time an offset written to the file goes unseen.
    pub const REREAD: Duration = Duration::from_millis(20);

    pub fn new(path: impl Into<PathBuf>) -> OffsetFileClock {
        let clock = OffsetFileClock {
            path: path.into(),
            origin: Instant::now(),
            next_read_ms: AtomicU64::new(0),
            offset_secs: AtomicI64::new(0),
        };
        clock.offset();
        clock
    }

    /// The offset in seconds, from the file when the last read is stale.
    /// One caller reads (the one that moves `next_read_ms` on); the others
    /// meanwhile use the offset read before.
    fn offset(&self) -> i64 {
        let elapsed = self.origin.elapsed().as_millis() as u64;
        let due = self.next_read_ms.load(Ordering::Relaxed);
        if elapsed >= due
            && self
                .next_read_ms
                .compare_exchange(
                    due,
                    elapsed + Self::REREAD.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            if let Some(v) = read_offset(&self.path) {
                self.offset_secs.store(v, Ordering::Relaxed);
            }
        }
        self.offset_secs.load(Ordering::Relaxed)
    }
}

fn read_offset(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Clock for OffsetFileClock {
    fn now_ms(&self) -> i64 {
        (system_now().as_millis() as i64).saturating_add(self.offset().saturating_mul(1000))
    }
    fn now(&self) -> i64 {
        (system_now().as_secs() as i64).saturating_add(self.offset())
    }
}

/// The process clock: the system clock, or with a test clock file (a
/// non-empty path) the offset clock on it.
pub fn from_test_file(test_clock_file: Option<&Path>) -> Arc<dyn Clock> {
    match test_clock_file {
        Some(p) if !p.as_os_str().is_empty() => Arc::new(OffsetFileClock::new(p)),
        _ => Arc::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_agrees_with_itself() {
        let c = SystemClock;
        let (s, ms) = (c.now(), c.now_ms());
        assert!((ms / 1000 - s).abs() <= 1);
        assert!(s > 1_700_000_000);
    }

    #[test]
    fn offset_file_is_read_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let clock = from_test_file(Some(&file));
        // No file yet: no offset.
        assert!((clock.now() - SystemClock.now()).abs() <= 1);
        std::fs::write(&file, "3600\n").unwrap();
        std::thread::sleep(OffsetFileClock::REREAD + Duration::from_millis(5));
        assert!((clock.now() - SystemClock.now() - 3600).abs() <= 1);
        assert!((clock.now_ms() - SystemClock.now_ms() - 3_600_000).abs() <= 1000);
        // A file that no longer parses keeps the last offset.
        std::fs::write(&file, "soon").unwrap();
        std::thread::sleep(OffsetFileClock::REREAD + Duration::from_millis(5));
        assert!((clock.now() - SystemClock.now() - 3600).abs() <= 1);
        std::fs::write(&file, "-86400").unwrap();
        std::thread::sleep(OffsetFileClock::REREAD + Duration::from_millis(5));
        assert!((clock.now() - SystemClock.now() + 86400).abs() <= 1);
    }

    #[test]
    fn empty_path_is_the_system_clock() {
        let c = from_test_file(Some(Path::new("")));
        assert!((c.now() - SystemClock.now()).abs() <= 1);
        let fixed = || 42_i64;
        assert_eq!((fixed.now(), fixed.now_ms()), (42, 42_000));
    }
}
