//! Warnings for queries that read over blocks the metastore had to skip.
//! [`WatchSkipped`] wraps a storage and notes which skipped blocks overlap
//! the ranges the engine selects, so a query warns exactly when its answer
//! may lack samples: an instant query at noon does not warn about a broken
//! block from last week, but `x[30d]` at noon does.

use std::collections::BTreeSet;
use std::sync::Mutex;

use promql_parser::label::Matcher as EngineMatcher;
use sluice_engine::{EngineError, Shard, Storage, StoredSeries};
use sluice_metastore::SkippedBlock;

/// A storage that remembers which skipped blocks its selections overlapped.
pub struct WatchSkipped<S> {
    inner: S,
    skipped: Vec<SkippedBlock>,
    /// Indices into `skipped` of the blocks a selection reached.
    reached: Mutex<BTreeSet<usize>>,
}

impl<S> WatchSkipped<S> {
    pub fn new(inner: S, skipped: Vec<SkippedBlock>) -> WatchSkipped<S> {
        WatchSkipped {
            inner,
            skipped,
            reached: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// One warning per skipped block a selection reached, in ULID order.
    pub fn warnings(&self) -> Vec<String> {
        let reached = self
            .reached
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        reached
            .iter()
            .map(|index| self.skipped[*index].warning())
            .collect()
    }
}

impl<S: Storage + Send> Storage for WatchSkipped<S> {
    fn select(
        &self,
        matchers: &[EngineMatcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        if !self.skipped.is_empty() {
            let mut reached = self
                .reached
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            for (index, block) in self.skipped.iter().enumerate() {
                if block.overlaps(start_ms, end_ms) {
                    reached.insert(index);
                }
            }
        }
        self.inner.select(matchers, start_ms, end_ms, shard)
    }
}

#[cfg(test)]
mod tests {
    use sluice_engine::{Engine, MemoryStorage, QueryOptions};

    use super::*;

    fn skipped(ulid: &str, range: Option<(i64, i64)>) -> SkippedBlock {
        SkippedBlock {
            tenant: "t".into(),
            ulid: ulid.parse().unwrap(),
            range,
            reason: "index: corrupt at byte 5: bad".into(),
        }
    }

    #[test]
    fn warns_only_about_skipped_blocks_a_selection_reached() {
        let hour = 3_600_000;
        let blocks = vec![
            skipped("01ARZ3NDEKTSV4RRFFQ69G5FAV", Some((0, 2 * hour))),
            skipped("01BX5ZZKBKACTAV9WEVGEMMVRZ", Some((10 * hour, 12 * hour))),
        ];
        let evaluate = |query: &str, at: i64| {
            let storage = WatchSkipped::new(MemoryStorage::new(), blocks.clone());
            Engine::new()
                .instant(&storage, query, at, &QueryOptions::default())
                .unwrap();
            storage.warnings()
        };
        assert!(evaluate("up", 5 * hour).is_empty());
        let warned = evaluate("up", hour);
        assert_eq!(warned.len(), 1);
        assert!(
            warned[0].contains("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            "{warned:?}"
        );
        assert_eq!(evaluate("max_over_time(up[12h])", 12 * hour).len(), 2);
        // A block whose meta.json is unreadable may hold any time.
        let unknown = WatchSkipped::new(
            MemoryStorage::new(),
            vec![skipped("01ARZ3NDEKTSV4RRFFQ69G5FAV", None)],
        );
        Engine::new()
            .instant(&unknown, "up", 99 * hour, &QueryOptions::default())
            .unwrap();
        assert_eq!(unknown.warnings().len(), 1);
    }
}
