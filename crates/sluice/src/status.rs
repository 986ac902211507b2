//! The status page's sources: which roles run here and where their numbers
//! are (see `sluice-status`).

use std::sync::Arc;

use sluice_metastore::Metastore;
use sluice_store::Store;

use crate::config::Config;

/// The roles a process runs, as the status page shows them.
pub(crate) struct Running<'a> {
    pub(crate) frontend: Option<&'a sluice_frontend::Frontend>,
    pub(crate) scheduler: Option<&'a sluice_scheduler::Scheduler>,
    pub(crate) store: Option<&'a Arc<Store>>,
    /// The blocks the embedded engine reads, where it runs.
    pub(crate) metastore: Option<&'a Arc<Metastore>>,
}

/// The `/` page of this process.
pub(crate) fn router(
    config: &Config,
    registry: &prometheus::Registry,
    running: Running<'_>,
) -> axum::Router {
    let roles = config.targets.iter().map(|role| role.name()).collect();
    let mut sources = sluice_status::Sources::new(roles, registry.clone());
    if let Some(frontend) = running.frontend {
        let frontend = frontend.clone();
        sources
            .refresh
            .push(Arc::new(move || frontend.refresh_metrics()));
    }
    if let Some(scheduler) = running.scheduler {
        let scheduler = scheduler.clone();
        sources
            .refresh
            .push(Arc::new(move || scheduler.refresh_metrics()));
    }
    if let Some(store) = running.store {
        let head = Arc::clone(store.head());
        sources.head_series = Some(Arc::new(move || {
            head.tenants()
                .into_iter()
                .map(|tenant| {
                    let series = head.series_count(&tenant) as u64;
                    (tenant, series)
                })
                .collect()
        }));
    }
    if let Some(metastore) = running.metastore {
        let metastore = Arc::clone(metastore);
        sources.blocks = Some(Arc::new(move || {
            metastore
                .tenants()
                .into_iter()
                .map(|tenant| {
                    let blocks = metastore.blocks(&tenant, i64::MIN, i64::MAX).len() as u64;
                    (tenant, blocks)
                })
                .collect()
        }));
    }
    sluice_status::router(sources)
}
