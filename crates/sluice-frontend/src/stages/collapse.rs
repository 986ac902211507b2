//! Collapsing identical in-flight work: a sub-query identical to one
//! already running (same tenant, same request) waits for that one's answer
//! instead of running again. A batch of pieces fans out here, each piece
//! collapsed on its own and run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sluice_proto::{ApiResponse, ErrorType, QueryKind, RangeQuery};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{AnswerFuture, Next, Stage};
use crate::clock::SharedClock;
use crate::metrics::FrontendMetrics;
use crate::request::{Answer, Outcome, PieceAnswers, QueryStats, Request};

type Shared = watch::Receiver<Option<Arc<ApiResponse>>>;

/// A sub-query in flight: where its answer will be published, and the
/// deadline its leader runs it under.
#[derive(Clone)]
struct Leader {
    answer: Shared,
    deadline: Instant,
}

/// Runs each sub-query once however many ask at the same time.
pub(crate) struct CollapseStage {
    next: Next,
    /// Sub-queries in flight, by tenant and request.
    in_flight: Mutex<HashMap<Vec<u8>, Leader>>,
    metrics: FrontendMetrics,
    clock: SharedClock,
    /// Pieces of one query run at once, unless its tenant says otherwise.
    parallelism: usize,
    query_timeout: Duration,
}

/// Whether a follower whose own `deadline` is still ahead should run the
/// sub-query itself rather than take its leader's `answer`: when the
/// leader gave up because its own, earlier deadline passed. (A timeout the
/// backend reported before the leader's deadline is the backend's answer,
/// and running it again would only cost the backend as much once more.)
fn outlived_its_leader(
    answer: &ApiResponse,
    leader: Instant,
    deadline: Instant,
    now: Instant,
) -> bool {
    answer.error_type == ErrorType::Timeout as i32 && leader <= now && now < deadline
}

/// Removes a leader's entry however its future ends (answered or dropped),
/// so followers never wait on a leader that is gone.
struct LeaderGuard<'a> {
    stage: &'a CollapseStage,
    key: Vec<u8>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.stage
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.key);
    }
}

/// How waiting for a leader ended.
enum Followed {
    Answer(ApiResponse),
    /// The leader is gone or gave up early: lead instead.
    Lead,
    TimedOut,
}

impl CollapseStage {
    pub(crate) fn new(
        next: Next,
        metrics: FrontendMetrics,
        clock: SharedClock,
        parallelism: usize,
        query_timeout: Duration,
    ) -> CollapseStage {
        CollapseStage {
            next,
            in_flight: Mutex::new(HashMap::new()),
            metrics,
            clock,
            parallelism: parallelism.max(1),
            query_timeout,
        }
    }

    async fn handle_request(&self, mut request: Request) -> Answer {
        let is_range = matches!(request.kind, QueryKind::Range(_));
        let answer = match request.pieces.take() {
            Some(pieces) => self.fan_out(request, pieces).await,
            None => {
                let mut answer = self.run_collapsed(request).await;
                answer.stats.sub_queries = usize::from(is_range);
                answer
            }
        };
        if is_range {
            self.metrics
                .samples
                .with_label_values(&["computed"])
                .inc_by(answer.stats.samples);
        }
        answer
    }

    /// Runs `pieces` in parallel. The first to fail is the answer: the rest
    /// are dropped at once, which takes the queued ones out of the queue
    /// and cancels the running ones, as a client that went away would.
    /// Those already answered are still handed back (for the cache).
    async fn fan_out(&self, request: Request, pieces: Vec<RangeQuery>) -> Answer {
        let piece_count = pieces.len();
        let mut answered: Vec<Option<(ApiResponse, QueryStats)>> =
            (0..piece_count).map(|_| None).collect();
        let mut failed = None;
        let parallelism = request.parallelism(self.parallelism);
        let mut running = futures_util::stream::iter(pieces.into_iter().enumerate())
            .map(|(index, piece)| {
                let piece_request = request.with_kind(QueryKind::Range(piece));
                async move {
                    let answer = self.run_collapsed(piece_request).await;
                    (index, answer)
                }
            })
            .buffer_unordered(parallelism);
        while let Some((index, mut answer)) = running.next().await {
            let stats = std::mem::take(&mut answer.stats);
            let response = answer.into_response();
            let is_error = response.is_error();
            answered[index] = Some((response, stats));
            if is_error {
                failed = Some(index);
                break;
            }
        }
        drop(running);
        pieces_answer(answered, failed)
    }

    /// Runs `request`, or waits for the identical one already running.
    async fn run_collapsed(&self, request: Request) -> Answer {
        let mut key = request_key(&request.tenant, &request.kind);
        // Requests whose forwarded headers differ may get different answers
        // from the downstream (another user's credentials): never shared.
        for header in request
            .forwarded_headers
            .iter()
            .flat_map(|headers| headers.iter())
        {
            // Header names and values never hold a NUL: it separates them.
            for part in [&header.name, &header.value] {
                key.push(0);
                key.extend_from_slice(part.as_bytes());
            }
        }
        loop {
            let existing = self
                .in_flight
                .lock()
                .expect("in-flight lock")
                .get(&key)
                .cloned();
            if let Some(leader) = existing {
                match self.follow(leader, request.deadline).await {
                    Followed::Answer(response) => {
                        self.metrics.collapsed.inc();
                        return Answer::whole(response, QueryStats::default());
                    }
                    Followed::Lead => continue,
                    Followed::TimedOut => {
                        let error = ApiResponse::error(
                            ErrorType::Timeout,
                            format!(
                                "query timed out after {}",
                                super::dispatch::humanize(self.query_timeout)
                            ),
                        );
                        return Answer::whole(error, QueryStats::default());
                    }
                }
            }
            let (publish, shared) = watch::channel(None);
            {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                if in_flight.contains_key(&key) {
                    continue;
                }
                let leader = Leader {
                    answer: shared,
                    deadline: request.deadline,
                };
                in_flight.insert(key.clone(), leader);
            }
            return self.lead(request, key, publish).await;
        }
    }

    /// Waits for `leader`'s answer until `deadline`.
    async fn follow(&self, leader: Leader, deadline: Instant) -> Followed {
        let Leader {
            answer: mut shared,
            deadline: leader_deadline,
        } = leader;
        match tokio::time::timeout_at(deadline, shared.wait_for(Option::is_some)).await {
            Ok(Ok(answer)) => {
                let answer = answer.as_deref().expect("waited for Some");
                let now = self.clock.now();
                if outlived_its_leader(answer, leader_deadline, deadline, now) {
                    return Followed::Lead;
                }
                Followed::Answer(answer.clone())
            }
            // The leader's client left before it finished: lead instead.
            Ok(Err(_)) => Followed::Lead,
            Err(_) => Followed::TimedOut,
        }
    }

    /// Runs `request` as the leader of `key`, publishing its answer to the
    /// followers that came meanwhile.
    async fn lead(
        &self,
        request: Request,
        key: Vec<u8>,
        publish: watch::Sender<Option<Arc<ApiResponse>>>,
    ) -> Answer {
        let guard = LeaderGuard { stage: self, key };
        self.metrics.sub_queries.inc();
        let answer = self.next.handle(request).await;
        drop(guard);
        // Only pay for a copy when someone is waiting for it.
        if publish.receiver_count() > 0 {
            publish.send_replace(Some(Arc::new(answer.response().clone())));
        }
        answer
    }
}

/// The collapsing key of `kind` for `tenant`: the tenant and the request's
/// encoding, the same bytes as the `QueryRequest` holding `kind`, made
/// without copying the request into one.
fn request_key(tenant: &str, kind: &QueryKind) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 1 + kind.encoded_len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    kind.encode(&mut key);
    key
}

/// The batch's answers with the pieces' execution stats summed; pieces
/// dropped after another failed hold a `canceled` error.
fn pieces_answer(
    answered: Vec<Option<(ApiResponse, QueryStats)>>,
    failed: Option<usize>,
) -> Answer {
    let mut stats = QueryStats {
        sub_queries: answered.len(),
        ..QueryStats::default()
    };
    let mut answers = Vec::with_capacity(answered.len());
    for piece in answered {
        let Some((answer, piece_stats)) = piece else {
            answers.push(ApiResponse::error(
                ErrorType::Canceled,
                "not run: another part of the query failed",
            ));
            continue;
        };
        stats.add_execution(&piece_stats);
        answers.push(answer);
    }
    Answer {
        outcome: Outcome::Pieces(PieceAnswers { answers, failed }),
        stats,
        prefixes: None,
        encoded: None,
    }
}

impl Stage for CollapseStage {
    fn name(&self) -> &'static str {
        "collapse"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        Box::pin(self.handle_request(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::stages::testing::{FakeNext, range_request};
    use sluice_proto::QueryRequest;

    /// A next stage that answers only once `open` is raised, counting calls.
    struct GatedNext {
        calls: std::sync::atomic::AtomicUsize,
        open: watch::Receiver<bool>,
    }

    impl Stage for GatedNext {
        fn name(&self) -> &'static str {
            "gated"
        }

        fn next_stage(&self) -> Option<&Next> {
            None
        }

        fn handle(&self, request: Request) -> AnswerFuture<'_> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut open = self.open.clone();
            Box::pin(async move {
                let _ = open.wait_for(|open| *open).await;
                let answer = ApiResponse::error(ErrorType::Execution, &*request.tenant);
                Answer::whole(answer, QueryStats::default())
            })
        }
    }

    fn stage(next: Next, parallelism: usize) -> CollapseStage {
        let metrics = FrontendMetrics::new(&prometheus::Registry::new());
        let clock = Arc::new(SystemClock);
        CollapseStage::new(next, metrics, clock, parallelism, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn identical_requests_in_flight_run_once_per_tenant() {
        let (gate, open) = watch::channel(false);
        let next = Arc::new(GatedNext {
            calls: Default::default(),
            open,
        });
        let stage = stage(next.clone(), 4);
        let mut other_tenant = range_request("up", 0, 3_600_000, 60_000);
        other_tenant.tenant = Arc::from("other");
        let answers = futures_util::future::join4(
            stage.handle(range_request("up", 0, 3_600_000, 60_000)),
            stage.handle(range_request("up", 0, 3_600_000, 60_000)),
            stage.handle(other_tenant),
            async {
                tokio::task::yield_now().await;
                gate.send_replace(true);
            },
        )
        .await;
        assert_eq!(next.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(answers.0.response().error, "tenant");
        assert_eq!(answers.1.response().error, "tenant", "the follower shares");
        assert_eq!(answers.2.response().error, "other", "never across tenants");
    }

    #[tokio::test]
    async fn a_batch_fans_out_and_stops_at_the_first_failure() {
        let next = FakeNext::answering(|request| {
            let piece = request.range().expect("a piece");
            if piece.start_ms == 1 {
                ApiResponse::error(ErrorType::Execution, "boom")
            } else {
                ApiResponse::default()
            }
        });
        let stage = stage(next.clone(), 1);
        let mut batch = range_request("up", 0, 2, 1);
        batch.pieces = Some(
            (0..3)
                .map(|start_ms| RangeQuery {
                    start_ms,
                    end_ms: start_ms,
                    ..batch.range().unwrap().clone()
                })
                .collect(),
        );
        let answer = stage.handle(batch).await;
        let Outcome::Pieces(pieces) = answer.outcome else {
            panic!("a batch is answered piece by piece");
        };
        assert_eq!(pieces.failed, Some(1));
        assert_eq!(next.seen().len(), 2, "one at a time: the third never ran");
        assert_eq!(pieces.answers[2].error_type, ErrorType::Canceled as i32);
        assert!(next.seen().iter().all(|piece| piece.pieces.is_none()));
    }

    #[test]
    fn a_requests_key_is_its_tenants_and_its_encoding() {
        let request = range_request("up", 0, 3_600_000, 60_000);
        let whole = QueryRequest {
            kind: Some(request.kind.clone()),
        };
        assert_eq!(
            request_key("tenant", &request.kind),
            crate::request::tenant_key("tenant", &whole)
        );
    }

    #[test]
    fn a_follower_takes_any_answer_but_its_leader_giving_up_early() {
        let now = Instant::now();
        let second = std::time::Duration::from_secs(1);
        let timeout = ApiResponse::error(ErrorType::Timeout, "query timed out after 2m");
        // The leader's deadline passed, the follower's has not: run it again.
        assert!(outlived_its_leader(
            &timeout,
            now - second,
            now + second,
            now
        ));
        // The backend timed out before the leader's deadline: its answer.
        assert!(!outlived_its_leader(
            &timeout,
            now + second,
            now + 2 * second,
            now
        ));
        // The follower's own deadline has passed as well.
        assert!(!outlived_its_leader(
            &timeout,
            now - 2 * second,
            now - second,
            now
        ));
        let failed = ApiResponse::error(ErrorType::Execution, "boom");
        assert!(!outlived_its_leader(
            &failed,
            now - second,
            now + second,
            now
        ));
    }
}
