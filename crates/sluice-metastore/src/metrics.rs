//! Metrics of the blocks' caches and of the bucket's requests, named after
//! Mimir's bucket store (`*_indexcache_*`) and Thanos's object store
//! (`*_objstore_bucket_operations_total`). The caches and the bucket keep
//! plain atomic counters; this collector copies them into Prometheus
//! metrics when `/metrics` is scraped, so the read path never touches a
//! metric.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use sluice_block::{BlockCaches, CacheStats};
use sluice_bucket::Bucket;

pub(crate) struct StoreMetrics {
    caches: BlockCaches,
    bucket: Bucket,
    requests: IntCounterVec,
    hits: IntCounterVec,
    evicted: IntCounterVec,
    items: IntGaugeVec,
    bytes: IntGaugeVec,
    max_bytes: IntGaugeVec,
    operations: IntCounterVec,
    /// One copy at a time, so counters only ever move up.
    copying: Mutex<()>,
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric")
}

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["cache"]).expect("a valid metric")
}

/// Raises `counter` to `value` (the source only ever counts up).
fn raise(counter: &prometheus::IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

impl StoreMetrics {
    pub(crate) fn new(caches: BlockCaches, bucket: Bucket) -> StoreMetrics {
        StoreMetrics {
            caches,
            bucket,
            requests: counter(
                "sluice_bucket_store_cache_requests_total",
                "Lookups in the in-process cache of block postings or chunks.",
                "cache",
            ),
            hits: counter(
                "sluice_bucket_store_cache_hits_total",
                "Lookups the in-process block cache answered.",
                "cache",
            ),
            evicted: counter(
                "sluice_bucket_store_cache_items_evicted_total",
                "Items evicted from the in-process block cache to make room.",
                "cache",
            ),
            items: gauge(
                "sluice_bucket_store_cache_items",
                "Items in the in-process block cache.",
            ),
            bytes: gauge(
                "sluice_bucket_store_cache_items_size_bytes",
                "Bytes the in-process block cache holds.",
            ),
            max_bytes: gauge(
                "sluice_bucket_store_cache_max_size_bytes",
                "The most bytes the in-process block cache may hold.",
            ),
            operations: counter(
                "sluice_objstore_bucket_operations_total",
                "Requests sent to the bucket, by operation (get_range counts ranged GETs).",
                "operation",
            ),
            copying: Mutex::new(()),
        }
    }

    fn copy_cache(&self, name: &str, stats: CacheStats) {
        raise(&self.requests.with_label_values(&[name]), stats.requests);
        raise(&self.hits.with_label_values(&[name]), stats.hits);
        raise(&self.evicted.with_label_values(&[name]), stats.evictions);
        self.items
            .with_label_values(&[name])
            .set(stats.items as i64);
        self.bytes
            .with_label_values(&[name])
            .set(stats.bytes as i64);
        self.max_bytes
            .with_label_values(&[name])
            .set(stats.max_bytes as i64);
    }

    fn copy(&self) {
        let _one_at_a_time = self
            .copying
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(cache) = &self.caches.postings {
            self.copy_cache("postings", cache.stats());
        }
        if let Some(cache) = &self.caches.chunks {
            self.copy_cache("chunks", cache.stats());
        }
        let operations = self.bucket.operations();
        for (name, count) in [
            ("get", &operations.get),
            ("get_range", &operations.get_range),
            ("list", &operations.list),
            ("put", &operations.put),
            ("delete", &operations.delete),
        ] {
            raise(
                &self.operations.with_label_values(&[name]),
                count.load(Ordering::Relaxed),
            );
        }
    }
}

impl Collector for StoreMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = Vec::new();
        descs.extend(self.requests.desc());
        descs.extend(self.hits.desc());
        descs.extend(self.evicted.desc());
        descs.extend(self.items.desc());
        descs.extend(self.bytes.desc());
        descs.extend(self.max_bytes.desc());
        descs.extend(self.operations.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.copy();
        let mut families = Vec::new();
        families.extend(self.requests.collect());
        families.extend(self.hits.collect());
        families.extend(self.evicted.collect());
        families.extend(self.items.collect());
        families.extend(self.bytes.collect());
        families.extend(self.max_bytes.collect());
        families.extend(self.operations.collect());
        families
    }
}
