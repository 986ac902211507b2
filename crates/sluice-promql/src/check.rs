//! The pre-parse check: one linear pass over a query's tokens that bounds
//! how deep its syntax tree can nest, before anything recursive sees it,
//! and finds where a query that does not parse went wrong.
//!
//! It recognises PromQL's grammar without building a tree. It is lenient
//! where it cannot tell (function names, argument types): `promql-parser`
//! still decides what is valid, and this check's syntax errors are used only
//! to word and place an error that parser also found. Its depth limit is
//! final: a query over it never reaches the parser.

use crate::lex::{AGGREGATORS, Kind, Lexer, Token};

/// Why a query was refused by the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Byte offset of the token where the problem was found.
    pub(crate) pos: usize,
    pub(crate) message: String,
    /// A sluice limit, not a syntax error: final, whatever the parser says.
    pub(crate) limit: bool,
}

/// Checks `query`'s syntax and that its tree nests at most `max_depth`
/// levels. Runs in time linear in the query's length and recursion bounded
/// by `max_depth`.
pub(crate) fn check(query: &str, max_depth: usize) -> Result<(), Refusal> {
    let mut checker = Checker {
        lexer: Lexer::new(query),
        current: None,
        max_depth,
        first_error: None,
    };
    if checker.peek().kind == Kind::Eof {
        return Err(checker.refuse_at(0, "no expression found in input"));
    }
    checker.expr(0, 1)?;
    let next = checker.peek().clone();
    if next.kind != Kind::Eof {
        return Err(checker.unexpected_at_top(&next));
    }
    match checker.first_error {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// What the check knows about a parsed sub-expression.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Levels of the syntax tree below and including this node.
    depth: usize,
    /// A bare vector selector, which alone may take a range.
    selector: bool,
    /// Has `offset` or `@`, which must not come before a range.
    modified: Option<&'static str>,
}

impl Node {
    fn leaf(selector: bool) -> Node {
        Node {
            depth: 1,
            selector,
            modified: None,
        }
    }

    fn wrapped(self) -> Node {
        Node {
            depth: self.depth + 1,
            selector: false,
            modified: None,
        }
    }
}

struct Checker<'a> {
    lexer: Lexer<'a>,
    current: Option<Token<'a>>,
    max_depth: usize,
    /// A semantic error met on the way (Prometheus records these and
    /// parses on); reported if no syntax error follows.
    first_error: Option<Refusal>,
}

/// Binary operators by precedence, lowest first; `^` alone is
/// right-associative.
fn precedence(token: &Token<'_>) -> Option<u8> {
    if token.kind == Kind::Identifier {
        return match token.keyword()? {
            "or" => Some(1),
            "and" | "unless" => Some(2),
            "atan2" => Some(5),
            _ => None,
        };
    }
    if token.kind != Kind::Symbol {
        return None;
    }
    match token.text {
        "==" | "!=" | "<" | "<=" | ">" | ">=" => Some(3),
        "+" | "-" => Some(4),
        "*" | "/" | "%" => Some(5),
        "^" => Some(6),
        _ => None,
    }
}

const POWER: u8 = 6;

impl<'a> Checker<'a> {
    fn peek(&mut self) -> &Token<'a> {
        if self.current.is_none() {
            self.current = Some(self.lexer.next_token());
        }
        self.current.as_ref().expect("just filled")
    }

    fn advance(&mut self) -> Token<'a> {
        self.peek();
        self.current.take().expect("just peeked")
    }

    fn refuse_at(&self, pos: usize, message: impl Into<String>) -> Refusal {
        Refusal {
            pos,
            message: message.into(),
            limit: false,
        }
    }

    /// Prometheus's "unexpected <token> in <context>, expected <what>".
    fn unexpected(&mut self, context: &str, expected: &str) -> Refusal {
        let token = self.peek().clone();
        let mut message = format!("unexpected {}", token.describe());
        if token.kind == Kind::Error {
            message = token.describe();
        } else {
            if !context.is_empty() {
                message.push_str(" in ");
                message.push_str(context);
            }
            if !expected.is_empty() {
                message.push_str(", expected ");
                message.push_str(expected);
            }
        }
        self.refuse_at(token.pos, message)
    }

    fn unexpected_at_top(&mut self, token: &Token<'_>) -> Refusal {
        let message = match token.text {
            ")" if token.kind == Kind::Symbol => "unexpected right parenthesis ')'".to_owned(),
            "}" if token.kind == Kind::Symbol => "unexpected right brace '}'".to_owned(),
            "]" if token.kind == Kind::Symbol => "unexpected right bracket ']'".to_owned(),
            _ => return self.unexpected("", ""),
        };
        self.refuse_at(token.pos, message)
    }

    /// Remembers a semantic error; only the first counts.
    fn note(&mut self, pos: usize, message: &str) {
        if self.first_error.is_none() {
            self.first_error = Some(self.refuse_at(pos, message));
        }
    }

    fn too_deep(&self, pos: usize) -> Refusal {
        Refusal {
            pos,
            message: format!(
                "the query nests more than {} levels deep (operators, parentheses, \
                 function calls and aggregations each add one), over sluice's limit",
                self.max_depth
            ),
            limit: true,
        }
    }

    fn within_depth(&mut self, depth: usize) -> Result<(), Refusal> {
        if depth > self.max_depth {
            let pos = self.peek().pos;
            return Err(self.too_deep(pos));
        }
        Ok(())
    }

    /// An expression whose binary operators bind at least as tightly as
    /// `min_precedence`; `depth` is how deep in the tree it starts.
    fn expr(&mut self, min_precedence: u8, depth: usize) -> Result<Node, Refusal> {
        self.within_depth(depth)?;
        let mut left = self.unary(depth)?;
        loop {
            let operator = self.peek().clone();
            let Some(precedence) = precedence(&operator).filter(|p| *p >= min_precedence) else {
                return Ok(left);
            };
            self.advance();
            self.binary_modifiers()?;
            let next_min = if precedence == POWER {
                precedence
            } else {
                precedence + 1
            };
            let right = self.expr(next_min, depth + 1)?;
            // A left-associative chain nests without recursing here, so
            // its depth is counted, not just the recursion's.
            let combined = left.depth.max(right.depth) + 1;
            if depth + combined - 1 > self.max_depth {
                return Err(self.too_deep(operator.pos));
            }
            left = Node {
                depth: combined,
                selector: false,
                modified: None,
            };
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Node, Refusal> {
        if self.peek().is("+") || self.peek().is("-") {
            self.advance();
            // Unary minus binds like `*`: only `^` binds tighter.
            return Ok(self.expr(POWER, depth + 1)?.wrapped());
        }
        let primary = self.primary(depth)?;
        self.postfix(primary, depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Node, Refusal> {
        let token = self.peek().clone();
        match token.kind {
            Kind::Number | Kind::String | Kind::Duration => {
                self.advance();
                Ok(Node::leaf(false))
            }
            Kind::Symbol if token.text == "(" => {
                self.advance();
                let inner = self.expr(0, depth + 1)?;
                self.close(")")?;
                Ok(inner.wrapped())
            }
            Kind::Symbol if token.text == "{" => {
                self.matchers()?;
                Ok(Node::leaf(true))
            }
            Kind::Identifier | Kind::MetricIdentifier => self.named(&token, depth),
            _ => Err(self.unexpected("", "")),
        }
    }

    /// An aggregation, a function call or a vector selector.
    fn named(&mut self, token: &Token<'a>, depth: usize) -> Result<Node, Refusal> {
        self.advance();
        let is_aggregator = token
            .keyword()
            .is_some_and(|word| AGGREGATORS.contains(&word));
        if is_aggregator && token.kind == Kind::Identifier {
            return self.aggregation(depth);
        }
        if token.kind == Kind::Identifier && self.peek().is("(") {
            let widest = self.arguments(depth)?;
            return Ok(Node {
                depth: widest + 1,
                selector: false,
                modified: None,
            });
        }
        if self.peek().is("{") {
            self.matchers()?;
        }
        Ok(Node::leaf(true))
    }

    fn aggregation(&mut self, depth: usize) -> Result<Node, Refusal> {
        let grouped_first = self.grouping_clause()?;
        if !self.peek().is("(") {
            return Err(self.unexpected("aggregation", ""));
        }
        let widest = self.arguments(depth)?;
        if !grouped_first {
            self.grouping_clause()?;
        }
        Ok(Node {
            depth: widest + 1,
            selector: false,
            modified: None,
        })
    }

    /// `by (...)` or `without (...)` if present; returns whether it was.
    fn grouping_clause(&mut self) -> Result<bool, Refusal> {
        if self.peek().is("by") || self.peek().is("without") {
            self.advance();
            self.label_list()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `( label, ... )` of a grouping or vector matching clause.
    fn label_list(&mut self) -> Result<(), Refusal> {
        if !self.peek().is("(") {
            return Err(self.unexpected("grouping opts", "\"(\""));
        }
        self.advance();
        loop {
            if self.peek().is(")") {
                self.advance();
                return Ok(());
            }
            if !matches!(self.peek().kind, Kind::Identifier | Kind::String) {
                return Err(self.unexpected("grouping opts", "label"));
            }
            self.advance();
            if self.peek().is(",") {
                self.advance();
            } else if !self.peek().is(")") {
                return Err(self.unexpected("grouping opts", "\",\" or \")\""));
            }
        }
    }

    /// `( expr, ... )` of a call or aggregation; returns the deepest
    /// argument's depth.
    fn arguments(&mut self, depth: usize) -> Result<usize, Refusal> {
        self.advance(); // (
        let mut widest = 0;
        if self.peek().is(")") {
            self.advance();
            return Ok(widest);
        }
        loop {
            widest = widest.max(self.expr(0, depth + 1)?.depth);
            if self.peek().is(",") {
                let comma = self.advance();
                if self.peek().is(")") {
                    self.note(
                        comma.pos,
                        "trailing commas not allowed in function call args",
                    );
                    self.advance();
                    return Ok(widest);
                }
                continue;
            }
            self.close(")")?;
            return Ok(widest);
        }
    }

    /// Expects `closing`; the end of input here is an unclosed bracket.
    fn close(&mut self, closing: &str) -> Result<(), Refusal> {
        let token = self.peek().clone();
        if token.is(closing) {
            self.advance();
            return Ok(());
        }
        if token.kind == Kind::Eof {
            let message = match closing {
                ")" => "unclosed left parenthesis",
                "}" => "unexpected end of input inside braces",
                _ => "unexpected end of input inside brackets",
            };
            return Err(self.refuse_at(token.pos, message));
        }
        Err(self.unexpected("", ""))
    }

    /// `{ label op "value", "name", ... }`.
    fn matchers(&mut self) -> Result<(), Refusal> {
        self.advance(); // {
        loop {
            let token = self.peek().clone();
            if token.is("}") {
                self.advance();
                return Ok(());
            }
            if token.kind == Kind::Eof {
                return Err(self.refuse_at(token.pos, "unexpected end of input inside braces"));
            }
            match token.kind {
                Kind::Identifier => self.matcher_rest()?,
                // A quoted name alone is the metric name (UTF-8 names).
                Kind::String => {
                    self.advance();
                    if is_match_operator(self.peek()) {
                        self.advance();
                        self.matcher_value()?;
                    }
                }
                _ => return Err(self.unexpected("label matching", "identifier or \"}\"")),
            }
            if self.peek().is(",") {
                self.advance();
            } else if !self.peek().is("}") {
                if self.peek().kind == Kind::Eof {
                    let pos = self.peek().pos;
                    return Err(self.refuse_at(pos, "unexpected end of input inside braces"));
                }
                return Err(self.unexpected("label matching", "\",\" or \"}\""));
            }
        }
    }

    fn matcher_rest(&mut self) -> Result<(), Refusal> {
        self.advance(); // the label name
        if !is_match_operator(self.peek()) {
            return Err(self.unexpected("label matching", "label matching operator"));
        }
        self.advance();
        self.matcher_value()
    }

    fn matcher_value(&mut self) -> Result<(), Refusal> {
        if self.peek().kind != Kind::String {
            return Err(self.unexpected("label matching", "string"));
        }
        self.advance();
        Ok(())
    }

    /// Ranges, subqueries, `offset` and `@` after an expression.
    fn postfix(&mut self, mut node: Node, depth: usize) -> Result<Node, Refusal> {
        loop {
            let token = self.peek().clone();
            if token.is("[") {
                node = self.range_or_subquery(node, &token)?;
                if depth + node.depth - 1 > self.max_depth {
                    return Err(self.too_deep(token.pos));
                }
            } else if token.is("offset") {
                self.advance();
                if self.peek().is("-") {
                    self.advance();
                }
                if !is_duration(self.peek()) {
                    return Err(self.unexpected("offset", "duration"));
                }
                self.advance();
                node.modified = Some("offset");
            } else if token.is("@") {
                self.advance();
                self.at_timestamp()?;
                node.modified = Some("@");
            } else {
                return Ok(node);
            }
        }
    }

    fn at_timestamp(&mut self) -> Result<(), Refusal> {
        if self.peek().is("+") || self.peek().is("-") {
            self.advance();
        }
        if self.peek().kind == Kind::Number {
            self.advance();
            return Ok(());
        }
        if self.peek().is("start") || self.peek().is("end") {
            self.advance();
            if self.peek().is("(") {
                self.advance();
                return self.close(")");
            }
        }
        Err(self.unexpected("@", "timestamp"))
    }

    fn range_or_subquery(&mut self, node: Node, open: &Token<'a>) -> Result<Node, Refusal> {
        self.advance(); // [
        if !is_duration(self.peek()) {
            return Err(self.bracket_error("subquery selector", "duration"));
        }
        self.advance();
        if self.peek().is("]") {
            self.advance();
            if let Some(modifier) = node.modified {
                self.note(
                    open.pos,
                    &format!("no {modifier} modifiers allowed before range"),
                );
            } else if !node.selector {
                self.note(open.pos, "ranges only allowed for vector selectors");
            }
            return Ok(node.wrapped());
        }
        if !self.peek().is(":") {
            return Err(self.bracket_error("subquery or range", "\":\" or \"]\""));
        }
        self.advance();
        if is_duration(self.peek()) {
            self.advance();
            if !self.peek().is("]") {
                return Err(self.bracket_error("subquery selector", "\"]\""));
            }
        } else if !self.peek().is("]") {
            return Err(self.bracket_error("subquery selector", "duration or \"]\""));
        }
        self.advance();
        Ok(node.wrapped())
    }

    fn bracket_error(&mut self, context: &str, expected: &str) -> Refusal {
        if self.peek().kind == Kind::Eof {
            let pos = self.peek().pos;
            return self.refuse_at(pos, "unexpected end of input inside brackets");
        }
        self.unexpected(context, expected)
    }

    /// `bool`, `on (...)`/`ignoring (...)` and `group_left/right (...)`.
    fn binary_modifiers(&mut self) -> Result<(), Refusal> {
        if self.peek().is("bool") {
            self.advance();
        }
        if self.peek().is("on") || self.peek().is("ignoring") {
            self.advance();
            self.label_list()?;
            if self.peek().is("group_left") || self.peek().is("group_right") {
                self.advance();
                if self.peek().is("(") {
                    self.label_list()?;
                }
            }
        }
        Ok(())
    }
}

fn is_match_operator(token: &Token<'_>) -> bool {
    token.kind == Kind::Symbol && matches!(token.text, "=" | "!=" | "=~" | "!~")
}

/// Durations; PromQL 3 also takes plain numbers of seconds.
fn is_duration(token: &Token<'_>) -> bool {
    matches!(token.kind, Kind::Duration | Kind::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(query: &str) -> (usize, String) {
        let refusal = check(query, 100).expect_err(query);
        (refusal.pos, refusal.message)
    }

    #[test]
    fn valid_queries_pass() {
        for query in [
            "up",
            "sum by (job) (rate(http_requests_total{job=~\"a.*\",}[5m] offset -1h @ 100))",
            "sum(x) by (job) / on (job) group_left (a) count without () (y)",
            "-2 ^ -x[5m:] ^ 3 atan2 y or z unless w and bool v",
            "rate(x[5m])[1h:1m] @ start()",
            "{__name__=\"up\"}",
            "{\"my.metric\", a=\"b\"}",
            "topk(3, x) > bool 1",
            "# comment\nup",
            "x:y:z + on() vector(1)",
        ] {
            assert_eq!(check(query, 100), Ok(()), "{query}");
        }
    }

    #[test]
    fn syntax_errors_are_placed_and_worded_as_prometheus() {
        assert_eq!(refusal("1 +"), (3, "unexpected end of input".into()));
        assert_eq!(
            refusal("foo bar"),
            (4, "unexpected identifier \"bar\"".into())
        );
        assert_eq!(refusal("sum(x"), (5, "unclosed left parenthesis".into()));
        assert_eq!(
            refusal("up{"),
            (3, "unexpected end of input inside braces".into())
        );
        assert_eq!(
            refusal("x offset"),
            (
                8,
                "unexpected end of input in offset, expected duration".into()
            )
        );
        assert_eq!(
            refusal("sum by job (x)"),
            (
                7,
                "unexpected identifier \"job\" in grouping opts, expected \"(\"".into()
            )
        );
        assert_eq!(
            refusal("x{a}"),
            (
                3,
                "unexpected \"}\" in label matching, expected label matching operator".into()
            )
        );
        assert_eq!(
            refusal("x)"),
            (1, "unexpected right parenthesis ')'".into())
        );
        assert_eq!(refusal(""), (0, "no expression found in input".into()));
        assert_eq!(refusal("x $"), (2, "unexpected character: '$'".into()));
        assert_eq!(
            refusal("rate(x,)"),
            (
                6,
                "trailing commas not allowed in function call args".into()
            )
        );
        assert_eq!(
            refusal("(x)[5m]"),
            (3, "ranges only allowed for vector selectors".into())
        );
    }

    #[test]
    fn depth_is_bounded_for_every_shape_of_nesting() {
        let deep = [
            format!("{}1{}", "(".repeat(101), ")".repeat(101)),
            vec!["x"; 102].join(" + "),
            vec!["2"; 102].join(" ^ "),
            vec!["x"; 102].join(" or "),
            format!("{}x{}", "sum(".repeat(101), ")".repeat(101)),
            format!("{}x", "-".repeat(101)),
            format!("x{}", "[1m:]".repeat(101)),
            format!("{}x{}", "abs(".repeat(60), ") + 1".repeat(60)),
        ];
        for query in deep {
            let refusal = check(&query, 100).expect_err(&query);
            assert!(refusal.limit, "{query}: {refusal:?}");
        }
        let shallow = [
            format!("{}1{}", "(".repeat(90), ")".repeat(90)),
            vec!["x"; 95].join(" + "),
            format!("x{{{}}}", vec!["a=\"b\""; 10_000].join(",")),
        ];
        for query in shallow {
            assert_eq!(check(&query, 100), Ok(()));
        }
    }
}
