//! The `engine` executor: sub-queries evaluated by the embedded PromQL engine
//! over the metastore's blocks of the asking tenant, and over its head when
//! this process runs the store, with no downstream.
//! Evaluation and block reads are synchronous and CPU- or I/O-bound, so they
//! run on the blocking pool; a dropped future cancels the evaluation.

use std::sync::Arc;
use std::time::Duration;

use sluice_blockread::{
    BlockStorage, WatchSkipped, label_names, label_values, selector_matchers, series,
};
use sluice_engine::{Engine, EngineError, QueryOptions, QueryOutput};
use sluice_metastore::Metastore;
use sluice_proto::{
    ApiResponse, Label, LabelSet, MetadataKind, MetadataQuery, QueryKind, QueryRequest,
    ResponseData, SeriesData, StringsData,
};

use crate::executor::{Execution, Executor};

/// Runs sub-queries with the embedded engine over a bucket's blocks.
#[derive(Clone)]
pub struct EngineExecutor {
    metastore: Arc<Metastore>,
    /// `-querier.max-samples`.
    max_samples: usize,
    /// The store's head, when the store runs in this process.
    head: Option<Arc<sluice_head::Head>>,
}

impl EngineExecutor {
    pub fn new(metastore: Arc<Metastore>, max_samples: usize) -> EngineExecutor {
        EngineExecutor {
            metastore,
            max_samples,
            head: None,
        }
    }

    /// Reads the store's `head` too, merged with the blocks.
    pub fn with_head(mut self, head: Arc<sluice_head::Head>) -> EngineExecutor {
        self.head = Some(head);
        self
    }

    fn options(&self, timeout: Duration, lookback_delta_ms: i64) -> QueryOptions {
        let mut options = QueryOptions {
            max_samples: self.max_samples,
            ..QueryOptions::default()
        };
        if lookback_delta_ms > 0 {
            options.lookback_delta_ms = lookback_delta_ms;
        }
        options.with_timeout(timeout)
    }

    /// Every block of the tenant, and the head when this process has one:
    /// `offset` and `@` reach outside the query's own range, and the
    /// storage skips blocks per selector. The blocks the metastore could
    /// not load are watched, so that a query reading over one warns that
    /// its answer lacks them.
    fn storage(&self, tenant: &str) -> Arc<WatchSkipped<BlockStorage>> {
        let blocks = BlockStorage::new(&self.metastore, tenant, i64::MIN, i64::MAX);
        let blocks = match &self.head {
            Some(head) => blocks.with_head(Arc::clone(head), tenant),
            None => blocks,
        };
        let skipped = self.metastore.skipped(tenant, i64::MIN, i64::MAX);
        Arc::new(WatchSkipped::new(blocks, skipped))
    }
}

fn failed(error: EngineError) -> Execution {
    Execution {
        response: sluice_plan::shard::engine_error(&error),
        retryable: false,
    }
}

fn answered(outcome: Result<QueryOutput, EngineError>, skipped: Vec<String>) -> Execution {
    match outcome {
        Ok(output) => {
            let mut response = ApiResponse::success(ResponseData::Query(
                sluice_plan::shard::query_data(output.value),
            ));
            response.warnings = skipped;
            response.warnings.extend(output.warnings);
            response.infos = output.infos;
            Execution {
                response,
                retryable: false,
            }
        }
        Err(error) => failed(error),
    }
}

/// `series`, `labels` or `label/<name>/values` over `storage`.
fn metadata(storage: &BlockStorage, query: &MetadataQuery) -> Result<ResponseData, EngineError> {
    let mut selectors = Vec::new();
    for text in &query.matchers {
        selectors.extend(selector_matchers(text)?);
    }
    let start = query.start_ms.unwrap_or(i64::MIN);
    let end = query.end_ms.unwrap_or(i64::MAX);
    let limit = |length: usize| match query.limit {
        0 => length,
        limit => length.min(limit as usize),
    };
    let kind = MetadataKind::try_from(query.kind).unwrap_or(MetadataKind::Series);
    let strings = |mut values: Vec<String>| {
        values.truncate(limit(values.len()));
        ResponseData::Strings(StringsData { values })
    };
    Ok(match kind {
        MetadataKind::Series => {
            let mut found = series(storage, &selectors, start, end)?;
            found.truncate(limit(found.len()));
            let series = found
                .iter()
                .map(|labels| LabelSet {
                    labels: labels
                        .iter()
                        .map(|label| Label {
                            name: label.name.clone(),
                            value: label.value.clone(),
                        })
                        .collect(),
                })
                .collect();
            ResponseData::Series(SeriesData { series })
        }
        MetadataKind::LabelNames => strings(label_names(storage, &selectors, start, end)?),
        MetadataKind::LabelValues => strings(label_values(
            storage,
            &query.label_name,
            &selectors,
            start,
            end,
        )?),
    })
}

impl Executor for EngineExecutor {
    async fn execute(&self, tenant: &str, request: &QueryRequest, timeout: Duration) -> Execution {
        let storage = self.storage(tenant);
        let watched = Arc::clone(&storage);
        match request.kind.clone() {
            Some(QueryKind::Instant(query)) => {
                let options = self.options(timeout, query.lookback_delta_ms);
                let outcome = sluice_engine::evaluate_off_runtime(options, move |options| {
                    Engine::new().instant(&*storage, &query.query, query.time_ms, options)
                })
                .await;
                answered(outcome, watched.warnings())
            }
            Some(QueryKind::Range(query)) => {
                let options = self.options(timeout, query.lookback_delta_ms);
                let outcome = sluice_engine::evaluate_off_runtime(options, move |options| {
                    let (start, end, step) = (query.start_ms, query.end_ms, query.step_ms);
                    Engine::new().range(&*storage, &query.query, start, end, step, options)
                })
                .await;
                answered(outcome, watched.warnings())
            }
            Some(QueryKind::Metadata(query)) => {
                let (start, end) = (
                    query.start_ms.unwrap_or(i64::MIN),
                    query.end_ms.unwrap_or(i64::MAX),
                );
                let skipped = self.metastore.skipped(tenant, start, end);
                match tokio::task::spawn_blocking(move || metadata(storage.inner(), &query)).await {
                    Ok(Ok(data)) => {
                        let mut response = ApiResponse::success(data);
                        response.warnings = skipped.iter().map(|block| block.warning()).collect();
                        Execution {
                            response,
                            retryable: false,
                        }
                    }
                    Ok(Err(error)) => failed(error),
                    Err(error) => failed(EngineError::Execution(format!(
                        "metadata lookup failed: {error}"
                    ))),
                }
            }
            Some(QueryKind::Forwarded(forwarded)) => crate::forwarded::answer(&forwarded),
            None => failed(EngineError::BadData("empty request".into())),
        }
    }
}
