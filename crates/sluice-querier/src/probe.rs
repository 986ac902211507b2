//! The backend's responsiveness, probed: while the querier is running
//! work, it asks its downstream a trivial query every
//! `-querier.backend-probe-interval` and adapts its concurrency to that query's latency
//! (additive increase, multiplicative decrease, as TCP does).
//!
//! Task latencies alone cannot tell a saturated backend from heavy work: a
//! steady flood of 3-second queries becomes the latency the gradient
//! expects. A trivial query costs the same whatever else runs, so its
//! latency rising above its unloaded level is exactly the wait every other
//! query meets in the backend (on a Prometheus whose cores are all busy,
//! Go's scheduler makes a new request wait for a time slice). That wait is
//! what a quiet tenant's cheap query pays, so it is what the limit keeps
//! near zero.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::{ConcurrencyLimiter, Executor, QuerierMetrics};

/// A probe slower than its baseline by both this factor and
/// [`CONGESTED_MARGIN`] says the backend is making requests wait.
const CONGESTED_FACTOR: f64 = 3.0;
const CONGESTED_MARGIN: f64 = 0.002;
/// After a decrease, probes that still see the old load are not counted
/// again: the tasks that caused it take time to end.
const COOLDOWN_PROBES: u32 = 5;
/// Calm probes needed for one step up, at first; doubled after each
/// decrease (up to [`MAX_STREAK`]), so a limit that overshot probes more
/// slowly, and halved again with each step up.
const FIRST_STREAK: u32 = 4;
const MAX_STREAK: u32 = 64;
/// Each probe lets the baseline creep up by this factor, so a backend
/// that became slower for good is followed; a faster probe resets it.
const BASELINE_CREEP: f64 = 1.002;

/// The limit the probes allow.
#[derive(Debug)]
pub(crate) struct ProbeAimd {
    min_limit: usize,
    max_limit: usize,
    limit: usize,
    /// The fastest recent probe, in seconds: the backend unloaded.
    baseline: Option<f64>,
    calm_streak: u32,
    streak_needed: u32,
    cooldown: u32,
}

impl ProbeAimd {
    pub(crate) fn new(min_limit: usize, max_limit: usize) -> ProbeAimd {
        ProbeAimd {
            min_limit,
            max_limit,
            limit: max_limit,
            baseline: None,
            calm_streak: 0,
            streak_needed: FIRST_STREAK,
            cooldown: 0,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Records one probe's latency and adapts the limit.
    pub(crate) fn sample(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let baseline = match self.baseline {
            Some(baseline) => (baseline * BASELINE_CREEP).min(seconds),
            None => seconds,
        };
        self.baseline = Some(baseline);
        let congested =
            seconds > baseline * CONGESTED_FACTOR && seconds > baseline + CONGESTED_MARGIN;
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return;
        }
        if congested {
            self.decrease();
        } else {
            self.calm_streak += 1;
            if self.calm_streak >= self.streak_needed {
                self.increase();
            }
        }
    }

    fn decrease(&mut self) {
        let shrunk = (self.limit as f64 * 0.7).floor() as usize;
        self.limit = shrunk.clamp(self.min_limit, self.max_limit);
        self.calm_streak = 0;
        self.streak_needed = (self.streak_needed * 2).min(MAX_STREAK);
        self.cooldown = COOLDOWN_PROBES;
    }

    fn increase(&mut self) {
        self.limit = (self.limit + 1).min(self.max_limit);
        self.calm_streak = 0;
        self.streak_needed = (self.streak_needed / 2).max(FIRST_STREAK);
    }
}

/// Probes the executor's backend every `interval` while tasks run, feeding
/// the limiter, until `stop` is raised. Does nothing for executors that
/// cannot probe, or with a zero interval.
pub(crate) async fn probe_backend<E: Executor>(
    executor: Arc<E>,
    limiter: Arc<ConcurrencyLimiter>,
    metrics: QuerierMetrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // An idle querier loads nothing: what the backend does then is
        // someone else's doing, and says nothing about our limit.
        if metrics.inflight.get() <= 0 {
            continue;
        }
        let Some(latency) = executor.probe().await else {
            return;
        };
        metrics
            .backend_probe_duration
            .observe(latency.as_secs_f64());
        limiter.record_probe(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(aimd: &mut ProbeAimd, probes: usize, latency: Duration) {
        for _ in 0..probes {
            aimd.sample(latency);
        }
    }

    const CALM: Duration = Duration::from_micros(400);
    const CONGESTED: Duration = Duration::from_millis(15);

    #[test]
    fn a_congested_backend_drives_the_limit_to_its_floor() {
        let mut aimd = ProbeAimd::new(2, 20);
        feed(&mut aimd, 10, CALM);
        assert_eq!(aimd.limit(), 20);
        feed(&mut aimd, 60, CONGESTED);
        assert_eq!(aimd.limit(), 2);
    }

    #[test]
    fn a_calm_backend_lets_the_limit_climb_back_slowly() {
        let mut aimd = ProbeAimd::new(2, 20);
        feed(&mut aimd, 10, CALM);
        feed(&mut aimd, 60, CONGESTED);
        // Four decreases doubled the calm streak a step up needs to 64.
        feed(&mut aimd, 60, CALM);
        assert_eq!(aimd.limit(), 2);
        feed(&mut aimd, 10, CALM);
        assert_eq!(aimd.limit(), 3);
        feed(&mut aimd, 2_000, CALM);
        assert_eq!(aimd.limit(), 20);
    }

    #[test]
    fn one_slow_probe_among_calm_ones_costs_one_decrease() {
        let mut aimd = ProbeAimd::new(2, 20);
        feed(&mut aimd, 10, CALM);
        aimd.sample(CONGESTED);
        assert_eq!(aimd.limit(), 14);
        // The cooldown: the next probes still seeing the load change nothing.
        feed(&mut aimd, COOLDOWN_PROBES as usize, CONGESTED);
        assert_eq!(aimd.limit(), 14);
    }

    #[test]
    fn jitter_within_the_margin_is_not_congestion() {
        let mut aimd = ProbeAimd::new(2, 20);
        // Five times the baseline, but only a millisecond more: noise.
        for _ in 0..100 {
            aimd.sample(Duration::from_micros(250));
            aimd.sample(Duration::from_micros(1_250));
        }
        assert_eq!(aimd.limit(), 20);
    }
}
