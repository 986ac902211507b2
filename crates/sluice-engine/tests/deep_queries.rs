//! The deepest queries the parser accepts must evaluate within the stack
//! sluice gives every thread that may recurse over a tree
//! ([`sluice_promql::STACK_BYTES`]), in a debug build, where frames are
//! largest: evaluation, printing, cloning and dropping all recurse once per
//! level of the tree.

use std::time::{Duration, Instant};

use sluice_engine::{Engine, EngineError, MemoryStorage, QueryOptions};
use sluice_promql::MAX_DEPTH;

/// Queries of every shape of nesting, each close to `MAX_DEPTH` levels.
fn deepest_queries() -> Vec<String> {
    let n = MAX_DEPTH - 4;
    vec![
        format!("{}x{}", "(".repeat(n), ")".repeat(n)),
        vec!["x"; n].join(" + "),
        vec!["x"; n].join(" or "),
        vec!["1"; n].join(" ^ "),
        format!("{}x{}", "sum(".repeat(n), ")".repeat(n)),
        format!("{}x{}", "abs(".repeat(n), ")".repeat(n)),
        format!("{}x", "-".repeat(n)),
        format!("{}x{}", "(1 + ".repeat(n / 2), ")".repeat(n / 2)),
        format!(
            "{}x{}",
            "label_replace(".repeat(n),
            ", \"a\", \"b\", \"c\", \"(.*)\")".repeat(n)
        ),
    ]
}

fn storage() -> MemoryStorage {
    let storage = MemoryStorage::new();
    for job in ["a", "b"] {
        let labels = sluice_engine::Labels::from_pairs([("__name__", "x"), ("job", job)]);
        let samples: Vec<(i64, f64)> = (0..20).map(|i| (i * 60_000, i as f64)).collect();
        storage.append(&labels, &samples);
    }
    storage
}

#[test]
fn the_deepest_accepted_queries_evaluate_within_the_stack_sluice_gives() {
    let queries = deepest_queries();
    let evaluated = std::thread::Builder::new()
        .stack_size(sluice_promql::STACK_BYTES)
        .spawn(move || {
            let engine = Engine::new();
            let storage = storage();
            let options = QueryOptions::default();
            let mut answered = 0;
            for query in &queries {
                let expr = sluice_promql::parse(query).expect(query);
                let printed = expr.to_string();
                assert!(!printed.is_empty());
                drop((*expr).clone());
                let instant = engine.instant(&storage, query, 600_000, &options);
                let range = engine.range(&storage, query, 0, 1_200_000, 60_000, &options);
                // Errors are fine (types, many-to-many); crashing is not.
                answered += usize::from(instant.is_ok()) + usize::from(range.is_ok());
            }
            answered
        })
        .expect("thread starts")
        .join()
        .expect("no stack overflow or panic");
    assert!(evaluated >= 10, "most deep queries evaluate: {evaluated}");
}

#[test]
fn one_level_deeper_is_refused_with_a_clear_error() {
    let query = format!("{}x{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    let error = Engine::new()
        .instant(&storage(), &query, 0, &QueryOptions::default())
        .expect_err("too deep");
    assert!(error.to_string().contains("nests more than"), "{error}");
}

/// Nested subqueries multiply their steps at every level: the deepest ones
/// could run for ages, so they must stop at the query's deadline.
#[test]
fn nested_subqueries_stop_at_their_deadline() {
    let n = MAX_DEPTH / 2 - 2;
    let query = format!("{}x{}", "max_over_time(".repeat(n), "[2m:1m])".repeat(n));
    let outcome = std::thread::Builder::new()
        .stack_size(sluice_promql::STACK_BYTES)
        .spawn(move || {
            let options = QueryOptions {
                deadline: Some(Instant::now() + Duration::from_millis(500)),
                ..QueryOptions::default()
            };
            let started = Instant::now();
            let result = Engine::new().instant(&storage(), &query, 600_000, &options);
            (result.map(|_| ()), started.elapsed())
        })
        .expect("thread starts")
        .join()
        .expect("no stack overflow or panic");
    assert!(
        matches!(outcome.0, Err(EngineError::Timeout)),
        "{:?}",
        outcome.0
    );
    assert!(outcome.1 < Duration::from_secs(5), "took {:?}", outcome.1);
}
