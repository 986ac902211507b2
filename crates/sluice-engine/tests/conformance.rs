//! Runs Prometheus' PromQL test scripts (the `promqltest` language) against
//! the sluice engine and reports, per file, how many cases pass, fail and are
//! skipped (only native-histogram cases may be skipped, each with its reason).
//!
//! The scripts are read from `$SLUICE_PROMQLTEST_DIR`, by default
//! `<workspace>/../shared/promqltest/testdata`. Required files must not
//! regress: a failing required case must be listed in
//! `conformance-expected-failures.txt`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use promql_parser::parser::{AtModifier, Expr};
use regex::Regex;
use sluice_engine::storage::stale_nan;
use sluice_engine::{
    Engine, EngineError, Labels, MemoryStorage, QueryOptions, QueryOutput, QueryValue,
};

/// Writes straight to stderr: the test harness captures `println!`, but the
/// report (and above all a notice that conformance did not run) must be
/// seen on every `cargo test`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const REQUIRED_FILES: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "limit",
    "literals",
    "name_label_dropping",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
];

/// Prometheus' test engine limit.
const MAX_SAMPLES: usize = 10_000;

// ---------------------------------------------------------------------------
// Parsing of the scripts
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Point {
    Value(f64),
    Omitted,
    Histogram,
}

#[derive(Clone, Debug)]
struct ExpectedSeries {
    labels: Labels,
    points: Vec<Point>,
}

#[derive(Clone, Debug)]
struct Expect {
    kind: String,
    exact: Option<String>,
    regex: Option<Regex>,
}

impl Expect {
    fn matches(&self, text: &str) -> bool {
        match (&self.exact, &self.regex) {
            (Some(exact), _) => exact == text,
            (None, Some(regex)) => regex.is_match(text),
            (None, None) => true,
        }
    }
}

#[derive(Debug)]
struct EvalCase {
    line: usize,
    query: String,
    instant_at: Option<i64>,
    range: Option<(i64, i64, i64)>,
    range_vector: Option<(i64, i64, i64)>,
    expect_string: Option<String>,
    expects: Vec<Expect>,
    legacy_fail: bool,
    legacy_warn: bool,
    legacy_info: bool,
    legacy_ordered: bool,
    expected_scalar: Option<f64>,
    expected: Vec<ExpectedSeries>,
    mentions_histogram: bool,
    parse_error: Option<String>,
}

enum Command {
    Load {
        step: i64,
        series: Vec<(Labels, Vec<Point>)>,
        mentions_histogram: bool,
        with_nhcb: bool,
    },
    Clear,
    Eval(Box<EvalCase>),
}

fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut total: i64 = 0;
    let mut rest = body;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total += number * factor;
    }
    Some(if negative { -total } else { total })
}

fn parse_number(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+') {
        return text.parse::<f64>().ok();
    }
    None
}

/// Expands one series-description item (`1`, `_`, `stale`, `1+2x3`, `_x4`, `5x2`).
fn expand_item(item: &str, out: &mut Vec<Point>) -> Option<()> {
    if item == "_" {
        out.push(Point::Omitted);
        return Some(());
    }
    if item == "stale" {
        out.push(Point::Value(stale_nan()));
        return Some(());
    }
    if let Some(value) = parse_number(item) {
        out.push(Point::Value(value));
        return Some(());
    }
    let x_at = item.rfind('x')?;
    let count: usize = item[x_at + 1..].parse().ok()?;
    let head = &item[..x_at];
    if head == "_" {
        out.extend(std::iter::repeat_n(Point::Omitted, count));
        return Some(());
    }
    // Find the operator separating start and increment: a '+' or '-' that is
    // not a leading sign and not part of an exponent.
    let bytes = head.as_bytes();
    let mut split = None;
    for index in 1..bytes.len() {
        if (bytes[index] == b'+' || bytes[index] == b'-')
            && !matches!(bytes[index - 1], b'e' | b'E')
        {
            split = Some(index);
        }
    }
    let (start, step) = match split {
        Some(index) => {
            let start = parse_number(&head[..index])?;
            let magnitude = parse_number(&head[index + 1..])?;
            (
                start,
                if bytes[index] == b'-' {
                    -magnitude
                } else {
                    magnitude
                },
            )
        }
        None => (parse_number(head)?, 0.0),
    };
    let mut value = start;
    for _ in 0..=count {
        out.push(Point::Value(value));
        value += step;
    }
    Some(())
}

fn unquote(text: &str) -> Option<(String, usize)> {
    let mut chars = text.char_indices();
    let (_, quote) = chars.next()?;
    let mut out = String::new();
    let mut bytes_out: Vec<u8> = Vec::new();
    let mut escaped = false;
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    let mut iter = text[1..].char_indices().peekable();
    while let Some((index, c)) = iter.next() {
        if escaped {
            escaped = false;
            match c {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'x' => {
                    let hex: String = (0..2).filter_map(|_| iter.next().map(|(_, h)| h)).collect();
                    bytes_out.push(u8::from_str_radix(&hex, 16).ok()?);
                    continue;
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
            continue;
        }
        if quote != '`' && c == '\\' {
            flush(&mut bytes_out, &mut out);
            escaped = true;
            continue;
        }
        if c == quote {
            flush(&mut bytes_out, &mut out);
            return Some((out, index + 2));
        }
        flush(&mut bytes_out, &mut out);
        out.push(c);
    }
    None
}

/// Parses `name{label="value", ...}` and returns the labels and the rest of the line.
fn parse_metric(line: &str) -> Option<(Labels, &str)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    if name_end > 0 {
        pairs.push(("__name__".into(), line[..name_end].to_string()));
    }
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (name, after_name) = if rest.starts_with('"') {
                let (name, used) = unquote(rest)?;
                (name, &rest[used..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '.'))?;
                (rest[..end].to_string(), &rest[end..])
            };
            let after_name = after_name.trim_start();
            if let Some(after_eq) = after_name.strip_prefix('=') {
                let after_eq = after_eq.trim_start();
                let (value, used) = unquote(after_eq)?;
                pairs.push((name, value));
                rest = &after_eq[used..];
            } else {
                // A bare quoted string in braces is the metric name.
                pairs.push(("__name__".into(), name));
                rest = after_name;
            }
        }
    }
    Some((Labels::from_pairs(pairs), rest))
}

fn parse_series_line(line: &str) -> Result<(Labels, Vec<Point>, bool), String> {
    let (labels, rest) =
        parse_metric(line).ok_or_else(|| format!("cannot parse series {line:?}"))?;
    let mut points = Vec::new();
    // Native histograms become the placeholder `H`, so that `H`, `Hx3` and
    // `H+Hx3` expand like floats do.
    let histogram = Regex::new(r"\{\{[^}]*\}\}").unwrap();
    let has_histogram = histogram.is_match(rest);
    let replaced = histogram.replace_all(rest, "H");
    for token in replaced.split_whitespace() {
        if token.starts_with('H') {
            let repeat = token
                .rfind('x')
                .and_then(|x| token[x + 1..].parse::<usize>().ok())
                .map_or(1, |n| n + 1);
            points.extend(std::iter::repeat_n(Point::Histogram, repeat));
            continue;
        }
        expand_item(token, &mut points).ok_or_else(|| format!("cannot parse value {token:?}"))?;
    }
    Ok((labels, points, has_histogram))
}

fn parse_script(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let trimmed = l.trim();
            if trimmed.starts_with('#') {
                String::new()
            } else {
                trimmed.to_string()
            }
        })
        .collect();
    let eval_instant =
        Regex::new(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
            .unwrap();
    let eval_range = Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .unwrap();
    let expect_re =
        Regex::new(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$")
            .unwrap();
    let range_vector_re =
        Regex::new(r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$").unwrap();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let keyword = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if keyword == "clear" {
            commands.push(Command::Clear);
            i += 1;
        } else if keyword.starts_with("load") {
            let step_text = line.split_whitespace().nth(1).ok_or("load without step")?;
            let step =
                parse_duration(step_text).ok_or_else(|| format!("bad load step {step_text}"))?;
            let mut series = Vec::new();
            let mut mentions_histogram = keyword == "load_with_nhcb";
            i += 1;
            while i < lines.len() && !lines[i].is_empty() {
                // Start-timestamp lines (`metric@st ...`) describe data this
                // engine has no notion of; the float samples still load.
                if lines[i]
                    .split_whitespace()
                    .next()
                    .is_some_and(|head| head.ends_with("@st"))
                {
                    i += 1;
                    continue;
                }
                let (labels, points, has_histogram) =
                    parse_series_line(&lines[i]).map_err(|e| format!("line {}: {e}", i + 1))?;
                mentions_histogram |= has_histogram;
                series.push((labels, points));
                i += 1;
            }
            let with_nhcb = keyword == "load_with_nhcb";
            commands.push(Command::Load {
                step,
                series,
                mentions_histogram,
                with_nhcb,
            });
        } else if keyword.starts_with("eval") {
            let mut case = EvalCase {
                line: i + 1,
                query: String::new(),
                instant_at: None,
                range: None,
                range_vector: None,
                expect_string: None,
                expects: Vec::new(),
                legacy_fail: false,
                legacy_warn: false,
                legacy_info: false,
                legacy_ordered: false,
                expected_scalar: None,
                expected: Vec::new(),
                mentions_histogram: false,
                parse_error: None,
            };
            let modifier;
            if let Some(c) = eval_instant.captures(line) {
                modifier = c.get(1).map(|m| m.as_str().to_string());
                case.instant_at = Some(
                    c.get(2)
                        .and_then(|m| parse_duration(m.as_str()))
                        .unwrap_or(0),
                );
                case.query = c[3].to_string();
            } else if let Some(c) = eval_range.captures(line) {
                modifier = c.get(1).map(|m| m.as_str().to_string());
                let start = parse_duration(&c[2]).ok_or("bad range start")?;
                let end = parse_duration(&c[3]).ok_or("bad range end")?;
                let step = parse_duration(&c[4]).ok_or("bad range step")?;
                case.range = Some((start, end, step));
                case.query = c[5].to_string();
            } else {
                return Err(format!("line {}: invalid eval command", i + 1));
            }
            match modifier.as_deref() {
                Some("fail") => case.legacy_fail = true,
                Some("warn") => case.legacy_warn = true,
                Some("info") => case.legacy_info = true,
                Some("ordered") => case.legacy_ordered = true,
                _ => {}
            }
            i += 1;
            while i < lines.len() && !lines[i].is_empty() {
                let def = &lines[i];
                i += 1;
                if let Some(c) = range_vector_re.captures(def) {
                    let parsed = (
                        parse_duration(&c[1]),
                        parse_duration(&c[2]),
                        parse_duration(&c[3]),
                    );
                    if let (Some(a), Some(b), Some(s)) = parsed {
                        case.range_vector = Some((a, b, s));
                        case.instant_at = Some(b);
                    }
                    continue;
                }
                if let Some(rest) = def.strip_prefix("expect string") {
                    let rest = rest.trim();
                    case.expect_string = unquote(rest).map(|(s, _)| s);
                    continue;
                }
                if def.split(' ').next() == Some("expect") {
                    let c = expect_re
                        .captures(def.trim())
                        .ok_or_else(|| format!("line {i}: bad expect"))?;
                    let kind = c[1].to_string();
                    let mut expect = Expect {
                        kind,
                        exact: None,
                        regex: None,
                    };
                    match c.get(2).map(|m| m.as_str()) {
                        Some("msg") => expect.exact = Some(c[3].trim().to_string()),
                        Some(_) => {
                            expect.regex = Some(Regex::new(c[3].trim()).map_err(|e| e.to_string())?)
                        }
                        None => {}
                    }
                    case.expects.push(expect);
                    continue;
                }
                if def.starts_with("expected_fail_message")
                    || def.starts_with("expected_fail_regexp")
                {
                    let (prefix, text) = def.split_at(def.find(' ').unwrap_or(def.len()));
                    let text = text.trim();
                    let mut expect = Expect {
                        kind: "fail".into(),
                        exact: None,
                        regex: None,
                    };
                    if prefix == "expected_fail_message" {
                        expect.exact = Some(text.to_string());
                    } else {
                        expect.regex = Regex::new(text).ok();
                    }
                    case.expects.push(expect);
                    break;
                }
                if let Some(value) = parse_scalar_line(def) {
                    case.expected_scalar = Some(value);
                    break;
                }
                match parse_series_line(def) {
                    Ok((labels, points, has_histogram)) => {
                        case.mentions_histogram |= has_histogram;
                        case.expected.push(ExpectedSeries { labels, points });
                    }
                    Err(e) => case.parse_error = Some(e),
                }
            }
            // Skip any trailing lines of a block ended early by a scalar.
            while i < lines.len() && !lines[i].is_empty() {
                i += 1;
            }
            commands.push(Command::Eval(Box::new(case)));
        } else {
            return Err(format!("line {}: invalid command {line:?}", i + 1));
        }
    }
    Ok(commands)
}

fn parse_scalar_line(def: &str) -> Option<f64> {
    if def.contains(' ') {
        return None;
    }
    if let Ok(int) = def.parse::<i64>() {
        return Some(int as f64);
    }
    parse_number(def)
}

// ---------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------

fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 0.000001;
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

impl EvalCase {
    fn expects_of(&self, kind: &str) -> Vec<&Expect> {
        self.expects.iter().filter(|e| e.kind == kind).collect()
    }

    fn is_fail(&self) -> bool {
        self.legacy_fail || !self.expects_of("fail").is_empty()
    }

    fn is_ordered(&self) -> bool {
        self.legacy_ordered || !self.expects_of("ordered").is_empty()
    }

    fn check_failure(&self, error: &EngineError) -> Result<(), String> {
        let message = error.to_string();
        if let Some(expect) = self.expects_of("fail").first()
            && !expect.matches(&message)
        {
            return Err(format!(
                "expected error matching {:?}/{:?}, got {message:?}",
                expect.exact, expect.regex
            ));
        }
        Ok(())
    }

    fn check_annotations(&self, output: &QueryOutput) -> Result<(), String> {
        if self.legacy_warn && output.warnings.is_empty() {
            return Err("expected warnings but got none".into());
        }
        if self.legacy_info && output.infos.is_empty() {
            return Err("expected infos but got none".into());
        }
        for (kind, actual) in [("warn", &output.warnings), ("info", &output.infos)] {
            let expected = self.expects_of(kind);
            if expected.is_empty() {
                continue;
            }
            if actual.is_empty() {
                return Err(format!("expected {kind} annotations but none were found"));
            }
            for expect in &expected {
                if !actual.iter().any(|a| expect.matches(a)) {
                    return Err(format!(
                        "no {kind} annotation matches {:?}/{:?}; found {actual:?}",
                        expect.exact, expect.regex
                    ));
                }
            }
            for annotation in actual.iter() {
                if !expected.iter().any(|e| e.matches(annotation)) {
                    return Err(format!("unexpected {kind} annotation {annotation:?}"));
                }
            }
        }
        if !self.expects_of("no_warn").is_empty() && !output.warnings.is_empty() {
            return Err(format!("unexpected warnings {:?}", output.warnings));
        }
        if !self.expects_of("no_info").is_empty() && !output.infos.is_empty() {
            return Err(format!("unexpected infos {:?}", output.infos));
        }
        Ok(())
    }

    fn expected_map(&self) -> HashMap<Labels, (usize, &ExpectedSeries)> {
        self.expected
            .iter()
            .enumerate()
            .map(|(i, e)| (e.labels.clone(), (i, e)))
            .collect()
    }

    fn compare_matrix(
        &self,
        series: &[sluice_engine::Series],
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(), String> {
        if self.is_ordered() {
            return Err("expected ordered result, but query returned a matrix".into());
        }
        if self.expected_scalar.is_some() {
            return Err("expected scalar result, but got matrix".into());
        }
        for pair in series.windows(2) {
            if pair[0].labels > pair[1].labels {
                return Err("matrix results should always be sorted by labels".into());
            }
        }
        let expected = self.expected_map();
        let mut seen = BTreeSet::new();
        for one in series {
            let Some((_, exp)) = expected.get(&one.labels) else {
                return Err(format!(
                    "unexpected metric {} in result, has {:?}",
                    one.labels, one.points
                ));
            };
            seen.insert(one.labels.clone());
            let mut floats = Vec::new();
            for (index, point) in exp.points.iter().enumerate() {
                let t = start + index as i64 * step;
                if t > end {
                    return Err(format!(
                        "expected {} points for {}, but query time range cannot return this many points",
                        exp.points.len(),
                        exp.labels
                    ));
                }
                if let Point::Value(v) = point {
                    floats.push((t, *v));
                }
            }
            if floats.len() != one.points.len() {
                return Err(format!(
                    "expected {} points for {}, got {:?}",
                    floats.len(),
                    one.labels,
                    one.points
                ));
            }
            for (want, got) in floats.iter().zip(one.points.iter()) {
                if want.0 != got.0 || !almost_equal(want.1, got.1) {
                    return Err(format!(
                        "for {} expected {:?}, got {:?}",
                        one.labels, floats, one.points
                    ));
                }
            }
        }
        for exp in &self.expected {
            if !seen.contains(&exp.labels) {
                return Err(format!("expected metric {} not found", exp.labels));
            }
        }
        Ok(())
    }

    fn compare_vector(&self, samples: &[(Labels, f64)]) -> Result<(), String> {
        if self.expected_scalar.is_some() {
            return Err("expected scalar result, but got vector".into());
        }
        let expected = self.expected_map();
        let mut seen = BTreeSet::new();
        for (position, (labels, value)) in samples.iter().enumerate() {
            let Some((index, exp)) = expected.get(labels) else {
                return Err(format!(
                    "unexpected metric {labels} in result, has value {value}"
                ));
            };
            if self.is_ordered() && *index != position {
                return Err(format!(
                    "expected metric {labels} at position {} but was at {}",
                    index + 1,
                    position + 1
                ));
            }
            let want = match exp.points.first() {
                Some(Point::Value(v)) => *v,
                _ => return Err(format!("expected no float value for {labels}")),
            };
            if !almost_equal(want, *value) {
                return Err(format!("expected {want} for {labels} but got {value}"));
            }
            seen.insert(labels.clone());
        }
        for exp in &self.expected {
            if !seen.contains(&exp.labels) {
                return Err(format!("expected metric {} not found", exp.labels));
            }
        }
        Ok(())
    }

    fn compare(&self, value: &QueryValue) -> Result<(), String> {
        match value {
            QueryValue::Matrix(series) => {
                let (start, end, step) = match (self.range, self.range_vector) {
                    (Some(r), _) => r,
                    (None, Some(r)) => r,
                    (None, None) => (0, 0, 1),
                };
                self.compare_matrix(series, start, end, step)
            }
            QueryValue::Vector(samples) => {
                let pairs: Vec<(Labels, f64)> = samples
                    .iter()
                    .map(|s| (s.labels.clone(), s.value))
                    .collect();
                self.compare_vector(&pairs)
            }
            QueryValue::Scalar { value, .. } => match self.expected_scalar {
                Some(want) if almost_equal(want, *value) => Ok(()),
                Some(want) => Err(format!("expected scalar {want} but got {value}")),
                None => Err(format!(
                    "expected vector or matrix result, but got scalar {value}"
                )),
            },
            QueryValue::String { value, .. } => match &self.expect_string {
                Some(want) if want == value => Ok(()),
                other => Err(format!("expected string {other:?} but got {value:?}")),
            },
        }
    }
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn is_histogram_error(error: &EngineError) -> bool {
    error
        .to_string()
        .contains("native histograms are not supported")
}

fn run_case(
    engine: &Engine,
    storage: &MemoryStorage,
    case: &EvalCase,
    data_has_histograms: bool,
) -> Outcome {
    let outcome = run_case_plain(engine, storage, case, data_has_histograms);
    if !matches!(outcome, Outcome::Pass) || case.range.is_some() || case.mentions_histogram {
        return outcome;
    }
    let at = case.instant_at.unwrap_or(0);
    let Some(variant) = at_modifier_variant(&case.query, at) else {
        return outcome;
    };
    let times = if at == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * at, 0, at / 5, at, 10 * at]
    };
    let options = QueryOptions {
        max_samples: MAX_SAMPLES,
        ..QueryOptions::default()
    };
    for time in times {
        let result = engine.instant_expr(storage, &variant, &case.query, time, &options);
        let failure = match result {
            Err(error) if data_has_histograms && is_histogram_error(&error) => {
                return Outcome::Skip("@-modifier re-run reads native-histogram samples".into());
            }
            Err(error) if case.is_fail() => case.check_failure(&error).err(),
            Err(error) => Some(format!("unexpected error: {error}")),
            Ok(_) if case.is_fail() => Some("expected an error but got none".into()),
            Ok(output) => case
                .check_annotations(&output)
                .and_then(|()| case.compare(&output.value))
                .err(),
        };
        if let Some(reason) = failure {
            return Outcome::Fail(format!(
                "@-modifier re-run at {time}ms ({variant}): {reason}"
            ));
        }
    }
    outcome
}

fn run_case_plain(
    engine: &Engine,
    storage: &MemoryStorage,
    case: &EvalCase,
    data_has_histograms: bool,
) -> Outcome {
    if case.mentions_histogram {
        return Outcome::Skip("expects a native-histogram result".into());
    }
    if let Some(error) = &case.parse_error {
        return Outcome::Fail(format!("runner cannot parse expectation: {error}"));
    }
    let options = QueryOptions {
        max_samples: MAX_SAMPLES,
        ..QueryOptions::default()
    };
    let result = match case.range {
        Some((start, end, step)) => engine.range(storage, &case.query, start, end, step, &options),
        None => engine.instant(storage, &case.query, case.instant_at.unwrap_or(0), &options),
    };
    let output = match result {
        Err(error) if data_has_histograms && is_histogram_error(&error) => {
            return Outcome::Skip("reads native-histogram samples".into());
        }
        Err(error) => {
            if case.is_fail() {
                return match case.check_failure(&error) {
                    Ok(()) => Outcome::Pass,
                    Err(e) => Outcome::Fail(e),
                };
            }
            return Outcome::Fail(format!("unexpected error: {error}"));
        }
        Ok(output) => output,
    };
    if case.is_fail() {
        return Outcome::Fail("expected an error but got none".into());
    }
    if let Err(e) = case.check_annotations(&output) {
        return Outcome::Fail(e);
    }
    if let Err(e) = case.compare(&output.value) {
        return Outcome::Fail(e);
    }
    // Like Prometheus' runner: an instant query must give the same answer
    // as the middle step of a range query around it.
    let context_funcs = Regex::new(r"(start|end|range|step)\(\)").unwrap();
    let excluded = case.range_vector.is_some() || case.expect_string.is_some();
    if case.range.is_none() && !excluded && !context_funcs.is_match(&case.query) {
        let at = case.instant_at.unwrap_or(0);
        let ranged = match engine.range(
            storage,
            &case.query,
            at - 60_000,
            at + 60_000,
            60_000,
            &options,
        ) {
            Ok(output) => output,
            Err(error) if data_has_histograms && is_histogram_error(&error) => {
                return Outcome::Skip("range-mode re-run reads native-histogram samples".into());
            }
            Err(error) => return Outcome::Fail(format!("range-mode re-run failed: {error}")),
        };
        if case.is_ordered() {
            return Outcome::Pass;
        }
        let QueryValue::Matrix(series) = &ranged.value else {
            return Outcome::Fail("range-mode re-run did not return a matrix".into());
        };
        let at_step: Vec<(Labels, f64)> = series
            .iter()
            .filter_map(|s| {
                s.points
                    .iter()
                    .find(|p| p.0 == at)
                    .map(|p| (s.labels.clone(), p.1))
            })
            .collect();
        let check = if let QueryValue::Scalar { .. } = output.value {
            match (case.expected_scalar, at_step.first()) {
                (Some(want), Some((_, got))) if almost_equal(want, *got) => Ok(()),
                (want, got) => Err(format!("range mode: expected scalar {want:?}, got {got:?}")),
            }
        } else {
            case.compare_vector(&at_step)
        };
        if let Err(e) = check {
            return Outcome::Fail(format!("range mode: {e}"));
        }
    }
    Outcome::Pass
}

/// Prometheus' runner also re-runs every instant query with `@ <eval time>`
/// added to each selector and subquery (not inside a subquery that has one)
/// at other evaluation times, which must not change the result.
fn at_modifier_variant(query: &str, at_ms: i64) -> Option<Expr> {
    fn visit(expr: &mut Expr, at: &AtModifier, unsafe_call: &mut bool) {
        const UNSAFE: &[&str] = &[
            "days_in_month",
            "day_of_month",
            "day_of_week",
            "day_of_year",
            "end",
            "hour",
            "minute",
            "month",
            "year",
            "predict_linear",
            "range",
            "start",
            "step",
            "time",
            "timestamp",
        ];
        match expr {
            Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = Some(at.clone()),
            Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = Some(at.clone()),
            // Selectors inside a subquery keep their own times: the
            // subquery's @ already pins them.
            Expr::Subquery(sq) if sq.at.is_none() => sq.at = Some(at.clone()),
            Expr::Call(call) => {
                *unsafe_call |= UNSAFE.contains(&call.func.name);
                for arg in &mut call.args.args {
                    visit(arg, at, unsafe_call);
                }
            }
            Expr::Aggregate(aggregate) => {
                visit(&mut aggregate.expr, at, unsafe_call);
                if let Some(param) = &mut aggregate.param {
                    visit(param, at, unsafe_call);
                }
            }
            Expr::Binary(binary) => {
                visit(&mut binary.lhs, at, unsafe_call);
                visit(&mut binary.rhs, at, unsafe_call);
            }
            Expr::Paren(paren) => visit(&mut paren.expr, at, unsafe_call),
            Expr::Unary(unary) => visit(&mut unary.expr, at, unsafe_call),
            _ => {}
        }
    }
    let mut expr = promql_parser::parser::parse(query).ok()?;
    let at = AtModifier::At(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms.max(0) as u64),
    );
    let mut unsafe_call = false;
    visit(&mut expr, &at, &mut unsafe_call);
    if unsafe_call { None } else { Some(expr) }
}

fn load(storage: &MemoryStorage, step: i64, series: &[(Labels, Vec<Point>)]) -> bool {
    let mut has_histograms = false;
    for (labels, points) in series {
        let mut floats = Vec::new();
        for (index, point) in points.iter().enumerate() {
            let t = index as i64 * step;
            match point {
                Point::Value(v) => floats.push((t, *v)),
                Point::Omitted => {}
                Point::Histogram => {
                    has_histograms = true;
                    storage.append_histogram(labels, t);
                }
            }
        }
        storage.append(labels, &floats);
    }
    has_histograms
}

/// `load_with_nhcb` also stores each classic histogram as a native
/// histogram with custom buckets, under the name without its suffix; the
/// engine only needs to know where those histogram samples are.
fn load_nhcb(storage: &MemoryStorage, step: i64, series: &[(Labels, Vec<Point>)]) {
    for (labels, points) in series {
        let name = labels.metric_name();
        let Some(base) = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
        else {
            continue;
        };
        let mut histogram_labels = labels.clone();
        histogram_labels.remove("le");
        histogram_labels.set("__name__", base);
        for (index, point) in points.iter().enumerate() {
            if !matches!(point, Point::Omitted) {
                storage.append_histogram(&histogram_labels, index as i64 * step);
            }
        }
    }
}

#[derive(Default)]
struct FileReport {
    passed: usize,
    failed: Vec<(usize, String)>,
    skipped: Vec<(usize, String)>,
}

fn run_file(path: &Path) -> Result<FileReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let commands = parse_script(&text)?;
    let engine = Engine::new();
    let storage = MemoryStorage::new();
    let mut has_histograms = false;
    let mut report = FileReport::default();
    for command in commands {
        match command {
            Command::Clear => {
                storage.clear();
                has_histograms = false;
            }
            Command::Load {
                step,
                series,
                mentions_histogram,
                with_nhcb,
            } => {
                has_histograms |= load(&storage, step, &series) || mentions_histogram;
                if with_nhcb {
                    load_nhcb(&storage, step, &series);
                }
            }
            Command::Eval(case) => {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(&engine, &storage, &case, has_histograms)
                }))
                .unwrap_or_else(|_| Outcome::Fail("engine panicked".into()));
                match outcome {
                    Outcome::Pass => report.passed += 1,
                    Outcome::Fail(reason) => report
                        .failed
                        .push((case.line, format!("{}: {reason}", case.query))),
                    Outcome::Skip(reason) => report
                        .skipped
                        .push((case.line, format!("{}: {reason}", case.query))),
                }
            }
        }
    }
    Ok(report)
}

fn testdata_dir() -> PathBuf {
    match std::env::var_os("SLUICE_PROMQLTEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promqltest/testdata"),
    }
}

fn expected_failures() -> BTreeSet<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-expected-failures.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn promql_conformance() {
    let dir = testdata_dir();
    if !dir.is_dir() {
        say!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        say!(
            "!! PromQL conformance did NOT run: {} is missing",
            dir.display()
        );
        say!("!! set SLUICE_PROMQLTEST_DIR to the promqltest testdata directory");
        say!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        assert!(
            std::env::var("SLUICE_REQUIRE_CONFORMANCE").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_CONFORMANCE=1 but the conformance test data is missing"
        );
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let allowed = expected_failures();
    let only = std::env::var("SLUICE_PROMQLTEST_ONLY").ok();
    let verbose = std::env::var("SLUICE_PROMQLTEST_VERBOSE").is_ok();
    let mut table: BTreeMap<String, (usize, usize, usize, bool)> = BTreeMap::new();
    let mut regressions = Vec::new();
    let mut required_failing = 0;
    let mut now_passing = Vec::new();
    let mut failing_ids = BTreeSet::new();
    for path in &files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if let Some(only) = &only
            && *only != stem
        {
            continue;
        }
        let required = REQUIRED_FILES.contains(&stem.as_str());
        let report = match run_file(path) {
            Ok(report) => report,
            Err(error) => {
                say!("{stem}: could not be parsed: {error}");
                if required {
                    regressions.push(format!("{stem}: script could not be parsed: {error}"));
                }
                continue;
            }
        };
        for (line, reason) in &report.skipped {
            say!("SKIP {stem}.test:{line}: {reason}");
        }
        for (line, reason) in &report.failed {
            let id = format!("{stem}:{line}");
            failing_ids.insert(id.clone());
            if verbose || (required && !allowed.contains(&id)) {
                say!("FAIL {stem}.test:{line}: {reason}");
            }
            if required {
                required_failing += 1;
                if !allowed.contains(&id) {
                    regressions.push(format!("{id}: {reason}"));
                }
            }
        }
        table.insert(
            stem,
            (
                report.passed,
                report.failed.len(),
                report.skipped.len(),
                required,
            ),
        );
    }
    for id in &allowed {
        if !failing_ids.contains(id)
            && only
                .as_deref()
                .is_none_or(|o| id.starts_with(&format!("{o}:")))
        {
            now_passing.push(id.clone());
        }
    }
    say!(
        "\n{:<22} {:>8} {:>8} {:>8}  required",
        "file",
        "passed",
        "failed",
        "skipped"
    );
    let mut totals = (0, 0, 0);
    for (file, (passed, failed, skipped, required)) in &table {
        say!(
            "{file:<22} {passed:>8} {failed:>8} {skipped:>8}  {}",
            if *required { "yes" } else { "no" }
        );
        totals.0 += passed;
        totals.1 += failed;
        totals.2 += skipped;
    }
    say!(
        "{:<22} {:>8} {:>8} {:>8}",
        "total",
        totals.0,
        totals.1,
        totals.2
    );
    let required_totals = table
        .values()
        .filter(|row| row.3)
        .fold((0, 0), |acc, row| (acc.0 + row.0, acc.1 + row.2));
    if required_failing == 0 && only.is_none() {
        say!(
            "\nall required conformance cases pass: {} passed, {} skipped (native histograms only)",
            required_totals.0,
            required_totals.1
        );
    }
    if required_failing > 0 {
        say!(
            "\n!!!! {required_failing} REQUIRED conformance cases are still failing (listed in conformance-expected-failures.txt) !!!!"
        );
    }
    if !now_passing.is_empty() {
        say!(
            "\nthese listed cases now pass; remove them from conformance-expected-failures.txt: {now_passing:?}"
        );
    }
    if std::env::var("SLUICE_PROMQLTEST_WRITE_FAILURES").is_ok() {
        let mut ids: Vec<&String> = failing_ids
            .iter()
            .filter(|id| {
                REQUIRED_FILES
                    .iter()
                    .any(|f| id.starts_with(&format!("{f}:")))
            })
            .collect();
        ids.sort();
        let body: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let header = "# Required conformance cases that still fail (file:line). Keep this list shrinking; the goal is empty.\n";
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-expected-failures.txt"),
            format!("{header}{body}"),
        )
        .expect("write expected failures");
    }
    assert!(
        regressions.is_empty(),
        "required conformance cases regressed:\n{}",
        regressions.join("\n")
    );
}
