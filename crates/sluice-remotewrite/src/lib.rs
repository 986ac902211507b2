//! Prometheus remote write, the protocol senders push samples with: 1.0
//! (`prometheus.WriteRequest`) and 2.0 (`io.prometheus.write.v2.Request`,
//! chosen by `Content-Type`), both as protobuf in snappy's block format.
//!
//! [`decode`] turns a body into a [`WriteBatch`] or refuses it whole (415,
//! 413 or 400, as Prometheus and Mimir answer); [`validate_labels`] and
//! [`validate_timestamp`] then refuse single series with Mimir's messages,
//! so that a batch with some bad series stores every good one. Nothing here
//! knows about storage: the store applies what passes.
//!
//! Every decoder of outside bytes here is fed random and mutated bodies by
//! property tests; none panics.

mod decode;
pub mod proto;
mod validate;

pub use decode::{
    DECOMPRESSED_FACTOR, DecodeError, IncomingSeries, Protocol, WriteBatch, decode, protocol,
};
pub use proto::{Label, Sample};
pub use validate::{
    Limits, METRIC_NAME, Reason, Refusal, refuse_histogram, series_text, validate_labels,
    validate_timestamp,
};

/// `Content-Type` of a 1.0 request.
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
/// `Content-Type` of a 2.0 request.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// Encodes a protobuf message as a remote-write body (snappy's block
/// format), as a sender does: for tests, benchmarks and self-scraping.
pub fn encode(message: &impl prost::Message) -> Vec<u8> {
    let raw = message.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input below 4 GiB")
}

#[cfg(test)]
mod tests;
