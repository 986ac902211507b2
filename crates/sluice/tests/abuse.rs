//! Hostile query texts against a real sluice process in front of a real
//! Prometheus: every one gets an answer (a result or a Prometheus error
//! envelope) within a bounded time, and the process stays up.

mod common;

use std::time::{Duration, Instant};

use common::{SluiceProcess, start_sluice};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode, http_request};

/// Longest any hostile request may take: the querier's timeout below plus
/// the time to move a refusal.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

async fn start_sluice_over(prometheus: &PrometheusServer) -> SluiceProcess {
    start_sluice(
        "abuse",
        &[
            format!("-querier.downstream-url={}", prometheus.url()),
            "-querier.timeout=5s".to_owned(),
            "-query-frontend.log-query-max-bytes=100".to_owned(),
        ],
    )
    .await
}

/// POSTs `params` to `path`; returns the status and the JSON envelope,
/// failing if the answer took too long or is not JSON.
async fn post(
    sluice: &SluiceProcess,
    path: &str,
    params: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let started = Instant::now();
    let (status, _, body) = http_request(
        "POST",
        &format!("{}{path}", sluice.url()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form_urlencode(params).into_bytes(),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed < ANSWER_WITHIN, "{path} took {elapsed:?}");
    let envelope = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, envelope)
}

async fn query(sluice: &SluiceProcess, text: &str) -> (u16, serde_json::Value) {
    post(
        sluice,
        "/api/v1/query",
        &[("query", text), ("time", "1000")],
    )
    .await
}

/// The inputs that once aborted the process, each refused with a 400 that
/// names the limit, and fast.
#[tokio::test]
async fn inputs_that_once_crashed_sluice_get_a_400() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_sluice_over(&prometheus).await;
    let crashers = [
        format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000)),
        vec!["x"; 45_000].join("+"),
        vec!["2"; 50_000].join("^"),
        vec!["x"; 20_000].join("+"),
    ];
    for text in &crashers {
        let started = Instant::now();
        let (status, envelope) = query(&sluice, text).await;
        assert_eq!(status, 400, "{envelope}");
        assert_eq!(envelope["errorType"], "bad_data");
        let message = envelope["error"].as_str().unwrap();
        assert!(message.contains("nests more than 256 levels"), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let huge = format!("x{{a=~\"{}\"}}", "a".repeat(300 * 1024));
    let (status, envelope) = query(&sluice, &huge).await;
    assert_eq!(status, 400);
    assert!(
        envelope["error"]
            .as_str()
            .unwrap()
            .contains("-query-frontend.max-query-expression-size-bytes"),
        "{envelope}"
    );
    // A long query that runs is logged cut to the flag's 100 bytes.
    let long = format!("up{{job!~\"{}\"}}", "a".repeat(5_000));
    let (status, envelope) = query(&sluice, &long).await;
    assert_eq!((status, &envelope["status"]), (200, &"success".into()));
    let log = sluice.process.log_contents();
    assert!(log.contains("more bytes cut"), "{log}");
    assert!(!log.contains(&long));
}

/// Errors carry Prometheus's `line:column: parse error:` prefix and label
/// names that are no name are refused as Prometheus refuses them.
#[tokio::test]
async fn errors_are_placed_and_label_paths_checked() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_sluice_over(&prometheus).await;
    for (text, want) in [
        (
            "1 +",
            "invalid parameter \"query\": 1:4: parse error: unexpected end of input",
        ),
        (
            "sum(up",
            "invalid parameter \"query\": 1:7: parse error: unclosed left parenthesis",
        ),
        (
            "foo bar",
            "invalid parameter \"query\": 1:5: parse error: unexpected identifier \"bar\"",
        ),
    ] {
        let (status, envelope) = query(&sluice, text).await;
        assert_eq!(status, 400);
        assert_eq!(envelope["error"], want, "{text}");
    }
    for path in ["a%2Fb", "%2e%2e", ".."] {
        let url = format!("{}/api/v1/label/{path}/values", sluice.url());
        let (status, _, body) = http_request("GET", &url, &[], Vec::new()).await;
        assert_eq!(status, 404, "{path}");
        let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope["errorType"], "not_found", "{path}");
    }
}

/// A hostile expression of one of the shapes that recurse in parsers and
/// evaluators, at a random size from harmless to enormous.
fn hostile_expression() -> impl Strategy<Value = String> {
    let size = prop_oneof_sizes();
    (0..8usize, size).prop_map(|(shape, n)| match shape {
        0 => format!("{}up{}", "(".repeat(n), ")".repeat(n)),
        1 => vec!["up"; n.max(1)].join(" + "),
        2 => vec!["2"; n.max(1)].join(" ^ "),
        3 => vec!["up"; n.max(1)].join(" or "),
        4 => format!(
            "up{{{}}}",
            (0..n)
                .map(|i| format!("l{i}=\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
        5 => format!("up{{job=~\"{}\"}}", "(a|b)*".repeat(n)),
        6 => format!("{}up{}", "max_over_time(".repeat(n), "[2m:1m])".repeat(n)),
        _ => format!("{}up{}", "sum(rate(".repeat(n), "[5m]))".repeat(n)),
    })
}

fn prop_oneof_sizes() -> impl Strategy<Value = usize> {
    proptest::prop_oneof![0..8usize, 8..300usize, 300..60_000usize]
}

/// Random deep and long expressions through every path that parses a
/// query: each is answered in time, and the process never goes down.
#[tokio::test]
async fn hostile_expressions_are_answered_and_the_process_stays_up() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut sluice = start_sluice_over(&prometheus).await;
    let cases = sluice_testkit::fuzz_cases(24);
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[23; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = hostile_expression();
    for _ in 0..cases {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let range = [
            ("query", text.as_str()),
            ("start", "0"),
            ("end", "3600"),
            ("step", "60"),
        ];
        for (path, params) in [
            (
                "/api/v1/query",
                vec![("query", text.as_str()), ("time", "1000")],
            ),
            ("/api/v1/query_range", range.to_vec()),
            ("/api/v1/series", vec![("match[]", text.as_str())]),
            ("/api/v1/labels", vec![("match[]", text.as_str())]),
        ] {
            let (status, envelope) = post(&sluice, path, &params).await;
            let expected_status = if status == 200 { "success" } else { "error" };
            assert_eq!(envelope["status"], expected_status, "{path} {status}");
            assert_ne!(status, 500, "{path}: {envelope}");
        }
        assert!(sluice.process.try_wait().is_none(), "sluice exited");
    }
    let (status, _) = query(&sluice, "up").await;
    assert_eq!(status, 200);
}

/// Malformed queries, each answered by Prometheus with a positioned parse
/// error; sluice must answer each with the same status and words.
const MALFORMED: &[&str] = &[
    "1 +",
    "foo bar",
    "sum(x",
    "up{",
    "x offset",
    "sum by job (x)",
    "x{a}",
    "x)",
    "x $",
    "rate(x,)",
    "(x)[5m]",
    "rate(x)",
    "abs(1,2)",
    "1 == 1",
    "x[5m",
    "x[5m:",
    "x @ foo",
    "sum(x) by (a",
    "x{a=1}",
    "foo{",
    "1 and 2",
    "-\"a\"",
    "x[5m] + 1",
    "\"a\" + 1",
    "count_values(1, x)",
    "topk(x, y)",
    "unknownfn(x)",
    "x offset 5m[5m]",
    "}",
    "x]",
    "1 +\n foo bar",
    "sum without(a b) (x)",
    "{}",
    "sum(rate(x[5m])) by",
    "x + on(a) group_left y",
    "x and on(a) group_left y",
    "sum(x[5m])",
    "rate(x[5m] offset)",
    "x @ 1 @ 2",
    "x offset 1m offset 2m",
    "histogram_quantile(0.9)",
    "label_replace(x, 1, 2, 3, 4)",
    "x[5m:1m] [5m]",
    "(x)[5m:]",
    "1 + \"a\"",
    "count_values(\"a\")",
    "quantile(x)",
    "x{a=\"b\"",
    "x{a=\"b\",,}",
    "x{=\"b\"}",
    "sum by (a,) (x)",
    "sum by () (x)",
    "time(1)",
    "vector()",
    "abs()",
    "x offset -",
    "x{a!b}",
    "a !~ b",
    "x == bool 1",
    "1 > bool 2 > 3",
    "sum(x) without",
    "((x)",
    "x + ",
    "-",
    "rate(x[5m])[5m]",
    "x[5m] offset 1m [1m]",
    "topk(3, x[5m])",
    "sum(x,y)",
    "x{a=\"\\q\"}",
    "x{a='b}",
    "abs(x) bool",
    "scalar(x) == scalar(y)",
    "vector(1) and 1",
    "min_over_time(rate(x[5m])[5m])",
    "1 unless 2",
    "x unless on(a) group_right y",
];

/// Where sluice's words differ from Prometheus's: Go's own regular
/// expression and number syntax errors, which another parser cannot repeat.
const WORDED_OTHERWISE: &[&str] = &["x{a=~\"(\"}", "foo[5x]", "1.2.3", "0x"];

#[tokio::test]
async fn parse_errors_match_prometheus_word_for_word() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let sluice = start_sluice_over(&prometheus).await;
    for text in MALFORMED.iter().chain(WORDED_OTHERWISE) {
        let url = format!(
            "{}/api/v1/query?{}",
            prometheus.url(),
            form_urlencode(&[("query", text)])
        );
        let (want_status, _, body) = http_request("GET", &url, &[], Vec::new()).await;
        let want: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let (status, got) = post(&sluice, "/api/v1/query", &[("query", text)]).await;
        assert_eq!(status, want_status, "{text}: {got}");
        if WORDED_OTHERWISE.contains(text) {
            assert_eq!(got["errorType"], "bad_data", "{text}");
            continue;
        }
        assert_eq!(got["error"], want["error"], "{text}");
    }
}
