//! Per-tenant ingestion rate limit: a token bucket of samples (exemplars
//! and metadata count too, as in Mimir), refilled at the rate, holding at
//! most the burst. Time is passed in, so tests need no sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub(crate) struct RateLimiter {
    /// Items per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: usize) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `items` from `tenant`'s bucket, or refuses and takes nothing.
    pub(crate) fn allow(&self, tenant: &str, items: usize, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (tokens, last) = buckets
            .entry(tenant.to_owned())
            .or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens < items as f64 {
            return false;
        }
        *tokens -= items as f64;
        true
    }

    pub(crate) fn message(&self) -> String {
        format!(
            "the request has been rejected because the tenant exceeded the ingestion rate limit, set to {} items/s with a maximum allowed burst of {}. This limit is applied on the total number of samples, exemplars and metadata received (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure -distributor.ingestion-rate-limit and -distributor.ingestion-burst-size, or contact your service administrator.",
            self.rate, self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_refills_at_the_rate_up_to_the_burst() {
        let limiter = RateLimiter::new(100.0, 1000);
        let start = Instant::now();
        assert!(limiter.allow("a", 1000, start));
        assert!(!limiter.allow("a", 1, start));
        assert!(
            limiter.allow("b", 500, start),
            "tenants have their own buckets"
        );
        assert!(!limiter.allow("a", 101, start + Duration::from_secs(1)));
        assert!(limiter.allow("a", 100, start + Duration::from_secs(1)));
        assert!(!limiter.allow("a", 1001, start + Duration::from_secs(3600)));
        assert!(limiter.allow("a", 1000, start + Duration::from_secs(3600)));
        assert!(RateLimiter::new(0.0, 0).allow("a", 1 << 30, start));
    }
}
