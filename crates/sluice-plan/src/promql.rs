//! What splitting and caching need to know about a PromQL expression, read
//! from promql-parser's AST rather than the query text so that a matcher or
//! string that merely contains `@ start()` is never mistaken for the modifier.

use std::time::{Duration, SystemTime};

use promql_parser::label::Matchers;
use promql_parser::parser::{self, AtModifier, Expr, Offset};

/// The time-related modifiers found in an expression.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct TimeModifiers {
    /// Some `@ start()` or `@ end()`: the result depends on the query's own range.
    pub(crate) start_or_end: bool,
    /// The latest fixed `@` timestamp, in ms.
    pub(crate) max_at_ms: Option<i64>,
    /// The sum of every negative offset, in ms (positive number). A sum over
    /// the whole tree bounds how far into the future any nesting of subqueries
    /// and selectors can read, at the cost of being pessimistic for siblings.
    pub(crate) negative_offsets_ms: i64,
}

fn duration_ms(duration: &Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn system_time_ms(time: &SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => duration_ms(&after),
        Err(before) => -duration_ms(&before.duration()),
    }
}

fn note(modifiers: &mut TimeModifiers, at: Option<&AtModifier>, offset: Option<&Offset>) {
    match at {
        Some(AtModifier::Start | AtModifier::End) => modifiers.start_or_end = true,
        Some(AtModifier::At(time)) => {
            let ms = system_time_ms(time);
            modifiers.max_at_ms = Some(modifiers.max_at_ms.map_or(ms, |max| max.max(ms)));
        }
        None => {}
    }
    if let Some(Offset::Neg(duration)) = offset {
        modifiers.negative_offsets_ms = modifiers
            .negative_offsets_ms
            .saturating_add(duration_ms(duration));
    }
}

/// Calls `visit` on every node of `expr`, parents first.
pub(crate) fn walk(expr: &Expr, visit: &mut impl FnMut(&Expr)) {
    visit(expr);
    match expr {
        Expr::Aggregate(aggregate) => {
            walk(&aggregate.expr, visit);
            if let Some(param) = &aggregate.param {
                walk(param, visit);
            }
        }
        Expr::Unary(unary) => walk(&unary.expr, visit),
        Expr::Binary(binary) => {
            walk(&binary.lhs, visit);
            walk(&binary.rhs, visit);
        }
        Expr::Paren(paren) => walk(&paren.expr, visit),
        Expr::Subquery(subquery) => walk(&subquery.expr, visit),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| walk(arg, visit)),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
}

pub(crate) fn walk_mut(expr: &mut Expr, visit: &mut impl FnMut(&mut Expr)) {
    visit(expr);
    match expr {
        Expr::Aggregate(aggregate) => {
            walk_mut(&mut aggregate.expr, visit);
            if let Some(param) = &mut aggregate.param {
                walk_mut(param, visit);
            }
        }
        Expr::Unary(unary) => walk_mut(&mut unary.expr, visit),
        Expr::Binary(binary) => {
            walk_mut(&mut binary.lhs, visit);
            walk_mut(&mut binary.rhs, visit);
        }
        Expr::Paren(paren) => walk_mut(&mut paren.expr, visit),
        Expr::Subquery(subquery) => walk_mut(&mut subquery.expr, visit),
        Expr::Call(call) => call
            .args
            .args
            .iter_mut()
            .for_each(|arg| walk_mut(arg, visit)),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
}

/// The time modifiers of `query`, or `None` when it does not parse or holds
/// a node this crate cannot reason about (an extension).
pub(crate) fn time_modifiers(query: &str) -> Option<TimeModifiers> {
    let expr = sluice_promql::parse(query).ok()?;
    let mut modifiers = TimeModifiers::default();
    let mut understood = true;
    walk(&expr, &mut |node| match node {
        Expr::VectorSelector(selector) => {
            note(
                &mut modifiers,
                selector.at.as_ref(),
                selector.offset.as_ref(),
            );
        }
        Expr::MatrixSelector(matrix) => {
            note(
                &mut modifiers,
                matrix.vs.at.as_ref(),
                matrix.vs.offset.as_ref(),
            );
        }
        Expr::Subquery(subquery) => {
            note(
                &mut modifiers,
                subquery.at.as_ref(),
                subquery.offset.as_ref(),
            );
        }
        Expr::Extension(_) => understood = false,
        _ => {}
    });
    understood.then_some(modifiers)
}

fn fix(at: &mut Option<AtModifier>, start: SystemTime, end: SystemTime) {
    match at {
        Some(AtModifier::Start) => *at = Some(AtModifier::At(start)),
        Some(AtModifier::End) => *at = Some(AtModifier::At(end)),
        _ => {}
    }
}

fn ms_to_system_time(ms: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    }
}

fn sort_matchers(matchers: &mut Matchers) {
    matchers.matchers.sort_by_cached_key(ToString::to_string);
    for group in &mut matchers.or_matchers {
        group.sort_by_cached_key(ToString::to_string);
    }
}

/// `expr` with every selector's matchers in one canonical order. The printer
/// sorts matchers, and their order has no meaning in PromQL, so two trees
/// that differ only in it are the same query.
pub(crate) fn normalized(mut expr: Expr) -> Expr {
    walk_mut(&mut expr, &mut |node| match node {
        Expr::VectorSelector(selector) => sort_matchers(&mut selector.matchers),
        Expr::MatrixSelector(matrix) => sort_matchers(&mut matrix.vs.matchers),
        _ => {}
    });
    expr
}

/// `query` with every `@ start()` / `@ end()` replaced by the fixed
/// timestamps `start_ms` / `end_ms`, printed back to PromQL.
///
/// promql-parser's printer is not guaranteed faithful for every input (it
/// prints a pre-1970 `@` as 0, for one), so the printed text is parsed again
/// and must give the rewritten tree (up to matcher order); otherwise `None`,
/// and the caller must not split.
pub(crate) fn pin_start_end(query: &str, start_ms: i64, end_ms: i64) -> Option<String> {
    let mut expr = Expr::clone(&*sluice_promql::parse(query).ok()?);
    let start = ms_to_system_time(start_ms)?;
    let end = ms_to_system_time(end_ms)?;
    walk_mut(&mut expr, &mut |node| match node {
        Expr::VectorSelector(selector) => fix(&mut selector.at, start, end),
        Expr::MatrixSelector(matrix) => fix(&mut matrix.vs.at, start, end),
        Expr::Subquery(subquery) => fix(&mut subquery.at, start, end),
        _ => {}
    });
    let printed = expr.to_string();
    let reparsed = parser::parse(&printed).ok()?;
    (normalized(reparsed) == normalized(expr)).then_some(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn selector() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("up"),
            Just("http_requests_total"),
            Just("a:b_c"),
            Just("")
        ];
        let matcher = prop_oneof![
            Just(r#"job="api""#),
            Just(r#"job!="a\"b""#),
            Just(r#"path=~"/api/.*""#),
            Just(r#"code!~"5..|4\\d+""#),
            Just(r#"le="+Inf""#),
            Just(r#"x="ünï\ncode""#),
        ];
        let at = prop_oneof![
            Just(""),
            Just(" @ start()"),
            Just(" @ end()"),
            Just(" @ 1700000000"),
            Just(" @ 1700000000.123"),
        ];
        let offset = prop_oneof![
            Just(""),
            Just(" offset 5m"),
            Just(" offset -1h30m"),
            Just(" offset 1d")
        ];
        (name, prop::collection::vec(matcher, 0..3), at, offset).prop_map(
            |(name, matchers, at, offset)| {
                let matchers = if matchers.is_empty() && name.is_empty() {
                    r#"job="x""#.to_owned()
                } else {
                    matchers.join(",")
                };
                if matchers.is_empty() {
                    format!("{name}{at}{offset}")
                } else {
                    format!("{name}{{{matchers}}}{at}{offset}")
                }
            },
        )
    }

    fn range_selector() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("up"), Just(r#"x{job="a"}"#)],
            prop_oneof![Just("5m"), Just("1h"), Just("90s"), Just("1m30s")],
            prop_oneof![Just(""), Just(" @ start()"), Just(" @ 100")],
            prop_oneof![Just(""), Just(" offset -2m"), Just(" offset 1w")],
        )
            .prop_map(|(selector, range, at, offset)| format!("{selector}[{range}]{at}{offset}"))
    }

    fn expression() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            8 => selector(),
            6 => range_selector().prop_map(|r| format!("rate({r})")),
            1 => Just("1.5".to_owned()),
            1 => Just("-2".to_owned()),
            1 => Just("0x1f".to_owned()),
            1 => Just("1e3".to_owned()),
            1 => Just("Inf".to_owned()),
            1 => Just("NaN".to_owned()),
            1 => Just("time()".to_owned()),
        ];
        leaf.prop_recursive(4, 32, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop_oneof![
                        Just("+"),
                        Just("-"),
                        Just("*"),
                        Just("/"),
                        Just("%"),
                        Just("^"),
                        Just("and"),
                        Just("or"),
                        Just("unless"),
                        Just("atan2")
                    ],
                    inner.clone()
                )
                    .prop_map(|(l, op, r)| format!("({l}) {op} ({r})")),
                (
                    inner.clone(),
                    prop_oneof![Just("=="), Just(">"), Just("<=")],
                    Just(" bool"),
                    inner.clone()
                )
                    .prop_map(|(l, op, b, r)| format!("({l}) {op}{b} ({r})")),
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| format!("({l}) * on(job) group_left(instance) ({r})")),
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| format!("({l}) / ignoring(code) ({r})")),
                (
                    prop_oneof![Just("sum"), Just("max"), Just("count"), Just("avg")],
                    prop_oneof![Just(""), Just(" by (job)"), Just(" without (instance, le)")],
                    inner.clone()
                )
                    .prop_map(|(op, grouping, e)| format!("{op}{grouping} ({e})")),
                (prop_oneof![Just("topk"), Just("quantile")], inner.clone())
                    .prop_map(|(op, e)| format!("{op}(0.5, {e})")),
                inner
                    .clone()
                    .prop_map(|e| format!("count_values(\"v\", {e})")),
                inner.clone().prop_map(|e| format!("abs({e})")),
                inner.clone().prop_map(|e| format!("-({e})")),
                (
                    inner.clone(),
                    prop_oneof![Just("[1h:]"), Just("[30m:1m]")],
                    prop_oneof![Just(""), Just(" @ end()"), Just(" offset -5m")]
                )
                    .prop_map(|(e, range, modifier)| format!(
                        "max_over_time(({e}){range}{modifier})"
                    )),
                inner.clone().prop_map(|e| format!(
                    "label_replace({e}, \"dst\", \"$1\", \"src\", \"(.*)\")"
                )),
                inner.prop_map(|e| format!("histogram_quantile(0.9, {e})")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The printer must be faithful on the grammar dashboards use, so
        /// that refusing to split (when it is not) stays rare.
        #[test]
        fn print_then_parse_is_parse(query in expression()) {
            // Generated text may be ill-typed; only what parses is in scope.
            if let Ok(expr) = parser::parse(&query) {
                let printed = expr.to_string();
                let reparsed = parser::parse(&printed).map(normalized);
                prop_assert_eq!(reparsed, Ok(normalized(expr)), "printed as {}", printed);
            }
        }

        #[test]
        fn pinning_removes_start_and_end(query in expression(), start in 0i64..2_000_000_000_000, length in 0i64..1_000_000_000) {
            if parser::parse(&query).is_ok() {
                let pinned = pin_start_end(&query, start, start + length);
                prop_assert!(pinned.is_some(), "could not pin {}", query);
                let found = time_modifiers(&pinned.unwrap()).unwrap();
                prop_assert!(!found.start_or_end);
            }
        }
    }

    #[test]
    fn finds_modifiers_anywhere_in_the_tree() {
        let found = time_modifiers(
            "sum(rate(a[5m] @ 100 offset -1m)) + max_over_time(b[1h:1m] offset -2m) / c @ end()",
        )
        .unwrap();
        assert!(found.start_or_end);
        assert_eq!(found.max_at_ms, Some(100_000));
        assert_eq!(found.negative_offsets_ms, 180_000);
    }

    #[test]
    fn strings_that_look_like_modifiers_are_not_modifiers() {
        let found = time_modifiers(r#"a{job="@ start()"}"#).unwrap();
        assert_eq!(found, TimeModifiers::default());
    }

    #[test]
    fn unparsable_queries_have_no_analysis() {
        assert_eq!(time_modifiers("sum("), None);
    }

    #[test]
    fn start_and_end_are_pinned_to_fixed_timestamps() {
        let pinned =
            pin_start_end("rate(a[5m] @ start()) - b @ end() offset 1m", 1_500, 9_000).unwrap();
        let expected = parser::parse("rate(a[5m] @ 1.5) - b @ 9 offset 1m").unwrap();
        assert_eq!(parser::parse(&pinned).unwrap(), expected);
    }

    #[test]
    fn pre_epoch_pins_are_refused_rather_than_misprinted() {
        assert_eq!(pin_start_end("a @ start()", -60_000, 0), None);
    }
}
