//! The remote-write messages as prost structs, written from the protocol's
//! specification (`prompb/types.proto`, `prompb/remote.proto` for 1.0 and
//! `prompb/io/prometheus/write/v2/types.proto` for 2.0). Only the fields
//! sluice reads are declared: prost skips the others, so a native
//! histogram's buckets are never decoded, only noticed by its timestamp.

/// 1.0: `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A float sample; the same message in 1.0 and 2.0.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Exemplars are counted and dropped; their contents are not read.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Exemplar {}

/// A native histogram: only its timestamp (field 15 in 1.0 and 2.0), for
/// the refusal message.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// Metadata is counted and dropped.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct MetricMetadata {}

/// 2.0: `io.prometheus.write.v2.Request`. Strings live once in `symbols`
/// (the first of which is ""), series refer to them by index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestV2 {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesV2 {
    /// Pairs of symbol indexes: name, value, name, value...
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<MetadataV2>,
}

/// 2.0 metadata: a type and references to help and unit.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct MetadataV2 {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}
