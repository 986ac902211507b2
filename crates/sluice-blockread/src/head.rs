//! The store's head as the engine's storage: its chunks join the blocks'
//! as the engine reads them. Head series are merged into the blocks' by
//! labels, and a sample in both (a block cut from the head, the head not
//! yet truncated) is kept once, as overlapping blocks are.

use std::sync::Arc;

use sluice_block::{Chunk, Encoding, Labels, Matcher, Origin};
use sluice_engine::{FloatChunk, Shard};
use sluice_head::Head;

use crate::{Merged, merged_position};

/// One tenant's head, as a query reads it.
#[derive(Clone)]
pub(crate) struct HeadView {
    pub(crate) head: Arc<Head>,
    pub(crate) tenant: String,
}

impl HeadView {
    /// Adds the head's chunks overlapping `range` of the series `matchers`
    /// select (in `shard`) to `merged`, after the blocks'.
    pub(crate) fn gather(
        &self,
        matchers: &[Matcher],
        range: (i64, i64),
        shard: Option<Shard>,
        merged: &mut Vec<Merged>,
    ) {
        let origin = Origin {
            file: Arc::from("head"),
            offset: 0,
        };
        let mut position = 0;
        for series in self.head.select(&self.tenant, matchers, range.0, range.1) {
            position = merged_position(merged, position, &series.labels, shard);
            let entry = &mut merged[position];
            position += 1;
            if entry.engine_labels.is_none() {
                continue;
            }
            for chunk in series.chunks {
                let chunk = FloatChunk {
                    min_time: chunk.min_time,
                    max_time: chunk.max_time,
                    chunk: Chunk::new(Encoding::Xor, chunk.data, origin.clone()),
                };
                entry.gathered.chunks.push((chunk, Vec::new()));
            }
        }
    }

    /// The label sets of the head's series `matchers` select in `[start, end]`.
    pub(crate) fn series(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        self.head
            .select(&self.tenant, matchers, start, end)
            .into_iter()
            .map(|series| series.labels)
            .collect()
    }
}
