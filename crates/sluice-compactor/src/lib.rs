//! The compactor: every `-compactor.compaction-interval` it goes through
//! each tenant's blocks in the bucket (`<tenant>/<ULID>/`, as Mimir lays
//! them out) and
//!
//! 1. deletes the blocks marked for deletion longer than
//!    `-compactor.deletion-delay` ago;
//! 2. marks for deletion the blocks wholly older than
//!    `-compactor.blocks-retention-period` (0 keeps everything), and
//!    partial blocks (no meta.json: an upload a crash abandoned) whose
//!    ULID is older than `-compactor.partial-block-deletion-delay`;
//! 3. merges blocks as Prometheus's leveled compactor plans it
//!    ([`plan`]): overlapping blocks first, then small adjacent blocks into
//!    windows of `-compactor.block-ranges` (2h, 12h, 24h) — the merge
//!    ([`merge`]) is written to a local staging directory, uploaded with
//!    `meta.json` last, and only then are its sources marked for deletion.
//!
//! Nothing is ever deleted without a mark older than the delay, so a
//! querier never reads a half-deleted block: it drops marked blocks at its
//! next sync, and between the upload and the marks it sees the new block
//! and its sources together, which its merge of overlapping blocks reads
//! once. Blocks at the bucket's root (a Prometheus data directory or a
//! Thanos bucket served read-only) and tenants with a Mimir bucket index
//! (whose own compactor owns them) are left alone.

pub mod marks;
pub mod merge;
pub mod plan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_block::{Block, BlockMeta, Ulid};
use sluice_bucket::{Bucket, BucketError};
use tokio::sync::watch;

use crate::plan::Span;

/// Under `-compactor.data-dir`: merged blocks not yet uploaded.
const STAGING_DIR: &str = "staging";

/// How the compactor is set up.
#[derive(Clone, Debug)]
pub struct CompactorConfig {
    /// `-compactor.block-ranges`, ascending, each a multiple of the one before.
    pub block_ranges: Vec<Duration>,
    /// `-compactor.blocks-retention-period`; zero keeps blocks forever.
    pub retention: Duration,
    /// `-compactor.deletion-delay`.
    pub deletion_delay: Duration,
    /// `-compactor.partial-block-deletion-delay`; zero never deletes them.
    pub partial_block_deletion_delay: Duration,
    /// `-compactor.compaction-interval`.
    pub interval: Duration,
    /// `-compactor.data-dir`: merged blocks are written here before upload.
    pub data_dir: PathBuf,
}

impl CompactorConfig {
    /// Mimir's defaults, staging under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> CompactorConfig {
        let hour = Duration::from_secs(3600);
        CompactorConfig {
            block_ranges: vec![2 * hour, 12 * hour, 24 * hour],
            retention: Duration::ZERO,
            deletion_delay: 12 * hour,
            partial_block_deletion_delay: 24 * hour,
            interval: hour,
            data_dir: data_dir.into(),
        }
    }

    /// Checks the ranges as Mimir does: ascending, each dividing the next.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_ranges.is_empty() || self.block_ranges.iter().any(Duration::is_zero) {
            return Err("-compactor.block-ranges needs at least one range, none of them 0".into());
        }
        for pair in self.block_ranges.windows(2) {
            if pair[1] <= pair[0] || pair[1].as_millis() % pair[0].as_millis() != 0 {
                return Err(format!(
                    "-compactor.block-ranges: {:?} is not a larger multiple of {:?}",
                    pair[1], pair[0]
                ));
            }
        }
        if self.interval.is_zero() {
            return Err("-compactor.compaction-interval must be longer than 0".into());
        }
        Ok(())
    }
}

/// Why a compaction run failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error("block {block} of tenant {tenant}: {source}")]
    Block {
        tenant: String,
        block: Ulid,
        source: sluice_block::Error,
    },
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Blocks written by merging.
    pub compactions: usize,
    /// Source blocks merged (and so marked for deletion).
    pub blocks_merged: usize,
    /// Blocks marked for deletion by retention.
    pub expired: usize,
    /// Partial blocks marked for deletion.
    pub partial: usize,
    /// Marked blocks whose files were deleted.
    pub deleted: usize,
}

struct Metrics {
    runs: prometheus::IntCounter,
    failed_runs: prometheus::IntCounter,
    compacted: prometheus::IntCounter,
    marked: prometheus::IntCounterVec,
    cleaned: prometheus::IntCounter,
}

impl Metrics {
    fn new(registry: &prometheus::Registry) -> Metrics {
        let counter = |name: &str, help: &str| {
            let counter = prometheus::IntCounter::new(name, help).expect("a valid metric name");
            let _ = registry.register(Box::new(counter.clone()));
            counter
        };
        let marked = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sluice_compactor_blocks_marked_for_deletion_total",
                "Blocks the compactor marked for deletion, by reason (compaction, retention, partial).",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        let _ = registry.register(Box::new(marked.clone()));
        Metrics {
            runs: counter(
                "sluice_compactor_runs_completed_total",
                "Compaction runs that went through every tenant.",
            ),
            failed_runs: counter(
                "sluice_compactor_runs_failed_total",
                "Compaction runs that stopped on an error (retried at the next interval).",
            ),
            compacted: counter(
                "sluice_compactor_blocks_compacted_total",
                "Source blocks merged into larger blocks.",
            ),
            marked,
            cleaned: counter(
                "sluice_compactor_blocks_cleaned_total",
                "Blocks deleted once their deletion mark was older than the deletion delay.",
            ),
        }
    }
}

/// The compactor of one bucket.
pub struct Compactor {
    config: CompactorConfig,
    bucket: Bucket,
    metrics: Metrics,
    /// Called after the bucket changed, so queriers see it at once.
    on_change: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Root folders that are no tenant (see sluice-bucket's layouts).
fn is_tenant_folder(name: &str) -> bool {
    name.parse::<Ulid>().is_err()
        && !matches!(name, "wal" | "chunks_head" | "lost+found")
        && !name.starts_with(['.', '_'])
}

impl Compactor {
    pub fn new(
        config: CompactorConfig,
        bucket: Bucket,
        registry: &prometheus::Registry,
    ) -> Arc<Compactor> {
        Arc::new(Compactor {
            config,
            bucket,
            metrics: Metrics::new(registry),
            on_change: OnceLock::new(),
        })
    }

    /// Sets what to call after blocks were written or marked.
    pub fn on_change(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(notify));
    }

    fn changed(&self) {
        if let Some(notify) = self.on_change.get() {
            notify();
        }
    }

    /// One pass over every tenant at `now_ms`. Blocking: the bucket's calls
    /// park the calling thread.
    pub fn run_once(&self, now_ms: i64) -> Result<RunReport, CompactorError> {
        let mut report = RunReport::default();
        let outcome = self.run_tenants(now_ms, &mut report);
        match &outcome {
            Ok(()) => self.metrics.runs.inc(),
            Err(_) => self.metrics.failed_runs.inc(),
        }
        if report != RunReport::default() {
            self.changed();
        }
        outcome.map(|()| report)
    }

    fn run_tenants(&self, now_ms: i64, report: &mut RunReport) -> Result<(), CompactorError> {
        // Merges a crash interrupted are written again from their sources.
        let _ = std::fs::remove_dir_all(self.config.data_dir.join(STAGING_DIR));
        let mut failed = None;
        for tenant in self.bucket.list_dirs(None)? {
            if !is_tenant_folder(&tenant) {
                continue;
            }
            // One tenant's unreadable block must not stop the others'.
            if let Err(error) = self.run_tenant(&tenant, now_ms, report) {
                tracing::warn!(tenant, %error, "compacting the tenant failed");
                failed = Some(error);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn run_tenant(
        &self,
        tenant: &str,
        now_ms: i64,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let listing = marks::list_tenant(&self.bucket, tenant)?;
        if listing.has_bucket_index {
            tracing::warn!(tenant, "tenant has a Mimir bucket index: not compacting it");
            return Ok(());
        }
        self.delete_due(tenant, &listing, now_ms, report)?;
        self.mark_partial(tenant, &listing, now_ms, report)?;
        let mut metas = self.live_metas(tenant, &listing)?;
        self.apply_retention(tenant, &mut metas, now_ms, report)?;
        self.compact_tenant(tenant, metas, now_ms, report)
    }

    fn delete_due(
        &self,
        tenant: &str,
        listing: &marks::TenantListing,
        now_ms: i64,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let delay_s = self.config.deletion_delay.as_secs() as i64;
        for (ulid, keys) in &listing.marked {
            let Some(marked_s) = marks::marked_at(&self.bucket, tenant, *ulid)? else {
                tracing::warn!(tenant, block = %ulid, "deletion mark unreadable; block kept");
                continue;
            };
            if now_ms / 1000 - marked_s < delay_s {
                continue;
            }
            marks::delete_block(&self.bucket, tenant, *ulid, keys)?;
            tracing::info!(tenant, block = %ulid, "deleted a block marked for deletion");
            self.metrics.cleaned.inc();
            report.deleted += 1;
        }
        Ok(())
    }

    /// Marks partial blocks older than the delay, by their ULID's time
    /// (when their upload began), so an upload under way is never taken.
    fn mark_partial(
        &self,
        tenant: &str,
        listing: &marks::TenantListing,
        now_ms: i64,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let delay = self.config.partial_block_deletion_delay;
        if delay.is_zero() {
            return Ok(());
        }
        for ulid in &listing.partial {
            if now_ms - (ulid.timestamp_ms() as i64) < delay.as_millis() as i64 {
                continue;
            }
            self.mark(tenant, *ulid, now_ms, "partial")?;
            report.partial += 1;
        }
        Ok(())
    }

    /// Marks a block for deletion for `reason` (the mark's details and the
    /// metric's `reason` label alike).
    fn mark(
        &self,
        tenant: &str,
        ulid: Ulid,
        now_ms: i64,
        reason: &'static str,
    ) -> Result<(), CompactorError> {
        marks::mark_for_deletion(&self.bucket, tenant, ulid, now_ms / 1000, reason)?;
        tracing::info!(tenant, block = %ulid, reason, "block marked for deletion");
        self.metrics.marked.with_label_values(&[reason]).inc();
        Ok(())
    }

    /// The meta.json of each live block; one that does not read is left
    /// out (the metastore counts and reports it).
    fn live_metas(
        &self,
        tenant: &str,
        listing: &marks::TenantListing,
    ) -> Result<BTreeMap<Ulid, BlockMeta>, CompactorError> {
        let mut metas = BTreeMap::new();
        for ulid in &listing.live {
            let key = format!("{tenant}/{ulid}/{}", sluice_block::meta::META_FILE);
            let Some(bytes) = self.bucket.get_optional(&key)? else {
                continue;
            };
            match BlockMeta::parse(&bytes) {
                Ok(meta) if meta.ulid == *ulid => {
                    metas.insert(*ulid, meta);
                }
                Ok(meta) => {
                    tracing::warn!(tenant, block = %ulid, names = %meta.ulid, "meta.json names another block; not compacting it")
                }
                Err(error) => {
                    tracing::warn!(tenant, block = %ulid, %error, "unreadable meta.json; not compacting it")
                }
            }
        }
        Ok(metas)
    }

    fn apply_retention(
        &self,
        tenant: &str,
        metas: &mut BTreeMap<Ulid, BlockMeta>,
        now_ms: i64,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        if self.config.retention.is_zero() {
            return Ok(());
        }
        let oldest_kept = now_ms - self.config.retention.as_millis() as i64;
        let expired: Vec<Ulid> = metas
            .values()
            .filter(|meta| meta.max_time < oldest_kept)
            .map(|meta| meta.ulid)
            .collect();
        for ulid in expired {
            self.mark(tenant, ulid, now_ms, "retention")?;
            metas.remove(&ulid);
            report.expired += 1;
        }
        Ok(())
    }

    fn compact_tenant(
        &self,
        tenant: &str,
        mut metas: BTreeMap<Ulid, BlockMeta>,
        now_ms: i64,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let ranges: Vec<i64> = self
            .config
            .block_ranges
            .iter()
            .map(|range| range.as_millis() as i64)
            .collect();
        // Each merge takes at least two blocks and gives one back.
        for _ in 0..metas.len() {
            let spans: Vec<Span> = metas
                .values()
                .map(|meta| Span {
                    ulid: meta.ulid,
                    min_time: meta.min_time,
                    max_time: meta.max_time,
                })
                .collect();
            let group = plan::plan(&spans, &ranges);
            if group.is_empty() {
                break;
            }
            let merged = self.compact_group(tenant, &group)?;
            for ulid in &group {
                self.mark(tenant, *ulid, now_ms, "compacted")?;
                metas.remove(ulid);
            }
            self.changed();
            self.metrics.compacted.inc_by(group.len() as u64);
            report.blocks_merged += group.len();
            if let Some(meta) = merged {
                report.compactions += 1;
                metas.insert(meta.ulid, meta);
            }
        }
        Ok(())
    }

    /// Merges `group` (ordered by start) into a new block in the bucket.
    fn compact_group(
        &self,
        tenant: &str,
        group: &[Ulid],
    ) -> Result<Option<BlockMeta>, CompactorError> {
        let started = Instant::now();
        let block_error = |block: Ulid| {
            move |source| CompactorError::Block {
                tenant: tenant.to_owned(),
                block,
                source,
            }
        };
        let mut blocks = Vec::with_capacity(group.len());
        for ulid in group {
            let dir = self.bucket.block_dir(&format!("{tenant}/{ulid}"));
            blocks.push(Block::open(Arc::new(dir)).map_err(block_error(*ulid))?);
        }
        let sources: Vec<&Block> = blocks.iter().collect();
        let staging = self.config.data_dir.join(STAGING_DIR).join(tenant);
        let written = merge::write_merged(&sources, &staging).map_err(block_error(group[0]))?;
        let Some(meta) = written else {
            tracing::info!(
                tenant,
                sources = group.len(),
                "merged blocks held no sample"
            );
            return Ok(None);
        };
        let local = staging.join(meta.ulid.to_string());
        let uploaded = self
            .bucket
            .upload_block(&local, &format!("{tenant}/{}", meta.ulid));
        let _ = std::fs::remove_dir_all(&local);
        uploaded?;
        tracing::info!(tenant, block = %meta.ulid, level = meta.compaction.level, sources = group.len(), min_time = meta.min_time, max_time = meta.max_time, series = meta.stats.num_series, samples = meta.stats.num_samples, elapsed = ?started.elapsed(), "blocks compacted");
        Ok(Some(meta))
    }

    /// Runs at once, then every interval, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let compactor = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || compactor.run_once(now_ms())).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "compaction failed; retried at the next interval")
                }
                Err(error) => tracing::error!(%error, "compaction panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
