//! Decodes a downstream Prometheus-compatible API's JSON answer into sluice's
//! typed model, in one streaming pass (no intermediate JSON tree), so a
//! querier's cost per sample stays small.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sluice_proto::{
    ApiResponse, ErrorType, HistogramBucket, HistogramSample, Label, LabelSet, QueryData,
    ResponseData, ResultType, Series, SeriesData, StringsData,
};

/// Which shape of `data` an answer is expected to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `query` and `query_range`: `{"resultType":…,"result":…}`.
    Query,
    /// `series`: a list of label sets.
    Series,
    /// `labels` and `label/<name>/values`: a list of strings.
    Strings,
}

/// The downstream's body was not a Prometheus API answer.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "undecodable downstream answer: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes `body`, received with `http_status`, into an [`ApiResponse`].
/// Error envelopes keep the status they came with.
pub fn decode_response(
    http_status: u16,
    body: &[u8],
    expected: Expected,
) -> Result<ApiResponse, DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut response = EnvelopeSeed { expected }
        .deserialize(&mut deserializer)
        .map_err(|error| DecodeError(error.to_string()))?;
    deserializer
        .end()
        .map_err(|error| DecodeError(error.to_string()))?;
    response.http_status = u32::from(http_status);
    if response.is_error() && http_status == 200 {
        response.http_status = u32::from(response.error_type().http_status());
    }
    Ok(response)
}

struct EnvelopeSeed {
    expected: Expected,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed {
    type Value = ApiResponse;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ApiResponse, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed {
    type Value = ApiResponse;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a Prometheus API envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ApiResponse, A::Error> {
        let mut response = ApiResponse::default();
        let mut status: Option<String> = None;
        let mut error_type: Option<String> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "status" => status = Some(map.next_value()?),
                "errorType" => error_type = Some(map.next_value()?),
                "error" => response.error = map.next_value()?,
                "warnings" => {
                    response.warnings = map.next_value::<Option<Vec<String>>>()?.unwrap_or_default()
                }
                "infos" => {
                    response.infos = map.next_value::<Option<Vec<String>>>()?.unwrap_or_default()
                }
                "data" => {
                    response.data = match self.expected {
                        Expected::Query => map
                            .next_value_seed(OptionalSeed(QueryDataVisitor))?
                            .map(ResponseData::Query),
                        Expected::Series => {
                            map.next_value::<Option<Vec<LabelSetWire>>>()?.map(|sets| {
                                ResponseData::Series(SeriesData {
                                    series: sets.into_iter().map(|set| set.0).collect(),
                                })
                            })
                        }
                        Expected::Strings => map
                            .next_value::<Option<Vec<String>>>()?
                            .map(|values| ResponseData::Strings(StringsData { values })),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match status.as_deref() {
            Some("success") => {
                if response.data.is_none() {
                    // Prometheus writes `[]`, never `null`, for empty lists; a
                    // backend that writes null means the same thing.
                    response.data = Some(match self.expected {
                        Expected::Query => ResponseData::Query(QueryData::default()),
                        Expected::Series => ResponseData::Series(SeriesData::default()),
                        Expected::Strings => ResponseData::Strings(StringsData::default()),
                    });
                }
            }
            Some("error") => {
                response.error_type =
                    ErrorType::from_prometheus(error_type.as_deref().unwrap_or("internal")) as i32;
                response.data = None;
            }
            other => {
                return Err(de::Error::custom(format!("unexpected status {other:?}")));
            }
        }
        Ok(response)
    }
}

/// Accepts `null` as well as the inner value.
struct OptionalSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for OptionalSeed<V> {
    type Value = Option<V::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OptionalSeed<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self.0).map(Some)
    }
}

struct QueryDataVisitor;

impl<'de> Visitor<'de> for QueryDataVisitor {
    type Value = QueryData;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("query data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<QueryData, A::Error> {
        let mut data = QueryData::default();
        let mut result_type: Option<ResultType> = None;
        let mut result_seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "resultType" => {
                    let name: std::borrow::Cow<'de, str> = map.next_value()?;
                    result_type = Some(match name.as_ref() {
                        "vector" => ResultType::Vector,
                        "matrix" => ResultType::Matrix,
                        "scalar" => ResultType::Scalar,
                        "string" => ResultType::String,
                        other => {
                            return Err(de::Error::custom(format!("unknown resultType {other}")));
                        }
                    });
                }
                "result" => {
                    // Prometheus always writes resultType first; a result seen
                    // before its type cannot be decoded in one pass.
                    let Some(kind) = result_type else {
                        return Err(de::Error::custom("result before resultType"));
                    };
                    result_seen = true;
                    match kind {
                        ResultType::Vector | ResultType::Matrix => {
                            data.series = map
                                .next_value::<Option<Vec<SeriesWire>>>()?
                                .unwrap_or_default()
                                .into_iter()
                                .map(|wire| wire.0)
                                .collect();
                        }
                        ResultType::Scalar => {
                            let SamplePair(timestamp_ms, value) = map.next_value()?;
                            let mut point = Series::default();
                            point.push(timestamp_ms, value);
                            data.series = vec![point];
                        }
                        ResultType::String => {
                            let (timestamp, value): (f64, String) = map.next_value()?;
                            data.string_timestamp_ms = seconds_to_ms(timestamp);
                            data.string_value = value;
                        }
                    }
                }
                "stats" => {
                    let raw: Box<serde_json::value::RawValue> = map.next_value()?;
                    data.stats_json = raw.get().to_owned();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(kind) = result_type else {
            return Err(de::Error::missing_field("resultType"));
        };
        if !result_seen {
            return Err(de::Error::missing_field("result"));
        }
        data.result_type = kind as i32;
        Ok(data)
    }
}

/// Timestamps arrive as float seconds with millisecond precision.
fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn parse_value<E: de::Error>(text: &str) -> Result<f64, E> {
    // Go writes +Inf/-Inf/NaN; Rust's parser accepts those spellings too.
    text.parse::<f64>()
        .map_err(|_| E::custom(format!("invalid sample value {text:?}")))
}

struct SamplePair(i64, f64);

impl<'de> de::Deserialize<'de> for SamplePair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = SamplePair;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a [timestamp, \"value\"] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SamplePair, A::Error> {
                let timestamp: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let value: std::borrow::Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SamplePair(seconds_to_ms(timestamp), parse_value(&value)?))
            }
        }
        deserializer.deserialize_seq(PairVisitor)
    }
}

/// A `values` list decoded straight into the two columns.
struct SampleColumns(Vec<i64>, Vec<f64>);

impl<'de> de::Deserialize<'de> for SampleColumns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;
        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = SampleColumns;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of [timestamp, \"value\"] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SampleColumns, A::Error> {
                let capacity = seq.size_hint().unwrap_or(64);
                let mut columns =
                    SampleColumns(Vec::with_capacity(capacity), Vec::with_capacity(capacity));
                while let Some(SamplePair(timestamp_ms, value)) = seq.next_element()? {
                    columns.0.push(timestamp_ms);
                    columns.1.push(value);
                }
                Ok(columns)
            }
        }
        deserializer.deserialize_seq(ColumnsVisitor)
    }
}

struct HistogramPair(HistogramSample);

impl<'de> de::Deserialize<'de> for HistogramPair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct HistogramWire<'a> {
            #[serde(borrow)]
            count: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            sum: std::borrow::Cow<'a, str>,
            #[serde(default)]
            buckets: Vec<(i32, String, String, String)>,
        }
        let (timestamp, wire): (f64, HistogramWire<'de>) =
            de::Deserialize::deserialize(deserializer)?;
        let mut buckets = Vec::with_capacity(wire.buckets.len());
        for (boundaries, lower, upper, count) in &wire.buckets {
            buckets.push(HistogramBucket {
                boundaries: *boundaries,
                lower: parse_value(lower)?,
                upper: parse_value(upper)?,
                count: parse_value(count)?,
            });
        }
        Ok(HistogramPair(HistogramSample {
            timestamp_ms: seconds_to_ms(timestamp),
            count: parse_value(&wire.count)?,
            sum: parse_value(&wire.sum)?,
            buckets,
        }))
    }
}

/// A label set decoded in the order it arrived (Prometheus sorts by name).
struct LabelSetWire(LabelSet);

impl<'de> de::Deserialize<'de> for LabelSetWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(LabelSetWire(LabelSet {
            labels: deserializer.deserialize_map(LabelsVisitor)?,
        }))
    }
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Vec<Label>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a label set")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Label>, A::Error> {
        let mut labels = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((name, value)) = map.next_entry::<String, String>()? {
            labels.push(Label { name, value });
        }
        Ok(labels)
    }
}

struct SeriesWire(Series);

impl<'de> de::Deserialize<'de> for SeriesWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeriesVisitor;
        impl<'de> Visitor<'de> for SeriesVisitor {
            type Value = SeriesWire;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a series")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SeriesWire, A::Error> {
                let mut series = Series::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "metric" => series.labels = map.next_value::<LabelSetWire>()?.0.labels,
                        "value" => {
                            let SamplePair(timestamp_ms, value) = map.next_value()?;
                            series.push(timestamp_ms, value);
                        }
                        "values" => {
                            let columns: SampleColumns = map.next_value()?;
                            series.timestamps_ms = columns.0;
                            series.values = columns.1;
                        }
                        "histogram" => {
                            series.histograms = vec![map.next_value::<HistogramPair>()?.0]
                        }
                        "histograms" => {
                            series.histograms = map
                                .next_value::<Vec<HistogramPair>>()?
                                .into_iter()
                                .map(|pair| pair.0)
                                .collect()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(SeriesWire(series))
            }
        }
        deserializer.deserialize_map(SeriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::encode_response;

    /// Decoding then encoding a Prometheus answer must give back the same bytes.
    fn round_trip(body: &str, expected: Expected) {
        let response = decode_response(200, body.as_bytes(), expected).unwrap();
        assert_eq!(String::from_utf8(encode_response(&response)).unwrap(), body);
    }

    #[test]
    fn round_trips_every_result_type() {
        round_trip(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"a","x":"\u003c\""},"values":[[1700000000,"1"],[1700000015.500,"NaN"],[1700000030.050,"+Inf"],[1700000045,"1e-07"],[1700000060,"-0"]]}]}}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.001,"-2.5"]}]},"warnings":["w"],"infos":["i"]}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":{"resultType":"scalar","result":[12,"3"]}}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":{"resultType":"string","result":[12,"a\nb"]}}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"histogram":[5,{"count":"4","sum":"10.5","buckets":[[0,"1","2","3"],[3,"-1","0","1"]]}]}]}}"#,
            Expected::Query,
        );
        round_trip(
            r#"{"status":"success","data":[{"__name__":"up","job":"x"},{}]}"#,
            Expected::Series,
        );
        round_trip(
            r#"{"status":"success","data":["a","b"]}"#,
            Expected::Strings,
        );
        round_trip(r#"{"status":"success","data":[]}"#, Expected::Strings);
    }

    #[test]
    fn keeps_stats_and_errors() {
        round_trip(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"],"stats":{"timings":{"evalTotalTime":0.1}}}}"#,
            Expected::Query,
        );
        let error = decode_response(
            422,
            br#"{"status":"error","errorType":"execution","error":"boom"}"#,
            Expected::Query,
        )
        .unwrap();
        assert_eq!(error.error_type(), ErrorType::Execution);
        assert_eq!(error.http_status, 422);
        assert_eq!(error.error, "boom");
    }

    #[test]
    fn null_data_means_empty() {
        let response = decode_response(
            200,
            br#"{"status":"success","data":null}"#,
            Expected::Strings,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(encode_response(&response)).unwrap(),
            r#"{"status":"success","data":[]}"#
        );
    }

    #[test]
    fn rejects_non_api_bodies() {
        assert!(decode_response(502, b"<html>bad gateway</html>", Expected::Query).is_err());
        assert!(decode_response(200, br#"{"status":"weird"}"#, Expected::Query).is_err());
        assert!(
            decode_response(
                200,
                br#"{"status":"success","data":{"result":[],"resultType":"vector"}}"#,
                Expected::Query
            )
            .is_err()
        );
    }
}
