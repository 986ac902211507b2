//! Starts a real Prometheus on the backfilled data set and checks that the
//! data really is queryable, so every other end-to-end test can trust it.

use std::time::Instant;

use serde_json::Value;
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode, http_get, http_post_form};

/// Runs an instant query and returns the `data.result` array.
async fn instant(prom: &PrometheusServer, query: &str, time_ms: i64) -> Vec<Value> {
    let time = format!("{}", time_ms as f64 / 1000.0);
    let url = format!(
        "{}/api/v1/query?{}",
        prom.url(),
        form_urlencode(&[("query", query), ("time", &time)])
    );
    let (status, _, body) = http_get(&url).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    body["data"]["result"].as_array().unwrap().clone()
}

fn scalar_value(result: &[Value]) -> f64 {
    assert_eq!(result.len(), 1, "{result:?}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_serves_the_backfilled_dataset() {
    let dataset = Dataset::new();
    let started = Instant::now();
    let prom = PrometheusServer::start(&dataset).await;
    eprintln!(
        "prometheus ready in {:.1?} at {}",
        started.elapsed(),
        prom.url()
    );

    let mid = dataset.start_ms() + (dataset.end_ms() - dataset.start_ms()) / 3;

    // Every generated series of every metric is there.
    for name in dataset.metric_names() {
        let result = instant(&prom, &format!("count({name})"), mid).await;
        assert_eq!(
            scalar_value(&result),
            dataset.series_count(name) as f64,
            "count({name})"
        );
    }

    // Stored values are bit-exact, including tiny, huge and negative floats.
    let series = dataset.series();
    for s in series
        .iter()
        .filter(|s| s.metric == "node_temperature_celsius")
    {
        let instance = s.label("instance").unwrap();
        let result = instant(
            &prom,
            &format!(r#"node_temperature_celsius{{instance="{instance}"}}"#),
            mid,
        )
        .await;
        let want = dataset
            .samples(s)
            .into_iter()
            .find(|(t, _)| *t == mid)
            .unwrap()
            .1;
        assert_eq!(scalar_value(&result), want, "{instance}");
    }

    // Label values with escaping edge cases round-trip through the TSDB.
    let result = instant(&prom, "edge_case_labels", mid).await;
    let mut got: Vec<String> = result
        .iter()
        .map(|r| r["metric"]["value"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = dataset
        .edge_case_label_values()
        .iter()
        .map(|v| (*v).to_owned())
        .collect();
    want.sort();
    assert_eq!(got, want);

    // The vanishing series is gone (after the 5 m lookback) late in the range.
    let late = dataset.vanishing_series_end_ms() + 10 * 60 * 1000;
    let result = instant(&prom, "ephemeral_worker_up", late).await;
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["worker"], "steady");
    let result = instant(
        &prom,
        r#"absent(ephemeral_worker_up{worker="vanishing"})"#,
        late,
    )
    .await;
    assert_eq!(scalar_value(&result), 1.0);

    // A range query over the whole data set returns one point per step.
    let step_s = dataset.step_ms() / 1000;
    let (status, _, body) = http_post_form(
        &format!("{}/api/v1/query_range", prom.url()),
        &[
            ("query", r#"ephemeral_worker_up{worker="steady"}"#),
            ("start", &(dataset.start_ms() / 1000).to_string()),
            ("end", &(dataset.end_ms() / 1000).to_string()),
            ("step", &step_s.to_string()),
        ],
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    let values = body["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), dataset.points_per_series());

    // rate() across the counter reset sees no negative rates.
    let reset = dataset.counter_reset_ms();
    let result = instant(&prom, "min(rate(http_requests_total[5m]))", reset + 60_000).await;
    assert!(scalar_value(&result) >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_independent_and_terminate_cleanly() {
    let dataset = Dataset::new();
    // Started concurrently: the backfill runs once, each server gets a copy.
    let (mut a, b) = tokio::join!(
        PrometheusServer::start(&dataset),
        PrometheusServer::start(&dataset)
    );
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());

    let (status, headers, body) = sluice_testkit::http_get_with_headers(
        &format!("{}/api/v1/labels", b.url()),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        sluice_testkit::header(&headers, "Content-Type"),
        Some("application/json")
    );

    let status = a
        .process()
        .terminate(std::time::Duration::from_secs(20))
        .await;
    assert!(status.success(), "prometheus exited with {status}");
    // The other server is unaffected.
    let result = instant(&b, "count(http_requests_total)", dataset.end_ms()).await;
    assert_eq!(
        scalar_value(&result),
        dataset.series_count("http_requests_total") as f64
    );
}
