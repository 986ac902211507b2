//! Per-tenant limits for the whole process: the defaults the flags set,
//! the runtime configuration file's overrides put in force at start-up and
//! re-read every reload period, and `/runtime_config` to show them.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use sluice_limits::reload::{self, ReloadMetrics};
use sluice_limits::{Overrides, TenantLimits};

use crate::config::Config;

/// The overrides every role reads, handed to the frontend's and the
/// scheduler's configurations. A runtime file that cannot be read or is
/// refused stops start-up: better than serving with limits nobody chose.
pub(crate) fn start(
    config: &mut Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<Overrides>> {
    let defaults = TenantLimits {
        ingestion_rate: config.store.ingestion_rate,
        ingestion_burst_size: config.store.ingestion_burst,
        max_global_series_per_user: config.store.max_global_series_per_user,
        max_fetched_series_per_query: config.querier_max_fetched_series,
        max_fetched_chunk_bytes_per_query: config.querier_max_fetched_chunk_bytes,
        ..config.frontend.tenant_defaults()
    };
    let overrides = Arc::new(Overrides::new(defaults)?);
    let metrics = ReloadMetrics::new(registry);
    if !config.runtime_config_file.as_os_str().is_empty() {
        let path = config.runtime_config_file.clone();
        reload::load(&overrides, &path)
            .with_context(|| format!("-runtime-config.file={}", path.display()))?;
        reload::spawn(
            overrides.clone(),
            path,
            config.runtime_config_reload_period,
            metrics,
        );
    }
    config.frontend.overrides = Some(overrides.clone());
    config.store.overrides = Some(overrides.clone());
    config.scheduler.tenant_limits = Some(sluice_frontend::queue_limits(overrides.clone()));
    Ok(overrides)
}

/// `/runtime_config` (Mimir's endpoint): the overrides in force as YAML;
/// `?mode=diff` shows only what differs from the defaults.
pub(crate) fn router(overrides: Arc<Overrides>) -> axum::Router {
    axum::Router::new()
        .route("/runtime_config", axum::routing::get(show))
        .with_state(overrides)
}

async fn show(
    State(overrides): State<Arc<Overrides>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let diff = query
        .as_deref()
        .is_some_and(|query| query.split('&').any(|pair| pair == "mode=diff"));
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        overrides.render(diff),
    )
}
