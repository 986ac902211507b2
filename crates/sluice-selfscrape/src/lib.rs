//! sluice watching itself: every interval, the process's own `/metrics` is
//! fetched over HTTP and its samples are written into its own store, as a
//! Prometheus scraping sluice would write them: `job` and `instance` labels
//! (a label the exposition already has is kept as `exported_<name>`), the
//! scrape's start as every sample's timestamp, staleness markers for series
//! that went away, and the report series `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and
//! `scrape_series_added`. A no-flag sluice thus answers `up` and
//! `sluice_*` queries about itself.
//!
//! The samples go through a [`Sink`] (the store's remote-write path, so
//! they are validated, logged and counted like any other write).

mod text;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use tokio::sync::watch;

pub use text::{ParseError, ParsedSample, parse};

/// Stores one scrape: a snappy-compressed remote-write 1.0 body.
pub type Sink = Arc<dyn Fn(Vec<u8>) -> Result<(), String> + Send + Sync>;

/// Prometheus's staleness marker: a NaN no computation produces.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// What to scrape and how it is labelled.
#[derive(Clone, Debug)]
pub struct SelfScrapeConfig {
    /// `-self-scrape.interval`.
    pub interval: Duration,
    /// Where `/metrics` is fetched from (`host:port`); also the `instance`.
    pub instance: String,
    pub job: String,
}

/// A series as stored: sorted labels, `__name__` among them.
type SeriesLabels = Vec<(String, String)>;

/// The scrape loop's memory between scrapes: what the last one stored, for
/// staleness markers and `scrape_series_added`.
pub struct Scraper {
    config: SelfScrapeConfig,
    previous: HashSet<SeriesLabels>,
}

/// What one scrape found.
pub struct Scraped {
    /// The exposition's samples, or why there are none.
    pub outcome: Result<Vec<ParsedSample>, String>,
    pub started_ms: i64,
    pub duration: Duration,
}

impl Scraper {
    pub fn new(config: SelfScrapeConfig) -> Scraper {
        Scraper {
            config,
            previous: HashSet::new(),
        }
    }

    /// The series to store for `scraped`: its samples labelled as the
    /// target's, staleness markers for the last scrape's series it lacks
    /// (all of them when it failed), and the report series.
    pub fn series(&mut self, scraped: &Scraped) -> Vec<TimeSeries> {
        let at = scraped.started_ms;
        let mut current = HashSet::new();
        let mut out = Vec::new();
        let parsed: &[ParsedSample] = scraped.outcome.as_deref().unwrap_or(&[]);
        for sample in parsed {
            let labels = self.target_labels(&sample.name, &sample.labels);
            out.push(series(
                &labels,
                sample.timestamp_ms.unwrap_or(at),
                sample.value,
            ));
            current.insert(labels);
        }
        let added = current.difference(&self.previous).count();
        for gone in self.previous.difference(&current) {
            out.push(series(gone, at, f64::from_bits(STALE_NAN_BITS)));
        }
        let up = if scraped.outcome.is_ok() { 1.0 } else { 0.0 };
        let report = [
            ("up", up),
            ("scrape_duration_seconds", scraped.duration.as_secs_f64()),
            ("scrape_samples_scraped", parsed.len() as f64),
            ("scrape_samples_post_metric_relabeling", parsed.len() as f64),
            ("scrape_series_added", added as f64),
        ];
        for (name, value) in report {
            out.push(series(&self.target_labels(name, &[]), at, value));
        }
        self.previous = current;
        out
    }

    /// `name` and `labels` with the target's `job` and `instance`; labels
    /// of those names already there become `exported_<name>`, and empty
    /// values are dropped, as Prometheus does (honor_labels off).
    fn target_labels(&self, name: &str, labels: &[(String, String)]) -> SeriesLabels {
        let mut out: SeriesLabels = labels
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(label, value)| match label.as_str() {
                "job" | "instance" => (format!("exported_{label}"), value.clone()),
                _ => (label.clone(), value.clone()),
            })
            .collect();
        out.push(("__name__".to_owned(), name.to_owned()));
        out.push(("job".to_owned(), self.config.job.clone()));
        out.push(("instance".to_owned(), self.config.instance.clone()));
        out.sort();
        out
    }
}

fn series(labels: &SeriesLabels, timestamp: i64, value: f64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        samples: vec![Sample { timestamp, value }],
        ..TimeSeries::default()
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// GETs `url` within `timeout`; anything but a 200 with UTF-8 text fails.
async fn fetch(client: &Client, url: &hyper::Uri, timeout: Duration) -> Result<String, String> {
    let request = hyper::Request::get(url.clone())
        .header("Accept", "text/plain;version=0.0.4")
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let answer = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|error| error.to_string())
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| format!("scrape timed out after {timeout:?}"))?
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Scrapes `/metrics` at `config.instance` every `config.interval` into
/// `sink`, the first time at once, until `stop`.
pub async fn run(config: SelfScrapeConfig, sink: Sink, mut stop: watch::Receiver<bool>) {
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let url: hyper::Uri = match format!("http://{}/metrics", config.instance).parse() {
        Ok(url) => url,
        Err(error) => {
            tracing::error!(instance = %config.instance, %error, "self-scrape: not a valid address; not scraping");
            return;
        }
    };
    // Prometheus's default scrape timeout, or the interval if shorter.
    let timeout = config.interval.min(Duration::from_secs(10));
    let interval = config.interval;
    let mut scraper = Scraper::new(config);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let started_ms = now_ms();
        let started = Instant::now();
        let outcome = fetch(&client, &url, timeout)
            .await
            .and_then(|body| parse(&body).map_err(|error| error.to_string()));
        if let Err(error) = &outcome {
            tracing::warn!(%error, "self-scrape failed");
        }
        let scraped = Scraped {
            outcome,
            started_ms,
            duration: started.elapsed(),
        };
        let body = sluice_remotewrite::encode(&WriteRequest {
            timeseries: scraper.series(&scraped),
            metadata: vec![],
        });
        let sink = Arc::clone(&sink);
        match tokio::task::spawn_blocking(move || sink(body)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "self-scrape: the store refused samples"),
            Err(error) => tracing::error!(%error, "self-scrape: storing panicked"),
        }
    }
}

#[cfg(test)]
mod tests;
