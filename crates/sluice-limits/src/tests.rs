use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::reload::{ReloadMetrics, spawn};

fn overrides() -> Overrides {
    Overrides::new(TenantLimits::default()).unwrap()
}

fn apply(overrides: &Overrides, text: &str) -> Result<(), LimitsError> {
    overrides.apply(&RuntimeConfig::parse(text)?)
}

#[test]
fn a_tenant_keeps_the_defaults_its_overrides_do_not_name() {
    let limits = overrides();
    apply(
        &limits,
        "overrides:\n  team-a:\n    max_query_length: 2h\n    max_query_parallelism: 3\n  team-b:\n",
    )
    .unwrap();
    let a = limits.tenant("team-a");
    assert_eq!(a.limits.max_query_length, Duration::from_secs(7200));
    assert_eq!(a.limits.max_query_parallelism, 3);
    assert_eq!(a.limits.max_outstanding_requests_per_tenant, 100);
    assert_eq!(limits.tenant("team-b").limits, TenantLimits::default());
    assert_eq!(limits.tenant("anyone").limits, TenantLimits::default());
}

#[test]
fn a_federated_query_gets_the_strictest_limits_of_its_tenants() {
    let limits = overrides();
    apply(
        &limits,
        "overrides:\n  a:\n    max_query_length: 2h\n    max_query_parallelism: 0\n    blocked_queries:\n      - pattern: 'up'\n  b:\n    max_query_length: 0s\n    max_query_parallelism: 3\n    results_cache_ttl: 1h\n",
    )
    .unwrap();
    let both = limits.tenant("a|b");
    assert_eq!(both.limits.max_query_length, Duration::from_secs(7200));
    assert_eq!(both.limits.max_query_parallelism, 3, "0 is no limit");
    assert_eq!(both.limits.results_cache_ttl, Duration::from_secs(3600));
    assert!(both.blocked("up").is_some(), "a's blocked query");
    assert!(limits.tenant("b").blocked("up").is_none());
    assert_eq!(limits.tenant("a|c").limits.max_query_parallelism, 14);
}

#[test]
fn a_broken_file_is_refused_whole_and_changes_nothing() {
    let limits = overrides();
    apply(&limits, "overrides:\n  a:\n    max_query_lookback: 1d\n").unwrap();
    for broken in [
        "overrides:\n  a:\n    max_query_lenght: 1h\n",
        "overrides:\n  a:\n    max_query_length: soon\n",
        "overrides:\n  a:\n    max_query_length: -1h\n",
        "overrides:\n  a:\n    blocked_queries:\n      - pattern: '('\n        regex: true\n",
        "overrides:\n  a:\n    ingestion_rate: -5\n",
        "overrides:\n  a: 3\n",
        "overide:\n  a: {}\n",
        "overrides: [",
    ] {
        assert!(apply(&limits, broken).is_err(), "accepted {broken:?}");
        assert_eq!(
            limits.tenant("a").limits.max_query_lookback,
            Duration::from_secs(86_400),
            "{broken:?} changed what was in force"
        );
    }
}

#[test]
fn blocked_queries_match_exactly_or_by_an_anchored_regex() {
    let limits = overrides();
    let file = "overrides:\n  a:\n    blocked_queries:\n      - pattern: ' sum(rate(x[5m])) '\n      - pattern: '.*env=\"prod\".*'\n        regex: true\n        reason: too costly\n      - pattern: 'up'\n        regex: true\n";
    apply(&limits, file).unwrap();
    let a = limits.tenant("a");
    assert!(a.blocked("sum(rate(x[5m]))").is_some());
    assert!(a.blocked("sum(rate(x[1m]))").is_none());
    let rule = a.blocked("count({env=\"prod\",\njob=\"x\"})").unwrap();
    assert_eq!(
        blocked_message(rule),
        "the request has been blocked by the cluster administrator: too costly"
    );
    assert!(a.blocked("up").is_some());
    assert!(
        a.blocked("up + 1").is_none(),
        "a regex must match the whole query"
    );
    assert!(limits.tenant("b").blocked("up").is_none());
}

#[test]
fn runtime_config_shows_whole_limits_or_only_the_differences() {
    let limits = overrides();
    apply(&limits, "overrides:\n  a:\n    max_query_length: 12h\n").unwrap();
    let diff = limits.render(true);
    assert_eq!(diff, "overrides:\n  a:\n    max_query_length: 12h\n");
    let whole = limits.render(false);
    assert!(whole.contains("max_query_length: 12h"), "{whole}");
    assert!(whole.contains("results_cache_ttl: 1w"), "{whole}");
    assert!(
        whole.contains("max_outstanding_requests_per_tenant: 100"),
        "{whole}"
    );
}

#[tokio::test]
async fn a_changed_file_applies_within_a_period_and_a_broken_one_changes_nothing() {
    let dir = sluice_testkit::TempDir::new("sluice-limits").unwrap();
    let path = dir.path().join("runtime.yaml");
    std::fs::write(&path, "overrides:\n  a:\n    max_query_parallelism: 2\n").unwrap();
    let limits = Arc::new(overrides());
    reload::load(&limits, &path).unwrap();
    assert_eq!(limits.tenant("a").limits.max_query_parallelism, 2);
    let registry = prometheus::Registry::new();
    let period = Duration::from_millis(20);
    let task = spawn(
        limits.clone(),
        path.clone(),
        period,
        ReloadMetrics::new(&registry),
    );
    let gauge = || registry.gather()[0].get_metric()[0].get_gauge().get_value();

    std::fs::write(&path, "overrides:\n  a:\n    max_query_parallelism: 5\n").unwrap();
    wait_for(|| limits.tenant("a").limits.max_query_parallelism == 5).await;
    assert_eq!(gauge(), 1.0);

    std::fs::write(&path, "overrides:\n  a:\n    max_query_parallelism: lots\n").unwrap();
    wait_for(|| gauge() == 0.0).await;
    assert_eq!(limits.tenant("a").limits.max_query_parallelism, 5);

    std::fs::write(&path, "overrides:\n  a:\n    max_query_parallelism: 5\n").unwrap();
    wait_for(|| gauge() == 1.0).await;
    task.abort();
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(300)))]

    /// Any text, or a good file with bytes changed, is parsed or refused,
    /// never a panic, and a refusal leaves the limits as they were.
    #[test]
    fn any_text_is_parsed_or_refused(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        noise in ".{0,64}",
    ) {
        let good = "overrides:\n  a:\n    max_query_length: 1h\n    blocked_queries:\n      - pattern: 'x.*'\n        regex: true\n    ingestion_rate: 5\n";
        let mut bytes = good.as_bytes().to_vec();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let limits = overrides();
        for text in [String::from_utf8_lossy(&bytes).into_owned(), noise] {
            let before = limits.tenant("a").limits.clone();
            if apply(&limits, &text).is_err() {
                prop_assert_eq!(limits.tenant("a").limits.clone(), before);
            }
        }
    }
}
