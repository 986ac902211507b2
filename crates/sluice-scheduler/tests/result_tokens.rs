//! A result reaches a frontend only from the querier the scheduler handed
//! the query to: a real frontend and scheduler over gRPC, a scripted
//! querier, and an impostor who knows the query id and the tenant (say, by
//! watching logs) but was never handed the task.

use std::time::Duration;

use futures_util::StreamExt;
use sluice_frontend::{Frontend, FrontendConfig};
use sluice_proto::frontend_results::frontend_results_client::FrontendResultsClient;
use sluice_proto::queue_owner::queue_owner_client::QueueOwnerClient;
use sluice_proto::{
    ApiResponse, InstantQuery, OwnerMessage, QuerierHello, QuerierMessage, QuerierToOwner,
    QueryData, QueryKind, QueryRequest, QueryResult, ResponseData, ResultReport, ResultType,
};
use sluice_scheduler::{Scheduler, SchedulerConfig};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

async fn serve(routes: tonic::service::Routes, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
}

async fn channel(address: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn answer(marker: &str) -> ApiResponse {
    ApiResponse::success(ResponseData::Query(QueryData {
        result_type: ResultType::String as i32,
        string_value: marker.to_owned(),
        ..QueryData::default()
    }))
}

fn refused_results(registry: &prometheus::Registry, reason: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "sluice_frontend_refused_results_total")
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "reason" && label.value() == reason)
        })
        .map(|metric| metric.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_from_anyone_but_the_querier_handed_the_query_is_refused() {
    let scheduler = Scheduler::new(SchedulerConfig::default(), &prometheus::Registry::new());
    let scheduler_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheduler_address = scheduler_listener.local_addr().unwrap().to_string();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(scheduler.frontend_service());
    routes.add_service(scheduler.querier_service());
    serve(routes.routes(), scheduler_listener).await;

    let registry = prometheus::Registry::new();
    let frontend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let frontend_address = frontend_listener.local_addr().unwrap().to_string();
    let frontend = Frontend::new(
        FrontendConfig {
            scheduler_addresses: vec![scheduler_address.clone()],
            advertised_address: frontend_address.clone(),
            scheduler_dns_refresh: Duration::from_millis(100),
            ..FrontendConfig::default()
        },
        &registry,
    )
    .unwrap();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(frontend.results_service());
    serve(routes.routes(), frontend_listener).await;

    // The scripted querier: one worker stream to the scheduler.
    let (to_scheduler, inbound) = tokio::sync::mpsc::channel(4);
    to_scheduler
        .send(QuerierToOwner {
            message: Some(QuerierMessage::Hello(QuerierHello {
                querier_id: "honest".to_owned(),
                max_concurrency: 1,
                not_ready: false,
            })),
        })
        .await
        .unwrap();
    let mut tasks = QueueOwnerClient::new(channel(&scheduler_address).await)
        .process(ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    while !frontend.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let asking = frontend.clone();
    let client = tokio::spawn(async move {
        let request = QueryRequest {
            kind: Some(QueryKind::Instant(InstantQuery {
                query: "up".to_owned(),
                ..InstantQuery::default()
            })),
        };
        asking.execute("tenant-a", request).await
    });
    let task = match tasks.next().await.unwrap().unwrap().message {
        Some(OwnerMessage::Task(task)) => task,
        other => panic!("expected a task, got {other:?}"),
    };
    assert_eq!(task.tenant, "tenant-a");
    assert_eq!(task.frontend_address, frontend_address);
    assert_eq!(task.result_token.len(), 16, "the task carries its token");

    let mut results = FrontendResultsClient::new(channel(&frontend_address).await);
    let report = |tenant: &str, token: Vec<u8>, marker: &str| ResultReport {
        tenant: tenant.to_owned(),
        result: Some(QueryResult {
            query_id: task.query_id,
            response: Some(answer(marker)),
            ..QueryResult::default()
        }),
        result_token: token,
    };
    // The impostor knows the id and the tenant, not the token.
    let mut guessed = task.result_token.clone();
    guessed[0] ^= 1;
    for token in [Vec::new(), guessed] {
        let refused = results
            .query_result(report("tenant-a", token, "forged"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }
    // Over the pipelined stream too.
    let (sender, stream) = tokio::sync::mpsc::channel(1);
    sender
        .send(report("tenant-a", vec![7; 16], "forged"))
        .await
        .unwrap();
    let mut acks = results
        .result_stream(ReceiverStream::new(stream))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.next().await.unwrap().unwrap();
    assert!(ack.error.contains("not handed"), "{}", ack.error);
    // The right token for another tenant is refused as well.
    let refused = results
        .query_result(report("tenant-b", task.result_token.clone(), "forged"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused_results(&registry, "token"), 3.0);
    assert_eq!(refused_results(&registry, "tenant"), 1.0);

    // The querier that was handed it answers, and its answer is the one.
    results
        .query_result(report("tenant-a", task.result_token.clone(), "honest"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    match response.data {
        Some(ResponseData::Query(data)) => assert_eq!(data.string_value, "honest"),
        other => panic!("unexpected answer {other:?}: {}", response.error),
    }
    drop(to_scheduler);
}
