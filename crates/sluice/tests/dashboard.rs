//! The Grafana dashboard in `operations/grafana-dashboard.json` stays
//! usable: every panel's PromQL is answered without error by a live sluice
//! (all-in-one, its own store and engine), and every sluice metric a panel
//! reads is one the code still registers, so a renamed metric fails here
//! rather than leaving an empty panel.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::start_sluice;
use sluice_testkit::{form_urlencode, http_get};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `expr` of every panel target, with the panel's title.
fn panel_queries() -> Vec<(String, String)> {
    let path = repository().join("operations/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            queries.push((title, expr.to_owned()));
        }
    }
    queries
}

/// Grafana's variables, as Grafana would fill them in.
fn with_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
}

/// The `sluice_*` metric families an expression reads (histogram series
/// suffixes removed).
fn metric_families(expr: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("sluice_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        families.insert(family.to_owned());
        rest = &tail[end..];
    }
    families
}

/// All Rust source under `crates/*/src`, concatenated.
fn registered_source() -> String {
    let mut text = String::new();
    let mut stack = vec![repository().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read crates").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "tests" && name != "benches" {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    text
}

#[test]
fn every_panel_reads_a_metric_sluice_registers() {
    let source = registered_source();
    let queries = panel_queries();
    assert!(queries.len() >= 20, "the dashboard lost its panels");
    for (title, expr) in &queries {
        let families = metric_families(expr);
        assert!(
            !families.is_empty(),
            "panel {title:?} reads no sluice metric"
        );
        for family in families {
            assert!(
                source.contains(&format!("\"{family}\"")),
                "panel {title:?} reads {family}, which no crate registers"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_is_answered_by_a_live_sluice() {
    let sluice = start_sluice("dashboard", &[]).await;
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for (title, expr) in panel_queries() {
        let params = form_urlencode(&[
            ("query", &with_variables(&expr)),
            ("start", &(end - 3600).to_string()),
            ("end", &end.to_string()),
            ("step", "15"),
        ]);
        let (status, _, body) =
            http_get(&format!("{}/api/v1/query_range?{params}", sluice.url())).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "panel {title:?}: {expr}\n{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(answer["status"], "success", "panel {title:?}: {body}");
        assert_eq!(answer["data"]["resultType"], "matrix", "panel {title:?}");
    }
}
