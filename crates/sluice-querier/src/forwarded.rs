//! The engine's answers to the API paths a querier otherwise forwards to
//! its downstream untouched: what a Prometheus holding sluice's data would
//! answer. Blocks carry neither metric metadata nor exemplars, so
//! `metadata` is an empty object and `query_exemplars` an empty list (as
//! from a Prometheus without exemplar storage, its query still checked);
//! `status/buildinfo` describes sluice.

use sluice_proto::{ApiResponse, ErrorType, ForwardedRequest, RawData, ResponseData};

use crate::executor::Execution;

fn json(body: String) -> Execution {
    Execution {
        response: ApiResponse {
            http_status: 200,
            data: Some(ResponseData::Raw(RawData {
                content_type: "application/json".to_owned(),
                body: body.into_bytes(),
            })),
            ..ApiResponse::default()
        },
        retryable: false,
    }
}

fn bad_data(message: String) -> Execution {
    Execution {
        response: ApiResponse::error(ErrorType::BadData, message),
        retryable: false,
    }
}

/// Prometheus's fields, empty where sluice has nothing to say, and the
/// application's name as Mimir adds it.
fn build_info() -> String {
    format!(
        r#"{{"status":"success","data":{{"application":"sluice","version":"{}","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":""}}}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

/// `query_exemplars` checks its query as Prometheus does, then has none.
fn exemplars(query_string: &str) -> Execution {
    let query = form_urlencoded::parse(query_string.as_bytes())
        .find(|(key, _)| key == "query")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    // Prometheus's own words: `1:6: parse error: ...`, without the
    // `invalid parameter` of the query endpoints.
    match sluice_promql::parse(&query) {
        Ok(_) => json(r#"{"status":"success","data":[]}"#.to_owned()),
        Err(message) => bad_data(message),
    }
}

/// The answer to `forwarded`, for the paths the frontend forwards.
pub(crate) fn answer(forwarded: &ForwardedRequest) -> Execution {
    match forwarded.path.as_str() {
        "/api/v1/status/buildinfo" => json(build_info()),
        "/api/v1/metadata" => json(r#"{"status":"success","data":{}}"#.to_owned()),
        "/api/v1/query_exemplars" => exemplars(&forwarded.query_string),
        other => Execution {
            response: ApiResponse::error(
                ErrorType::NotFound,
                format!("{other} is not served by the embedded engine"),
            ),
            retryable: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(path: &str, query_string: &str) -> (u32, serde_json::Value) {
        let execution = answer(&ForwardedRequest {
            path: path.to_owned(),
            query_string: query_string.to_owned(),
        });
        let body = sluice_api::json::encode_response(&execution.response);
        let status = execution.response.http_status;
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn answers_as_a_prometheus_without_metadata_or_exemplars() {
        let (status, metadata) = body("/api/v1/metadata", "limit=5");
        assert_eq!(
            (status, metadata.to_string()),
            (200, r#"{"data":{},"status":"success"}"#.to_owned())
        );
        let (status, exemplars) = body("/api/v1/query_exemplars", "query=up&start=1&end=2");
        assert_eq!(status, 200);
        assert_eq!(exemplars["data"], serde_json::json!([]));
        let (_, refused) = body("/api/v1/query_exemplars", "query=up%7B");
        assert_eq!(refused["errorType"], "bad_data", "{refused}");
        let (status, build) = body("/api/v1/status/buildinfo", "");
        assert_eq!(status, 200);
        assert_eq!(build["data"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(build["data"]["goVersion"].is_string());
    }
}
