//! Cutting the head into blocks: when a tenant's head spans more than one
//! and a half block ranges, its oldest whole range becomes a block in the
//! bucket (as Prometheus and Mimir compact their heads), the metastore is
//! told, the head forgets the range, and the WAL is checkpointed so that it
//! keeps only what the head still needs. `POST /ingester/flush` cuts
//! everything now.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_block::BlockWriter;
use sluice_wal::Entry;
use tokio::sync::watch;

use crate::{Store, StoreError};

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
        let Some(blocks_dir) = self.config.blocks_dir.clone() else {
            return Ok(CutReport::default());
        };
        let range = self.config.head.block_range_ms;
        let mut report = CutReport::default();
        for tenant in self.head.tenants() {
            while let Some((min_t, max_t)) = self.head.time_range(&tenant) {
                let Some(end) = cut_end(min_t, max_t, range, force) else {
                    break;
                };
                self.cut_one(&blocks_dir, &tenant, end, &mut report)?;
                if force {
                    break;
                }
            }
        }
        if report.blocks > 0 {
            self.checkpoint()?;
        }
        Ok(report)
    }

    fn cut_one(
        &self,
        blocks_dir: &Path,
        tenant: &str,
        end: i64,
        report: &mut CutReport,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let taken = self.head.take_before(tenant, end);
        let mut writer = BlockWriter::new();
        let (series, samples) = (
            taken.len(),
            taken
                .iter()
                .map(|(_, samples)| samples.len())
                .sum::<usize>(),
        );
        for (labels, samples) in taken {
            writer.add_series(labels, samples)?;
        }
        if series > 0 {
            let meta = writer.write(&blocks_dir.join(tenant))?;
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
