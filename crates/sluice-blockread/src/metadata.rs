//! `series`, `labels` and `label/<name>/values` over the blocks. Without
//! selectors, names and values come straight from the blocks' index headers
//! (as Prometheus answers them); with selectors, from the matching series.

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
                .select(&matchers, start, end, None)
                .map_err(execution)?
            {
                found.insert(series.labels);
            }
        }
    }
    Ok(found.into_iter().collect())
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
    } else {
        for labels in series(storage, selectors, start, end)? {
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
    } else {
        for labels in series(storage, selectors, start, end)? {
            values.extend(labels.get(name).map(str::to_owned));
        }
    }
    values.remove("");
    Ok(values.into_iter().collect())
}
