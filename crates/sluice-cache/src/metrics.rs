//! The cache's Prometheus collectors.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All `sluice_cache_*` collectors. Register once per process with
/// [`CacheMetrics::register`] and pass the same value to every cache; the
/// `cache` label (from [`crate::CacheConfig::name`]) tells caches apart.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    requests: IntCounterVec,
    hits: IntCounterVec,
    misses: IntCounterVec,
    errors: IntCounterVec,
    bytes_read: IntCounterVec,
    bytes_written: IntCounterVec,
    skipped: IntCounterVec,
    size_bytes: IntGaugeVec,
    items: IntGaugeVec,
    evictions: IntCounterVec,
}

impl CacheMetrics {
    /// Creates the collectors and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<CacheMetrics> {
        let metrics = CacheMetrics::unregistered();
        for collector in [
            &metrics.requests,
            &metrics.hits,
            &metrics.misses,
            &metrics.errors,
            &metrics.bytes_read,
            &metrics.bytes_written,
            &metrics.skipped,
            &metrics.evictions,
        ] {
            registry.register(Box::new(collector.clone()))?;
        }
        registry.register(Box::new(metrics.size_bytes.clone()))?;
        registry.register(Box::new(metrics.items.clone()))?;
        Ok(metrics)
    }

    /// Collectors registered nowhere: for tests and tools that do not export
    /// metrics.
    pub fn unregistered() -> CacheMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
        };
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["cache"]).expect("valid metric definition")
        };
        CacheMetrics {
            requests: counter(
                "sluice_cache_requests_total",
                "Cache calls (one get_many or set_many each).",
                &["cache", "backend", "op"],
            ),
            hits: counter(
                "sluice_cache_hits_total",
                "Keys found (and decoded) in the cache.",
                &["cache", "backend"],
            ),
            misses: counter(
                "sluice_cache_misses_total",
                "Keys asked for and not found, including failed and undecodable ones.",
                &["cache", "backend"],
            ),
            errors: counter(
                "sluice_cache_errors_total",
                "Cache failures turned into misses or dropped writes, by reason.",
                &["cache", "backend", "reason"],
            ),
            bytes_read: counter(
                "sluice_cache_read_bytes_total",
                "Value bytes read from the cache backend.",
                &["cache", "backend"],
            ),
            bytes_written: counter(
                "sluice_cache_written_bytes_total",
                "Value bytes written to the cache backend.",
                &["cache", "backend"],
            ),
            skipped: counter(
                "sluice_cache_skipped_writes_total",
                "Entries not written, by reason (too_large, zero_ttl, server_down).",
                &["cache", "backend", "reason"],
            ),
            size_bytes: gauge(
                "sluice_cache_size_bytes",
                "Bytes charged to the in-process cache (keys, values and per-entry overhead).",
            ),
            items: gauge(
                "sluice_cache_items",
                "Entries held by the in-process cache.",
            ),
            evictions: counter(
                "sluice_cache_evictions_total",
                "In-process entries evicted to make room (expired ones included).",
                &["cache"],
            ),
        }
    }

    pub(crate) fn handles(&self, cache: &str, backend: &str) -> Handles {
        Handles {
            metrics: self.clone(),
            get_requests: self.requests.with_label_values(&[cache, backend, "get"]),
            set_requests: self.requests.with_label_values(&[cache, backend, "set"]),
            hits: self.hits.with_label_values(&[cache, backend]),
            misses: self.misses.with_label_values(&[cache, backend]),
            bytes_read: self.bytes_read.with_label_values(&[cache, backend]),
            bytes_written: self.bytes_written.with_label_values(&[cache, backend]),
            size_bytes: self.size_bytes.with_label_values(&[cache]),
            items: self.items.with_label_values(&[cache]),
            evictions: self.evictions.with_label_values(&[cache]),
            cache: cache.to_owned(),
            backend: backend.to_owned(),
        }
    }
}

/// The collectors of one cache and backend with their labels resolved, so
/// the hot path does no label lookups for the common series.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    metrics: CacheMetrics,
    cache: String,
    backend: String,
    pub(crate) get_requests: IntCounter,
    pub(crate) set_requests: IntCounter,
    pub(crate) hits: IntCounter,
    pub(crate) misses: IntCounter,
    pub(crate) bytes_read: IntCounter,
    pub(crate) bytes_written: IntCounter,
    pub(crate) size_bytes: IntGauge,
    pub(crate) items: IntGauge,
    pub(crate) evictions: IntCounter,
}

impl Handles {
    pub(crate) fn error(&self, reason: &str) {
        self.metrics
            .errors
            .with_label_values(&[&self.cache, &self.backend, reason])
            .inc();
    }

    pub(crate) fn skipped(&self, reason: &str, n: u64) {
        self.metrics
            .skipped
            .with_label_values(&[&self.cache, &self.backend, reason])
            .inc_by(n);
    }
}
