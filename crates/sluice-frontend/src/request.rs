//! What travels down the chain of stages and back: a typed [`Request`] made
//! from the HTTP request, and the [`Answer`] each stage hands back up.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sluice_limits::Tenant;
use sluice_proto::{ApiResponse, Header, QueryKind, RangeQuery};
use tokio::time::Instant;

use crate::fragments::Prefixes;

/// A validated request, as the stages see it.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) tenant: Arc<str>,
    pub(crate) kind: QueryKind,
    /// The whole request's budget, queue time included.
    pub(crate) deadline: Instant,
    pub(crate) cache_control: CacheControl,
    /// The client takes gzip, so prepared encodings are compressed too.
    pub(crate) accepts_gzip: bool,
    /// A range query's pieces, once split: they travel as one batch so the
    /// results cache reads them in one round trip and the fan-out runs
    /// them in parallel. `None` until a stage splits the query.
    pub(crate) pieces: Option<Vec<RangeQuery>>,
    /// The tenant's own limits (runtime overrides), when the request came
    /// through the HTTP API; stages fall back to their configured values.
    pub(crate) limits: Option<Arc<Tenant>>,
    /// The client's headers named by `-query-frontend.forward-headers`,
    /// for the downstream; `None` when there are none.
    pub(crate) forwarded_headers: Option<Arc<[Header]>>,
}

impl Request {
    /// A request for `kind` on behalf of `tenant`, under `deadline`.
    pub(crate) fn new(tenant: Arc<str>, kind: QueryKind, deadline: Instant) -> Request {
        Request {
            tenant,
            kind,
            deadline,
            cache_control: CacheControl::default(),
            accepts_gzip: false,
            pieces: None,
            limits: None,
            forwarded_headers: None,
        }
    }

    /// The same request asking for `kind` instead, unsplit: a sub-query.
    pub(crate) fn with_kind(&self, kind: QueryKind) -> Request {
        Request {
            tenant: self.tenant.clone(),
            kind,
            deadline: self.deadline,
            cache_control: self.cache_control,
            accepts_gzip: self.accepts_gzip,
            pieces: None,
            limits: self.limits.clone(),
            forwarded_headers: self.forwarded_headers.clone(),
        }
    }

    /// Pieces of this request to run at once: the tenant's
    /// `max_query_parallelism`, else `configured`.
    pub(crate) fn parallelism(&self, configured: usize) -> usize {
        self.limits
            .as_ref()
            .map_or(configured, |tenant| tenant.limits.max_query_parallelism)
            .max(1)
    }

    /// How long this tenant's results may be cached: its own
    /// `results_cache_ttl`, else `configured`.
    pub(crate) fn results_ttl(&self, configured: Duration) -> Duration {
        self.limits
            .as_ref()
            .map_or(configured, |tenant| tenant.limits.results_cache_ttl)
    }

    pub(crate) fn range(&self) -> Option<&RangeQuery> {
        match &self.kind {
            QueryKind::Range(query) => Some(query),
            _ => None,
        }
    }
}

/// What the client's `Cache-Control` asks of the caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    /// `no-store`: an answer computed now and kept nowhere.
    pub(crate) no_store: bool,
}

impl CacheControl {
    /// The directives of the `Cache-Control` header values `values`.
    pub(crate) fn parse<'a>(values: impl Iterator<Item = &'a str>) -> CacheControl {
        let no_store = values
            .flat_map(|value| value.split(','))
            .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"));
        CacheControl { no_store }
    }
}

/// What a stage hands back up the chain.
pub(crate) struct Answer {
    pub(crate) outcome: Outcome,
    pub(crate) stats: QueryStats,
    /// A range answer's leading samples, already encoded while the rest was
    /// computed (see [`crate::fragments`]).
    pub(crate) prefixes: Option<Prefixes>,
    /// The body as it goes out, when a stage made it from kept encodings.
    pub(crate) encoded: Option<EncodedBody>,
}

impl Answer {
    /// A whole answer with `stats`.
    pub(crate) fn whole(response: ApiResponse, stats: QueryStats) -> Answer {
        Answer {
            outcome: Outcome::Whole(response),
            stats,
            prefixes: None,
            encoded: None,
        }
    }

    /// The whole answer. Only the split stage makes batches, and it merges
    /// them on the way back, so a batch never reaches the top; should one,
    /// its first failure (or first piece) stands for it.
    pub(crate) fn response(&self) -> &ApiResponse {
        match &self.outcome {
            Outcome::Whole(response) => response,
            Outcome::Pieces(pieces) => pieces.first_failure_or_first(),
        }
    }

    pub(crate) fn into_response(self) -> ApiResponse {
        match self.outcome {
            Outcome::Whole(response) => response,
            Outcome::Pieces(pieces) => pieces.into_first_failure_or_first(),
        }
    }
}

/// A single answer, or the answers to a batch of pieces.
pub(crate) enum Outcome {
    Whole(ApiResponse),
    Pieces(PieceAnswers),
}

/// The answers to a batch of pieces, in the order they were asked.
pub(crate) struct PieceAnswers {
    /// One per piece; pieces dropped after another failed hold a
    /// `canceled` error.
    pub(crate) answers: Vec<ApiResponse>,
    /// The first piece that failed: its answer is the query's.
    pub(crate) failed: Option<usize>,
}

impl PieceAnswers {
    fn first_failure_or_first(&self) -> &ApiResponse {
        &self.answers[self.failed.unwrap_or(0)]
    }

    fn into_first_failure_or_first(mut self) -> ApiResponse {
        self.answers.swap_remove(self.failed.unwrap_or(0))
    }
}

/// A body made by a stage, sent as it is.
pub(crate) enum EncodedBody {
    Json(bytes::Bytes),
    /// JSON as the shared buffers it is made of.
    JsonChunks(Vec<bytes::Bytes>),
    Gzip(bytes::Bytes),
}

/// What the stages did for one request, for its stats line and metrics.
#[derive(Default, Debug)]
pub(crate) struct QueryStats {
    pub(crate) attempts: u32,
    pub(crate) samples: u64,
    pub(crate) execution: Duration,
    pub(crate) pieces: usize,
    pub(crate) sub_queries: usize,
    pub(crate) cached_extents: usize,
    /// Pieces whose results cache entry was found, and not found.
    pub(crate) cache_hits: usize,
    pub(crate) cache_misses: usize,
    /// The found entries' encoded size.
    pub(crate) cache_hit_bytes: usize,
    /// Answered whole from the answer memo.
    pub(crate) memo_hit: bool,
    pub(crate) samples_from_cache: usize,
    /// The shards the query's aggregations ran as (0: not sharded), and
    /// the legs sent for them over all pieces.
    pub(crate) shards: usize,
    pub(crate) shard_legs: usize,
    /// When the answer was known, before its encoding: the stats line
    /// times the query, not the encoding.
    pub(crate) answered_at: Option<Instant>,
}

impl QueryStats {
    /// Adds what running one sub-query cost, and how it was sharded.
    pub(crate) fn add_execution(&mut self, other: &QueryStats) {
        self.attempts += other.attempts;
        self.samples += other.samples;
        self.execution += other.execution;
        self.shards = self.shards.max(other.shards);
        self.shard_legs += other.shard_legs;
    }
}

/// `message` keyed for `tenant`: the tenant is part of every key, so
/// tenants never share answers.
pub(crate) fn tenant_key(tenant: &str, message: &impl Message) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 1 + message.encoded_len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    message.encode(&mut key).expect("a Vec grows as needed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::QueryRequest;

    #[test]
    fn identical_requests_of_different_tenants_never_share_a_key() {
        let request = QueryRequest {
            kind: Some(QueryKind::Range(RangeQuery {
                query: "up".into(),
                ..RangeQuery::default()
            })),
        };
        assert_eq!(tenant_key("a", &request), tenant_key("a", &request));
        assert_ne!(tenant_key("a", &request), tenant_key("b", &request));
        // The tenant ends where the request begins: tenant IDs hold no NUL.
        assert_ne!(tenant_key("ab", &request), tenant_key("a", &request));
    }

    #[test]
    fn no_store_is_found_among_other_directives() {
        assert!(CacheControl::parse(["max-age=0, No-Store"].into_iter()).no_store);
        assert!(CacheControl::parse(["no-cache", "no-store"].into_iter()).no_store);
        assert!(!CacheControl::parse(["no-cache"].into_iter()).no_store);
    }
}
