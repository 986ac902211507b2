//! Label matchers with Prometheus's semantics: regular expressions are fully
//! anchored, and a matcher that accepts the empty string also accepts series
//! without the label (`{a=""}` selects series without `a`, `{a!=""}` series
//! with it).

use std::fmt;

use regex::Regex;

use crate::error::{Error, Result};

/// The four matcher operators of PromQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// `name op "value"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Matcher> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                // Prometheus anchors the whole expression and lets `.` match newlines.
                let anchored = format!("^(?s:{value})$");
                Some(Regex::new(&anchored).map_err(|error| Error::Matcher {
                    matcher: format!("{name}{}{value:?}", op.as_str()),
                    reason: error.to_string(),
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Whether a label value (`""` for an absent label) is selected.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(regex)) => regex.is_match(value),
            (MatchOp::NotRegex, Some(regex)) => !regex.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}{}{:?}",
            self.name,
            self.op.as_str(),
            self.value
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored_and_dot_matches_newline() {
        let matcher = Matcher::new(MatchOp::Regex, "a", "fo+").unwrap();
        assert!(matcher.matches("foo") && !matcher.matches("xfoo") && !matcher.matches("foox"));
        assert!(
            Matcher::new(MatchOp::Regex, "a", "a.b")
                .unwrap()
                .matches("a\nb")
        );
        assert!(
            Matcher::new(MatchOp::NotRegex, "a", "x|")
                .unwrap()
                .matches("y")
        );
        let error = Matcher::new(MatchOp::Regex, "a", "(")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("invalid matcher a=~\"(\":"), "{error}");
    }
}
