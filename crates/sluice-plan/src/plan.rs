//! The plan: a tree whose leaves are sub-queries to run or cached extents,
//! and whose inner nodes merge their children.

use sluice_proto::{ApiResponse, ErrorType, QueryData, RangeQuery, ResponseData};

use crate::cache::Extent;
use crate::merge::concat_data_keeping_first;

/// How one range query is answered.
///
/// The tree is explicit so the frontend can count, schedule and report its
/// leaves, and so later node kinds (re-aggregating shards, leaves bound to
/// storage blocks, merges run on queriers) extend it rather than replace it.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// A sub-query a querier must run.
    Query(RangeQuery),
    /// A ready-made answer from the results cache, already cut to the part
    /// of the time range it answers.
    Cached(Extent),
    /// Children answering consecutive, non-overlapping time ranges, in time
    /// order; their matrices are concatenated per series.
    Concat(Vec<Plan>),
}

impl Plan {
    /// The plan for split pieces: one leaf per piece, concatenated. A single
    /// piece is its own plan, so its answer passes through untouched.
    pub fn for_pieces(pieces: Vec<RangeQuery>) -> Plan {
        if pieces.len() == 1 {
            let mut pieces = pieces;
            return Plan::Query(pieces.remove(0));
        }
        Plan::Concat(pieces.into_iter().map(Plan::Query).collect())
    }

    /// The sub-queries to run, depth first, left to right: the order
    /// [`Plan::merge`] expects their answers in.
    pub fn queries(&self) -> Vec<&RangeQuery> {
        let mut queries = Vec::new();
        self.collect_queries(&mut queries);
        queries
    }

    fn collect_queries<'a>(&'a self, into: &mut Vec<&'a RangeQuery>) {
        match self {
            Plan::Query(query) => into.push(query),
            Plan::Cached(_) => {}
            Plan::Concat(children) => children
                .iter()
                .for_each(|child| child.collect_queries(into)),
        }
    }

    /// Number of cached leaves, for the frontend's hit/miss statistics.
    pub fn cached_leaves(&self) -> usize {
        match self {
            Plan::Query(_) => 0,
            Plan::Cached(_) => 1,
            Plan::Concat(children) => children.iter().map(Plan::cached_leaves).sum(),
        }
    }

    /// Samples (float and histogram) the cached leaves supply, for the
    /// frontend's "served from cache" statistics.
    pub fn cached_samples(&self) -> usize {
        match self {
            Plan::Query(_) => 0,
            Plan::Cached(extent) => extent.data.as_ref().map_or(0, QueryData::sample_count),
            Plan::Concat(children) => children.iter().map(Plan::cached_samples).sum(),
        }
    }

    /// The leaves, in order.
    pub(crate) fn leaves(&self) -> Vec<&Plan> {
        let mut leaves = Vec::new();
        self.collect_leaves(&mut leaves);
        leaves
    }

    fn collect_leaves<'a>(&'a self, into: &mut Vec<&'a Plan>) {
        match self {
            Plan::Concat(children) => children.iter().for_each(|child| child.collect_leaves(into)),
            leaf => into.push(leaf),
        }
    }

    /// The final answer, given the answers to [`Plan::queries`] in that order.
    ///
    /// A plan that is a single query leaf returns that leaf's answer as it
    /// came (stats and all). Otherwise: the first error answer, in plan order,
    /// is the answer; else a success matrix with every part concatenated, and
    /// the warnings and infos of every answer, each once, in first-seen order.
    /// A wrong number of answers, or a success that is not a query answer, is
    /// an internal error rather than a panic.
    pub fn merge(&self, answers: Vec<ApiResponse>) -> ApiResponse {
        self.clone().into_merged(answers)
    }

    /// [`Plan::merge`], consuming the plan so that cached data moves into
    /// the answer instead of being copied.
    pub fn into_merged(self, answers: Vec<ApiResponse>) -> ApiResponse {
        self.into_merged_keeping_first(answers).0
    }

    /// [`Plan::into_merged`], also telling whether every series of the
    /// first leaf's data (cached, or the first answer) still begins with
    /// exactly that leaf's samples in the merged answer. Never for an
    /// error.
    fn into_merged_keeping_first(self, answers: Vec<ApiResponse>) -> (ApiResponse, bool) {
        let expected = self.queries().len();
        if answers.len() != expected {
            let error = ApiResponse::error(
                ErrorType::Internal,
                format!(
                    "plan has {expected} sub-queries but got {} answers",
                    answers.len()
                ),
            );
            return (error, false);
        }
        if let Plan::Query(_) = self {
            let answer = answers.into_iter().next().unwrap_or_default();
            let kept = !answer.is_error();
            return (answer, kept);
        }
        let mut answers = answers.into_iter();
        let mut merged = Merged::default();
        if let Err(error) = merged.add(self, &mut answers) {
            return (*error, false);
        }
        let (data, first_kept) = concat_data_keeping_first(merged.parts, 0);
        let mut response = ApiResponse::success(ResponseData::Query(data));
        response.warnings = merged.warnings;
        response.infos = merged.infos;
        (response, first_kept)
    }
}

/// Room for every grid point `queries` can add to a series, so that the
/// final concatenation appends in place.
pub(crate) fn room_for(queries: &[RangeQuery]) -> usize {
    let points = queries
        .iter()
        .map(|query| {
            query
                .end_ms
                .saturating_sub(query.start_ms)
                .checked_div(query.step_ms)
                .unwrap_or(0)
                .saturating_add(1)
        })
        .fold(0, i64::saturating_add);
    // A bound, not a need: Prometheus answers at most 11,000 points.
    usize::try_from(points).unwrap_or(0).min(1 << 16)
}

/// A plan whose cached leaves all come before its query leaves, split by
/// [`crate::cached_prefix`]: its cached data, already concatenated, and the
/// queries that follow it.
#[derive(Debug)]
pub struct CachedPrefix {
    /// The cached part of the answer: every series the cache holds, sorted,
    /// with room for the queries' samples.
    pub data: QueryData,
    pub(crate) queries: Vec<RangeQuery>,
}

impl CachedPrefix {
    /// Samples (float and histogram) the cache supplies, as
    /// [`Plan::cached_samples`] counts them.
    pub fn samples(&self) -> usize {
        self.data.sample_count()
    }

    /// The sub-queries to run, in the order
    /// [`CachedPrefix::into_merged_keeping_prefix`] expects their answers in.
    pub fn queries(&self) -> &[RangeQuery] {
        &self.queries
    }

    /// The final answer, exactly as [`Plan::into_merged`] gives it for the
    /// plan this came from, given the answers to the queries in order; and
    /// whether every series of [`CachedPrefix::data`] still begins with
    /// exactly its samples there: true unless an answer reached back into
    /// the cached time, so that a series had to be put back in order; never
    /// for an error. Encodings made ahead from `data` hold for the answer's
    /// series when true.
    pub fn into_merged_keeping_prefix(self, answers: Vec<ApiResponse>) -> (ApiResponse, bool) {
        let mut children = Vec::with_capacity(self.queries.len() + 1);
        children.push(Plan::Cached(Extent {
            start_ms: 0,
            end_ms: 0,
            data: Some(self.data),
            computed_at_ms: 0,
        }));
        children.extend(self.queries.into_iter().map(Plan::Query));
        Plan::Concat(children).into_merged_keeping_first(answers)
    }
}

/// Accumulates the parts of a merge.
#[derive(Default)]
struct Merged {
    parts: Vec<QueryData>,
    warnings: Vec<String>,
    infos: Vec<String>,
}

fn push_unique(into: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

impl Merged {
    fn add(
        &mut self,
        plan: Plan,
        answers: &mut impl Iterator<Item = ApiResponse>,
    ) -> Result<(), Box<ApiResponse>> {
        match plan {
            Plan::Query(_) => {
                let Some(answer) = answers.next() else {
                    return Err(Box::new(ApiResponse::error(
                        ErrorType::Internal,
                        "missing sub-query answer",
                    )));
                };
                if answer.is_error() {
                    return Err(Box::new(answer));
                }
                push_unique(&mut self.warnings, answer.warnings);
                push_unique(&mut self.infos, answer.infos);
                match answer.data {
                    Some(ResponseData::Query(data)) => self.parts.push(data),
                    // A success without data has nothing to contribute.
                    None => {}
                    Some(_) => {
                        return Err(Box::new(ApiResponse::error(
                            ErrorType::Internal,
                            "sub-query answered with non-query data",
                        )));
                    }
                }
            }
            Plan::Cached(extent) => self.parts.push(extent.data.unwrap_or_default()),
            Plan::Concat(children) => {
                for child in children {
                    self.add(child, answers)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{Label, ResultType, Series};

    fn piece(start_ms: i64, end_ms: i64) -> RangeQuery {
        RangeQuery {
            query: "up".into(),
            start_ms,
            end_ms,
            step_ms: 1,
            ..RangeQuery::default()
        }
    }

    fn answer(samples: &[(i64, f64)], warnings: &[&str]) -> ApiResponse {
        let mut series = Series {
            labels: vec![Label {
                name: "a".into(),
                value: "1".into(),
            }],
            ..Series::default()
        };
        for &(timestamp, value) in samples {
            series.push(timestamp, value);
        }
        let mut response = ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series: vec![series],
            ..QueryData::default()
        }));
        response.warnings = warnings.iter().map(|w| (*w).to_owned()).collect();
        response
    }

    #[test]
    fn a_single_piece_passes_through() {
        let plan = Plan::for_pieces(vec![piece(0, 5)]);
        let mut original = answer(&[(0, 1.0)], &[]);
        if let Some(ResponseData::Query(data)) = &mut original.data {
            data.stats_json = "{}".into();
        }
        assert_eq!(plan.merge(vec![original.clone()]), original);
    }

    #[test]
    fn warnings_are_a_union_in_first_seen_order() {
        let plan = Plan::for_pieces(vec![piece(0, 1), piece(2, 3), piece(4, 5)]);
        let merged = plan.merge(vec![
            answer(&[(0, 0.0)], &["b", "a"]),
            answer(&[(2, 0.0)], &["a", "c"]),
            answer(&[(4, 0.0)], &["b"]),
        ]);
        assert_eq!(merged.warnings, vec!["b", "a", "c"]);
        assert_eq!(merged.http_status, 200);
    }

    #[test]
    fn the_first_error_is_the_answer() {
        let plan = Plan::for_pieces(vec![piece(0, 1), piece(2, 3), piece(4, 5)]);
        let first = ApiResponse::error(ErrorType::Timeout, "slow");
        let second = ApiResponse::error(ErrorType::Execution, "bad");
        let merged = plan.merge(vec![answer(&[], &[]), first.clone(), second]);
        assert_eq!(merged, first);
    }

    #[test]
    fn no_series_is_an_empty_matrix() {
        let plan = Plan::Concat(vec![]);
        let merged = plan.merge(vec![]);
        let Some(ResponseData::Query(data)) = merged.data else {
            panic!("expected query data");
        };
        assert!(data.series.is_empty());
        assert_eq!(data.result_type, ResultType::Matrix as i32);
    }

    #[test]
    fn wrong_answer_count_is_an_internal_error() {
        let plan = Plan::for_pieces(vec![piece(0, 1), piece(2, 3)]);
        assert!(plan.merge(vec![answer(&[], &[])]).is_error());
    }

    #[test]
    fn cached_leaves_and_answers_concatenate_in_plan_order() {
        let cached = Extent {
            start_ms: 0,
            end_ms: 1,
            data: match answer(&[(0, 1.0), (1, 2.0)], &[]).data {
                Some(ResponseData::Query(data)) => Some(data),
                _ => None,
            },
            computed_at_ms: 0,
        };
        let plan = Plan::Concat(vec![Plan::Cached(cached), Plan::Query(piece(2, 3))]);
        assert_eq!(plan.queries(), vec![&piece(2, 3)]);
        assert_eq!(plan.cached_leaves(), 1);
        assert_eq!(plan.cached_samples(), 2);
        let merged = plan.merge(vec![answer(&[(2, 3.0)], &[])]);
        assert_eq!(merged, answer(&[(0, 1.0), (1, 2.0), (2, 3.0)], &[]));
    }
}
