//! The frontend's side of the query-scheduler: one pipelined stream to every
//! scheduler (enqueue and cancel, each answered by query id), and the record
//! of sub-queries waiting for a result that a querier will send us directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sluice_proto::scheduler::scheduler_client::SchedulerClient;
use sluice_proto::{
    CancelRequest, EnqueueRequest, EnqueueStatus, FrontendHello, FrontendMessage,
    FrontendToScheduler, Header, QueryRequest, QueryResult,
};
use sluice_queue::worker_stream::Outcome;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::clock::SharedClock;

/// Random bytes in a result token: 128 bits, past guessing.
const TOKEN_BYTES: usize = 16;

/// What a scheduler said to one enqueue.
pub(crate) enum EnqueueAnswer {
    Queued,
    TooManyRequests,
    /// Shutting down, errored, or gone: try another scheduler.
    TryElsewhere(String),
}

/// A sub-query queued through a scheduler, waiting for its result.
struct RemotePending {
    tenant: String,
    /// Handed to the scheduler with the enqueue, and by it only to the
    /// querier that runs the sub-query: a result must bring it back.
    token: [u8; TOKEN_BYTES],
    reply: oneshot::Sender<Outcome>,
    scheduler: String,
}

/// One scheduler and the stream to it.
struct Connection {
    address: String,
    sender: Mutex<Option<mpsc::Sender<FrontendToScheduler>>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<EnqueueAnswer>>>,
    connected: AtomicBool,
    task: tokio::task::JoinHandle<()>,
}

/// Every scheduler this frontend knows, and its waiting sub-queries.
pub(crate) struct SchedulerPool {
    frontend_address: String,
    addresses: Vec<String>,
    connections: Mutex<BTreeMap<String, Arc<Connection>>>,
    next: AtomicUsize,
    pending: Mutex<HashMap<u64, RemotePending>>,
    connected_gauge: prometheus::IntGauge,
    refused_results: prometheus::IntCounterVec,
    grpc: sluice_tls::GrpcChannels,
    /// What the time left to a deadline is measured against.
    clock: SharedClock,
}

fn frontend_message(message: FrontendMessage) -> FrontendToScheduler {
    FrontendToScheduler {
        message: Some(message),
    }
}

impl SchedulerPool {
    pub(crate) fn start(
        addresses: Vec<String>,
        frontend_address: String,
        dns_refresh: Duration,
        connected_gauge: prometheus::IntGauge,
        refused_results: prometheus::IntCounterVec,
        grpc: sluice_tls::GrpcChannels,
        clock: SharedClock,
    ) -> Arc<SchedulerPool> {
        let pool = Arc::new(SchedulerPool {
            frontend_address,
            addresses,
            connections: Mutex::new(BTreeMap::new()),
            next: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            connected_gauge,
            refused_results,
            grpc,
            clock,
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(dns_refresh);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                refresh.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.refresh().await;
            }
        });
        pool
    }

    /// Resolves the scheduler addresses again: connects to new schedulers,
    /// drops the ones no longer listed.
    async fn refresh(self: &Arc<Self>) {
        let mut wanted = Vec::new();
        for address in &self.addresses {
            match tokio::net::lookup_host(address.as_str()).await {
                Ok(resolved) => {
                    let host = sluice_tls::host_of(address);
                    wanted.extend(resolved.map(|socket| (socket.to_string(), host.to_owned())));
                }
                Err(error) => {
                    tracing::warn!(%address, %error, "cannot resolve query-scheduler address")
                }
            }
        }
        let mut connections = self.connections.lock().expect("connections lock");
        let gone: Vec<String> = connections
            .keys()
            .filter(|address| !wanted.iter().any(|(wanted, _)| wanted == *address))
            .cloned()
            .collect();
        for address in gone {
            if let Some(connection) = connections.remove(&address) {
                connection.task.abort();
                self.connection_lost(&connection);
            }
        }
        for (address, host) in wanted {
            if connections.contains_key(&address) {
                continue;
            }
            let (ready_sender, ready) = oneshot::channel::<Arc<Connection>>();
            let task = tokio::spawn(connection_loop(
                Arc::downgrade(self),
                address.clone(),
                host,
                ready,
            ));
            let connection = Arc::new(Connection {
                address: address.clone(),
                sender: Mutex::new(None),
                acks: Mutex::new(HashMap::new()),
                connected: AtomicBool::new(false),
                task,
            });
            let _ = ready_sender.send(connection.clone());
            connections.insert(address, connection);
        }
    }

    /// True while at least one scheduler stream is up.
    pub(crate) fn any_connected(&self) -> bool {
        self.connections
            .lock()
            .expect("connections lock")
            .values()
            .any(|connection| connection.connected.load(Ordering::Relaxed))
    }

    fn update_gauge(&self) {
        let connected = self
            .connections
            .lock()
            .expect("connections lock")
            .values()
            .filter(|connection| connection.connected.load(Ordering::Relaxed))
            .count();
        self.connected_gauge.set(connected as i64);
    }

    /// A connected scheduler, round robin, skipping `avoid` when another exists.
    fn pick(&self, avoid: Option<&str>) -> Option<Arc<Connection>> {
        let connections = self.connections.lock().expect("connections lock");
        let live: Vec<&Arc<Connection>> = connections
            .values()
            .filter(|connection| connection.connected.load(Ordering::Relaxed))
            .collect();
        if live.is_empty() {
            return None;
        }
        let preferred: Vec<&&Arc<Connection>> = live
            .iter()
            .filter(|connection| Some(connection.address.as_str()) != avoid)
            .collect();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if preferred.is_empty() {
            return Some(live[start % live.len()].clone());
        }
        Some((*preferred[start % preferred.len()]).clone())
    }

    /// Queues one attempt of a sub-query through a scheduler. The returned
    /// guard cancels it at the scheduler if dropped before a result arrived.
    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        query_id: u64,
        tenant: &str,
        request: QueryRequest,
        forwarded_headers: Option<&[Header]>,
        deadline: Instant,
        avoid: Option<&str>,
    ) -> (
        EnqueueAnswer,
        Option<RemoteGuard>,
        Option<oneshot::Receiver<Outcome>>,
    ) {
        let Some(connection) = self.pick(avoid) else {
            return (
                EnqueueAnswer::TryElsewhere("no query-scheduler is connected".into()),
                None,
                None,
            );
        };
        let Some(sender) = connection.sender.lock().expect("sender lock").clone() else {
            return (
                EnqueueAnswer::TryElsewhere(format!(
                    "query-scheduler {} disconnected",
                    connection.address
                )),
                None,
                None,
            );
        };
        let mut token = [0; TOKEN_BYTES];
        if let Err(error) = sluice_tls::fill_random(&mut token) {
            return (EnqueueAnswer::TryElsewhere(error), None, None);
        }
        let (guard, outcome, ack) = self.register(query_id, tenant, token, &connection, &sender);
        let enqueue = frontend_message(FrontendMessage::Enqueue(EnqueueRequest {
            query_id,
            tenant: tenant.to_owned(),
            request: Some(request),
            deadline_remaining_ms: deadline
                .saturating_duration_since(self.clock.now())
                .as_millis() as i64,
            forwarded_headers: forwarded_headers
                .map(<[Header]>::to_vec)
                .unwrap_or_default(),
            result_token: token.to_vec(),
        }));
        if sender.send(enqueue).await.is_err() {
            connection.acks.lock().expect("acks lock").remove(&query_id);
            return (
                EnqueueAnswer::TryElsewhere(format!(
                    "query-scheduler {} disconnected",
                    connection.address
                )),
                Some(guard),
                None,
            );
        }
        let answer = match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(EnqueueAnswer::Queued)) => EnqueueAnswer::Queued,
            Ok(Ok(refused)) => {
                // Never queued: nothing to cancel at the scheduler.
                guard.disarm();
                return (refused, Some(guard), None);
            }
            Ok(Err(_)) => EnqueueAnswer::TryElsewhere(format!(
                "query-scheduler {} went away",
                connection.address
            )),
            Err(_) => {
                EnqueueAnswer::TryElsewhere("timed out waiting for the query-scheduler".into())
            }
        };
        (answer, Some(guard), Some(outcome))
    }

    /// Registers `query_id` as pending on `connection`: where its result
    /// and the scheduler's acknowledgement will arrive, and the guard that
    /// cancels it at the scheduler when dropped unanswered.
    fn register(
        self: &Arc<Self>,
        query_id: u64,
        tenant: &str,
        token: [u8; TOKEN_BYTES],
        connection: &Arc<Connection>,
        sender: &mpsc::Sender<FrontendToScheduler>,
    ) -> (
        RemoteGuard,
        oneshot::Receiver<Outcome>,
        oneshot::Receiver<EnqueueAnswer>,
    ) {
        let (reply, outcome) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(
            query_id,
            RemotePending {
                tenant: tenant.to_owned(),
                token,
                reply,
                scheduler: connection.address.clone(),
            },
        );
        let guard = RemoteGuard {
            pool: self.clone(),
            query_id,
            sender: sender.clone(),
            scheduler: connection.address.clone(),
        };
        let (ack_sender, ack) = oneshot::channel();
        connection
            .acks
            .lock()
            .expect("acks lock")
            .insert(query_id, ack_sender);
        (guard, outcome, ack)
    }

    /// Delivers a result a querier (or scheduler) sent us. It must bring
    /// the query's token, which only the querier handed the query (and the
    /// scheduler that handed it) know, and name the tenant that asked: a
    /// result from anyone else, or for another tenant, is refused and
    /// counted.
    pub(crate) fn deliver(
        &self,
        tenant: &str,
        token: &[u8],
        result: QueryResult,
    ) -> Result<(), tonic::Status> {
        let mut pending = self.pending.lock().expect("pending lock");
        let Some(entry) = pending.get(&result.query_id) else {
            // Answered already (a retry won), or its client left.
            return Ok(());
        };
        if !same_token(&entry.token, token) {
            drop(pending);
            self.refused_results.with_label_values(&["token"]).inc();
            tracing::warn!(
                query_id = result.query_id,
                "result without the query's token refused: its sender was not handed the query"
            );
            return Err(tonic::Status::permission_denied(
                "result refused: the sender was not handed this query",
            ));
        }
        if entry.tenant != tenant {
            drop(pending);
            self.refused_results.with_label_values(&["tenant"]).inc();
            tracing::warn!(query_id = result.query_id, got = %tenant, "result for the wrong tenant refused");
            return Err(tonic::Status::permission_denied(
                "result tenant does not match the query",
            ));
        }
        let entry = pending.remove(&result.query_id).expect("present");
        drop(pending);
        let _ = entry.reply.send(Outcome::Answered(result.checked()));
        Ok(())
    }

    /// A scheduler stream ended: its unanswered enqueues go elsewhere, and
    /// sub-queries queued there are failed so their requests retry them.
    fn connection_lost(&self, connection: &Connection) {
        connection.connected.store(false, Ordering::Relaxed);
        connection.sender.lock().expect("sender lock").take();
        let acks: Vec<_> = connection.acks.lock().expect("acks lock").drain().collect();
        for (_, ack) in acks {
            let _ = ack.send(EnqueueAnswer::TryElsewhere(format!(
                "lost the stream to query-scheduler {}",
                connection.address
            )));
        }
        let lost: Vec<RemotePending> = {
            let mut pending = self.pending.lock().expect("pending lock");
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, entry)| entry.scheduler == connection.address)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id))
                .collect()
        };
        for entry in lost {
            let _ = entry.reply.send(Outcome::QuerierLost);
        }
        self.update_gauge();
    }
}

/// Compares in time independent of where the tokens differ, so timing
/// does not leak a token byte by byte.
fn same_token(expected: &[u8; TOKEN_BYTES], given: &[u8]) -> bool {
    given.len() == TOKEN_BYTES
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Cancels an attempt at its scheduler unless its result already arrived.
pub(crate) struct RemoteGuard {
    pool: Arc<SchedulerPool>,
    query_id: u64,
    sender: mpsc::Sender<FrontendToScheduler>,
    scheduler: String,
}

impl RemoteGuard {
    pub(crate) fn scheduler(&self) -> &str {
        &self.scheduler
    }

    /// Forgets the attempt without telling the scheduler (it never queued it).
    fn disarm(&self) {
        self.pool
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.query_id);
    }
}

impl Drop for RemoteGuard {
    fn drop(&mut self) {
        let still_waiting = self
            .pool
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.query_id)
            .is_some();
        if still_waiting {
            // Best effort and never blocking: a full or closed stream means
            // the scheduler is busy or gone, and its deadline cleans up.
            let _ = self
                .sender
                .try_send(frontend_message(FrontendMessage::Cancel(CancelRequest {
                    query_id: self.query_id,
                })));
        }
    }
}

async fn connection_loop(
    pool: std::sync::Weak<SchedulerPool>,
    address: String,
    host: String,
    ready: oneshot::Receiver<Arc<Connection>>,
) {
    let Ok(connection) = ready.await else { return };
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong_pool) = pool.upgrade() else {
            return;
        };
        let frontend_address = strong_pool.frontend_address.clone();
        let channel = strong_pool.grpc.channel(&host, &address, |endpoint| {
            endpoint
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
        });
        drop(strong_pool);
        let run = match channel {
            Ok(channel) => run_connection(&connection, channel, frontend_address, &pool).await,
            Err(error) => Err(error),
        };
        match run {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(error) => tracing::debug!(%address, %error, "query-scheduler stream failed"),
        }
        let Some(strong_pool) = pool.upgrade() else {
            return;
        };
        strong_pool.connection_lost(&connection);
        drop(strong_pool);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn run_connection(
    connection: &Arc<Connection>,
    channel: tonic::transport::Channel,
    frontend_address: String,
    pool: &std::sync::Weak<SchedulerPool>,
) -> Result<(), String> {
    let address = &connection.address;
    let mut client = SchedulerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (sender, receiver) = mpsc::channel(1024);
    sender
        .send(frontend_message(FrontendMessage::Hello(FrontendHello {
            frontend_address,
        })))
        .await
        .map_err(|_| "stream closed".to_owned())?;
    let mut answers = client
        .frontend_loop(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .map_err(|status| status.to_string())?
        .into_inner();
    *connection.sender.lock().expect("sender lock") = Some(sender);
    connection.connected.store(true, Ordering::Relaxed);
    if let Some(pool) = pool.upgrade() {
        pool.update_gauge();
    }
    tracing::info!(%address, "connected to query-scheduler");
    while let Some(answer) = answers.next().await {
        let answer = answer.map_err(|status| status.to_string())?;
        let Some(ack) = connection
            .acks
            .lock()
            .expect("acks lock")
            .remove(&answer.query_id)
        else {
            continue;
        };
        let status = EnqueueStatus::try_from(answer.status).unwrap_or(EnqueueStatus::Error);
        let _ = ack.send(match status {
            EnqueueStatus::Ok => EnqueueAnswer::Queued,
            EnqueueStatus::TooManyRequests => EnqueueAnswer::TooManyRequests,
            EnqueueStatus::ShuttingDown => {
                EnqueueAnswer::TryElsewhere(format!("query-scheduler {address} is shutting down"))
            }
            EnqueueStatus::Error => EnqueueAnswer::TryElsewhere(answer.error),
        });
    }
    Ok(())
}
