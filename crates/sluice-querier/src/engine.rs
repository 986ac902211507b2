//! The `engine` executor: sub-queries evaluated by the embedded PromQL engine
//! over the metastore's blocks of the asking tenant, and over its head when
//! this process runs the store, with no downstream.
//! Evaluation and block reads are synchronous and CPU- or I/O-bound, so they
//! run on the blocking pool; a dropped future cancels the evaluation.

use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::Matcher;
use sluice_blockread::{
    BlockStorage, Federated, TENANT_LABEL, WatchSkipped, label_names, label_values,
    selector_matchers, series, split_tenant_matchers, with_tenant,
};
use sluice_engine::{Engine, EngineError, QueryOptions, QueryOutput, Shard, Storage, StoredSeries};
use sluice_limits::Overrides;
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
    /// Each tenant's fetch limits; none, no limits.
    limits: Option<Arc<Overrides>>,
}

impl EngineExecutor {
    pub fn new(metastore: Arc<Metastore>, max_samples: usize) -> EngineExecutor {
        // Made at start-up: `status/runtimeinfo`'s start time from here.
        std::sync::LazyLock::force(&crate::forwarded::STARTED);
        EngineExecutor {
            metastore,
            max_samples,
            head: None,
            limits: None,
        }
    }

    /// Applies each tenant's `max_fetched_series_per_query` and
    /// `max_fetched_chunk_bytes_per_query` in force to its queries.
    pub fn with_limits(mut self, limits: Arc<Overrides>) -> EngineExecutor {
        self.limits = Some(limits);
        self
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
    /// its answer lacks them. The tenant's fetch limits apply.
    fn tenant_storage(&self, tenant: &str) -> Watched {
        let blocks = BlockStorage::new(&self.metastore, tenant, i64::MIN, i64::MAX);
        let blocks = match &self.head {
            Some(head) => blocks.with_head(Arc::clone(head), tenant),
            None => blocks,
        };
        let blocks = match &self.limits {
            Some(limits) => {
                let limits = &limits.tenant(tenant).limits;
                blocks.with_fetch_limits(
                    limits.max_fetched_series_per_query,
                    limits.max_fetched_chunk_bytes_per_query,
                )
            }
            None => blocks,
        };
        let skipped = self.metastore.skipped(tenant, i64::MIN, i64::MAX);
        WatchSkipped::new(blocks, skipped)
    }

    /// The storage of `tenant`, or of each tenant of a federated id
    /// (`a|b`, which only a frontend with federation enabled sends), each
    /// with its own limits.
    fn storage(&self, tenant: &str) -> Arc<QueryStorage> {
        if !tenant.contains('|') {
            return Arc::new(QueryStorage::One(self.tenant_storage(tenant)));
        }
        let tenants = tenant
            .split('|')
            .map(|one| (one.to_owned(), self.tenant_storage(one)))
            .collect();
        Arc::new(QueryStorage::Federated(Federated::new(tenants)))
    }
}

type Watched = WatchSkipped<BlockStorage>;

/// What one sub-query reads: one tenant's storage, or several federated.
enum QueryStorage {
    One(Watched),
    Federated(Federated<Watched>),
}

impl QueryStorage {
    /// Warnings for the skipped blocks the query's selections reached.
    fn warnings(&self) -> Vec<String> {
        match self {
            QueryStorage::One(one) => one.warnings(),
            QueryStorage::Federated(federated) => federated
                .tenants()
                .iter()
                .flat_map(|(_, one)| one.warnings())
                .collect(),
        }
    }
}

impl QueryStorage {
    /// `series`, `labels` or `label/<name>/values`; federated, each
    /// tenant's answer merged, its series labelled with the tenant.
    fn metadata(&self, query: &MetadataQuery) -> Result<ResponseData, EngineError> {
        let federated = match self {
            QueryStorage::One(one) => return metadata(one.inner(), query),
            QueryStorage::Federated(federated) => federated,
        };
        let selectors = selectors(query)?;
        let mut series = Vec::new();
        let mut strings = Vec::new();
        let mut read = Vec::new();
        for (tenant, one) in federated.tenants() {
            let Some(own) = tenant_selectors(&selectors, tenant) else {
                continue;
            };
            read.push(tenant.clone());
            match metadata_over(one.inner(), query, &own)? {
                ResponseData::Series(found) => {
                    series.extend(found.series.iter().map(|set| labelled_set(set, tenant)))
                }
                ResponseData::Strings(found) => strings.extend(found.values),
                _ => {}
            }
        }
        let kind = MetadataKind::try_from(query.kind).unwrap_or(MetadataKind::Series);
        match kind {
            MetadataKind::LabelNames => strings.push(TENANT_LABEL.to_owned()),
            MetadataKind::LabelValues if query.label_name == TENANT_LABEL => strings = read,
            _ => {}
        }
        let limit = match query.limit {
            0 => usize::MAX,
            limit => limit as usize,
        };
        if kind == MetadataKind::Series {
            series.sort_by(|a, b| {
                let names = |set: &LabelSet| {
                    set.labels
                        .iter()
                        .map(|label| (label.name.clone(), label.value.clone()))
                        .collect::<Vec<_>>()
                };
                names(a).cmp(&names(b))
            });
            series.truncate(limit);
            return Ok(ResponseData::Series(SeriesData { series }));
        }
        strings.sort();
        strings.dedup();
        strings.truncate(limit);
        Ok(ResponseData::Strings(StringsData { values: strings }))
    }
}

/// The selectors `tenant` is read with: those whose `__tenant_id__`
/// matchers it passes, without them; `None` when no selector keeps it.
fn tenant_selectors(selectors: &[Vec<Matcher>], tenant: &str) -> Option<Vec<Vec<Matcher>>> {
    let kept: Vec<Vec<Matcher>> = selectors
        .iter()
        .filter_map(|set| {
            let (on_tenant, others) = split_tenant_matchers(set);
            let passes = on_tenant.iter().all(|matcher| matcher.is_match(tenant));
            passes.then_some(others)
        })
        .collect();
    (selectors.is_empty() || !kept.is_empty()).then_some(kept)
}

/// A series' label set as a federated answer shows it for `tenant`.
fn labelled_set(set: &LabelSet, tenant: &str) -> LabelSet {
    let own = sluice_engine::Labels::from_pairs(
        set.labels
            .iter()
            .map(|label| (label.name.clone(), label.value.clone())),
    );
    LabelSet {
        labels: sluice_plan::shard::proto_labels(&with_tenant(&own, tenant)),
    }
}

impl Storage for QueryStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        match self {
            QueryStorage::One(one) => one.select(matchers, start_ms, end_ms, shard),
            QueryStorage::Federated(federated) => {
                federated.select(matchers, start_ms, end_ms, shard)
            }
        }
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
    metadata_over(storage, query, &selectors(query)?)
}

/// Every `match[]` of `query`, each a set of matchers.
fn selectors(query: &MetadataQuery) -> Result<Vec<Vec<Matcher>>, EngineError> {
    let mut selectors = Vec::new();
    for text in &query.matchers {
        selectors.extend(selector_matchers(text)?);
    }
    Ok(selectors)
}

/// [`metadata`] with the selectors already parsed.
fn metadata_over(
    storage: &BlockStorage,
    query: &MetadataQuery,
    selectors: &[Vec<Matcher>],
) -> Result<ResponseData, EngineError> {
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
            let mut found = series(storage, selectors, start, end)?;
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
        MetadataKind::LabelNames => strings(label_names(storage, selectors, start, end)?),
        MetadataKind::LabelValues => strings(label_values(
            storage,
            &query.label_name,
            selectors,
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
                let skipped: Vec<_> = tenant
                    .split('|')
                    .flat_map(|one| self.metastore.skipped(one, start, end))
                    .collect();
                match tokio::task::spawn_blocking(move || storage.metadata(&query)).await {
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
