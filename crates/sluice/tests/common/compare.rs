//! Asking sluice and a Prometheus the same API requests and comparing the
//! answers: same status, same `data` (sample values to 1e-9 relative, the
//! rest exactly), the same error type, and every warning Prometheus gives
//! also given by sluice.
//!
//! Sample values are compared to 1e-9 relative because the engine adds with
//! Kahan summation as Prometheus 3 does in `sum`, `avg` and the
//! `*_over_time` functions, where 2.42 adds plainly, so the last digits can
//! differ (`3.25` against 2.42's `3.249999999999999`). Where values cancel
//! (an average of samples summing to zero) the residue is relative to the
//! samples, not to the near-zero result (`0` against 2.42's `5.55e-17`), so
//! values under 1 in size are compared to 1e-9 absolute instead.
//!
//! Annotations sluice adds and 2.42 lacks are collected, not failed:
//! PromQL warnings and infos (`PromQL warning: ...`, `PromQL info: ...`)
//! came with Prometheus 2.44's annotations; 2.42 has neither, and never an
//! `infos` field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures_util::StreamExt;
use serde_json::Value;
use sluice_testkit::{form_urlencode, http_get};

/// One API request, asked of both servers.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub path: &'static str,
    pub params: Vec<(String, String)>,
}

impl ApiRequest {
    pub fn instant(query: &str, time_ms: i64) -> ApiRequest {
        ApiRequest {
            path: "/api/v1/query",
            params: vec![
                ("query".into(), query.into()),
                ("time".into(), seconds(time_ms)),
            ],
        }
    }

    pub fn range(query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> ApiRequest {
        ApiRequest {
            path: "/api/v1/query_range",
            params: vec![
                ("query".into(), query.into()),
                ("start".into(), seconds(start_ms)),
                ("end".into(), seconds(end_ms)),
                ("step".into(), seconds(step_ms)),
            ],
        }
    }

    /// `series`, `labels` or `label/<name>/values` over `[start, end]`.
    pub fn metadata(
        path: &'static str,
        matchers: &[&str],
        start_ms: i64,
        end_ms: i64,
    ) -> ApiRequest {
        let mut params: Vec<(String, String)> = matchers
            .iter()
            .map(|matcher| ("match[]".to_owned(), (*matcher).to_owned()))
            .collect();
        params.push(("start".into(), seconds(start_ms)));
        params.push(("end".into(), seconds(end_ms)));
        ApiRequest { path, params }
    }

    /// Whether the order of an instant vector result is part of the answer:
    /// only for `sort`, `sort_desc`, `topk` and `bottomk` at the top. Other
    /// instant vectors come in an order Prometheus leaves unspecified (from
    /// the iteration of a Go map, for a function over a subquery or an
    /// aggregation), so they are compared as sets, as Prometheus's own test
    /// scripts do with `eval` against `eval_ordered`.
    fn ordered(&self) -> bool {
        let query = self.query();
        ["sort", "topk", "bottomk"]
            .iter()
            .any(|function| query.starts_with(function))
    }

    fn query(&self) -> &str {
        self.params
            .iter()
            .find(|(key, _)| key == "query")
            .map_or("", |(_, value)| value.as_str())
    }

    /// `Some(true)` for `topk`, `Some(false)` for `bottomk` at the top.
    fn selects_k(&self) -> Option<bool> {
        let query = self.query();
        if query.starts_with("topk") {
            return Some(true);
        }
        query.starts_with("bottomk").then_some(false)
    }

    fn url(&self, base: &str) -> String {
        let pairs: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        format!("{base}{}?{}", self.path, form_urlencode(&pairs))
    }
}

/// Milliseconds as the API's seconds with a fraction.
pub fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// What comparing a list of requests found.
#[derive(Debug, Default)]
pub struct Comparison {
    pub compared: usize,
    /// Requests whose answers differ, described with both bodies.
    pub mismatches: Vec<String>,
    /// Annotations sluice gave and Prometheus did not, with how often.
    pub added_annotations: BTreeMap<String, usize>,
    /// How many answers were errors (on both sides, of the same type).
    pub errors: usize,
    /// How many successful answers held no series at all.
    pub empty: usize,
}

impl Comparison {
    /// Panics listing every query whose answers differ, and the first few
    /// mismatches in full (all of them go to `$SLUICE_COMPARE_LOG` if set).
    pub fn assert_no_mismatch(&self, what: &str) {
        if self.mismatches.is_empty() {
            return;
        }
        if let Some(log) = std::env::var_os("SLUICE_COMPARE_LOG") {
            let _ = std::fs::write(log, self.mismatches.join("\n"));
        }
        let queries: BTreeSet<&str> = self
            .mismatches
            .iter()
            .filter_map(|mismatch| mismatch.lines().next())
            .map(|line| line.split(" [(").nth(1).unwrap_or(line))
            .map(|params| params.split("), (").next().unwrap_or(params))
            .collect();
        let shown: Vec<&str> = self
            .mismatches
            .iter()
            .take(5)
            .map(|mismatch| &mismatch[..mismatch.len().min(3000)])
            .collect();
        panic!(
            "{what}: {} of {} answers differ, for {} queries:\n{}\n\nfirst ones:\n{}",
            self.mismatches.len(),
            self.compared,
            queries.len(),
            queries.into_iter().collect::<Vec<_>>().join("\n"),
            shown.join("\n")
        );
    }
}

/// An answer: HTTP status and parsed body.
type Answer = (u16, Value);

async fn fetch(url: String) -> Answer {
    let (status, _, body) = http_get(&url).await;
    let parsed = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, parsed)
}

/// Asks both servers every request, `parallel` requests at a time, and
/// compares the answers.
pub async fn compare(
    sluice: &str,
    prometheus: &str,
    requests: &[ApiRequest],
    parallel: usize,
) -> Comparison {
    let answers: Vec<(usize, Answer, Answer)> =
        futures_util::stream::iter(requests.iter().enumerate())
            .map(|(index, request)| {
                let (ours, theirs) = (request.url(sluice), request.url(prometheus));
                async move {
                    let (got, want) = futures_util::join!(fetch(ours), fetch(theirs));
                    (index, got, want)
                }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    let mut comparison = Comparison::default();
    for (index, mut got, mut want) in answers {
        comparison.compared += 1;
        if !requests[index].ordered() {
            sort_vector(&mut got.1);
            sort_vector(&mut want.1);
        }
        if let Some(top) = requests[index].selects_k() {
            forget_ties(&mut got.1, top);
            forget_ties(&mut want.1, top);
        }
        if let Err(difference) = judge(&got, &want, &mut comparison) {
            comparison.mismatches.push(format!(
                "{} {:?}: {difference}\n  sluice:     {} {}\n  prometheus: {} {}",
                requests[index].path, requests[index].params, got.0, got.1, want.0, want.1
            ));
        }
    }
    comparison
}

/// Sorts an instant vector result by its series' labels.
fn sort_vector(body: &mut Value) {
    if body["data"]["resultType"] != "vector" {
        return;
    }
    if let Some(result) = body["data"]["result"].as_array_mut() {
        result.sort_by_key(|sample| sample["metric"].to_string());
    }
}

/// Rewrites a `topk` (`top`) or `bottomk` answer so that ties at its edge
/// do not matter: per step, the series of each value, except for the
/// step's last value kept (smallest for `topk`), of which only the count
/// counts. Prometheus 2.44 (#12190) changed how the heap replaces its top,
/// so 2.42 and 3.x keep different ones of equal values and order them
/// differently; the engine follows 3.x. Values within 1e-9 relative of
/// the edge tie with it: sums in another order (a sharded query) may part
/// two equal values by an ulp.
fn forget_ties(body: &mut Value, top: bool) {
    let Some(result) = body["data"]["result"].as_array() else {
        return;
    };
    // step -> (value, series labels)
    let mut steps: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    for series in result {
        let points = match series.get("value") {
            Some(point) => vec![point.clone()],
            None => series["values"].as_array().cloned().unwrap_or_default(),
        };
        for point in points {
            let value = point[1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            steps
                .entry(point[0].to_string())
                .or_default()
                .push((value, series["metric"].to_string()));
        }
    }
    let mut canonical = serde_json::Map::new();
    for (step, mut kept) in steps {
        kept.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let edge = if top { kept.first() } else { kept.last() }.map(|(value, _)| *value);
        let ties = |value: f64| {
            edge.is_some_and(|edge| {
                value.to_bits() == edge.to_bits()
                    || (value.is_nan() && edge.is_nan())
                    || (value - edge).abs() <= 1e-9 * value.abs().max(edge.abs())
            })
        };
        let entries: Vec<Value> = kept
            .iter()
            .map(|(value, labels)| {
                let tied = ties(*value);
                let value = Value::String(format!("{value}"));
                match tied {
                    true => Value::Array(vec![value]),
                    false => Value::Array(vec![value, Value::String(labels.clone())]),
                }
            })
            .collect();
        canonical.insert(step, Value::Array(entries));
    }
    body["data"]["result"] = Value::Object(canonical);
}

fn annotations(body: &Value, key: &str) -> BTreeSet<String> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether sluice's answer `got` agrees with Prometheus's `want`.
fn judge(got: &Answer, want: &Answer, comparison: &mut Comparison) -> Result<(), String> {
    if got.0 != want.0 {
        return Err("status differs".into());
    }
    if want.0 != 200 {
        comparison.errors += 1;
        return match got.1.get("errorType") == want.1.get("errorType") {
            true => Ok(()),
            false => Err("error type differs".into()),
        };
    }
    if !same(&got.1["data"], &want.1["data"]) {
        return Err("data differs".into());
    }
    let result = &want.1["data"]["result"];
    let series = &want.1["data"];
    if result.as_array().is_some_and(Vec::is_empty) || series.as_array().is_some_and(Vec::is_empty)
    {
        comparison.empty += 1;
    }
    let theirs = annotations(&want.1, "warnings");
    let mut ours = annotations(&got.1, "warnings");
    ours.extend(annotations(&got.1, "infos"));
    if let Some(missing) = theirs.difference(&ours).next() {
        return Err(format!("warning {missing:?} missing"));
    }
    for added in ours.difference(&theirs) {
        if !added.starts_with("PromQL ") {
            return Err(format!("unexpected warning {added:?}"));
        }
        *comparison
            .added_annotations
            .entry(annotation_kind(added))
            .or_default() += 1;
    }
    Ok(())
}

/// An annotation without what varies between queries (metric names,
/// positions), to count them by kind.
fn annotation_kind(annotation: &str) -> String {
    let kind = annotation.split(['"', '(']).next().unwrap_or(annotation);
    kind.trim_end().to_owned()
}

/// Whether two API answers agree: same structure and strings, numbers
/// (sample values are strings in the API) within 1e-9 relative (absolute
/// under 1).
pub fn same(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::String(a), Value::String(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) if a != b => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| same(x, y)))
        }
        _ => got == want,
    }
}

/// Copies the blocks (ULID folders) of a TSDB directory into `to`, and
/// returns how many.
pub fn copy_blocks(from: &Path, to: &Path) -> usize {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 26 && entry.path().join("meta.json").exists() {
            sluice_testkit::copy_dir(&entry.path(), &to.join(&name)).unwrap();
            copied += 1;
        }
    }
    copied
}

/// Panics with both answers unless `got` (sluice's) and `want`
/// (Prometheus's) have the same status and agree by [`same`]. Instant
/// vectors are compared as sets unless `what` names a function whose order
/// is part of the answer (a sharded aggregation's groups come in another
/// order, which Prometheus leaves unspecified).
pub fn assert_agree(got: &(u16, String), want: &(u16, String), what: &str) {
    let ordered = ["sort", "topk", "bottomk"]
        .iter()
        .any(|function| what.contains(function));
    let parse = |body: &str| {
        let mut value = serde_json::from_str::<Value>(body).unwrap_or_default();
        if !ordered {
            sort_vector(&mut value);
        }
        value
    };
    assert!(
        got.0 == want.0 && same(&parse(&got.1), &parse(&want.1)),
        "{what}:\n sluice:     {got:?}\n prometheus: {want:?}"
    );
}

/// The status and body of `GET base+path?params`.
pub async fn answer(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let url = format!("{base}{path}?{}", sluice_testkit::form_urlencode(params));
    let (status, _, body) = sluice_testkit::http_get(&url).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}
