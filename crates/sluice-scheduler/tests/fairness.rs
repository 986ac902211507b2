//! Fairness at a real scheduler over gRPC, with a scripted frontend and
//! scripted queriers: the querier is the deterministic slow executor, so the
//! order (and, with slow work, the timing) of service is exact.

use std::time::Duration;

use futures_util::StreamExt;
use sluice_proto::queue_owner::queue_owner_client::QueueOwnerClient;
use sluice_proto::scheduler::scheduler_client::SchedulerClient;
use sluice_proto::{
    EnqueueRequest, EnqueueStatus, FrontendHello, FrontendMessage, FrontendToScheduler,
    InstantQuery, OwnerMessage, QuerierHello, QuerierMessage, QuerierToOwner, QueryKind,
    QueryRequest, QueryResult,
};
use sluice_scheduler::{Scheduler, SchedulerConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn start_scheduler(config: SchedulerConfig) -> (String, Scheduler) {
    start_scheduler_with(config, &prometheus::Registry::new()).await
}

async fn start_scheduler_with(
    config: SchedulerConfig,
    registry: &prometheus::Registry,
) -> (String, Scheduler) {
    let scheduler = Scheduler::new(config, registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = scheduler.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server.frontend_service())
            .add_service(server.querier_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (address, scheduler)
}

fn request(tenant: &str, query_id: u64) -> FrontendToScheduler {
    FrontendToScheduler {
        message: Some(FrontendMessage::Enqueue(EnqueueRequest {
            query_id,
            tenant: tenant.to_owned(),
            request: Some(QueryRequest {
                kind: Some(QueryKind::Instant(InstantQuery {
                    query: format!("up + {query_id}"),
                    ..InstantQuery::default()
                })),
            }),
            deadline_remaining_ms: 60_000,
            ..EnqueueRequest::default()
        })),
    }
}

type Answers = tonic::Streaming<sluice_proto::SchedulerToFrontend>;
type Tasks = tonic::Streaming<sluice_proto::OwnerToQuerier>;

async fn connect(address: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A scripted frontend's stream; nobody listens at its address, so a
/// scripted querier is the only thing that could deliver results.
async fn frontend_stream(
    channel: &tonic::transport::Channel,
    capacity: usize,
) -> (mpsc::Sender<FrontendToScheduler>, Answers) {
    let (to_scheduler, outbound) = mpsc::channel(capacity);
    to_scheduler
        .send(FrontendToScheduler {
            message: Some(FrontendMessage::Hello(FrontendHello {
                frontend_address: "127.0.0.1:1".to_owned(),
            })),
        })
        .await
        .unwrap();
    let answers = SchedulerClient::new(channel.clone())
        .frontend_loop(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    (to_scheduler, answers)
}

/// A scripted querier worker's stream.
async fn querier_stream(
    channel: &tonic::transport::Channel,
    querier_id: &str,
) -> (mpsc::Sender<QuerierToOwner>, Tasks) {
    let (to_owner, inbound) = mpsc::channel(4);
    to_owner
        .send(QuerierToOwner {
            message: Some(QuerierMessage::Hello(QuerierHello {
                querier_id: querier_id.to_owned(),
                max_concurrency: 1,
                // A querier without a limiter: ready after every result.
                not_ready: false,
            })),
        })
        .await
        .unwrap();
    let tasks = QueueOwnerClient::new(channel.clone())
        .process(ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    (to_owner, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenant_is_served_within_a_bounded_number_of_dequeues_beside_a_flood() {
    let (address, scheduler) = start_scheduler(SchedulerConfig::default()).await;
    let channel = connect(&address).await;

    // The frontend: the flood enqueues 150 (its queue holds 100), then the
    // quiet tenant asks 5 times.
    let (to_scheduler, mut answers) = frontend_stream(&channel, 512).await;
    let mut statuses = std::collections::HashMap::new();
    for query_id in 0..150 {
        to_scheduler.send(request("flood", query_id)).await.unwrap();
    }
    for query_id in 1000..1005 {
        to_scheduler.send(request("quiet", query_id)).await.unwrap();
    }
    for _ in 0..155 {
        let answer = answers.next().await.unwrap().unwrap();
        statuses.insert(answer.query_id, answer.status());
    }
    let rejected_flood = (0..150)
        .filter(|id| statuses[id] == EnqueueStatus::TooManyRequests)
        .count();
    assert_eq!(rejected_flood, 50, "the flood is bounded at 100 queued");
    for id in 1000..1005 {
        assert_eq!(
            statuses[&id],
            EnqueueStatus::Ok,
            "the quiet tenant is never refused"
        );
    }

    // The querier: one worker, answering each task before taking the next.
    let (to_owner, mut tasks) = querier_stream(&channel, "only").await;
    let mut served = Vec::new();
    for _ in 0..105 {
        let message = tokio::time::timeout(Duration::from_secs(10), tasks.next())
            .await
            .expect("a task")
            .unwrap()
            .unwrap();
        let Some(OwnerMessage::Task(task)) = message.message else {
            panic!("expected a task");
        };
        served.push((task.tenant.clone(), task.query_id));
        to_owner
            .send(QuerierToOwner {
                message: Some(QuerierMessage::Result(QueryResult {
                    query_id: task.query_id,
                    current_concurrency: 1,
                    desired_concurrency: 1,
                    ..QueryResult::default()
                })),
            })
            .await
            .unwrap();
    }
    let quiet_positions: Vec<usize> = served
        .iter()
        .enumerate()
        .filter(|(_, (tenant, _))| tenant == "quiet")
        .map(|(position, _)| position)
        .collect();
    assert_eq!(quiet_positions.len(), 5);
    // Round robin: the quiet tenant's k-th request is served by dequeue 2k+1
    // at the latest, however long the flood's queue is.
    for (k, position) in quiet_positions.iter().enumerate() {
        assert!(
            *position <= 2 * k + 1,
            "quiet request {k} served at dequeue {position}: {served:?}"
        );
    }
    // FIFO within each tenant.
    let flood_order: Vec<u64> = served
        .iter()
        .filter(|(tenant, _)| tenant == "flood")
        .map(|(_, id)| *id)
        .collect();
    assert!(flood_order.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(scheduler.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_removes_a_queued_sub_query_at_once() {
    let (address, scheduler) = start_scheduler(SchedulerConfig::default()).await;
    let channel = connect(&address).await;
    let (to_scheduler, mut answers) = frontend_stream(&channel, 16).await;
    to_scheduler.send(request("tenant", 7)).await.unwrap();
    assert_eq!(
        answers.next().await.unwrap().unwrap().status(),
        EnqueueStatus::Ok
    );
    assert_eq!(scheduler.queued(), 1);
    to_scheduler
        .send(FrontendToScheduler {
            message: Some(FrontendMessage::Cancel(sluice_proto::CancelRequest {
                query_id: 7,
            })),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while scheduler.queued() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancel did not remove the sub-query"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A frontend that goes away takes its queued sub-queries with it.
    to_scheduler.send(request("tenant", 8)).await.unwrap();
    assert_eq!(
        answers.next().await.unwrap().unwrap().status(),
        EnqueueStatus::Ok
    );
    drop(to_scheduler);
    drop(answers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while scheduler.queued() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a gone frontend's work stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_over_its_concurrency_is_backed_off_while_others_are_served() {
    let registry = prometheus::Registry::new();
    let (address, _scheduler) = start_scheduler_with(SchedulerConfig::default(), &registry).await;
    let backoffs = || {
        registry
            .gather()
            .iter()
            .find(|family| family.name() == "sluice_flow_control_backoffs_total")
            .map(|family| family.get_metric()[0].get_counter().get_value())
            .unwrap_or(0.0)
    };
    let channel = connect(&address).await;
    let (to_scheduler, mut answers) = frontend_stream(&channel, 16).await;
    // Only the busy querier is there for the first task.
    let (busy_sender, mut busy_tasks) = querier_stream(&channel, "busy").await;
    to_scheduler.send(request("tenant", 1)).await.unwrap();
    assert_eq!(
        answers.next().await.unwrap().unwrap().status(),
        EnqueueStatus::Ok
    );
    let first = busy_tasks.next().await.unwrap().unwrap();
    assert!(matches!(first.message, Some(OwnerMessage::Task(ref task)) if task.query_id == 1));
    // A second querier joins; then the busy one answers saying it runs more
    // than it wants (flow control), so the next task must go to the other.
    let (idle_sender, mut idle_tasks) = querier_stream(&channel, "idle").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    busy_sender
        .send(QuerierToOwner {
            message: Some(QuerierMessage::Result(QueryResult {
                query_id: 1,
                current_concurrency: 3,
                desired_concurrency: 1,
                ..QueryResult::default()
            })),
        })
        .await
        .unwrap();
    to_scheduler.send(request("tenant", 2)).await.unwrap();
    assert_eq!(
        answers.next().await.unwrap().unwrap().status(),
        EnqueueStatus::Ok
    );
    let second = tokio::time::timeout(Duration::from_secs(5), idle_tasks.next())
        .await
        .expect("the idle querier is served")
        .unwrap()
        .unwrap();
    assert!(matches!(second.message, Some(OwnerMessage::Task(ref task)) if task.query_id == 2));
    // The busy querier's stream counts its backoff after handing its
    // result on, and the idle querier was already waiting for work: the
    // second task can reach it before the count is made.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backoffs() < 1.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        backoffs(),
        1.0,
        "the over-limit querier was backed off once"
    );
    // A result within the querier's limit costs no backoff.
    idle_sender
        .send(QuerierToOwner {
            message: Some(QuerierMessage::Result(QueryResult {
                query_id: 2,
                current_concurrency: 1,
                desired_concurrency: 1,
                ..QueryResult::default()
            })),
        })
        .await
        .unwrap();
    to_scheduler.send(request("tenant", 3)).await.unwrap();
    assert_eq!(
        answers.next().await.unwrap().unwrap().status(),
        EnqueueStatus::Ok
    );
    // Either querier may take it: the busy one's pause (10-50 ms) may be
    // over by now on a slow machine (this failed once in CI). What counts
    // is that the result within the limit cost no backoff.
    let third = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            task = idle_tasks.next() => task,
            task = busy_tasks.next() => task,
        }
    })
    .await
    .expect("served again")
    .unwrap()
    .unwrap();
    assert!(matches!(third.message, Some(OwnerMessage::Task(ref task)) if task.query_id == 3));
    assert_eq!(backoffs(), 1.0);
}

/// Runs one scripted worker stream of `querier_id`: it reports every task it
/// is handed on `handed`, holds the `slow` tenant's tasks for `hold` and
/// answers the others at once.
fn spawn_scripted_worker(
    channel: tonic::transport::Channel,
    querier_id: &'static str,
    slow: &'static str,
    hold: Duration,
    handed: mpsc::UnboundedSender<(String, u64, tokio::time::Instant)>,
) {
    tokio::spawn(async move {
        let (to_owner, mut tasks) = querier_stream(&channel, querier_id).await;
        while let Some(Ok(message)) = tasks.next().await {
            let Some(OwnerMessage::Task(task)) = message.message else {
                continue;
            };
            let _ = handed.send((
                task.tenant.clone(),
                task.query_id,
                tokio::time::Instant::now(),
            ));
            if task.tenant == slow {
                tokio::time::sleep(hold).await;
            }
            let result = QuerierToOwner {
                message: Some(QuerierMessage::Result(QueryResult {
                    query_id: task.query_id,
                    ..QueryResult::default()
                })),
            };
            if to_owner.send(result).await.is_err() {
                return;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_holding_the_slots_with_slow_work_does_not_delay_another() {
    const WORKERS: usize = 4;
    const HOLD: Duration = Duration::from_secs(2);
    let registry = prometheus::Registry::new();
    let (address, _scheduler) = start_scheduler_with(SchedulerConfig::default(), &registry).await;
    let channel = connect(&address).await;
    let (handed_sender, mut handed) = mpsc::unbounded_channel();
    for _ in 0..WORKERS {
        spawn_scripted_worker(
            channel.clone(),
            "slow-querier",
            "flood",
            HOLD,
            handed_sender.clone(),
        );
    }
    while connected_workers(&registry) < WORKERS as f64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The flood queues far more slow work than there are workers.
    let (to_scheduler, mut answers) = frontend_stream(&channel, 512).await;
    for query_id in 0..40 {
        to_scheduler.send(request("flood", query_id)).await.unwrap();
        assert_eq!(
            answers.next().await.unwrap().unwrap().status(),
            EnqueueStatus::Ok
        );
    }
    // It gets every slot but the reserved one.
    for _ in 0..WORKERS - 1 {
        let (tenant, _, _) = handed.recv().await.unwrap();
        assert_eq!(tenant, "flood");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        handed.try_recv().is_err(),
        "the flood took the reserved slot"
    );
    // The quiet tenant, one query at a time, is served at once each time,
    // not after a flood task ends (2 s): old round robin made it wait that.
    for query_id in 1000..1003 {
        let sent = tokio::time::Instant::now();
        to_scheduler.send(request("quiet", query_id)).await.unwrap();
        assert_eq!(
            answers.next().await.unwrap().unwrap().status(),
            EnqueueStatus::Ok
        );
        let (tenant, id, at) = tokio::time::timeout(HOLD * 2, handed.recv())
            .await
            .expect("the quiet query is handed out")
            .unwrap();
        assert_eq!((tenant.as_str(), id), ("quiet", query_id));
        let waited = at - sent;
        assert!(
            waited < HOLD / 4,
            "quiet query {query_id} waited {waited:?} beside the flood"
        );
        // Its result frees the slot before the next quiet query.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The flood still progresses on the slots it holds.
    let (tenant, _, _) = tokio::time::timeout(HOLD * 2, handed.recv())
        .await
        .expect("the flood is served on")
        .unwrap();
    assert_eq!(tenant, "flood");
}

fn connected_workers(registry: &prometheus::Registry) -> f64 {
    registry
        .gather()
        .iter()
        .find(|family| family.name() == "sluice_connected_querier_workers")
        .map_or(0.0, |family| family.get_metric()[0].get_gauge().get_value())
}
