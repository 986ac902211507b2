//! The time every stage and cache reads, injected: the system's clock in a
//! running frontend, a [`ManualClock`] in tests, so freshness, TTLs and
//! memo expiry are tested by moving time rather than by sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of the current time, wall and monotonic.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch: what query times are compared to.
    fn now_ms(&self) -> i64;
    /// The monotonic now: what deadlines and TTLs are measured against.
    fn now(&self) -> Instant;
}

/// The clock the stages share.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicI64,
    monotonic_origin: Instant,
    monotonic_elapsed_ns: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `wall_ms` until advanced.
    pub fn at(wall_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall_ms: AtomicI64::new(wall_ms),
            monotonic_origin: Instant::now(),
            monotonic_elapsed_ns: AtomicU64::new(0),
        })
    }

    /// Moves both the wall and the monotonic time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.wall_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.monotonic_elapsed_ns
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn now(&self) -> Instant {
        self.monotonic_origin
            + Duration::from_nanos(self.monotonic_elapsed_ns.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at(1_000);
        let before = clock.now();
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.now(), before);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        assert_eq!(clock.now() - before, Duration::from_secs(2));
    }

    #[test]
    fn the_system_clock_reads_the_present() {
        let year_2020_ms = 1_577_836_800_000;
        assert!(SystemClock.now_ms() > year_2020_ms);
    }
}
