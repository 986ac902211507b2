use proptest::prelude::*;

use super::proto::{
    Exemplar, Histogram, MetadataV2, MetricMetadata, RequestV2, TimeSeries, TimeSeriesV2,
    WriteRequest,
};
use super::*;

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn v1_request() -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![label("__name__", "up"), label("job", "api")],
            samples: vec![
                Sample {
                    value: 1.0,
                    timestamp: 1000,
                },
                Sample {
                    value: f64::NAN,
                    timestamp: 2000,
                },
            ],
            exemplars: vec![Exemplar {}, Exemplar {}],
            histograms: vec![Histogram { timestamp: 3000 }],
        }],
        metadata: vec![MetricMetadata {}],
    }
}

#[test]
fn decodes_a_v1_request() {
    let body = encode(&v1_request());
    let batch = decode(Protocol::V1, &body, 1 << 20).unwrap();
    assert_eq!(batch.series.len(), 1);
    let series = &batch.series[0];
    assert_eq!(
        series.labels,
        vec![label("__name__", "up"), label("job", "api")]
    );
    assert_eq!(series.samples[0].timestamp, 1000);
    assert!(series.samples[1].value.is_nan());
    assert_eq!(series.histograms, vec![3000]);
    assert_eq!(batch.exemplars(), 2);
    assert_eq!(batch.metadata, 1);
}

#[test]
fn decodes_a_v2_request_resolving_symbols() {
    let request = v2_request();
    let batch = decode(Protocol::V2, &encode(&request), 1 << 20).unwrap();
    assert_eq!(
        batch.series[0].labels,
        vec![label("__name__", "up"), label("job", "a")]
    );
    assert_eq!(batch.series[0].samples[0].value, 5.0);
    assert_eq!((batch.exemplars(), batch.metadata), (1, 1));
}

fn v2_request() -> RequestV2 {
    RequestV2 {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "up".into(),
            "job".into(),
            "a".into(),
        ],
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![Sample {
                value: 5.0,
                timestamp: 7,
            }],
            histograms: vec![],
            exemplars: vec![Exemplar {}],
            metadata: Some(MetadataV2 {
                r#type: 1,
                help_ref: 0,
                unit_ref: 0,
            }),
        }],
    }
}

#[test]
fn v2_references_outside_the_symbols_are_refused() {
    let request = RequestV2 {
        symbols: vec!["".into(), "__name__".into()],
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![1, 9],
            ..TimeSeriesV2::default()
        }],
    };
    let error = decode(Protocol::V2, &encode(&request), 1 << 20).unwrap_err();
    assert_eq!(error.status(), 400);
    assert_eq!(
        error.to_string(),
        "series 0: label reference 9 outside the symbols table of 2"
    );
    let odd = RequestV2 {
        symbols: vec!["".into()],
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![0],
            ..TimeSeriesV2::default()
        }],
    };
    assert!(decode(Protocol::V2, &encode(&odd), 1 << 20).is_err());
}

#[test]
fn content_type_chooses_the_protocol() {
    assert_eq!(protocol(None, None), Ok(Protocol::V1));
    assert_eq!(
        protocol(Some(CONTENT_TYPE_V1), Some("snappy")),
        Ok(Protocol::V1)
    );
    assert_eq!(
        protocol(
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            None
        ),
        Ok(Protocol::V1)
    );
    assert_eq!(protocol(Some(CONTENT_TYPE_V2), None), Ok(Protocol::V2));
    for (content_type, encoding) in [
        (Some("application/json"), None),
        (Some("application/x-protobuf;proto=foo.Bar"), None),
        (Some(CONTENT_TYPE_V1), Some("gzip")),
    ] {
        let error = protocol(content_type, encoding).unwrap_err();
        assert_eq!(error.status(), 415, "{content_type:?} {encoding:?}");
    }
}

#[test]
fn bodies_over_the_limit_are_refused_before_decompressing() {
    let body = encode(&v1_request());
    let error = decode(Protocol::V1, &body, body.len() - 1).unwrap_err();
    assert_eq!(error.status(), 413);
    assert!(error.to_string().contains("larger than the allowed limit"));
    // A small body whose header claims a huge decompressed size.
    let mut claim = Vec::new();
    let mut length = 1u64 << 30;
    while length >= 0x80 {
        claim.push((length as u8) | 0x80);
        length >>= 7;
    }
    claim.push(length as u8);
    claim.extend_from_slice(&[0; 16]);
    let error = decode(Protocol::V1, &claim, 1 << 20).unwrap_err();
    assert_eq!(error.status(), 413);
}

#[test]
fn malformed_snappy_and_protobuf_are_400() {
    let error = decode(Protocol::V1, b"\xff\xff\xff\xff\xff\xff", 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::Snappy(_)), "{error}");
    let not_protobuf = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff\xff\x0f")
        .unwrap();
    let error = decode(Protocol::V1, &not_protobuf, 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::Protobuf(_)), "{error}");
    assert_eq!(error.status(), 400);
}

#[test]
fn invalid_utf8_in_a_label_refuses_the_request() {
    // Field 1 (timeseries) holding field 1 (label) holding field 2 (value).
    let raw = [0x0a, 0x06, 0x0a, 0x04, 0x12, 0x02, 0xff, 0xfe];
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let error = decode(Protocol::V1, &body, 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::Protobuf(_)), "{error}");
}

fn refusal(labels: &[Label]) -> Reason {
    validate_labels(labels, &Limits::default())
        .unwrap_err()
        .reason
}

#[test]
fn label_checks_follow_mimir() {
    let ok = [label("__name__", "up"), label("job", "a")];
    assert_eq!(validate_labels(&ok, &Limits::default()), Ok(()));
    assert_eq!(refusal(&[label("job", "a")]), Reason::MissingMetricName);
    assert_eq!(refusal(&[label("__name__", "")]), Reason::MissingMetricName);
    assert_eq!(
        refusal(&[label("__name__", "1up")]),
        Reason::InvalidMetricName
    );
    assert_eq!(
        refusal(&[label("__name__", "up"), label("a-b", "x")]),
        Reason::LabelInvalid
    );
    assert_eq!(
        refusal(&[label("__name__", "up"), label("a", "x"), label("a", "y")]),
        Reason::DuplicateLabelNames
    );
    assert_eq!(
        refusal(&[label("__name__", "up"), label("b", "x"), label("a", "y")]),
        Reason::LabelsNotSorted
    );
    let long_name = "n".repeat(1025);
    assert_eq!(
        refusal(&[label("__name__", "up"), label(&long_name, "x")]),
        Reason::LabelNameTooLong
    );
    let long_value = "v".repeat(2049);
    assert_eq!(
        refusal(&[label("__name__", "up"), label("a", &long_value)]),
        Reason::LabelValueTooLong
    );
    let mut many = vec![label("__name__", "up")];
    many.extend((0..30).map(|index| label(&format!("l{index:02}"), "x")));
    let error = validate_labels(&many, &Limits::default()).unwrap_err();
    assert_eq!(error.reason, Reason::MaxLabelNamesPerSeries);
    assert!(
        error.message.starts_with(
            "received a series whose number of labels exceeds the limit (actual: 31, limit: 30) series: '{__name__=\"up\", l00=\"x\""
        ),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("…' (err-mimir-max-label-names-per-series)")
    );
}

#[test]
fn messages_name_the_series_and_the_error_id() {
    let error = validate_labels(
        &[label("__name__", "up"), label("a", "x"), label("a", "y")],
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.message,
        "received a series with duplicate label name, label: 'a' series: '{__name__=\"up\", a=\"x\", a=\"y\"}' (err-mimir-duplicate-label-names)"
    );
}

#[test]
fn samples_too_far_in_the_future_are_refused() {
    let labels = [label("__name__", "up")];
    let limits = Limits::default();
    let now = 1_000_000_000;
    assert!(validate_timestamp(&labels, now + 600_000, now, &limits).is_ok());
    let error = validate_timestamp(&labels, now + 600_001, now, &limits).unwrap_err();
    assert_eq!(error.reason, Reason::TooFarInFuture);
    assert!(error.message.starts_with(
        "received a sample whose timestamp is too far in the future, timestamp: 1000600001 series: 'up' (err-mimir-too-far-in-future)"
    ));
}

#[test]
fn reason_names_are_unique() {
    let mut names: Vec<&str> = Reason::ALL.iter().map(|reason| reason.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Reason::ALL.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(512)))]

    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), v2 in any::<bool>()) {
        let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
        let _ = decode(protocol, &body, 1 << 16);
    }

    #[test]
    fn random_snappy_payloads_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512), v2 in any::<bool>()) {
        let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let _ = decode(protocol, &body, 1 << 16);
    }

    #[test]
    fn mutated_requests_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        compressed in any::<bool>(),
        v2 in any::<bool>(),
    ) {
        let (protocol, mut raw) = match v2 {
            true => (Protocol::V2, prost::Message::encode_to_vec(&v2_request())),
            false => (Protocol::V1, prost::Message::encode_to_vec(&v1_request())),
        };
        if !compressed {
            for (index, byte) in &flips {
                let position = index.index(raw.len());
                raw[position] ^= byte;
            }
        }
        let mut body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        if compressed {
            for (index, byte) in &flips {
                let position = index.index(body.len());
                body[position] ^= byte;
            }
        }
        body.truncate(cut.index(body.len() + 1));
        if let Ok(batch) = decode(protocol, &body, 1 << 16) {
            for series in &batch.series {
                let _ = validate_labels(&series.labels, &Limits::default());
            }
        }
    }
}

#[test]
fn a_negative_zero_keeps_its_sign_both_ways() {
    use prost::Message as _;
    let negative_zero = Sample {
        value: -0.0,
        timestamp: 5,
    };
    let encoded = negative_zero.encode_to_vec();
    // As Go's protobuf writes it: field 1, 64-bit, the sign bit alone.
    assert_eq!(&encoded[..9], &[0x09, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    let decoded = Sample::decode(encoded.as_slice()).unwrap();
    assert_eq!(decoded.value.to_bits(), (-0.0f64).to_bits());
    assert_eq!(decoded.timestamp, 5);
    // A positive zero and a zero timestamp are left out, as before.
    assert!(Sample::default().encode_to_vec().is_empty());
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let marker = Sample::decode(
        Sample {
            value: stale,
            timestamp: -1,
        }
        .encode_to_vec()
        .as_slice(),
    )
    .unwrap();
    assert_eq!(
        (marker.value.to_bits(), marker.timestamp),
        (stale.to_bits(), -1)
    );
}
