//! sluice watches itself: with the store running, its own `/metrics` is
//! scraped into it, so `up` and `sluice_*` queries answer about the process
//! within one scrape interval of its start.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::compare::{answer, seconds};
use common::{SluiceProcess, start_sluice};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The instant vector `query` gives now, as JSON series.
async fn instant(sluice: &SluiceProcess, query: &str) -> Vec<serde_json::Value> {
    let params = [("query", query), ("time", &seconds(now_ms()))];
    let (status, body) = answer(&sluice.url(), "/api/v1/query", &params).await;
    assert_eq!(status, 200, "{query}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["data"]["result"].as_array().unwrap().clone()
}

/// Polls `query` until it has a series or `within` has passed.
async fn first_answer(
    sluice: &SluiceProcess,
    query: &str,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let series = instant(sluice, query).await;
        if !series.is_empty() {
            return series;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: no answer within {within:?}; log:\n{}",
            sluice.process.log_contents()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_sluice_answers_up_about_itself_within_one_interval() {
    // On, as without flags; the interval is the default 15 s.
    let sluice = start_sluice("selfscrape", &["-self-scrape.enabled=true".to_owned()]).await;
    let up = first_answer(&sluice, "up", Duration::from_secs(15)).await;
    assert_eq!(up.len(), 1, "{up:?}");
    let instance = format!("127.0.0.1:{}", sluice.http_port);
    assert_eq!(
        up[0]["metric"],
        serde_json::json!({"__name__": "up", "instance": instance, "job": "sluice"})
    );
    assert_eq!(value(&up[0]), 1.0);
    let scraped = instant(&sluice, "scrape_samples_scraped{job=\"sluice\"}").await;
    assert!(value(&scraped[0]) > 50.0, "{scraped:?}");
    let duration = instant(&sluice, "scrape_duration_seconds").await;
    assert!(value(&duration[0]) > 0.0, "{duration:?}");
    // sluice's own metrics, labelled as the scrape target's.
    let own = instant(&sluice, "{__name__=~\"sluice_.+\"}").await;
    assert!(own.len() > 20, "{own:?}");
    assert!(own.iter().all(|series| series["metric"]["job"] == "sluice"
        && series["metric"]["instance"] == instance.as_str()));
    assert_eq!(sluice.metric("sluice_discarded_samples_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_scrapes_repeat_and_count_what_they_stored() {
    let args = [
        "-self-scrape.enabled=true".to_owned(),
        "-self-scrape.interval=1s".to_owned(),
    ];
    let sluice = start_sluice("selfscrape-fast", &args).await;
    first_answer(&sluice, "up", Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let scrapes = instant(&sluice, "count_over_time(up[10s])").await;
    assert!(value(&scrapes[0]) >= 3.0, "{scrapes:?}");
    // The second scrape finds the first one's samples in the counter.
    let ingested = instant(&sluice, "max_over_time(sluice_ingested_samples_total[10s])").await;
    assert!(value(&ingested[0]) > 50.0, "{ingested:?}");
}
