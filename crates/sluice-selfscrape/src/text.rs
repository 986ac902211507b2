//! The Prometheus text exposition format (0.0.4), as far as a scrape needs
//! it: sample lines `name{label="value",...} value [timestamp]`; `#` lines
//! (HELP, TYPE, comments) and blank lines carry nothing to store.

/// One sample line: its metric name, labels in the order written, value
/// and, when the line has one, its own timestamp (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// A line that is not the format, with where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Every sample of an exposition, or the first line that does not parse:
/// a target answering garbage fails its scrape whole, as Prometheus's does.
pub fn parse(text: &str) -> Result<Vec<ParsedSample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|message| ParseError {
            line: index + 1,
            message,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn is_name_char(character: char, first: bool) -> bool {
    character.is_ascii_alphabetic()
        || character == '_'
        || character == ':'
        || (!first && character.is_ascii_digit())
}

/// The name at the start of `text` (metric names allow `:`, label names
/// do not) and the rest.
fn split_name(text: &str, colons: bool) -> Result<(&str, &str), String> {
    let end = text
        .char_indices()
        .find(|&(at, c)| !is_name_char(c, at == 0) || (!colons && c == ':'))
        .map_or(text.len(), |(at, _)| at);
    if end == 0 {
        return Err(format!("expected a name at {text:?}"));
    }
    Ok(text.split_at(end))
}

fn parse_line(line: &str) -> Result<ParsedSample, String> {
    let (name, mut rest) = split_name(line, true)?;
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("a sample without a value")?)?;
    let timestamp_ms = match fields.next() {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| format!("bad timestamp {text:?}"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(ParsedSample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Labels up to the closing `}`; returns what follows it.
fn parse_labels<'a>(
    mut text: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok(rest);
        }
        let (name, rest) = split_name(text, false)?;
        let rest = rest
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| format!("expected = after label {name}"))?;
        let rest = rest
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {name}"))?;
        let (value, rest) = parse_quoted(rest)?;
        labels.push((name.to_owned(), value));
        let rest = rest.trim_start();
        text = match rest.strip_prefix(',') {
            Some(after) => after,
            None if rest.starts_with('}') => rest,
            None => return Err(format!("expected , or }} after label {name}")),
        };
    }
}

/// A label value after its opening quote, with `\\`, `\"` and `\n`
/// unescaped; returns what follows the closing quote.
fn parse_quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut characters = text.char_indices();
    while let Some((at, character)) = characters.next() {
        match character {
            '"' => return Ok((value, &text[at + 1..])),
            '\\' => match characters.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                Some((_, other)) => value.extend(['\\', other]),
                None => break,
            },
            other => value.push(other),
        }
    }
    Err("a label value without its closing quote".to_owned())
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples_with_labels_escapes_and_special_values_parse() {
        let text = "# HELP a_total The a.\n# TYPE a_total counter\n\
                    a_total 3\n\n\
                    b_bucket{le=\"+Inf\",path=\"/x\"} 7 1700000000000\n\
                    c{v=\"q\\\"uo\\\\te\\nline\",} NaN\n\
                    d:ratio -Inf\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "a_total");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[0].timestamp_ms, None);
        assert_eq!(
            samples[1].labels,
            vec![("le".into(), "+Inf".into()), ("path".into(), "/x".into())]
        );
        assert_eq!(samples[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(samples[2].labels[0].1, "q\"uo\\te\nline");
        assert!(samples[2].value.is_nan());
        assert_eq!(samples[3].name, "d:ratio");
        assert_eq!(samples[3].value, f64::NEG_INFINITY);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, line) in [
            ("a 1\nb{x=\"1\" 2\n", 2),
            ("a one\n", 1),
            ("# c\n\n{} 1\n", 3),
            ("a{x=\"open} 1\n", 1),
            ("a 1 2 3\n", 1),
            ("a{:x=\"1\"} 1\n", 1),
        ] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text:?}");
        }
    }

    #[test]
    fn what_the_prometheus_crate_writes_parses_back() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("x_total", "help with \\ and \n"),
            &["path"],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.with_label_values(&["a\"b\\c\nd"]).inc_by(5);
        let histogram =
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("y_seconds", "y"))
                .unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        histogram.observe(0.3);
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        let samples = parse(&text).unwrap();
        let x = samples.iter().find(|s| s.name == "x_total").unwrap();
        assert_eq!(x.labels, vec![("path".into(), "a\"b\\c\nd".into())]);
        assert_eq!(x.value, 5.0);
        let buckets = samples.iter().filter(|s| s.name == "y_seconds_bucket");
        assert_eq!(buckets.count(), prometheus::DEFAULT_BUCKETS.len() + 1);
        let sum = samples.iter().find(|s| s.name == "y_seconds_sum").unwrap();
        assert_eq!(sum.value, 0.3);
    }

    proptest! {
        #[test]
        fn random_and_mutated_text_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        ) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
            let mut mutated = b"a_total{x=\"1\",y=\"\\\"\"} 1.5e3 17\nb NaN\n".to_vec();
            for (at, byte) in flips {
                let len = mutated.len();
                mutated[at % len] = byte;
            }
            let _ = parse(&String::from_utf8_lossy(&mutated));
        }
    }
}
