//! Query acceleration: a range query is aligned (opt-in), split by day, looked
//! up in the results cache piece by piece, and only the time the cache does
//! not cover is run, in parallel, through the queue. Identical sub-queries in
//! flight at once are run once and their answer shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use std::fmt::Write as _;

use prost::Message;
use sluice_plan::{CacheEntry, CacheKey, CacheOptions, Plan};
use sluice_proto::{ApiResponse, ErrorType, QueryKind, QueryRequest, RangeQuery, ResponseData};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Inner;
use crate::dispatch::DispatchStats;
use crate::fragments::Prefixes;

/// What acceleration did for one request, for its stats line and metrics.
#[derive(Default)]
pub(crate) struct AccelerationStats {
    pub(crate) pieces: usize,
    pub(crate) sub_queries: usize,
    pub(crate) cached_extents: usize,
    /// Pieces whose results cache entry was found, and not found.
    pub(crate) cache_hits: usize,
    pub(crate) cache_misses: usize,
    /// The found entries' encoded size.
    pub(crate) cache_hit_bytes: usize,
    /// Answered whole from the answer memo.
    pub(crate) memo_hit: bool,
    pub(crate) samples_from_cache: usize,
}

/// How a range query is to be answered, beyond what it asks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RangeOptions {
    /// `Cache-Control: no-store`: computed now, kept nowhere.
    pub(crate) no_store: bool,
    /// The client takes gzip, so prepared encodings are compressed too.
    pub(crate) gzip: bool,
}

/// A range query's answer, with its series' leading samples already
/// encoded when they came from the results cache.
pub(crate) struct RangeAnswer {
    pub(crate) response: ApiResponse,
    pub(crate) prefixes: Option<Prefixes>,
}

/// How the answers to a range query's sub-queries become its answer.
enum Merge {
    Plan(Plan),
    Prefix(sluice_plan::CachedPrefix),
}

type Shared = watch::Receiver<Option<Arc<ApiResponse>>>;

/// A sub-query in flight: where its answer will be published, and the
/// deadline its leader runs it under.
#[derive(Clone)]
struct Leader {
    answer: Shared,
    deadline: Instant,
}

/// Sub-queries in flight, by tenant and request, so identical ones run once.
#[derive(Default)]
pub(crate) struct Collapser {
    in_flight: Mutex<HashMap<Vec<u8>, Leader>>,
}

/// Whether a follower whose own `deadline` is still ahead should run the
/// sub-query itself rather than take its leader's `answer`: when the
/// leader gave up because its own, earlier deadline passed. (A timeout the
/// backend reported before the leader's deadline is the backend's answer,
/// and running it again would only cost the backend as much once more.)
fn outlived_its_leader(
    answer: &ApiResponse,
    leader: Instant,
    deadline: Instant,
    now: Instant,
) -> bool {
    answer.error_type == ErrorType::Timeout as i32 && leader <= now && now < deadline
}

/// Removes a leader's entry however its future ends (answered or dropped),
/// so followers never wait on a leader that is gone.
struct LeaderGuard<'a> {
    collapser: &'a Collapser,
    key: Vec<u8>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.collapser
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.key);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// `message` keyed for `tenant`: the tenant is part of every key, so
/// tenants never share answers.
fn tenant_key(tenant: &str, message: &impl Message) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 1 + message.encoded_len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    message.encode(&mut key).expect("a Vec grows as needed");
    key
}

impl Inner {
    /// Runs a sub-query, or waits for the identical one already running.
    pub(crate) async fn dispatch_collapsed(
        &self,
        tenant: &str,
        request: QueryRequest,
        deadline: Instant,
        stats: &mut DispatchStats,
    ) -> ApiResponse {
        let key = tenant_key(tenant, &request);
        loop {
            let existing = self
                .collapser
                .in_flight
                .lock()
                .expect("in-flight lock")
                .get(&key)
                .cloned();
            if let Some(Leader {
                answer: mut shared,
                deadline: leader_deadline,
            }) = existing
            {
                match tokio::time::timeout_at(deadline, shared.wait_for(Option::is_some)).await {
                    Ok(Ok(answer)) => {
                        let answer = answer.as_deref().expect("waited for Some");
                        if outlived_its_leader(answer, leader_deadline, deadline, Instant::now()) {
                            continue;
                        }
                        self.metrics.collapsed.inc();
                        return answer.clone();
                    }
                    // The leader's client left before it finished: lead instead.
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        return ApiResponse::error(
                            ErrorType::Timeout,
                            format!(
                                "query timed out after {}",
                                crate::dispatch::humanize(self.config.query_timeout)
                            ),
                        );
                    }
                }
            }
            let (publish, shared) = watch::channel(None);
            {
                let mut in_flight = self.collapser.in_flight.lock().expect("in-flight lock");
                if in_flight.contains_key(&key) {
                    continue;
                }
                in_flight.insert(
                    key.clone(),
                    Leader {
                        answer: shared,
                        deadline,
                    },
                );
            }
            let guard = LeaderGuard {
                collapser: &self.collapser,
                key,
            };
            self.metrics.sub_queries.inc();
            let response = self.dispatch(tenant, request, deadline, stats).await;
            drop(guard);
            // Only pay for a copy when someone is waiting for it.
            if publish.receiver_count() > 0 {
                publish.send_replace(Some(Arc::new(response.clone())));
            }
            return response;
        }
    }

    /// Runs a range query through alignment, splitting and the results cache.
    pub(crate) async fn run_range_query(
        &self,
        tenant: &str,
        query: RangeQuery,
        deadline: Instant,
        options: RangeOptions,
        stats: &mut DispatchStats,
        acceleration: &mut AccelerationStats,
    ) -> RangeAnswer {
        let RangeOptions { no_store, gzip } = options;
        let config = &self.config;
        let step_ms = query.step_ms;
        let query = if config.align_queries_with_step {
            sluice_plan::align(&query)
        } else {
            query
        };
        let split_ms = config.split_interval.as_millis() as i64;
        let pieces = if split_ms > 0 {
            sluice_plan::split(&query, split_ms)
        } else {
            vec![query]
        };
        acceleration.pieces = pieces.len();
        self.metrics.pieces.observe(pieces.len() as f64);
        // Cache entries are keyed per day even when splitting is off, so a
        // query moved forward still finds what its earlier run stored.
        let key_interval_ms = if split_ms > 0 {
            split_ms
        } else {
            sluice_plan::DEFAULT_SPLIT_INTERVAL_MS
        };
        let cache = self
            .results_cache
            .as_ref()
            .filter(|_| !no_store && config.cache_range_results);
        let keys: Vec<CacheKey> = pieces
            .iter()
            .map(|piece| sluice_plan::cache_key(tenant, piece, key_interval_ms))
            .collect();
        let entries: Vec<Option<Arc<CacheEntry>>> = match cache {
            Some(cache) => self.cache_entries(cache, &keys, acceleration).await,
            None => vec![None; pieces.len()],
        };
        // What has to run is known from the extents' ranges alone: it is
        // sent first, and the cached data is copied out while it runs.
        let plan_pieces = |with_data: bool| -> Vec<Plan> {
            pieces
                .iter()
                .zip(&entries)
                .map(|(piece, entry)| match (cache, with_data) {
                    (Some(_), true) => sluice_plan::plan_with_cache(piece, entry.as_deref()),
                    (Some(_), false) => {
                        sluice_plan::plan_queries_with_cache(piece, entry.as_deref())
                    }
                    (None, _) => Plan::Query(piece.clone()),
                })
                .collect()
        };
        // The plans without data serve the write-back too: it needs only
        // which ranges were run.
        let query_plans = plan_pieces(false);
        let leaves: Vec<RangeQuery> = query_plans
            .iter()
            .flat_map(Plan::queries)
            .cloned()
            .collect();
        acceleration.sub_queries = leaves.len();
        acceleration.cached_extents = query_plans.iter().map(Plan::cached_leaves).sum();
        let parallelism = config.max_query_parallelism.max(1);
        let leaf_count = leaves.len();
        // The first sub-query to fail is the answer: the rest are dropped
        // at once, which takes the queued ones out of the queue and cancels
        // the running ones, as a client that went away would. Those
        // already answered are still written back.
        let running = async move {
            let mut answered: Vec<Option<(ApiResponse, DispatchStats)>> =
                (0..leaf_count).map(|_| None).collect();
            let mut sub_queries = futures_util::stream::iter(leaves.into_iter().enumerate())
                .map(|(index, leaf)| async move {
                    let mut leaf_stats = DispatchStats::default();
                    let request = QueryRequest {
                        kind: Some(QueryKind::Range(leaf)),
                    };
                    let answer = self
                        .dispatch_collapsed(tenant, request, deadline, &mut leaf_stats)
                        .await;
                    (index, answer, leaf_stats)
                })
                .buffer_unordered(parallelism);
            while let Some((index, answer, leaf_stats)) = sub_queries.next().await {
                let failed = answer.is_error();
                answered[index] = Some((answer, leaf_stats));
                if failed {
                    return (answered, Some(index));
                }
            }
            (answered, None)
        };
        // `join` polls its first future first: the sub-queries are queued
        // before the copying starts. When only the newest minutes are
        // missing, the cached rest of the answer is merged and encoded
        // while they are computed.
        let fragments = self.fragments.as_ref().filter(|_| cache.is_some());
        let (answers, (merge, prefixes)) = futures_util::future::join(running, async {
            // The querier's task, woken by the queueing, waits in this
            // worker's next-task slot, which other workers do not take
            // from: it has to be let run before the copying starts, or the
            // sub-queries wait for the copying after all.
            tokio::task::yield_now().await;
            let entries: Vec<Option<&CacheEntry>> = entries.iter().map(Option::as_deref).collect();
            if let Some(prefix) =
                cache.and_then(|_| sluice_plan::cached_prefix(&query_plans, &entries))
            {
                acceleration.samples_from_cache = prefix.samples();
                // Encoding ahead pays only while something is computed; a
                // wholly cached answer is assembled once, at the end.
                let prefixes = fragments
                    .filter(|_| !prefix.queries().is_empty())
                    .map(|memo| Prefixes::new(memo, step_ms, &prefix.data, gzip));
                return (Merge::Prefix(prefix), prefixes);
            }
            let mut piece_plans = plan_pieces(true);
            acceleration.samples_from_cache = piece_plans.iter().map(Plan::cached_samples).sum();
            let plan = if piece_plans.len() == 1 {
                piece_plans.pop().expect("one piece plan")
            } else {
                Plan::Concat(piece_plans)
            };
            (Merge::Plan(plan), None)
        })
        .await;
        let (answers, failed) = answers;
        let mut responses = Vec::with_capacity(answers.len());
        for answer in answers {
            let Some((answer, leaf_stats)) = answer else {
                // Dropped after another sub-query failed: nothing to keep.
                responses.push(ApiResponse::error(
                    ErrorType::Canceled,
                    "not run: another part of the query failed",
                ));
                continue;
            };
            stats.attempts += leaf_stats.attempts;
            stats.samples += leaf_stats.samples;
            stats.execution += leaf_stats.execution;
            responses.push(answer);
        }
        self.metrics
            .samples
            .with_label_values(&["computed"])
            .inc_by(stats.samples);
        self.metrics
            .samples
            .with_label_values(&["cache"])
            .inc_by(acceleration.samples_from_cache as u64);
        // The write-back reads the answers; the merge then consumes them, so
        // no answer is copied on the way.
        if let Some(cache) = cache {
            let options = CacheOptions {
                max_freshness_ms: config.max_cache_freshness.as_millis() as i64,
                max_entry_bytes: self.max_cache_entry_bytes,
                ..CacheOptions::default()
            };
            let now = now_ms();
            let mut first_answer = 0;
            let mut writes = Vec::new();
            for (((piece, key), entry), piece_plan) in
                pieces.iter().zip(&keys).zip(&entries).zip(&query_plans)
            {
                let piece_answers = piece_plan.queries().len();
                let own = &responses[first_answer..first_answer + piece_answers];
                first_answer += piece_answers;
                if let Some(updated) = sluice_plan::updated_entry(
                    key,
                    piece,
                    entry.as_deref(),
                    piece_plan,
                    own,
                    now,
                    &options,
                ) {
                    let updated = Arc::new(updated);
                    // The decoded copy is kept at once, so the next request
                    // finds it; encoding waits until the answer is out.
                    if let Some(decoded) = &self.decoded_entries {
                        decoded.put(key, updated.clone(), updated.encoded_len());
                    }
                    writes.push((key.storage_key(), updated));
                }
            }
            if !writes.is_empty() {
                // Off the request's path: the client does not wait for the cache.
                let cache = cache.clone();
                let ttl = config.results_cache_ttl;
                tokio::spawn(async move {
                    let encoded = writes
                        .into_iter()
                        .map(|(storage_key, entry)| {
                            (storage_key, sluice_plan::encode_entry(&entry))
                        })
                        .collect();
                    cache.set_many(encoded, ttl).await
                });
            }
        }
        if let Some(failed) = failed {
            return RangeAnswer {
                response: responses.swap_remove(failed),
                prefixes: None,
            };
        }
        // The plan goes into the answer: its cached data moves, not copied.
        let (response, prefixes) = match merge {
            Merge::Plan(plan) => (plan.into_merged(responses), prefixes),
            Merge::Prefix(prefix) => {
                let (response, kept) = prefix.into_merged_keeping_prefix(responses);
                (response, prefixes.map(|prefixes| prefixes.vouched(kept)))
            }
        };
        RangeAnswer { response, prefixes }
    }

    /// The cache entries for `keys`: from the decoded entries where kept
    /// there, else read from the cache and decoded (and then kept); the
    /// hits and misses counted in `acceleration` and the metrics.
    async fn cache_entries(
        &self,
        cache: &sluice_cache::SharedCache,
        keys: &[CacheKey],
        acceleration: &mut AccelerationStats,
    ) -> Vec<Option<Arc<CacheEntry>>> {
        // Each entry found with its encoded size.
        let mut found: Vec<Option<(Arc<CacheEntry>, usize)>> = keys
            .iter()
            .map(|key| {
                self.decoded_entries
                    .as_ref()
                    .and_then(|decoded| decoded.get(key))
            })
            .collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let storage_keys: Vec<String> =
                missing.iter().map(|&i| keys[i].storage_key()).collect();
            let read = cache.get_many(&storage_keys).await;
            for (&index, storage_key) in missing.iter().zip(&storage_keys) {
                let key = &keys[index];
                let Some(bytes) = read.get(storage_key) else {
                    continue;
                };
                let Some(decoded) = sluice_plan::decode_entry(bytes, key).map(Arc::new) else {
                    continue;
                };
                if let Some(kept) = &self.decoded_entries {
                    kept.put(key, decoded.clone(), bytes.len());
                }
                found[index] = Some((decoded, bytes.len()));
            }
        }
        acceleration.cache_hits = found.iter().flatten().count();
        acceleration.cache_misses = found.len() - acceleration.cache_hits;
        acceleration.cache_hit_bytes = found.iter().flatten().map(|(_, bytes)| bytes).sum();
        let lookups = &self.metrics.results_cache_lookups;
        lookups
            .with_label_values(&["hit"])
            .inc_by(acceleration.cache_hits as u64);
        lookups
            .with_label_values(&["miss"])
            .inc_by(acceleration.cache_misses as u64);
        self.metrics
            .results_cache_hit_bytes
            .inc_by(acceleration.cache_hit_bytes as u64);
        found
            .into_iter()
            .map(|entry| entry.map(|(entry, _)| entry))
            .collect()
    }

    /// Serves `series`, `labels` and label values from the metadata cache
    /// when enabled, else runs them (and stores clean answers briefly).
    pub(crate) async fn run_metadata_query(
        &self,
        tenant: &str,
        request: QueryRequest,
        deadline: Instant,
        no_store: bool,
        stats: &mut DispatchStats,
    ) -> ApiResponse {
        let ttl = self.config.metadata_cache_ttl;
        let cache = self
            .results_cache
            .as_ref()
            .filter(|_| !no_store && !ttl.is_zero());
        let Some(cache) = cache else {
            return self
                .dispatch_collapsed(tenant, request, deadline, stats)
                .await;
        };
        let key = metadata_key(tenant, &request);
        let found = cache.get_many(std::slice::from_ref(&key)).await;
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
            return answer;
        }
        let answer = self
            .dispatch_collapsed(tenant, request, deadline, stats)
            .await;
        if !answer.is_error() && answer.warnings.is_empty() && answer.infos.is_empty() {
            let cache = cache.clone();
            let bytes = answer.encode_to_vec();
            tokio::spawn(async move { cache.set_many(vec![(key, bytes)], ttl).await });
        }
        answer
    }
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

/// Values bounded by a byte count the caller reckons for each; the oldest
/// go first. A key put again gets the new value and keeps its place. A
/// value is served for `ttl` after it was put, as the results cache's
/// backends serve theirs (`-query-frontend.results-cache-ttl`): these
/// copies must not outlive what they copy. An expired value waits for its
/// turn to go, unserved.
struct OldestFirst<K, V> {
    max_bytes: usize,
    ttl: std::time::Duration,
    state: Mutex<OldestFirstState<K, V>>,
}

struct OldestFirstState<K, V> {
    values: HashMap<K, (V, usize, std::time::Instant)>,
    order: std::collections::VecDeque<K>,
    bytes: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> OldestFirst<K, V> {
    fn new(max_bytes: usize, ttl: std::time::Duration) -> Self {
        OldestFirst {
            max_bytes,
            ttl,
            state: Mutex::new(OldestFirstState {
                values: HashMap::new(),
                order: std::collections::VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let state = self.state.lock().expect("bounded map lock");
        state
            .values
            .get(key)
            .filter(|(_, _, put)| put.elapsed() < self.ttl)
            .map(|(value, _, _)| value.clone())
    }

    /// Keeps `value`, counted as `bytes`; one over a quarter of the whole
    /// budget is not kept, so a single answer cannot flush everything.
    fn put(&self, key: K, value: V, bytes: usize) {
        if bytes > self.max_bytes / 4 {
            return;
        }
        let mut state = self.state.lock().expect("bounded map lock");
        let put = std::time::Instant::now();
        match state.values.insert(key.clone(), (value, bytes, put)) {
            Some((_, replaced, _)) => state.bytes -= replaced,
            None => state.order.push_back(key),
        }
        state.bytes += bytes;
        while state.bytes > self.max_bytes {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some((_, evicted, _)) = state.values.remove(&oldest) {
                state.bytes -= evicted;
            }
        }
    }
}

/// The encoded answers of recent range queries whose whole range is older
/// than the freshness window, so their answer can no longer change: an exact
/// repeat (a dashboard reloaded) is served as stored bytes, skipping the
/// decoding, merging and JSON encoding that dominate a warm query's cost.
/// Bounded by bytes; the oldest entries go first.
pub(crate) struct AnswerMemo {
    answers: OldestFirst<Vec<u8>, Arc<MemoAnswer>>,
}

impl AnswerMemo {
    /// At most `max_bytes`, each answer served for `ttl`.
    pub(crate) fn new(max_bytes: usize, ttl: std::time::Duration) -> AnswerMemo {
        AnswerMemo {
            answers: OldestFirst::new(max_bytes, ttl),
        }
    }

    /// The memo key of `query` for `tenant`, when its answer is final by
    /// the results cache's rules ([`sluice_plan::answer_is_final`]).
    pub(crate) fn key(
        tenant: &str,
        query: &RangeQuery,
        max_freshness: std::time::Duration,
    ) -> Option<Vec<u8>> {
        if !sluice_plan::answer_is_final(query, now_ms(), max_freshness.as_millis() as i64) {
            return None;
        }
        // The timeout shapes how long we wait, not what the answer is.
        let keyed = RangeQuery {
            timeout_ms: 0,
            ..query.clone()
        };
        Some(tenant_key(tenant, &keyed))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<MemoAnswer>> {
        self.answers.get(key)
    }

    /// Keeps `answer`, counting its JSON and room for the gzip form that a
    /// client may ask for later.
    pub(crate) fn put(&self, key: Vec<u8>, answer: Arc<MemoAnswer>) {
        let bytes = answer.counted_len() + key.len();
        self.answers.put(key, answer, bytes);
    }
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
    pub(crate) fn new(max_bytes: usize, ttl: std::time::Duration) -> DecodedEntries {
        DecodedEntries {
            entries: OldestFirst::new(max_bytes, ttl),
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
    /// place of any older one.
    fn put(&self, key: &CacheKey, entry: Arc<CacheEntry>, encoded_len: usize) {
        self.entries
            .put(key.hash, (entry, encoded_len), encoded_len * 2);
    }
}

/// One memoised answer: its JSON, and its gzip form once a client that
/// accepts gzip has asked for it.
pub(crate) struct MemoAnswer {
    json: std::sync::OnceLock<bytes::Bytes>,
    json_len: usize,
    /// The answer's samples, counted as served from cache on a repeat.
    samples: usize,
    /// What the JSON is made from when it is first needed, so the request
    /// that assembled the answer does not wait for a copy of it (and a
    /// client that takes gzip never causes one).
    assembled: Mutex<Option<crate::fragments::Assembled>>,
    /// The whole answer compressed at the default level.
    gzip: std::sync::OnceLock<bytes::Bytes>,
    /// The gzip form spliced from kept fragments for the answer's first
    /// repeat: about a fifth larger, served until the smaller one is
    /// made, then dropped.
    spliced_gzip: Mutex<Option<bytes::Bytes>>,
    /// Set once the gzip form's making has started: a burst of requests
    /// starts it once.
    making_gzip: std::sync::atomic::AtomicBool,
}

impl MemoAnswer {
    /// The answer `json`, holding `samples` samples.
    pub(crate) fn new(json: bytes::Bytes, samples: usize) -> MemoAnswer {
        MemoAnswer {
            json_len: json.len(),
            samples,
            json: std::sync::OnceLock::from(json),
            assembled: Mutex::new(None),
            gzip: std::sync::OnceLock::new(),
            spliced_gzip: Mutex::new(None),
            making_gzip: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An answer whose JSON, or gzip form, is made from `assembled` when
    /// first needed, holding `samples` samples.
    pub(crate) fn assembled(assembled: crate::fragments::Assembled, samples: usize) -> MemoAnswer {
        MemoAnswer {
            json_len: assembled.len(),
            samples,
            json: std::sync::OnceLock::new(),
            assembled: Mutex::new(Some(assembled)),
            gzip: std::sync::OnceLock::new(),
            spliced_gzip: Mutex::new(None),
            making_gzip: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What the memo counts for this answer: its JSON and a quarter more
    /// for its gzip form.
    fn counted_len(&self) -> usize {
        self.json_len + self.json_len / 4
    }

    pub(crate) fn json_len(&self) -> usize {
        self.json_len
    }

    pub(crate) fn samples(&self) -> usize {
        self.samples
    }

    /// The answer's JSON.
    pub(crate) fn json(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| {
                let assembled = self.assembled.lock().expect("assembled lock").take();
                bytes::Bytes::from(
                    assembled
                        .map(|assembled| assembled.json())
                        .unwrap_or_default(),
                )
            })
            .clone()
    }

    /// The smallest gzip form ready now, if any: the whole answer
    /// compressed at the default level, or else one spliced from the
    /// assembled answer (mostly copying), kept until the other is made.
    /// Every caller is a repeat (the first client got the body made while
    /// the answer was assembled), or an answer that was never assembled,
    /// so the whole is compressed too: once, off the async workers. That
    /// costs tens of milliseconds of a core for a week's answer and saves a
    /// fifth of its bytes on every later serve, which pays only for an
    /// answer asked for again; every refresh of a dashboard moving with
    /// time is asked for once, and never comes here.
    pub(crate) fn gzipped(self: &Arc<Self>) -> Option<bytes::Bytes> {
        if let Some(made) = self.gzip.get() {
            return Some(made.clone());
        }
        let spliced = {
            // Held while splicing, so a burst of repeats splices once.
            let mut spliced = self.spliced_gzip.lock().expect("spliced lock");
            if spliced.is_none() {
                *spliced = self.splice();
            }
            spliced.clone()
        };
        if !self
            .making_gzip
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let answer = self.clone();
            tokio::task::spawn_blocking(move || {
                let compressed =
                    crate::compression::gzip(&answer.json(), crate::compression::Effort::Small);
                let _ = answer.gzip.set(bytes::Bytes::from(compressed));
                answer.spliced_gzip.lock().expect("spliced lock").take();
            });
        }
        // The spliced form may have just been dropped for the made one.
        spliced.or_else(|| self.gzip.get().cloned())
    }

    /// The gzip form spliced from the assembled answer, when that is
    /// mostly copying: not once the JSON has been made from it, nor when
    /// its fragments were never compressed (its first client took JSON).
    fn splice(&self) -> Option<bytes::Bytes> {
        let assembled = self.assembled.lock().expect("assembled lock");
        assembled
            .as_ref()
            .filter(|assembled| assembled.splices_quickly())
            .map(|assembled| bytes::Bytes::from(assembled.gzip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str, end_ms: i64) -> RangeQuery {
        RangeQuery {
            query: text.to_owned(),
            start_ms: end_ms - 3_600_000,
            end_ms,
            step_ms: 60_000,
            ..RangeQuery::default()
        }
    }

    #[test]
    fn only_settled_answers_are_memoised() {
        let freshness = std::time::Duration::from_secs(600);
        let old = now_ms() - 86_400_000;
        assert!(AnswerMemo::key("a", &query("up", old), freshness).is_some());
        assert!(AnswerMemo::key("a", &query("up", now_ms()), freshness).is_none());
        assert!(AnswerMemo::key("a", &query("up @ end()", old), freshness).is_none());
        // A negative offset reads past the range: final only once that is.
        assert!(AnswerMemo::key("a", &query("up offset -2d", old), freshness).is_none());
        assert!(AnswerMemo::key("a", &query("up offset -1h", old), freshness).is_some());
        assert_ne!(
            AnswerMemo::key("a", &query("up", old), freshness),
            AnswerMemo::key("b", &query("up", old), freshness),
            "tenants never share"
        );
    }

    #[test]
    fn the_memo_is_bounded_and_forgets_the_oldest() {
        let memo = AnswerMemo::new(400, DAY);
        for index in 0u8..10 {
            memo.put(
                vec![index],
                Arc::new(MemoAnswer::new(bytes::Bytes::from(vec![index; 70]), 0)),
            );
        }
        assert!(memo.get(&[0]).is_none(), "the oldest went first");
        assert_eq!(memo.get(&[9]).unwrap().json().len(), 70);
        let state = memo.answers.state.lock().unwrap();
        assert!(state.bytes <= 400);
    }

    /// A range answer of 1000 points, and it assembled from fragments.
    fn assembled_answer(
        fragments: &crate::fragments::FragmentMemo,
    ) -> (ApiResponse, crate::fragments::Assembled) {
        let mut series = sluice_proto::Series::default();
        for point in 0..1000 {
            series.push(point * 60_000, point as f64 / 3.0);
        }
        let response = ApiResponse::success(ResponseData::Query(sluice_proto::QueryData {
            result_type: sluice_proto::ResultType::Matrix as i32,
            series: vec![series],
            ..sluice_proto::QueryData::default()
        }));
        let mut assembler = crate::fragments::Assembler::new(fragments, 60_000);
        let tail = sluice_api::json::encode_response_with(&response, &mut assembler);
        (response, assembler.finish(tail))
    }

    #[test]
    fn an_assembled_answer_gives_its_json_when_asked() {
        let fragments = crate::fragments::FragmentMemo::new(1 << 20);
        let (response, assembled) = assembled_answer(&fragments);
        let answer = MemoAnswer::assembled(assembled, 0);
        let want = sluice_api::json::encode_response(&response);
        assert_eq!(answer.json_len(), want.len());
        assert_eq!(answer.json(), want);
        assert_eq!(answer.json(), want, "made once, then kept");
    }

    /// The gzip form `answer` serves once it has made one, within a while.
    async fn made_gzip(answer: &Arc<MemoAnswer>) -> bytes::Bytes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(made) = answer.gzip.get() {
                let served = answer.gzipped().expect("made");
                assert_eq!(served.as_ptr(), made.as_ptr(), "the made form is served");
                return served;
            }
            assert!(std::time::Instant::now() < deadline, "never made");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_repeat_splices_a_gzip_form_kept_until_the_whole_is_compressed() {
        let fragments = crate::fragments::FragmentMemo::new(1 << 20);
        let (response, assembled) = assembled_answer(&fragments);
        // The first client's body was spliced, sent and not kept.
        let first = assembled.gzip();
        let answer = Arc::new(MemoAnswer::assembled(assembled, 0));
        assert!(answer.spliced_gzip.lock().unwrap().is_none());
        assert!(answer.gzip.get().is_none());
        // Served again: spliced at once, and the whole compressed meanwhile.
        let served = answer.gzipped().expect("spliced at once");
        assert_eq!(served, first, "the same splice as the first body");
        assert!(
            answer
                .making_gzip
                .load(std::sync::atomic::Ordering::Acquire)
        );
        // The repeats that follow take the kept splice until the made form
        // is ready, then that.
        let again = answer.gzipped().expect("a form at once");
        let made_by_now = answer.gzip.get().map(|made| made.as_ptr());
        assert!(
            again.as_ptr() == served.as_ptr() || Some(again.as_ptr()) == made_by_now,
            "spliced once, not again"
        );
        let made = made_gzip(&answer).await;
        let json = sluice_api::json::encode_response(&response);
        assert_eq!(sluice_testkit::gunzip(&made), json);
        assert_eq!(sluice_testkit::gunzip(&served), json);
        assert!(made.len() < served.len(), "{} {}", made.len(), served.len());
        assert!(
            answer.spliced_gzip.lock().unwrap().is_none(),
            "the spliced form is dropped"
        );
    }

    #[tokio::test]
    async fn an_answer_without_a_gzip_form_has_one_made_in_the_background() {
        let fragments = crate::fragments::FragmentMemo::new(1 << 20);
        let (response, _) = assembled_answer(&fragments);
        // Not assembled (fragments off): nothing to splice.
        let json = sluice_api::json::encode_response(&response);
        let answer = Arc::new(MemoAnswer::new(bytes::Bytes::from(json.clone()), 0));
        assert!(
            answer.gzipped().is_none(),
            "not made yet: the caller compresses"
        );
        let made = made_gzip(&answer).await;
        assert_eq!(sluice_testkit::gunzip(&made), json);
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
        let decoded = DecodedEntries::new(10_000, DAY);
        decoded.put(&key_k(0), entry(1), 1000);
        decoded.put(&key_k(0), entry(2), 1000);
        let kept = decoded.get(&key_k(0)).expect("kept");
        assert_eq!(
            kept.0.extents[0].end_ms, 2,
            "the newer entry replaced the older"
        );
        assert_eq!(decoded.entries.state.lock().unwrap().order.len(), 1);
        for index in 1..=20 {
            decoded.put(&key_k(index), entry(1), 1000);
        }
        let state = decoded.entries.state.lock().unwrap();
        assert!(state.bytes <= 10_000, "{}", state.bytes);
        assert!(!state.values.contains_key(&0), "the oldest went first");
        assert!(state.values.contains_key(&20));
        drop(state);
        // Larger than a quarter of the budget: not kept at all.
        decoded.put(&key_k(99), entry(1), 2000);
        assert!(decoded.get(&key_k(99)).is_none());
    }

    #[test]
    fn identical_sub_queries_of_different_tenants_are_never_collapsed() {
        let request = QueryRequest {
            kind: Some(QueryKind::Range(query("up", 7_200_000))),
        };
        assert_eq!(tenant_key("a", &request), tenant_key("a", &request));
        assert_ne!(tenant_key("a", &request), tenant_key("b", &request));
        // The tenant ends where the request begins: tenant IDs hold no NUL.
        assert_ne!(tenant_key("ab", &request), tenant_key("a", &request));
    }

    #[test]
    fn a_decoded_entry_serves_only_its_own_key() {
        let decoded = DecodedEntries::new(10_000, DAY);
        decoded.put(&key_k(0x0123), entry(3), 1000);
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
        let expired = DecodedEntries::new(10_000, std::time::Duration::ZERO);
        expired.put(&key_k(1), entry(1), 1000);
        assert!(expired.get(&key_k(1)).is_none());
        let memo = AnswerMemo::new(10_000, std::time::Duration::ZERO);
        memo.put(
            vec![1],
            Arc::new(MemoAnswer::new(bytes::Bytes::from_static(b"{}"), 0)),
        );
        assert!(memo.get(&[1]).is_none());
        let memo = AnswerMemo::new(10_000, DAY);
        memo.put(
            vec![1],
            Arc::new(MemoAnswer::new(bytes::Bytes::from_static(b"{}"), 0)),
        );
        assert!(memo.get(&[1]).is_some());
    }

    #[test]
    fn a_follower_takes_any_answer_but_its_leader_giving_up_early() {
        let now = Instant::now();
        let second = std::time::Duration::from_secs(1);
        let timeout = ApiResponse::error(ErrorType::Timeout, "query timed out after 2m");
        // The leader's deadline passed, the follower's has not: run it again.
        assert!(outlived_its_leader(
            &timeout,
            now - second,
            now + second,
            now
        ));
        // The backend timed out before the leader's deadline: its answer.
        assert!(!outlived_its_leader(
            &timeout,
            now + second,
            now + 2 * second,
            now
        ));
        // The follower's own deadline has passed as well.
        assert!(!outlived_its_leader(
            &timeout,
            now - 2 * second,
            now - second,
            now
        ));
        let failed = ApiResponse::error(ErrorType::Execution, "boom");
        assert!(!outlived_its_leader(
            &failed,
            now - second,
            now + second,
            now
        ));
    }
}
