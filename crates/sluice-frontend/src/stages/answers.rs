//! Answers: the first stage, and the last the answer passes on its way
//! out. An exact repeat of a settled range query is served from the
//! [`AnswerMemo`] as stored bytes; any other range answer is assembled from
//! encoded pieces of earlier answers where it shares their samples (see
//! [`crate::fragments`]) and, when settled, memoised.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_api::json;
use sluice_proto::{ApiResponse, ErrorType, RangeQuery, ResponseData};

use super::results_cache::ResultsCache;
use super::{AnswerFuture, Next, Stage};
use crate::FrontendConfig;
use crate::buffers;
use crate::clock::SharedClock;
use crate::compression;
use crate::fragments::{Assembled, Assembler, FragmentMemo};
use crate::late::LateWrites;
use crate::metrics::FrontendMetrics;
use crate::oldest_first::OldestFirst;
use crate::request::{Answer, EncodedBody, QueryStats, Request, tenant_key};

/// The fragment memo `config` asks for: only beside a results cache that
/// caches range results, as the answer memo.
pub(crate) fn fragment_memo(
    config: &FrontendConfig,
    has_results_cache: bool,
) -> Option<Arc<FragmentMemo>> {
    (has_results_cache && config.cache_range_results && config.fragment_memo_bytes > 0)
        .then(|| Arc::new(FragmentMemo::new(config.fragment_memo_bytes)))
}

/// Serves settled repeats and assembles range answers from kept encodings.
pub(crate) struct AnswersStage {
    next: Next,
    memo: Option<AnswerMemo>,
    fragments: Option<Arc<FragmentMemo>>,
    metrics: FrontendMetrics,
    clock: SharedClock,
    max_freshness: Duration,
    late: Arc<LateWrites>,
}

impl Stage for AnswersStage {
    fn name(&self) -> &'static str {
        "answers"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        match request.range() {
            Some(_) => Box::pin(self.range(request)),
            None => self.next.handle(request),
        }
    }
}

impl AnswersStage {
    /// The stage `config` asks for; none when neither memo is on.
    pub(crate) fn from_config(
        next: Next,
        config: &FrontendConfig,
        fragments: Option<Arc<FragmentMemo>>,
        metrics: FrontendMetrics,
        clock: SharedClock,
        late: Arc<LateWrites>,
    ) -> Option<AnswersStage> {
        let memo = (config.results_cache.is_some()
            && config.cache_range_results
            && config.answer_memo_bytes > 0)
            .then(|| {
                AnswerMemo::new(
                    config.answer_memo_bytes,
                    config.results_cache_ttl,
                    clock.clone(),
                )
            });
        if memo.is_none() && fragments.is_none() {
            return None;
        }
        Some(AnswersStage {
            next,
            memo,
            fragments,
            metrics,
            clock,
            max_freshness: config.max_cache_freshness,
            late,
        })
    }

    async fn range(&self, request: Request) -> Answer {
        let query = request.range().expect("a range query");
        let step_ms = query.step_ms;
        let no_store = request.cache_control.no_store;
        let gzip = request.accepts_gzip;
        let ttl = request.results_ttl(Duration::MAX);
        let memo_key = match &self.memo {
            Some(_) if !no_store => AnswerMemo::key(
                &request.tenant,
                query,
                self.max_freshness,
                self.clock.now_ms(),
            ),
            _ => None,
        };
        if let (Some(key), Some(memo)) = (&memo_key, &self.memo)
            && let Some(answer) = memo.get(key)
            && !self.late_write_changes(&request.tenant, query, answer.computed_at_ms)
        {
            return self.memo_hit(answer, gzip);
        }
        let asked_at_ms = self.clock.now_ms();
        let mut answer = self.next.handle(request).await;
        answer.stats.answered_at = Some(self.clock.now());
        let assembled = match &self.fragments {
            Some(fragments) if !no_store => assembled(fragments, &answer, step_ms, &self.metrics),
            _ => None,
        };
        // This client's body, when the answer was assembled: the spliced
        // gzip form in a pooled buffer when it wants one and the answer is
        // long enough to gain from it, else the JSON as its buffers.
        let (sent, assembled) = match assembled {
            Some(assembled) => match sent_body(assembled, gzip).await {
                Some((sent, assembled)) => (Some(sent), Some(assembled)),
                None => {
                    let error = ApiResponse::error(ErrorType::Internal, "compression failed");
                    return Answer::whole(error, answer.stats);
                }
            },
            None => (None, None),
        };
        match (memo_key, &self.memo) {
            (Some(key), Some(memo)) if is_clean(answer.response()) => {
                let samples = answer.response().sample_count();
                let memo_answer = Arc::new(
                    match assembled {
                        Some(assembled) => MemoAnswer::assembled(assembled, samples),
                        None => MemoAnswer::new(
                            bytes::Bytes::from(json::encode_response(answer.response())),
                            samples,
                        ),
                    }
                    .computed_at(asked_at_ms),
                );
                memo.put(key, memo_answer.clone(), ttl);
                // The body sent is not kept: most answers are never asked
                // for again (a dashboard moving with time); a repeat makes
                // its own form from the assembled answer, and that is kept.
                answer.encoded = Some(sent.unwrap_or_else(|| memo_body(&memo_answer, gzip)));
            }
            _ => answer.encoded = sent,
        }
        answer
    }

    /// Whether `tenant` had samples written late since `computed_at_ms`
    /// that `query`'s answer may read.
    fn late_write_changes(&self, tenant: &str, query: &RangeQuery, computed_at_ms: i64) -> bool {
        self.late
            .of(tenant)
            .iter()
            .any(|write| sluice_plan::late_write_changes(query, computed_at_ms, write))
    }

    /// The answer to an exact repeat of a settled range query.
    fn memo_hit(&self, memo_answer: Arc<MemoAnswer>, gzip: bool) -> Answer {
        self.metrics.memo_hits.inc();
        self.metrics
            .samples
            .with_label_values(&["cache"])
            .inc_by(memo_answer.samples() as u64);
        let stats = QueryStats {
            memo_hit: true,
            samples_from_cache: memo_answer.samples(),
            ..QueryStats::default()
        };
        let mut answer = Answer::whole(ApiResponse::default(), stats);
        answer.encoded = Some(memo_body(&memo_answer, gzip));
        answer
    }
}

/// Whether `response` may be memoised: a success with nothing to warn of.
fn is_clean(response: &ApiResponse) -> bool {
    !response.is_error() && response.warnings.is_empty() && response.infos.is_empty()
}

/// `answer` assembled from kept fragments, when it is a query answer.
fn assembled(
    fragments: &FragmentMemo,
    answer: &Answer,
    step_ms: i64,
    metrics: &FrontendMetrics,
) -> Option<Assembled> {
    let response = answer.response();
    if response.is_error() || !matches!(response.data, Some(ResponseData::Query(_))) {
        return None;
    }
    let mut assembler = Assembler::new(fragments, step_ms).with_prefixes(answer.prefixes.as_ref());
    let tail = json::encode_response_with(response, &mut assembler);
    let counted = &metrics.fragments;
    counted
        .with_label_values(&["kept"])
        .inc_by(assembler.tally.kept);
    counted
        .with_label_values(&["made"])
        .inc_by(assembler.tally.made);
    Some(assembler.finish(tail))
}

/// The body sent for an assembled answer, and the answer: gzip spliced in
/// a pooled buffer when the client takes it and the answer is long enough
/// to gain from it, else the JSON's buffers. `None` when compressing failed.
async fn sent_body(assembled: Assembled, gzip: bool) -> Option<(EncodedBody, Assembled)> {
    if gzip && assembled.len() >= compression::MIN_COMPRESSED_LEN {
        let (body, assembled) = assembled_gzip(assembled).await?;
        return Some((EncodedBody::Gzip(body), assembled));
    }
    Some((EncodedBody::JsonChunks(assembled.json_chunks()), assembled))
}

/// The gzip form of an assembled answer, in a pooled buffer (it is sent
/// once); off the async workers when much of it has to be compressed
/// afresh (a first answer). A moved range's edges and new pieces are tens
/// of kilobytes, well under a millisecond's work: handing them to another
/// thread would cost a wake-up instead.
async fn assembled_gzip(assembled: Assembled) -> Option<(bytes::Bytes, Assembled)> {
    let quick = assembled.splices_quickly();
    let splice = move || {
        let body = buffers::BODIES.written(|out| assembled.gzip_in(out));
        (body, assembled)
    };
    if quick {
        Some(splice())
    } else {
        tokio::task::spawn_blocking(splice).await.ok()
    }
}

/// A memoised answer's body, in the form the client accepts. The gzip form
/// is a spliced one or one made in the background (see
/// [`MemoAnswer::gzipped`]); with neither ready the answer goes out as
/// JSON, which the HTTP edge compresses on the fly when asked.
fn memo_body(answer: &Arc<MemoAnswer>, gzip: bool) -> EncodedBody {
    if gzip
        && answer.json_len() >= compression::MIN_COMPRESSED_LEN
        && let Some(body) = answer.gzipped()
    {
        return EncodedBody::Gzip(body);
    }
    EncodedBody::Json(answer.json())
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
    pub(crate) fn new(max_bytes: usize, ttl: Duration, clock: SharedClock) -> AnswerMemo {
        AnswerMemo {
            answers: OldestFirst::new(max_bytes, ttl, clock),
        }
    }

    /// The memo key of `query` for `tenant` at `now_ms`, when its answer is
    /// final by the results cache's rules.
    pub(crate) fn key(
        tenant: &str,
        query: &RangeQuery,
        max_freshness: Duration,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        if !ResultsCache::answer_is_final(query, now_ms, max_freshness) {
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
    /// Served for at most `ttl` (the tenant's results-cache TTL).
    pub(crate) fn put(&self, key: Vec<u8>, answer: Arc<MemoAnswer>, ttl: Duration) {
        let bytes = answer.counted_len() + key.len();
        self.answers.put_for(key, answer, bytes, ttl);
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
    assembled: Mutex<Option<Assembled>>,
    /// The whole answer compressed at the default level.
    gzip: std::sync::OnceLock<bytes::Bytes>,
    /// The gzip form spliced from kept fragments for the answer's first
    /// repeat: about a fifth larger, served until the smaller one is
    /// made, then dropped.
    spliced_gzip: Mutex<Option<bytes::Bytes>>,
    /// Set once the gzip form's making has started: a burst of requests
    /// starts it once.
    making_gzip: std::sync::atomic::AtomicBool,
    /// When the answer was asked for (ms): a late write after it may be
    /// missing from it.
    computed_at_ms: i64,
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
            computed_at_ms: 0,
        }
    }

    /// An answer whose JSON, or gzip form, is made from `assembled` when
    /// first needed, holding `samples` samples.
    pub(crate) fn assembled(assembled: Assembled, samples: usize) -> MemoAnswer {
        MemoAnswer {
            json_len: assembled.len(),
            samples,
            json: std::sync::OnceLock::new(),
            assembled: Mutex::new(Some(assembled)),
            gzip: std::sync::OnceLock::new(),
            spliced_gzip: Mutex::new(None),
            making_gzip: std::sync::atomic::AtomicBool::new(false),
            computed_at_ms: 0,
        }
    }

    /// The answer, as asked for at `computed_at_ms`.
    pub(crate) fn computed_at(self, computed_at_ms: i64) -> MemoAnswer {
        MemoAnswer {
            computed_at_ms,
            ..self
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
    use crate::clock::ManualClock;

    use crate::stages::testing::NOW_MS;

    const DAY: Duration = Duration::from_secs(86_400);

    fn clock() -> SharedClock {
        ManualClock::at(NOW_MS)
    }

    use crate::stages::testing::{FakeNext, grid_answer, range_request};

    const HOUR_MS: i64 = 3_600_000;

    fn stage(next: Next, clock: SharedClock) -> AnswersStage {
        stage_hearing_late_writes(next, clock).0
    }

    fn stage_hearing_late_writes(
        next: Next,
        clock: SharedClock,
    ) -> (AnswersStage, Arc<LateWrites>) {
        let config = FrontendConfig {
            results_cache_ttl: Duration::from_secs(3600),
            ..FrontendConfig::default()
        };
        let metrics = FrontendMetrics::new(&prometheus::Registry::new());
        let fragments = fragment_memo(&config, true);
        let late = Arc::new(LateWrites::new(config.max_cache_freshness, clock.clone()));
        let stage =
            AnswersStage::from_config(next, &config, fragments, metrics, clock, late.clone());
        (stage.expect("memo on"), late)
    }

    #[tokio::test]
    async fn a_memoised_answer_is_not_served_after_a_late_write_it_may_lack() {
        let next = FakeNext::answering(grid_answer);
        let clock = ManualClock::at(NOW_MS);
        let (stage, late) = stage_hearing_late_writes(next.clone(), clock.clone());
        let request = || range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        stage.handle(request()).await;
        clock.advance(Duration::from_secs(1));
        // After the range's end: no grid point reads it.
        late.note("tenant", NOW_MS - HOUR_MS + 1);
        assert!(stage.handle(request()).await.stats.memo_hit);
        late.note("tenant", NOW_MS - 2 * HOUR_MS);
        // Asked in the same millisecond as the write, an answer may or may
        // not hold it: it counts as older.
        clock.advance(Duration::from_secs(1));
        let after = stage.handle(request()).await;
        assert!(!after.stats.memo_hit);
        assert_eq!(next.seen().len(), 2);
        // Memoised again, as asked after the write.
        assert!(stage.handle(request()).await.stats.memo_hit);
    }

    fn body(answer: &Answer) -> Vec<u8> {
        match answer.encoded.as_ref().expect("encoded here") {
            EncodedBody::Json(json) => json.to_vec(),
            EncodedBody::JsonChunks(chunks) => chunks.concat(),
            EncodedBody::Gzip(gzip) => sluice_testkit::gunzip(gzip),
        }
    }

    #[tokio::test]
    async fn a_settled_repeat_is_served_from_the_memo_until_the_ttl() {
        let next = FakeNext::answering(grid_answer);
        let clock = ManualClock::at(NOW_MS);
        let stage = stage(next.clone(), clock.clone());
        let request = || range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        let first = stage.handle(request()).await;
        let want = json::encode_response(&grid_answer(&request()));
        assert_eq!(body(&first), want, "assembled as it would be encoded");
        let repeat = stage.handle(request()).await;
        assert_eq!(next.seen().len(), 1);
        assert!(repeat.stats.memo_hit);
        assert_eq!(body(&repeat), want);
        clock.advance(Duration::from_secs(3601));
        let expired = stage.handle(request()).await;
        assert_eq!(next.seen().len(), 2, "the memo's copy expired");
        assert!(!expired.stats.memo_hit);
    }

    #[tokio::test]
    async fn unsettled_and_no_store_answers_are_not_memoised() {
        let next = FakeNext::answering(grid_answer);
        let stage = stage(next.clone(), clock());
        let fresh = || range_request("up", NOW_MS - HOUR_MS, NOW_MS, 60_000);
        stage.handle(fresh()).await;
        stage.handle(fresh()).await;
        assert_eq!(next.seen().len(), 2, "its newest minutes may still change");
        let mut no_store = range_request("up", NOW_MS - 3 * HOUR_MS, NOW_MS - HOUR_MS, 60_000);
        no_store.cache_control.no_store = true;
        let answer = stage.handle(no_store.clone()).await;
        assert!(answer.encoded.is_none(), "encoded at the edge");
        stage.handle(no_store).await;
        assert_eq!(next.seen().len(), 4);
    }

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
        let old = NOW_MS - 86_400_000;
        let key = |tenant: &str, text: &str, end_ms: i64| {
            AnswerMemo::key(tenant, &query(text, end_ms), freshness, NOW_MS)
        };
        assert!(key("a", "up", old).is_some());
        assert!(key("a", "up", NOW_MS).is_none());
        assert!(key("a", "up @ end()", old).is_none());
        // A negative offset reads past the range: final only once that is.
        assert!(key("a", "up offset -2d", old).is_none());
        assert!(key("a", "up offset -1h", old).is_some());
        assert_ne!(
            key("a", "up", old),
            key("b", "up", old),
            "tenants never share"
        );
    }

    #[test]
    fn the_memo_is_bounded_and_forgets_the_oldest() {
        let memo = AnswerMemo::new(400, DAY, clock());
        for index in 0u8..10 {
            memo.put(
                vec![index],
                Arc::new(MemoAnswer::new(bytes::Bytes::from(vec![index; 70]), 0)),
                DAY,
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

    #[test]
    fn memoised_answers_are_served_only_within_the_results_ttl() {
        let memo = AnswerMemo::new(10_000, std::time::Duration::ZERO, clock());
        memo.put(
            vec![1],
            Arc::new(MemoAnswer::new(bytes::Bytes::from_static(b"{}"), 0)),
            DAY,
        );
        assert!(memo.get(&[1]).is_none());
        let memo = AnswerMemo::new(10_000, DAY, clock());
        memo.put(
            vec![1],
            Arc::new(MemoAnswer::new(bytes::Bytes::from_static(b"{}"), 0)),
            DAY,
        );
        assert!(memo.get(&[1]).is_some());
    }
}
