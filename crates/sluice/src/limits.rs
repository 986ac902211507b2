//! Per-tenant limits for the whole process: the defaults the flags set,
//! the runtime configuration file's overrides put in force at start-up and
//! re-read every reload period, and `/runtime_config` to show them.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use sluice_limits::Overrides;
use sluice_limits::reload::{self, ReloadMetrics};

use crate::config::Config;

/// The overrides every role reads, handed to the frontend's and the
/// scheduler's configurations. A runtime file that cannot be read or is
/// refused stops start-up: better than serving with limits nobody chose.
pub(crate) fn start(
    config: &mut Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<Overrides>> {
    let overrides = Arc::new(Overrides::new(config.frontend.tenant_defaults())?);
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
