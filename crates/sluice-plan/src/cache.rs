//! The results cache's bookkeeping, independent of where bytes are stored.
//!
//! One cache entry per (tenant, query, step, grid phase, lookback, split
//! interval, interval bucket) holds *extents*: time ranges of the query's grid
//! already computed, with their matrix. A request is answered from the
//! extents it overlaps plus sub-queries for the gaps, and the fresh answers
//! are folded back into the entry.
//!
//! Correctness rests on three rules: every extent of an entry lies on the
//! same grid (the key holds step and `start mod step`), so a gap is a grid
//! range and cached points are exactly the points the query wants; an extent
//! only ever holds final data (nothing newer than `now - max_freshness`,
//! pushed further back by negative offsets, which read the future); and
//! answers carrying warnings or infos, or errors, are never stored, because a
//! cached part would replay its data without them.

use prost::Message;
use sluice_proto::{ApiResponse, QueryData, RangeQuery, ResponseData};

use crate::merge::{concat_data, concat_slices, slice_data};
use crate::plan::{CachedPrefix, Plan};
use crate::promql::{self, TimeModifiers};
use crate::split::last_grid_point;

/// By default the newest 10 minutes are never cached: samples may still be
/// arriving for them.
pub const DEFAULT_MAX_FRESHNESS_MS: i64 = 10 * 60 * 1000;

/// By default an entry is capped at 16 MiB encoded; a memcached backend needs
/// its item size (`-I`) at least this large or such entries are turned away.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 16 << 20;

/// A time range of a query's grid already computed, and its answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extent {
    /// First grid point covered.
    #[prost(int64, tag = "1")]
    pub start_ms: i64,
    /// Last grid point covered (inclusive).
    #[prost(int64, tag = "2")]
    pub end_ms: i64,
    /// The matrix for `[start_ms, end_ms]`.
    #[prost(message, optional, tag = "3")]
    pub data: Option<QueryData>,
    /// When the oldest of its answers was asked for (ms): a sample written
    /// late after that may be missing from it. 0 (entries from before this
    /// field) counts as older than any late write.
    #[prost(int64, tag = "4")]
    pub computed_at_ms: i64,
}

/// The value stored under a [`CacheKey`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheEntry {
    /// The full key, compared on every read: two keys sharing a hash must
    /// read as a miss, never as each other's data.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Sorted by start, non-overlapping, not adjacent (adjacent ones merge).
    #[prost(message, repeated, tag = "2")]
    pub extents: Vec<Extent>,
}

/// A cache key: the full text, and its stable 128-bit hash to store under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Every input of the key, unambiguously; stored inside the entry.
    pub full: String,
    /// 128-bit FNV-1a of `full`; see [`CacheKey::storage_key`].
    pub hash: u128,
}

impl CacheKey {
    /// The length of every [`CacheKey::storage_key`].
    pub const STORAGE_KEY_LEN: usize = 32;

    /// The key to give the storage backend: 32 lowercase hex digits, valid
    /// for memcached (no spaces or control characters, well under 250 bytes).
    pub fn storage_key(&self) -> String {
        format!("{:032x}", self.hash)
    }
}

/// 128-bit FNV-1a. Stable across processes, versions and machines, which
/// `std`'s hashers are not; collision resistance against adversaries is not
/// needed because the full key is checked on read.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    })
}

/// The cache key of one split piece.
///
/// Everything that changes the answer at a grid point is in it: tenant,
/// query text, step, grid phase (`start mod step`, so unaligned queries are
/// cacheable without mixing grids), lookback delta. The split interval and the
/// interval the piece starts in bound the entry's size. Timeout is not in it:
/// it does not change a successful answer. Strings are length-prefixed so no
/// two different inputs give the same key text.
pub fn cache_key(tenant: &str, piece: &RangeQuery, split_interval_ms: i64) -> CacheKey {
    let step = piece.step_ms.max(1);
    let bucket = if split_interval_ms > 0 {
        piece.start_ms.div_euclid(split_interval_ms)
    } else {
        0
    };
    let full = format!(
        "v1:{}:{}:{}:{}:step={}:phase={}:lookback={}:interval={}:bucket={}",
        tenant.len(),
        tenant,
        piece.query.len(),
        piece.query,
        piece.step_ms,
        piece.start_ms.rem_euclid(step),
        piece.lookback_delta_ms,
        split_interval_ms,
        bucket,
    );
    let hash = fnv1a_128(full.as_bytes());
    CacheKey { full, hash }
}

/// How the frontend wants the cache used for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Data newer than `now - max_freshness_ms` is never stored.
    pub max_freshness_ms: i64,
    /// Entries larger than this (encoded) lose their oldest extents.
    pub max_entry_bytes: usize,
    /// The client sent `Cache-Control: no-store`: read, but write nothing.
    pub no_store: bool,
    /// When the answers being stored were asked for (ms), before any of
    /// them was computed: the extents made from them carry it.
    pub computed_at_ms: i64,
    /// The tenant's late writes, as known now: two extents computed at
    /// different times merge into one carrying the later time unless one
    /// of these may be missing from the earlier one.
    pub late: Vec<LateWrite>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_freshness_ms: DEFAULT_MAX_FRESHNESS_MS,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            no_store: false,
            computed_at_ms: 0,
            late: Vec::new(),
        }
    }
}

/// Samples at or after `from_ms` that the store accepted at `at_ms`, after
/// the results cache may have settled their time (older than its
/// freshness window): an out-of-order sample or a backfill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateWrite {
    pub from_ms: i64,
    pub at_ms: i64,
}

/// The first grid point of `query` whose evaluation may read a sample at
/// `t`: a selector at evaluation time `g` reads up to `g` plus the negative
/// offsets, never later. `i64::MIN` when every point may (a fixed
/// `@` reads the same samples from anywhere; an uncacheable query).
fn first_point_reading(query: &RangeQuery, t: i64) -> i64 {
    match cacheable(query) {
        Some(modifiers) if modifiers.max_at_ms.is_none() => {
            t.saturating_sub(modifiers.negative_offsets_ms)
        }
        _ => i64::MIN,
    }
}

/// Whether a late write may change `query`'s answer as computed at
/// `computed_at_ms`: it came at or after that, and reaches one of its grid
/// points.
pub fn late_write_changes(query: &RangeQuery, computed_at_ms: i64, late: &LateWrite) -> bool {
    late.at_ms >= computed_at_ms && first_point_reading(query, late.from_ms) <= query.end_ms
}

/// When the merge of extents `a` and `b` counts as computed: at the later
/// of their times, unless a late write between the two may be missing from
/// the part computed earlier; then at the earlier one.
fn merged_computed_at(a: &Extent, b: &Extent, piece: &RangeQuery, late: &[LateWrite]) -> i64 {
    let (earlier, later) = match a.computed_at_ms <= b.computed_at_ms {
        true => (a, b),
        false => (b, a),
    };
    let missed = late.iter().any(|write| {
        write.at_ms >= earlier.computed_at_ms
            && first_point_reading(piece, write.from_ms) <= earlier.end_ms
    });
    match missed {
        true => earlier.computed_at_ms,
        false => later.computed_at_ms,
    }
}

/// `entry` without what `late` writes may have changed: each extent
/// computed before a late write that reaches its grid points is cut back
/// to the points before that write's first sample (gone when none are).
/// `None` when nothing changes.
pub fn without_late_data(
    entry: &CacheEntry,
    piece: &RangeQuery,
    late: &[LateWrite],
) -> Option<CacheEntry> {
    let step = piece.step_ms.max(1);
    let mut changed = false;
    let mut extents = Vec::with_capacity(entry.extents.len());
    for extent in &entry.extents {
        let first_changed = late
            .iter()
            .filter(|write| write.at_ms >= extent.computed_at_ms)
            .map(|write| first_point_reading(piece, write.from_ms))
            .min()
            .unwrap_or(i64::MAX);
        if first_changed > extent.end_ms {
            extents.push(extent.clone());
            continue;
        }
        changed = true;
        if first_changed <= extent.start_ms {
            continue;
        }
        // The last point of the extent's own grid before the first changed one.
        let end = extent.start_ms + (first_changed - 1 - extent.start_ms).div_euclid(step) * step;
        extents.push(Extent {
            start_ms: extent.start_ms,
            end_ms: end,
            data: extent
                .data
                .as_ref()
                .map(|data| slice_data(data, extent.start_ms, end)),
            computed_at_ms: extent.computed_at_ms,
        });
    }
    changed.then(|| CacheEntry {
        key: entry.key.clone(),
        extents,
    })
}

/// Encodes an entry for storage.
pub fn encode_entry(entry: &CacheEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// Decodes stored bytes for `key`. Garbage, an entry for another key (a hash
/// collision) or malformed extents read as a miss (`None`), never an error.
pub fn decode_entry(bytes: &[u8], key: &CacheKey) -> Option<CacheEntry> {
    let entry = CacheEntry::decode(bytes).ok()?;
    if entry.key != key.full {
        return None;
    }
    let well_formed = entry
        .extents
        .iter()
        .all(|extent| extent.start_ms <= extent.end_ms && extent.data.is_some());
    well_formed.then_some(entry)
}

/// The time modifiers of a piece whose answer may be cached, or `None` when
/// it may not be: a query that does not parse, that asks for stats or a
/// limit (its answer is not a plain function of the grid points), or that
/// still holds `@ start()`/`@ end()` (its answer depends on the piece's own
/// range, so a gap query would answer differently).
fn cacheable(piece: &RangeQuery) -> Option<TimeModifiers> {
    if piece.step_ms <= 0 || piece.limit != 0 || !piece.stats.is_empty() {
        return None;
    }
    let modifiers = promql::time_modifiers(&piece.query)?;
    (!modifiers.start_or_end).then_some(modifiers)
}

/// The last evaluation time whose answer is final at `now_ms` (it reads no
/// data newer than `now_ms - max_freshness_ms`, once negative offsets are
/// counted), or `None` when a fixed `@` reads data that is not final yet,
/// which every evaluation time does.
fn final_until(modifiers: &TimeModifiers, now_ms: i64, max_freshness_ms: i64) -> Option<i64> {
    let horizon = now_ms.saturating_sub(max_freshness_ms);
    if let Some(at) = modifiers.max_at_ms
        && at.saturating_add(modifiers.negative_offsets_ms) > horizon
    {
        return None;
    }
    Some(horizon.saturating_sub(modifiers.negative_offsets_ms))
}

/// Whether the whole answer to `query` is final at `now_ms`, by the same
/// rules as what the results cache may store: it can never change, so its
/// encoded bytes may be kept as they are.
pub fn answer_is_final(query: &RangeQuery, now_ms: i64, max_freshness_ms: i64) -> bool {
    cacheable(query)
        .and_then(|modifiers| final_until(&modifiers, now_ms, max_freshness_ms))
        .is_some_and(|until| query.end_ms <= until)
}

/// The first grid point of `piece` at or after `t`.
fn grid_ceil(piece: &RangeQuery, t: i64) -> i64 {
    // In i128: `t` may come from untrusted stored bytes or a far clock.
    let (start, step) = (i128::from(piece.start_ms), i128::from(piece.step_ms));
    let ceil = start + (i128::from(t) - start + step - 1).div_euclid(step) * step;
    i64::try_from(ceil).unwrap_or(i64::MAX)
}

/// The last grid point of `piece` at or before `t`.
fn grid_floor(piece: &RangeQuery, t: i64) -> i64 {
    let (start, step) = (i128::from(piece.start_ms), i128::from(piece.step_ms));
    let floor = start + (i128::from(t) - start).div_euclid(step) * step;
    i64::try_from(floor).unwrap_or(i64::MIN)
}

/// A sub-query for grid points `[start_ms, end_ms]` of `piece`.
fn sub_query(piece: &RangeQuery, start_ms: i64, end_ms: i64) -> RangeQuery {
    RangeQuery {
        start_ms,
        end_ms,
        ..piece.clone()
    }
}

/// The plan for one piece given its cache entry (`None`: a miss): cached
/// leaves for the grid points the extents cover, cut to the piece, and
/// query leaves for the grid ranges between them, in time order. With
/// nothing cached, or a piece that may not be cached, the plan is the piece
/// itself as one query leaf.
pub fn plan_with_cache(piece: &RangeQuery, entry: Option<&CacheEntry>) -> Plan {
    plan_pieces(piece, entry, true)
}

/// The plan [`plan_with_cache`] makes, without the cached leaves' data
/// (each cached leaf has its range and no data): what has to be run is
/// known at once, so it can start before the cached data is copied out.
/// The two plans always have the same leaves in the same order.
pub fn plan_queries_with_cache(piece: &RangeQuery, entry: Option<&CacheEntry>) -> Plan {
    plan_pieces(piece, entry, false)
}

/// The pieces' plans as their cached data, concatenated now, followed by
/// their query leaves, when every cached leaf comes before every query leaf
/// and there is at least one cached leaf: a range moved forward, whose
/// newest minutes alone are missing (the answer's cached part can then be
/// prepared while they are computed), or a range the cache answers whole.
/// `None` for any other plan.
///
/// `plans` are [`plan_queries_with_cache`]'s, one per piece in time order,
/// with the entries they were made from. The data comes from the entries'
/// extents directly: each cached sample is copied once, into place, not
/// cut out of its extent first and then copied again. Merged with the
/// queries' answers, it gives exactly what [`plan_with_cache`]'s plans give.
pub fn cached_prefix(plans: &[Plan], entries: &[Option<&CacheEntry>]) -> Option<CachedPrefix> {
    if plans.len() != entries.len() {
        return None;
    }
    let leaves: Vec<(&Plan, Option<&CacheEntry>)> = plans
        .iter()
        .zip(entries)
        .flat_map(|(plan, entry)| plan.leaves().into_iter().map(move |leaf| (leaf, *entry)))
        .collect();
    let cached = leaves
        .iter()
        .take_while(|(leaf, _)| matches!(leaf, Plan::Cached(_)))
        .count();
    if cached == 0
        || leaves[cached..]
            .iter()
            .any(|(leaf, _)| !matches!(leaf, Plan::Query(_)))
    {
        return None;
    }
    let mut parts = Vec::with_capacity(cached);
    let mut queries = Vec::with_capacity(leaves.len() - cached);
    for (leaf, entry) in leaves {
        match leaf {
            Plan::Cached(cut) => {
                // The extent a cached leaf was cut from is the first one, in
                // start order, that holds all of it: as `plan_pieces` chose it.
                let source = entry?
                    .extents
                    .iter()
                    .filter(|extent| extent.start_ms <= cut.start_ms && cut.end_ms <= extent.end_ms)
                    .min_by_key(|extent| extent.start_ms)?;
                parts.push((source.data.as_ref()?, cut.start_ms, cut.end_ms));
            }
            Plan::Query(query) => queries.push(query.clone()),
            Plan::Concat(_) => unreachable!("leaves only"),
        }
    }
    Some(CachedPrefix {
        data: concat_slices(&parts, crate::plan::room_for(&queries)),
        queries,
    })
}

fn plan_pieces(piece: &RangeQuery, entry: Option<&CacheEntry>, with_data: bool) -> Plan {
    let whole = || Plan::Query(piece.clone());
    let (Some(entry), Some(last)) = (entry, last_grid_point(piece)) else {
        return whole();
    };
    if cacheable(piece).is_none() {
        return whole();
    }
    let mut extents: Vec<&Extent> = entry.extents.iter().collect();
    extents.sort_by_key(|extent| extent.start_ms);

    let step = piece.step_ms;
    let mut children = Vec::new();
    let mut cursor = piece.start_ms;
    for extent in extents {
        if cursor > last {
            break;
        }
        // Stored bytes are untrusted: an extent outside the range is skipped
        // before any arithmetic, so no value read back can overflow.
        if extent.start_ms > last || extent.end_ms < cursor {
            continue;
        }
        // Snapping is defensive: extents of one entry share the piece's grid.
        let first = grid_ceil(piece, extent.start_ms.max(cursor));
        let until = grid_floor(piece, extent.end_ms.min(last));
        if first > until {
            continue;
        }
        if first > cursor {
            children.push(Plan::Query(sub_query(piece, cursor, first - step)));
        }
        let data = extent
            .data
            .as_ref()
            .filter(|_| with_data)
            .map(|data| slice_data(data, first, until));
        children.push(Plan::Cached(Extent {
            start_ms: first,
            end_ms: until,
            data,
            computed_at_ms: extent.computed_at_ms,
        }));
        cursor = until.saturating_add(step);
    }
    if cursor <= last {
        children.push(Plan::Query(sub_query(piece, cursor, piece.end_ms)));
    }
    match children.as_slice() {
        [Plan::Query(query)] if query == piece => whole(),
        _ => Plan::Concat(children),
    }
}

/// The entry to write back for one piece after its plan ran, or `None` when
/// nothing should be written (no-store, not cacheable, nothing new to add).
///
/// `plan` is the piece's plan from [`plan_with_cache`] and `answers` the
/// answers to its [`Plan::queries`], in order. Each successful answer
/// without warnings or infos becomes an extent, truncated to the final data
/// (grid points at or before `now - max_freshness`, less any negative
/// offsets); the extents are merged with the old entry's (overlapping or
/// adjacent ones join), and the oldest extents go while the entry is over
/// `max_entry_bytes`. A fixed `@` whose data is not final yet makes the whole
/// query uncacheable, since every grid point reads it.
pub fn updated_entry(
    key: &CacheKey,
    piece: &RangeQuery,
    entry: Option<&CacheEntry>,
    plan: &Plan,
    answers: &[ApiResponse],
    now_ms: i64,
    options: &CacheOptions,
) -> Option<CacheEntry> {
    if options.no_store {
        return None;
    }
    let modifiers = cacheable(piece)?;
    let final_until = final_until(&modifiers, now_ms, options.max_freshness_ms)?;

    let mut fresh = Vec::new();
    for (query, answer) in plan.queries().into_iter().zip(answers) {
        if answer.is_error() || !answer.warnings.is_empty() || !answer.infos.is_empty() {
            continue;
        }
        let Some(ResponseData::Query(data)) = &answer.data else {
            continue;
        };
        let Some(last) = last_grid_point(query) else {
            continue;
        };
        let end = last.min(grid_floor(query, final_until));
        if end < query.start_ms {
            continue;
        }
        fresh.push(Extent {
            start_ms: query.start_ms,
            end_ms: end,
            data: Some(slice_data(data, query.start_ms, end)),
            computed_at_ms: options.computed_at_ms,
        });
    }
    if fresh.is_empty() {
        return None;
    }

    let mut extents: Vec<Extent> = entry
        .filter(|entry| entry.key == key.full)
        .map(|entry| entry.extents.clone())
        .unwrap_or_default();
    extents.extend(fresh);
    extents.sort_by_key(|extent| extent.start_ms);
    let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
    for extent in extents {
        match merged.last_mut() {
            Some(previous) if extent.start_ms <= previous.end_ms.saturating_add(piece.step_ms) => {
                previous.computed_at_ms =
                    merged_computed_at(previous, &extent, piece, &options.late);
                previous.end_ms = previous.end_ms.max(extent.end_ms);
                let parts = [previous.data.take(), extent.data].into_iter().flatten();
                previous.data = Some(concat_data(parts));
            }
            _ => merged.push(extent),
        }
    }

    let mut updated = CacheEntry {
        key: key.full.clone(),
        extents: merged,
    };
    while !updated.extents.is_empty() && updated.encoded_len() > options.max_entry_bytes {
        updated.extents.remove(0);
    }
    (!updated.extents.is_empty()).then_some(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use proptest::prelude::*;
    use sluice_proto::{ErrorType, Label, ResultType, Series};

    const MINUTE: i64 = 60_000;

    fn piece(query: &str, start_ms: i64, end_ms: i64) -> RangeQuery {
        RangeQuery {
            query: query.into(),
            start_ms,
            end_ms,
            step_ms: MINUTE,
            ..RangeQuery::default()
        }
    }

    /// One series with a sample at every grid point of `query`, valued `t`.
    fn answer(query: &RangeQuery) -> ApiResponse {
        let mut series = Series {
            labels: vec![Label {
                name: "a".into(),
                value: "1".into(),
            }],
            ..Series::default()
        };
        for t in crate::grid_points(query) {
            series.push(t, t as f64);
        }
        ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series: vec![series],
            ..QueryData::default()
        }))
    }

    fn store(piece: &RangeQuery, entry: Option<&CacheEntry>, now_ms: i64) -> Option<CacheEntry> {
        let key = cache_key("t", piece, crate::DEFAULT_SPLIT_INTERVAL_MS);
        let plan = plan_with_cache(piece, entry);
        let answers: Vec<ApiResponse> = plan.queries().into_iter().map(answer).collect();
        updated_entry(
            &key,
            piece,
            entry,
            &plan,
            &answers,
            now_ms,
            &CacheOptions::default(),
        )
    }

    #[test]
    fn keys_separate_tenants_grids_and_intervals() {
        let base = piece("up", 0, 10 * MINUTE);
        let key = cache_key("a", &base, 0);
        assert_ne!(key, cache_key("b", &base, 0));
        assert_ne!(key, cache_key("a", &piece("up", 1, 10 * MINUTE), 0));
        assert_ne!(key, cache_key("a", &base, 1));
        // Same grid, later start: same entry.
        assert_eq!(key, cache_key("a", &piece("up", MINUTE, 20 * MINUTE), 0));
        // Length prefixes keep tenant and query apart.
        assert_ne!(
            cache_key("a:1", &piece("x", 0, 0), 0),
            cache_key("a", &piece("1:x", 0, 0), 0)
        );
        assert_eq!(key.storage_key().len(), CacheKey::STORAGE_KEY_LEN);
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn collisions_and_garbage_read_as_misses() {
        let key = cache_key("t", &piece("up", 0, MINUTE), 0);
        let mut other = key.clone();
        other.full.push('x');
        let entry = CacheEntry {
            key: other.full.clone(),
            extents: vec![],
        };
        assert_eq!(decode_entry(&encode_entry(&entry), &key), None);
        assert_eq!(decode_entry(b"\xff\xff\xff", &key), None);
        let mine = CacheEntry {
            key: key.full.clone(),
            extents: vec![],
        };
        assert_eq!(decode_entry(&encode_entry(&mine), &key), Some(mine));
    }

    #[test]
    fn a_repeated_query_needs_no_sub_queries() {
        let query = piece("up", 0, 60 * MINUTE);
        let entry = store(&query, None, 100 * MINUTE).unwrap();
        let plan = plan_with_cache(&query, Some(&entry));
        assert!(plan.queries().is_empty());
        assert_eq!(plan.merge(vec![]), answer(&query));
    }

    #[test]
    fn a_moved_query_asks_only_for_the_missing_time() {
        let first = piece("up", 0, 60 * MINUTE);
        let entry = store(&first, None, 100 * MINUTE).unwrap();
        let moved = piece("up", 5 * MINUTE, 65 * MINUTE);
        let plan = plan_with_cache(&moved, Some(&entry));
        assert_eq!(plan.queries(), vec![&piece("up", 61 * MINUTE, 65 * MINUTE)]);
        let answers = plan.queries().into_iter().map(answer).collect();
        assert_eq!(plan.merge(answers), answer(&moved));
        // Writing back joins the adjacent extents into one.
        let answers: Vec<_> = plan.queries().into_iter().map(answer).collect();
        let key = cache_key("t", &moved, crate::DEFAULT_SPLIT_INTERVAL_MS);
        let updated = updated_entry(
            &key,
            &moved,
            Some(&entry),
            &plan,
            &answers,
            100 * MINUTE,
            &CacheOptions::default(),
        )
        .unwrap();
        assert_eq!(updated.extents.len(), 1);
        assert_eq!(
            (updated.extents[0].start_ms, updated.extents[0].end_ms),
            (0, 65 * MINUTE)
        );
    }

    #[test]
    fn a_gap_in_the_middle_is_filled_by_one_sub_query() {
        let query = piece("up", 0, 30 * MINUTE);
        let entry = CacheEntry {
            key: String::new(),
            extents: vec![
                Extent {
                    start_ms: 0,
                    end_ms: 5 * MINUTE,
                    data: Some(QueryData::default()),
                    computed_at_ms: 0,
                },
                Extent {
                    start_ms: 20 * MINUTE,
                    end_ms: 40 * MINUTE,
                    data: Some(QueryData::default()),
                    computed_at_ms: 0,
                },
            ],
        };
        let plan = plan_with_cache(&query, Some(&entry));
        assert_eq!(plan.queries(), vec![&piece("up", 6 * MINUTE, 19 * MINUTE)]);
        assert_eq!(plan.cached_leaves(), 2);
    }

    #[test]
    fn the_newest_data_is_truncated_not_dropped() {
        let query = piece("up", 0, 60 * MINUTE);
        let entry = store(&query, None, 55 * MINUTE).unwrap();
        assert_eq!(entry.extents.len(), 1);
        assert_eq!(entry.extents[0].end_ms, 45 * MINUTE);
        let data = entry.extents[0].data.as_ref().unwrap();
        assert_eq!(data.series[0].timestamps_ms.last(), Some(&(45 * MINUTE)));
        // Everything too fresh: nothing to write.
        assert_eq!(store(&query, None, 5 * MINUTE), None);
    }

    #[test]
    fn negative_offsets_push_the_freshness_horizon_back() {
        let query = piece("up offset -5m", 0, 60 * MINUTE);
        let entry = store(&query, None, 55 * MINUTE).unwrap();
        assert_eq!(entry.extents[0].end_ms, 40 * MINUTE);
    }

    #[test]
    fn a_fixed_at_is_cached_only_once_its_data_is_final() {
        let query = piece("up @ 3000", 0, 60 * MINUTE);
        assert_eq!(store(&query, None, 55 * MINUTE), None);
        assert!(store(&query, None, 100 * MINUTE).is_some());
    }

    #[test]
    fn warnings_errors_stats_limits_and_no_store_are_not_stored() {
        let query = piece("up", 0, 60 * MINUTE);
        let key = cache_key("t", &query, 0);
        let plan = plan_with_cache(&query, None);
        let now = 100 * MINUTE;
        let options = CacheOptions::default();
        let mut warned = answer(&query);
        warned.warnings.push("careful".into());
        assert_eq!(
            updated_entry(&key, &query, None, &plan, &[warned], now, &options),
            None
        );
        let mut informed = answer(&query);
        informed.infos.push("fyi".into());
        assert_eq!(
            updated_entry(&key, &query, None, &plan, &[informed], now, &options),
            None
        );
        let failed = ApiResponse::error(ErrorType::Execution, "no");
        assert_eq!(
            updated_entry(&key, &query, None, &plan, &[failed], now, &options),
            None
        );
        let no_store = CacheOptions {
            no_store: true,
            ..CacheOptions::default()
        };
        assert_eq!(
            updated_entry(&key, &query, None, &plan, &[answer(&query)], now, &no_store),
            None
        );
        for uncacheable in [
            RangeQuery {
                stats: "all".into(),
                ..query.clone()
            },
            RangeQuery {
                limit: 1,
                ..query.clone()
            },
            piece("up @ end()", 0, 60 * MINUTE),
        ] {
            let plan = plan_with_cache(&uncacheable, None);
            assert_eq!(
                updated_entry(
                    &key,
                    &uncacheable,
                    None,
                    &plan,
                    &[answer(&uncacheable)],
                    now,
                    &options
                ),
                None
            );
            let entry = store(&query, None, now).unwrap();
            assert_eq!(
                plan_with_cache(&uncacheable, Some(&entry)),
                Plan::Query(uncacheable.clone())
            );
        }
    }

    fn leaf_points(plan: &Plan, step: i64) -> Vec<i64> {
        match plan {
            Plan::Query(query) => crate::grid_points(query).collect(),
            Plan::Cached(extent) => {
                let grid = RangeQuery {
                    start_ms: extent.start_ms,
                    end_ms: extent.end_ms,
                    step_ms: step,
                    ..RangeQuery::default()
                };
                crate::grid_points(&grid).collect()
            }
            Plan::Concat(children) => children
                .iter()
                .flat_map(|child| leaf_points(child, step))
                .collect(),
        }
    }

    /// The grid points of `piece` inside `[start_ms, end_ms]`, valued by
    /// `index`, so that taking another extent's data shows.
    fn extent_data(piece: &RangeQuery, index: usize, start_ms: i64, end_ms: i64) -> QueryData {
        let mut series = Series {
            labels: vec![Label {
                name: "a".into(),
                value: "1".into(),
            }],
            ..Series::default()
        };
        let step = piece.step_ms;
        let mut t = piece.start_ms - 2 * step;
        while t <= piece.end_ms + 2 * step {
            if start_ms <= t && t <= end_ms {
                series.push(t, t as f64 + index as f64 * 10_000.0);
            }
            t += step;
        }
        QueryData {
            result_type: ResultType::Matrix as i32,
            series: vec![series],
            ..QueryData::default()
        }
    }

    proptest! {
        /// Whatever extents an entry holds (overlapping, off-grid, absurd),
        /// the plan's leaves cover the piece's grid exactly once, in order;
        /// and the cached prefix made from the entry directly merges to the
        /// answer the plan with data merges to.
        #[test]
        fn leaves_cover_the_grid_exactly_once(
            start in -1_000i64..1_000,
            length in 0i64..2_000,
            step in 1i64..50,
            extents in prop::collection::vec(
                prop_oneof![
                    (-1_500i64..3_500, 0i64..800).prop_map(|(s, l)| (s, s + l)),
                    Just((i64::MIN, i64::MAX)),
                    Just((i64::MAX, i64::MAX)),
                    Just((i64::MIN, i64::MIN)),
                ],
                0..6,
            ),
        ) {
            let piece = RangeQuery { query: "up".into(), start_ms: start, end_ms: start + length, step_ms: step, ..RangeQuery::default() };
            let entry = CacheEntry {
                key: String::new(),
                extents: extents
                    .into_iter()
                    .enumerate()
                    .map(|(index, (start_ms, end_ms))| Extent { start_ms, end_ms, data: Some(extent_data(&piece, index, start_ms, end_ms)), computed_at_ms: 0 })
                    .collect(),
            };
            let plan = plan_with_cache(&piece, Some(&entry));
            let expected: Vec<i64> = crate::grid_points(&piece).collect();
            prop_assert_eq!(leaf_points(&plan, step), expected);
            // Planned without data: the same leaves, so what runs first
            // matches what is merged later.
            let without_data = plan_queries_with_cache(&piece, Some(&entry));
            prop_assert_eq!(without_data.queries(), plan.queries());
            prop_assert_eq!(leaf_points(&without_data, step), leaf_points(&plan, step));
            prop_assert_eq!(without_data.cached_samples(), 0);
            // A cached prefix exactly when cached leaves come first and
            // only queries follow them; merged, it is the plan's answer.
            let leaves = plan.leaves();
            let cached = leaves.iter().take_while(|leaf| matches!(leaf, Plan::Cached(_))).count();
            let prefix_shaped = cached > 0 && leaves[cached..].iter().all(|leaf| matches!(leaf, Plan::Query(_)));
            let answers: Vec<ApiResponse> = plan.queries().into_iter().map(answer).collect();
            match cached_prefix(&[without_data], &[Some(&entry)]) {
                Some(prefix) => {
                    prop_assert!(prefix_shaped);
                    prop_assert_eq!(prefix.queries().iter().collect::<Vec<_>>(), plan.queries());
                    prop_assert_eq!(prefix.samples(), plan.cached_samples());
                    let cached_series = prefix.data.series.clone();
                    let (merged, kept) = prefix.into_merged_keeping_prefix(answers.clone());
                    // Answers on the grid after the cached time leave
                    // every cached series as the start of its answer's.
                    prop_assert!(kept);
                    if let Some(ResponseData::Query(data)) = &merged.data {
                        for cached in &cached_series {
                            let series = data.series.iter().find(|series| series.labels == cached.labels).expect("every cached series is answered");
                            let count = cached.timestamps_ms.len();
                            prop_assert_eq!(&series.timestamps_ms[..count], &cached.timestamps_ms[..]);
                            prop_assert_eq!(&series.values[..count], &cached.values[..]);
                        }
                    }
                    prop_assert_eq!(merged, plan.merge(answers));
                }
                None => prop_assert!(!prefix_shaped),
            }
        }
    }

    /// An hour cached, then asked for again 5 minutes later: the moved
    /// range, and its cached prefix.
    fn moved_forward_prefix() -> (RangeQuery, CachedPrefix) {
        let first = piece("up", 0, 60 * MINUTE);
        let entry = store(&first, None, 100 * MINUTE).unwrap();
        let moved = piece("up", 5 * MINUTE, 65 * MINUTE);
        let plans = [plan_queries_with_cache(&moved, Some(&entry))];
        let prefix = cached_prefix(&plans, &[Some(&entry)]).expect("cached, then queried");
        (moved, prefix)
    }

    #[test]
    fn a_moved_range_has_a_cached_prefix_with_room_for_its_tail() {
        let (moved, prefix) = moved_forward_prefix();
        assert_eq!(prefix.queries(), &[piece("up", 61 * MINUTE, 65 * MINUTE)]);
        let series = &prefix.data.series[0];
        assert_eq!(series.timestamps_ms.len(), 56);
        // Room for the five grid points of the tail: appended in place.
        assert!(series.timestamps_ms.capacity() >= 61);
        assert!(series.values.capacity() >= 61);
        let answers = prefix.queries().iter().map(answer).collect();
        let (merged, kept) = prefix.into_merged_keeping_prefix(answers);
        assert!(kept);
        assert_eq!(merged, answer(&moved));
    }

    #[test]
    fn an_answer_reaching_back_into_the_cached_time_is_told() {
        // A backend answering from before the range asked for: the series
        // is put back in order, so the cached samples are no longer its
        // beginning as they were.
        let (_, prefix) = moved_forward_prefix();
        let reaching_back = vec![answer(&piece("up", 30 * MINUTE, 65 * MINUTE))];
        let (merged, kept) = prefix.into_merged_keeping_prefix(reaching_back);
        assert!(!kept);
        assert!(!merged.is_error());
        // An error keeps nothing.
        let (_, prefix) = moved_forward_prefix();
        let failed = vec![ApiResponse::error(
            sluice_proto::ErrorType::Internal,
            "down",
        )];
        assert!(!prefix.into_merged_keeping_prefix(failed).1);
    }

    #[test]
    fn only_cached_then_queried_plans_have_a_cached_prefix() {
        let extent = |index, start_ms, end_ms| Extent {
            start_ms,
            end_ms,
            data: Some(extent_data(
                &piece("up", 0, 30 * MINUTE),
                index,
                start_ms,
                end_ms,
            )),
            computed_at_ms: 0,
        };
        let entry = |extents| CacheEntry {
            key: String::new(),
            extents,
        };
        let query = piece("up", 0, 30 * MINUTE);
        let prefix_of = |entry: Option<&CacheEntry>| {
            cached_prefix(&[plan_queries_with_cache(&query, entry)], &[entry])
        };
        assert!(prefix_of(None).is_none(), "nothing cached");
        let gap = entry(vec![
            extent(0, 0, 5 * MINUTE),
            extent(1, 20 * MINUTE, 40 * MINUTE),
        ]);
        assert!(prefix_of(Some(&gap)).is_none(), "cached, queried, cached");
        let late = entry(vec![extent(0, 20 * MINUTE, 40 * MINUTE)]);
        assert!(prefix_of(Some(&late)).is_none(), "queried, then cached");
        // Wholly cached: a prefix with nothing after it.
        let whole = entry(vec![extent(0, 0, 40 * MINUTE)]);
        let prefix = prefix_of(Some(&whole)).expect("wholly cached");
        assert!(prefix.queries().is_empty());
        assert_eq!(
            prefix.into_merged_keeping_prefix(vec![]).0,
            plan_with_cache(&query, Some(&whole)).merge(vec![])
        );
    }

    #[test]
    fn oversized_entries_lose_their_oldest_extents() {
        let key = cache_key("t", &piece("up", 0, 0), 0);
        let old = CacheEntry {
            key: key.full.clone(),
            extents: vec![Extent {
                start_ms: 0,
                end_ms: 10 * MINUTE,
                data: answer(&piece("up", 0, 10 * MINUTE))
                    .data
                    .and_then(|data| match data {
                        ResponseData::Query(data) => Some(data),
                        _ => None,
                    }),
                computed_at_ms: 0,
            }],
        };
        let query = piece("up", 20 * MINUTE, 30 * MINUTE);
        let plan = plan_with_cache(&query, Some(&old));
        let answers = [answer(&query)];
        let full = updated_entry(
            &key,
            &query,
            Some(&old),
            &plan,
            &answers,
            100 * MINUTE,
            &CacheOptions::default(),
        )
        .unwrap();
        assert_eq!(full.extents.len(), 2);
        let tight = CacheOptions {
            max_entry_bytes: full.encoded_len() - 1,
            ..CacheOptions::default()
        };
        let capped = updated_entry(
            &key,
            &query,
            Some(&old),
            &plan,
            &answers,
            100 * MINUTE,
            &tight,
        )
        .unwrap();
        assert_eq!(capped.extents.len(), 1);
        assert_eq!(capped.extents[0].start_ms, 20 * MINUTE);
    }

    /// An entry of one extent over all of `query`, computed at `computed_at_ms`.
    fn one_extent(query: &RangeQuery, computed_at_ms: i64) -> CacheEntry {
        let Some(ResponseData::Query(data)) = answer(query).data else {
            unreachable!("a query answer")
        };
        CacheEntry {
            key: "k".into(),
            extents: vec![Extent {
                start_ms: query.start_ms,
                end_ms: query.end_ms,
                data: Some(data),
                computed_at_ms,
            }],
        }
    }

    fn late(from_ms: i64, at_ms: i64) -> LateWrite {
        LateWrite { from_ms, at_ms }
    }

    #[test]
    fn a_late_write_cuts_the_extents_computed_before_it_back_to_its_first_sample() {
        let query = piece("rate(x[5m])", 0, 10 * MINUTE);
        let entry = one_extent(&query, 100);
        let cut = without_late_data(&entry, &query, &[late(5 * MINUTE + 1, 200)]).unwrap();
        assert_eq!(cut.extents.len(), 1);
        assert_eq!(cut.extents[0].end_ms, 5 * MINUTE);
        let Some(data) = &cut.extents[0].data else {
            panic!("data kept")
        };
        assert_eq!(data.series[0].timestamps_ms.len(), 6);
        // On a grid point: that point may read it, so it goes too.
        let cut = without_late_data(&entry, &query, &[late(5 * MINUTE, 200)]).unwrap();
        assert_eq!(cut.extents[0].end_ms, 4 * MINUTE);
        // Before the extent's start: all of it may read the sample.
        let gone = without_late_data(&entry, &query, &[late(-MINUTE, 100)]).unwrap();
        assert!(gone.extents.is_empty());
    }

    #[test]
    fn late_writes_before_the_extent_was_computed_or_after_its_end_change_nothing() {
        let query = piece("x", 0, 10 * MINUTE);
        let entry = one_extent(&query, 100);
        assert_eq!(without_late_data(&entry, &query, &[late(MINUTE, 99)]), None);
        assert_eq!(
            without_late_data(&entry, &query, &[late(10 * MINUTE + 1, 500)]),
            None
        );
        assert!(late_write_changes(&query, 100, &late(10 * MINUTE, 100)));
        assert!(!late_write_changes(
            &query,
            100,
            &late(10 * MINUTE + 1, 100)
        ));
        assert!(!late_write_changes(&query, 101, &late(0, 100)));
    }

    #[test]
    fn negative_offsets_and_fixed_at_reach_further() {
        let ahead = piece("x offset -2m", 0, 10 * MINUTE);
        let cut =
            without_late_data(&one_extent(&ahead, 1), &ahead, &[late(5 * MINUTE, 2)]).unwrap();
        assert_eq!(cut.extents[0].end_ms, 2 * MINUTE);
        assert!(late_write_changes(&ahead, 1, &late(11 * MINUTE, 2)));
        let fixed = piece("x @ 60", 0, 10 * MINUTE);
        let gone =
            without_late_data(&one_extent(&fixed, 1), &fixed, &[late(50 * MINUTE, 2)]).unwrap();
        assert!(gone.extents.is_empty());
    }

    #[test]
    fn merged_extents_take_the_later_time_unless_a_late_write_may_be_missing() {
        let key = cache_key("t", &piece("x", 0, 10 * MINUTE), 86_400_000);
        let first = piece("x", 0, 4 * MINUTE);
        let options = |computed_at_ms, late: Vec<LateWrite>| CacheOptions {
            max_freshness_ms: 0,
            computed_at_ms,
            late,
            ..CacheOptions::default()
        };
        let now = 100 * MINUTE;
        let first_plan = Plan::Query(first.clone());
        let entry = updated_entry(
            &key,
            &first,
            None,
            &first_plan,
            &[answer(&first)],
            now,
            &options(7, vec![]),
        )
        .unwrap();
        assert_eq!(entry.extents[0].computed_at_ms, 7);
        let whole = piece("x", 0, 9 * MINUTE);
        let plan = plan_with_cache(&whole, Some(&entry));
        let answers: Vec<ApiResponse> = plan.queries().into_iter().map(answer).collect();
        let merge = |late| {
            updated_entry(
                &key,
                &whole,
                Some(&entry),
                &plan,
                &answers,
                now,
                &options(9, late),
            )
            .unwrap()
        };
        let merged = merge(vec![]);
        assert_eq!(merged.extents.len(), 1);
        assert_eq!(merged.extents[0].computed_at_ms, 9);
        // Written at 8, reaching the first part's last point: it may lack it.
        let merged = merge(vec![late(4 * MINUTE, 8)]);
        assert_eq!(merged.extents[0].computed_at_ms, 7);
        // Only the second part reads it, and that was computed after.
        let merged = merge(vec![late(4 * MINUTE + 1, 8)]);
        assert_eq!(merged.extents[0].computed_at_ms, 9);
    }
}
