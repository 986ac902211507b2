//! The results cache, in one place: the only frontend code that uses
//! `sluice_cache` and the cache functions of `sluice_plan`.
//!
//! A range query's pieces (a day each) are looked up together; only the
//! time their entries do not cover runs, and the pieces' entries are
//! brought up to date with what ran, off the request's path. With the cache
//! in process, the newest entries are also kept decoded
//! ([`DecodedEntries`]). `series`, `labels` and label values answers are
//! cached whole for a short while, when enabled.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_cache::{BackendConfig, CacheConfig, SharedCache};
use sluice_plan::{CacheEntry, CacheKey, CacheOptions, CachedPrefix, Plan};
use sluice_proto::{ApiResponse, QueryKind, QueryRequest, RangeQuery, ResponseData};

use super::{AnswerFuture, Next, Stage};
use crate::FrontendConfig;
use crate::clock::SharedClock;
use crate::fragments::{FragmentMemo, Prefixes};
use crate::late::LateWrites;
use crate::metrics::FrontendMetrics;
use crate::oldest_first::OldestFirst;
use crate::request::{Answer, Outcome, PieceAnswers, QueryStats, Request};

/// How the results cache is set up: its backend, size and compression.
pub type ResultsCacheConfig = CacheConfig;

/// The default results cache: 512 MiB in process.
pub(crate) fn default_config() -> ResultsCacheConfig {
    CacheConfig {
        name: "results".to_owned(),
        backend: BackendConfig::InProcess(sluice_cache::InProcessConfig::with_max_bytes(
            512 * 1024 * 1024,
        )),
        compression: sluice_cache::Compression::None,
    }
}

/// The results cache's backend and what the frontend keeps beside it.
pub(crate) struct ResultsCache {
    backend: SharedCache,
    /// Decoded entries, when the cache is in process.
    decoded: Option<DecodedEntries>,
    /// The largest entry the backend stores: a larger one loses its oldest
    /// extents before it is written.
    max_entry_bytes: usize,
    ttl: Duration,
    max_freshness: Duration,
    /// Range queries use the cache (it may exist for metadata alone).
    cache_range_results: bool,
    metadata_ttl: Duration,
    /// Entries are keyed per split interval, or per day with splitting
    /// off, so a query moved forward still finds what its earlier run stored.
    key_interval_ms: i64,
    clock: SharedClock,
    /// Samples written late: the extents that may lack them are cut.
    late: Arc<LateWrites>,
}

impl ResultsCache {
    /// The results cache `config` asks for, if any, its metrics registered
    /// in `registry`. Fails only on a configuration that cannot work.
    pub(crate) fn from_config(
        config: &FrontendConfig,
        registry: &prometheus::Registry,
        clock: SharedClock,
        late: Arc<LateWrites>,
    ) -> Result<Option<ResultsCache>, String> {
        let (cache_config, decoded_bytes) =
            share_in_process_budget(config.results_cache.clone(), config.cache_range_results);
        let Some(cache_config) = cache_config else {
            return Ok(None);
        };
        let cache_metrics = sluice_cache::CacheMetrics::register(registry)
            .map_err(|error| format!("registering cache metrics: {error}"))?;
        let backend = sluice_cache::build(cache_config.clone(), &cache_metrics)
            .map_err(|error| format!("results cache: {error}"))?;
        let max_entry_bytes = cache_config
            .max_value_bytes(CacheKey::STORAGE_KEY_LEN)
            .min(sluice_plan::DEFAULT_MAX_ENTRY_BYTES);
        let split_ms = config.split_interval.as_millis() as i64;
        Ok(Some(ResultsCache {
            backend,
            decoded: (decoded_bytes > 0).then(|| {
                DecodedEntries::new(decoded_bytes, config.results_cache_ttl, clock.clone())
            }),
            max_entry_bytes,
            ttl: config.results_cache_ttl,
            max_freshness: config.max_cache_freshness,
            cache_range_results: config.cache_range_results,
            metadata_ttl: config.metadata_cache_ttl,
            key_interval_ms: if split_ms > 0 {
                split_ms
            } else {
                sluice_plan::DEFAULT_SPLIT_INTERVAL_MS
            },
            clock,
            late,
        }))
    }

    /// Whether `query`'s answer is final by the cache's rules: its whole
    /// range is older than the freshness window.
    pub(crate) fn answer_is_final(
        query: &RangeQuery,
        now_ms: i64,
        max_freshness: Duration,
    ) -> bool {
        sluice_plan::answer_is_final(query, now_ms, max_freshness.as_millis() as i64)
    }
}

/// An in-process results cache's configuration with a quarter of its
/// budget taken out for its newest entries kept decoded (when range results
/// are cached), and that quarter in bytes: together they stay within the
/// budget the operator set.
fn share_in_process_budget(
    mut cache: Option<CacheConfig>,
    cache_range_results: bool,
) -> (Option<CacheConfig>, usize) {
    let decoded = match cache.as_mut().map(|cache| &mut cache.backend) {
        Some(BackendConfig::InProcess(in_process)) if cache_range_results => {
            let decoded = in_process.max_bytes / 4;
            in_process.max_bytes -= decoded;
            decoded as usize
        }
        _ => 0,
    };
    (cache, decoded)
}

/// Looks range pieces and metadata requests up in the results cache.
pub(crate) struct ResultsCacheStage {
    next: Next,
    cache: ResultsCache,
    /// Where the cached leading samples of an answer are encoded ahead
    /// while its newest minutes are computed (see [`crate::fragments`]).
    fragments: Option<Arc<FragmentMemo>>,
    metrics: FrontendMetrics,
}

/// A range query's pieces as the cache sees them.
struct Lookup {
    query: RangeQuery,
    pieces: Vec<RangeQuery>,
    keys: Vec<CacheKey>,
    entries: Vec<Option<Arc<CacheEntry>>>,
    /// Per piece, what has to run (cached extents stand for their ranges
    /// only, without their data).
    query_plans: Vec<Plan>,
    /// How long the tenant's entries may be kept.
    ttl: Duration,
    /// When the lookup began, before anything ran: what the extents made
    /// from its answers were computed at.
    computed_at_ms: i64,
    tenant: String,
}

/// How the answers to a range query's sub-queries become its answer.
enum Merge {
    Plan(Plan),
    Prefix(CachedPrefix),
}

impl Stage for ResultsCacheStage {
    fn name(&self) -> &'static str {
        "results cache"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        let no_store = request.cache_control.no_store;
        match &request.kind {
            QueryKind::Range(_) if !no_store && self.cache.cache_range_results => {
                Box::pin(self.range(request))
            }
            QueryKind::Metadata(_) if !no_store && !self.cache.metadata_ttl.is_zero() => {
                Box::pin(self.metadata(request))
            }
            _ => self.next.handle(request),
        }
    }
}

impl ResultsCacheStage {
    pub(crate) fn new(
        next: Next,
        cache: ResultsCache,
        fragments: Option<Arc<FragmentMemo>>,
        metrics: FrontendMetrics,
    ) -> ResultsCacheStage {
        ResultsCacheStage {
            next,
            cache,
            fragments,
            metrics,
        }
    }

    /// Runs what the cache does not cover of a range query, merges it with
    /// what it does, and writes the pieces' entries back.
    async fn range(&self, mut request: Request) -> Answer {
        let mut stats = QueryStats::default();
        let lookup = self.look_up(&mut request, &mut stats).await;
        let leaves: Vec<RangeQuery> = lookup
            .query_plans
            .iter()
            .flat_map(Plan::queries)
            .cloned()
            .collect();
        stats.sub_queries = leaves.len();
        stats.cached_extents = lookup.query_plans.iter().map(Plan::cached_leaves).sum();
        let step_ms = lookup.query.step_ms;
        let gzip = request.accepts_gzip;
        let running = self.run_leaves(request, leaves);
        // `join` polls its first future first: the sub-queries are queued
        // before the copying starts. When only the newest minutes are
        // missing, the cached rest of the answer is merged and encoded
        // while they are computed.
        let (ran, (merge, prefixes)) = futures_util::future::join(running, async {
            // The querier's task, woken by the queueing, waits in this
            // worker's next-task slot, which other workers do not take
            // from: it has to be let run before the copying starts, or the
            // sub-queries wait for the copying after all.
            tokio::task::yield_now().await;
            self.cached_part(&lookup, step_ms, gzip, &mut stats)
        })
        .await;
        let (piece_answers, ran_stats) = ran;
        stats.add_execution(&ran_stats);
        self.metrics
            .samples
            .with_label_values(&["cache"])
            .inc_by(stats.samples_from_cache as u64);
        // The write-back reads the answers; the merge then consumes them, so
        // no answer is copied on the way.
        self.write_back(&lookup, &piece_answers.answers);
        let mut answer = merged(merge, prefixes, piece_answers);
        answer.stats = stats;
        answer
    }

    /// The entries of `request`'s pieces (the whole query when unsplit)
    /// and what has to run.
    async fn look_up(&self, request: &mut Request, stats: &mut QueryStats) -> Lookup {
        let computed_at_ms = self.cache.clock.now_ms();
        let query = request.range().expect("a range query").clone();
        let pieces = request.pieces.take().unwrap_or_else(|| vec![query.clone()]);
        let keys: Vec<CacheKey> = pieces
            .iter()
            .map(|piece| sluice_plan::cache_key(&request.tenant, piece, self.cache.key_interval_ms))
            .collect();
        let ttl = request.results_ttl(self.cache.ttl);
        let mut entries = self.entries(&keys, ttl, stats).await;
        let late = self.cache.late.of(&request.tenant);
        if !late.is_empty() {
            for (entry, piece) in entries.iter_mut().zip(&pieces) {
                let cut = entry
                    .as_deref()
                    .and_then(|found| sluice_plan::without_late_data(found, piece, &late));
                if let Some(cut) = cut {
                    *entry = Some(Arc::new(cut));
                }
            }
        }
        // What has to run is known from the extents' ranges alone: it is
        // sent first, and the cached data is copied out while it runs. These
        // plans serve the write-back too: it needs only which ranges ran.
        let query_plans = pieces
            .iter()
            .zip(&entries)
            .map(|(piece, entry)| sluice_plan::plan_queries_with_cache(piece, entry.as_deref()))
            .collect();
        Lookup {
            query,
            pieces,
            keys,
            entries,
            query_plans,
            ttl,
            computed_at_ms,
            tenant: request.tenant.to_string(),
        }
    }

    /// Runs `leaves` as one batch through the next stage; none to run is
    /// an empty batch, answered at once.
    async fn run_leaves(
        &self,
        request: Request,
        leaves: Vec<RangeQuery>,
    ) -> (PieceAnswers, QueryStats) {
        if leaves.is_empty() {
            let nothing = PieceAnswers {
                answers: Vec::new(),
                failed: None,
            };
            return (nothing, QueryStats::default());
        }
        let mut batch = request.with_kind(request.kind.clone());
        batch.pieces = Some(leaves);
        let answer = self.next.handle(batch).await;
        let pieces = match answer.outcome {
            Outcome::Pieces(pieces) => pieces,
            Outcome::Whole(response) => PieceAnswers {
                failed: response.is_error().then_some(0),
                answers: vec![response],
            },
        };
        (pieces, answer.stats)
    }

    /// The cached part of the answer: a prefix encoded ahead when the
    /// cached data all comes before what runs, else the plan with the
    /// cached data in it.
    fn cached_part(
        &self,
        lookup: &Lookup,
        step_ms: i64,
        gzip: bool,
        stats: &mut QueryStats,
    ) -> (Merge, Option<Prefixes>) {
        let entries: Vec<Option<&CacheEntry>> =
            lookup.entries.iter().map(Option::as_deref).collect();
        if let Some(prefix) = sluice_plan::cached_prefix(&lookup.query_plans, &entries) {
            stats.samples_from_cache = prefix.samples();
            // Encoding ahead pays only while something is computed; a
            // wholly cached answer is assembled once, at the end.
            let prefixes = self
                .fragments
                .as_deref()
                .filter(|_| !prefix.queries().is_empty())
                .map(|memo| Prefixes::new(memo, step_ms, &prefix.data, gzip));
            return (Merge::Prefix(prefix), prefixes);
        }
        let mut piece_plans: Vec<Plan> = lookup
            .pieces
            .iter()
            .zip(&entries)
            .map(|(piece, entry)| sluice_plan::plan_with_cache(piece, *entry))
            .collect();
        stats.samples_from_cache = piece_plans.iter().map(Plan::cached_samples).sum();
        let plan = if piece_plans.len() == 1 {
            piece_plans.pop().expect("one piece plan")
        } else {
            Plan::Concat(piece_plans)
        };
        (Merge::Plan(plan), None)
    }

    /// Brings the pieces' entries up to date with `answers` (in the order
    /// of the plans' queries): decoded copies at once, so the next request
    /// finds them; the backend off the request's path.
    fn write_back(&self, lookup: &Lookup, answers: &[ApiResponse]) {
        let cache = &self.cache;
        let options = CacheOptions {
            max_freshness_ms: cache.max_freshness.as_millis() as i64,
            max_entry_bytes: cache.max_entry_bytes,
            computed_at_ms: lookup.computed_at_ms,
            late: cache.late.of(&lookup.tenant),
            ..CacheOptions::default()
        };
        let now_ms = cache.clock.now_ms();
        let mut first_answer = 0;
        let mut writes = Vec::new();
        let pieces = (lookup.pieces.iter().zip(&lookup.keys))
            .zip(lookup.entries.iter().zip(&lookup.query_plans));
        for ((piece, key), (entry, piece_plan)) in pieces {
            let piece_answers = piece_plan.queries().len();
            let own = &answers[first_answer..first_answer + piece_answers];
            first_answer += piece_answers;
            let Some(updated) = sluice_plan::updated_entry(
                key,
                piece,
                entry.as_deref(),
                piece_plan,
                own,
                now_ms,
                &options,
            ) else {
                continue;
            };
            let updated = Arc::new(updated);
            if let Some(decoded) = &cache.decoded {
                decoded.put(key, updated.clone(), updated.encoded_len(), lookup.ttl);
            }
            writes.push((key.storage_key(), updated));
        }
        if writes.is_empty() {
            return;
        }
        // Off the request's path: the client does not wait for the cache.
        let backend = cache.backend.clone();
        let ttl = lookup.ttl;
        tokio::spawn(async move {
            let encoded = writes
                .into_iter()
                .map(|(storage_key, entry)| (storage_key, sluice_plan::encode_entry(&entry)))
                .collect();
            backend.set_many(encoded, ttl).await
        });
    }

    /// The cache entries for `keys`: from the decoded entries where kept
    /// there, else read from the cache and decoded (and then kept); the
    /// hits and misses counted in `stats` and the metrics.
    async fn entries(
        &self,
        keys: &[CacheKey],
        ttl: Duration,
        stats: &mut QueryStats,
    ) -> Vec<Option<Arc<CacheEntry>>> {
        let decoded = self.cache.decoded.as_ref();
        // Each entry found with its encoded size.
        let mut found: Vec<Option<(Arc<CacheEntry>, usize)>> = keys
            .iter()
            .map(|key| decoded.and_then(|decoded| decoded.get(key)))
            .collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let storage_keys: Vec<String> =
                missing.iter().map(|&i| keys[i].storage_key()).collect();
            let read = self.cache.backend.get_many(&storage_keys).await;
            for (&index, storage_key) in missing.iter().zip(&storage_keys) {
                let key = &keys[index];
                let Some(bytes) = read.get(storage_key) else {
                    continue;
                };
                let Some(entry) = sluice_plan::decode_entry(bytes, key).map(Arc::new) else {
                    continue;
                };
                if let Some(kept) = decoded {
                    kept.put(key, entry.clone(), bytes.len(), ttl);
                }
                found[index] = Some((entry, bytes.len()));
            }
        }
        self.count_lookups(&found, stats);
        found
            .into_iter()
            .map(|entry| entry.map(|(entry, _)| entry))
            .collect()
    }

    fn count_lookups(&self, found: &[Option<(Arc<CacheEntry>, usize)>], stats: &mut QueryStats) {
        stats.cache_hits = found.iter().flatten().count();
        stats.cache_misses = found.len() - stats.cache_hits;
        stats.cache_hit_bytes = found.iter().flatten().map(|(_, bytes)| bytes).sum();
        let lookups = &self.metrics.results_cache_lookups;
        lookups
            .with_label_values(&["hit"])
            .inc_by(stats.cache_hits as u64);
        lookups
            .with_label_values(&["miss"])
            .inc_by(stats.cache_misses as u64);
        self.metrics
            .results_cache_hit_bytes
            .inc_by(stats.cache_hit_bytes as u64);
    }

    /// Serves `series`, `labels` and label values from the cache, else runs
    /// them and stores clean answers briefly.
    async fn metadata(&self, request: Request) -> Answer {
        let query_request = QueryRequest {
            kind: Some(request.kind.clone()),
        };
        let key = metadata_key(&request.tenant, &query_request);
        let found = self
            .cache
            .backend
            .get_many(std::slice::from_ref(&key))
            .await;
        if let Some(answer) = found
            .get(&key)
            .and_then(|bytes| ApiResponse::decode(bytes.as_slice()).ok())
            .filter(|answer| {
                matches!(
                    answer.data,
                    Some(ResponseData::Series(_) | ResponseData::Strings(_))
                )
            })
        {
            self.metrics.metadata_cache_hits.inc();
            return Answer::whole(answer, QueryStats::default());
        }
        let answer = self.next.handle(request).await;
        let response = answer.response();
        if !response.is_error() && response.warnings.is_empty() && response.infos.is_empty() {
            let backend = self.cache.backend.clone();
            let bytes = response.encode_to_vec();
            let ttl = self.cache.metadata_ttl;
            tokio::spawn(async move { backend.set_many(vec![(key, bytes)], ttl).await });
        }
        answer
    }
}

/// The range query's answer from its `merge`, the pieces' answers, and the
/// prefixes encoded ahead; a failed piece's answer is the query's.
fn merged(merge: Merge, prefixes: Option<Prefixes>, pieces: PieceAnswers) -> Answer {
    if let Some(failed) = pieces.failed {
        let response = pieces.answers.into_iter().nth(failed).unwrap_or_default();
        return Answer::whole(response, QueryStats::default());
    }
    // The plan goes into the answer: its cached data moves, not copied.
    let (response, prefixes) = match merge {
        Merge::Plan(plan) => (plan.into_merged(pieces.answers), prefixes),
        Merge::Prefix(prefix) => {
            let (response, kept) = prefix.into_merged_keeping_prefix(pieces.answers);
            (response, prefixes.map(|prefixes| prefixes.vouched(kept)))
        }
    };
    let mut answer = Answer::whole(response, QueryStats::default());
    answer.prefixes = prefixes;
    answer
}

/// The metadata cache key: the tenant and the whole request, so nothing is
/// ever shared across tenants or across different matchers and ranges.
fn metadata_key(tenant: &str, request: &QueryRequest) -> String {
    let mut key = String::from("metadata:");
    key.push_str(tenant);
    key.push(':');
    for byte in request.encode_to_vec() {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// Results cache entries as decoded, for a cache in this process's own
/// memory. Decoding a week of extents took longer than running the few
/// minutes a moved range still needs; with the cache in process, this
/// frontend writes every entry itself, so what it keeps here is never
/// behind the cache (and a cached extent holds only final data, so an old
/// copy would still be right, only shorter). Bounded by bytes (twice the
/// encoded size, for the decoded form); the oldest go first.
pub(crate) struct DecodedEntries {
    /// By the hash of their key, each with its encoded size (what a read
    /// from the cache would have been).
    entries: OldestFirst<u128, (Arc<CacheEntry>, usize)>,
}

impl DecodedEntries {
    /// At most `max_bytes`, each entry served for `ttl`.
    pub(crate) fn new(max_bytes: usize, ttl: Duration, clock: SharedClock) -> DecodedEntries {
        DecodedEntries {
            entries: OldestFirst::new(max_bytes, ttl, clock),
        }
    }

    /// `key`'s entry, with its encoded size. Entries are found by the
    /// key's hash, and two keys whose hashes collide (the query text is
    /// the user's to choose) must not share data, so the full key stored
    /// in the entry is compared, as the cache's own read
    /// (`sluice_plan::decode_entry`) does.
    fn get(&self, key: &CacheKey) -> Option<(Arc<CacheEntry>, usize)> {
        self.entries
            .get(&key.hash)
            .filter(|(entry, _)| entry.key == key.full)
    }

    /// Keeps `key`'s `entry`, whose encoding is `encoded_len` bytes, in
    /// place of any older one, for at most `ttl`.
    fn put(&self, key: &CacheKey, entry: Arc<CacheEntry>, encoded_len: usize, ttl: Duration) {
        self.entries
            .put_for(key.hash, (entry, encoded_len), encoded_len * 2, ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use sluice_cache::{Compression, InProcessConfig, MemcachedConfig};

    use crate::stages::testing::{FakeNext, NOW_MS, grid_answer, range_request};

    fn clock() -> SharedClock {
        ManualClock::at(0)
    }

    const HOUR_MS: i64 = 3_600_000;

    fn stage(next: Next, clock: SharedClock) -> ResultsCacheStage {
        stage_hearing_late_writes(next, clock).0
    }

    /// A stage and the late writes it hears of.
    fn stage_hearing_late_writes(
        next: Next,
        clock: SharedClock,
    ) -> (ResultsCacheStage, Arc<LateWrites>) {
        let registry = prometheus::Registry::new();
        let config = FrontendConfig::default();
        let late = Arc::new(LateWrites::new(config.max_cache_freshness, clock.clone()));
        let cache = ResultsCache::from_config(&config, &registry, clock, late.clone())
            .expect("a valid configuration")
            .expect("a results cache by default");
        let stage = ResultsCacheStage::new(next, cache, None, FrontendMetrics::new(&registry));
        (stage, late)
    }

    /// [`grid_answer`], plus 1000 at the points at or after `backfilled`
    /// (0: nothing backfilled), as a sample written there would add.
    fn backfillable(
        backfilled: Arc<std::sync::atomic::AtomicI64>,
    ) -> impl Fn(&Request) -> ApiResponse + Send + Sync {
        move |request| {
            let mut answer = grid_answer(request);
            let from = backfilled.load(std::sync::atomic::Ordering::SeqCst);
            if let Some(ResponseData::Query(data)) = &mut answer.data
                && from > 0
            {
                let series = &mut data.series[0];
                for (t, value) in series.timestamps_ms.iter().zip(&mut series.values) {
                    if *t >= from {
                        *value += 1000.0;
                    }
                }
            }
            answer
        }
    }

    #[tokio::test]
    async fn a_late_write_reruns_the_cached_time_from_its_first_sample_on() {
        let backfilled = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let next = FakeNext::answering(backfillable(backfilled.clone()));
        let clock = ManualClock::at(NOW_MS);
        let (stage, late) = stage_hearing_late_writes(next.clone(), clock.clone());
        let request = || range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        stage.handle(request()).await;
        // Another tenant's, and a write inside the freshness window, cut nothing.
        clock.advance(Duration::from_secs(1));
        late.note("other", NOW_MS - 2 * HOUR_MS);
        late.note("tenant", NOW_MS - 5 * 60_000);
        stage.handle(request()).await;
        assert_eq!(next.seen().len(), 1, "still answered from the cache");

        let sample_ms = NOW_MS - 2 * HOUR_MS - 30_000;
        backfilled.store(sample_ms, std::sync::atomic::Ordering::SeqCst);
        late.note("tenant", sample_ms);
        clock.advance(Duration::from_secs(1));
        let after = stage.handle(request()).await;
        let seen = next.seen();
        assert_eq!(seen.len(), 2);
        let rerun = &seen[1].pieces.as_ref().expect("a batch")[0];
        assert_eq!(
            (rerun.start_ms, rerun.end_ms),
            (NOW_MS - 2 * HOUR_MS, NOW_MS - HOUR_MS),
            "from the first point that reads the sample on"
        );
        let fresh = backfillable(backfilled.clone())(&request());
        assert_eq!(after.response(), &fresh);
        // What ran after the write is cached for good.
        clock.advance(Duration::from_secs(1));
        let again = stage.handle(request()).await;
        assert_eq!(next.seen().len(), 2);
        assert_eq!(again.response(), &fresh);
    }

    #[tokio::test]
    async fn a_settled_range_asked_again_runs_nothing() {
        let next = FakeNext::answering(grid_answer);
        let stage = stage(next.clone(), ManualClock::at(NOW_MS));
        let request = || range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        let first = stage.handle(request()).await;
        assert_eq!(next.seen().len(), 1);
        assert_eq!(first.stats.cache_misses, 1);
        let again = stage.handle(request()).await;
        assert_eq!(next.seen().len(), 1, "answered from the cache");
        assert_eq!((again.stats.cache_hits, again.stats.sub_queries), (1, 0));
        assert_eq!(again.response(), first.response());
        assert_eq!(again.stats.samples_from_cache, 121);
    }

    #[tokio::test]
    async fn the_newest_minutes_run_again_until_they_settle() {
        let next = FakeNext::answering(grid_answer);
        let clock = ManualClock::at(NOW_MS);
        let stage = stage(next.clone(), clock.clone());
        let request = || range_request("up", NOW_MS - HOUR_MS, NOW_MS, 60_000);
        let first = stage.handle(request()).await;
        let again = stage.handle(request()).await;
        let seen = next.seen();
        let rerun = &seen[1].pieces.as_ref().expect("a batch")[0];
        assert!(
            rerun.start_ms > NOW_MS - 11 * 60_000 && rerun.end_ms == NOW_MS,
            "only the last ten minutes: {rerun:?}"
        );
        assert_eq!(again.response(), first.response());
        // An hour on, they are settled: the cache holds all but what was
        // too fresh when it was written.
        clock.advance(Duration::from_secs(3600));
        stage.handle(request()).await;
        stage.handle(request()).await;
        assert_eq!(next.seen().len(), 3, "the last run completed the entry");
    }

    #[tokio::test]
    async fn no_store_passes_untouched_and_keeps_nothing() {
        let next = FakeNext::answering(grid_answer);
        let stage = stage(next.clone(), ManualClock::at(NOW_MS));
        let request = || range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        let mut no_store = request();
        no_store.cache_control.no_store = true;
        stage.handle(no_store).await;
        assert!(next.seen()[0].pieces.is_none(), "untouched");
        stage.handle(request()).await;
        assert_eq!(next.seen().len(), 2, "nothing was kept");
    }

    fn cache(backend: BackendConfig) -> Option<CacheConfig> {
        Some(CacheConfig {
            name: "results".into(),
            backend,
            compression: Compression::None,
        })
    }

    fn in_process_bytes(cache: &Option<CacheConfig>) -> u64 {
        match cache.as_ref().map(|cache| &cache.backend) {
            Some(BackendConfig::InProcess(in_process)) => in_process.max_bytes,
            other => panic!("not in-process: {other:?}"),
        }
    }

    #[test]
    fn decoded_entries_come_out_of_the_in_process_budget() {
        let budget = 512 << 20;
        let in_process = cache(BackendConfig::InProcess(InProcessConfig::with_max_bytes(
            budget,
        )));
        let (shared, decoded) = share_in_process_budget(in_process.clone(), true);
        assert_eq!(decoded as u64, budget / 4);
        assert_eq!(in_process_bytes(&shared) + decoded as u64, budget);
        // Range results not cached: nothing is kept decoded.
        let (whole, decoded) = share_in_process_budget(in_process, false);
        assert_eq!((in_process_bytes(&whole), decoded), (budget, 0));
        // memcached's memory is memcached's; the frontend keeps no copies.
        let memcached = cache(BackendConfig::Memcached(MemcachedConfig::new(vec![
            "127.0.0.1:11211".into(),
        ])));
        assert_eq!(share_in_process_budget(memcached, true).1, 0);
        assert_eq!(share_in_process_budget(None, true).1, 0);
    }

    fn entry(points: i64) -> Arc<CacheEntry> {
        let mut series = sluice_proto::Series::default();
        for point in 0..points {
            series.push(point, 1.0);
        }
        Arc::new(CacheEntry {
            key: "k".into(),
            extents: vec![sluice_plan::Extent {
                start_ms: 0,
                end_ms: points,
                data: Some(sluice_proto::QueryData {
                    series: vec![series],
                    ..sluice_proto::QueryData::default()
                }),
                computed_at_ms: 0,
            }],
        })
    }

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    /// The key of [`entry`]'s entries, under the storage hash `hash`.
    fn key_k(hash: u128) -> CacheKey {
        CacheKey {
            full: "k".into(),
            hash,
        }
    }

    #[test]
    fn decoded_entries_are_replaced_in_place_and_bounded() {
        let decoded = DecodedEntries::new(10_000, DAY, clock());
        decoded.put(&key_k(0), entry(1), 1000, Duration::MAX);
        decoded.put(&key_k(0), entry(2), 1000, Duration::MAX);
        let kept = decoded.get(&key_k(0)).expect("kept");
        assert_eq!(
            kept.0.extents[0].end_ms, 2,
            "the newer entry replaced the older"
        );
        assert_eq!(decoded.entries.state.lock().unwrap().order.len(), 1);
        for index in 1..=20 {
            decoded.put(&key_k(index), entry(1), 1000, Duration::MAX);
        }
        let state = decoded.entries.state.lock().unwrap();
        assert!(state.bytes <= 10_000, "{}", state.bytes);
        assert!(!state.values.contains_key(&0), "the oldest went first");
        assert!(state.values.contains_key(&20));
        drop(state);
        // Larger than a quarter of the budget: not kept at all.
        decoded.put(&key_k(99), entry(1), 2000, Duration::MAX);
        assert!(decoded.get(&key_k(99)).is_none());
    }

    #[test]
    fn a_decoded_entry_serves_only_its_own_key() {
        let decoded = DecodedEntries::new(10_000, DAY, clock());
        decoded.put(&key_k(0x0123), entry(3), 1000, Duration::MAX);
        assert!(decoded.get(&key_k(0x0123)).is_some());
        // Another key whose hash collides with it.
        let colliding = CacheKey {
            full: "v1:other tenant's query".into(),
            hash: 0x0123,
        };
        assert!(decoded.get(&colliding).is_none());
    }

    #[test]
    fn kept_copies_are_served_only_within_the_results_ttl() {
        let expired = DecodedEntries::new(10_000, std::time::Duration::ZERO, clock());
        expired.put(&key_k(1), entry(1), 1000, Duration::MAX);
        assert!(expired.get(&key_k(1)).is_none());
    }
}
