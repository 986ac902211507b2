//! Cutting the head into blocks: when a tenant's head spans more than one
//! and a half block ranges, its oldest whole range becomes a block in the
//! bucket (as Prometheus and Mimir compact their heads), the metastore is
//! told, the head forgets the range, and the WAL is checkpointed so that it
//! keeps only what the head still needs. `POST /ingester/flush` cuts
//! everything now.
//!
//! A block is written to a staging directory under the tsdb dir, then
//! uploaded through the bucket (any backend), `meta.json` last. Only once the
//! upload succeeded does the head forget the range: a failed upload (the
//! bucket down) keeps the samples in the head and the WAL, and the next round
//! tries again with a new block.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_block::BlockWriter;
use sluice_bucket::Bucket;
use sluice_wal::Entry;
use tokio::sync::watch;

use crate::{Store, StoreError};

/// Under `-blocks-storage.tsdb.dir`: blocks written but not yet uploaded.
const STAGING_DIR: &str = "staging";

/// What one round of cutting did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    pub blocks: usize,
    pub series: usize,
    pub samples: usize,
}

/// The end of the range to cut of a head spanning `[min_t, max_t]`: with
/// `force`, everything; else the oldest whole block range, once the head
/// spans more than one and a half ranges.
fn cut_end(min_t: i64, max_t: i64, range: i64, force: bool) -> Option<i64> {
    if force {
        return Some(max_t.saturating_add(1));
    }
    (max_t - min_t > range / 2 * 3).then(|| (min_t.div_euclid(range) + 1) * range)
}

impl Store {
    /// Cuts what is due (or, with `force`, every tenant's whole head) into
    /// blocks. Rounds never overlap.
    pub fn cut_blocks(&self, force: bool) -> Result<CutReport, StoreError> {
        let _one_at_a_time = self
            .cutting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(bucket) = self.config.bucket.clone() else {
            return Ok(CutReport::default());
        };
        let range = self.config.head.block_range_ms;
        let mut report = CutReport::default();
        let mut failed = None;
        for tenant in self.head.tenants() {
            while let Some((min_t, max_t)) = self.head.time_range(&tenant) {
                let Some(end) = cut_end(min_t, max_t, range, force) else {
                    break;
                };
                // One tenant's failure must not keep the others' blocks
                // out of the checkpoint below.
                if let Err(error) = self.cut_one(&bucket, &tenant, end, &mut report) {
                    tracing::warn!(tenant, %error, "cutting a block failed; its samples stay in the head");
                    failed = Some(error);
                    break;
                }
                if force {
                    break;
                }
            }
        }
        if report.blocks > 0 {
            self.checkpoint()?;
        }
        failed.map_or(Ok(report), Err)
    }

    fn cut_one(
        &self,
        bucket: &Bucket,
        tenant: &str,
        end: i64,
        report: &mut CutReport,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let taken = self.head.take_before(tenant, end);
        let series = taken.len();
        let samples: usize = taken.iter().map(|(_, samples)| samples.len()).sum();
        if series > 0 {
            let mut writer = BlockWriter::new();
            for (labels, samples) in taken {
                writer.add_series(labels, samples)?;
            }
            let staging = self.staging_dir(tenant);
            let written = writer.write(&staging).map_err(StoreError::from);
            let meta = written.and_then(|meta| {
                let local = staging.join(meta.ulid.to_string());
                let uploaded = bucket.upload_block(&local, &format!("{tenant}/{}", meta.ulid));
                let _ = std::fs::remove_dir_all(&local);
                uploaded.map(|()| meta).map_err(StoreError::from)
            });
            let meta = meta.inspect_err(|_| self.metrics.upload_failures.inc())?;
            tracing::info!(tenant, block = %meta.ulid, min_time = meta.min_time, max_time = meta.max_time, series, samples, elapsed = ?started.elapsed(), "head cut into a block");
            report.blocks += 1;
            self.metrics.blocks_cut.inc();
            if let Some(notify) = self.on_block.get() {
                notify();
            }
        }
        report.series += series;
        report.samples += samples;
        self.head.drop_before(tenant, end);
        Ok(())
    }

    /// Where blocks of `tenant` are written before their upload.
    fn staging_dir(&self, tenant: &str) -> PathBuf {
        self.config.tsdb_dir.join(STAGING_DIR).join(tenant)
    }

    /// Removes blocks a crash left half-written or not uploaded: their
    /// samples are still in the WAL, so they will be cut again.
    pub(crate) fn clear_staging(tsdb_dir: &Path) -> Result<(), StoreError> {
        let staging = tsdb_dir.join(STAGING_DIR);
        match std::fs::remove_dir_all(&staging) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Staging {
                    path: staging.display().to_string(),
                    source,
                })
            }
            _ => Ok(()),
        }
    }

    /// Replaces the WAL's older segments by what the head still needs of
    /// them: series definitions, and samples not yet in a block.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let first_kept = self.wal.cut()?;
        let mut floors: HashMap<String, i64> = HashMap::new();
        let mut records = Vec::new();
        self.wal.read_before(first_kept, |bytes| {
            let Ok(mut entry) = Entry::decode(bytes) else {
                return;
            };
            let floor = *floors
                .entry(entry.tenant.clone())
                .or_insert_with(|| self.head.floor(&entry.tenant));
            entry.samples.retain(|(_, t, _)| *t >= floor);
            if !entry.series.is_empty() || !entry.samples.is_empty() {
                records.push(entry.encode());
            }
        })?;
        self.wal.checkpoint(first_kept, &records)?;
        self.metrics.checkpoints.inc();
        Ok(())
    }

    /// Cuts due blocks every `interval` until `stop`.
    pub async fn run_cutting(
        self: std::sync::Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let store = std::sync::Arc::clone(&self);
            match tokio::task::spawn_blocking(move || store.cut_blocks(false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "cutting the head into blocks failed"),
                Err(error) => tracing::error!(%error, "cutting the head into blocks panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut_end;

    #[test]
    fn a_range_is_cut_once_the_head_spans_one_and_a_half() {
        let range = 7_200_000;
        assert_eq!(cut_end(0, 10_800_000, range, false), None);
        assert_eq!(cut_end(100, 10_800_101, range, false), Some(range));
        assert_eq!(cut_end(range + 5, 3 * range, range, false), Some(2 * range));
        assert_eq!(cut_end(5, 10, range, true), Some(11));
    }
}
