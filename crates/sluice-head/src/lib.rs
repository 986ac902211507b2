//! The store's head: each tenant's recent samples in memory, per series as
//! XOR chunks (the block writer's encoder), queryable the moment a write is
//! accepted, and rebuilt from the WAL on start.
//!
//! Writes of one tenant are serialized ([`Head::append`]): each is checked
//! against what is stored (out of order, out of bounds, duplicate
//! timestamps, as Prometheus's head checks them), then the accepted samples
//! are handed to the caller to log in the WAL, and only if that succeeds are
//! they applied. Replay applies the logged entries through the same checks,
//! in the same order, so the rebuilt head equals the one that was running.
//!
//! A sample equal to a stored one (same timestamp, same value bits) is a
//! duplicate, ignored without error: a sender that retries a batch it got
//! no answer for stores nothing twice.
//!
//! Queries read [`Head::select`]'s chunks: the head's API hands out XOR
//! chunks, never decoded samples, and readers decode them lazily.

mod append;
mod cut;
mod series;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sluice_block::{Labels, Matcher};

pub use append::{AppendOutcome, AppendSeries, Rejected, Rejection, series_limit_message};
pub use series::{HeadChunk, MemSeries};

/// How the head accepts samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadOptions {
    /// `-ingester.out-of-order-time-window`: how far behind a tenant's
    /// newest sample an out-of-order sample may be; 0 refuses them.
    pub out_of_order_window_ms: i64,
    /// `-blocks-storage.tsdb.block-ranges-period`: chunks never straddle
    /// its boundaries, and in-order samples older than half of it behind
    /// the newest are out of bounds (Prometheus's rule).
    pub block_range_ms: i64,
}

impl Default for HeadOptions {
    fn default() -> HeadOptions {
        HeadOptions {
            out_of_order_window_ms: 0,
            block_range_ms: 2 * 60 * 60 * 1000,
        }
    }
}

/// A series with the chunks a query asked for.
#[derive(Clone, Debug)]
pub struct HeadSeries {
    pub labels: Labels,
    pub chunks: Vec<HeadChunk>,
}

/// What a tenant's writers share, under its append lock.
#[derive(Debug)]
pub(crate) struct AppendState {
    /// The tenant's newest sample.
    pub(crate) max_t: i64,
    /// No sample older than this is accepted (the end of the last block
    /// cut from the head).
    pub(crate) floor: i64,
}

/// Hashes label sets: seeded per process, as the labels come from
/// clients, and several times faster than SipHash on the ingest path.
pub(crate) type LabelHasher = foldhash::fast::RandomState;

#[derive(Default)]
pub(crate) struct Index {
    pub(crate) by_labels: HashMap<Labels, Arc<MemSeries>, LabelHasher>,
    pub(crate) by_name: HashMap<String, Vec<Arc<MemSeries>>, LabelHasher>,
}

/// One tenant's series.
pub struct TenantHead {
    pub(crate) append: Mutex<AppendState>,
    pub(crate) index: RwLock<Index>,
}

impl TenantHead {
    fn new() -> TenantHead {
        TenantHead {
            append: Mutex::new(AppendState {
                max_t: i64::MIN,
                floor: i64::MIN,
            }),
            index: RwLock::new(Index::default()),
        }
    }

    pub(crate) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The series matching every matcher with samples in `[start, end]`.
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<HeadSeries> {
        let index = self.read_index();
        let by_name = matchers.iter().find(|matcher| {
            matcher.name == "__name__" && matcher.op == sluice_block::MatchOp::Equal
        });
        let candidates: Box<dyn Iterator<Item = &Arc<MemSeries>>> = match by_name {
            Some(matcher) => Box::new(index.by_name.get(&matcher.value).into_iter().flatten()),
            None => Box::new(index.by_labels.values()),
        };
        let mut found = Vec::new();
        for series in candidates {
            let selected = matchers
                .iter()
                .all(|matcher| matcher.matches(series.labels.get(&matcher.name).unwrap_or("")));
            if !selected {
                continue;
            }
            let chunks = series.data().chunks(start, end);
            if !chunks.is_empty() {
                found.push(HeadSeries {
                    labels: series.labels.clone(),
                    chunks,
                });
            }
        }
        found
    }
}

/// Every tenant's head.
pub struct Head {
    options: HeadOptions,
    tenants: RwLock<HashMap<String, Arc<TenantHead>>>,
    /// WAL references, unique across tenants.
    next_reference: AtomicU64,
}

impl Head {
    pub fn new(options: HeadOptions) -> Head {
        Head {
            options,
            tenants: RwLock::new(HashMap::new()),
            next_reference: AtomicU64::new(1),
        }
    }

    pub fn options(&self) -> HeadOptions {
        self.options
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<TenantHead>> {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        tenants.get(tenant).cloned()
    }

    pub(crate) fn tenant_or_new(&self, tenant: &str) -> Arc<TenantHead> {
        if let Some(found) = self.tenant(tenant) {
            return found;
        }
        let mut tenants = self
            .tenants
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(TenantHead::new())),
        )
    }

    pub(crate) fn new_reference(&self) -> u64 {
        self.next_reference.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes later references larger than `reference` (seen in the WAL).
    pub(crate) fn saw_reference(&self, reference: u64) {
        self.next_reference
            .fetch_max(reference.saturating_add(1), Ordering::Relaxed);
    }

    /// The tenants that have series.
    pub fn tenants(&self) -> Vec<String> {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut names: Vec<String> = tenants.keys().cloned().collect();
        names.sort();
        names
    }

    /// The series of `tenant` matching `matchers` with samples in `[start,
    /// end]`, each with the chunks that overlap that range.
    pub fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<HeadSeries> {
        match self.tenant(tenant) {
            Some(head) => head.select(matchers, start, end),
            None => Vec::new(),
        }
    }

    /// Series count of `tenant`.
    pub fn series_count(&self, tenant: &str) -> usize {
        self.tenant(tenant)
            .map_or(0, |head| head.read_index().by_labels.len())
    }
}

#[cfg(test)]
mod tests;
