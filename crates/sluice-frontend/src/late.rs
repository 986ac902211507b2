//! Late writes: samples the store accepted for time the results cache may
//! already hold as settled (older than `-query-frontend.max-cache-freshness`),
//! such as out-of-order samples or a backfill. The store in the same
//! process reports every write's oldest sample here; the cache stages then
//! cut the extents and memoised answers computed before such a write and
//! reaching its samples (see `sluice_plan::without_late_data`).
//!
//! A frontend in another process than the store hears of no write: its
//! cache keeps what it computed until the entries' TTL (see the README).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_plan::LateWrite;

use crate::clock::SharedClock;

/// Per tenant, at most this many late writes are told apart; beyond it
/// the two oldest merge into one reaching from the older start to the
/// later time, which cuts at least as much as both did.
const MAX_PER_TENANT: usize = 32;

/// Every tenant's late writes. Kept for as long as the process runs: a
/// cached extent may be carried from entry to entry for longer than any
/// one entry's TTL, so no age makes a write safe to forget.
pub(crate) struct LateWrites {
    writes: Mutex<HashMap<String, Vec<LateWrite>>>,
    /// Any write recorded at all: the cache's lookups skip the lock until.
    any: AtomicBool,
    max_freshness: Duration,
    clock: SharedClock,
}

impl LateWrites {
    pub(crate) fn new(max_freshness: Duration, clock: SharedClock) -> LateWrites {
        LateWrites {
            writes: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
            max_freshness,
            clock,
        }
    }

    /// Notes that the store accepted samples of `tenant` as old as
    /// `oldest_ms`; only those older than the freshness window are late.
    pub(crate) fn note(&self, tenant: &str, oldest_ms: i64) {
        let now_ms = self.clock.now_ms();
        let settled_until = now_ms.saturating_sub(self.max_freshness.as_millis() as i64);
        if oldest_ms > settled_until {
            return;
        }
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let tenant_writes = writes.entry(tenant.to_owned()).or_default();
        tenant_writes.push(LateWrite {
            from_ms: oldest_ms,
            at_ms: now_ms,
        });
        if tenant_writes.len() > MAX_PER_TENANT {
            let newer = tenant_writes.remove(1);
            let older = &mut tenant_writes[0];
            older.from_ms = older.from_ms.min(newer.from_ms);
            older.at_ms = older.at_ms.max(newer.at_ms);
        }
        self.any.store(true, Ordering::Release);
    }

    /// `tenant`'s late writes, oldest first.
    pub(crate) fn of(&self, tenant: &str) -> Vec<LateWrite> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.get(tenant).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn only_writes_older_than_the_freshness_window_are_late() {
        let clock = ManualClock::at(1_000_000);
        let late = LateWrites::new(Duration::from_secs(600), clock.clone());
        late.note("a", 1_000_000 - 599_000);
        assert!(late.of("a").is_empty());
        late.note("a", 1_000_000 - 600_000);
        assert_eq!(
            late.of("a"),
            vec![LateWrite {
                from_ms: 400_000,
                at_ms: 1_000_000
            }]
        );
        assert!(late.of("b").is_empty());
    }

    #[test]
    fn many_writes_merge_into_one_that_cuts_at_least_as_much() {
        let clock = ManualClock::at(1_000_000);
        let late = LateWrites::new(Duration::ZERO, clock.clone());
        for index in 0..=MAX_PER_TENANT as i64 {
            clock.advance(Duration::from_millis(10));
            late.note("a", 500_000 - index);
        }
        let writes = late.of("a");
        assert_eq!(writes.len(), MAX_PER_TENANT);
        assert_eq!(
            writes[0],
            LateWrite {
                from_ms: 499_999,
                at_ms: 1_000_020
            }
        );
    }
}
