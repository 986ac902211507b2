//! Fuzzing the gRPC messages a peer sends: every message of the
//! querier ↔ queue owner, frontend ↔ scheduler and results protocols is
//! decoded from random bytes and from valid encodings with bytes changed.
//! Each decodes or is refused, never a panic; what decodes encodes and
//! decodes again to itself; and a result whose series disagree with
//! themselves is refused on receipt ([`QueryResult::checked`]).
//!
//! A few hundred cases each; `SLUICE_FUZZ_CASES` runs more.

use proptest::prelude::*;
use prost::Message;
use sluice_proto::{
    ApiResponse, EnqueueRequest, ErrorType, FrontendMessage, FrontendToScheduler, Header,
    InstantQuery, OwnerMessage, OwnerToQuerier, QuerierHello, QuerierMessage, QuerierToOwner,
    QueryData, QueryKind, QueryRequest, QueryResult, QueryTask, RangeQuery, ResponseData,
    ResultAck, ResultReport, SchedulerToFrontend, Series,
};

fn request() -> QueryRequest {
    QueryRequest {
        kind: Some(QueryKind::Range(RangeQuery {
            query: "sum(rate(x[5m]))".into(),
            start_ms: 0,
            end_ms: 3_600_000,
            step_ms: 60_000,
            ..RangeQuery::default()
        })),
    }
}

fn result() -> QueryResult {
    let mut series = Series::default();
    series.push(1_000, 1.5);
    series.push(2_000, f64::NAN);
    let data = QueryData {
        series: vec![series],
        ..QueryData::default()
    };
    QueryResult {
        query_id: 42,
        response: Some(ApiResponse {
            http_status: 200,
            warnings: vec!["w".into()],
            data: Some(ResponseData::Query(data)),
            ..ApiResponse::default()
        }),
        current_concurrency: 3,
        desired_concurrency: 4,
        ..QueryResult::default()
    }
}

/// One valid encoding of each message a peer sends.
fn valid_messages() -> Vec<Vec<u8>> {
    let task = QueryTask {
        query_id: 1,
        tenant: "a|b".into(),
        request: Some(request()),
        frontend_address: "127.0.0.1:9095".into(),
        forwarded_headers: vec![Header {
            name: "X-Grafana-User".into(),
            value: "me".into(),
        }],
        result_token: vec![7; 16],
        ..QueryTask::default()
    };
    let enqueue = EnqueueRequest {
        query_id: 2,
        tenant: "t".into(),
        request: Some(QueryRequest {
            kind: Some(QueryKind::Instant(InstantQuery {
                query: "up".into(),
                time_ms: 5,
                ..InstantQuery::default()
            })),
        }),
        result_token: vec![1; 16],
        ..EnqueueRequest::default()
    };
    vec![
        QuerierToOwner {
            message: Some(QuerierMessage::Hello(QuerierHello {
                querier_id: "q".into(),
                max_concurrency: 20,
                not_ready: false,
            })),
        }
        .encode_to_vec(),
        QuerierToOwner {
            message: Some(QuerierMessage::Result(result())),
        }
        .encode_to_vec(),
        OwnerToQuerier {
            message: Some(OwnerMessage::Task(task)),
        }
        .encode_to_vec(),
        FrontendToScheduler {
            message: Some(FrontendMessage::Enqueue(enqueue)),
        }
        .encode_to_vec(),
        SchedulerToFrontend {
            query_id: 3,
            status: 1,
            error: "e".into(),
        }
        .encode_to_vec(),
        ResultReport {
            tenant: "t".into(),
            result: Some(result()),
            result_token: vec![2; 16],
        }
        .encode_to_vec(),
        ResultAck {
            query_id: 4,
            error: String::new(),
        }
        .encode_to_vec(),
    ]
}

/// Decodes `bytes` as `M`; what decodes must survive a round trip.
fn round_trips<M: Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    if let Ok(decoded) = M::decode(bytes) {
        let again = M::decode(decoded.encode_to_vec().as_slice());
        // NaN samples compare unequal to themselves: compare encodings.
        let again = again.map(|message| message.encode_to_vec());
        prop_assert_eq!(again.ok(), Some(decoded.encode_to_vec()));
    }
    Ok(())
}

fn decode_as_every_message(bytes: &[u8]) -> Result<(), TestCaseError> {
    round_trips::<QuerierToOwner>(bytes)?;
    round_trips::<OwnerToQuerier>(bytes)?;
    round_trips::<FrontendToScheduler>(bytes)?;
    round_trips::<SchedulerToFrontend>(bytes)?;
    round_trips::<ResultReport>(bytes)?;
    round_trips::<ResultAck>(bytes)?;
    let checked = ResultReport::decode(bytes)
        .ok()
        .and_then(|report| report.result)
        .map(QueryResult::checked);
    let data = checked.and_then(|result| result.response?.data);
    if let Some(ResponseData::Query(data)) = data {
        for series in &data.series {
            prop_assert_eq!(series.timestamps_ms.len(), series.values.len());
        }
    }
    Ok(())
}

#[test]
fn a_result_whose_series_disagree_is_refused_on_receipt() {
    let mut bad = result();
    if let Some(ResponseData::Query(data)) = bad.response.as_mut().and_then(|r| r.data.as_mut()) {
        data.series[0].values.pop();
    }
    let checked = bad.checked();
    let response = checked.response.expect("an answer");
    assert_eq!(response.error_type(), ErrorType::Internal);
    assert!(
        response
            .error
            .contains("a series with 2 timestamps and 1 values"),
        "{}",
        response.error
    );
    assert!(checked.retryable, "another querier may answer well");
    assert_eq!(
        result().checked().encode_to_vec(),
        result().encode_to_vec(),
        "a good result is kept"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

    #[test]
    fn random_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_as_every_message(&bytes)?;
    }

    #[test]
    fn mutated_messages_decode_or_are_refused(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
    ) {
        let messages = valid_messages();
        let mut bytes = messages[which.index(messages.len())].clone();
        for (index, byte, replace) in edits {
            let at = index.index(bytes.len() + 1);
            match (replace, at < bytes.len()) {
                (true, true) => bytes[at] = byte,
                (false, true) => bytes.truncate(at),
                _ => bytes.push(byte),
            }
        }
        decode_as_every_message(&bytes)?;
    }
}
