//! Request parameters of the Prometheus HTTP API, parsed and validated exactly
//! as Prometheus (v3, `web/api/v1/api.go`) does, with the same error messages.
//!
//! Times are parsed to Go's nanosecond precision internally so that the range
//! checks (`end` before `start`, the 11,000-point limit) see what Prometheus
//! sees; the results are handed on as Unix milliseconds, truncated the way
//! Prometheus's `timestamp.FromTime` truncates.

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;
use sluice_promql::parse as parse_promql;
use sluice_proto::{InstantQuery, MetadataKind, MetadataQuery, RangeQuery};

use crate::ApiError;

/// Prometheus's fixed limit on the resolution of a range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MILLI: i64 = 1_000_000;

/// Seconds of Prometheus's `MinTime`: `math.MinInt64/1000 + 62135596801`.
const MIN_TIME_SECONDS: i64 = i64::MIN / 1000 + 62_135_596_801;
/// Seconds of Prometheus's `MaxTime` (whose nanoseconds are 999999999).
const MAX_TIME_SECONDS: i64 = i64::MAX / 1000 - 62_135_596_801;
/// `MinTime.Format(time.RFC3339Nano)`, which Prometheus accepts as a time.
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
/// `MaxTime.Format(time.RFC3339Nano)`, which Prometheus accepts as a time.
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// Prometheus's `MinTime` in Unix milliseconds (the default `start` of the
/// metadata endpoints).
pub const MIN_TIME_MS: i64 = MIN_TIME_SECONDS * 1000;
/// Prometheus's `MaxTime` in Unix milliseconds (the default `end` of the
/// metadata endpoints).
pub const MAX_TIME_MS: i64 = MAX_TIME_SECONDS * 1000 + 999;

// ---------------------------------------------------------------------------
// Form
// ---------------------------------------------------------------------------

/// Request parameters merged as Go's `http.Request.ParseForm` merges them: the
/// values of an `application/x-www-form-urlencoded` body first, then those of
/// the URL query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
    error: Option<String>,
}

impl Form {
    /// Parses the URL query (without `?`) and the body, which the caller
    /// passes only for a POST, PUT or PATCH with content type
    /// `application/x-www-form-urlencoded` (as Go reads only those). As in Go, a pair with a
    /// `;` or an invalid `%` escape is dropped and remembered as the form's
    /// error ([`Form::parse_error`]).
    pub fn parse(url_query: Option<&str>, form_body: Option<&[u8]>) -> Form {
        let mut form = Form::default();
        if let Some(body) = form_body {
            form.append_query(&String::from_utf8_lossy(body));
        }
        if let Some(query) = url_query {
            form.append_query(query);
        }
        form
    }

    /// Builds a form from already decoded pairs, in order.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Form
    where
        K: Into<String>,
        V: Into<String>,
    {
        Form {
            pairs: pairs
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
            error: None,
        }
    }

    /// The first value of `name`, like Go's `FormValue` (which would give ""
    /// for an absent name; here that is `None`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, body values first.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The error Go's `ParseForm` would have returned (the first one, except
    /// that, as in Go, a semicolon error replaces an earlier error of the
    /// same query string), if any.
    pub fn parse_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// All pairs re-encoded as `application/x-www-form-urlencoded`, in order,
    /// for forwarding.
    pub fn to_query_string(&self) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.pairs {
            serializer.append_pair(key, value);
        }
        serializer.finish()
    }

    /// Go's `url.ParseQuery`, appending to this form.
    fn append_query(&mut self, query: &str) {
        let mut error: Option<String> = None;
        for pair in query.split('&') {
            if pair.contains(';') {
                error = Some("invalid semicolon separator in query".to_string());
                continue;
            }
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (query_unescape(key), query_unescape(value)) {
                (Ok(key), Ok(value)) => self.pairs.push((key, value)),
                (Err(err), _) | (_, Err(err)) => {
                    error.get_or_insert(err);
                }
            }
        }
        if self.error.is_none() {
            self.error = error;
        }
    }
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let low = bytes.get(i + 2).and_then(|b| hex_value(*b));
                match (high, low) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(bytes.len());
                        let bad = String::from_utf8_lossy(&bytes[i..end]);
                        return Err(format!("invalid URL escape {}", go_quote(&bad)));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Go's %q
// ---------------------------------------------------------------------------

pub use sluice_promql::go_quote;

// ---------------------------------------------------------------------------
// Numbers: Go's strconv.ParseFloat and strconv.Atoi
// ---------------------------------------------------------------------------

/// Go's `strconv.ParseFloat(s, 64)` for decimal input: `None` where Go
/// returns an error (bad syntax, or a finite literal beyond the range of
/// `f64`). Go's and Rust's decimal conversions are both correctly rounded, so
/// values agree bit for bit. Hexadecimal floats (`0x1p4`), which Go also
/// accepts, are not supported.
fn go_parse_float(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    // Specials: [+-]inf, [+-]infinity (any case), nan (any case, no sign).
    let (negative, unsigned) = match bytes.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if s.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }

    let digits = unsigned.as_bytes();
    let mut i = 0;
    let mut saw_digit = false;
    let mut saw_dot = false;
    while i < digits.len() {
        match digits[i] {
            b'0'..=b'9' => saw_digit = true,
            b'.' if !saw_dot => saw_dot = true,
            _ => break,
        }
        i += 1;
    }
    if !saw_digit {
        return None;
    }
    if i < digits.len() && (digits[i] == b'e' || digits[i] == b'E') {
        i += 1;
        if i < digits.len() && (digits[i] == b'+' || digits[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < digits.len() && digits[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != digits.len() {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    // Go reports a range error when a finite literal rounds to infinity.
    value.is_finite().then_some(value)
}

/// Go's `strconv.Atoi` on a 64-bit platform, with its error message.
fn go_atoi(s: &str) -> Result<i64, String> {
    let bytes = s.as_bytes();
    let digits = match bytes.first() {
        Some(b'+' | b'-') => &bytes[1..],
        _ => bytes,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", go_quote(s)))
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// An instant as Go's `time.Time` holds it: seconds and nanoseconds
/// (`0 <= nanos < 1e9`) since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GoTime {
    seconds: i64,
    nanos: i64,
}

impl GoTime {
    /// Go's `time.Unix(sec, nsec)`, normalising `nsec` into `[0, 1e9)`.
    /// `None` where the seconds would overflow.
    fn unix(seconds: i64, nanos: i64) -> Option<GoTime> {
        let seconds = seconds.checked_add(nanos.div_euclid(NANOS_PER_SECOND))?;
        let nanos = nanos.rem_euclid(NANOS_PER_SECOND);
        Some(GoTime { seconds, nanos })
    }

    /// Prometheus's `timestamp.FromTime`: milliseconds, truncated.
    fn millis(self) -> Option<i64> {
        self.seconds
            .checked_mul(1000)?
            .checked_add(self.nanos / NANOS_PER_MILLI)
    }

    /// Go's `t.Sub(u)`: the difference in nanoseconds, saturated to `i64`.
    fn sub(self, earlier: GoTime) -> i64 {
        let total = |t: GoTime| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        let difference = total(self) - total(earlier);
        i64::try_from(difference).unwrap_or(if difference < 0 { i64::MIN } else { i64::MAX })
    }
}

fn cannot_parse_time(s: &str) -> String {
    format!("cannot parse {} to a valid timestamp", go_quote(s))
}

/// Prometheus's `parseTime`, to Go's precision.
fn parse_go_time(s: &str) -> Result<GoTime, String> {
    if let Some(t) = go_parse_float(s) {
        // Prometheus: s, ns := math.Modf(t); ns = math.Round(ns*1000)/1000;
        // time.Unix(int64(s), int64(ns*float64(time.Second))).
        // Go converts out-of-range floats (infinities, NaN, |t| >= 2^63)
        // to platform-specific garbage; such times are refused here.
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        if !t.is_finite() || t.abs() >= TWO_POW_63 {
            return Err(cannot_parse_time(s));
        }
        let whole = t.trunc();
        let fraction = ((t - whole) * 1000.0).round() / 1000.0;
        let nanos = (fraction * NANOS_PER_SECOND as f64) as i64;
        return GoTime::unix(whole as i64, nanos)
            .filter(|time| time.millis().is_some())
            .ok_or_else(|| cannot_parse_time(s));
    }
    if let Some(time) = parse_rfc3339(s) {
        return Ok(time);
    }
    match s {
        MIN_TIME_FORMATTED => Ok(GoTime {
            seconds: MIN_TIME_SECONDS,
            nanos: 0,
        }),
        MAX_TIME_FORMATTED => Ok(GoTime {
            seconds: MAX_TIME_SECONDS,
            nanos: 999_999_999,
        }),
        _ => Err(cannot_parse_time(s)),
    }
}

/// Parses a time as Prometheus's `parseTime` does: float seconds since the
/// epoch (`1700000000`, `1700000000.123`, `-1.5`, `1.5e9`; fractions are
/// rounded to milliseconds), RFC 3339 with optional fractional seconds and a
/// `Z` or `±hh:mm` offset (as Go's `time.Parse(time.RFC3339Nano, _)`), or the
/// formatted forms of Prometheus's minimum and maximum times. Returns Unix
/// milliseconds, truncated as Prometheus's `timestamp.FromTime` does.
///
/// The error is Prometheus's: `cannot parse "abc" to a valid timestamp`.
pub fn parse_time(s: &str) -> Result<i64, String> {
    parse_go_time(s).map(|time| {
        time.millis()
            .expect("parse_go_time returns only times representable in milliseconds")
    })
}

/// Go's `time.Parse(time.RFC3339Nano, s)`: the union of its fast RFC 3339
/// path and its general layout parser, which also accepts a one-digit hour,
/// a comma before the fraction, and offsets up to `24:60`.
fn parse_rfc3339(s: &str) -> Option<GoTime> {
    let mut cursor = Cursor {
        bytes: s.as_bytes(),
        at: 0,
    };
    let year = cursor.fixed_digits(4)?;
    cursor.literal(b'-')?;
    let month = cursor.fixed_digits(2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    cursor.literal(b'-')?;
    let day = cursor.fixed_digits(2)?;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    cursor.literal(b'T')?;
    // Go's layout element "15" takes one or two digits.
    let hour = if cursor.peek_digit(1) {
        cursor.fixed_digits(2)?
    } else {
        cursor.fixed_digits(1)?
    };
    if hour >= 24 {
        return None;
    }
    cursor.literal(b':')?;
    let minute = cursor.fixed_digits(2)?;
    if minute >= 60 {
        return None;
    }
    cursor.literal(b':')?;
    let second = cursor.fixed_digits(2)?;
    if second >= 60 {
        return None;
    }

    let mut nanos = 0;
    if matches!(cursor.peek(0), Some(b'.' | b',')) && cursor.peek_digit(1) {
        cursor.at += 1;
        let mut digits = 0;
        while cursor.peek_digit(0) {
            if digits < 9 {
                nanos = nanos * 10 + i64::from(cursor.bytes[cursor.at] - b'0');
                digits += 1;
            }
            cursor.at += 1;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }

    let offset_seconds = if cursor.peek(0) == Some(b'Z') {
        cursor.at += 1;
        0
    } else {
        let sign = match cursor.peek(0)? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        cursor.at += 1;
        let hours = cursor.fixed_digits(2)?;
        cursor.literal(b':')?;
        let minutes = cursor.fixed_digits(2)?;
        if hours > 24 || minutes > 60 {
            return None;
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if cursor.at != cursor.bytes.len() {
        return None;
    }

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(GoTime { seconds, nanos })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.at + ahead).copied()
    }

    fn peek_digit(&self, ahead: usize) -> bool {
        self.peek(ahead).is_some_and(|b| b.is_ascii_digit())
    }

    fn fixed_digits(&mut self, count: usize) -> Option<i64> {
        let mut value = 0;
        for _ in 0..count {
            let b = self.peek(0).filter(u8::is_ascii_digit)?;
            value = value * 10 + i64::from(b - b'0');
            self.at += 1;
        }
        Some(value)
    }

    fn literal(&mut self, expected: u8) -> Option<()> {
        (self.peek(0)? == expected).then(|| self.at += 1)
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats Unix milliseconds as float seconds for a downstream request
/// (`1700000000.123`, `1700000000.1`, `1700000000`, `-0.5`), so that
/// [`parse_time`] (and Prometheus) read back exactly `ms` for any
/// `|ms| < 8.7e15` (about ±275,000 years).
pub fn format_time_param(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let magnitude = ms.unsigned_abs();
    let seconds = magnitude / 1000;
    let millis = magnitude % 1000;
    if millis == 0 {
        return format!("{sign}{seconds}");
    }
    let fraction = format!("{millis:03}");
    format!("{sign}{seconds}.{}", fraction.trim_end_matches('0'))
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Prometheus's `parseDuration`, in Go nanoseconds.
fn parse_duration_nanos(s: &str) -> Result<i64, String> {
    if let Some(seconds) = go_parse_float(s) {
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        let nanos = seconds * NANOS_PER_SECOND as f64;
        // Go compares with float64(math.MaxInt64), which is 2^63; 2^63 itself
        // passes Go's check and then converts to garbage, refused here too.
        if !nanos.is_nan() && !(-TWO_POW_63..TWO_POW_63).contains(&nanos) {
            return Err(format!(
                "cannot parse {} to a valid duration. It overflows int64",
                go_quote(s)
            ));
        }
        // NaN passes Go's check and converts to 0 (arm64) or MinInt64
        // (amd64): either way not positive, which is all that matters to
        // Prometheus's users of the value. Rust's `as` gives 0.
        return Ok(nanos as i64);
    }
    parse_model_duration(s)
        .ok_or_else(|| format!("cannot parse {} to a valid duration", go_quote(s)))
}

/// prometheus/common `model.ParseDuration`: `0`, or one or more
/// `<digits><unit>` with units `y w d h m s ms` in decreasing order, at most
/// `2^63 - 1` nanoseconds.
fn parse_model_duration(s: &str) -> Option<i64> {
    match s {
        "0" => return Some(0),
        "" => return None,
        _ => {}
    }
    let bytes = s.as_bytes();
    let mut at = 0;
    let mut total: u64 = 0;
    let mut last_unit_position = 0;
    while at < bytes.len() {
        let digits_start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        if at == digits_start {
            return None;
        }
        let value: u64 = s[digits_start..at].parse().ok()?;
        let unit_start = at;
        while at < bytes.len() && !bytes[at].is_ascii_digit() {
            at += 1;
        }
        let (position, multiplier): (u32, u64) = match &bytes[unit_start..at] {
            b"y" => (1, 365 * 24 * 3600 * 1_000_000_000),
            b"w" => (2, 7 * 24 * 3600 * 1_000_000_000),
            b"d" => (3, 24 * 3600 * 1_000_000_000),
            b"h" => (4, 3600 * 1_000_000_000),
            b"m" => (5, 60 * 1_000_000_000),
            b"s" => (6, 1_000_000_000),
            b"ms" => (7, 1_000_000),
            _ => return None,
        };
        if position <= last_unit_position {
            return None;
        }
        last_unit_position = position;
        if value > (1u64 << 63) / multiplier {
            return None;
        }
        total = total.checked_add(value * multiplier)?;
        if total > i64::MAX as u64 {
            return None;
        }
    }
    i64::try_from(total).ok()
}

/// A duration as Prometheus prints one (`2m`, `1m30s`, `500ms`, `1w1d`,
/// `0s`): largest units first, each only when non-zero.
pub fn format_duration(duration: std::time::Duration) -> String {
    let total_ms = duration.as_millis() as u64;
    if total_ms == 0 {
        return "0s".into();
    }
    let mut remaining = total_ms;
    let mut text = String::new();
    for (unit, size) in [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if remaining >= size {
            text.push_str(&format!("{}{unit}", remaining / size));
            remaining %= size;
        }
    }
    text
}

/// Parses a duration as Prometheus's `parseDuration` does: float seconds
/// (`30`, `0.5`, `-1`, `1e3`) or Prometheus's duration syntax (`1h30m`,
/// `5m`, `1d`, `1w`, `1y`, `100ms`). Returns milliseconds, truncated toward
/// zero as Prometheus converts a duration to milliseconds.
///
/// Errors are Prometheus's: `cannot parse "x" to a valid duration`, and
/// `cannot parse "1e10" to a valid duration. It overflows int64` for float
/// seconds beyond ±2^63 nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    parse_duration_nanos(s).map(|nanos| nanos / NANOS_PER_MILLI)
}

// ---------------------------------------------------------------------------
// PromQL
// ---------------------------------------------------------------------------

/// Checks that `query` parses as PromQL (with `promql-parser`, whose messages
/// differ from Prometheus's Go parser).
pub fn validate_promql(query: &str) -> Result<(), String> {
    parse_promql(query).map(|_| ())
}

/// Prometheus's `parser.DocumentedType`.
fn documented_type(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

/// Prometheus's `parseMatchersParam` for one `match[]` value: the value must
/// be a bare series selector with at least one matcher that does not match
/// the empty string.
fn validate_series_selector(selector: &str) -> Result<(), String> {
    const NON_EMPTY: &str = "match[] must contain at least one non-empty matcher";
    match parse_promql(selector).as_deref() {
        Ok(Expr::VectorSelector(vs)) if vs.offset.is_none() && vs.at.is_none() => {
            // promql-parser refuses selectors whose matchers all match "";
            // this repeats the check in case it ever stops doing so.
            let non_empty = vs.name.as_deref().is_some_and(|name| !name.is_empty())
                || vs.matchers.matchers.iter().any(|m| !m.is_match(""))
                || (!vs.matchers.or_matchers.is_empty()
                    && vs
                        .matchers
                        .or_matchers
                        .iter()
                        .all(|set| set.iter().any(|m| !m.is_match(""))));
            if non_empty {
                Ok(())
            } else {
                Err(NON_EMPTY.to_string())
            }
        }
        Ok(other) => Err(format!(
            "parse error: expected a series selector, got {} expression {}",
            documented_type(other.value_type()),
            go_quote(selector)
        )),
        // Go's ParseMetricSelector does not run this check; the API then
        // reports it in its own words.
        Err(message) if message.contains("at least one non-empty matcher") => {
            Err(NON_EMPTY.to_string())
        }
        Err(message) => Err(message.clone()),
    }
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// Prometheus's `invalidParamError`.
fn invalid_param(parameter: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_data(format!(
        "invalid parameter {}: {message}",
        go_quote(parameter)
    ))
}

/// A non-empty form value (Prometheus treats an empty value as absent).
fn non_empty<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).filter(|value| !value.is_empty())
}

/// Prometheus's `parseLimitParam` (v3): absent or empty is 0 (no limit),
/// otherwise a non-negative integer.
pub fn parse_limit_param(form: &Form) -> Result<u64, ApiError> {
    let Some(value) = non_empty(form, "limit") else {
        return Ok(0);
    };
    let limit = go_atoi(value).map_err(|message| invalid_param("limit", message))?;
    u64::try_from(limit).map_err(|_| invalid_param("limit", "limit must be non-negative"))
}

/// Prometheus's `parseTimeParam`: `None` for an absent or empty value.
fn parse_optional_time(form: &Form, name: &str) -> Result<Option<GoTime>, ApiError> {
    let Some(value) = non_empty(form, name) else {
        return Ok(None);
    };
    parse_go_time(value).map(Some).map_err(|message| {
        invalid_param(name, format!("invalid time value for '{name}': {message}"))
    })
}

fn millis(time: GoTime) -> i64 {
    time.millis()
        .expect("parse_go_time returns only times representable in milliseconds")
}

/// `timeout` in milliseconds; 0 when absent. Prometheus lets a zero or
/// negative timeout expire at once; that is sent on as 1ms, the shortest
/// timeout a downstream can be given, as is a positive timeout under 1ms.
fn parse_timeout(form: &Form) -> Result<i64, ApiError> {
    let Some(value) = non_empty(form, "timeout") else {
        return Ok(0);
    };
    let nanos = parse_duration_nanos(value).map_err(|message| invalid_param("timeout", message))?;
    Ok((nanos / NANOS_PER_MILLI).max(1))
}

/// `lookback_delta` in milliseconds; 0 (the default) when absent, zero or
/// negative, as Prometheus's engine treats those.
fn parse_lookback_delta(form: &Form) -> Result<i64, ApiError> {
    let Some(value) = non_empty(form, "lookback_delta") else {
        return Ok(0);
    };
    let nanos = parse_duration_nanos(value).map_err(|message| {
        ApiError::bad_data(format!("error parsing lookback delta duration: {message}"))
    })?;
    Ok((nanos / NANOS_PER_MILLI).max(0))
}

/// `/api/v1/query`, checked in Prometheus's order: `limit`, `time` (default
/// `now_ms`), `timeout`, `lookback_delta`, `query`.
///
/// `limit` is validated as Prometheus v3.4+ does and passed on downstream.
pub fn parse_instant_query(form: &Form, now_ms: i64) -> Result<InstantQuery, ApiError> {
    let limit = parse_limit_param(form)?;
    let time_ms = parse_optional_time(form, "time")?.map_or(now_ms, millis);
    let timeout_ms = parse_timeout(form)?;
    let lookback_delta_ms = parse_lookback_delta(form)?;
    let query = form.get("query").unwrap_or_default();
    parse_promql(query).map_err(|message| invalid_param("query", message))?;
    Ok(InstantQuery {
        query: query.to_string(),
        time_ms,
        timeout_ms,
        lookback_delta_ms,
        stats: form.get("stats").unwrap_or_default().to_string(),
        limit,
    })
}

/// `/api/v1/query_range`, checked in Prometheus's order: `limit`, `start`,
/// `end`, end before start, `step`, step not positive, at most 11,000 steps,
/// `timeout`, `lookback_delta`, `query` (which must parse and be of type
/// scalar or instant vector).
///
/// Prometheus accepts a positive step under 1ms and then fails in its engine;
/// here such a step gets the zero-or-negative-step error. `limit` is
/// validated and passed on downstream.
pub fn parse_range_query(form: &Form) -> Result<RangeQuery, ApiError> {
    let limit = parse_limit_param(form)?;
    let start_value = form.get("start").unwrap_or_default();
    let start = parse_go_time(start_value).map_err(|message| invalid_param("start", message))?;
    let end_value = form.get("end").unwrap_or_default();
    let end = parse_go_time(end_value).map_err(|message| invalid_param("end", message))?;
    if end < start {
        return Err(invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }

    let step_value = form.get("step").unwrap_or_default();
    let step =
        parse_duration_nanos(step_value).map_err(|message| invalid_param("step", message))?;
    let non_positive = || {
        invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        )
    };
    if step <= 0 {
        return Err(non_positive());
    }
    // For safety, Prometheus limits the number of points per series.
    if end.sub(start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let step_ms = step / NANOS_PER_MILLI;
    if step_ms == 0 {
        return Err(non_positive());
    }

    let timeout_ms = parse_timeout(form)?;
    let lookback_delta_ms = parse_lookback_delta(form)?;
    let query = form.get("query").unwrap_or_default();
    let expr = parse_promql(query).map_err(|message| invalid_param("query", message))?;
    let value_type = expr.value_type();
    if value_type != ValueType::Vector && value_type != ValueType::Scalar {
        return Err(invalid_param(
            "query",
            format!(
                "invalid expression type {} for range query, must be Scalar or instant Vector",
                go_quote(documented_type(value_type))
            ),
        ));
    }

    Ok(RangeQuery {
        query: query.to_string(),
        start_ms: millis(start),
        end_ms: millis(end),
        step_ms,
        timeout_ms,
        lookback_delta_ms,
        stats: form.get("stats").unwrap_or_default().to_string(),
        limit,
    })
}

/// Prometheus's `model.UnescapeName(name, model.ValueEncodingEscaping)`:
/// `U__` names carry `_` as `__` and other characters as `_<hex code>_`;
/// a name that does not decode is returned unchanged.
fn unescape_label_name(name: &str) -> String {
    let Some(escaped) = name.strip_prefix("U__") else {
        return name.to_string();
    };
    let bytes = escaped.as_bytes();
    let mut out = String::with_capacity(escaped.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'_' {
            // Copy the whole character (the input is valid UTF-8).
            let width = escaped[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&escaped[i..i + width]);
            i += width;
            continue;
        }
        i += 1;
        match bytes.get(i) {
            None => return name.to_string(),
            Some(b'_') => {
                out.push('_');
                i += 1;
            }
            Some(_) => {
                let mut code: u32 = 0;
                let mut digits = 0;
                loop {
                    let Some(&b) = bytes.get(i) else {
                        return name.to_string();
                    };
                    if digits >= 6 {
                        return name.to_string();
                    }
                    if b == b'_' {
                        i += 1;
                        break;
                    }
                    let Some(value) = hex_value(b.to_ascii_lowercase()) else {
                        return name.to_string();
                    };
                    code = code * 16 + u32::from(value);
                    digits += 1;
                    i += 1;
                }
                match char::from_u32(code) {
                    Some(c) => out.push(c),
                    None => return name.to_string(),
                }
            }
        }
    }
    out
}

/// `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values`,
/// checked as Prometheus v3.7+ does.
///
/// - label values: `label_name` is unescaped from `U__` form and must be a
///   valid UTF-8 label name, i.e. non-empty (`invalid label name: ""`);
///   [`MetadataQuery::label_name`] holds the unescaped name;
/// - series: the form must have parsed cleanly (`error parsing form values:
///   ...`) and have at least one `match[]` (`no match[] parameter provided`);
/// - `limit`, then `start` and `end` (absent stays `None`), then every
///   `match[]`, each a series selector with a non-empty matcher. Prometheus
///   wraps a bad `match[]` as `invalid parameter "match[]": ...` for series
///   only; the label endpoints report the bare message.
pub fn parse_metadata_query(
    form: &Form,
    kind: MetadataKind,
    label_name: Option<&str>,
) -> Result<MetadataQuery, ApiError> {
    let mut unescaped_name = String::new();
    match kind {
        MetadataKind::LabelValues => {
            unescaped_name = unescape_label_name(label_name.unwrap_or_default());
            if unescaped_name.is_empty() {
                return Err(ApiError::bad_data(format!(
                    "invalid label name: {}",
                    go_quote(&unescaped_name)
                )));
            }
        }
        MetadataKind::Series => {
            if let Some(error) = form.parse_error() {
                return Err(ApiError::bad_data(format!(
                    "error parsing form values: {error}"
                )));
            }
            if form.get("match[]").is_none() {
                return Err(ApiError::bad_data("no match[] parameter provided"));
            }
        }
        MetadataKind::LabelNames => {}
    }

    let limit = parse_limit_param(form)?;
    let start_ms = parse_optional_time(form, "start")?.map(millis);
    let end_ms = parse_optional_time(form, "end")?.map(millis);

    let matchers: Vec<String> = form.get_all("match[]").map(str::to_string).collect();
    for selector in &matchers {
        validate_series_selector(selector).map_err(|message| match kind {
            MetadataKind::Series => invalid_param("match[]", message),
            _ => ApiError::bad_data(message),
        })?;
    }

    Ok(MetadataQuery {
        kind: kind as i32,
        label_name: unescaped_name,
        matchers,
        start_ms,
        end_ms,
        limit,
    })
}

/// Civil date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `Format(time.RFC3339Nano)` of a UTC time: how Prometheus writes
/// times in JSON (boundary times, `startTime`).
pub fn go_format_utc(seconds: i64, nanos: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    let year = if year < 0 {
        format!("-{:04}", -year)
    } else {
        format!("{year:04}")
    };
    let mut fraction = String::new();
    if nanos != 0 {
        fraction = format!(".{nanos:09}").trim_end_matches('0').to_string();
    }
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_proto::ErrorType;

    fn form(query: &str) -> Form {
        Form::parse(Some(query), None)
    }

    fn bad(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        let error = result.expect_err("expected an error");
        assert_eq!(error.error_type, ErrorType::BadData);
        assert_eq!(error.http_status(), 400);
        error.message
    }

    // ----- Form -----

    #[test]
    fn form_body_values_come_before_url_values() {
        let form = Form::parse(
            Some("query=url&time=1&match[]=b"),
            Some(b"query=body&match[]=a"),
        );
        assert_eq!(form.get("query"), Some("body"));
        assert_eq!(form.get("time"), Some("1"));
        assert_eq!(form.get_all("query").collect::<Vec<_>>(), ["body", "url"]);
        assert_eq!(form.get_all("match[]").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(form.get("absent"), None);
        assert_eq!(
            form.to_query_string(),
            "query=body&match%5B%5D=a&query=url&time=1&match%5B%5D=b"
        );
        assert_eq!(form.parse_error(), None);
    }

    #[test]
    fn form_decodes_like_go() {
        let form = form("q=a+b%20c&match%5B%5D=%7Bjob%3D%22x%22%7D&empty=&novalue&&=v");
        assert_eq!(form.get("q"), Some("a b c"));
        assert_eq!(form.get("match[]"), Some("{job=\"x\"}"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("novalue"), Some(""));
        assert_eq!(form.get(""), Some("v"));
        assert_eq!(form.parse_error(), None);
        let round_trip = Form::parse(Some(&form.to_query_string()), None);
        assert_eq!(
            round_trip.pairs().collect::<Vec<_>>(),
            form.pairs().collect::<Vec<_>>()
        );
    }

    #[test]
    fn form_drops_bad_pairs_and_remembers_the_error() {
        let form = form("a=1;b=2&c=%zz&d=%4&e=ok");
        assert_eq!(form.get("a"), None);
        assert_eq!(form.get("c"), None);
        assert_eq!(form.get("d"), None);
        assert_eq!(form.get("e"), Some("ok"));
        // A semicolon error replaces an escape error of the same string.
        assert_eq!(
            form.parse_error(),
            Some("invalid semicolon separator in query")
        );
        let form = Form::parse(Some("x=%4"), Some(b"y=%zz1"));
        assert_eq!(form.parse_error(), Some("invalid URL escape \"%zz\""));
        assert_eq!(
            Form::parse(Some("x=%4"), None).parse_error(),
            Some("invalid URL escape \"%4\"")
        );
    }

    #[test]
    fn form_from_pairs_and_empty() {
        let form = Form::from_pairs([("query", "up"), ("query", "down")]);
        assert_eq!(form.get("query"), Some("up"));
        assert_eq!(Form::parse(None, None), Form::default());
        assert_eq!(Form::default().to_query_string(), "");
    }

    // ----- go_quote / numbers -----

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("abc"), "\"abc\"");
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            go_quote("\n\t\r\x07\x08\x0b\x0c"),
            "\"\\n\\t\\r\\a\\b\\v\\f\""
        );
        assert_eq!(go_quote("\x00\x1b\x7f"), "\"\\x00\\x1b\\x7f\"");
        assert_eq!(
            go_quote("\u{85}\u{a0}\u{200b}\u{feff}"),
            "\"\\u0085\\u00a0\\u200b\\ufeff\""
        );
        assert_eq!(go_quote("\u{10ffff}"), "\"\\U0010ffff\"");
        assert_eq!(go_quote("héllo 世界 🙂"), "\"héllo 世界 🙂\"");
    }

    #[test]
    fn parse_float_follows_go_grammar() {
        for (input, expected) in [
            ("1", 1.0),
            ("+1.5", 1.5),
            ("-0.25", -0.25),
            (".5", 0.5),
            ("5.", 5.0),
            ("1.5e9", 1.5e9),
            ("1E3", 1000.0),
            ("5.e3", 5000.0),
            ("1e+2", 100.0),
            ("1e-400", 0.0),
            ("007", 7.0),
        ] {
            assert_eq!(go_parse_float(input), Some(expected), "{input}");
        }
        for input in ["inf", "+Inf", "INFINITY", "-inf", "-Infinity"] {
            assert!(go_parse_float(input).unwrap().is_infinite(), "{input}");
        }
        assert!(go_parse_float("NaN").unwrap().is_nan());
        for input in [
            "", "+", "-", ".", "e5", "1e", "1e+", "1..2", "1_000", "+nan", "-NaN", "infin",
            "0x1p4", " 1", "1 ", "1e400", "-1e400", "1f", "١",
        ] {
            assert_eq!(go_parse_float(input), None, "{input}");
        }
    }

    #[test]
    fn atoi_matches_go() {
        assert_eq!(go_atoi("10"), Ok(10));
        assert_eq!(go_atoi("+7"), Ok(7));
        assert_eq!(go_atoi("-0"), Ok(0));
        assert_eq!(go_atoi("0009"), Ok(9));
        assert_eq!(
            go_atoi("abc"),
            Err("strconv.Atoi: parsing \"abc\": invalid syntax".into())
        );
        assert_eq!(
            go_atoi("1.5"),
            Err("strconv.Atoi: parsing \"1.5\": invalid syntax".into())
        );
        assert_eq!(
            go_atoi("+"),
            Err("strconv.Atoi: parsing \"+\": invalid syntax".into())
        );
        assert_eq!(
            go_atoi("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(
            go_atoi("-99999999999999999999"),
            Err("strconv.Atoi: parsing \"-99999999999999999999\": value out of range".into())
        );
    }

    // ----- parse_time -----

    #[test]
    fn parse_time_float_seconds() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000.1"), Ok(1_700_000_000_100));
        assert_eq!(parse_time("1.5e9"), Ok(1_500_000_000_000));
        assert_eq!(parse_time("1.5"), Ok(1500));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("-0.5"), Ok(-500));
        assert_eq!(parse_time("-0.001"), Ok(-1));
        assert_eq!(parse_time("-1"), Ok(-1000));
        // Fractions are rounded (half away from zero) to milliseconds.
        assert_eq!(parse_time("1.0004"), Ok(1000));
        // 1.0005 is 1.000499999... as a float64, so Go rounds it down.
        assert_eq!(parse_time("1.0005"), Ok(1000));
        assert_eq!(parse_time("1.0625"), Ok(1063));
        assert_eq!(parse_time("-1.0625"), Ok(-1063));
        assert_eq!(parse_time("1.9996"), Ok(2000));
        assert_eq!(parse_time("-1.0006"), Ok(-1001));
        assert_eq!(parse_time("1700000000.123456789123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000.9999"), Ok(1_700_000_001_000));
        assert_eq!(parse_time("1e-400"), Ok(0));
        assert_eq!(parse_time("1e12"), Ok(1_000_000_000_000_000));
    }

    #[test]
    fn parse_time_reproduces_go_float_truncation() {
        // Go computes int64(round(frac*1000)/1000 * 1e9): every millisecond
        // fraction survives that round trip.
        for k in 0..1000_i64 {
            let fraction = k as f64 / 1000.0;
            assert_eq!((fraction * 1e9) as i64 / NANOS_PER_MILLI, k);
            assert_eq!(
                parse_time(&format!("1700000000.{k:03}")),
                Ok(1_700_000_000_000 + k)
            );
            assert_eq!(parse_time(&format!("-12.{k:03}")), Ok(-12_000 - k));
        }
    }

    #[test]
    fn parse_time_rfc3339() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        // Nanoseconds are truncated to milliseconds, extra digits ignored.
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123999999Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.1239999999999Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T16:43:20.250-05:30"),
            Ok(1_700_000_000_250)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20-00:00"),
            Ok(1_700_000_000_000)
        );
        // Go's general parser: a comma before the fraction, a one-digit hour,
        // offsets up to 24:60.
        assert_eq!(parse_time("2023-11-14T22:13:20,5Z"), Ok(1_700_000_000_500));
        assert_eq!(
            parse_time("2023-11-15T2:13:20+04:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-15T22:13:20+24:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+00:60"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(parse_time("1969-12-31T23:59:59.9999Z"), Ok(-1));
        assert_eq!(parse_time("0000-01-01T00:00:00Z"), Ok(-62_167_219_200_000));
        assert_eq!(parse_time("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000));
        for input in [
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "2023-11-14t22:13:20Z",
            "2023-11-14T22:13:20z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:60Z",
            "2023-13-14T22:13:20Z",
            "2023-00-14T22:13:20Z",
            "2023-11-31T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "1900-02-29T00:00:00Z",
            "2023-11-00T22:13:20Z",
            "2023-1-14T22:13:20Z",
            "23-11-14T22:13:20Z",
            "+023-11-14T22:13:20Z",
            "12023-11-14T22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20+01",
            "2023-11-14T22:13:20+25:00",
            "2023-11-14T22:13:20+01:61",
            "2023-11-14T22:13:20Z ",
            "2023-11-14T22:13:20ZZ",
            "2023-11-14T22:3:20Z",
        ] {
            assert_eq!(
                parse_time(input),
                Err(format!("cannot parse \"{input}\" to a valid timestamp")),
                "{input}"
            );
        }
    }

    #[test]
    fn parse_time_boundary_strings() {
        assert_eq!(go_format_utc(MIN_TIME_SECONDS, 0), MIN_TIME_FORMATTED);
        assert_eq!(
            go_format_utc(MAX_TIME_SECONDS, 999_999_999),
            MAX_TIME_FORMATTED
        );
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(MIN_TIME_MS, -9_223_309_901_257_974_000);
        assert_eq!(MAX_TIME_MS, 9_223_309_901_257_974_999);
    }

    #[test]
    fn parse_time_errors() {
        for input in [
            "", "abc", "now", "1h", "0x10", "1_000", "inf", "-Inf", "NaN", "1e19", "-1e300",
            "1e400",
        ] {
            assert_eq!(
                parse_time(input),
                Err(format!(
                    "cannot parse {} to a valid timestamp",
                    go_quote(input)
                )),
                "{input}"
            );
        }
        assert_eq!(
            parse_time("a\"b"),
            Err("cannot parse \"a\\\"b\" to a valid timestamp".to_string())
        );
        // Beyond what milliseconds in an i64 can hold.
        assert!(parse_time("9.3e15").is_err());
        assert!(parse_time("9.2e15").is_ok());
    }

    #[test]
    fn format_time_param_examples() {
        assert_eq!(format_time_param(1_700_000_000_123), "1700000000.123");
        assert_eq!(format_time_param(1_700_000_000_000), "1700000000");
        assert_eq!(format_time_param(1_700_000_000_100), "1700000000.1");
        assert_eq!(format_time_param(1_700_000_000_020), "1700000000.02");
        assert_eq!(format_time_param(0), "0");
        assert_eq!(format_time_param(-1), "-0.001");
        assert_eq!(format_time_param(-1500), "-1.5");
        assert_eq!(format_time_param(-2000), "-2");
        for ms in [
            8_699_999_999_999_999,
            -8_699_999_999_999_999,
            8_699_999_999_999_001,
        ] {
            assert_eq!(parse_time(&format_time_param(ms)), Ok(ms));
        }
        assert_eq!(format_time_param(i64::MIN), "-9223372036854775.808");
        assert_eq!(format_time_param(i64::MAX), "9223372036854775.807");
    }

    proptest! {
        #[test]
        fn format_time_param_round_trips(ms in -8_700_000_000_000_000_i64..8_700_000_000_000_000) {
            prop_assert_eq!(parse_time(&format_time_param(ms)), Ok(ms));
        }

        #[test]
        fn format_time_param_round_trips_near_now(ms in -4_000_000_000_000_i64..4_000_000_000_000) {
            prop_assert_eq!(parse_time(&format_time_param(ms)), Ok(ms));
        }

        #[test]
        fn rfc3339_agrees_with_float_seconds(seconds in -62_167_219_200_i64..253_402_300_799, millis in 0_i64..1000) {
            let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
            let in_day = seconds.rem_euclid(86_400);
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                in_day / 3600, in_day % 3600 / 60, in_day % 60
            );
            prop_assert_eq!(parse_time(&text), Ok(seconds * 1000 + millis));
        }

        #[test]
        fn parse_time_never_panics(s in ".{0,40}") {
            let _ = parse_time(&s);
            let _ = parse_duration(&s);
        }
    }

    // ----- parse_duration -----

    #[test]
    fn parse_duration_float_seconds() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1.5e3"), Ok(1_500_000));
        assert_eq!(parse_duration("-1"), Ok(-1000));
        assert_eq!(parse_duration("0.0001"), Ok(0));
        assert_eq!(parse_duration("0.0015"), Ok(1));
        assert_eq!(parse_duration("-0.0015"), Ok(-1));
        assert_eq!(parse_duration("9223372036"), Ok(9_223_372_036_000));
        assert_eq!(
            parse_duration("-9223372036.854775808"),
            Ok(i64::MIN / NANOS_PER_MILLI)
        );
        assert_eq!(parse_duration("NaN"), Ok(0));
        for input in [
            "9223372037",
            "1e10",
            "-1e10",
            "inf",
            "-inf",
            "9223372036.854775808",
        ] {
            assert_eq!(
                parse_duration(input),
                Err(format!(
                    "cannot parse {} to a valid duration. It overflows int64",
                    go_quote(input)
                )),
                "{input}"
            );
        }
    }

    #[test]
    fn parse_duration_prometheus_syntax() {
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1w"), Ok(604_800_000));
        assert_eq!(parse_duration("1y"), Ok(31_536_000_000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert_eq!(
            parse_duration("1y2w3d4h5m6s7ms"),
            Ok(31_536_000_000 + 1_209_600_000 + 259_200_000 + 14_400_000 + 300_000 + 6000 + 7)
        );
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("00h"), Ok(0));
        assert_eq!(parse_duration("292y"), Ok(292 * 31_536_000_000));
        // The largest the syntax allows: 2^63 - 1 ns.
        assert_eq!(
            parse_model_duration("106751d23h47m16s854ms"),
            Some(9_223_372_036_854_000_000)
        );
        for input in [
            "",
            "m",
            "5M",
            "1.5h",
            "1h 30m",
            "30m1h",
            "1m1m",
            "1s1ms1s",
            "-1h",
            "+1h",
            "1us",
            "1ns",
            "1h30",
            "293y",
            "106752d",
            "99999999999999999999s",
            "1 h",
            "P1D",
            "5mm",
            "1h-30m",
        ] {
            assert_eq!(
                parse_duration(input),
                Err(format!(
                    "cannot parse {} to a valid duration",
                    go_quote(input)
                )),
                "{input}"
            );
        }
    }

    // ----- instant query -----

    #[test]
    fn instant_query_defaults_and_values() {
        let query = parse_instant_query(&form("query=up"), 1_700_000_000_000).unwrap();
        assert_eq!(
            query,
            InstantQuery {
                query: "up".into(),
                time_ms: 1_700_000_000_000,
                timeout_ms: 0,
                lookback_delta_ms: 0,
                stats: String::new(),
                limit: 0,
            }
        );
        let query = parse_instant_query(
            &form("query=sum(rate(x%5B5m%5D))&time=1600000000.5&timeout=30s&lookback_delta=1m&stats=all&limit=5"),
            0,
        )
        .unwrap();
        assert_eq!(query.query, "sum(rate(x[5m]))");
        assert_eq!(query.time_ms, 1_600_000_000_500);
        assert_eq!(query.timeout_ms, 30_000);
        assert_eq!(query.lookback_delta_ms, 60_000);
        assert_eq!(query.stats, "all");
        // Empty values are absent values.
        let query =
            parse_instant_query(&form("query=1&time=&timeout=&lookback_delta=&limit="), 7).unwrap();
        assert_eq!(
            (query.time_ms, query.timeout_ms, query.lookback_delta_ms),
            (7, 0, 0)
        );
        // A range vector is fine for an instant query.
        assert!(parse_instant_query(&form("query=up%5B5m%5D"), 0).is_ok());
    }

    #[test]
    fn instant_query_timeout_and_lookback_edge_values() {
        let parse = |q: &str| parse_instant_query(&form(q), 0).unwrap();
        assert_eq!(parse("query=up&timeout=0").timeout_ms, 1);
        assert_eq!(parse("query=up&timeout=-5").timeout_ms, 1);
        assert_eq!(parse("query=up&timeout=0.0001").timeout_ms, 1);
        assert_eq!(parse("query=up&timeout=1.5").timeout_ms, 1500);
        assert_eq!(parse("query=up&lookback_delta=-1").lookback_delta_ms, 0);
        assert_eq!(parse("query=up&lookback_delta=0").lookback_delta_ms, 0);
        assert_eq!(parse("query=up&lookback_delta=2.5").lookback_delta_ms, 2500);
    }

    #[test]
    fn instant_query_errors_in_prometheus_order() {
        let parse = |q: &str| bad(parse_instant_query(&form(q), 0));
        assert_eq!(
            parse("query=up&time=abc"),
            "invalid parameter \"time\": invalid time value for 'time': cannot parse \"abc\" to a valid timestamp"
        );
        assert_eq!(
            parse("query=up&timeout=abc"),
            "invalid parameter \"timeout\": cannot parse \"abc\" to a valid duration"
        );
        assert_eq!(
            parse("query=up&timeout=1e10"),
            "invalid parameter \"timeout\": cannot parse \"1e10\" to a valid duration. It overflows int64"
        );
        assert_eq!(
            parse("query=up&lookback_delta=x"),
            "error parsing lookback delta duration: cannot parse \"x\" to a valid duration"
        );
        assert_eq!(
            parse("query=up&limit=-1"),
            "invalid parameter \"limit\": limit must be non-negative"
        );
        assert_eq!(
            parse("query=up&limit=x"),
            "invalid parameter \"limit\": strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert!(parse("query=sum(").starts_with("invalid parameter \"query\": "));
        assert!(parse("").starts_with("invalid parameter \"query\": "));
        assert!(parse("query=").starts_with("invalid parameter \"query\": "));
        // Order: limit, time, timeout, lookback_delta, query.
        assert!(parse("query=(&lookback_delta=x&timeout=x&time=x&limit=x").contains("\"limit\""));
        assert!(parse("query=(&lookback_delta=x&timeout=x&time=x").contains("\"time\""));
        assert!(parse("query=(&lookback_delta=x&timeout=x").contains("\"timeout\""));
        assert!(parse("query=(&lookback_delta=x").starts_with("error parsing lookback delta"));
    }

    // ----- range query -----

    #[test]
    fn range_query_values() {
        let query = parse_range_query(&form(
            "query=rate(x%5B5m%5D)&start=2023-11-14T22:13:20Z&end=1700003600.5&step=15s&timeout=1m&lookback_delta=5m&stats=true",
        ))
        .unwrap();
        assert_eq!(
            query,
            RangeQuery {
                query: "rate(x[5m])".into(),
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_003_600_500,
                step_ms: 15_000,
                timeout_ms: 60_000,
                lookback_delta_ms: 300_000,
                stats: "true".into(),
                limit: 0,
            }
        );
        let query = parse_range_query(&form("query=1&start=0&end=0&step=0.5")).unwrap();
        assert_eq!((query.start_ms, query.end_ms, query.step_ms), (0, 0, 500));
        let query = parse_range_query(&form("query=up&start=10&end=20&step=1m")).unwrap();
        assert_eq!(query.step_ms, 60_000);
    }

    #[test]
    fn range_query_point_limit_boundary() {
        // (end - start) / step == 11000 is accepted; 11001 is not.
        let ok = parse_range_query(&form("query=up&start=0&end=11000&step=1")).unwrap();
        assert_eq!((ok.start_ms, ok.end_ms, ok.step_ms), (0, 11_000_000, 1000));
        assert!(parse_range_query(&form("query=up&start=0&end=11000.999&step=1")).is_ok());
        let message = "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)";
        assert_eq!(
            bad(parse_range_query(&form(
                "query=up&start=0&end=11001&step=1"
            ))),
            message
        );
        assert_eq!(
            bad(parse_range_query(&form(
                "query=up&start=0&end=1100.1&step=0.1"
            ))),
            message
        );
        assert!(parse_range_query(&form("query=up&start=0&end=1100&step=0.1")).is_ok());
        // Nanosecond precision of RFC 3339 counts, as in Prometheus.
        assert!(
            parse_range_query(&form(
                "query=up&start=1970-01-01T00:00:00Z&end=1970-01-01T03:03:20Z&step=1"
            ))
            .is_ok()
        );
        assert_eq!(
            bad(parse_range_query(&form(
                "query=up&start=1970-01-01T00:00:00Z&end=1970-01-01T03:03:21.000000001Z&step=1"
            ))),
            message
        );
        // The widest range saturates instead of overflowing.
        let widest =
            format!("query=up&start={MIN_TIME_FORMATTED}&end={MAX_TIME_FORMATTED}&step=1s");
        assert_eq!(
            bad(parse_range_query(&Form::from_pairs(form_pairs(&widest)))),
            message
        );
    }

    fn form_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn range_query_errors_in_prometheus_order() {
        let parse = |q: &str| bad(parse_range_query(&form(q)));
        assert_eq!(
            parse("query=up&end=1&step=1"),
            "invalid parameter \"start\": cannot parse \"\" to a valid timestamp"
        );
        assert_eq!(
            parse("query=up&start=x&end=1&step=1"),
            "invalid parameter \"start\": cannot parse \"x\" to a valid timestamp"
        );
        assert_eq!(
            parse("query=up&start=1&end=y&step=1"),
            "invalid parameter \"end\": cannot parse \"y\" to a valid timestamp"
        );
        assert_eq!(
            parse("query=up&start=2&end=1&step=1"),
            "invalid parameter \"end\": end timestamp must not be before start time"
        );
        // Sub-millisecond order counts, as in Prometheus.
        assert_eq!(
            parse("query=up&start=1970-01-01T00:00:01.0005Z&end=1970-01-01T00:00:01.0001Z&step=1"),
            "invalid parameter \"end\": end timestamp must not be before start time"
        );
        assert_eq!(
            parse("query=up&start=1&end=2"),
            "invalid parameter \"step\": cannot parse \"\" to a valid duration"
        );
        assert_eq!(
            parse("query=up&start=1&end=2&step=1x"),
            "invalid parameter \"step\": cannot parse \"1x\" to a valid duration"
        );
        let non_positive = "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer";
        assert_eq!(parse("query=up&start=1&end=2&step=0"), non_positive);
        assert_eq!(parse("query=up&start=1&end=2&step=-1"), non_positive);
        assert_eq!(parse("query=up&start=1&end=2&step=0s"), non_positive);
        assert_eq!(parse("query=up&start=1&end=2&step=NaN"), non_positive);
        assert_eq!(parse("query=up&start=1&end=1&step=0.0001"), non_positive);
        assert_eq!(
            parse("query=up&start=1&end=2&step=1e10"),
            "invalid parameter \"step\": cannot parse \"1e10\" to a valid duration. It overflows int64"
        );
        assert_eq!(
            parse("query=up&start=1&end=2&step=1&timeout=z"),
            "invalid parameter \"timeout\": cannot parse \"z\" to a valid duration"
        );
        assert_eq!(
            parse("query=up&start=1&end=2&step=1&lookback_delta=z"),
            "error parsing lookback delta duration: cannot parse \"z\" to a valid duration"
        );
        assert_eq!(
            parse("query=up&start=1&end=2&step=1&limit=-3"),
            "invalid parameter \"limit\": limit must be non-negative"
        );
        assert!(
            parse("query=up%7B&start=1&end=2&step=1").starts_with("invalid parameter \"query\": ")
        );
        assert_eq!(
            parse("query=up%5B5m%5D&start=1&end=2&step=1"),
            "invalid parameter \"query\": invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
        );
        assert_eq!(
            parse("query=%22s%22&start=1&end=2&step=1"),
            "invalid parameter \"query\": invalid expression type \"string\" for range query, must be Scalar or instant Vector"
        );
        assert_eq!(
            parse("query=rate(x%5B5m%5D)%5B1h:1m%5D&start=1&end=2&step=1"),
            "invalid parameter \"query\": invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
        );
        // Order: limit, start, end, end < start, step, step <= 0, points, timeout, lookback, query.
        assert!(parse("query=(&start=x&limit=x").contains("\"limit\""));
        assert!(parse("query=(&start=x&end=x&step=x").contains("\"start\""));
        assert!(parse("query=(&start=1&end=x&step=x").contains("\"end\""));
        assert!(parse("query=(&start=2&end=1&step=x").contains("must not be before"));
        assert!(parse("query=(&start=1&end=2&step=x&timeout=x").contains("\"step\""));
        assert!(
            parse("query=(&start=0&end=20000&step=1&timeout=x").starts_with("exceeded maximum")
        );
        assert!(
            parse("query=(&start=1&end=2&step=1&timeout=x&lookback_delta=x")
                .contains("\"timeout\"")
        );
        assert!(
            parse("query=(&start=1&end=2&step=1&lookback_delta=x")
                .starts_with("error parsing lookback")
        );
    }

    // ----- metadata -----

    #[test]
    fn series_query() {
        let query = parse_metadata_query(
            &Form::parse(
                Some("match[]=up&start=1&end=2023-11-14T22:13:20Z&limit=10"),
                Some(b"match[]=%7Bjob%3D%22a%22%7D"),
            ),
            MetadataKind::Series,
            None,
        )
        .unwrap();
        assert_eq!(
            query,
            MetadataQuery {
                kind: MetadataKind::Series as i32,
                label_name: String::new(),
                matchers: vec!["{job=\"a\"}".into(), "up".into()],
                start_ms: Some(1000),
                end_ms: Some(1_700_000_000_000),
                limit: 10,
            }
        );
        let query =
            parse_metadata_query(&form("match[]=up&start=&end="), MetadataKind::Series, None)
                .unwrap();
        assert_eq!((query.start_ms, query.end_ms, query.limit), (None, None, 0));
        // Prometheus does not check end against start here.
        assert!(
            parse_metadata_query(
                &form("match[]=up&start=2&end=1"),
                MetadataKind::Series,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn series_query_errors() {
        let parse = |q: &str| bad(parse_metadata_query(&form(q), MetadataKind::Series, None));
        assert_eq!(parse(""), "no match[] parameter provided");
        assert_eq!(parse("start=1"), "no match[] parameter provided");
        assert_eq!(
            parse("match[]=up;x"),
            "error parsing form values: invalid semicolon separator in query"
        );
        assert_eq!(
            parse("match[]=%zz"),
            "error parsing form values: invalid URL escape \"%zz\""
        );
        assert_eq!(
            parse("match[]=up&limit=-1"),
            "invalid parameter \"limit\": limit must be non-negative"
        );
        assert_eq!(
            parse("match[]=up&limit=1.5"),
            "invalid parameter \"limit\": strconv.Atoi: parsing \"1.5\": invalid syntax"
        );
        assert_eq!(
            parse("match[]=up&start=x"),
            "invalid parameter \"start\": invalid time value for 'start': cannot parse \"x\" to a valid timestamp"
        );
        assert_eq!(
            parse("match[]=up&end=x"),
            "invalid parameter \"end\": invalid time value for 'end': cannot parse \"x\" to a valid timestamp"
        );
        assert_eq!(
            parse("match[]=up&match[]=%7Ba%3D%22%22%7D"),
            "invalid parameter \"match[]\": match[] must contain at least one non-empty matcher"
        );
        assert_eq!(
            parse("match[]=%7Ba%3D~%22.*%22%7D"),
            "invalid parameter \"match[]\": match[] must contain at least one non-empty matcher"
        );
        assert!(parse("match[]=").starts_with("invalid parameter \"match[]\": "));
        assert!(parse("match[]=up%7B").starts_with("invalid parameter \"match[]\": "));
        for not_a_selector in [
            "up%5B5m%5D",
            "sum(up)",
            "1",
            "up%20offset%205m",
            "up%20%40%20100",
            "(up)",
            "up%2Bup",
        ] {
            assert!(
                parse(&format!("match[]={not_a_selector}")).starts_with(
                    "invalid parameter \"match[]\": parse error: expected a series selector"
                ),
                "{not_a_selector}"
            );
        }
        // Order: match[] presence, limit, start, end, match[] syntax.
        assert!(parse("match[]=(&end=x&start=x&limit=x").contains("\"limit\""));
        assert!(parse("match[]=(&end=x&start=x").contains("\"start\""));
        assert!(parse("match[]=(&end=x").contains("\"end\""));
    }

    #[test]
    fn label_names_query() {
        let query = parse_metadata_query(&form(""), MetadataKind::LabelNames, None).unwrap();
        assert_eq!(query.kind, MetadataKind::LabelNames as i32);
        assert!(query.matchers.is_empty());
        let query = parse_metadata_query(
            &form("match[]=up&match[]=%7B__name__%3D~%22a.%2B%22%7D&limit=0&start=5"),
            MetadataKind::LabelNames,
            None,
        )
        .unwrap();
        assert_eq!(query.matchers, ["up", "{__name__=~\"a.+\"}"]);
        assert_eq!(query.start_ms, Some(5000));
        let parse = |q: &str| {
            bad(parse_metadata_query(
                &form(q),
                MetadataKind::LabelNames,
                None,
            ))
        };
        // Unlike series, the label endpoints report a bad match[] unwrapped.
        assert_eq!(
            parse("match[]=%7Ba%3D%22%22%7D"),
            "match[] must contain at least one non-empty matcher"
        );
        assert!(!parse("match[]=up%7B").starts_with("invalid parameter"));
        assert_eq!(
            parse("limit=x"),
            "invalid parameter \"limit\": strconv.Atoi: parsing \"x\": invalid syntax"
        );
        // The form error is ignored here, as FormValue ignores it.
        assert!(parse_metadata_query(&form("a=%zz;"), MetadataKind::LabelNames, None).is_ok());
    }

    #[test]
    fn label_values_query() {
        let query = parse_metadata_query(
            &form("match[]=up&end=10"),
            MetadataKind::LabelValues,
            Some("job"),
        )
        .unwrap();
        assert_eq!(query.kind, MetadataKind::LabelValues as i32);
        assert_eq!(query.label_name, "job");
        assert_eq!(query.end_ms, Some(10_000));
        // Prometheus v3 accepts any UTF-8 name, and unescapes U__ names.
        for (name, expected) in [
            ("service.name", "service.name"),
            ("0abc", "0abc"),
            ("名前", "名前"),
            ("U__service_2e_name", "service.name"),
            ("U__a__b", "a_b"),
            ("U__a_1F600_", "a😀"),
            ("U__bad_zz_", "U__bad_zz_"),
            ("U__unterminated_2e", "U__unterminated_2e"),
            ("U__too_1234567_", "U__too_1234567_"),
            ("U__surrogate_d800_", "U__surrogate_d800_"),
            ("U__trailing_", "U__trailing_"),
            ("U__", ""),
        ] {
            assert_eq!(unescape_label_name(name), expected, "{name}");
        }
        let query = parse_metadata_query(
            &form(""),
            MetadataKind::LabelValues,
            Some("U__service_2e_name"),
        )
        .unwrap();
        assert_eq!(query.label_name, "service.name");

        let parse = |name: Option<&str>, q: &str| {
            bad(parse_metadata_query(
                &form(q),
                MetadataKind::LabelValues,
                name,
            ))
        };
        assert_eq!(parse(Some(""), ""), "invalid label name: \"\"");
        assert_eq!(parse(None, ""), "invalid label name: \"\"");
        assert_eq!(parse(Some("U__"), ""), "invalid label name: \"\"");
        // The name is checked before anything else.
        assert_eq!(
            parse(Some(""), "limit=x&start=x"),
            "invalid label name: \"\""
        );
        assert_eq!(
            parse(Some("job"), "limit=x"),
            "invalid parameter \"limit\": strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            parse(Some("job"), "start=x"),
            "invalid parameter \"start\": invalid time value for 'start': cannot parse \"x\" to a valid timestamp"
        );
        assert_eq!(
            parse(Some("job"), "match[]=%7Bx%3D%22%22%7D"),
            "match[] must contain at least one non-empty matcher"
        );
    }

    #[test]
    fn validate_promql_examples() {
        assert_eq!(
            validate_promql("sum by (job) (rate(http_requests_total[5m]))"),
            Ok(())
        );
        assert!(validate_promql("sum(").is_err());
        assert!(validate_promql("").is_err());
    }
}
