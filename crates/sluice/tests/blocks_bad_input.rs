//! Blocks that cannot be read, end to end: a bucket holding damaged blocks
//! is served from the good ones, and a query over a skipped block says so
//! in Prometheus's `warnings`; a bucket that goes down makes queries fail
//! at once with a Prometheus error envelope, not hang.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::compare::seconds;
use common::start_sluice;
use serde_json::Value;
use sluice_block::{BlockWriter, Labels, Sample};
use sluice_testkit::{MotoServer, TempDir, form_urlencode, http_get};

const HOUR_MS: i64 = 3_600_000;
/// 2023-11-14T22:00:00Z, on a 2 h boundary.
const BASE_MS: i64 = 1_700_000_000_000 / (2 * HOUR_MS) * (2 * HOUR_MS);

/// A block of `up{job="a"}` every 15 s over `[from, to)`; returns its dir.
fn write_block(parent: &Path, from: i64, to: i64) -> std::path::PathBuf {
    let mut writer = BlockWriter::new();
    let samples = (from..to)
        .step_by(15_000)
        .map(|t| Sample { t, v: 1.0 })
        .collect();
    writer
        .add_series(
            Labels::from_pairs(&[("__name__", "up"), ("job", "a")]),
            samples,
        )
        .unwrap();
    parent.join(writer.write(parent).unwrap().ulid.to_string())
}

async fn get(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{base}{path}?{}", form_urlencode(params));
    let (status, _, body) = http_get(&url).await;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{url}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, body)
}

fn warnings(body: &Value) -> Vec<String> {
    body["warnings"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|warning| warning.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_blocks_are_counted_and_queries_over_them_warn() {
    let dir = TempDir::new("sluice-bad-blocks").unwrap();
    write_block(dir.path(), BASE_MS, BASE_MS + 2 * HOUR_MS);
    write_block(dir.path(), BASE_MS + 2 * HOUR_MS, BASE_MS + 4 * HOUR_MS);
    // Its meta.json reads (4h..6h) but its index is cut in half.
    let truncated = write_block(dir.path(), BASE_MS + 4 * HOUR_MS, BASE_MS + 6 * HOUR_MS);
    let index = std::fs::read(truncated.join("index")).unwrap();
    std::fs::write(truncated.join("index"), &index[..index.len() / 2]).unwrap();
    // Nothing of it reads: it may hold any time.
    let garbage = write_block(dir.path(), BASE_MS + 6 * HOUR_MS, BASE_MS + 8 * HOUR_MS);
    std::fs::write(garbage.join("meta.json"), b"{\"ulid\": 7").unwrap();
    let name = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
    let (truncated, garbage) = (name(&truncated), name(&garbage));

    let flag = format!("-blocks-storage.filesystem.dir={}", dir.path().display());
    let sluice = start_sluice("bad-blocks", &[flag]).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    assert_eq!(
        sluice.metric("sluice_blocks_load_failures_total").await,
        2.0
    );

    // Early: only the block of unknown range can matter.
    let early = seconds(BASE_MS + HOUR_MS + 7_000);
    let (status, body) = get(
        &sluice.url(),
        "/api/v1/query",
        &[("query", "up"), ("time", &early)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    let warned = warnings(&body);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(&garbage) && warned[0].contains("was skipped"),
        "{warned:?}"
    );

    // Over the truncated block too: the good blocks still answer.
    let late = seconds(BASE_MS + 5 * HOUR_MS);
    let params = [
        ("query", "count_over_time(up[4h])"),
        ("time", late.as_str()),
    ];
    let (status, body) = get(&sluice.url(), "/api/v1/query", &params).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "719", "{body}");
    let warned = warnings(&body);
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned.iter().any(|warning| warning.contains(&truncated)),
        "{warned:?}"
    );

    // Range queries and the metadata endpoints warn alike.
    let (start, end) = (
        seconds(BASE_MS + 3 * HOUR_MS),
        seconds(BASE_MS + 5 * HOUR_MS),
    );
    let params = [
        ("query", "up"),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("step", "60"),
    ];
    let (status, body) = get(&sluice.url(), "/api/v1/query_range", &params).await;
    assert_eq!((status, warnings(&body).len()), (200, 2), "{body}");
    let params = [
        ("match[]", "up"),
        ("start", start.as_str()),
        ("end", end.as_str()),
    ];
    let (status, body) = get(&sluice.url(), "/api/v1/series", &params).await;
    assert_eq!((status, warnings(&body).len()), (200, 2), "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_is_down_answers_with_an_error_envelope() {
    let moto = MotoServer::start().await;
    moto.create_bucket("blocks").await;
    let local = TempDir::new("sluice-s3-down").unwrap();
    let block = write_block(local.path(), BASE_MS, BASE_MS + 2 * HOUR_MS);
    let config = common::moto_bucket_config(&moto);
    let bucket = sluice_bucket::Bucket::open(&config, tokio::runtime::Handle::current()).unwrap();
    let prefix = format!("anonymous/{}", block.file_name().unwrap().to_string_lossy());
    tokio::task::spawn_blocking(move || bucket.upload_block(&block, &prefix).unwrap())
        .await
        .unwrap();
    let flags = common::moto_flags(&moto);
    let sluice = start_sluice("s3-down", &flags).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    let at = seconds(BASE_MS + HOUR_MS);
    let params = [("query", "count_over_time(up[1h])"), ("time", at.as_str())];
    let (status, body) = get(&sluice.url(), "/api/v1/query", &params).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "240", "{body}");

    moto.stop().await;
    let later = seconds(BASE_MS + HOUR_MS + 600_000);
    let params = [
        ("query", "count_over_time(up[30m])"),
        ("time", later.as_str()),
    ];
    let started = Instant::now();
    let (status, body) = get(&sluice.url(), "/api/v1/query", &params).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}: {body}");
    assert!(status == 500 || status == 503, "{status} {body}");
    assert_eq!(body["status"], "error", "{body}");
    let error_type = body["errorType"].as_str().unwrap_or_default();
    assert!(["internal", "unavailable"].contains(&error_type), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("blocks"),
        "{body}"
    );
}
