//! Refreshing the metastore from the bucket.

use super::*;

impl Metastore {
    /// Lists the bucket, opens blocks not seen before, keeps the ones still
    /// there and drops the rest. Blocking: call it off the async runtime.
    pub fn sync(&self) -> Result<SyncReport, BucketError> {
        let locations = discover(&self.bucket)?;
        let previous = self.snapshot();
        let known: HashMap<(&str, Ulid), &Arc<LoadedBlock>> = previous
            .values()
            .flatten()
            .map(|loaded| ((loaded.info.tenant.as_str(), loaded.info.ulid), loaded))
            .collect();
        let mut report = SyncReport::default();
        let mut next = Snapshot::new();
        for location in &locations {
            let loaded = match known.get(&(location.tenant.as_str(), location.ulid)) {
                Some(loaded) => Arc::clone(loaded),
                None => match self.load_new(location) {
                    Some(loaded) => {
                        report.loaded += 1;
                        loaded
                    }
                    None => {
                        report.failed += 1;
                        continue;
                    }
                },
            };
            next.entry(location.tenant.clone())
                .or_default()
                .push(loaded);
        }
        for blocks in next.values_mut() {
            blocks.sort_by_key(|loaded| (loaded.info.min_time, loaded.info.ulid));
        }
        report.blocks = next.values().map(Vec::len).sum();
        report.dropped = known.len() + report.loaded - report.blocks;
        self.forget_failures_gone(&locations);
        *self
            .blocks
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(next);
        Ok(report)
    }

    /// Opens a block; a failure is logged and counted the first time only.
    fn load_new(&self, location: &BlockLocation) -> Option<Arc<LoadedBlock>> {
        let key = (location.tenant.clone(), location.ulid);
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if failed.contains_key(&key) {
            return None;
        }
        match load(&self.bucket, location, &self.caches) {
            Ok(loaded) => Some(Arc::new(loaded)),
            Err(reason) => {
                tracing::warn!(bucket = self.bucket.name(), block = %location.prefix, %reason, "skipping a block that cannot be loaded");
                self.load_failures.inc();
                let range = self.meta_range(location);
                let skipped = SkippedBlock {
                    tenant: location.tenant.clone(),
                    ulid: location.ulid,
                    range,
                    reason,
                };
                failed.insert(key, skipped);
                None
            }
        }
    }

    /// The time range a block's meta.json claims, if it reads at all.
    fn meta_range(&self, location: &BlockLocation) -> Option<(i64, i64)> {
        let meta = BlockMeta::read(&location.dir(&self.bucket)).ok()?;
        Some((meta.min_time, meta.max_time))
    }

    fn forget_failures_gone(&self, locations: &[BlockLocation]) {
        let present: HashSet<(&str, Ulid)> = locations
            .iter()
            .map(|location| (location.tenant.as_str(), location.ulid))
            .collect();
        self.failed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|(tenant, ulid), _| present.contains(&(tenant.as_str(), *ulid)));
    }

    /// Syncs every `interval` until `stop` turns true, each sync on the
    /// blocking pool. A failed sync keeps the previous list and is logged.
    pub async fn run(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let metastore = Arc::clone(&self);
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || metastore.sync()).await {
                Ok(Ok(report)) => {
                    tracing::debug!(?report, took = ?started.elapsed(), "bucket synced")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "bucket sync failed, keeping the previous block list")
                }
                Err(error) => tracing::warn!(%error, "bucket sync did not finish"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}
