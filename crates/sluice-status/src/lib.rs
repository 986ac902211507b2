//! The status page at `/`: what this process is and how it is doing, for an
//! operator with a browser and no dashboard at hand.
//!
//! It shows the roles the process runs, the peers connected to it (queriers
//! to a frontend or scheduler, frontends to a scheduler, frontends or
//! schedulers a querier pulls from), the queue per tenant, in-flight
//! queries, the results cache's hit ratio and, where the store or the
//! embedded engine runs, head series and blocks per tenant. Every number
//! is one the roles already keep: their gauges and counters in the
//! process's metrics registry (refreshed first, as `/metrics` does), and
//! the head's and the metastore's own counts. Plain HTML, refreshed by the
//! browser every 10 s; no script.

mod html;

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use prometheus::proto::MetricFamily;

/// Counts per tenant, sorted by tenant.
pub type PerTenant = Vec<(String, u64)>;
type Counts = Arc<dyn Fn() -> PerTenant + Send + Sync>;

/// Where the page's numbers come from.
#[derive(Clone)]
pub struct Sources {
    /// The roles this process runs, by their `-target` names.
    pub roles: Vec<&'static str>,
    pub registry: prometheus::Registry,
    /// Brings gauges read on demand (queue lengths) up to date.
    pub refresh: Vec<Arc<dyn Fn() + Send + Sync>>,
    /// Series in the head, per tenant (where the store runs).
    pub head_series: Option<Counts>,
    /// Blocks the queriers read, per tenant (where the engine runs).
    pub blocks: Option<Counts>,
}

impl Sources {
    pub fn new(roles: Vec<&'static str>, registry: prometheus::Registry) -> Sources {
        Sources {
            roles,
            registry,
            refresh: Vec::new(),
            head_series: None,
            blocks: None,
        }
    }
}

/// What the page shows, read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub roles: Vec<&'static str>,
    pub uptime_seconds: u64,
    /// Peers connected, as (what, how many), only those this process tracks.
    pub connected: Vec<(&'static str, u64)>,
    pub queue: PerTenant,
    /// Client requests being answered, and sub-queries a querier runs.
    pub inflight: Vec<(&'static str, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub head_series: Option<PerTenant>,
    pub blocks: Option<PerTenant>,
}

/// Gauges shown as connected peers, with what they count.
const CONNECTED: &[(&str, &str)] = &[
    ("sluice_connected_queriers", "queriers"),
    ("sluice_connected_querier_workers", "querier workers"),
    ("sluice_connected_schedulers", "query-schedulers"),
    ("sluice_scheduler_connected_frontends", "query-frontends"),
    (
        "sluice_querier_connected_owners",
        "frontends or schedulers this querier pulls from",
    ),
];

const INFLIGHT: &[(&str, &str)] = &[
    ("sluice_inflight_requests", "client requests"),
    (
        "sluice_querier_inflight_requests",
        "sub-queries on this querier",
    ),
];

impl Snapshot {
    /// Reads every source now.
    pub fn read(sources: &Sources, started: Instant) -> Snapshot {
        for refresh in &sources.refresh {
            refresh();
        }
        let families = sources.registry.gather();
        let lookups = labelled(&families, "sluice_results_cache_lookups_total", "result");
        let lookups_of = |result: &str| {
            lookups
                .iter()
                .find(|(name, _)| name == result)
                .map_or(0, |(_, count)| *count)
        };
        let mut queue = labelled(&families, "sluice_queue_length", "tenant");
        queue.retain(|(_, length)| *length > 0);
        Snapshot {
            roles: sources.roles.clone(),
            uptime_seconds: started.elapsed().as_secs(),
            connected: present(&families, CONNECTED),
            queue,
            inflight: present(&families, INFLIGHT),
            cache_hits: lookups_of("hit"),
            cache_misses: lookups_of("miss"),
            head_series: sources.head_series.as_ref().map(|counts| sorted(counts())),
            blocks: sources.blocks.as_ref().map(|counts| sorted(counts())),
        }
    }

    /// Hits over lookups, if there were any.
    pub fn cache_hit_ratio(&self) -> Option<f64> {
        let lookups = self.cache_hits + self.cache_misses;
        (lookups > 0).then(|| self.cache_hits as f64 / lookups as f64)
    }
}

/// The page, to merge into a role's HTTP router.
pub fn router(sources: Sources) -> axum::Router {
    let started = Instant::now();
    axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let sources = sources.clone();
            async move { page(&Snapshot::read(&sources, started)) }
        }),
    )
}

fn page(snapshot: &Snapshot) -> Response {
    let mut response = Response::new(html::render(snapshot).into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Numbers of the moment: never kept by a cache in front of sluice.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The named gauges the registry has, by their display names.
fn present(families: &[MetricFamily], names: &[(&str, &'static str)]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .filter_map(|(metric, shown)| {
            let family = families.iter().find(|family| family.name() == *metric)?;
            let total = family.get_metric().iter().map(value).sum::<f64>();
            Some((*shown, total.max(0.0) as u64))
        })
        .collect()
}

/// A metric's series summed by one label, sorted by it.
fn labelled(families: &[MetricFamily], name: &str, label: &str) -> PerTenant {
    let mut sums: Vec<(String, u64)> = Vec::new();
    let Some(family) = families.iter().find(|family| family.name() == name) else {
        return sums;
    };
    for metric in family.get_metric() {
        let Some(pair) = metric.get_label().iter().find(|pair| pair.name() == label) else {
            continue;
        };
        let amount = value(metric).max(0.0) as u64;
        match sums.iter_mut().find(|(key, _)| key == pair.value()) {
            Some((_, sum)) => *sum += amount,
            None => sums.push((pair.value().to_owned(), amount)),
        }
    }
    sorted(sums)
}

/// A gauge's or a counter's value: the one of the two a metric has is
/// set, the other reads 0.
fn value(metric: &prometheus::proto::Metric) -> f64 {
    metric.get_gauge().get_value() + metric.get_counter().get_value()
}

fn sorted(mut counts: PerTenant) -> PerTenant {
    counts.sort();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

    fn registry() -> prometheus::Registry {
        let registry = prometheus::Registry::new();
        let queue = IntGaugeVec::new(Opts::new("sluice_queue_length", "q"), &["tenant"]).unwrap();
        queue.with_label_values(&["team-b"]).set(3);
        queue.with_label_values(&["team-a"]).set(1);
        queue.with_label_values(&["idle"]).set(0);
        let queriers = IntGauge::new("sluice_connected_queriers", "c").unwrap();
        queriers.set(2);
        let lookups = IntCounterVec::new(
            Opts::new("sluice_results_cache_lookups_total", "l"),
            &["result"],
        )
        .unwrap();
        lookups.with_label_values(&["hit"]).inc_by(3);
        lookups.with_label_values(&["miss"]).inc_by(1);
        registry.register(Box::new(queue)).unwrap();
        registry.register(Box::new(queriers)).unwrap();
        registry.register(Box::new(lookups)).unwrap();
        registry
    }

    #[test]
    fn reads_the_numbers_the_roles_keep() {
        let refreshed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut sources = Sources::new(vec!["query-frontend"], registry());
        let flag = Arc::clone(&refreshed);
        sources.refresh.push(Arc::new(move || {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }));
        sources.blocks = Some(Arc::new(|| vec![("b".to_owned(), 2), ("a".to_owned(), 5)]));
        let snapshot = Snapshot::read(&sources, Instant::now());
        assert!(refreshed.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(snapshot.roles, ["query-frontend"]);
        assert_eq!(snapshot.connected, [("queriers", 2)]);
        assert_eq!(
            snapshot.queue,
            [("team-a".to_owned(), 1), ("team-b".to_owned(), 3)],
            "tenants with nothing queued are left out"
        );
        assert_eq!(snapshot.cache_hit_ratio(), Some(0.75));
        assert_eq!(
            snapshot.blocks,
            Some(vec![("a".to_owned(), 5), ("b".to_owned(), 2)])
        );
        assert_eq!(snapshot.head_series, None);
        assert!(snapshot.inflight.is_empty());
    }

    #[test]
    fn no_lookups_means_no_ratio() {
        let snapshot = Snapshot::default();
        assert_eq!(snapshot.cache_hit_ratio(), None);
    }
}
