//! A PromQL tokenizer for the pre-parse check: tokens with their byte
//! offsets, described the way Prometheus's error messages describe them.

use crate::go_quote;

/// One token and where it starts in the query (a byte offset).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'a> {
    pub(crate) kind: Kind,
    pub(crate) text: &'a str,
    pub(crate) pos: usize,
    /// For [`Kind::Error`]: Prometheus's message for it.
    pub(crate) message: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Identifier,
    /// An identifier holding a colon: only a metric name, never a label.
    MetricIdentifier,
    Number,
    Duration,
    String,
    /// Punctuation and operators, told apart by their text.
    Symbol,
    Eof,
    /// A lexical error, with its message.
    Error,
}

const KEYWORDS: &[&str] = &[
    "bool",
    "by",
    "group_left",
    "group_right",
    "ignoring",
    "offset",
    "on",
    "without",
];
pub(crate) const AGGREGATORS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];
const WORD_OPERATORS: &[&str] = &["and", "or", "unless", "atan2"];

impl Token<'_> {
    /// The identifier's text lowercased when it is a keyword, aggregator or
    /// word operator (Prometheus matches those case-insensitively).
    pub(crate) fn keyword(&self) -> Option<&'static str> {
        if self.kind != Kind::Identifier {
            return None;
        }
        [KEYWORDS, AGGREGATORS, WORD_OPERATORS, &["start", "end"]]
            .iter()
            .flat_map(|words| words.iter())
            .find(|word| word.eq_ignore_ascii_case(self.text))
            .copied()
    }

    pub(crate) fn is(&self, symbol: &str) -> bool {
        // Callers name keywords only, which Prometheus matches in any case.
        (self.kind == Kind::Symbol && self.text == symbol)
            || (self.kind == Kind::Identifier && self.text.eq_ignore_ascii_case(symbol))
    }

    /// How Prometheus names this token after "unexpected ".
    pub(crate) fn describe(&self) -> String {
        let quoted = go_quote(self.text);
        match self.kind {
            Kind::Eof => "end of input".to_owned(),
            Kind::Error => self.message.as_deref().unwrap_or_default().to_owned(),
            Kind::Number => format!("number {quoted}"),
            Kind::Duration => format!("duration {quoted}"),
            Kind::String => format!("string {}", shortened(self.text)),
            Kind::MetricIdentifier => format!("metric identifier {quoted}"),
            Kind::Identifier => match self.keyword() {
                Some(word) if AGGREGATORS.contains(&word) => format!("<aggr:{}>", self.text),
                Some(word) if WORD_OPERATORS.contains(&word) => format!("<op:{}>", self.text),
                Some(_) => format!("<{}>", self.text),
                None => format!("identifier {quoted}"),
            },
            Kind::Symbol if is_operator(self.text) => format!("<op:{}>", self.text),
            Kind::Symbol => quoted,
        }
    }
}

fn is_operator(symbol: &str) -> bool {
    matches!(
        symbol,
        "+" | "-"
            | "*"
            | "/"
            | "%"
            | "^"
            | "=="
            | "!="
            | "<"
            | "<="
            | ">"
            | ">="
            | "=~"
            | "!~"
            | "@"
    )
}

/// Go's `%.10q...` for long string tokens, `%q` otherwise.
fn shortened(text: &str) -> String {
    if text.chars().count() > 10 {
        let head: String = text.chars().take(10).collect();
        format!("{}...", go_quote(&head))
    } else {
        go_quote(text)
    }
}

/// Tokens of a query, produced one at a time; after an error or the end it
/// keeps returning that token.
pub(crate) struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    /// Inside `[...]` a colon separates a subquery's range from its step
    /// instead of belonging to a metric name.
    in_brackets: bool,
    /// Inside `{...}` only names, strings and matcher operators may come.
    in_braces: bool,
    paren_depth: usize,
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "=~", "!~", "(", ")", "{", "}", "[", "]", ",", ":", "=", "<", ">", "+",
    "-", "*", "/", "%", "^", "@",
];

impl<'a> Lexer<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Lexer {
            input,
            pos: 0,
            in_brackets: false,
            in_braces: false,
            paren_depth: 0,
        }
    }

    pub(crate) fn next_token(&mut self) -> Token<'a> {
        self.skip_space_and_comments();
        let start = self.pos;
        let rest = &self.input[start..];
        let Some(first) = rest.chars().next() else {
            return self.end(start);
        };
        if self.in_braces
            && !(first.is_ascii_alphabetic() || first == '_')
            && let Some(token) = self.inside_braces(start, first)
        {
            return token;
        }
        if first.is_ascii_digit()
            || (first == '.' && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            return self.number_or_duration(start);
        }
        if first.is_ascii_alphabetic() || first == '_' || (first == ':' && !self.in_brackets) {
            return self.identifier(start);
        }
        if matches!(first, '"' | '\'' | '`') {
            return self.string(start, first);
        }
        if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            // Regex matching exists only inside braces.
            if *symbol == "!~" && !self.in_braces {
                return self.error(start, "unexpected character after '!': '~'".to_owned());
            }
            return self.symbol(start, symbol);
        }
        let message = if first == '!' {
            match rest[1..].chars().next() {
                Some(next) => format!("unexpected character after '!': {}", go_rune(next)),
                None => "unexpected end of input after '!'".to_owned(),
            }
        } else {
            format!("unexpected character: {}", go_rune(first))
        };
        self.error(start, message)
    }

    /// The end of input, or the error an unclosed bracket makes of it, as
    /// Prometheus's lexer reports them.
    fn end(&mut self, pos: usize) -> Token<'a> {
        let unclosed = if self.in_braces {
            "unexpected end of input inside braces"
        } else if self.paren_depth > 0 {
            "unclosed left parenthesis"
        } else if self.in_brackets {
            "unclosed left bracket"
        } else {
            return self.token(Kind::Eof, pos, pos);
        };
        self.error(pos, unclosed.to_owned())
    }

    /// Inside braces: strings, `,`, `}` and matcher operators; any other
    /// character than a name's is an error there. `None`: lex it as usual.
    fn inside_braces(&mut self, start: usize, first: char) -> Option<Token<'a>> {
        let rest = &self.input[start..];
        let allowed = ["}", ",", "=~", "!~", "!=", "="];
        if matches!(first, '"' | '\'' | '`') || allowed.iter().any(|s| rest.starts_with(s)) {
            return None;
        }
        // Past `first` by its width: a multi-byte character is not cut.
        let message = match rest[first.len_utf8()..].chars().next() {
            Some(next) if first == '!' => {
                format!(
                    "unexpected character after '!' inside braces: {}",
                    go_rune(next)
                )
            }
            _ => format!("unexpected character inside braces: {}", go_rune(first)),
        };
        Some(self.error(start, message))
    }

    /// A symbol, keeping track of open brackets; a closing one that closes
    /// nothing is an error, worded and placed as Prometheus does.
    fn symbol(&mut self, start: usize, symbol: &str) -> Token<'a> {
        match symbol {
            "(" => self.paren_depth += 1,
            ")" if self.paren_depth == 0 => {
                return self.error(start + 1, "unexpected right parenthesis ')'".to_owned());
            }
            ")" => self.paren_depth -= 1,
            "[" => self.in_brackets = true,
            "]" if !self.in_brackets => {
                return self.error(start, "unexpected right bracket ']'".to_owned());
            }
            "]" => self.in_brackets = false,
            "{" => self.in_braces = true,
            "}" if !self.in_braces => {
                return self.error(start, "unexpected character: '}'".to_owned());
            }
            "}" => self.in_braces = false,
            _ => {}
        }
        self.token(Kind::Symbol, start, start + symbol.len())
    }

    fn token(&mut self, kind: Kind, start: usize, end: usize) -> Token<'a> {
        self.pos = end;
        Token {
            kind,
            text: &self.input[start..end],
            pos: start,
            message: None,
        }
    }

    fn error(&mut self, start: usize, message: String) -> Token<'a> {
        // An error ends the scan: every later token is the end.
        self.pos = self.input.len();
        Token {
            kind: Kind::Error,
            text: &self.input[start..start],
            pos: start,
            message: Some(message.into_boxed_str()),
        }
    }

    fn skip_space_and_comments(&mut self) {
        let bytes = self.input.as_bytes();
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while self.pos < bytes.len() && bytes[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn identifier(&mut self, start: usize) -> Token<'a> {
        let end = start
            + self.input[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(self.input.len() - start);
        let text = &self.input[start..end];
        let kind = if text.contains(':') {
            Kind::MetricIdentifier
        } else if text.eq_ignore_ascii_case("inf") || text.eq_ignore_ascii_case("nan") {
            Kind::Number
        } else {
            Kind::Identifier
        };
        self.token(kind, start, end)
    }

    /// Numbers (decimal, hexadecimal, with exponent) and durations (`5m`,
    /// `1h30m`); a number running into letters is one bad token, as in Go.
    fn number_or_duration(&mut self, start: usize) -> Token<'a> {
        let end = start
            + self.input[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(self.input.len() - start);
        let mut end = end;
        let text = &self.input[start..end];
        // An exponent's sign is part of the number: `1e-3`.
        if (text.ends_with('e') || text.ends_with('E'))
            && !text.starts_with("0x")
            && self.input[end..].starts_with(['+', '-'])
        {
            let digits = self.input[end + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(self.input.len() - end - 1);
            end += 1 + digits;
        }
        let text = &self.input[start..end];
        if is_duration(text) {
            self.token(Kind::Duration, start, end)
        } else if is_number(text) {
            self.token(Kind::Number, start, end)
        } else {
            self.error(
                start,
                format!("bad number or duration syntax: {}", go_quote(text)),
            )
        }
    }

    fn string(&mut self, start: usize, quote: char) -> Token<'a> {
        let mut chars = self.input[start + 1..].char_indices();
        while let Some((offset, c)) = chars.next() {
            if c == quote {
                return self.token(Kind::String, start, start + 1 + offset + 1);
            }
            if quote == '`' {
                continue;
            }
            match c {
                '\\' => match chars.next() {
                    None => return self.error(start, "escape sequence not terminated".to_owned()),
                    Some((_, escaped)) if !is_escape(escaped, quote) => {
                        let message = format!(
                            "unknown escape sequence U+{:04X} {}",
                            escaped as u32,
                            go_rune(escaped)
                        );
                        return self.error(start, message);
                    }
                    Some(_) => {}
                },
                '\n' => return self.error(start, "unterminated quoted string".to_owned()),
                _ => {}
            }
        }
        let message = if quote == '`' {
            "unterminated raw string"
        } else {
            "unterminated quoted string"
        };
        self.error(start, message.to_owned())
    }
}

/// Whether `\\c` starts an escape Go's string syntax knows, in a string
/// quoted with `quote` (the digits after `x`, `u`, `U` and octal escapes are
/// left to the parser).
fn is_escape(c: char, quote: char) -> bool {
    c == quote
        || matches!(
            c,
            'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' | 'x' | 'u' | 'U' | '0'..='7'
        )
}

/// Go's `%q` of one rune.
fn go_rune(c: char) -> String {
    match c {
        '\'' => "'\\''".to_owned(),
        '\\' => "'\\\\'".to_owned(),
        c if c.is_control() => format!("'\\x{:02x}'", c as u32),
        c => format!("'{c}'"),
    }
}

fn is_number(text: &str) -> bool {
    let text = text.replace('_', "");
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    text.parse::<f64>().is_ok()
}

/// Prometheus durations: one or more `<digits><unit>` in falling unit order.
fn is_duration(text: &str) -> bool {
    const UNITS: &[&str] = &["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = text;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit_len = if rest.starts_with("ms") { 2 } else { 1 };
        let Some(unit) = rest.get(..unit_len) else {
            return false;
        };
        let Some(index) = UNITS.iter().position(|u| *u == unit) else {
            return false;
        };
        if last_unit.is_some_and(|last| index <= last) {
            return false;
        }
        last_unit = Some(index);
        rest = &rest[unit_len..];
    }
    last_unit.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(query: &str) -> Vec<(Kind, String)> {
        let mut lexer = Lexer::new(query);
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token();
            let end = matches!(token.kind, Kind::Eof | Kind::Error);
            let text = match &token.message {
                Some(message) => message.to_string(),
                None => token.text.to_owned(),
            };
            tokens.push((token.kind, text));
            if end {
                return tokens;
            }
        }
    }

    #[test]
    fn tokens_of_a_query() {
        use Kind::*;
        let tokens = kinds("sum by (job) (rate(x:y{a=~\"b\\\"\"}[1h30m] offset -5m)) >= 0x1F # c");
        let texts: Vec<&str> = tokens.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "sum",
                "by",
                "(",
                "job",
                ")",
                "(",
                "rate",
                "(",
                "x:y",
                "{",
                "a",
                "=~",
                "\"b\\\"\"",
                "}",
                "[",
                "1h30m",
                "]",
                "offset",
                "-",
                "5m",
                ")",
                ")",
                ">=",
                "0x1F",
                ""
            ]
        );
        assert_eq!(tokens[8].0, MetricIdentifier);
        assert_eq!(tokens[15].0, Duration);
        assert_eq!(tokens[23].0, Number);
        assert_eq!(tokens[24].0, Eof);
    }

    #[test]
    fn lexical_errors_say_what_went_wrong() {
        assert_eq!(kinds("a $").last().unwrap().1, "unexpected character: '$'");
        assert_eq!(
            kinds("\"abc").last().unwrap().1,
            "unterminated quoted string"
        );
        assert_eq!(kinds("`abc").last().unwrap().1, "unterminated raw string");
        assert_eq!(
            kinds("1a").last().unwrap().1,
            "bad number or duration syntax: \"1a\""
        );
        assert_eq!(kinds("1e-3").first().unwrap().0, Kind::Number);
        assert_eq!(kinds("5m1h").last().unwrap().0, Kind::Error);
    }

    #[test]
    fn tokens_are_described_as_prometheus_does() {
        let describe = |query: &str| Lexer::new(query).next_token().describe();
        assert_eq!(describe("foo"), "identifier \"foo\"");
        assert_eq!(describe("a:b"), "metric identifier \"a:b\"");
        assert_eq!(describe("+"), "<op:+>");
        assert_eq!(describe("and"), "<op:and>");
        assert_eq!(describe("by"), "<by>");
        assert_eq!(describe("sum"), "<aggr:sum>");
        assert_eq!(describe("("), "\"(\"");
        assert_eq!(describe("1"), "number \"1\"");
        assert_eq!(describe("5m"), "duration \"5m\"");
        assert_eq!(describe("'abcdefghijkl'"), "string \"'abcdefghi\"...");
        assert_eq!(describe(""), "end of input");
    }
}
