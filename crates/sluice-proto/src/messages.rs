// Field numbers are the wire contract between roles of different versions:
// never reuse or renumber one, only add.

// ---------------------------------------------------------------------------
// The data model: series, samples, results.
// ---------------------------------------------------------------------------

/// One label pair. Series keep their labels sorted by name, as Prometheus does.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A bucket of a native histogram as the Prometheus HTTP API reports it.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct HistogramBucket {
    /// 0: open left, closed right; 1: open both; 2: closed both; 3: closed left, open right.
    #[prost(int32, tag = "1")]
    pub boundaries: i32,
    #[prost(double, tag = "2")]
    pub lower: f64,
    #[prost(double, tag = "3")]
    pub upper: f64,
    #[prost(double, tag = "4")]
    pub count: f64,
}

/// A native histogram sample, in the shape the HTTP API reports it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramSample {
    #[prost(int64, tag = "1")]
    pub timestamp_ms: i64,
    #[prost(double, tag = "2")]
    pub count: f64,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(message, repeated, tag = "4")]
    pub buckets: Vec<HistogramBucket>,
}

/// One series of a vector (exactly one point), a matrix (any number), or a
/// scalar (one point, no labels).
///
/// Float samples are two packed columns rather than a list of messages: packed
/// doubles keep every bit (prost would drop a `-0` field as a default) and
/// encode and decode in one pass without a tag per sample. Timestamps are Unix
/// milliseconds, Prometheus's resolution.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Series {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(int64, repeated, tag = "2")]
    pub timestamps_ms: Vec<i64>,
    #[prost(double, repeated, tag = "4")]
    pub values: Vec<f64>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<HistogramSample>,
}

impl Series {
    /// The float samples as `(timestamp_ms, value)` pairs.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = (i64, f64)> + '_ {
        debug_assert_eq!(self.timestamps_ms.len(), self.values.len());
        self.timestamps_ms
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }

    /// Appends one float sample.
    pub fn push(&mut self, timestamp_ms: i64, value: f64) {
        self.timestamps_ms.push(timestamp_ms);
        self.values.push(value);
    }
}

/// The `resultType` of a query answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResultType {
    Vector = 0,
    Matrix = 1,
    Scalar = 2,
    String = 3,
}

/// The `data` of a `query` or `query_range` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryData {
    #[prost(enumeration = "ResultType", tag = "1")]
    pub result_type: i32,
    /// Vector and matrix results; a scalar is one series with one point.
    #[prost(message, repeated, tag = "2")]
    pub series: Vec<Series>,
    /// String results: the value, at `string_timestamp_ms`.
    #[prost(string, tag = "4")]
    pub string_value: String,
    #[prost(int64, tag = "5")]
    pub string_timestamp_ms: i64,
    /// Raw JSON of the `stats` object, when the client asked for it.
    #[prost(string, tag = "6")]
    pub stats_json: String,
}

/// A label set, as in a `series` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelSet {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
}

/// The `data` of a `series` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SeriesData {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<LabelSet>,
}

/// The `data` of a `labels` or `label/<name>/values` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringsData {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// An answer sluice does not interpret (buildinfo, metadata, exemplars): the
/// downstream's body is handed to the client unchanged.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawData {
    #[prost(string, tag = "1")]
    pub content_type: String,
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
}

/// Prometheus's `errorType`s, plus sluice's own `too_many_requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorType {
    None = 0,
    BadData = 1,
    Execution = 2,
    Canceled = 3,
    Timeout = 4,
    Internal = 5,
    NotFound = 6,
    Unavailable = 7,
    TooManyRequests = 8,
    NotAcceptable = 9,
    /// No tenant given while multi-tenancy is on (401).
    Unauthorized = 10,
}

/// A whole answer: success data or an error, with warnings and infos.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiResponse {
    /// The HTTP status the answer is sent with.
    #[prost(uint32, tag = "1")]
    pub http_status: u32,
    #[prost(enumeration = "ErrorType", tag = "2")]
    pub error_type: i32,
    #[prost(string, tag = "3")]
    pub error: String,
    #[prost(string, repeated, tag = "4")]
    pub warnings: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub infos: Vec<String>,
    #[prost(oneof = "ResponseData", tags = "10, 11, 12, 13")]
    pub data: Option<ResponseData>,
}

/// What a successful answer carries.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseData {
    #[prost(message, tag = "10")]
    Query(QueryData),
    #[prost(message, tag = "11")]
    Series(SeriesData),
    #[prost(message, tag = "12")]
    Strings(StringsData),
    #[prost(message, tag = "13")]
    Raw(RawData),
}

// ---------------------------------------------------------------------------
// Requests: what the frontend asks a querier to run.
// ---------------------------------------------------------------------------

/// `/api/v1/query`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstantQuery {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(int64, tag = "2")]
    pub time_ms: i64,
    /// Sent downstream as the query's own timeout; 0 leaves the downstream's default.
    #[prost(int64, tag = "3")]
    pub timeout_ms: i64,
    /// `lookback_delta` as the client sent it, 0 for the default.
    #[prost(int64, tag = "4")]
    pub lookback_delta_ms: i64,
    /// `stats` as the client sent it (empty for none).
    #[prost(string, tag = "5")]
    pub stats: String,
    /// `limit` on series returned (Prometheus 3.4+), 0 for none.
    #[prost(uint64, tag = "6")]
    pub limit: u64,
}

/// `/api/v1/query_range`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeQuery {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(int64, tag = "2")]
    pub start_ms: i64,
    #[prost(int64, tag = "3")]
    pub end_ms: i64,
    #[prost(int64, tag = "4")]
    pub step_ms: i64,
    #[prost(int64, tag = "5")]
    pub timeout_ms: i64,
    #[prost(int64, tag = "6")]
    pub lookback_delta_ms: i64,
    #[prost(string, tag = "7")]
    pub stats: String,
    /// `limit` on series returned (Prometheus 3.4+), 0 for none.
    #[prost(uint64, tag = "8")]
    pub limit: u64,
}

/// `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataQuery {
    #[prost(enumeration = "MetadataKind", tag = "1")]
    pub kind: i32,
    /// The label whose values are asked for (`LabelValues` only).
    #[prost(string, tag = "2")]
    pub label_name: String,
    #[prost(string, repeated, tag = "3")]
    pub matchers: Vec<String>,
    #[prost(int64, optional, tag = "4")]
    pub start_ms: Option<i64>,
    #[prost(int64, optional, tag = "5")]
    pub end_ms: Option<i64>,
    /// 0 = no limit.
    #[prost(uint64, tag = "6")]
    pub limit: u64,
}

/// Which metadata endpoint a [`MetadataQuery`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum MetadataKind {
    Series = 0,
    LabelNames = 1,
    LabelValues = 2,
}

/// A read-only request forwarded as it came (`status/*`, `metadata`, `rules`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardedRequest {
    /// The path below the API root, e.g. `/api/v1/status/buildinfo`.
    #[prost(string, tag = "1")]
    pub path: String,
    /// The merged URL and form parameters, URL-encoded.
    #[prost(string, tag = "2")]
    pub query_string: String,
}

/// One unit of work for a querier.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRequest {
    #[prost(oneof = "QueryKind", tags = "1, 2, 3, 4")]
    pub kind: Option<QueryKind>,
}

/// The kinds of work a querier runs.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum QueryKind {
    #[prost(message, tag = "1")]
    Instant(InstantQuery),
    #[prost(message, tag = "2")]
    Range(RangeQuery),
    #[prost(message, tag = "3")]
    Metadata(MetadataQuery),
    #[prost(message, tag = "4")]
    Forwarded(ForwardedRequest),
}

// ---------------------------------------------------------------------------
// The pull protocol between a querier worker and a queue owner.
// ---------------------------------------------------------------------------

/// The first message on a worker stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuerierHello {
    #[prost(string, tag = "1")]
    pub querier_id: String,
    /// The querier's total concurrency, so the owner can reason about capacity.
    #[prost(uint32, tag = "2")]
    pub max_concurrency: u32,
    /// The worker will send [`QuerierReady`] before it can take a task (it
    /// waits for its querier's concurrency limiter); until then the owner
    /// hands it nothing. False (an older querier) means ready at once.
    #[prost(bool, tag = "3")]
    pub not_ready: bool,
}

/// The worker may take a task now: sent after a hello or result that said
/// `not_ready`, once the querier's concurrency limiter admitted it.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct QuerierReady {}

/// The querier is shutting down: the owner must send this worker nothing more
/// and end the stream once the worker's task (if any) is answered.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct QuerierGoodbye {}

/// Execution statistics of one task.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ExecutionStats {
    #[prost(int64, tag = "1")]
    pub execution_ns: i64,
    /// Samples in the answer, a cheap proxy for the work done.
    #[prost(uint64, tag = "2")]
    pub samples: u64,
}

/// The answer to one task.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
    #[prost(message, optional, tag = "2")]
    pub response: Option<ApiResponse>,
    /// True when the task failed for a reason another querier may not have
    /// (downstream 5xx, transport error): the owner may run it again.
    #[prost(bool, tag = "3")]
    pub retryable: bool,
    /// Flow control: how many tasks the querier runs now, and how many it wants.
    #[prost(uint32, tag = "4")]
    pub current_concurrency: u32,
    #[prost(uint32, tag = "5")]
    pub desired_concurrency: u32,
    #[prost(message, optional, tag = "6")]
    pub stats: Option<ExecutionStats>,
    /// As in [`QuerierHello`]: the worker sends [`QuerierReady`] before it
    /// can take the next task.
    #[prost(bool, tag = "7")]
    pub not_ready: bool,
}

/// Querier worker → queue owner.
impl QueryResult {
    /// The result as received from a peer, checked: an answer whose series
    /// have more timestamps than values (or fewer) cannot be merged or
    /// encoded, so it becomes an `internal` error, retried elsewhere.
    pub fn checked(mut self) -> QueryResult {
        if let Some(problem) = self.response.as_ref().and_then(malformed) {
            tracing::warn!(query_id = self.query_id, %problem, "malformed result refused");
            self.response = Some(ApiResponse::error(
                ErrorType::Internal,
                format!("malformed result from a querier: {problem}"),
            ));
            self.retryable = true;
        }
        self
    }
}

/// Why `response` cannot be used, if it cannot.
fn malformed(response: &ApiResponse) -> Option<String> {
    let Some(ResponseData::Query(data)) = &response.data else {
        return None;
    };
    data.series
        .iter()
        .find(|series| series.timestamps_ms.len() != series.values.len())
        .map(|series| {
            format!(
                "a series with {} timestamps and {} values",
                series.timestamps_ms.len(),
                series.values.len()
            )
        })
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QuerierToOwner {
    #[prost(oneof = "QuerierMessage", tags = "1, 3, 4, 5")]
    pub message: Option<QuerierMessage>,
}

/// What a worker can say. Results dominate the traffic, so boxing them to
/// shrink the rare variants would cost an allocation per result instead.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum QuerierMessage {
    #[prost(message, tag = "1")]
    Hello(QuerierHello),
    // Tag 2 is reserved (an early, unused "ready"): a worker asks for its
    // next task by answering the last one or saying hello, unless it says
    // `not_ready` there and sends `Ready` later.
    #[prost(message, tag = "3")]
    Result(QueryResult),
    #[prost(message, tag = "4")]
    Goodbye(QuerierGoodbye),
    #[prost(message, tag = "5")]
    Ready(QuerierReady),
}

/// One task handed to a worker.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryTask {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
    #[prost(string, tag = "2")]
    pub tenant: String,
    #[prost(message, optional, tag = "3")]
    pub request: Option<QueryRequest>,
    /// Where to send the result when it cannot go back on this stream
    /// (scheduler-owned queues); empty means "answer on this stream".
    #[prost(string, tag = "4")]
    pub frontend_address: String,
    #[prost(int64, tag = "5")]
    pub queued_ns: i64,
    /// Milliseconds the task may still run before its client gives up.
    #[prost(int64, tag = "6")]
    pub deadline_remaining_ms: i64,
    /// Client headers the downstream is to receive as well
    /// (`-query-frontend.forward-headers`).
    #[prost(message, repeated, tag = "7")]
    pub forwarded_headers: Vec<Header>,
    /// For a result sent to `frontend_address`: the frontend's proof that
    /// this querier was handed the task (see [`EnqueueRequest::result_token`]).
    #[prost(bytes = "vec", tag = "8")]
    pub result_token: Vec<u8>,
}

/// One HTTP header.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The running task was cancelled by its client: stop it and free the worker.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct CancelTask {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
}

/// Queue owner → querier worker.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnerToQuerier {
    #[prost(oneof = "OwnerMessage", tags = "1, 2")]
    pub message: Option<OwnerMessage>,
}

/// What an owner can say. Tasks dominate the traffic: boxing them to
/// shrink the rare cancel would cost an allocation per task instead.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OwnerMessage {
    #[prost(message, tag = "1")]
    Task(QueryTask),
    #[prost(message, tag = "2")]
    Cancel(CancelTask),
}

impl ErrorType {
    /// The `errorType` string Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::None => "",
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Canceled => "canceled",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
            ErrorType::NotFound => "not_found",
            ErrorType::Unavailable => "unavailable",
            ErrorType::TooManyRequests => "too_many_requests",
            ErrorType::NotAcceptable => "not_acceptable",
            ErrorType::Unauthorized => "unauthorized",
        }
    }

    /// Parses an `errorType` string; unknown ones become `internal`.
    pub fn from_prometheus(error_type: &str) -> ErrorType {
        match error_type {
            "bad_data" => ErrorType::BadData,
            "execution" => ErrorType::Execution,
            "canceled" => ErrorType::Canceled,
            "timeout" => ErrorType::Timeout,
            "not_found" => ErrorType::NotFound,
            "unavailable" => ErrorType::Unavailable,
            "too_many_requests" => ErrorType::TooManyRequests,
            "not_acceptable" => ErrorType::NotAcceptable,
            "unauthorized" => ErrorType::Unauthorized,
            _ => ErrorType::Internal,
        }
    }

    /// The HTTP status Prometheus answers this error with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorType::None => 200,
            ErrorType::BadData => 400,
            ErrorType::Execution => 422,
            ErrorType::Canceled => 499,
            ErrorType::Timeout => 503,
            ErrorType::Internal => 500,
            ErrorType::NotFound => 404,
            ErrorType::Unavailable => 503,
            ErrorType::TooManyRequests => 429,
            ErrorType::NotAcceptable => 406,
            ErrorType::Unauthorized => 401,
        }
    }
}

impl ApiResponse {
    /// An error answer with Prometheus's status for its type.
    pub fn error(error_type: ErrorType, message: impl Into<String>) -> ApiResponse {
        ApiResponse {
            http_status: u32::from(error_type.http_status()),
            error_type: error_type as i32,
            error: message.into(),
            ..ApiResponse::default()
        }
    }

    /// A successful answer carrying `data`.
    pub fn success(data: ResponseData) -> ApiResponse {
        ApiResponse {
            http_status: 200,
            data: Some(data),
            ..ApiResponse::default()
        }
    }

    /// True when this answer is an error envelope.
    pub fn is_error(&self) -> bool {
        self.error_type() != ErrorType::None
    }

    /// The HTTP status to answer with: a success may travel between roles
    /// with none set (0).
    pub fn status_code(&self) -> u16 {
        match self.http_status {
            0 => 200,
            status => status as u16,
        }
    }

    /// Samples (float and histogram) in a query answer; none in any other.
    pub fn sample_count(&self) -> usize {
        match &self.data {
            Some(ResponseData::Query(data)) => data.sample_count(),
            _ => 0,
        }
    }
}

impl QueryData {
    /// Samples (float and histogram) in its series.
    pub fn sample_count(&self) -> usize {
        self.series
            .iter()
            .map(|series| series.timestamps_ms.len() + series.histograms.len())
            .sum()
    }
}

// ---------------------------------------------------------------------------
// Frontend ↔ query-scheduler, and results sent straight to a frontend.
// ---------------------------------------------------------------------------

/// The first message on a frontend's stream to a scheduler.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FrontendHello {
    /// The frontend's gRPC address, where queriers send results.
    #[prost(string, tag = "1")]
    pub frontend_address: String,
}

/// Queue one sub-query. `query_id` is unique per frontend.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnqueueRequest {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
    #[prost(string, tag = "2")]
    pub tenant: String,
    #[prost(message, optional, tag = "3")]
    pub request: Option<QueryRequest>,
    /// Milliseconds the sub-query may still wait and run.
    #[prost(int64, tag = "4")]
    pub deadline_remaining_ms: i64,
    /// Client headers for the downstream, handed on in the task.
    #[prost(message, repeated, tag = "5")]
    pub forwarded_headers: Vec<Header>,
    /// A secret the frontend accepts the result with: it travels only to
    /// the querier the scheduler hands the task to, which sends it back in
    /// its [`ResultReport`], so nobody else can answer for this query.
    #[prost(bytes = "vec", tag = "6")]
    pub result_token: Vec<u8>,
}

/// Forget a sub-query: its client went away.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct CancelRequest {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
}

/// Frontend → scheduler.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FrontendToScheduler {
    #[prost(oneof = "FrontendMessage", tags = "1, 2, 3")]
    pub message: Option<FrontendMessage>,
}

/// What a frontend can say to a scheduler.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FrontendMessage {
    #[prost(message, tag = "1")]
    Hello(FrontendHello),
    #[prost(message, tag = "2")]
    Enqueue(EnqueueRequest),
    #[prost(message, tag = "3")]
    Cancel(CancelRequest),
}

/// How a scheduler took an enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum EnqueueStatus {
    Ok = 0,
    /// The tenant's queue is full: the client gets 429.
    TooManyRequests = 1,
    Error = 2,
    /// The scheduler is going away: try another one.
    ShuttingDown = 3,
}

/// Scheduler → frontend: the answer to one enqueue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchedulerToFrontend {
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
    #[prost(enumeration = "EnqueueStatus", tag = "2")]
    pub status: i32,
    #[prost(string, tag = "3")]
    pub error: String,
}

/// A result delivered to the frontend that asked, by a querier (or by a
/// scheduler reporting that the querier running it was lost).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultReport {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, optional, tag = "2")]
    pub result: Option<QueryResult>,
    /// The task's `result_token`: without the right one the frontend
    /// refuses the result.
    #[prost(bytes = "vec", tag = "3")]
    pub result_token: Vec<u8>,
}

/// The frontend's receipt for a [`ResultReport`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultAck {
    /// On the results stream: which report this acknowledges.
    #[prost(uint64, tag = "1")]
    pub query_id: u64,
    /// Empty when the result was taken; why not otherwise.
    #[prost(string, tag = "2")]
    pub error: String,
}
