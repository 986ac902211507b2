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

/// A float sample; the same message in 1.0 and 2.0: `double value = 1;
/// int64 timestamp = 2;`.
///
/// Written by hand because prost's derived encoder leaves out a double
/// equal to 0.0, and -0.0 is: the sign of a stored -0 would be lost. Go's
/// protobuf, which Prometheus sends with, compares the bits instead; so
/// does this.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub timestamp: i64,
}

impl prost::Message for Sample {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        if self.value.to_bits() != 0 {
            prost::encoding::double::encode(1, &self.value, buf);
        }
        if self.timestamp != 0 {
            prost::encoding::int64::encode(2, &self.timestamp, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::double::merge(wire_type, &mut self.value, buf, ctx),
            2 => prost::encoding::int64::merge(wire_type, &mut self.timestamp, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let value = match self.value.to_bits() {
            0 => 0,
            _ => prost::encoding::double::encoded_len(1, &self.value),
        };
        let timestamp = match self.timestamp {
            0 => 0,
            _ => prost::encoding::int64::encoded_len(2, &self.timestamp),
        };
        value + timestamp
    }

    fn clear(&mut self) {
        *self = Sample::default();
    }
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
