//! Type errors in Prometheus's words and at Prometheus's positions.
//!
//! `promql-parser` finds type errors but says neither where they are nor
//! quite what Prometheus says. The pre-parse check records every call,
//! aggregation, operator and matcher with its position and what it knows of
//! the types involved; this module finds the node an error is about and
//! words the error as Prometheus's `checkAST` does.

/// Value types as far as the check can tell without a function table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Scalar,
    Vector,
    Matrix,
    String,
    /// A function call's result: the check does not know functions.
    Unknown,
}

impl Ty {
    /// The type of `lhs op rhs`.
    pub(crate) fn of_binary(lhs: Ty, rhs: Ty) -> Ty {
        match (lhs, rhs) {
            (Ty::Unknown, _) | (_, Ty::Unknown) => Ty::Unknown,
            (Ty::Scalar, Ty::Scalar) => Ty::Scalar,
            _ => Ty::Vector,
        }
    }

    /// Prometheus's documented name, as promql-parser writes it.
    fn parser_name(self) -> &'static str {
        match self {
            Ty::Scalar => "scalar",
            Ty::Vector => "vector",
            Ty::Matrix => "matrix",
            Ty::String => "string",
            Ty::Unknown => "",
        }
    }

    /// Whether a node of this type may be the one an error says was `name`.
    fn may_be(self, name: &str) -> bool {
        self == Ty::Unknown || self.parser_name() == name
    }
}

/// A node the check saw, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Call {
        name: String,
        pos: usize,
        args: Vec<(usize, Ty)>,
    },
    Aggregation {
        op: String,
        pos: usize,
        args: Vec<(usize, Ty)>,
    },
    Binary {
        op: String,
        op_pos: usize,
        returns_bool: bool,
        /// Where each operand starts, and its type.
        lhs: (usize, Ty),
        rhs: (usize, Ty),
    },
    Unary {
        pos: usize,
        ty: Ty,
    },
    Subquery {
        pos: usize,
        ty: Ty,
    },
    Selector {
        pos: usize,
    },
    /// A label matcher: where its label starts, and its quoted value.
    Matcher {
        pos: usize,
        value: String,
    },
}

/// Where Prometheus places `message` (promql-parser's words) and how it
/// words it; the start of the query where no node fits.
pub(crate) fn place(message: &str, records: &[Record]) -> (usize, String) {
    let worded = prometheus_wording(message);
    let placed = place_call(message, records)
        .or_else(|| place_aggregation(message, &worded, records))
        .or_else(|| place_operator(message, records))
        .or_else(|| place_other(message, records));
    match placed {
        Some((pos, Some(reworded))) => (pos, reworded),
        Some((pos, None)) => (pos, worded),
        None => (0, worded),
    }
}

type Placed = Option<(usize, Option<String>)>;

/// Text between the first pair of single quotes: the name in an error.
fn quoted_name(message: &str) -> Option<&str> {
    let open = message.find('\'')?;
    let close = message[open + 1..].find('\'')?;
    Some(&message[open + 1..open + 1 + close])
}

/// `expected type T in call to function 'f', got G`, wrong argument
/// counts and unknown functions: at the argument, or at the call.
fn place_call(message: &str, records: &[Record]) -> Placed {
    let name = quoted_name(message)?;
    let calls = records.iter().filter_map(|record| match record {
        Record::Call {
            name: called,
            pos,
            args,
        } if called == name => Some((*pos, args)),
        _ => None,
    });
    if message.starts_with("expected type ") && message.contains(" in call to function ") {
        let got = message.rsplit("got ").next()?;
        let mut calls = calls;
        return calls.find_map(|(_, args)| {
            let (pos, _) = args.iter().find(|(_, ty)| ty.may_be(got))?;
            Some((*pos, None))
        });
    }
    let about_calls = message.contains("argument(s) in call to ")
        || message.starts_with("unknown function with name");
    if about_calls {
        let got: Option<usize> = message.rsplit("got ").next()?.parse().ok();
        let mut calls: Vec<_> = calls.collect();
        calls.sort_by_key(|(_, args)| Some(args.len()) != got);
        return calls.first().map(|(pos, _)| (*pos, None));
    }
    None
}

/// Aggregations: a parameter of the wrong type is Prometheus's
/// "aggregation parameter", at the parameter; the aggregated expression
/// is placed at that expression.
fn place_aggregation(message: &str, worded: &str, records: &[Record]) -> Placed {
    let rest = message.strip_prefix("expected type ")?;
    let (want, got) = rest.split_once(" in aggregation expression, got ")?;
    records.iter().find_map(|record| {
        let Record::Aggregation { op, args, .. } = record else {
            return None;
        };
        let takes_parameter = matches!(
            op.as_str(),
            "topk" | "bottomk" | "quantile" | "count_values" | "limitk" | "limit_ratio"
        );
        let (parameter, expression) = match (takes_parameter, args.as_slice()) {
            (true, [parameter, expression, ..]) => (Some(parameter), expression),
            (false, [expression, ..]) => (None, expression),
            _ => return None,
        };
        if let Some((pos, ty)) = parameter
            && want != "vector"
            && ty.may_be(got)
        {
            let reworded = worded.replace("aggregation expression", "aggregation parameter");
            return Some((*pos, Some(reworded)));
        }
        (want == "vector" && expression.1.may_be(got)).then_some((expression.0, None))
    })
}

/// Binary operator errors: scalar comparisons at the operator, operands
/// of the wrong type at that operand, the others at the left operand.
fn place_operator(message: &str, records: &[Record]) -> Placed {
    let mut binaries = records.iter().filter_map(|record| match record {
        Record::Binary {
            op,
            op_pos,
            returns_bool,
            lhs,
            rhs,
        } => Some((op.as_str(), *op_pos, *returns_bool, *lhs, *rhs)),
        _ => None,
    });
    let comparison = |op: &str| matches!(op, "==" | "!=" | "<" | "<=" | ">" | ">=");
    if message.starts_with("comparisons between scalars") {
        return binaries
            .find(|(op, _, returns_bool, lhs, rhs)| {
                comparison(op) && !returns_bool && lhs.1.may_be("scalar") && rhs.1.may_be("scalar")
            })
            .map(|(_, op_pos, ..)| (op_pos, None));
    }
    if message.starts_with("set operator ") {
        let name = quoted_name(message)?;
        return binaries
            .find(|(op, ..)| *op == name)
            .map(|(_, _, _, lhs, _)| (lhs.0, None));
    }
    if message.starts_with("binary expression must contain only") {
        let odd = |ty: Ty| matches!(ty, Ty::Matrix | Ty::String);
        return binaries.find_map(|(_, _, _, lhs, rhs)| {
            let operand = [lhs, rhs].into_iter().find(|(_, ty)| odd(*ty))?;
            Some((operand.0, None))
        });
    }
    if message.starts_with("vector matching only allowed") {
        return binaries
            .find(|(_, _, _, lhs, rhs)| lhs.1 == Ty::Scalar || rhs.1 == Ty::Scalar)
            .map(|(_, _, _, lhs, _)| (lhs.0, None));
    }
    None
}

/// Unary operators, subqueries, regular expressions and empty selectors.
fn place_other(message: &str, records: &[Record]) -> Placed {
    if let Some(got) = message.strip_prefix(
        "unary expression only allowed on expressions of type scalar or vector, got: ",
    ) {
        let pos = records.iter().find_map(|record| match record {
            Record::Unary { pos, ty } if ty.may_be(got) => Some(*pos),
            _ => None,
        })?;
        let documented = match got {
            "matrix" => "range vector",
            "vector" => "instant vector",
            other => other,
        };
        return Some((
            pos,
            Some(format!(
                "unary expression only allowed on expressions of type scalar or instant vector, got \"{documented}\""
            )),
        ));
    }
    if message.starts_with("subquery is only allowed on") {
        return records.iter().find_map(|record| match record {
            Record::Subquery { pos, ty } if *ty != Ty::Vector => Some((*pos, None)),
            _ => None,
        });
    }
    if let Some(pattern) = message.strip_prefix("illegal regex for ") {
        return records.iter().find_map(|record| match record {
            Record::Matcher { pos, value } if value.contains(pattern) => Some((*pos, None)),
            _ => None,
        });
    }
    if message.contains("at least one non-empty matcher") {
        return records.iter().find_map(|record| match record {
            Record::Selector { pos } => Some((*pos, None)),
            _ => None,
        });
    }
    None
}

/// promql-parser's wording in Prometheus's: double quotes around names and
/// Prometheus's names for value types.
pub(crate) fn prometheus_wording(message: &str) -> String {
    let mut worded = String::with_capacity(message.len() + 16);
    let mut rest = message;
    while let Some(open) = rest.find('\'') {
        let Some(close) = rest[open + 1..].find('\'') else {
            break;
        };
        worded.push_str(&rest[..open]);
        worded.push('"');
        worded.push_str(&rest[open + 1..open + 1 + close]);
        worded.push('"');
        rest = &rest[open + close + 2..];
    }
    worded.push_str(rest);
    if worded.starts_with("expected type ") {
        worded = worded
            .replace("type matrix", "type range vector")
            .replace("type vector", "type instant vector")
            .replace("got matrix", "got range vector")
            .replace("got vector", "got instant vector");
    }
    worded.replace(
        "vector matching only allowed between vectors",
        "vector matching only allowed between instant vectors",
    )
}
