//! Generates the gRPC service glue from a Rust description of the services.
//!
//! The messages are hand-written prost structs in `src/messages.rs`, so the
//! build needs no `protoc`: a newcomer's `cargo run` works on a bare machine.

fn main() {
    let codec = "tonic_prost::ProstCodec";
    let queue_owner = tonic_build::manual::Service::builder()
        .name("QueueOwner")
        .package("sluice.v1")
        .comment("Served by whoever holds a tenant queue (a frontend, later a scheduler). One bidirectional stream per querier worker: the worker says it is ready, the owner hands it one task, the worker answers with the result.")
        .method(
            tonic_build::manual::Method::builder()
                .name("process")
                .route_name("Process")
                .input_type("crate::QuerierToOwner")
                .output_type("crate::OwnerToQuerier")
                .codec_path(codec)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    let scheduler = tonic_build::manual::Service::builder()
        .name("Scheduler")
        .package("sluice.v1")
        .comment("Served by the query-scheduler to frontends: one pipelined stream per frontend carrying enqueues and cancels, each answered by query id.")
        .method(
            tonic_build::manual::Method::builder()
                .name("frontend_loop")
                .route_name("FrontendLoop")
                .input_type("crate::FrontendToScheduler")
                .output_type("crate::SchedulerToFrontend")
                .codec_path(codec)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    let frontend_results = tonic_build::manual::Service::builder()
        .name("FrontendResults")
        .package("sluice.v1")
        .comment("Served by frontends: results of sub-queries queued through a scheduler come here straight from the querier, never through the scheduler.")
        .method(
            tonic_build::manual::Method::builder()
                .name("query_result")
                .route_name("QueryResult")
                .input_type("crate::ResultReport")
                .output_type("crate::ResultAck")
                .codec_path(codec)
                .build(),
        )
        .method(
            tonic_build::manual::Method::builder()
                .name("result_stream")
                .route_name("ResultStream")
                .input_type("crate::ResultReport")
                .output_type("crate::ResultAck")
                .codec_path(codec)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[queue_owner, scheduler, frontend_results]);
}
