//! The results cache stays correct under late data: a range older than the
//! freshness window is answered and cached, a sample inside it is then
//! written out of order (`-ingester.out-of-order-time-window`), and the
//! same query asked again includes it, exactly as an uncached query does.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::compare::seconds;
use common::{SluiceProcess, start_sluice};
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::{form_urlencode, http_get_with_headers};

const MINUTE_MS: i64 = 60_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn push(sluice: &SluiceProcess, samples: &[(i64, f64)]) {
    let series = TimeSeries {
        labels: vec![Label {
            name: "__name__".into(),
            value: "late_test".into(),
        }],
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { timestamp, value })
            .collect(),
        ..TimeSeries::default()
    };
    let body = sluice_remotewrite::encode(&WriteRequest {
        timeseries: vec![series],
        metadata: vec![],
    });
    sluice.push(body).await;
}

/// The range query's JSON body; with `no_store`, computed afresh.
async fn range(sluice: &SluiceProcess, start: i64, end: i64, no_store: bool) -> String {
    let query = form_urlencode(&[
        ("query", "max_over_time(late_test[2m])"),
        ("start", &seconds(start)),
        ("end", &seconds(end)),
        ("step", "60"),
    ]);
    let url = format!("{}/api/v1/query_range?{query}", sluice.url());
    let headers: &[(&str, &str)] = match no_store {
        true => &[("Cache-Control", "no-store")],
        false => &[],
    };
    let (status, _, body) = http_get_with_headers(&url, headers).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_written_late_is_in_the_next_answer_of_a_cached_range() {
    let args = ["-ingester.out-of-order-time-window=2h".to_owned()];
    let sluice = start_sluice("late-data", &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    // One sample a minute for the last hour, valued 1 to 60; the range
    // queried is well older than the 10 min freshness window.
    let now = now_ms().div_euclid(MINUTE_MS) * MINUTE_MS;
    let samples: Vec<(i64, f64)> = (0..60)
        .map(|index| (now - (60 - index) * MINUTE_MS, (index + 1) as f64))
        .collect();
    push(&sluice, &samples).await;
    let (start, end) = (now - 50 * MINUTE_MS + 7_000, now - 20 * MINUTE_MS + 7_000);
    let first = range(&sluice, start, end, false).await;
    let again = range(&sluice, start, end, false).await;
    assert_eq!(first, again);
    let served = sluice.metric("sluice_answer_memo_hits_total").await
        + sluice.metric("sluice_results_cache_hit_bytes_total").await;
    assert!(served > 0.0, "the repeat came from a cache");
    assert!(!first.contains("\"1000\""), "{first}");

    // Between two grid samples, 35 minutes back: out of order, accepted.
    push(&sluice, &[(now - 35 * MINUTE_MS + 30_000, 1000.0)]).await;
    let after = range(&sluice, start, end, false).await;
    let fresh = range(&sluice, start, end, true).await;
    assert_eq!(after, fresh, "the cached answer was brought up to date");
    // max_over_time over 2m sees the sample at the two points after it.
    assert_eq!(after.matches("\"1000\"").count(), 2, "{after}");
    // Cached again from here on: the next repeat is the same.
    assert_eq!(range(&sluice, start, end, false).await, fresh);
    assert_eq!(sluice.metric("sluice_discarded_samples_total").await, 0.0);
}
