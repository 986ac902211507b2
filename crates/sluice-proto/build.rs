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
    tonic_build::manual::Builder::new().compile(&[queue_owner]);
}
