//! PromQL parsing for sluice, with a memo of recent query texts.
//!
//! Dashboards send the same few query texts again and again, only with new
//! times, and the frontend parses each one several times on its way (to
//! validate it, to decide whether it may be split or cached, once per piece
//! for its cache key). Parsing with `promql-parser` costs microseconds; a
//! lookup in this memo costs a hash of the text. The memo is bounded in
//! entries and in text length, so unique or huge queries cannot grow it.

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

/// `query` parsed, or promql-parser's message for why it does not parse.
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
    promql_parser::parser::parse(query).map(Arc::new)
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
            for _ in 0..2 {
                match (&direct, parse(query)) {
                    (Ok(want), Ok(got)) => assert_eq!(*got, *want),
                    (Err(want), Err(got)) => assert_eq!(&got, want),
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
}
