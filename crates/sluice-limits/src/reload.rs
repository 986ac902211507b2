//! Re-reading the runtime configuration file while sluice runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{LimitsError, Overrides, RuntimeConfig};

/// Reads `path` and puts it in force. Used at start-up, where a broken file
/// stops sluice before it serves anything, and by [`spawn`].
pub fn load(overrides: &Overrides, path: &Path) -> Result<(), LimitsError> {
    let text = std::fs::read_to_string(path).map_err(|error| LimitsError::Read {
        path: path.display().to_string(),
        message: error.to_string(),
    })?;
    overrides.apply(&RuntimeConfig::parse(&text)?)
}

/// The reload loop's gauge, registered once.
pub struct ReloadMetrics {
    successful: prometheus::IntGauge,
}

impl ReloadMetrics {
    pub fn new(registry: &prometheus::Registry) -> ReloadMetrics {
        let successful = prometheus::IntGauge::new(
            "sluice_runtime_config_last_reload_successful",
            "Whether the last read of the runtime configuration file succeeded (1) or was refused (0).",
        )
        .expect("valid gauge");
        // Registering twice (tests building several processes' worth in
        // one registry) keeps the first.
        let _ = registry.register(Box::new(successful.clone()));
        successful.set(1);
        ReloadMetrics { successful }
    }
}

/// Re-reads `path` every `period` and puts what it says in force. A file
/// that cannot be read, parsed or validated leaves the limits as they were.
pub fn spawn(
    overrides: Arc<Overrides>,
    path: PathBuf,
    period: Duration,
    metrics: ReloadMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_text: Option<String> = None;
        let mut ticks = tokio::time::interval(period.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let reading = path.clone();
            let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(reading)).await;
            let text = match read.map_err(|error| error.to_string()) {
                Ok(Ok(text)) => text,
                Ok(Err(error)) => {
                    refused(&metrics, &path, &error.to_string());
                    continue;
                }
                Err(error) => {
                    refused(&metrics, &path, &error);
                    continue;
                }
            };
            // Unchanged text is not parsed again, but a file fixed back to
            // what is in force still clears the failure.
            if last_text.as_deref() == Some(text.as_str()) {
                metrics.successful.set(1);
                continue;
            }
            match RuntimeConfig::parse(&text).and_then(|config| overrides.apply(&config)) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "runtime configuration reloaded");
                    metrics.successful.set(1);
                    last_text = Some(text);
                }
                Err(error) => refused(&metrics, &path, &error.to_string()),
            }
        }
    })
}

fn refused(metrics: &ReloadMetrics, path: &Path, error: &str) {
    tracing::warn!(path = %path.display(), %error, "runtime configuration refused; the limits in force stay");
    metrics.successful.set(0);
}
