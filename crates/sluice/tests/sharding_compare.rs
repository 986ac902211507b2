//! Sharded equals unsharded, through the binary over real blocks: sluice
//! processes with the embedded engine over promtool's blocks of the test
//! data set, one with query sharding off and one each at 2, 3 and 16
//! shards, asked the generated query suite (`common/families.rs`) plus
//! the shapes Cortex and Mimir got wrong. Answers agree within 1e-9
//! relative (sums in another order), and are byte-identical for queries
//! the frontend does not shard (it passes them on untouched).

mod common;

use std::time::Duration;

use common::compare::{ApiRequest, answer, compare, copy_blocks, seconds};
use common::start_sluice;
use sluice_testkit::{Dataset, TempDir, dataset_blocks};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Sharding's known failure shapes, over the data set's metrics.
const KNOWN_BUGS: &[&str] = &[
    "absent(sum(http_requests_total{job=\"nope\"}))",
    "scalar(sum(http_requests_total))",
    "sum(rate(http_requests_total{job=\"nope\"}[5m])) or vector(0)",
    "count by (job) (http_requests_total) > 0",
    "sum(max by (job) (rate(http_requests_total[5m])))",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "sum(rate(http_requests_total{code=\"500\"}[5m])) / sum(rate(http_requests_total[5m]))",
    "topk(2, sum by (job) (rate(http_requests_total[5m])))",
    "sum by (job) (rate(http_requests_total[5m] offset 30m))",
    "avg without (instance) (node_temperature_celsius)",
];

/// Starts sluice over a copy of `blocks` with `flags`.
async fn sluice_over(name: &str, blocks: &TempDir, flags: &[&str]) -> common::SluiceProcess {
    let mut args = vec![format!(
        "-blocks-storage.filesystem.dir={}",
        blocks.path().display()
    )];
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    let sluice = start_sluice(name, &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(30)).await;
    sluice
}

fn blocks_of(dataset: &Dataset) -> TempDir {
    let blocks = TempDir::new("sluice-sharding-blocks").unwrap();
    let copied = copy_blocks(&dataset_blocks(dataset), blocks.path());
    assert!(copied > 0, "promtool made no blocks");
    blocks
}

/// The queries that shard: the generated suite's, the suite's
/// expressions under a `sum by` and a `count without` (most of its
/// families are functions of series, not aggregations), and the known
/// failure shapes; and the suite's queries that do not shard.
fn suite() -> (Vec<String>, Vec<String>) {
    let generated: Vec<String> = common::families::promtool_vocabulary()
        .queries()
        .into_iter()
        .map(|one| one.query)
        .collect();
    let shards = |query: &String| sluice_plan::shard_query(query, 2).is_some();
    let (mut sharded, unsharded): (Vec<String>, Vec<String>) =
        generated.iter().cloned().partition(shards);
    for query in &generated {
        let wrapped = [
            format!("sum by (job) ({query})"),
            format!("count without (instance) ({query})"),
        ];
        sharded.extend(wrapped.into_iter().filter(shards));
    }
    sharded.extend(KNOWN_BUGS.iter().map(|query| (*query).to_owned()));
    sharded.sort();
    sharded.dedup();
    (sharded, unsharded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_answers_equal_unsharded_over_promtool_blocks() {
    let dataset = Dataset::new();
    let blocks = blocks_of(&dataset);
    let off = ["-query-frontend.parallelize-shardable-queries=false"];
    let unsharded = sluice_over("unsharded", &blocks, &off).await;
    let (sharded_queries, unsharded_queries) = suite();
    assert!(
        sharded_queries.len() >= 300,
        "only {} queries shard",
        sharded_queries.len()
    );
    let last = dataset.end_ms();
    let times = [
        last - 30 * HOUR_MS + 7 * SECOND_MS,
        last - HOUR_MS + 11 * SECOND_MS,
    ];
    let window = (
        last - 4 * HOUR_MS + 13 * SECOND_MS,
        last - HOUR_MS,
        MINUTE_MS,
    );
    let mut requests = Vec::new();
    for query in &sharded_queries {
        for time in times {
            requests.push(ApiRequest::instant(query, time));
        }
        requests.push(ApiRequest::range(query, window.0, window.1, window.2));
    }
    for shards in ["2", "3", "16"] {
        let flag = format!("-query-frontend.query-sharding-total-shards={shards}");
        let on = "-query-frontend.parallelize-shardable-queries=true";
        let sharded = sluice_over(&format!("sharded-{shards}"), &blocks, &[&flag, on]).await;
        let comparison = compare(&sharded.url(), &unsharded.url(), &requests, 2).await;
        println!(
            "{shards} shards: {} queries, {} answers compared ({} errors on both sides, {} empty)",
            sharded_queries.len(),
            comparison.compared,
            comparison.errors,
            comparison.empty
        );
        comparison.assert_no_mismatch(&format!("{shards} shards"));
        assert!(comparison.empty * 4 < comparison.compared, "mostly empty");
        let legs = sharded
            .metric("sluice_frontend_sharded_queries_total")
            .await;
        assert!(legs >= requests.len() as f64, "{legs} legs sent");
        if shards == "16" {
            for query in unsharded_queries.iter().step_by(7) {
                let params = [("query", query.as_str()), ("time", &seconds(times[1]))];
                let got = answer(&sharded.url(), "/api/v1/query", &params).await;
                let want = answer(&unsharded.url(), "/api/v1/query", &params).await;
                assert_eq!(got, want, "{query} is not sharded: the same bytes");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_range_query_through_the_binary_equals_the_unsharded_one() {
    let dataset = Dataset::new();
    let blocks = blocks_of(&dataset);
    // Every role in one process, no downstream: `auto` turns sharding on
    // (16 shards by default).
    let auto = ["-query-frontend.parallelize-shardable-queries=auto"];
    let sharded = sluice_over("sharded", &blocks, &auto).await;
    let off = ["-query-frontend.parallelize-shardable-queries=false"];
    let unsharded = sluice_over("unsharded", &blocks, &off).await;
    let last = dataset.end_ms();
    let (start, end) = (seconds(last - 30 * HOUR_MS), seconds(last - HOUR_MS));
    let params = [
        ("query", "sum by (job) (rate(http_requests_total[5m]))"),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("step", "60"),
    ];
    let got = answer(&sharded.url(), "/api/v1/query_range", &params).await;
    let want = answer(&unsharded.url(), "/api/v1/query_range", &params).await;
    assert_eq!(got.0, 200, "{}", got.1);
    let (got_json, want_json): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&got.1).unwrap(),
        serde_json::from_str(&want.1).unwrap(),
    );
    assert!(
        common::compare::same(&got_json, &want_json),
        "sharded {}\nunsharded {}",
        got.1,
        want.1
    );
    let series = want_json["data"]["result"].as_array().map_or(0, Vec::len);
    assert!(series >= 2, "the answer has the jobs' series: {}", want.1);
    // The range crosses a day boundary: 2 pieces of 16 legs each.
    let legs = sharded
        .metric("sluice_frontend_sharded_queries_total")
        .await;
    assert_eq!(legs, 32.0);
    assert_eq!(
        unsharded
            .metric("sluice_frontend_sharded_queries_total")
            .await,
        0.0
    );
    let log = sharded.log();
    assert!(
        log.lines()
            .any(|line| line.contains("query stats") && line.contains("shards=16")),
        "no stats line says 16 shards:\n{log}"
    );
}
