//! The metastore: which blocks tenant T has that overlap `[t0, t1]`, with per
//! block its ULID, time range, compaction level, series/samples/chunks
//! counts, size and external labels. It is an in-memory copy of the bucket's
//! block list, filled by listing the bucket ([`Metastore::sync`]) and
//! refreshed every `-blocks-storage.bucket-store.sync-interval`
//! ([`Metastore::run`]); a lookup is a binary search under a read lock and
//! answers in microseconds.
//!
//! **Every process keeps its own synced copy; there is no metastore
//! service.** The bucket is the truth and blocks are immutable, so copies
//! cannot disagree in a way that matters (a copy a sync behind misses a block
//! the next sync brings, exactly as Mimir's queriers do). A gRPC service
//! would add a hop to every query and a process to run and keep available,
//! to save a listing per sync interval per process; and the querier needs the
//! opened blocks (their index headers) in its own memory anyway, which a
//! remote list cannot give it. If listing ever costs too much, Mimir's bucket
//! index (read when present) makes a sync one GET per tenant.
//!
//! A block that cannot be loaded (garbage or unknown-version `meta.json`,
//! truncated index, bad CRC, missing chunk segments) is skipped with one log
//! line and one increment of `sluice_blocks_load_failures_total`, and is not
//! retried until it leaves the bucket: blocks never change once written.
//! The metastore remembers it ([`Metastore::skipped`]) with its time range
//! when its `meta.json` still reads, so that queries over that range can
//! warn that their answer lacks a block.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_block::{Block, BlockCaches, BlockMeta, Ulid};
use sluice_bucket::{BlockLocation, Bucket, BucketError, discover};
use tokio::sync::watch;

/// What the metastore knows of one block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockInfo {
    pub tenant: String,
    pub ulid: Ulid,
    /// First sample time (ms), inclusive.
    pub min_time: i64,
    /// End of the block's range (ms), exclusive, as meta.json has it.
    pub max_time: i64,
    pub level: u32,
    pub num_series: u64,
    pub num_samples: u64,
    pub num_chunks: u64,
    /// Bytes of all its files.
    pub size_bytes: u64,
    pub external_labels: BTreeMap<String, String>,
}

/// A block ready to query: what it is, and the block opened (its meta, index
/// header and tombstones in memory).
pub struct LoadedBlock {
    pub info: BlockInfo,
    pub block: Block,
}

/// A block of the bucket that could not be loaded and is left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedBlock {
    pub tenant: String,
    pub ulid: Ulid,
    /// Its range from meta.json (`[min, max)`, ms), or `None` when even
    /// meta.json is unreadable: then it may hold any time.
    pub range: Option<(i64, i64)>,
    pub reason: String,
}

impl SkippedBlock {
    /// Whether the block may hold samples in `[min_time, max_time]`.
    pub fn overlaps(&self, min_time: i64, max_time: i64) -> bool {
        self.range
            .is_none_or(|(start, end)| start <= max_time && end > min_time)
    }

    /// The warning a query over this block carries.
    pub fn warning(&self) -> String {
        format!(
            "block {} of tenant {:?} was skipped, answers lack its samples: {}",
            self.ulid, self.tenant, self.reason
        )
    }
}

/// The blocks of every tenant, each list ordered by `min_time`.
type Snapshot = HashMap<String, Vec<Arc<LoadedBlock>>>;

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub blocks: usize,
    pub loaded: usize,
    pub failed: usize,
    pub dropped: usize,
}

/// The in-memory index of the bucket's blocks.
pub struct Metastore {
    bucket: Bucket,
    /// Shared by every block opened: postings and chunks read before.
    caches: BlockCaches,
    blocks: RwLock<Arc<Snapshot>>,
    /// Blocks that failed to load, so each is logged and counted once and
    /// queries over them warn.
    failed: Mutex<HashMap<(String, Ulid), SkippedBlock>>,
    load_failures: prometheus::IntCounter,
}

fn load(
    bucket: &Bucket,
    location: &BlockLocation,
    caches: &BlockCaches,
) -> Result<LoadedBlock, String> {
    let dir = location.dir(bucket);
    let size_bytes = dir.size().map_err(|error| error.to_string())?;
    let block =
        Block::open_with_caches(Arc::new(dir), caches).map_err(|error| error.to_string())?;
    check_segments(&block, location)?;
    let meta: &BlockMeta = block.meta();
    let info = BlockInfo {
        tenant: location.tenant.clone(),
        ulid: location.ulid,
        min_time: meta.min_time,
        max_time: meta.max_time,
        level: meta.compaction.level,
        num_series: meta.stats.num_series,
        num_samples: meta.stats.num_samples,
        num_chunks: meta.stats.num_chunks,
        size_bytes,
        external_labels: meta
            .thanos
            .as_ref()
            .map(|thanos| thanos.labels.clone())
            .unwrap_or_default(),
    };
    if info.ulid != meta.ulid {
        return Err(format!("meta.json names block {}", meta.ulid));
    }
    Ok(LoadedBlock { info, block })
}

/// A block whose meta.json counts chunks must have chunk segments: an
/// upload that lost them would otherwise fail only at query time.
fn check_segments(block: &Block, location: &BlockLocation) -> Result<(), String> {
    let segments = block.segment_count();
    if block.meta().stats.num_chunks > 0 && segments == 0 {
        return Err(format!(
            "{}: meta.json counts {} chunks but chunks/ holds no segment",
            location.prefix,
            block.meta().stats.num_chunks
        ));
    }
    Ok(())
}

impl Metastore {
    /// An empty metastore over `bucket`, with no block caches; its failure
    /// counter is registered in `registry` (a second registration, from a
    /// test, is tolerated).
    pub fn new(bucket: Bucket, registry: &prometheus::Registry) -> Arc<Metastore> {
        Metastore::with_caches(bucket, registry, BlockCaches::default())
    }

    /// Like [`Metastore::new`], opening blocks with `caches`; the caches'
    /// and the bucket's metrics are registered too.
    pub fn with_caches(
        bucket: Bucket,
        registry: &prometheus::Registry,
        caches: BlockCaches,
    ) -> Arc<Metastore> {
        let store_metrics = metrics::StoreMetrics::new(caches.clone(), bucket.clone());
        let _ = registry.register(Box::new(store_metrics));
        let load_failures = prometheus::IntCounter::new(
            "sluice_blocks_load_failures_total",
            "Blocks in the bucket that could not be loaded and are skipped.",
        )
        .expect("a valid metric name");
        let _ = registry.register(Box::new(load_failures.clone()));
        Arc::new(Metastore {
            bucket,
            caches,
            blocks: RwLock::new(Arc::new(Snapshot::new())),
            failed: Mutex::new(HashMap::new()),
            load_failures,
        })
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    pub fn caches(&self) -> &BlockCaches {
        &self.caches
    }

    pub fn load_failures(&self) -> u64 {
        self.load_failures.get()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.blocks
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The blocks of `tenant` with samples possibly in `[min_time,
    /// max_time]` (inclusive, ms), ordered by their start.
    pub fn blocks(&self, tenant: &str, min_time: i64, max_time: i64) -> Vec<Arc<LoadedBlock>> {
        let snapshot = self.snapshot();
        let Some(blocks) = snapshot.get(tenant) else {
            return Vec::new();
        };
        // Ordered by min_time: everything past `max_time` is at the end.
        let end = blocks.partition_point(|loaded| loaded.info.min_time <= max_time);
        blocks[..end]
            .iter()
            .filter(|loaded| loaded.info.max_time > min_time)
            .cloned()
            .collect()
    }

    /// The blocks of `tenant` that could not be loaded and may hold samples
    /// in `[min_time, max_time]`.
    pub fn skipped(&self, tenant: &str, min_time: i64, max_time: i64) -> Vec<SkippedBlock> {
        let mut skipped: Vec<SkippedBlock> = self
            .failed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .filter(|block| block.tenant == tenant && block.overlaps(min_time, max_time))
            .cloned()
            .collect();
        skipped.sort_by_key(|block| block.ulid);
        skipped
    }

    /// The tenants that have blocks.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self.snapshot().keys().cloned().collect();
        tenants.sort();
        tenants
    }
}

mod metrics;
mod sync;

#[cfg(test)]
mod tests;
