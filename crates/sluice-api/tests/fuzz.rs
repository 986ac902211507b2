//! Fuzzing the parsers a client or a peer reaches in this crate: the query
//! API's parameters (URL query and form body, then each endpoint's
//! parsing), downstream JSON answers, and results decoded from a peer
//! querier then encoded as Prometheus JSON. Random input and mutations of
//! valid input must give a value or an error, never a panic.
//!
//! A few hundred cases each, so the suite stays fast;
//! `SLUICE_FUZZ_CASES=100000 cargo test -p sluice-api --test fuzz` runs longer.

use proptest::prelude::*;
use prost::Message;
use sluice_api::decode::{Expected, decode_response};
use sluice_api::json::encode_response;
use sluice_api::params::{Form, parse_instant_query, parse_metadata_query, parse_range_query};
use sluice_proto::{ApiResponse, MetadataKind, QueryResult};

/// `valid` with a few bytes replaced, removed or inserted.
fn mutated(valid: &[u8], edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for (index, byte, operation) in edits {
        if bytes.is_empty() {
            bytes.push(*byte);
            continue;
        }
        let at = index.index(bytes.len());
        match operation % 3 {
            0 => bytes[at] = *byte,
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, *byte),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<u8>(), any::<u8>()),
        0..8,
    )
}

const QUERY_STRINGS: &[&str] = &[
    "query=sum(rate(x%5B5m%5D))&time=1700000000.5&timeout=2m",
    "query=up&start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z&step=15s&lookback_delta=1m",
    "match%5B%5D=up%7Bjob%3D%22a%22%7D&start=1&end=2&limit=10",
    "query=x%20offset%205m%20%40%20end()&start=0&end=1e9&step=0.001",
    "match[]={__name__=~\"a.*\"}&match[]=b&limit=-1",
];

/// Every parse of a request's parameters, on one form.
fn parse_every_way(form: &Form, label_name: &str) {
    let _ = parse_instant_query(form, 1_700_000_000_000);
    let _ = parse_range_query(form);
    for kind in [
        MetadataKind::Series,
        MetadataKind::LabelNames,
        MetadataKind::LabelValues,
    ] {
        let _ = parse_metadata_query(form, kind, Some(label_name));
    }
}

const ANSWERS: &[(&str, Expected)] = &[
    (
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1700000000.123,"1"]}]}}"#,
        Expected::Query,
    ),
    (
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[1,"1"],[2,"NaN"],[3,"+Inf"]]}]},"warnings":["w"],"infos":["i"]}"#,
        Expected::Query,
    ),
    (
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"2","sum":"3","buckets":[[0,"-1","1","2"]]}]}]}}"#,
        Expected::Query,
    ),
    (
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
        Expected::Query,
    ),
    (
        r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
        Expected::Query,
    ),
    (
        r#"{"status":"success","data":[{"__name__":"up","job":"a"}]}"#,
        Expected::Series,
    ),
    (
        r#"{"status":"success","data":["a","b"]}"#,
        Expected::Strings,
    ),
    (
        r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#,
        Expected::Query,
    ),
];

/// Decodes `body` as every shape and encodes what decodes, as the
/// querier and the frontend do with a downstream's answer.
fn decode_every_way(body: &[u8]) {
    for expected in [Expected::Query, Expected::Series, Expected::Strings] {
        for status in [200, 400, 422, 503] {
            if let Ok(response) = decode_response(status, body, expected) {
                let _ = encode_response(&response);
            }
        }
    }
}

/// A valid result as a querier sends it: a decoded downstream answer.
fn valid_result(answer: usize) -> Vec<u8> {
    let (body, expected) = ANSWERS[answer % ANSWERS.len()];
    let response = decode_response(200, body.as_bytes(), expected).expect("a valid answer");
    QueryResult {
        query_id: 7,
        response: Some(response),
        ..QueryResult::default()
    }
    .encode_to_vec()
}

#[test]
fn the_valid_inputs_are_valid() {
    for (body, expected) in ANSWERS {
        let decoded = decode_response(200, body.as_bytes(), *expected);
        assert!(decoded.is_ok(), "{body}: {decoded:?}");
    }
    let form = Form::parse(Some(QUERY_STRINGS[1]), None);
    assert!(parse_range_query(&form).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

    #[test]
    fn query_parameters_are_parsed_or_refused(
        base in 0..QUERY_STRINGS.len(),
        edits in edits(),
        noise in ".{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..80),
        label_name in ".{0,12}",
    ) {
        let changed = mutated(QUERY_STRINGS[base].as_bytes(), &edits);
        let changed = String::from_utf8_lossy(&changed);
        for (query, form_body) in [
            (changed.as_ref(), None),
            (noise.as_str(), Some(body.as_slice())),
            ("", Some(changed.as_bytes())),
        ] {
            parse_every_way(&Form::parse(Some(query), form_body), &label_name);
        }
    }

    #[test]
    fn downstream_answers_are_decoded_or_refused(
        answer in 0..ANSWERS.len(),
        edits in edits(),
        random in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        decode_every_way(&mutated(ANSWERS[answer].0.as_bytes(), &edits));
        decode_every_way(&random);
    }

    /// What a querier sends a frontend: whatever decodes is encoded as
    /// JSON without a panic, however its fields disagree (timestamps
    /// without values, unknown result or error types).
    #[test]
    fn peer_results_encode_or_are_refused(
        answer in 0..ANSWERS.len(),
        edits in edits(),
        random in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        for bytes in [mutated(&valid_result(answer), &edits), random] {
            // Checked on receipt, as the frontend and the queue owner do.
            let result = QueryResult::decode(bytes.as_slice()).map(QueryResult::checked);
            if let Ok(QueryResult { response: Some(response), .. }) = &result {
                let _ = encode_response(response);
            }
            if let Ok(response) = ApiResponse::decode(bytes.as_slice()) {
                let wrapped = QueryResult {
                    response: Some(response),
                    ..QueryResult::default()
                };
                let _ = encode_response(wrapped.checked().response.as_ref().expect("kept"));
            }
        }
    }
}
