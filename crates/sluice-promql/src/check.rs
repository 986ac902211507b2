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
use crate::place::{Record, Ty};

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
/// On success, what the check saw of the query's calls, aggregations,
/// operators and matchers, to place the type errors it cannot find itself.
pub(crate) fn check(query: &str, max_depth: usize) -> Result<Vec<Record>, Refusal> {
    let mut checker = Checker {
        lexer: Lexer::new(query),
        current: None,
        max_depth,
        first_error: None,
        records: Vec::new(),
    };
    if checker.peek().kind == Kind::Eof {
        return Err(checker.refuse_at(0, "no expression found in input"));
    }
    checker.expr(0, 1)?;
    if checker.peek().kind != Kind::Eof {
        return Err(checker.unexpected("", ""));
    }
    match checker.first_error {
        Some(refusal) => Err(refusal),
        None => Ok(checker.records),
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
    ty: Ty,
    /// Where it starts in the query.
    pos: usize,
}

impl Node {
    fn leaf(ty: Ty, pos: usize) -> Node {
        Node {
            depth: 1,
            selector: ty == Ty::Vector,
            modified: None,
            ty,
            pos,
        }
    }

    /// A node above `self`, of type `ty`, starting at `pos`.
    fn wrapped(self, ty: Ty, pos: usize) -> Node {
        Node {
            depth: self.depth + 1,
            selector: false,
            modified: None,
            ty,
            pos,
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
    records: Vec<Record>,
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
            let returns_bool = self.binary_modifiers()?;
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
            let ty = Ty::of_binary(left.ty, right.ty);
            self.records.push(Record::Binary {
                op: operator.text.to_ascii_lowercase(),
                op_pos: operator.pos,
                returns_bool,
                lhs: (left.pos, left.ty),
                rhs: (right.pos, right.ty),
            });
            left = Node {
                depth: combined,
                selector: false,
                modified: None,
                ty,
                pos: left.pos,
            };
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Node, Refusal> {
        if self.peek().is("+") || self.peek().is("-") {
            let sign = self.advance();
            // Unary minus binds like `*`: only `^` binds tighter.
            let operand = self.expr(POWER, depth + 1)?;
            self.records.push(Record::Unary {
                pos: sign.pos,
                ty: operand.ty,
            });
            return Ok(operand.wrapped(operand.ty, sign.pos));
        }
        let primary = self.primary(depth)?;
        self.postfix(primary, depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Node, Refusal> {
        let token = self.peek().clone();
        match token.kind {
            Kind::Number | Kind::Duration => {
                self.advance();
                Ok(Node::leaf(Ty::Scalar, token.pos))
            }
            Kind::String => {
                self.advance();
                Ok(Node::leaf(Ty::String, token.pos))
            }
            Kind::Symbol if token.text == "(" => {
                self.advance();
                let inner = self.expr(0, depth + 1)?;
                self.close(")")?;
                Ok(inner.wrapped(inner.ty, token.pos))
            }
            Kind::Symbol if token.text == "{" => {
                self.matchers(token.pos)?;
                Ok(Node::leaf(Ty::Vector, token.pos))
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
            return self.aggregation(token, depth);
        }
        if token.kind == Kind::Identifier && self.peek().is("(") {
            let arguments = self.arguments(depth)?;
            let deepest = arguments.iter().map(|arg| arg.depth).max().unwrap_or(0);
            self.records.push(Record::Call {
                name: token.text.to_owned(),
                pos: token.pos,
                args: arguments.iter().map(|arg| (arg.pos, arg.ty)).collect(),
            });
            let call = Node::leaf(Ty::Unknown, token.pos);
            return Ok(Node {
                depth: deepest + 1,
                ..call
            });
        }
        if self.peek().is("{") {
            let open = self.peek().pos;
            self.matchers(open)?;
        }
        Ok(Node::leaf(Ty::Vector, token.pos))
    }

    fn aggregation(&mut self, op: &Token<'a>, depth: usize) -> Result<Node, Refusal> {
        let grouped_first = self.grouping_clause()?;
        if !self.peek().is("(") {
            return Err(self.unexpected("aggregation", ""));
        }
        let arguments = self.arguments(depth)?;
        if !grouped_first {
            self.grouping_clause()?;
        }
        self.records.push(Record::Aggregation {
            op: op.text.to_ascii_lowercase(),
            pos: op.pos,
            args: arguments.iter().map(|arg| (arg.pos, arg.ty)).collect(),
        });
        let deepest = arguments.iter().map(|arg| arg.depth).max().unwrap_or(0);
        Ok(Node {
            depth: deepest + 1,
            ..Node::leaf(Ty::Vector, op.pos)
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

    /// `( expr, ... )` of a call or aggregation.
    fn arguments(&mut self, depth: usize) -> Result<Vec<Node>, Refusal> {
        self.advance(); // (
        let mut arguments = Vec::new();
        if self.peek().is(")") {
            self.advance();
            return Ok(arguments);
        }
        loop {
            arguments.push(self.expr(0, depth + 1)?);
            if self.peek().is(",") {
                let comma = self.advance();
                if self.peek().is(")") {
                    self.note(
                        comma.pos,
                        "trailing commas not allowed in function call args",
                    );
                    self.advance();
                    return Ok(arguments);
                }
                continue;
            }
            self.close(")")?;
            return Ok(arguments);
        }
    }

    /// Expects `closing` (the lexer reports an unclosed bracket at the end).
    fn close(&mut self, closing: &str) -> Result<(), Refusal> {
        if self.peek().is(closing) {
            self.advance();
            return Ok(());
        }
        Err(self.unexpected("", ""))
    }

    /// `{ label op "value", "name", ... }` opened at `open`.
    fn matchers(&mut self, open: usize) -> Result<(), Refusal> {
        self.advance(); // {
        self.records.push(Record::Selector { pos: open });
        loop {
            let token = self.peek().clone();
            if token.is("}") {
                self.advance();
                return Ok(());
            }
            match token.kind {
                Kind::Identifier => self.matcher_rest(&token)?,
                // A quoted name alone is the metric name (UTF-8 names).
                Kind::String => {
                    self.advance();
                    if is_match_operator(self.peek()) {
                        self.advance();
                        self.matcher_value(&token)?;
                    }
                }
                _ => return Err(self.unexpected("label matching", "identifier or \"}\"")),
            }
            if self.peek().is(",") {
                self.advance();
            } else if !self.peek().is("}") {
                return Err(self.unexpected("label matching", "\",\" or \"}\""));
            }
        }
    }

    fn matcher_rest(&mut self, label: &Token<'a>) -> Result<(), Refusal> {
        self.advance(); // the label name
        if !is_match_operator(self.peek()) {
            return Err(self.unexpected("label matching", "label matching operator"));
        }
        self.advance();
        self.matcher_value(label)
    }

    fn matcher_value(&mut self, label: &Token<'a>) -> Result<(), Refusal> {
        if self.peek().kind != Kind::String {
            return Err(self.unexpected("label matching", "string"));
        }
        let value = self.advance();
        self.records.push(Record::Matcher {
            pos: label.pos,
            value: value.text.to_owned(),
        });
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
            return Err(self.unexpected("subquery selector", "duration"));
        }
        self.advance();
        if self.peek().is("]") {
            self.advance();
            if !node.selector {
                self.note(open.pos, "ranges only allowed for vector selectors");
            } else if let Some(modifier) = node.modified {
                self.note(
                    open.pos,
                    &format!("no {modifier} modifiers allowed before range"),
                );
            }
            return Ok(node.wrapped(Ty::Matrix, node.pos));
        }
        if !self.peek().is(":") {
            return Err(self.unexpected("subquery or range", "\":\" or \"]\""));
        }
        self.advance();
        if is_duration(self.peek()) {
            self.advance();
            if !self.peek().is("]") {
                return Err(self.unexpected("subquery selector", "\"]\""));
            }
        } else if !self.peek().is("]") {
            return Err(self.unexpected("subquery selector", "duration or \"]\""));
        }
        self.advance();
        self.records.push(Record::Subquery {
            pos: node.pos,
            ty: node.ty,
        });
        Ok(node.wrapped(Ty::Matrix, node.pos))
    }

    /// `bool`, `on (...)`/`ignoring (...)` and `group_left/right (...)`;
    /// returns whether `bool` was there.
    fn binary_modifiers(&mut self) -> Result<bool, Refusal> {
        let returns_bool = self.peek().is("bool");
        if returns_bool {
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
        Ok(returns_bool)
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
            assert!(
                check(query, 100).is_ok(),
                "{query}: {:?}",
                check(query, 100)
            );
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
        // Prometheus places this one just after the parenthesis.
        assert_eq!(
            refusal("x)"),
            (2, "unexpected right parenthesis ')'".into())
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
            assert!(check(&query, 100).is_ok());
        }
    }
}
