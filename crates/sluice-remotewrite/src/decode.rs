//! From an HTTP body to a [`WriteBatch`]: the protocol chosen by
//! `Content-Type` (as Prometheus's receiver chooses it), the size checked
//! before anything is allocated, snappy's block format undone, the protobuf
//! decoded, and 2.0's symbol references resolved. Any failure refuses the
//! whole request, so nothing of a broken request is stored.

use prost::Message;

use crate::proto::{Label, RequestV2, Sample, TimeSeriesV2, WriteRequest};

/// Which remote-write message the body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// 1.0: `prometheus.WriteRequest`.
    V1,
    /// 2.0: `io.prometheus.write.v2.Request`.
    V2,
}

/// One series of a request, labels as sent (not yet validated or sorted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IncomingSeries {
    pub labels: Vec<Label>,
    pub samples: Vec<Sample>,
    /// Timestamps of native-histogram samples, which sluice refuses.
    pub histograms: Vec<i64>,
    pub exemplars: usize,
}

/// A decoded request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<IncomingSeries>,
    /// Metadata entries (1.0) or series carrying metadata (2.0): accepted,
    /// dropped, counted.
    pub metadata: usize,
}

impl WriteBatch {
    pub fn exemplars(&self) -> usize {
        self.series.iter().map(|series| series.exemplars).sum()
    }
}

/// Why a body was refused; each kind has the status Prometheus or Mimir
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(
        "the incoming push request has been rejected because its message size of {size} bytes is larger than the allowed limit of {limit} bytes (err-mimir-distributor-max-write-message-size)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("snappy decode error: {0}")]
    Snappy(String),
    #[error("protobuf decode error: {0}")]
    Protobuf(String),
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// The HTTP status: 415 for a media type or encoding sluice does not
    /// speak, 413 for a body over the limit (as Mimir), else 400.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::UnsupportedMediaType(_) => 415,
            DecodeError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

const PROTOBUF: &str = "application/x-protobuf";

/// The protocol of a request from its `Content-Type` and `Content-Encoding`.
/// No content type means 1.0, as for senders that predate 2.0.
pub fn protocol(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<Protocol, DecodeError> {
    match content_encoding.map(str::trim) {
        None | Some("") => {}
        Some(encoding) if encoding.eq_ignore_ascii_case("snappy") => {}
        Some(other) => {
            return Err(DecodeError::UnsupportedMediaType(format!(
                "unsupported compression: {other}. Only snappy is supported"
            )));
        }
    }
    let Some(content_type) = content_type.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(Protocol::V1);
    };
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.eq_ignore_ascii_case(PROTOBUF) {
        return Err(DecodeError::UnsupportedMediaType(format!(
            "expected {PROTOBUF} as the first (media) part, got {content_type} content-type"
        )));
    }
    let mut chosen = Protocol::V1;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        chosen = match value.trim().trim_matches('"') {
            "prometheus.WriteRequest" => Protocol::V1,
            "io.prometheus.write.v2.Request" => Protocol::V2,
            other => {
                return Err(DecodeError::UnsupportedMediaType(format!(
                    "unknown remote write protobuf message {other}, supported: prometheus.WriteRequest, io.prometheus.write.v2.Request"
                )));
            }
        };
    }
    Ok(chosen)
}

/// How much larger than the body its decompressed form may be. Remote
/// write bodies compress about 3 to 6 times; 8 leaves room without letting a
/// small body claim gigabytes.
pub const DECOMPRESSED_FACTOR: usize = 8;

/// Decodes a snappy-compressed body of `protocol`, refusing one over
/// `max_bytes` (compressed) or `max_bytes * DECOMPRESSED_FACTOR`
/// (decompressed, read from snappy's header before allocating).
pub fn decode(
    protocol: Protocol,
    body: &[u8],
    max_bytes: usize,
) -> Result<WriteBatch, DecodeError> {
    if body.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    let decoded_length =
        snap::raw::decompress_len(body).map_err(|error| DecodeError::Snappy(error.to_string()))?;
    let decoded_limit = max_bytes.saturating_mul(DECOMPRESSED_FACTOR);
    if decoded_length > decoded_limit {
        return Err(DecodeError::TooLarge {
            size: decoded_length,
            limit: decoded_limit,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|error| DecodeError::Snappy(error.to_string()))?;
    match protocol {
        Protocol::V1 => decode_v1(&raw),
        Protocol::V2 => decode_v2(&raw),
    }
}

fn decode_v1(raw: &[u8]) -> Result<WriteBatch, DecodeError> {
    let request =
        WriteRequest::decode(raw).map_err(|error| DecodeError::Protobuf(error.to_string()))?;
    let series = request
        .timeseries
        .into_iter()
        .map(|series| IncomingSeries {
            labels: series.labels,
            samples: series.samples,
            histograms: series.histograms.iter().map(|h| h.timestamp).collect(),
            exemplars: series.exemplars.len(),
        })
        .collect();
    Ok(WriteBatch {
        series,
        metadata: request.metadata.len(),
    })
}

fn decode_v2(raw: &[u8]) -> Result<WriteBatch, DecodeError> {
    let request =
        RequestV2::decode(raw).map_err(|error| DecodeError::Protobuf(error.to_string()))?;
    if request
        .symbols
        .first()
        .is_some_and(|first| !first.is_empty())
    {
        return Err(DecodeError::Invalid(
            "symbols table must start with an empty string".into(),
        ));
    }
    let mut batch = WriteBatch::default();
    for (index, series) in request.timeseries.into_iter().enumerate() {
        batch.metadata += usize::from(series.metadata.is_some());
        batch
            .series
            .push(resolve_v2(&request.symbols, series, index)?);
    }
    Ok(batch)
}

fn resolve_v2(
    symbols: &[String],
    series: TimeSeriesV2,
    index: usize,
) -> Result<IncomingSeries, DecodeError> {
    if !series.labels_refs.len().is_multiple_of(2) {
        return Err(DecodeError::Invalid(format!(
            "series {index}: odd number of label references ({})",
            series.labels_refs.len()
        )));
    }
    let symbol = |reference: u32| {
        symbols.get(reference as usize).ok_or_else(|| {
            DecodeError::Invalid(format!(
                "series {index}: label reference {reference} outside the symbols table of {}",
                symbols.len()
            ))
        })
    };
    let mut labels = Vec::with_capacity(series.labels_refs.len() / 2);
    for pair in series.labels_refs.chunks_exact(2) {
        labels.push(Label {
            name: symbol(pair[0])?.clone(),
            value: symbol(pair[1])?.clone(),
        });
    }
    Ok(IncomingSeries {
        labels,
        samples: series.samples,
        histograms: series.histograms.iter().map(|h| h.timestamp).collect(),
        exemplars: series.exemplars.len(),
    })
}
