//! PromQL parsing for sluice, with a memo of recent query texts, and the
//! bounds that keep any query text from taking the process down.
//!
//! Every query passes a linear pre-parse check first ([`check`]): a query
//! whose syntax tree would nest deeper than [`MAX_DEPTH`] is refused before
//! `promql-parser` (whose type checks are quadratic in nesting) or any
//! recursive walk of the tree (evaluation, printing, `Drop`) sees it. The
//! same check words and places syntax errors the way Prometheus does
//! (`1:5: parse error: unexpected end of input`).
//!
//! Dashboards send the same few query texts again and again, only with new
//! times, and the frontend parses each one several times on its way (to
//! validate it, to decide whether it may be split or cached, once per piece
//! for its cache key). Parsing with `promql-parser` costs microseconds; a
//! lookup in this memo costs a hash of the text. The memo is bounded in
//! entries and in text length, so unique or huge queries cannot grow it.

mod check;
mod lex;
mod place;
mod quote;

pub use quote::go_quote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use promql_parser::parser::Expr;

/// Query texts kept at most; when full the memo starts over (cheaper than
/// tracking recency, and a dashboard's working set refills it at once).
const MAX_ENTRIES: usize = 4096;
/// Longer texts are parsed every time rather than kept.
const MAX_TEXT_LEN: usize = 4096;

type Parsed = Result<Arc<Expr>, String>;

fn memo() -> &'static Mutex<HashMap<Box<str>, Parsed>> {
    static MEMO: OnceLock<Mutex<HashMap<Box<str>, Parsed>>> = OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The deepest syntax tree accepted. Deeper trees are refused before
/// parsing, so every recursive walk of a tree (parsing, evaluation,
/// printing, `Drop`) is bounded by this many levels.
pub const MAX_DEPTH: usize = 256;

/// The stack every thread that may walk a tree is given. At [`MAX_DEPTH`]
/// levels the deepest walk, evaluation, took 0.5 MiB in a release build and
/// 8 MiB in a debug build (whose frames are far larger), measured over
/// every shape of nesting; this leaves twice the debug figure. Only the
/// pages a thread touches take memory.
pub const STACK_BYTES: usize = 16 << 20;

/// `query` parsed, or Prometheus's message for why it does not parse.
/// The same text always gives the same answer, from the memo when it was
/// seen recently.
pub fn parse(query: &str) -> Parsed {
    if query.len() > MAX_TEXT_LEN {
        return parse_uncached(query);
    }
    if let Some(parsed) = memo().lock().expect("promql memo lock").get(query) {
        return parsed.clone();
    }
    // Parsed outside the lock: two threads may parse the same new text at
    // once, which is harmless, while one slow parse never blocks the others.
    let parsed = parse_uncached(query);
    let mut memo = memo().lock().expect("promql memo lock");
    if memo.len() >= MAX_ENTRIES {
        memo.clear();
    }
    memo.insert(query.into(), parsed.clone());
    parsed
}

/// `query` parsed now, bypassing the memo: for texts that will not repeat,
/// such as a query rewritten with fixed timestamps.
pub fn parse_uncached(query: &str) -> Parsed {
    let checked = check::check(query, MAX_DEPTH);
    if let Err(refusal) = &checked
        && refusal.limit
    {
        return Err(positioned(query, refusal.pos, &refusal.message));
    }
    match promql_parser::parser::parse(query) {
        Ok(expr) => Ok(Arc::new(expr)),
        Err(message) => Err(match checked {
            Err(refusal) => positioned(query, refusal.pos, &refusal.message),
            // The check found the syntax sound: a type error, placed at the
            // node it is about.
            Ok(records) => {
                let (pos, worded) = place::place(&message, &records);
                positioned(query, pos, &worded)
            }
        }),
    }
}

/// Prometheus's `ParseErr` text: `line:column: parse error: message`, the
/// column counted in bytes from 1.
fn positioned(query: &str, pos: usize, message: &str) -> String {
    let before = &query.as_bytes()[..pos.min(query.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |index| index + 1);
    let column = pos.min(query.len()) - line_start + 1;
    format!("{line}:{column}: parse error: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_gives_the_same_answers_as_the_parser() {
        for query in [
            "up",
            "sum by (job) (rate(x[5m]))",
            "up{",
            "1 +",
            "up @ start()",
        ] {
            let direct = promql_parser::parser::parse(query);
            let uncached = parse_uncached(query);
            for _ in 0..2 {
                match (&direct, parse(query)) {
                    (Ok(want), Ok(got)) => assert_eq!(*got, *want),
                    (Err(_), Err(got)) => assert_eq!(Err(got), uncached),
                    (want, got) => panic!("{query}: {want:?} vs {got:?}"),
                }
            }
        }
    }

    #[test]
    fn the_memo_stays_bounded() {
        for index in 0..MAX_ENTRIES + 10 {
            parse(&format!("metric_{index}")).expect("parses");
        }
        assert!(memo().lock().unwrap().len() <= MAX_ENTRIES);
        let long = format!("{}{}", "a".repeat(MAX_TEXT_LEN), "_total");
        parse(&long).expect("parses");
        assert!(!memo().lock().unwrap().contains_key(long.as_str()));
    }

    #[test]
    fn errors_carry_prometheus_position_and_wording() {
        let error = |query: &str| parse(query).expect_err(query);
        assert_eq!(error("1 +"), "1:4: parse error: unexpected end of input");
        assert_eq!(
            error("up\n  + foo bar"),
            "2:9: parse error: unexpected identifier \"bar\""
        );
        assert_eq!(
            error("rate(x)"),
            "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"
        );
        assert_eq!(
            error("1 + topk(x, y)"),
            "1:10: parse error: expected type scalar in aggregation parameter, got instant vector"
        );
        assert_eq!(
            error("1 == 1"),
            "1:3: parse error: comparisons between scalars must use BOOL modifier"
        );
        assert_eq!(
            error("abs(1, 2)"),
            "1:1: parse error: expected 1 argument(s) in call to \"abs\", got 2"
        );
    }

    #[test]
    fn deep_queries_are_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000));
        let error = parse(&deep).expect_err("too deep");
        assert!(error.contains("nests more than 256 levels"), "{error}");
        let chain = vec!["x"; 20_000].join("+");
        let started = std::time::Instant::now();
        assert!(parse(&chain).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
