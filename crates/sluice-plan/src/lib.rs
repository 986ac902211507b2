//! The pure logic of query acceleration in sluice's frontend: step alignment,
//! splitting a range query by time, the plan tree that ties the pieces (and
//! the results cache's ready-made extents) together, merging the answers back
//! into one Prometheus-identical answer, and the bookkeeping of cache extents.
//! Nothing here does I/O or keeps time: the frontend runs the plan's query
//! leaves, passes the current time in, and moves cache values as opaque bytes,
//! which keeps every rule here testable in isolation and lets the same plan
//! later gain shard and storage-block leaves without touching the frontend.
//!
//! The intended flow for one `query_range` request:
//!
//! 1. optionally [`align`] it to its step;
//! 2. [`split`] it at the split interval (24h, UTC midnight);
//! 3. per piece: [`cache_key`], fetch the bytes, [`decode_entry`], then
//!    [`plan_with_cache`] (or [`Plan::Query`] when there is no cache);
//! 4. run every [`Plan::queries`] leaf, [`Plan::merge`] the answers;
//! 5. per piece: [`updated_entry`] and store what it returns, if anything.
//!
//! ```
//! use std::collections::HashMap;
//! use sluice_plan::*;
//! use sluice_proto::{ApiResponse, QueryData, RangeQuery, ResponseData};
//!
//! # fn run(query: &RangeQuery) -> ApiResponse {
//! #     ApiResponse::success(ResponseData::Query(QueryData::default()))
//! # }
//! let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
//! let (tenant, now_ms, options) = ("acme", 1_700_000_000_000, CacheOptions::default());
//! let request = RangeQuery {
//!     query: "sum by (job) (rate(up[5m]))".into(),
//!     start_ms: now_ms - 3 * DEFAULT_SPLIT_INTERVAL_MS,
//!     end_ms: now_ms,
//!     step_ms: 60_000,
//!     ..RangeQuery::default()
//! };
//! let mut pieces = Vec::new();
//! for piece in split(&align(&request), DEFAULT_SPLIT_INTERVAL_MS) {
//!     let key = cache_key(tenant, &piece, DEFAULT_SPLIT_INTERVAL_MS);
//!     let entry = cache.get(&key.storage_key()).and_then(|bytes| decode_entry(bytes, &key));
//!     let plan = plan_with_cache(&piece, entry.as_ref());
//!     pieces.push((piece, key, entry, plan));
//! }
//! let plan = Plan::Concat(pieces.iter().map(|(.., plan)| plan.clone()).collect());
//! // The frontend runs these in parallel; answers must come back in this order.
//! let answers: Vec<ApiResponse> = plan.queries().into_iter().map(run).collect();
//! let response = plan.merge(answers.clone());
//! assert!(!response.is_error());
//!
//! // Each piece's answers are the next `plan.queries().len()` of the list.
//! let mut answers = answers.into_iter();
//! for (piece, key, entry, plan) in pieces {
//!     let own: Vec<ApiResponse> = answers.by_ref().take(plan.queries().len()).collect();
//!     if let Some(updated) = updated_entry(&key, &piece, entry.as_ref(), &plan, &own, now_ms, &options) {
//!         cache.insert(key.storage_key(), encode_entry(&updated));
//!     }
//! }
//! ```

mod cache;
mod instant_split;
mod merge;
mod plan;
mod promql;
pub mod shard;
mod split;

pub use cache::{
    CacheEntry, CacheKey, CacheOptions, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_FRESHNESS_MS, Extent,
    LateWrite, answer_is_final, cache_key, cached_prefix, decode_entry, encode_entry,
    late_write_changes, plan_queries_with_cache, plan_with_cache, updated_entry, without_late_data,
};
pub use instant_split::{
    Combine, InstantSplit, MAX_INSTANT_PARTS, RangeBoundaries, merge_instant_parts,
    split_instant_query,
};
pub use merge::{compare_labels, concat_data, concat_slices, slice_data};
pub use plan::{CachedPrefix, Plan};
pub use shard::{Evaluation, ShardedQuery, shard_query, sharded_aggregations};
pub use split::{DEFAULT_SPLIT_INTERVAL_MS, align, grid_points, split};
