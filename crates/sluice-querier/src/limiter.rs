//! The querier-wide adaptive concurrency limit: how many workers may be
//! ready for, or running, a sub-query at once.
//!
//! Pulling alone bounds a querier at `max_concurrent`, which a slow backend
//! (a Prometheus with two cores running twenty 3-day range queries) cannot
//! serve without every query, cheap or heavy, slowing down in proportion.
//! The limit follows the gradient of latency, as Netflix's Gradient2 does:
//! the mean execution time of a window of tasks (short term) against an
//! exponential average of those means (long term). Latency rising above the
//! long-term level by more than `tolerance` shrinks the limit; otherwise it
//! grows by about the square root of itself, so it probes for capacity.
//!
//! A long-term average rather than a minimum is what makes it work with
//! mixed work: cheap and heavy queries share the querier, and a minimum taken
//! from a 5 ms instant query would read every 3-second range query as
//! overload and pin the limit to its floor. The average moves with the mix
//! (slowly, so a real inflation shows), and is pulled down faster when
//! latency falls well below it, so the limit recovers after a burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::Notify;

/// How the limit adapts.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitConfig {
    /// The floor; keep it above the queue owners' reserved slots so that a
    /// tenant arriving beside a flood still finds a slot.
    pub min_limit: usize,
    /// The ceiling (`-querier.max-concurrent`); also where the limit starts.
    pub max_limit: usize,
    /// Task executions averaged into one short-term latency.
    pub window_samples: usize,
    /// Windows the long-term average spans (its EWMA weight is 2/(n+1)).
    pub long_windows: u32,
    /// Short-term latency may exceed the long-term one by this factor before
    /// the limit shrinks.
    pub tolerance: f64,
    /// Weight of each new estimate in the limit, to damp noise.
    pub smoothing: f64,
}

impl LimitConfig {
    /// Gradient2's defaults, scaled for windows of a few tasks each.
    pub fn new(min_limit: usize, max_limit: usize) -> LimitConfig {
        let max_limit = max_limit.max(1);
        LimitConfig {
            min_limit: min_limit.clamp(1, max_limit),
            max_limit,
            window_samples: 10,
            long_windows: 100,
            tolerance: 1.5,
            smoothing: 0.2,
        }
    }
}

/// The gradient estimator alone, without permits: fed latencies, it says
/// what the limit should be.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: LimitConfig,
    limit: f64,
    long_rtt: Option<f64>,
    window_sum: f64,
    window_count: usize,
    window_max_in_flight: usize,
}

impl Gradient {
    pub(crate) fn new(config: LimitConfig) -> Gradient {
        Gradient {
            limit: config.max_limit as f64,
            config,
            long_rtt: None,
            window_sum: 0.0,
            window_count: 0,
            window_max_in_flight: 0,
        }
    }

    /// The current limit, a whole number within `[min_limit, max_limit]`.
    pub(crate) fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.config.min_limit, self.config.max_limit)
    }

    /// Records one task's execution time, `in_flight` tasks running with it.
    pub(crate) fn sample(&mut self, latency: Duration, in_flight: usize) {
        self.window_sum += latency.as_secs_f64();
        self.window_count += 1;
        self.window_max_in_flight = self.window_max_in_flight.max(in_flight);
        if self.window_count < self.config.window_samples {
            return;
        }
        let short_rtt = self.window_sum / self.window_count as f64;
        let in_flight = self.window_max_in_flight;
        self.window_sum = 0.0;
        self.window_count = 0;
        self.window_max_in_flight = 0;
        self.update(short_rtt.max(1e-6), in_flight);
    }

    fn update(&mut self, short_rtt: f64, in_flight: usize) {
        let weight = 2.0 / (f64::from(self.config.long_windows) + 1.0);
        let mut long_rtt = match self.long_rtt {
            None => short_rtt,
            Some(long) => long + weight * (short_rtt - long),
        };
        // Latency fell well below the long-term level (a burst of slow work
        // ended): follow it down faster, or the limit would not shrink
        // again when the next burst starts.
        if long_rtt / short_rtt > 2.0 {
            long_rtt *= 0.95;
        }
        self.long_rtt = Some(long_rtt);
        // A querier using under half its limit learns nothing about the
        // backend's capacity from its latency.
        if (in_flight as f64) < self.limit / 2.0 {
            return;
        }
        // At most halve per window, so one outlier cannot collapse the limit.
        let gradient = (self.config.tolerance * long_rtt / short_rtt).clamp(0.5, 1.0);
        // Headroom to probe with. Gradient2's sqrt(limit) would hold the limit
        // at 4 however high latency stays (0.1 L = 0.2 sqrt L at gradient
        // 0.5); half of it lets the limit reach a floor of 2.
        let queue_allowance = self.limit.sqrt() / 2.0;
        let estimate = self.limit * gradient + queue_allowance;
        let smoothed =
            self.limit * (1.0 - self.config.smoothing) + estimate * self.config.smoothing;
        self.limit = smoothed.clamp(self.config.min_limit as f64, self.config.max_limit as f64);
    }
}

/// Metrics of the limiter.
#[derive(Clone)]
pub(crate) struct LimiterGauges {
    pub(crate) limit: IntGauge,
    pub(crate) permits_in_use: IntGauge,
}

/// Hands out permits up to the adaptive limit. A worker takes one before it
/// tells its owner it is ready and keeps it until its task ends.
///
/// The limit is divided among the owners (frontends or schedulers) in
/// proportion to their workers, at least one each: a ready worker waits at
/// its owner holding its permit, so with one shared pool the idle workers of
/// one owner could hold every permit while another owner's queue starved.
pub struct ConcurrencyLimiter {
    state: Mutex<LimiterState>,
    // Signalled when a permit is returned or the limit grows.
    freed: Notify,
    gauges: LimiterGauges,
}

struct LimiterState {
    gradient: Gradient,
    /// The limit the backend's probed latency allows, once probes come in.
    probed: Option<crate::probe::ProbeAimd>,
    /// Per owner: its workers and the permits they hold.
    owners: HashMap<Arc<str>, OwnerPermits>,
    in_use: usize,
}

#[derive(Default)]
struct OwnerPermits {
    workers: usize,
    in_use: usize,
}

impl LimiterState {
    /// The lower of what task latencies and backend probes allow.
    fn limit(&self) -> usize {
        let gradient = self.gradient.limit();
        self.probed
            .as_ref()
            .map_or(gradient, |probed| gradient.min(probed.limit()))
    }

    /// The permits `owner`'s workers may hold: its share of the limit by
    /// worker count, rounded down so the shares never exceed the limit, but
    /// at least one so that every owner is served.
    fn owner_limit(&self, owner: &OwnerPermits) -> usize {
        let all_workers: usize = self.owners.values().map(|o| o.workers).sum();
        if all_workers == 0 {
            return 1;
        }
        (self.limit() * owner.workers / all_workers).max(1)
    }
}

/// Admission of one worker; returned on drop.
#[must_use = "dropping the permit returns it at once"]
pub struct ConcurrencyPermit {
    limiter: Arc<ConcurrencyLimiter>,
    owner: Arc<str>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        state.in_use -= 1;
        // Saturating: the owner may have been forgotten and found again
        // since this permit was taken.
        if let Some(owner) = state.owners.get_mut(&self.owner) {
            owner.in_use = owner.in_use.saturating_sub(1);
        }
        self.limiter.gauges.permits_in_use.set(state.in_use as i64);
        drop(state);
        self.limiter.freed.notify_waiters();
    }
}

impl ConcurrencyLimiter {
    pub(crate) fn new(config: LimitConfig, gauges: LimiterGauges) -> Arc<ConcurrencyLimiter> {
        let gradient = Gradient::new(config);
        gauges.limit.set(gradient.limit() as i64);
        gauges.permits_in_use.set(0);
        Arc::new(ConcurrencyLimiter {
            state: Mutex::new(LimiterState {
                gradient,
                probed: None,
                owners: HashMap::new(),
                in_use: 0,
            }),
            freed: Notify::new(),
            gauges,
        })
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// Sets how many workers pull from `owner`; `0` forgets it (permits its
    /// workers still hold are returned without effect).
    pub(crate) fn set_workers(&self, owner: &str, workers: usize) {
        let mut state = self.lock();
        if workers == 0 {
            state.owners.remove(owner);
        } else {
            state.owners.entry(Arc::from(owner)).or_default().workers = workers;
        }
        drop(state);
        // Shares moved: some owner may have room now.
        self.freed.notify_waiters();
    }

    /// A permit for a worker of `owner` if its share has one free now.
    pub fn try_acquire(self: &Arc<Self>, owner: &str) -> Option<ConcurrencyPermit> {
        let mut state = self.lock();
        let state = &mut *state;
        let (key, permits) = state.owners.get_key_value(owner)?;
        if permits.in_use >= state.owner_limit(permits) {
            return None;
        }
        let key = Arc::clone(key);
        state.owners.get_mut(&key).expect("just found").in_use += 1;
        state.in_use += 1;
        self.gauges.permits_in_use.set(state.in_use as i64);
        Some(ConcurrencyPermit {
            limiter: Arc::clone(self),
            owner: key,
        })
    }

    /// Waits for a permit for a worker of `owner`. Cancel-safe: nothing is
    /// taken until it returns.
    pub async fn acquire(self: &Arc<Self>, owner: &str) -> ConcurrencyPermit {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between is seen.
            freed.as_mut().enable();
            if let Some(permit) = self.try_acquire(owner) {
                return permit;
            }
            freed.await;
        }
    }

    /// Records one task's execution time (not its queue time), with
    /// `running` tasks executing beside it (itself included), and adapts.
    /// Ready but idle workers hold permits too, so they are not counted.
    pub fn record(&self, latency: Duration, running: usize) {
        self.adapt(|state| state.gradient.sample(latency, running));
    }

    /// Records the latency of one probe of the backend (see [`crate::probe`]).
    pub(crate) fn record_probe(&self, latency: Duration) {
        let (min_limit, max_limit) = {
            let state = self.lock();
            (
                state.gradient.config.min_limit,
                state.gradient.config.max_limit,
            )
        };
        self.adapt(|state| {
            state
                .probed
                .get_or_insert_with(|| crate::probe::ProbeAimd::new(min_limit, max_limit))
                .sample(latency)
        });
    }

    /// Applies `change` to the estimators, publishing the new limit and
    /// waking waiters when it grew.
    fn adapt(&self, change: impl FnOnce(&mut LimiterState)) {
        let mut state = self.lock();
        let before = state.limit();
        change(&mut state);
        let after = state.limit();
        drop(state);
        if after != before {
            self.gauges.limit.set(after as i64);
            tracing::debug!(limit = after, "querier concurrency limit changed");
        }
        if after > before {
            self.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(min: usize, max: usize) -> Gradient {
        Gradient::new(LimitConfig::new(min, max))
    }

    /// Feeds `windows` windows of `latency`, every task running beside as
    /// many others as the current limit allows (a saturated querier).
    fn feed(g: &mut Gradient, windows: usize, latency: Duration) {
        for _ in 0..windows * g.config.window_samples {
            let in_flight = g.limit();
            g.sample(latency, in_flight);
        }
    }

    #[test]
    fn steady_latency_keeps_the_limit_at_its_ceiling() {
        let mut g = gradient(2, 20);
        feed(&mut g, 50, Duration::from_millis(10));
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn inflated_latency_shrinks_the_limit_and_recovery_restores_it() {
        let mut g = gradient(2, 20);
        feed(&mut g, 30, Duration::from_millis(100));
        assert_eq!(g.limit(), 20);
        // The backend saturates: each task takes four times longer.
        feed(&mut g, 15, Duration::from_millis(400));
        let shrunk = g.limit();
        assert!(shrunk <= 10, "limit {shrunk} did not shrink");
        // Load falls back to its old level: the limit climbs again.
        feed(&mut g, 100, Duration::from_millis(100));
        assert_eq!(g.limit(), 20, "limit did not recover");
    }

    #[test]
    fn limit_stays_within_its_bounds() {
        let mut g = gradient(3, 12);
        feed(&mut g, 5, Duration::from_millis(1));
        // Latency explodes for long: the floor holds.
        let mut latency = Duration::from_millis(10);
        for _ in 0..40 {
            feed(&mut g, 1, latency);
            assert!((3..=12).contains(&g.limit()), "limit {}", g.limit());
            latency *= 2;
        }
        assert_eq!(g.limit(), 3);
        // Latency collapses: the ceiling holds.
        feed(&mut g, 200, Duration::from_micros(5));
        assert_eq!(g.limit(), 12);
    }

    #[test]
    fn an_idle_querier_keeps_its_limit() {
        let mut g = gradient(2, 20);
        feed(&mut g, 10, Duration::from_millis(10));
        // One task at a time, however slow, says nothing about capacity.
        for _ in 0..100 {
            g.sample(Duration::from_secs(5), 1);
        }
        assert_eq!(g.limit(), 20);
    }

    /// A limiter whose only owner, `"owner"`, has `max` workers.
    fn limiter(min: usize, max: usize) -> Arc<ConcurrencyLimiter> {
        let gauges = LimiterGauges {
            limit: IntGauge::new("limit", "limit").unwrap(),
            permits_in_use: IntGauge::new("in_use", "in use").unwrap(),
        };
        let limiter = ConcurrencyLimiter::new(LimitConfig::new(min, max), gauges);
        limiter.set_workers("owner", max);
        limiter
    }

    /// Feeds the limiter a saturated backend until its limit is below `max`.
    fn shrink(limiter: &ConcurrencyLimiter, max: usize) -> usize {
        for _ in 0..20 {
            limiter.record(Duration::from_millis(10), max);
        }
        for _ in 0..50 {
            limiter.record(Duration::from_secs(1), max);
        }
        let limit = limiter.limit();
        assert!(limit < max, "limit {limit}");
        limit
    }

    #[tokio::test(start_paused = true)]
    async fn permits_wait_for_a_release_under_the_limit() {
        let limiter = limiter(1, 2);
        let first = limiter.acquire("owner").await;
        let _second = limiter.acquire("owner").await;
        assert!(limiter.try_acquire("owner").is_none());
        assert_eq!(limiter.gauges.permits_in_use.get(), 2);
        let waiting = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire("owner").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a released permit is handed on")
            .unwrap();
        assert_eq!(limiter.gauges.permits_in_use.get(), 2);
        drop(third);
        assert_eq!(limiter.gauges.permits_in_use.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shrunk_limit_admits_fewer_workers() {
        let limiter = limiter(2, 8);
        let held: Vec<_> = (0..8)
            .map(|_| limiter.try_acquire("owner").unwrap())
            .collect();
        let limit = shrink(&limiter, 8);
        assert_eq!(limiter.gauges.limit.get(), limit as i64);
        drop(held);
        let admitted: Vec<_> = std::iter::from_fn(|| limiter.try_acquire("owner")).collect();
        assert_eq!(admitted.len(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_workers_of_one_owner_cannot_starve_another() {
        let limiter = limiter(2, 20);
        limiter.set_workers("owner", 10);
        limiter.set_workers("other", 10);
        let limit = shrink(&limiter, 20);
        // One owner's workers take all they can (as ready workers waiting
        // at an idle owner would): the other owner keeps its share.
        let first: Vec<_> = std::iter::from_fn(|| limiter.try_acquire("owner")).collect();
        let second: Vec<_> = std::iter::from_fn(|| limiter.try_acquire("other")).collect();
        assert_eq!(first.len(), limit / 2, "limit {limit}");
        assert_eq!(second.len(), limit / 2, "limit {limit}");
        // An owner that went away gets nothing; its share goes to the rest.
        limiter.set_workers("other", 0);
        assert!(limiter.try_acquire("other").is_none());
        drop(second);
        let more: Vec<_> = std::iter::from_fn(|| limiter.try_acquire("owner")).collect();
        assert_eq!(first.len() + more.len(), limit);
    }
}
