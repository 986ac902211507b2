//! `series`, `labels` and `label/<name>/values` over the blocks. Without
//! selectors, names and values come straight from the blocks' index headers
//! (as Prometheus answers them); with selectors, from the matching series.
//!
//! Time is honoured as Prometheus honours it: `series` returns the series
//! with a chunk in `[start, end]`, while `labels` and `label/<name>/values`
//! with selectors read the postings of every block overlapping the range,
//! whatever the times of a series' chunks in it (a block's granularity).

use std::collections::BTreeSet;

use promql_parser::label::Matcher as EngineMatcher;
use sluice_block::Labels;
use sluice_engine::EngineError;

use crate::{BlockStorage, block_matchers, execution};

/// The matcher sets of a series selector such as `up{job="a"}` (several
/// for `{a="1" or b="2"}`), the metric name folded in as the engine does.
pub fn selector_matchers(text: &str) -> Result<Vec<Vec<EngineMatcher>>, EngineError> {
    use promql_parser::label::{METRIC_NAME, MatchOp};
    use promql_parser::parser::Expr;

    let expr = promql_parser::parser::parse(text)
        .map_err(|error| EngineError::BadData(format!("invalid parameter \"match[]\": {error}")))?;
    let Expr::VectorSelector(selector) = expr else {
        return Err(EngineError::BadData(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        )));
    };
    let name = selector
        .name
        .as_ref()
        .map(|name| EngineMatcher::new(MatchOp::Equal, METRIC_NAME, name));
    let mut sets = if selector.matchers.or_matchers.is_empty() {
        vec![selector.matchers.matchers.clone()]
    } else {
        selector.matchers.or_matchers.clone()
    };
    for set in &mut sets {
        if let Some(name) = &name
            && !set.iter().any(|matcher| matcher.name == METRIC_NAME)
        {
            set.push(name.clone());
        }
    }
    Ok(sets)
}

/// The label sets of the series matching any of `selectors` in `[start,
/// end]`, sorted and without duplicates.
pub fn series(
    storage: &BlockStorage,
    selectors: &[Vec<EngineMatcher>],
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, EngineError> {
    let mut found = BTreeSet::new();
    for selector in selectors {
        let matchers = block_matchers(selector)?;
        for block in storage.overlapping(start, end) {
            for series in block
                .select_series(&matchers, start, end, None)
                .map_err(execution)?
            {
                found.insert(series.labels);
                within_limit(storage, found.len())?;
            }
        }
        if let Some(head) = &storage.head {
            found.extend(head.series(&matchers, start, end));
            within_limit(storage, found.len())?;
        }
    }
    Ok(found.into_iter().collect())
}

/// The label sets of the series matching any of `selectors` in the blocks
/// that overlap `[start, end]`, whatever the times of their chunks.
fn series_in_blocks(
    storage: &BlockStorage,
    selectors: &[Vec<EngineMatcher>],
    start: i64,
    end: i64,
) -> Result<BTreeSet<Labels>, EngineError> {
    let mut found = BTreeSet::new();
    for selector in selectors {
        let matchers = block_matchers(selector)?;
        for block in storage.overlapping(start, end) {
            let index = block.index();
            for reference in index.select(&matchers).map_err(execution)? {
                found.insert(index.series(reference).map_err(execution)?.labels);
                within_limit(storage, found.len())?;
            }
        }
        if let Some(head) = &storage.head {
            found.extend(head.series(&matchers, start, end));
            within_limit(storage, found.len())?;
        }
    }
    Ok(found)
}

/// The tenant's `max_fetched_series_per_query`, over `found` series.
fn within_limit(storage: &BlockStorage, found: usize) -> Result<(), EngineError> {
    match &storage.budget {
        Some(budget) => budget.check_series(found),
        None => Ok(()),
    }
}

/// Every label name in `[start, end]`, or of the series `selectors` match.
pub fn label_names(
    storage: &BlockStorage,
    selectors: &[Vec<EngineMatcher>],
    start: i64,
    end: i64,
) -> Result<Vec<String>, EngineError> {
    let mut names = BTreeSet::new();
    if selectors.is_empty() {
        for block in storage.overlapping(start, end) {
            names.extend(block.index().label_names().into_iter().map(str::to_owned));
        }
        for labels in head_series(storage, start, end) {
            names.extend(labels.iter().map(|label| label.name.clone()));
        }
    } else {
        for labels in series_in_blocks(storage, selectors, start, end)? {
            names.extend(labels.iter().map(|label| label.name.clone()));
        }
    }
    names.remove("");
    Ok(names.into_iter().collect())
}

/// Every value of label `name` in `[start, end]`, or of the series
/// `selectors` match.
pub fn label_values(
    storage: &BlockStorage,
    name: &str,
    selectors: &[Vec<EngineMatcher>],
    start: i64,
    end: i64,
) -> Result<Vec<String>, EngineError> {
    let mut values = BTreeSet::new();
    if selectors.is_empty() {
        for block in storage.overlapping(start, end) {
            values.extend(
                block
                    .index()
                    .label_values(name)
                    .into_iter()
                    .map(str::to_owned),
            );
        }
        for labels in head_series(storage, start, end) {
            values.extend(labels.get(name).map(str::to_owned));
        }
    } else {
        for labels in series_in_blocks(storage, selectors, start, end)? {
            values.extend(labels.get(name).map(str::to_owned));
        }
    }
    values.remove("");
    Ok(values.into_iter().collect())
}

/// Every series of the head in `[start, end]` (none without a head).
fn head_series(storage: &BlockStorage, start: i64, end: i64) -> Vec<Labels> {
    match &storage.head {
        Some(head) => head.series(&[], start, end),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use sluice_block::{BlockWriter, Sample};
    use sluice_bucket::{Bucket, BucketConfig};
    use sluice_metastore::Metastore;

    use super::*;

    #[test]
    fn names_and_values_with_selectors_have_a_blocks_granularity() {
        let runtime = sluice_testkit::io_runtime();
        let dir = sluice_testkit::TempDir::new("blockread-metadata").unwrap();
        let minutes = |from: i64, to: i64| -> Vec<Sample> {
            (from..to)
                .map(|minute| Sample {
                    t: minute * 60_000,
                    v: 1.0,
                })
                .collect()
        };
        let gone = Labels::from_pairs(&[("__name__", "x"), ("job", "gone"), ("zone", "a")]);
        let kept = Labels::from_pairs(&[("__name__", "x"), ("job", "kept")]);
        let mut writer = BlockWriter::new();
        writer.add_series(gone.clone(), minutes(0, 10)).unwrap();
        writer.add_series(kept.clone(), minutes(0, 120)).unwrap();
        writer.write(dir.path()).unwrap();
        let config = BucketConfig {
            filesystem_dir: dir.path().to_owned(),
            ..BucketConfig::default()
        };
        let bucket = Bucket::open(&config, runtime.handle().clone()).unwrap();
        let metastore = Metastore::new(bucket, &prometheus::Registry::new());
        metastore.sync().unwrap();
        let storage = BlockStorage::new(&metastore, "anonymous", i64::MIN, i64::MAX);
        let x = selector_matchers("x").unwrap();
        let (start, end) = (3_600_000, 7_200_000);
        // `gone` has no chunk in the last hour, but its block does.
        assert_eq!(series(&storage, &x, start, end).unwrap(), vec![kept]);
        assert_eq!(
            label_values(&storage, "job", &x, start, end).unwrap(),
            vec!["gone", "kept"]
        );
        assert_eq!(
            label_names(&storage, &x, start, end).unwrap(),
            vec!["__name__", "job", "zone"]
        );
    }
}
