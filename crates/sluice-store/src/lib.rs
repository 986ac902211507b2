//! The `store` role: Prometheus remote write in, samples in the WAL and the
//! head, queryable at once.
//!
//! The life of a write: [`router`] takes `POST /api/v1/push` (Mimir's path)
//! or `/api/v1/write` (Prometheus's); the tenant comes from `X-Scope-OrgID`
//! as for queries; [`Store::ingest`] decodes the body (sluice-remotewrite),
//! applies the tenant's ingestion rate limit (429), validates each series
//! (a bad one is refused, the others kept), lets the head check the
//! samples against what it holds, writes what passed to the WAL, applies it
//! to the head, and only then answers: 204 when everything was stored, 400
//! naming the first refusal and how many samples were refused otherwise.
//! Every refused sample is counted in `sluice_discarded_samples_total`
//! by reason.

mod cut;
mod http;
mod limiter;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sluice_block::{Label, Labels};
use sluice_bucket::Bucket;
use sluice_head::{AppendOutcome, AppendSeries, Head, HeadOptions};
use sluice_limits::Overrides;
use sluice_remotewrite::{IncomingSeries, Limits, Protocol, Reason, Refusal, WriteBatch};
use sluice_wal::{Entry, SyncPolicy, Wal, WalOptions};

pub use cut::CutReport;
pub use http::{TenantOf, router};

/// How the store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `-blocks-storage.tsdb.dir`: the WAL lives in `wal/` under it.
    pub tsdb_dir: PathBuf,
    pub wal_sync: SyncPolicy,
    pub head: HeadOptions,
    pub limits: Limits,
    /// `-distributor.max-recv-msg-size`: largest body, as sent (compressed).
    pub max_recv_msg_size: usize,
    /// `-distributor.ingestion-rate-limit` (items/s, 0 = none).
    pub ingestion_rate: f64,
    /// `-distributor.ingestion-burst-size`.
    pub ingestion_burst: usize,
    /// `-ingester.max-global-series-per-user` (0 = none).
    pub max_global_series_per_user: usize,
    /// Per-tenant runtime overrides of the three limits above; without
    /// them every tenant has the flags' values.
    pub overrides: Option<Arc<Overrides>>,
    /// The bucket blocks are cut into (any backend); none, no blocks are
    /// cut and the head keeps everything.
    pub bucket: Option<Bucket>,
}

impl StoreConfig {
    pub fn new(tsdb_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            tsdb_dir: tsdb_dir.into(),
            wal_sync: SyncPolicy::Never,
            head: HeadOptions::default(),
            limits: Limits::default(),
            max_recv_msg_size: 10 << 20,
            ingestion_rate: 10_000.0,
            ingestion_burst: 200_000,
            max_global_series_per_user: 150_000,
            overrides: None,
            bucket: None,
        }
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] sluice_wal::WalError),
    #[error("writing a block: {0}")]
    Block(#[from] sluice_block::Error),
    #[error("uploading a block: {0}")]
    Upload(#[from] sluice_bucket::BucketError),
    #[error("staging a block in {path}: {source}")]
    Staging {
        path: String,
        source: std::io::Error,
    },
}

/// The store's counters.
struct Metrics {
    ingested: prometheus::IntCounter,
    duplicates: prometheus::IntCounter,
    discarded: prometheus::IntCounterVec,
    exemplars: prometheus::IntCounter,
    metadata: prometheus::IntCounter,
    wal_corruptions: prometheus::IntCounter,
    wal_failures: prometheus::IntCounter,
    blocks_cut: prometheus::IntCounter,
    upload_failures: prometheus::IntCounter,
    checkpoints: prometheus::IntCounter,
}

fn counter(registry: &prometheus::Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let counter = prometheus::IntCounter::new(name, help).expect("a valid metric name");
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

impl Metrics {
    fn new(registry: &prometheus::Registry) -> Metrics {
        let discarded = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sluice_discarded_samples_total",
                "Samples refused by the store, by reason.",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        let _ = registry.register(Box::new(discarded.clone()));
        Metrics {
            ingested: counter(
                registry,
                "sluice_ingested_samples_total",
                "Samples stored in the head and the WAL.",
            ),
            duplicates: counter(
                registry,
                "sluice_duplicate_samples_total",
                "Samples equal to stored ones (retries), ignored.",
            ),
            discarded,
            exemplars: counter(
                registry,
                "sluice_dropped_exemplars_total",
                "Exemplars received and dropped: sluice does not store them.",
            ),
            metadata: counter(
                registry,
                "sluice_dropped_metadata_total",
                "Metadata entries received and dropped: sluice does not store them.",
            ),
            wal_corruptions: counter(
                registry,
                "sluice_wal_corruptions_total",
                "Damaged WAL tails cut at start-up.",
            ),
            wal_failures: counter(
                registry,
                "sluice_wal_write_failures_total",
                "Writes refused with 500 because the WAL could not be written.",
            ),
            blocks_cut: counter(
                registry,
                "sluice_blocks_cut_total",
                "Blocks cut from the head into the bucket.",
            ),
            upload_failures: counter(
                registry,
                "sluice_block_upload_failures_total",
                "Blocks cut from the head whose upload to the bucket failed; their samples stay in the head and are cut again.",
            ),
            checkpoints: counter(
                registry,
                "sluice_wal_checkpoints_total",
                "WAL checkpoints written after cutting blocks.",
            ),
        }
    }

    fn discard(&self, reason: Reason, samples: usize) {
        if samples > 0 {
            self.discarded
                .with_label_values(&[reason.as_str()])
                .inc_by(samples as u64);
        }
    }
}

/// What [`Store::on_written`] calls.
type WrittenHook = Box<dyn Fn(&str, i64) + Send + Sync>;

/// The answer to a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReply {
    pub status: u16,
    pub message: String,
    /// Samples stored by this request (2.0's written-samples header).
    pub written: usize,
}

impl PushReply {
    fn error(status: u16, message: impl Into<String>) -> PushReply {
        PushReply {
            status,
            message: message.into(),
            written: 0,
        }
    }
}

/// The refusals of one request: the first message and the count.
#[derive(Default)]
struct Refused {
    first: Option<String>,
    samples: usize,
}

impl Refused {
    fn add(&mut self, message: impl FnOnce() -> String, samples: usize) {
        if self.first.is_none() {
            self.first = Some(message());
        }
        self.samples += samples;
    }
}

/// The WAL and the head of this process.
pub struct Store {
    config: StoreConfig,
    head: Arc<Head>,
    wal: Wal,
    limiter: limiter::RateLimiter,
    metrics: Metrics,
    /// Called after a block is written, so queriers see it at once.
    on_block: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Called after a write with its tenant and oldest sample, so a results
    /// cache in this process can drop what late samples make stale.
    on_written: OnceLock<WrittenHook>,
    cutting: Mutex<()>,
}

impl Store {
    /// Opens the WAL under `config.tsdb_dir`, replaying it into a new head.
    pub fn open(
        config: StoreConfig,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Store>, StoreError> {
        let metrics = Metrics::new(registry);
        Store::clear_staging(&config.tsdb_dir)?;
        let head = Arc::new(Head::new(config.head));
        let mut references = HashMap::new();
        let mut replayed = AppendOutcome::default();
        let mut undecodable = 0u64;
        let started = Instant::now();
        let options = WalOptions::new(config.tsdb_dir.join("wal"), config.wal_sync);
        let (wal, replay) = Wal::open(options, |bytes| match Entry::decode(bytes) {
            Ok(entry) => {
                let outcome = head.replay(&entry, &mut references);
                replayed.accepted += outcome.accepted;
                replayed.created_series += outcome.created_series;
                replayed.unknown_references += outcome.unknown_references;
            }
            Err(error) => {
                undecodable += 1;
                tracing::warn!(%error, "wal: skipping a record that does not decode");
            }
        })?;
        metrics.wal_corruptions.inc_by(replay.corruptions);
        tracing::info!(
            dir = %wal.dir().display(),
            segments = replay.segments,
            records = replay.records,
            samples = replayed.accepted,
            series = replayed.created_series,
            undecodable,
            unknown_references = replayed.unknown_references,
            cut_bytes = replay.dropped_bytes,
            elapsed = ?started.elapsed(),
            "wal replayed"
        );
        Ok(Arc::new(Store {
            limiter: limiter::RateLimiter::default(),
            config,
            head,
            wal,
            metrics,
            on_block: OnceLock::new(),
            on_written: OnceLock::new(),
            cutting: Mutex::new(()),
        }))
    }

    /// Sets what to call after a block is cut (e.g. a metastore sync).
    pub fn on_block(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_block.set(Box::new(notify));
    }

    /// Sets what to call after samples are stored, with their tenant and
    /// the oldest sample's timestamp (ms).
    pub fn on_written(&self, notify: impl Fn(&str, i64) + Send + Sync + 'static) {
        let _ = self.on_written.set(Box::new(notify));
    }

    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// `tenant`'s ingestion rate and series limit in force.
    fn tenant_limits(&self, tenant: &str) -> (limiter::Rate, usize) {
        match &self.config.overrides {
            Some(overrides) => {
                let limits = &overrides.tenant(tenant).limits;
                let rate = limiter::Rate {
                    per_second: limits.ingestion_rate,
                    burst: limits.ingestion_burst_size,
                };
                (rate, limits.max_global_series_per_user)
            }
            None => {
                let rate = limiter::Rate {
                    per_second: self.config.ingestion_rate,
                    burst: self.config.ingestion_burst,
                };
                (rate, self.config.max_global_series_per_user)
            }
        }
    }

    /// Stores a remote-write body of `protocol` for `tenant`. Synchronous
    /// (decoding, the WAL write): run it off the async runtime.
    pub fn ingest(&self, tenant: &str, protocol: Protocol, body: &[u8]) -> PushReply {
        let batch = match sluice_remotewrite::decode(protocol, body, self.config.max_recv_msg_size)
        {
            Ok(batch) => batch,
            Err(error) => return PushReply::error(error.status(), error.to_string()),
        };
        let items = batch
            .series
            .iter()
            .map(|s| s.samples.len() + s.histograms.len())
            .sum::<usize>()
            + batch.exemplars()
            + batch.metadata;
        let (rate, max_series) = self.tenant_limits(tenant);
        if !self.limiter.allow(tenant, rate, items, Instant::now()) {
            let samples = batch.series.iter().map(|s| s.samples.len()).sum();
            self.metrics.discard(Reason::RateLimited, samples);
            return PushReply::error(429, rate.message());
        }
        self.metrics.exemplars.inc_by(batch.exemplars() as u64);
        self.metrics.metadata.inc_by(batch.metadata as u64);
        let (valid, mut refused) = self.validate(batch);
        let appended = self
            .head
            .append_limited(tenant, &valid, max_series, |entry| self.log(entry));
        let outcome = match appended {
            Ok((outcome, _)) => outcome,
            Err(error) => {
                self.metrics.wal_failures.inc();
                tracing::error!(%error, tenant, "wal write failed; write refused");
                return PushReply::error(500, format!("writing the WAL: {error}"));
            }
        };
        if outcome.accepted > 0
            && let Some(notify) = self.on_written.get()
        {
            // Of every valid sample, refused ones too: a little early is safe.
            let samples = valid.iter().flat_map(|series| &series.samples);
            if let Some(oldest) = samples.map(|(t, _)| *t).min() {
                notify(tenant, oldest);
            }
        }
        self.count_head_refusals(&valid, &outcome, &mut refused);
        self.metrics.ingested.inc_by(outcome.accepted as u64);
        self.metrics.duplicates.inc_by(outcome.duplicates as u64);
        match refused.first {
            None => PushReply {
                status: 204,
                message: String::new(),
                written: outcome.accepted,
            },
            Some(first) => PushReply {
                status: 400,
                message: format!(
                    "{first} ({} samples refused, {} stored)",
                    refused.samples, outcome.accepted
                ),
                written: outcome.accepted,
            },
        }
    }

    /// Writes the entry and waits as the fsync policy asks; an entry with
    /// no samples (all duplicates or refused) is not written.
    fn log(&self, entry: &Entry) -> Result<(), sluice_wal::WalError> {
        if entry.samples.is_empty() {
            return Ok(());
        }
        let sequence = self.wal.write(&entry.encode())?;
        self.wal.commit(sequence)
    }

    /// The series that pass validation, their labels as the head keys them,
    /// and the refusals of the others.
    fn validate(&self, batch: WriteBatch) -> (Vec<AppendSeries>, Refused) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let mut refused = Refused::default();
        let mut valid = Vec::with_capacity(batch.series.len());
        for series in batch.series {
            if let Some(kept) = self.validate_series(series, now_ms, &mut refused) {
                valid.push(kept);
            }
        }
        (valid, refused)
    }

    fn validate_series(
        &self,
        series: IncomingSeries,
        now_ms: i64,
        refused: &mut Refused,
    ) -> Option<AppendSeries> {
        let limits = &self.config.limits;
        if let Err(Refusal { reason, message }) =
            sluice_remotewrite::validate_labels(&series.labels, limits)
        {
            let count = series.samples.len() + series.histograms.len();
            self.metrics.discard(reason, count);
            refused.add(|| message, count);
            return None;
        }
        if let Some(first) = series.histograms.first() {
            let refusal = sluice_remotewrite::refuse_histogram(&series.labels, *first);
            self.metrics
                .discard(refusal.reason, series.histograms.len());
            refused.add(|| refusal.message, series.histograms.len());
        }
        let mut samples = Vec::with_capacity(series.samples.len());
        for sample in &series.samples {
            match sluice_remotewrite::validate_timestamp(
                &series.labels,
                sample.timestamp,
                now_ms,
                limits,
            ) {
                Ok(()) => samples.push((sample.timestamp, sample.value)),
                Err(refusal) => {
                    self.metrics.discard(refusal.reason, 1);
                    refused.add(|| refusal.message, 1);
                }
            }
        }
        let labels = series.labels.into_iter().map(|label| Label {
            name: label.name,
            value: label.value,
        });
        Some(AppendSeries {
            labels: Labels::new(labels.collect()),
            samples,
        })
    }

    fn count_head_refusals(
        &self,
        valid: &[AppendSeries],
        outcome: &AppendOutcome,
        refused: &mut Refused,
    ) {
        for rejected in &outcome.rejected {
            let reason = match rejected.rejection {
                sluice_head::Rejection::OutOfOrder => Reason::SampleOutOfOrder,
                sluice_head::Rejection::OutOfBounds => Reason::SampleOutOfBounds,
                sluice_head::Rejection::TooOld => Reason::SampleTooOld,
                sluice_head::Rejection::DuplicateTimestamp => Reason::SampleDuplicateTimestamp,
                sluice_head::Rejection::SeriesLimit(_) => Reason::PerUserSeriesLimit,
            };
            self.metrics.discard(reason, 1);
            let labels = &valid[rejected.series].labels;
            refused.add(|| rejected.message(labels, &self.config.head), 1);
        }
    }
}

#[cfg(test)]
mod tests;
