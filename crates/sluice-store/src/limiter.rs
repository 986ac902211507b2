//! Per-tenant ingestion rate limit: a token bucket of samples (exemplars
//! and metadata count too, as in Mimir), refilled at the rate, holding at
//! most the burst. Each call names the tenant's rate and burst in force,
//! so a runtime override applies to the next write without a restart.
//! Time is passed in, so tests need no sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A tenant's rate (items a second; 0 turns the limit off) and burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub(crate) per_second: f64,
    pub(crate) burst: usize,
}

impl Rate {
    pub(crate) fn message(&self) -> String {
        format!(
            "the request has been rejected because the tenant exceeded the ingestion rate limit, set to {} items/s with a maximum allowed burst of {}. This limit is applied on the total number of samples, exemplars and metadata received (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure -distributor.ingestion-rate-limit and -distributor.ingestion-burst-size, or contact your service administrator.",
            self.per_second, self.burst
        )
    }
}

#[derive(Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes `items` from `tenant`'s bucket, or refuses and takes nothing.
    pub(crate) fn allow(&self, tenant: &str, rate: Rate, items: usize, now: Instant) -> bool {
        if rate.per_second <= 0.0 {
            return true;
        }
        let burst = rate.burst as f64;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (tokens, last) = buckets.entry(tenant.to_owned()).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        // A lowered burst caps what was saved under the old one at once.
        *tokens = (*tokens + elapsed * rate.per_second).min(burst);
        *last = now;
        if *tokens < items as f64 {
            return false;
        }
        *tokens -= items as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 100.0,
        burst: 1000,
    };

    #[test]
    fn a_bucket_refills_at_the_rate_up_to_the_burst() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert!(limiter.allow("a", RATE, 1000, start));
        assert!(!limiter.allow("a", RATE, 1, start));
        assert!(
            limiter.allow("b", RATE, 500, start),
            "tenants have their own buckets"
        );
        assert!(!limiter.allow("a", RATE, 101, start + Duration::from_secs(1)));
        assert!(limiter.allow("a", RATE, 100, start + Duration::from_secs(1)));
        let hour = start + Duration::from_secs(3600);
        assert!(!limiter.allow("a", RATE, 1001, hour));
        assert!(limiter.allow("a", RATE, 1000, hour));
        let off = Rate {
            per_second: 0.0,
            burst: 0,
        };
        assert!(limiter.allow("a", off, 1 << 30, start));
    }

    #[test]
    fn a_changed_rate_or_burst_applies_to_the_next_call() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert!(limiter.allow("a", RATE, 500, start));
        let smaller = Rate {
            per_second: 10.0,
            burst: 100,
        };
        assert!(
            !limiter.allow("a", smaller, 101, start),
            "the saved 500 are capped at the new burst"
        );
        assert!(limiter.allow("a", smaller, 100, start));
        let later = start + Duration::from_secs(1);
        assert!(!limiter.allow("a", smaller, 11, later), "refilled at 10/s");
        assert!(limiter.allow("a", RATE, 100, later + Duration::from_secs(9)));
    }
}
