//! The engine's answers to the API paths a querier otherwise forwards to
//! its downstream untouched: what a Prometheus holding sluice's data would
//! answer. Blocks carry neither metric metadata nor exemplars, so
//! `metadata` is an empty object and `query_exemplars` an empty list (as
//! from a Prometheus without exemplar storage, its query still checked);
//! `status/buildinfo` describes sluice.
//!
//! sluice runs no rules, scrapes no targets and sends no alerts, so
//! `rules`, `alerts`, `targets`, `targets/metadata` and `alertmanagers`
//! answer as a Prometheus 2.42 configured with none of them;
//! `status/runtimeinfo` and `status/flags` describe this process. What only
//! a Prometheus has (its configuration, TSDB statistics, WAL replay, query
//! formatting) is a `not_found` envelope saying so.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// When this process started, for `status/runtimeinfo`: forced when the
/// engine executor is made, at start-up.
pub(crate) static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

fn go_time(time: SystemTime, with_nanos: bool) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let nanos = if with_nanos {
        i64::from(since_epoch.subsec_nanos())
    } else {
        0
    };
    sluice_api::params::go_format_utc(since_epoch.as_secs() as i64, nanos)
}

/// Prometheus's fields where sluice has an equivalent: tokio's workers
/// stand for `GOMAXPROCS` and its live tasks for goroutines. Go's tuning
/// knobs and the store's retention mean nothing to a querier: left out.
fn runtime_info() -> String {
    let started = *STARTED;
    let cwd = std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    let (tasks, workers) = tokio::runtime::Handle::try_current()
        .map(|handle| {
            let metrics = handle.metrics();
            (metrics.num_alive_tasks(), metrics.num_workers())
        })
        .unwrap_or((0, 1));
    let data = serde_json::json!({
        "startTime": go_time(started, true),
        "CWD": cwd,
        "reloadConfigSuccess": true,
        "lastConfigTime": go_time(started, false),
        "corruptionCount": 0,
        "goroutineCount": tasks,
        "GOMAXPROCS": workers,
    });
    success(&data)
}

/// The flags this process was started with, by name as Prometheus lists
/// its own; values of flags naming a secret are hidden.
fn flags(args: impl Iterator<Item = String>) -> String {
    let mut flags = BTreeMap::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix('-') else {
            continue;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => match args.next_if(|next| !next.starts_with('-')) {
                Some(value) => (flag.to_owned(), value),
                None => (flag.to_owned(), "true".to_owned()),
            },
        };
        let secret = ["secret", "password", "token"]
            .iter()
            .any(|word| name.contains(word));
        let value = if secret { "<secret>".to_owned() } else { value };
        flags.insert(name, value);
    }
    success(&flags)
}

fn success(data: &impl serde::Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    format!(r#"{{"status":"success","data":{data}}}"#)
}

fn not_found(message: &str) -> Execution {
    Execution {
        response: ApiResponse::error(ErrorType::NotFound, message.to_owned()),
        retryable: false,
    }
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
        "/api/v1/rules" => json(r#"{"status":"success","data":{"groups":[]}}"#.to_owned()),
        "/api/v1/alerts" => json(r#"{"status":"success","data":{"alerts":[]}}"#.to_owned()),
        "/api/v1/targets" => json(
            r#"{"status":"success","data":{"activeTargets":[],"droppedTargets":[]}}"#.to_owned(),
        ),
        "/api/v1/targets/metadata" => json(r#"{"status":"success","data":[]}"#.to_owned()),
        "/api/v1/alertmanagers" => json(
            r#"{"status":"success","data":{"activeAlertmanagers":[],"droppedAlertmanagers":[]}}"#
                .to_owned(),
        ),
        "/api/v1/status/runtimeinfo" => json(runtime_info()),
        "/api/v1/status/flags" => json(flags(std::env::args().skip(1))),
        "/api/v1/status/config" => {
            not_found("sluice has no Prometheus configuration without -querier.downstream-url")
        }
        "/api/v1/status/tsdb" | "/api/v1/status/walreplay" => not_found(
            "TSDB status is a Prometheus's own: sluice serves it only with -querier.downstream-url",
        ),
        "/api/v1/format_query" | "/api/v1/parse_query" => not_found(
            "query formatting is Prometheus's own: sluice serves it only with -querier.downstream-url",
        ),
        other => not_found(&format!("{other} is not served by the embedded engine")),
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

    #[test]
    fn answers_as_a_prometheus_without_rules_targets_or_alertmanagers() {
        for (path, want) in [
            (
                "/api/v1/rules",
                r#"{"data":{"groups":[]},"status":"success"}"#,
            ),
            (
                "/api/v1/alerts",
                r#"{"data":{"alerts":[]},"status":"success"}"#,
            ),
            (
                "/api/v1/targets",
                r#"{"data":{"activeTargets":[],"droppedTargets":[]},"status":"success"}"#,
            ),
            (
                "/api/v1/targets/metadata",
                r#"{"data":[],"status":"success"}"#,
            ),
        ] {
            assert_eq!(body(path, ""), (200, serde_json::from_str(want).unwrap()));
        }
        for path in [
            "/api/v1/status/config",
            "/api/v1/status/tsdb",
            "/api/v1/format_query",
        ] {
            let (status, refused) = body(path, "query=up");
            assert_eq!((status, &refused["errorType"]), (404, &"not_found".into()));
        }
    }

    #[test]
    fn runtime_info_names_this_process() {
        let (status, info) = body("/api/v1/status/runtimeinfo", "");
        assert_eq!(status, 200);
        let cwd = std::env::current_dir().unwrap().display().to_string();
        assert_eq!(info["data"]["CWD"], serde_json::Value::from(cwd));
        let start = info["data"]["startTime"].as_str().unwrap();
        assert!(start.ends_with('Z') && start.contains('T'), "{start}");
    }

    #[test]
    fn flags_are_listed_by_name_with_secrets_hidden() {
        let args = [
            "-target=querier",
            "--querier.id",
            "q1",
            "-blocks-storage.s3.secret-access-key=hunter2",
            "-server.enable-pprof",
        ]
        .map(String::from);
        let listed: serde_json::Value = serde_json::from_str(&flags(args.into_iter())).unwrap();
        assert_eq!(
            listed["data"],
            serde_json::json!({
                "target": "querier",
                "querier.id": "q1",
                "blocks-storage.s3.secret-access-key": "<secret>",
                "server.enable-pprof": "true",
            })
        );
    }
}
