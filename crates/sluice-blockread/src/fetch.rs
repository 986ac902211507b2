//! Per-query limits on what the storage fetches, as Mimir's querier sets
//! them per tenant: distinct series (`max_fetched_series_per_query`) and
//! bytes of chunks (`max_fetched_chunk_bytes_per_query`), counted over every
//! selector of one query. Beyond either the query fails with Mimir's
//! message, an `execution` error (422), before the engine holds the data.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use sluice_engine::EngineError;

/// Mimir's advice, shared by both messages.
const STRATEGY: &str = "Consider reducing the time range and/or number of series selected by the query. One way to reduce the number of selected series is to add more label matchers to the query";

/// One query's limits (0: none) and what it has fetched so far.
#[derive(Debug, Default)]
pub(crate) struct FetchBudget {
    max_series: usize,
    max_chunk_bytes: usize,
    fetched: Mutex<Fetched>,
}

#[derive(Debug, Default)]
struct Fetched {
    /// Hashes of the series' labels: a series two selectors read counts once.
    series: HashSet<u64>,
    chunk_bytes: usize,
}

impl FetchBudget {
    pub(crate) fn new(max_series: usize, max_chunk_bytes: usize) -> FetchBudget {
        FetchBudget {
            max_series,
            max_chunk_bytes,
            fetched: Mutex::default(),
        }
    }

    /// Fails once `found` distinct series pass the series limit: the
    /// metadata endpoints (`series`, and names or values by selector) read
    /// series but no chunks, and Mimir holds them to the same limit.
    pub(crate) fn check_series(&self, found: usize) -> Result<(), EngineError> {
        if self.max_series > 0 && found > self.max_series {
            return Err(EngineError::Execution(series_message(self.max_series)));
        }
        Ok(())
    }

    /// Adds one selection's series and chunk bytes, or fails once a limit
    /// is passed.
    pub(crate) fn charge<'a>(
        &self,
        series: impl Iterator<Item = (&'a sluice_engine::Labels, usize)>,
    ) -> Result<(), EngineError> {
        let mut fetched = self
            .fetched
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for (labels, chunk_bytes) in series {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            labels.hash(&mut hasher);
            fetched.series.insert(hasher.finish());
            fetched.chunk_bytes = fetched.chunk_bytes.saturating_add(chunk_bytes);
            if self.max_series > 0 && fetched.series.len() > self.max_series {
                return Err(EngineError::Execution(series_message(self.max_series)));
            }
            if self.max_chunk_bytes > 0 && fetched.chunk_bytes > self.max_chunk_bytes {
                return Err(EngineError::Execution(chunk_bytes_message(
                    self.max_chunk_bytes,
                )));
            }
        }
        Ok(())
    }
}

/// Mimir's words for a query over `-querier.max-fetched-series-per-query`.
pub fn series_message(limit: usize) -> String {
    format!(
        "the query exceeded the maximum number of series (limit: {limit} series) (err-mimir-max-series-per-query). {STRATEGY}. Otherwise, to adjust the related per-tenant limit, configure -querier.max-fetched-series-per-query, or contact your service administrator."
    )
}

/// Mimir's words for a query over `-querier.max-fetched-chunk-bytes-per-query`.
pub fn chunk_bytes_message(limit: usize) -> String {
    format!(
        "the query exceeded the aggregated chunks size limit (limit: {limit} bytes) (err-mimir-max-chunks-bytes-per-query). {STRATEGY}. Otherwise, to adjust the related per-tenant limit, configure -querier.max-fetched-chunk-bytes-per-query, or contact your service administrator."
    )
}
