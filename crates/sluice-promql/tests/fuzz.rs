//! Fuzzing PromQL text, which every client reaches: random token soups,
//! random characters, and valid queries with characters changed, each
//! parsed (through the memo and without it) to an expression or an error,
//! never a panic, and the same answer both ways. The end-to-end abuse test
//! (`crates/sluice/tests/abuse.rs`) covers deep and long expressions
//! through the binary; this one covers malformed text at the parser.
//!
//! A few hundred cases each; `SLUICE_FUZZ_CASES` runs more.

use proptest::prelude::*;

const VALID: &[&str] = &[
    "sum by (job) (rate(http_requests_total{job=~\"api.*\", code!=\"500\"}[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m:15s] offset 1h)))",
    "up @ start() and on (instance) group_left (team) info{a='b'}",
    "-x ^ 2 % 3 >= bool 1 unless y",
    "{__name__=~\"a|b\", \"utf8.name\"=\"v\"} / ignoring (a) z",
    "count_values(\"v\", up) or vector(1) != absent(nope[5m])",
    "topk(3, label_replace(up, \"d\", \"$1\", \"s\", \"(.*)\")) < 0x1F",
];

/// Pieces of PromQL, shuffled into mostly-invalid but lexer-reaching text.
const TOKENS: &[&str] = &[
    "up",
    "sum",
    "by",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "5m",
    ":",
    "@",
    "offset",
    "=",
    "=~",
    "!=",
    "!~",
    "\"a\"",
    "'b'",
    "`c`",
    ",",
    "+",
    "-",
    "*",
    "/",
    "^",
    "%",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "bool",
    "1",
    "1e3",
    "Inf",
    "NaN",
    "0x1f",
    "#",
    "\\",
    "€",
    "é",
    "ß",
    "\u{0}",
    " ",
    "\n",
    "rate",
    "start()",
    "end()",
    "__name__",
    "le",
    "!",
    "$",
    ";",
];

fn parse_both_ways(text: &str) -> Result<(), TestCaseError> {
    let memo = sluice_promql::parse(text);
    let direct = sluice_promql::parse_uncached(text);
    prop_assert_eq!(memo.is_ok(), direct.is_ok(), "{:?}", text);
    Ok(())
}

#[test]
fn characters_of_several_bytes_are_refused_not_cut() {
    for text in ["{€=\"a\"}", "up{é}", "x{ß!=\"a\"}", "{!€}"] {
        assert!(sluice_promql::parse(text).is_err(), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(512)))]

    #[test]
    fn token_soup_is_parsed_or_refused(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..24)) {
        parse_both_ways(&tokens.concat())?;
    }

    #[test]
    fn random_text_is_parsed_or_refused(text in "\\PC{0,64}") {
        parse_both_ways(&text)?;
    }

    #[test]
    fn mutated_queries_are_parsed_or_refused(
        query in prop::sample::select(VALID),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(TOKENS)), 1..4),
    ) {
        let mut text = query.to_owned();
        for (index, token) in edits {
            // At a character boundary, as a client's text always is.
            let mut at = index.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, token);
        }
        parse_both_ways(&text)?;
    }
}
