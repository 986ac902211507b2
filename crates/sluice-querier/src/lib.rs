//! sluice's querier: a pool of workers that *pull* sub-queries from every
//! queue owner (query-frontend, later query-scheduler) it knows, run each with
//! an [`Executor`], and send the typed result back.
//!
//! Pulling is what keeps a querier from ever taking more than it can run: each
//! worker holds one stream and asks for one task at a time, so the querier's
//! `max_concurrent` is exactly its number of workers. That total is divided
//! across the owners it is connected to (at least one worker each) and
//! re-divided whenever DNS shows owners coming or going.
//!
//! Workers do not all run at once: a querier-wide [`ConcurrencyLimiter`]
//! adapts how many may, to the downstream's latency, and a worker takes a
//! permit *before* it tells its owner it is ready, so no task ever sits on a
//! querier waiting for one while another querier slot is idle.

mod downstream;
mod engine;
pub mod executor;
mod forwarded;
mod limiter;
mod metrics;
mod probe;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use sluice_proto::{OwnerToQuerier, QuerierToOwner};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use downstream::DownstreamOptions;
pub use engine::EngineExecutor;
pub use executor::{Execution, Executor, PrometheusExecutor};
pub use limiter::{ConcurrencyLimiter, ConcurrencyPermit, LimitConfig};
pub use metrics::QuerierMetrics;

/// The owner → worker half of a worker stream.
pub type OwnerStream = Pin<Box<dyn Stream<Item = Result<OwnerToQuerier, tonic::Status>> + Send>>;

/// Runs one task for an in-process queue owner and returns its result.
pub type LocalExecute = Arc<
    dyn Fn(sluice_proto::QueryTask) -> BoxFuture<'static, sluice_proto::QueryResult> + Send + Sync,
>;

/// Waits until an in-process worker may take a task (a permit of the
/// querier's concurrency limiter), to be held until that task ends.
pub type LocalReady = Arc<dyn Fn() -> BoxFuture<'static, ConcurrencyPermit> + Send + Sync>;

/// Serves one worker of a querier whose queue owner lives in the same
/// process (`-target=all`): called with the querier id, the worker's stop
/// signal, the wait for readiness and the way to run a task, it hands tasks
/// over directly until stopped, with no gRPC, no encoding and no stream in
/// between.
pub type LocalConnect = Arc<
    dyn Fn(String, watch::Receiver<bool>, LocalReady, LocalExecute) -> BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// How a querier is set up.
#[derive(Clone, Debug)]
pub struct QuerierConfig {
    /// Identifies this querier to owners (fairness, shuffle sharding).
    pub querier_id: String,
    /// `host:port` of every queue owner (query-frontends or
    /// query-schedulers); DNS names may resolve to many.
    pub owner_addresses: Vec<String>,
    /// Total sub-queries run at once, across all owners: the ceiling of the
    /// adaptive concurrency limit.
    pub max_concurrent: usize,
    /// The floor of the adaptive concurrency limit; equal to
    /// `max_concurrent` turns adaptation off.
    pub min_concurrent: usize,
    /// How often the downstream is probed while sub-queries run (zero: never).
    pub backend_probe_interval: Duration,
    /// How often owner names are resolved again.
    pub dns_refresh: Duration,
    /// How long shutdown waits for running sub-queries.
    pub shutdown_grace: Duration,
    /// How workers dial owners and deliver results: plain or TLS.
    pub grpc_client: sluice_tls::GrpcChannels,
}

/// One owner this querier pulls from.
#[derive(Clone)]
enum Target {
    Grpc(tonic::transport::Channel),
    Local(LocalConnect),
}

impl Target {
    async fn connect(&self) -> Result<(mpsc::Sender<QuerierToOwner>, OwnerStream), String> {
        match self {
            Target::Local(_) => Err("an in-process owner is served inline".to_owned()),
            Target::Grpc(channel) => {
                let mut client =
                    sluice_proto::queue_owner::queue_owner_client::QueueOwnerClient::new(
                        channel.clone(),
                    )
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX);
                // Small buffer: the worker sends one message per task.
                let (sender, receiver) = mpsc::channel(4);
                let stream = client
                    .process(tokio_stream::wrappers::ReceiverStream::new(receiver))
                    .await
                    .map_err(|status| format!("opening worker stream: {status}"))?
                    .into_inner();
                Ok((sender, Box::pin(stream)))
            }
        }
    }
}

/// Runs the querier until `shutdown` fires, then lets running sub-queries
/// finish (tells every owner first, so it hands out nothing new).
pub async fn run<E: Executor>(
    config: QuerierConfig,
    executor: Arc<E>,
    local: Option<LocalConnect>,
    metrics: QuerierMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pools: BTreeMap<String, TargetPool> = BTreeMap::new();
    let delivery = sluice_proto::delivery::ResultDelivery::new(config.grpc_client.clone());
    let limiter = ConcurrencyLimiter::new(
        LimitConfig::new(config.min_concurrent, config.max_concurrent),
        limiter::LimiterGauges {
            limit: metrics.concurrency_limit.clone(),
            permits_in_use: metrics.concurrency_permits_in_use.clone(),
        },
    );
    let probing = tokio::spawn(probe::probe_backend(
        Arc::clone(&executor),
        Arc::clone(&limiter),
        metrics.clone(),
        config.backend_probe_interval,
        shutdown.clone(),
    ));
    let mut refresh = tokio::time::interval(config.dns_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                let wanted = resolve_targets(&config, local.as_ref()).await;
                let workers = WorkerShared { delivery: &delivery, executor: &executor, limiter: &limiter, metrics: &metrics };
                rebalance(&workers, &config, &mut pools, wanted);
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    tracing::info!("querier shutting down: finishing running sub-queries");
    let mut draining = JoinSet::new();
    for (_, pool) in std::mem::take(&mut pools) {
        draining.spawn(pool.stop_all());
    }
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while draining.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?config.shutdown_grace, "querier shutdown grace expired with sub-queries still running");
    }
    probing.abort();
    metrics.connected_targets.set(0);
}

async fn resolve_targets(
    config: &QuerierConfig,
    local: Option<&LocalConnect>,
) -> BTreeMap<String, Target> {
    let mut wanted = BTreeMap::new();
    if let Some(local) = local {
        wanted.insert("local".to_owned(), Target::Local(local.clone()));
    }
    for address in &config.owner_addresses {
        match tokio::net::lookup_host(address.as_str()).await {
            Ok(resolved) => {
                let host = sluice_tls::host_of(address);
                for socket in resolved {
                    match grpc_target(&config.grpc_client, host, socket) {
                        Ok(target) => {
                            wanted.insert(socket.to_string(), target);
                        }
                        Err(error) => tracing::warn!(%address, %error, "cannot dial queue owner"),
                    }
                }
            }
            // Keep going with what resolves: one bad name must not stop the
            // querier from serving the other owners.
            Err(error) => tracing::warn!(%address, %error, "cannot resolve queue owner address"),
        }
    }
    wanted
}

fn grpc_target(
    channels: &sluice_tls::GrpcChannels,
    host: &str,
    socket: SocketAddr,
) -> Result<Target, String> {
    let channel = channels.channel(host, &socket.to_string(), |endpoint| {
        endpoint
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
    })?;
    Ok(Target::Grpc(channel))
}

/// Workers pulling from one owner.
struct TargetPool {
    target: Target,
    workers: Vec<worker::WorkerHandle>,
}

impl TargetPool {
    async fn stop_all(self) {
        let mut stopping = JoinSet::new();
        for handle in self.workers {
            stopping.spawn(handle.stop());
        }
        while stopping.join_next().await.is_some() {}
    }
}

/// What every worker of this querier shares.
struct WorkerShared<'a, E> {
    delivery: &'a sluice_proto::delivery::ResultDelivery,
    executor: &'a Arc<E>,
    limiter: &'a Arc<ConcurrencyLimiter>,
    metrics: &'a QuerierMetrics,
}

/// Splits `max_concurrent` across the wanted owners, starting and stopping
/// workers to match. Stopped workers finish their task first.
fn rebalance<E: Executor>(
    shared: &WorkerShared<'_, E>,
    config: &QuerierConfig,
    pools: &mut BTreeMap<String, TargetPool>,
    wanted: BTreeMap<String, Target>,
) {
    let gone: Vec<String> = pools
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .cloned()
        .collect();
    for key in gone {
        if let Some(pool) = pools.remove(&key) {
            tracing::info!(owner = %key, "queue owner gone; stopping its workers");
            shared.limiter.set_workers(&key, 0);
            tokio::spawn(pool.stop_all());
        }
    }
    let owner_count = wanted.len();
    for (index, (key, target)) in wanted.into_iter().enumerate() {
        let share = worker_share(config.max_concurrent, owner_count, index);
        shared.limiter.set_workers(&key, share);
        let pool = pools.entry(key.clone()).or_insert_with(|| {
            tracing::info!(owner = %key, "queue owner found");
            TargetPool {
                target,
                workers: Vec::new(),
            }
        });
        while pool.workers.len() > share {
            let handle = pool.workers.pop().expect("len > share >= 0");
            tokio::spawn(handle.stop());
        }
        while pool.workers.len() < share {
            pool.workers.push(worker::spawn(worker::WorkerSetup {
                target: pool.target.clone(),
                delivery: shared.delivery.clone(),
                executor: shared.executor.clone(),
                limiter: shared.limiter.clone(),
                querier_id: config.querier_id.clone(),
                max_concurrent: config.max_concurrent as u32,
                owner: key.clone(),
                metrics: shared.metrics.clone(),
            }));
        }
    }
    shared.metrics.connected_targets.set(pools.len() as i64);
}

/// The number of workers for the `index`-th of `owner_count` owners: an even
/// split of `total`, the remainder to the first owners, at least one each.
fn worker_share(total: usize, owner_count: usize, index: usize) -> usize {
    if owner_count == 0 {
        return 0;
    }
    let base = total / owner_count;
    let remainder = total % owner_count;
    let share = base + usize::from(index < remainder);
    share.max(1)
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn concurrency_is_split_across_owners() {
        let shares: Vec<usize> = (0..3).map(|index| worker_share(20, 3, index)).collect();
        assert_eq!(shares, vec![7, 7, 6]);
        assert_eq!(shares.iter().sum::<usize>(), 20);
        assert_eq!(worker_share(20, 1, 0), 20);
        // Every owner gets at least one worker, even past the total.
        let many: Vec<usize> = (0..4).map(|index| worker_share(2, 4, index)).collect();
        assert_eq!(many, vec![1, 1, 1, 1]);
        assert_eq!(worker_share(5, 0, 0), 0);
    }
}
