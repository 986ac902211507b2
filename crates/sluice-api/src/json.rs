//! Encodes answers as JSON byte-identical to Prometheus's for the same data.
//!
//! Prometheus writes its API answers with jsoniter in "standard library
//! compatible" mode plus hand-written encoders for samples. The details that
//! matter for byte equality, all reproduced here:
//! - timestamps are seconds with the millisecond fraction always three digits
//!   (`1.500`, never `1.5`), and no fraction at all when it is zero;
//! - sample values are strings in Go's shortest round-trip form, in plain
//!   notation except for magnitudes below 1e-6 or from 1e21 up, which use Go's
//!   exponent form with at least two exponent digits (`1e-07`, `1e+21`), and
//!   `NaN`, `+Inf`, `-Inf`;
//! - strings escape `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`… (Go's HTML-safe
//!   escaping), control characters as `\u00XX` except `\n`, `\r`, `\t`;
//! - object keys come in the order Prometheus writes them, and empty lists are `[]`.
//!
//! Encoding large answers is where a query frontend spends its time, so this
//! writes straight into one growing buffer with no intermediate values.

use sluice_proto::{
    ApiResponse, ErrorType, HistogramSample, Label, QueryData, ResponseData, ResultType, Series,
};

/// Where the float samples of a matrix's series are written. The plain
/// encoder writes them in place; the query-frontend's fragment memo splices
/// in encodings it kept from earlier answers instead.
pub trait SampleSink {
    /// Writes the float samples of the series labelled `labels`
    /// (`[t,"v"],[t,"v"]`, without the enclosing brackets) at the end of
    /// `out`, or arranges for them to follow what `out` holds.
    fn write_samples(
        &mut self,
        out: &mut Vec<u8>,
        labels: &[Label],
        timestamps_ms: &[i64],
        values: &[f64],
    );
}

/// Writes samples in place.
struct InPlace;

impl SampleSink for InPlace {
    fn write_samples(
        &mut self,
        out: &mut Vec<u8>,
        _: &[Label],
        timestamps_ms: &[i64],
        values: &[f64],
    ) {
        write_samples(out, timestamps_ms, values);
    }
}

/// Writes float samples as Prometheus does inside a series' `values`:
/// `[t,"v"]` pairs separated by commas, without the enclosing brackets.
pub fn write_samples(out: &mut Vec<u8>, timestamps_ms: &[i64], values: &[f64]) {
    debug_assert_eq!(timestamps_ms.len(), values.len());
    for (index, (timestamp_ms, value)) in timestamps_ms.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_sample_pair(out, *timestamp_ms, *value);
    }
}

/// Encodes a whole answer, success or error, as Prometheus would.
pub fn encode_response(response: &ApiResponse) -> Vec<u8> {
    if let Some(ResponseData::Raw(raw)) = &response.data {
        return raw.body.clone();
    }
    encode_into(
        Vec::with_capacity(estimate_size(response)),
        response,
        &mut InPlace,
    )
}

/// Encodes a whole answer with matrix samples going to `sink`; what is
/// returned is the JSON written after the sink's last samples (for the
/// plain encoder, the whole answer).
pub fn encode_response_with(response: &ApiResponse, sink: &mut impl SampleSink) -> Vec<u8> {
    if let Some(ResponseData::Raw(raw)) = &response.data {
        return raw.body.clone();
    }
    encode_into(Vec::with_capacity(1024), response, sink)
}

fn encode_into(mut out: Vec<u8>, response: &ApiResponse, sink: &mut impl SampleSink) -> Vec<u8> {
    if response.is_error() {
        out.extend_from_slice(b"{\"status\":\"error\",\"errorType\":");
        write_string(&mut out, response.error_type().as_str());
        out.extend_from_slice(b",\"error\":");
        write_string(&mut out, &response.error);
    } else {
        out.extend_from_slice(b"{\"status\":\"success\",\"data\":");
        match &response.data {
            Some(ResponseData::Query(query)) => write_query_data(&mut out, query, sink),
            Some(ResponseData::Series(series)) => {
                out.push(b'[');
                for (index, label_set) in series.series.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_labels(&mut out, &label_set.labels);
                }
                out.push(b']');
            }
            Some(ResponseData::Strings(strings)) => write_string_list(&mut out, &strings.values),
            Some(ResponseData::Raw(_)) => unreachable!("raw answers return early"),
            None => out.extend_from_slice(b"null"),
        }
    }
    if !response.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":");
        write_string_list(&mut out, &response.warnings);
    }
    if !response.infos.is_empty() {
        out.extend_from_slice(b",\"infos\":");
        write_string_list(&mut out, &response.infos);
    }
    out.push(b'}');
    out
}

/// Encodes an error envelope with no answer behind it (validation, 429, timeouts).
pub fn encode_error(error_type: ErrorType, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"status\":\"error\",\"errorType\":");
    write_string(&mut out, error_type.as_str());
    out.extend_from_slice(b",\"error\":");
    write_string(&mut out, message);
    out.push(b'}');
    out
}

fn estimate_size(response: &ApiResponse) -> usize {
    // A sample costs about 30 bytes; guessing well saves the buffer regrowing
    // several times for large matrices.
    match &response.data {
        Some(ResponseData::Query(query)) => {
            256 + query
                .series
                .iter()
                .map(|series| 64 + series.labels.len() * 32 + series.values.len() * 30)
                .sum::<usize>()
        }
        _ => 256,
    }
}

fn write_query_data(out: &mut Vec<u8>, query: &QueryData, sink: &mut impl SampleSink) {
    let result_type = query.result_type();
    out.extend_from_slice(b"{\"resultType\":\"");
    out.extend_from_slice(match result_type {
        ResultType::Vector => b"vector".as_slice(),
        ResultType::Matrix => b"matrix".as_slice(),
        ResultType::Scalar => b"scalar".as_slice(),
        ResultType::String => b"string".as_slice(),
    });
    out.extend_from_slice(b"\",\"result\":");
    match result_type {
        ResultType::Vector => {
            out.push(b'[');
            for (index, series) in query.series.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_vector_element(out, series);
            }
            out.push(b']');
        }
        ResultType::Matrix => {
            out.push(b'[');
            for (index, series) in query.series.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_matrix_series(out, series, sink);
            }
            out.push(b']');
        }
        ResultType::Scalar => {
            // Scalars and strings are not written by Prometheus's sample
            // encoders but by Go's encoding/json: the timestamp is a JSON
            // float (`1.5`, not `1.500`) and the value is always in plain
            // notation, however large or small.
            let (timestamp_ms, value) = query
                .series
                .first()
                .and_then(|series| series.samples().next())
                .unwrap_or_default();
            out.push(b'[');
            write_go_json_number(out, timestamp_ms as f64 / 1000.0);
            out.extend_from_slice(b",\"");
            write_go_plain_float(out, value);
            out.extend_from_slice(b"\"]");
        }
        ResultType::String => {
            out.push(b'[');
            write_go_json_number(out, query.string_timestamp_ms as f64 / 1000.0);
            out.push(b',');
            write_string(out, &query.string_value);
            out.push(b']');
        }
    }
    if !query.stats_json.is_empty() {
        out.extend_from_slice(b",\"stats\":");
        out.extend_from_slice(query.stats_json.as_bytes());
    }
    out.push(b'}');
}

fn write_vector_element(out: &mut Vec<u8>, series: &Series) {
    out.extend_from_slice(b"{\"metric\":");
    write_labels(out, &series.labels);
    if let Some((timestamp_ms, value)) = series.samples().next() {
        out.extend_from_slice(b",\"value\":");
        write_sample_pair(out, timestamp_ms, value);
    } else if let Some(histogram) = series.histograms.first() {
        out.extend_from_slice(b",\"histogram\":");
        write_histogram_pair(out, histogram);
    }
    out.push(b'}');
}

fn write_matrix_series(out: &mut Vec<u8>, series: &Series, sink: &mut impl SampleSink) {
    out.extend_from_slice(b"{\"metric\":");
    write_labels(out, &series.labels);
    if !series.values.is_empty() {
        out.extend_from_slice(b",\"values\":[");
        sink.write_samples(out, &series.labels, &series.timestamps_ms, &series.values);
        out.push(b']');
    }
    if !series.histograms.is_empty() {
        out.extend_from_slice(b",\"histograms\":[");
        for (index, histogram) in series.histograms.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_histogram_pair(out, histogram);
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn write_labels(out: &mut Vec<u8>, labels: &[Label]) {
    out.push(b'{');
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, &label.name);
        out.push(b':');
        write_string(out, &label.value);
    }
    out.push(b'}');
}

fn write_sample_pair(out: &mut Vec<u8>, timestamp_ms: i64, value: f64) {
    out.push(b'[');
    write_timestamp(out, timestamp_ms);
    out.push(b',');
    write_float_string(out, value);
    out.push(b']');
}

fn write_histogram_pair(out: &mut Vec<u8>, histogram: &HistogramSample) {
    out.push(b'[');
    write_timestamp(out, histogram.timestamp_ms);
    out.extend_from_slice(b",{\"count\":");
    write_float_string(out, histogram.count);
    out.extend_from_slice(b",\"sum\":");
    write_float_string(out, histogram.sum);
    if !histogram.buckets.is_empty() {
        out.extend_from_slice(b",\"buckets\":[");
        for (index, bucket) in histogram.buckets.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            push_integer(out, i64::from(bucket.boundaries));
            out.push(b',');
            write_float_string(out, bucket.lower);
            out.push(b',');
            write_float_string(out, bucket.upper);
            out.push(b',');
            write_float_string(out, bucket.count);
            out.push(b']');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}]");
}

fn write_string_list(out: &mut Vec<u8>, values: &[String]) {
    out.push(b'[');
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, value);
    }
    out.push(b']');
}

/// Writes Unix milliseconds as seconds, the way Prometheus does: the fraction
/// keeps all three digits and is left out when zero.
pub fn write_timestamp(out: &mut Vec<u8>, timestamp_ms: i64) {
    let magnitude = timestamp_ms.unsigned_abs();
    if timestamp_ms < 0 {
        out.push(b'-');
    }
    push_unsigned(out, magnitude / 1000);
    let fraction = magnitude % 1000;
    if fraction != 0 {
        out.push(b'.');
        if fraction < 100 {
            out.push(b'0');
        }
        if fraction < 10 {
            out.push(b'0');
        }
        push_unsigned(out, fraction);
    }
}

/// Writes a sample value as a quoted string in Go's `strconv` formatting.
pub fn write_float_string(out: &mut Vec<u8>, value: f64) {
    out.push(b'"');
    write_go_float(out, value);
    out.push(b'"');
}

/// Go's `strconv.AppendFloat(f, 'f' or 'e', -1, 64)` as Prometheus chooses
/// between them: plain notation, except exponent form for magnitudes below
/// 1e-6 or from 1e21 up.
pub fn write_go_float(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let magnitude = value.abs();
    // Integral values are the common case (counters) and need no float formatting.
    if value == value.trunc() && magnitude < 1e15 {
        if value == 0.0 && value.is_sign_negative() {
            out.extend_from_slice(b"-0");
            return;
        }
        push_integer(out, value as i64);
        return;
    }
    let exponent_form = magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude);
    write_shortest(out, value, exponent_form);
}

/// Writes `value` (finite) with the shortest digits that read back exactly,
/// the digits Go's strconv also picks, in Go's plain or exponent spelling.
///
/// Ryu finds the digits several times faster than `{}` formatting, which
/// dominated encoding large answers; its own spelling (`1e21`, `1.0`,
/// `1.5e-7`) is rewritten here into Go's.
fn write_shortest(out: &mut Vec<u8>, value: f64, exponent_form: bool) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value).as_bytes();
    if !exponent_form && !text.contains(&b'e') {
        // The common case: Ryu's plain spelling is Go's but for the `.0`
        // it gives whole numbers (the same shortest digits otherwise).
        out.extend_from_slice(text.strip_suffix(b".0").unwrap_or(text));
        return;
    }
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    // Split into significant digits and the exponent of the first digit:
    // value = d1.d2d3... × 10^exponent.
    let (mantissa, mut exponent) = match text.iter().position(|&byte| byte == b'e') {
        Some(at) => {
            let parsed: i32 = std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|digits| digits.parse().ok())
                .expect("ryu writes a decimal exponent");
            (&text[..at], parsed)
        }
        None => (text, 0),
    };
    let mut digits = [0u8; 24];
    let mut count = 0;
    let mut point = None;
    let mut leading = true;
    let mut skipped_leading = 0i32;
    for &byte in mantissa {
        if byte == b'.' {
            point = Some(count as i32 + skipped_leading);
            continue;
        }
        if leading && byte == b'0' {
            skipped_leading += 1;
            continue;
        }
        leading = false;
        digits[count] = byte;
        count += 1;
    }
    let point = point.unwrap_or(count as i32 + skipped_leading);
    // The first significant digit sits at index `skipped_leading` of the
    // mantissa; the point after `point` characters.
    exponent += point - skipped_leading - 1;
    while count > 1 && digits[count - 1] == b'0' {
        count -= 1;
    }
    let digits = &digits[..count];
    if negative {
        out.push(b'-');
    }
    if exponent_form {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exponent < 0 { b'-' } else { b'+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push(b'0');
        }
        push_unsigned(out, u64::from(magnitude));
        return;
    }
    if exponent < 0 {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exponent - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(digits);
        return;
    }
    let integer_digits = exponent as usize + 1;
    if digits.len() <= integer_digits {
        out.extend_from_slice(digits);
        for _ in digits.len()..integer_digits {
            out.push(b'0');
        }
    } else {
        out.extend_from_slice(&digits[..integer_digits]);
        out.push(b'.');
        out.extend_from_slice(&digits[integer_digits..]);
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits, never an exponent.
fn write_go_plain_float(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value == 0.0 {
        out.extend_from_slice(if value.is_sign_negative() {
            b"-0"
        } else {
            b"0"
        });
    } else {
        write_shortest(out, value, false);
    }
}

/// A float64 as Go's encoding/json writes a number: like [`write_go_float`]
/// but with the exponent's leading zero dropped (`1e-7`, `1e+21`).
fn write_go_json_number(out: &mut Vec<u8>, value: f64) {
    let start = out.len();
    write_go_float(out, value);
    let written = &out[start..];
    let length = written.len();
    if length >= 4
        && written[length - 4] == b'e'
        && written[length - 3] == b'-'
        && written[length - 2] == b'0'
    {
        out.remove(start + length - 2);
    }
}

fn push_unsigned(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn push_integer(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_unsigned(out, value.unsigned_abs());
}

/// Writes a JSON string with Go's `encoding/json` escaping (HTML-safe).
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut clean_from = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            0xe2 if bytes.get(index + 1) == Some(&0x80)
                && matches!(bytes.get(index + 2), Some(0xa8 | 0xa9)) =>
            {
                Some(b"")
            }
            _ => None,
        };
        let Some(short) = escape else {
            index += 1;
            continue;
        };
        out.extend_from_slice(&bytes[clean_from..index]);
        if !short.is_empty() {
            out.extend_from_slice(short);
            index += 1;
        } else if byte == 0xe2 {
            out.extend_from_slice(if bytes[index + 2] == 0xa8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            index += 3;
        } else {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            index += 1;
        }
        clean_from = index;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{LabelSet, SeriesData, StringsData};

    fn float(value: f64) -> String {
        let mut out = Vec::new();
        write_go_float(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    fn timestamp(ms: i64) -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    fn string(value: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    fn point(timestamp_ms: i64, value: f64) -> Series {
        Series {
            timestamps_ms: vec![timestamp_ms],
            values: vec![value],
            ..Series::default()
        }
    }

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn floats_match_go_strconv() {
        let cases = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-3.0, "-3"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456.789, "123456.789"),
            (1e-6, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (1e-7, "1e-07"),
            (1.5e-300, "1.5e-300"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.2345e22, "1.2345e+22"),
            (-2.5e25, "-2.5e+25"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e15, "1000000000000000"),
            (123456789012345680.0, "123456789012345680"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (value, expected) in cases {
            assert_eq!(float(value), expected, "formatting {value:e}");
        }
    }

    /// The straightforward spelling via `{}`/`{:e}`, kept as the reference
    /// the fast path must match exactly.
    fn reference_go_float(value: f64, exponent_form: bool) -> String {
        if value.is_nan() {
            return "NaN".into();
        }
        if value.is_infinite() {
            return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
        }
        if !exponent_form {
            return format!("{value}");
        }
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap();
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    }

    /// Checks `fast` against the straightforward spelling: same notation and
    /// length (both shortest), reads back exactly, and where the two differ
    /// it is an exact tie that Go (like Ryu) breaks to the even digit, while
    /// Rust's `{}` rounds half up.
    fn check_against_reference(fast: &str, value: f64, exponent_form: bool) -> Result<(), String> {
        let reference = reference_go_float(value, exponent_form);
        if fast == reference {
            return Ok(());
        }
        let parsed: f64 = fast
            .replace("+Inf", "inf")
            .parse()
            .map_err(|_| format!("{fast} does not parse"))?;
        if parsed.to_bits() != value.to_bits() {
            return Err(format!("{fast} reads back as {parsed:e}, not {value:e}"));
        }
        if fast.len() != reference.len() {
            return Err(format!(
                "{fast} vs reference {reference}: not the same length"
            ));
        }
        let differing: Vec<usize> = fast
            .bytes()
            .zip(reference.bytes())
            .enumerate()
            .filter(|(_, (ours, theirs))| ours != theirs)
            .map(|(index, _)| index)
            .collect();
        let last_digit = fast
            .bytes()
            .enumerate()
            .filter(|(_, byte)| byte.is_ascii_digit())
            .take_while(|(index, _)| !exponent_form || fast[..*index].find('e').is_none())
            .last()
            .map(|(index, _)| index);
        if differing.len() != 1 || Some(differing[0]) != last_digit {
            return Err(format!(
                "{fast} vs reference {reference}: differ beyond the last digit"
            ));
        }
        if !(fast.as_bytes()[differing[0]] - b'0').is_multiple_of(2) {
            return Err(format!(
                "{fast} vs reference {reference}: a tie must go to the even digit"
            ));
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn fast_float_spelling_matches_the_reference(bits in proptest::prelude::any::<u64>()) {
            let value = f64::from_bits(bits);
            let magnitude = value.abs();
            let exponent_form = magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude);
            let mut fast = Vec::new();
            write_go_float(&mut fast, value);
            let fast = String::from_utf8(fast).unwrap();
            proptest::prop_assert!(check_against_reference(&fast, value, exponent_form).is_ok(), "{:?}", check_against_reference(&fast, value, exponent_form));
            let mut plain = Vec::new();
            write_go_plain_float(&mut plain, value);
            let plain = String::from_utf8(plain).unwrap();
            proptest::prop_assert!(check_against_reference(&plain, value, false).is_ok(), "{:?}", check_against_reference(&plain, value, false));
        }

        #[test]
        fn fast_float_spelling_matches_for_everyday_values(mantissa in -1_000_000_000i64..1_000_000_000, scale in -12i32..24) {
            let value = mantissa as f64 * 10f64.powi(scale);
            let magnitude = value.abs();
            let exponent_form = magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude);
            let mut fast = Vec::new();
            write_go_float(&mut fast, value);
            let fast = String::from_utf8(fast).unwrap();
            proptest::prop_assert!(check_against_reference(&fast, value, exponent_form).is_ok(), "{:?}", check_against_reference(&fast, value, exponent_form));
        }
    }

    #[test]
    // These literals are exact binary values (halfway between two 16-digit
    // decimals): the digits clippy calls excessive are the point of the test.
    #[allow(clippy::excessive_precision)]
    fn exact_ties_round_to_even_as_prometheus_prints_them() {
        // Printed by Prometheus 2.42 for `vector(<literal>)`.
        assert_eq!(float(-87399920427669.625), "-87399920427669.62");
        assert_eq!(float(87399920427669.875), "87399920427669.88");
        assert_eq!(float(1125899906842624.5), "1125899906842624.5");
        assert_eq!(float(2.5e-7), "2.5e-07");
        assert_eq!(float(1.0000000000000002), "1.0000000000000002");
    }

    #[test]
    fn timestamps_keep_three_fraction_digits() {
        assert_eq!(timestamp(1_700_000_000_000), "1700000000");
        assert_eq!(timestamp(1_700_000_000_500), "1700000000.500");
        assert_eq!(timestamp(1_700_000_000_050), "1700000000.050");
        assert_eq!(timestamp(1_700_000_000_005), "1700000000.005");
        assert_eq!(timestamp(0), "0");
        assert_eq!(timestamp(-1_500), "-1.500");
        assert_eq!(timestamp(-5), "-0.005");
    }

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(string("<a&b>"), "\"\\u003ca\\u0026b\\u003e\"");
        assert_eq!(string("l1\nl2\tx\r"), "\"l1\\nl2\\tx\\r\"");
        assert_eq!(string("\u{1}\u{1f}"), "\"\\u0001\\u001f\"");
        assert_eq!(string("ü→\u{2028}\u{2029}"), "\"ü→\\u2028\\u2029\"");
    }

    #[test]
    fn matrix_and_vector_shapes() {
        let series = Series {
            labels: vec![label("__name__", "up"), label("job", "a")],
            timestamps_ms: vec![1000, 2500],
            values: vec![1.0, 0.5],
            histograms: vec![],
        };
        let matrix = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series: vec![series.clone()],
            ..QueryData::default()
        }));
        assert_eq!(
            String::from_utf8(encode_response(&matrix)).unwrap(),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2.500,"0.5"]]}]}}"#
        );
        let mut vector_series = series;
        vector_series.timestamps_ms.truncate(1);
        vector_series.values.truncate(1);
        let mut vector = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Vector as i32,
            series: vec![vector_series],
            ..QueryData::default()
        }));
        vector.warnings.push("careful".into());
        assert_eq!(
            String::from_utf8(encode_response(&vector)).unwrap(),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1,"1"]}]},"warnings":["careful"]}"#
        );
    }

    #[test]
    fn empty_results_are_empty_lists() {
        let empty_matrix = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            ..QueryData::default()
        }));
        assert_eq!(
            String::from_utf8(encode_response(&empty_matrix)).unwrap(),
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
        );
        let empty_series = ApiResponse::success(ResponseData::Series(SeriesData::default()));
        assert_eq!(
            String::from_utf8(encode_response(&empty_series)).unwrap(),
            r#"{"status":"success","data":[]}"#
        );
        let labels = ApiResponse::success(ResponseData::Strings(StringsData {
            values: vec!["__name__".into(), "job".into()],
        }));
        assert_eq!(
            String::from_utf8(encode_response(&labels)).unwrap(),
            r#"{"status":"success","data":["__name__","job"]}"#
        );
        let series = ApiResponse::success(ResponseData::Series(SeriesData {
            series: vec![LabelSet {
                labels: vec![label("__name__", "up")],
            }],
        }));
        assert_eq!(
            String::from_utf8(encode_response(&series)).unwrap(),
            r#"{"status":"success","data":[{"__name__":"up"}]}"#
        );
    }

    #[test]
    fn scalar_string_and_error() {
        let scalar = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Scalar as i32,
            series: vec![point(1_000_123, 2.0)],
            ..QueryData::default()
        }));
        assert_eq!(
            String::from_utf8(encode_response(&scalar)).unwrap(),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1000.123,"2"]}}"#
        );
        let big_scalar = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Scalar as i32,
            series: vec![point(1_500, 4e21)],
            ..QueryData::default()
        }));
        assert_eq!(
            String::from_utf8(encode_response(&big_scalar)).unwrap(),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"4000000000000000000000"]}}"#
        );
        let text = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::String as i32,
            string_value: "hi".into(),
            string_timestamp_ms: 5000,
            ..QueryData::default()
        }));
        assert_eq!(
            String::from_utf8(encode_response(&text)).unwrap(),
            r#"{"status":"success","data":{"resultType":"string","result":[5,"hi"]}}"#
        );
        let error = ApiResponse::error(ErrorType::BadData, "bad <query>");
        assert_eq!(
            String::from_utf8(encode_response(&error)).unwrap(),
            r#"{"status":"error","errorType":"bad_data","error":"bad \u003cquery\u003e"}"#
        );
    }
}
