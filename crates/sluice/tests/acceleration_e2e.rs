//! End-to-end tests of query acceleration against a real Prometheus (and a
//! real memcached and Redis): splitting by day, the results cache with extents and
//! partial hits, tenant isolation, collapsed forwarding.

mod common;

use std::time::Duration;

use common::{BlackHole, DelayProxy, SluiceProcess, start_sluice};
use sluice_testkit::{
    Dataset, MemcachedServer, PrometheusServer, RedisServer, form_urlencode, gunzip, header,
    http_get, http_get_with_headers,
};

const MINUTE_MS: i64 = 60_000;
const QUERY: &str = "sum by (job) (rate(http_requests_total[5m]))";

fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }
}

fn range_path(query: &str, start_ms: i64, end_ms: i64, step: &str) -> String {
    format!(
        "/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", query),
            ("start", &seconds(start_ms)),
            ("end", &seconds(end_ms)),
            ("step", step),
        ])
    )
}

async fn start_all(name: &str, prometheus_url: &str, extra: &[&str]) -> SluiceProcess {
    let mut args = vec![
        "-target=all".to_owned(),
        format!("-querier.downstream-url={prometheus_url}"),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let sluice = start_sluice(name, &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    sluice
}

/// Asks sluice and Prometheus the same thing; they must answer the same bytes.
async fn assert_same(sluice: &SluiceProcess, prometheus: &PrometheusServer, path: &str) -> Vec<u8> {
    let (want_status, _, want) = http_get(&format!("{}{path}", prometheus.url())).await;
    let (status, _, got) = http_get(&format!("{}{path}", sluice.url())).await;
    assert_eq!(
        status,
        want_status,
        "{path}: {}",
        String::from_utf8_lossy(&got)
    );
    if got != want {
        let position = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{path}: differs at byte {position}\n sluice:     {}\n prometheus: {}",
            String::from_utf8_lossy(
                &got[position.saturating_sub(60)..(position + 60).min(got.len())]
            ),
            String::from_utf8_lossy(
                &want[position.saturating_sub(60)..(position + 60).min(want.len())]
            )
        );
    }
    got
}

/// A tiny deterministic generator, so a failing case can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as i64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_answers_equal_unsplit_ones_for_random_ranges_and_steps() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // Cache off: every request is split and computed afresh.
    let sluice = start_all(
        "split",
        &prometheus.url(),
        &["-query-frontend.cache-results=false"],
    )
    .await;
    let seed = 0x5eed_u64;
    let mut random = Lcg(seed);
    let queries = [
        QUERY,
        "node_temperature_celsius",
        "ephemeral_worker_up",
        "max_over_time(node_temperature_celsius[1h])",
        "sum(http_requests_total offset 1h)",
        "count(edge_case_labels)",
    ];
    let span = dataset.end_ms() - dataset.start_ms();
    let steps = ["15", "60", "77", "300", "3600", "1.5", "1m30s"];
    for case in 0..60 {
        let start = dataset.start_ms() - 6 * 3_600_000
            + random.next(span) / 1000 * 1000
            + random.next(1000);
        let length = (random.next(span) / 2).max(1000);
        let step = steps[random.next(steps.len() as i64) as usize];
        let step_ms = match step {
            "1.5" => 1500,
            "1m30s" => 90_000,
            other => other.parse::<i64>().unwrap() * 1000,
        };
        // Stay under Prometheus's 11,000 points.
        let end = start + length.min(step_ms * 10_000);
        let query = queries[random.next(queries.len() as i64) as usize];
        let path = range_path(query, start, end, step);
        eprintln!("case {case} (seed {seed:#x}): {path}");
        assert_same(&sluice, &prometheus, &path).await;
    }
    assert!(sluice.metric("sluice_query_pieces_count").await >= 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_modifiers_across_pieces_and_aligned_steps_answer_as_prometheus_does() {
    const HOUR_MS: i64 = 3_600_000;
    let dataset = Dataset::new();
    let prometheus =
        PrometheusServer::start_with_args(&dataset, &["--enable-feature=promql-negative-offset"])
            .await;
    let sluice = start_all("modifiers", &prometheus.url(), &[]).await;
    // Two days and a bit, starting and ending off midnight and off the step.
    let end = dataset.end_ms() - 3 * HOUR_MS - 17_000;
    let start = end - 2 * 86_400_000 - 5 * HOUR_MS;
    let fixed = seconds(dataset.start_ms() + 86_400_000 + 7 * HOUR_MS);
    let queries = [
        "sum(http_requests_total @ start())".to_owned(),
        "sum(rate(http_requests_total[5m] @ end()))".to_owned(),
        format!("sum(http_requests_total @ {fixed})"),
        "sum(http_requests_total offset -1h)".to_owned(),
        "sum(rate(http_requests_total[5m] offset 1d))".to_owned(),
        "max_over_time(sum(rate(http_requests_total[5m]))[1h:5m])".to_owned(),
        "max_over_time(sum(rate(http_requests_total[5m]))[1h:5m] @ end())".to_owned(),
        "timestamp(node_temperature_celsius @ start()) - time()".to_owned(),
    ];
    for query in &queries {
        for step in ["60", "300"] {
            let path = range_path(query, start, end, step);
            // Computed, then answered again from the cache (or, for what
            // may not be cached, computed again): both as Prometheus.
            let first = assert_same(&sluice, &prometheus, &path).await;
            let again = assert_same(&sluice, &prometheus, &path).await;
            assert_eq!(first, again, "{path}");
        }
    }
    // Each first run was split (a repeat may be answered whole from the
    // answer memo): the range crosses two midnights.
    let pieces = sluice.metric("sluice_query_pieces_sum").await;
    assert!(
        pieces >= 3.0 * queries.len() as f64 * 2.0,
        "{pieces} pieces: not every query was split by day"
    );

    // With alignment on, start and end are rounded down to the step: the
    // answer is Prometheus's for the aligned range.
    let aligned = start_all(
        "aligned",
        &prometheus.url(),
        &["-query-frontend.align-queries-with-step=true"],
    )
    .await;
    let step_ms = 300_000;
    let floor = |ms: i64| ms.div_euclid(step_ms) * step_ms;
    assert_ne!(floor(start), start);
    let asked = range_path(QUERY, start, end, "300");
    let (status, _, got) = http_get(&format!("{}{asked}", aligned.url())).await;
    assert_eq!(status, 200);
    let (_, _, want) = http_get(&format!(
        "{}{}",
        prometheus.url(),
        range_path(QUERY, floor(start), floor(end), "300")
    ))
    .await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    let (_, _, unaligned) = http_get(&format!("{}{asked}", prometheus.url())).await;
    assert_ne!(got, unaligned, "alignment changed the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_repeats_and_computes_only_new_time() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_all("cache", &prometheus.url(), &[]).await;
    let end = dataset.end_ms() - 6 * 3_600_000;
    let start = end - 2 * 86_400_000;
    let path = range_path(QUERY, start, end, "60");

    let cold = assert_same(&sluice, &prometheus, &path).await;
    let after_cold = sluice.metric("sluice_subqueries_total").await;
    assert!(
        after_cold >= 3.0,
        "two days from a non-midnight start are three pieces"
    );
    let lookups =
        |result: &str| format!("sluice_results_cache_lookups_total{{result=\"{result}\"}}");
    assert_eq!(sluice.metric(&lookups("miss")).await, 3.0);
    assert_eq!(sluice.metric(&lookups("hit")).await, 0.0);

    // The same query again: nothing reaches the queriers.
    let served_before = sluice
        .metric("sluice_samples_total{source=\"cache\"}")
        .await;
    let warm = assert_same(&sluice, &prometheus, &path).await;
    assert_eq!(warm, cold);
    assert_eq!(sluice.metric("sluice_subqueries_total").await, after_cold);
    // An exact repeat of a settled answer comes from the answer memo, and
    // all its samples count as served from cache, in /metrics and in the
    // query's stats line.
    assert_eq!(sluice.metric("sluice_answer_memo_hits_total").await, 1.0);
    let answer: serde_json::Value = serde_json::from_slice(&cold).expect("JSON");
    let samples: usize = answer["data"]["result"]
        .as_array()
        .expect("a matrix")
        .iter()
        .map(|series| series["values"].as_array().expect("values").len())
        .sum();
    assert!(samples > 1000, "{samples}");
    assert_eq!(
        sluice
            .metric("sluice_samples_total{source=\"cache\"}")
            .await
            - served_before,
        samples as f64
    );
    let log = sluice.process.log_contents();
    let memo_line = log
        .lines()
        .find(|line| line.contains("query stats") && line.contains("answer_memo_hit=true"))
        .unwrap_or_else(|| panic!("no stats line for the memo hit:\n{log}"));
    assert!(
        memo_line.contains(&format!("samples_from_cache={samples}")),
        "{memo_line}"
    );

    // Moved forward five minutes: only the five new minutes are computed.
    let moved = range_path(QUERY, start + 5 * MINUTE_MS, end + 5 * MINUTE_MS, "60");
    let computed_before = sluice
        .metric("sluice_samples_total{source=\"computed\"}")
        .await;
    assert_same(&sluice, &prometheus, &moved).await;
    assert_eq!(
        sluice.metric("sluice_subqueries_total").await,
        after_cold + 1.0,
        "one sub-query for the missing time"
    );
    let computed = sluice
        .metric("sluice_samples_total{source=\"computed\"}")
        .await
        - computed_before;
    // Four jobs, five new minutes at a 60s step: a handful of samples, not days.
    assert!(
        computed <= 4.0 * 6.0,
        "computed {computed} samples for five new minutes"
    );
    // Every piece of the moved range found its entry.
    assert_eq!(sluice.metric(&lookups("hit")).await, 3.0);
    assert_eq!(sluice.metric(&lookups("miss")).await, 3.0);
    assert!(sluice.metric("sluice_results_cache_hit_bytes_total").await > 10_000.0);
    let log = sluice.process.log_contents();
    let moved_line = log
        .lines()
        .rfind(|line| line.contains("query stats"))
        .expect("a stats line");
    assert!(
        moved_line.contains("results_cache_hits=3")
            && moved_line.contains("results_cache_misses=0")
            && moved_line.contains("sub_queries=1"),
        "{moved_line}"
    );

    // Cache-Control: no-store bypasses the cache.
    let before = sluice.metric("sluice_subqueries_total").await;
    let (status, _, body) = http_get_with_headers(
        &format!("{}{path}", sluice.url()),
        &[("Cache-Control", "no-store")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, cold);
    assert!(sluice.metric("sluice_subqueries_total").await > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_share_cached_answers() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_all(
        "tenants",
        &prometheus.url(),
        &[
            "-auth.multitenancy-enabled=true",
            "-query-frontend.results-cache-ttl-for-labels-query=1m",
        ],
    )
    .await;
    let path = range_path(
        QUERY,
        dataset.start_ms(),
        dataset.start_ms() + 86_400_000,
        "300",
    );
    let url = format!("{}{path}", sluice.url());
    let (status, _, first) = http_get_with_headers(&url, &[("X-Scope-OrgID", "team-a")]).await;
    assert_eq!(status, 200);
    let after_a = sluice.metric("sluice_subqueries_total").await;
    http_get_with_headers(&url, &[("X-Scope-OrgID", "team-a")]).await;
    assert_eq!(
        sluice.metric("sluice_subqueries_total").await,
        after_a,
        "team-a's repeat is cached"
    );
    // The same query from another tenant is computed for that tenant.
    let (status, _, second) = http_get_with_headers(&url, &[("X-Scope-OrgID", "team-b")]).await;
    assert_eq!(status, 200);
    assert_eq!(second, first, "same data downstream, same answer");
    assert!(
        sluice.metric("sluice_subqueries_total").await > after_a,
        "team-b must not be served team-a's cache entry"
    );
    // The metadata cache is per tenant too.
    let labels = format!("{}/api/v1/labels", sluice.url());
    http_get_with_headers(&labels, &[("X-Scope-OrgID", "team-a")]).await;
    let before = sluice.metric("sluice_subqueries_total").await;
    http_get_with_headers(&labels, &[("X-Scope-OrgID", "team-a")]).await;
    assert_eq!(sluice.metric("sluice_metadata_cache_hits_total").await, 1.0);
    assert_eq!(sluice.metric("sluice_subqueries_total").await, before);
    http_get_with_headers(&labels, &[("X-Scope-OrgID", "team-b")]).await;
    assert_eq!(sluice.metric("sluice_subqueries_total").await, before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_answers_are_cached_only_when_asked_for_and_only_for_their_ttl() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let paths = [
        "/api/v1/labels".to_owned(),
        "/api/v1/label/job/values".to_owned(),
        format!(
            "/api/v1/series?{}",
            form_urlencode(&[("match[]", "http_requests_total")])
        ),
    ];
    // Off by default: every request reaches the queriers.
    let plain = start_all("metadata-off", &prometheus.url(), &[]).await;
    for path in &paths {
        let url = format!("{}{path}", plain.url());
        let before = plain.metric("sluice_subqueries_total").await;
        http_get(&url).await;
        http_get(&url).await;
        assert_eq!(plain.metric("sluice_subqueries_total").await, before + 2.0);
    }
    assert_eq!(plain.metric("sluice_metadata_cache_hits_total").await, 0.0);

    let ttl = Duration::from_secs(2);
    let ttl_flag = format!(
        "-query-frontend.results-cache-ttl-for-labels-query={}s",
        ttl.as_secs()
    );
    let sluice = start_all("metadata-ttl", &prometheus.url(), &[&ttl_flag]).await;
    for (index, path) in paths.iter().enumerate() {
        let url = format!("{}{path}", sluice.url());
        let (_, _, want) = http_get(&format!("{}{path}", prometheus.url())).await;
        let before = sluice.metric("sluice_subqueries_total").await;
        let (status, _, first) = http_get(&url).await;
        assert_eq!(status, 200);
        assert_eq!(first, want, "{path}");
        // Within the TTL: from the cache, the same bytes.
        let (_, _, again) = http_get(&url).await;
        assert_eq!(again, want, "{path}");
        let hits = (index + 1) as f64;
        assert_eq!(
            sluice.metric("sluice_metadata_cache_hits_total").await,
            hits
        );
        assert_eq!(sluice.metric("sluice_subqueries_total").await, before + 1.0);
        // Cache-Control: no-store is computed afresh.
        let (_, _, fresh) = http_get_with_headers(&url, &[("Cache-Control", "no-store")]).await;
        assert_eq!(fresh, want, "{path}");
        assert_eq!(sluice.metric("sluice_subqueries_total").await, before + 2.0);
        assert_eq!(
            sluice.metric("sluice_metadata_cache_hits_total").await,
            hits
        );
    }
    // Past the TTL: computed again.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    for path in &paths {
        let before = sluice.metric("sluice_subqueries_total").await;
        http_get(&format!("{}{path}", sluice.url())).await;
        assert_eq!(
            sluice.metric("sluice_subqueries_total").await,
            before + 1.0,
            "{path} expired"
        );
    }
    assert_eq!(
        sluice.metric("sluice_metadata_cache_hits_total").await,
        paths.len() as f64
    );
}

/// Asks every path until a whole round is answered from the results cache
/// (writes to it are asynchronous), each answer byte-identical to
/// Prometheus's; panics if that takes over 15 s.
async fn until_all_cached(sluice: &SluiceProcess, prometheus: &PrometheusServer, paths: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let before = sluice.metric("sluice_subqueries_total").await;
        for path in paths {
            assert_same(sluice, prometheus, path).await;
        }
        if sluice.metric("sluice_subqueries_total").await == before {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "repeats never came from the cache"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_backed_cache_survives_memcached_dying() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut first = MemcachedServer::start().await;
    let second = MemcachedServer::start().await;
    let sluice = start_all(
        "memcached",
        &prometheus.url(),
        &[
            "-query-frontend.results-cache.backend=memcached",
            &format!(
                "-query-frontend.results-cache.memcached.addresses={},{}",
                first.address(),
                second.address()
            ),
            "-query-frontend.results-cache.compression=lz4",
            // A machine short of CPU can take over the default 200 ms; a
            // killed memcached refuses at once, whatever the timeout.
            "-query-frontend.results-cache.memcached.timeout=5s",
            // Exact repeats would be answered from memory before memcached
            // is asked; this test is about memcached.
            "-query-frontend.answer-memo-size-bytes=0",
        ],
    )
    .await;
    // Entries are per day piece and step; these paths make 16 distinct
    // keys, so the ring puts some on each server (with only the four days
    // of one step, all four land on one server in about 1 run in 16).
    let first_ms = dataset.start_ms();
    let paths: Vec<String> = ["120", "180", "240", "300"]
        .iter()
        .flat_map(|step| {
            (0..6).map(move |day| {
                let start = first_ms + day * 9 * 3_600_000;
                range_path(QUERY, start, start + 30 * 3_600_000, step)
            })
        })
        .collect();
    for path in &paths {
        assert_same(&sluice, &prometheus, path).await;
    }
    until_all_cached(&sluice, &prometheus, &paths).await;
    // One memcached dies mid-run: its entries become misses, answers stay right.
    first.process().kill();
    let before = sluice.metric("sluice_subqueries_total").await;
    for path in &paths {
        assert_same(&sluice, &prometheus, path).await;
    }
    assert!(
        sluice.metric("sluice_subqueries_total").await > before,
        "the dead server's pieces were computed again"
    );
    drop(second);
    for path in &paths {
        assert_same(&sluice, &prometheus, path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backed_cache_survives_redis_dying_and_is_used_again_once_restarted() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut redis = RedisServer::start().await;
    let sluice = start_all(
        "redis",
        &prometheus.url(),
        &[
            "-query-frontend.results-cache.backend=redis",
            &format!(
                "-query-frontend.results-cache.redis.endpoint={}",
                redis.address()
            ),
            "-query-frontend.results-cache.compression=lz4",
            // A machine short of CPU can take over the default 500 ms; a
            // killed Redis refuses at once, whatever the timeout.
            "-query-frontend.results-cache.redis.timeout=5s",
            // Exact repeats would be answered from memory before Redis is
            // asked; this test is about Redis.
            "-query-frontend.answer-memo-size-bytes=0",
        ],
    )
    .await;
    let first_ms = dataset.start_ms();
    let paths: Vec<String> = (0..4)
        .map(|day| {
            let start = first_ms + day * 9 * 3_600_000;
            range_path(QUERY, start, start + 30 * 3_600_000, "120")
        })
        .collect();
    let redis_hits = r#"sluice_cache_hits_total{backend="redis",cache="results"}"#;
    let lookups =
        |result: &str| format!("sluice_results_cache_lookups_total{{result=\"{result}\"}}");
    assert_same(&sluice, &prometheus, &paths[0]).await;
    assert_eq!(sluice.metric(redis_hits).await, 0.0, "a cold cache");
    until_all_cached(&sluice, &prometheus, &paths).await;
    let hits = sluice.metric(redis_hits).await;
    assert!(
        hits >= 8.0,
        "two pieces a path at least, from Redis: {hits}"
    );
    assert!(sluice.metric(&lookups("hit")).await >= hits);

    // Redis dies mid-run: every piece is computed again, answers stay right.
    redis.kill();
    for round in 0..2 {
        let before = sluice.metric("sluice_subqueries_total").await;
        for path in &paths {
            assert_same(&sluice, &prometheus, path).await;
        }
        assert!(
            sluice.metric("sluice_subqueries_total").await > before,
            "round {round}: pieces were computed without Redis"
        );
    }
    assert_eq!(sluice.metric(redis_hits).await, hits, "no hits while down");

    // A fresh, empty Redis on the same address is found again, filled and
    // read from.
    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    until_all_cached(&sluice, &prometheus, &paths).await;
    assert!(sluice.metric(redis_hits).await >= hits + 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_queries_reach_the_queriers_once_per_piece() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // Every new downstream connection waits, so the fifty overlap in flight.
    let slow = DelayProxy::start(prometheus.port(), Duration::from_millis(300)).await;
    let sluice = start_all(
        "collapse",
        &slow.url(),
        &["-query-frontend.cache-results=false"],
    )
    .await;
    let path = range_path(
        QUERY,
        dataset.start_ms() + 3_600_000,
        dataset.start_ms() + 3 * 86_400_000,
        "60",
    );
    let url = format!("{}{path}", sluice.url());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = url.clone();
        clients.spawn(async move { http_get(&url).await });
    }
    let (_, _, expected) = http_get(&format!("{}{path}", prometheus.url())).await;
    while let Some(answer) = clients.join_next().await {
        let (status, _, body) = answer.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, expected);
    }
    // 01:00 on day one to midnight after day three: three days' pieces and
    // a fourth holding the last point alone.
    let pieces = sluice.metric("sluice_query_pieces_sum").await / 50.0;
    assert_eq!(pieces, 4.0);
    assert_eq!(sluice.metric("sluice_subqueries_total").await, pieces);
    assert_eq!(
        sluice.metric("sluice_collapsed_subqueries_total").await,
        49.0 * pieces
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_gzipped_when_the_client_asks_and_decode_to_prometheus_bytes() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_all("gzip", &prometheus.url(), &[]).await;
    let end = dataset.end_ms() - 6 * 3_600_000;
    let path = range_path(QUERY, end - 86_400_000, end, "60");
    let (_, _, expected) = http_get(&format!("{}{path}", prometheus.url())).await;
    assert!(expected.len() > 10_000, "a large answer");
    let url = format!("{}{path}", sluice.url());
    let gzip = [("Accept-Encoding", "gzip")];

    // Computed, then memoised (its gzip form made once), then from the memo.
    for round in 0..3 {
        let (status, headers, body) = http_get_with_headers(&url, &gzip).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "content-encoding"),
            Some("gzip"),
            "round {round}"
        );
        assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
        assert!(body.len() < expected.len() / 2, "round {round}: compressed");
        assert_eq!(gunzip(&body), expected, "round {round}");
    }
    assert_eq!(sluice.metric("sluice_answer_memo_hits_total").await, 2.0);
    // Moved forward, as a refreshing dashboard does: the encoded pieces of
    // the answers before are spliced in, in both forms, and the bytes stay
    // Prometheus's. The form asked for first is the one assembled (the
    // other comes from the memo): gzip on odd moves, JSON on even ones,
    // which is sent as its parts and must still say its length.
    let kept_before = sluice
        .metric("sluice_answer_fragments_total{source=\"kept\"}")
        .await;
    for shift in 1..=4 {
        let moved = range_path(
            QUERY,
            end - 86_400_000 + shift * 5 * MINUTE_MS,
            end + shift * 5 * MINUTE_MS,
            "60",
        );
        let (_, _, want) = http_get(&format!("{}{moved}", prometheus.url())).await;
        let url = format!("{}{moved}", sluice.url());
        let gzip_first = shift % 2 == 1;
        for gzipped in [gzip_first, !gzip_first] {
            if gzipped {
                let (status, headers, body) = http_get_with_headers(&url, &gzip).await;
                assert_eq!(status, 200);
                assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
                assert_eq!(gunzip(&body), want, "moved {shift}, gzip");
            } else {
                let (status, headers, body) = http_get(&url).await;
                assert_eq!(status, 200);
                assert_eq!(header(&headers, "content-encoding"), None);
                let length = want.len().to_string();
                assert_eq!(header(&headers, "content-length"), Some(length.as_str()));
                assert_eq!(body, want, "moved {shift}, identity");
            }
        }
    }
    let kept = sluice
        .metric("sluice_answer_fragments_total{source=\"kept\"}")
        .await
        - kept_before;
    // Four jobs, a day cut every 128 minutes: about nine pieces per series
    // lie wholly inside each moved answer and were in the one before.
    assert!(kept >= 4.0 * 4.0 * 6.0, "{kept} fragments reused");
    // Split and computed afresh, compressed on the way out.
    let (_, headers, body) = http_get_with_headers(
        &url,
        &[
            ("Accept-Encoding", "br, gzip;q=0.5"),
            ("Cache-Control", "no-store"),
        ],
    )
    .await;
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&body), expected);

    // Not asked, or refused: the identity bytes, from the memo as well.
    for refusal in [
        &[][..],
        &[("Accept-Encoding", "gzip;q=0")][..],
        &[("Accept-Encoding", "br")][..],
    ] {
        let (status, headers, body) = http_get_with_headers(&url, refusal).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-encoding"), None, "{refusal:?}");
        assert_eq!(
            header(&headers, "vary"),
            Some("Accept-Encoding"),
            "{refusal:?}"
        );
        assert_eq!(body, expected, "{refusal:?}");
    }
    // Short answers and errors go as they are, whatever the client accepts.
    let (status, headers, body) = http_get_with_headers(
        &format!("{}/api/v1/query?query=vector(1)&time=1", sluice.url()),
        &gzip,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), None);
    let (_, _, want) = http_get(&format!(
        "{}/api/v1/query?query=vector(1)&time=1",
        prometheus.url()
    ))
    .await;
    assert_eq!(body, want);
    let (status, headers, _) =
        http_get_with_headers(&format!("{}/api/v1/query?query=sum(", sluice.url()), &gzip).await;
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "content-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_warnings_or_infos_are_passed_on_and_never_cached() {
    // Debian's Prometheus 2.42 annotates no answer, so a downstream that
    // answers every sub-query alike stands in for one that warns.
    const EMPTY: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    const WARNED: &str =
        r#"{"status":"success","data":{"resultType":"matrix","result":[]},"warnings":["careful"]}"#;
    // Prometheus 2.50 and later also send infos, likewise never cached.
    const INFORMED: &str =
        r#"{"status":"success","data":{"resultType":"matrix","result":[]},"infos":["note"]}"#;
    // Two days from a non-midnight start, long settled: three day pieces.
    let start = 10 * 86_400_000 + 3_600_000;
    let path = range_path("up", start, start + 2 * 86_400_000, "60");
    for (body, cached) in [(EMPTY, true), (WARNED, false), (INFORMED, false)] {
        let mut downstream = BlackHole::answering_all("200 OK", body).await;
        let sluice = start_all("warnings", &downstream.url(), &[]).await;
        for round in 0..2 {
            let (status, _, got) = http_get(&format!("{}{path}", sluice.url())).await;
            assert_eq!(
                (status, String::from_utf8_lossy(&got).as_ref()),
                (200, body)
            );
            let sent = if round == 1 && cached { 0 } else { 3 };
            for _ in 0..sent {
                downstream.expect_request().await;
            }
            assert_eq!(
                downstream.event_within(Duration::from_millis(300)).await,
                None,
                "round {round} of {body}: {sent} sub-queries"
            );
        }
    }
}

/// An instant query's vector answer as (labels, value) pairs sorted by labels.
fn vector_of(body: &[u8]) -> Vec<(String, f64)> {
    let answer: serde_json::Value = serde_json::from_slice(body).expect("a JSON answer");
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["data"]["resultType"], "vector", "{answer}");
    let mut vector: Vec<(String, f64)> = answer["data"]["result"]
        .as_array()
        .expect("a result list")
        .iter()
        .map(|sample| {
            let value = sample["value"][1].as_str().expect("a value");
            (
                sample["metric"].to_string(),
                value.parse().expect("a number"),
            )
        })
        .collect();
    vector.sort_by(|a, b| a.0.cmp(&b.0));
    vector
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_instant_queries_answer_as_prometheus_does() {
    const HOUR_MS: i64 = 3_600_000;
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // The Debian Prometheus is 2.x: its range selectors include their start.
    let sluice = start_all(
        "instant-split",
        &prometheus.url(),
        &[
            "-query-frontend.split-instant-queries-by-interval=6h",
            "-query-frontend.range-selectors=closed",
        ],
    )
    .await;
    let split_queries = [
        "sum(sum_over_time(http_requests_total[1d]))",
        "sum by (job) (count_over_time(http_requests_total[30h]))",
        "min_over_time(node_temperature_celsius[20h])",
        "max by (instance) (max_over_time(node_temperature_celsius[2d] offset 1h))",
        "sum_over_time(node_temperature_celsius[13h])",
        "count_over_time(ephemeral_worker_up[1d])",
    ];
    let mut random = Lcg(0x1457);
    let span = dataset.end_ms() - dataset.start_ms();
    for case in 0..24 {
        // On a minute half the time: the parts' edges then fall on samples.
        let jitter = if case % 2 == 0 {
            0
        } else {
            random.next(60_000)
        };
        let time = dataset.start_ms() + random.next(span) / 60_000 * 60_000 + jitter;
        let query = split_queries[case as usize % split_queries.len()];
        let path = format!(
            "/api/v1/query?{}",
            form_urlencode(&[("query", query), ("time", &seconds(time))])
        );
        let (_, _, want) = http_get(&format!("{}{path}", prometheus.url())).await;
        let (status, _, got) = http_get(&format!("{}{path}", sluice.url())).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&got));
        let (want, got) = (vector_of(&want), vector_of(&got));
        assert_eq!(got.len(), want.len(), "{path}");
        for ((got_labels, got_value), (want_labels, want_value)) in got.iter().zip(&want) {
            assert_eq!(got_labels, want_labels, "{path}");
            let tolerance = 1e-9 * got_value.abs().max(want_value.abs());
            assert!(
                (got_value - want_value).abs() <= tolerance,
                "{path}: {got_labels} is {got_value}, Prometheus says {want_value}"
            );
        }
    }
    let sub_queries = sluice.metric("sluice_subqueries_total").await;
    assert!(
        sub_queries >= 24.0 * 4.0,
        "{sub_queries}: the queries were not split"
    );
    // What does not split exactly runs whole, byte for byte Prometheus's.
    for query in [
        "sum(rate(http_requests_total[1d]))",
        "increase(http_requests_total[30h])",
    ] {
        let path = format!(
            "/api/v1/query?{}",
            form_urlencode(&[
                ("query", query),
                ("time", &seconds(dataset.end_ms() - HOUR_MS))
            ])
        );
        assert_same(&sluice, &prometheus, &path).await;
    }
}
