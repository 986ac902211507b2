//! The HTTP face of the frontend: Prometheus's API routes, `/ready`, `/metrics`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use sluice_api::params::{self, Form};
use sluice_api::{ApiError, json};
use sluice_proto::{
    ApiResponse, ErrorType, ForwardedRequest, MetadataKind, QueryData, QueryKind, QueryRequest,
    ResponseData, ResultType,
};
use tokio::time::Instant;

use crate::Inner;
use crate::acceleration::{AccelerationStats, MemoAnswer, RangeOptions};
use crate::buffers;
use crate::chunks::Chunks;
use crate::compression;
use crate::dispatch::{DispatchStats, humanize};
use crate::fragments::{Assembled, Assembler};
use crate::tenant::tenant_of;

#[derive(Clone)]
struct AppState {
    inner: Arc<Inner>,
    registry: prometheus::Registry,
}

pub(crate) fn router(inner: Arc<Inner>, registry: prometheus::Registry) -> axum::Router {
    // One handler does the routing: the API lives under both `/api/v1` and
    // Mimir's `/prometheus/api/v1`, and every miss must still be a JSON envelope.
    axum::Router::new()
        .fallback(handle)
        .with_state(AppState { inner, registry })
}

/// The endpoints sluice understands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Query,
    QueryRange,
    Series,
    Labels,
    LabelValues(String),
    /// Read-only endpoints Grafana calls, passed through unchanged.
    Forwarded(&'static str),
    Ready,
    Metrics,
    NotFound,
}

impl Route {
    fn of(path: &str) -> Route {
        let api_path = path
            .strip_prefix("/prometheus")
            .filter(|rest| rest.starts_with("/api/"))
            .unwrap_or(path);
        match api_path {
            "/api/v1/query" => Route::Query,
            "/api/v1/query_range" => Route::QueryRange,
            "/api/v1/series" => Route::Series,
            "/api/v1/labels" => Route::Labels,
            "/api/v1/status/buildinfo" => Route::Forwarded("/api/v1/status/buildinfo"),
            "/api/v1/metadata" => Route::Forwarded("/api/v1/metadata"),
            "/api/v1/query_exemplars" => Route::Forwarded("/api/v1/query_exemplars"),
            "/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            other => match other
                .strip_prefix("/api/v1/label/")
                .and_then(|rest| rest.strip_suffix("/values"))
            {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    let decoded: String = percent_decode(name);
                    // Prometheus routes on the decoded path, where these
                    // are no label name but other paths: not found.
                    if decoded.contains('/') || decoded == "." || decoded == ".." {
                        Route::NotFound
                    } else {
                        Route::LabelValues(decoded)
                    }
                }
                _ => Route::NotFound,
            },
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Route::Query => "api_v1_query",
            Route::QueryRange => "api_v1_query_range",
            Route::Series => "api_v1_series",
            Route::Labels => "api_v1_labels",
            Route::LabelValues(_) => "api_v1_label_values",
            Route::Forwarded("/api/v1/status/buildinfo") => "api_v1_status_buildinfo",
            Route::Forwarded("/api/v1/metadata") => "api_v1_metadata",
            Route::Forwarded(_) => "api_v1_query_exemplars",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::NotFound => "other",
        }
    }
}

fn percent_decode(text: &str) -> String {
    // form_urlencoded would also turn '+' into a space, which a path does not.
    let mut bytes = Vec::with_capacity(text.len());
    let raw = text.as_bytes();
    let mut index = 0;
    while index < raw.len() {
        if raw[index] == b'%'
            && index + 2 < raw.len()
            && let (Some(high), Some(low)) = (
                (raw[index + 1] as char).to_digit(16),
                (raw[index + 2] as char).to_digit(16),
            )
        {
            bytes.push((high * 16 + low) as u8);
            index += 3;
            continue;
        }
        bytes.push(raw[index]);
        index += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

fn json_response(status: u16, body: impl Into<Body>, content_type: &str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    response
}

fn error_response(status: u16, error_type: ErrorType, message: &str) -> Response {
    json_response(
        status,
        json::encode_error(error_type, message),
        "application/json",
    )
}

fn api_error_response(error: &ApiError) -> Response {
    error_response(error.http_status(), error.error_type, &error.message)
}

async fn handle(State(state): State<AppState>, request: http::Request<Body>) -> Response {
    let started = Instant::now();
    let route = Route::of(request.uri().path());
    let gzip = compression::accepts_gzip(request.headers());
    let inner = state.inner.clone();
    inner.metrics.inflight.inc();
    let _inflight = InflightGuard(&inner.metrics.inflight);
    let response = match &route {
        Route::Ready => ready(&inner),
        Route::Metrics => metrics(&state),
        Route::NotFound => error_response(404, ErrorType::NotFound, "page not found"),
        _ => api(&inner, &route, request, started, gzip).await,
    };
    let mut response = if gzip {
        compressed(response).await
    } else {
        response
    };
    // An answer long enough to be compressed for some clients varies with
    // `Accept-Encoding` even when this client got it plain: caches in
    // front of sluice must keep the two forms apart.
    if response.headers().contains_key(header::CONTENT_ENCODING)
        || long_enough_to_compress(&response)
    {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    inner
        .metrics
        .request_duration
        .with_label_values(&[route.label(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

struct InflightGuard<'a>(&'a prometheus::IntGauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

enum BodyError {
    TooLarge,
    Unreadable(String),
}

/// The request body, at most `limit` bytes of it.
///
/// A body over the limit is still read to its end (discarding it, up to
/// four times the limit) before the 413 goes out: closing a socket with
/// unread data resets the connection, and the client, still sending, would
/// see a reset instead of the answer.
async fn read_body(mut body: Body, limit: usize) -> Result<bytes::Bytes, BodyError> {
    let mut collected = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| BodyError::Unreadable(error.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            collected.extend_from_slice(&data);
        } else if seen > limit.saturating_mul(4) {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(collected.freeze())
}

/// Whether `response`'s body is long enough to gain from compression.
fn long_enough_to_compress(response: &Response) -> bool {
    use axum::body::HttpBody;
    response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|len| len as usize >= compression::MIN_COMPRESSED_LEN)
}

/// `response` with its body gzip-compressed, unless it already is or is
/// too short to gain from it.
async fn compressed(response: Response) -> Response {
    if response.headers().contains_key(header::CONTENT_ENCODING)
        || !long_enough_to_compress(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(body) = body.collect().await.map(|collected| collected.to_bytes()) else {
        return error_response(500, ErrorType::Internal, "cannot read the answer");
    };
    // Megabytes take milliseconds to compress: off the async workers.
    let fast = compression::Effort::Fast;
    let compressed = if body.len() > 64 * 1024 {
        match tokio::task::spawn_blocking(move || compression::gzip(&body, fast)).await {
            Ok(compressed) => compressed,
            Err(_) => return error_response(500, ErrorType::Internal, "compression failed"),
        }
    } else {
        compression::gzip(&body, fast)
    };
    compression::mark_gzip(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(compressed))
}

fn ready(inner: &Arc<Inner>) -> Response {
    let ready = inner.is_ready();
    let (status, text) = if ready {
        (StatusCode::OK, "ready\n")
    } else if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            if inner.schedulers.is_some() {
                "not ready: no query-scheduler is connected\n"
            } else {
                "not ready: no querier is connected\n"
            },
        )
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

fn metrics(state: &AppState) -> Response {
    state.inner.metrics.owner.refresh_from(&state.inner.queue);
    let encoder = prometheus::TextEncoder::new();
    let mut body = String::new();
    if let Err(error) = encoder.encode_utf8(&state.registry.gather(), &mut body) {
        return error_response(500, ErrorType::Internal, &error.to_string());
    }
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn api(
    inner: &Arc<Inner>,
    route: &Route,
    request: http::Request<Body>,
    started: Instant,
    gzip: bool,
) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        return error_response(
            405,
            ErrorType::BadData,
            &format!("method {} not allowed", parts.method),
        );
    }
    let tenant = match tenant_of(&parts.headers, inner.config.multitenancy_enabled) {
        Ok(tenant) => tenant,
        Err(error) => return api_error_response(&error),
    };
    let is_form = parts.method == Method::POST
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.split(';').next().is_some_and(|media| {
                    media
                        .trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
    let body_bytes = match read_body(body, inner.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return error_response(
                413,
                ErrorType::BadData,
                &format!(
                    "request body too large: limit is {} bytes",
                    inner.config.max_body_bytes
                ),
            );
        }
        Err(BodyError::Unreadable(error)) => {
            return error_response(
                400,
                ErrorType::BadData,
                &format!("error reading request body: {error}"),
            );
        }
    };
    let form = Form::parse(
        parts.uri.query(),
        if is_form { Some(&body_bytes[..]) } else { None },
    );
    if let Some(problem) = form.parse_error() {
        return error_response(
            400,
            ErrorType::BadData,
            &format!("error parsing form values: {problem}"),
        );
    }
    if let Err(error) = check_expression_sizes(inner, &form, route) {
        return api_error_response(&error);
    }
    let query_text_for_log;
    let kind = match route {
        Route::Query => match params::parse_instant_query(&form, now_ms()) {
            Ok(query) => {
                query_text_for_log = query.query.clone();
                QueryKind::Instant(query)
            }
            Err(error) => return api_error_response(&error),
        },
        Route::QueryRange => match params::parse_range_query(&form) {
            Ok(mut query) => {
                if let Err(error) = check_query_length(inner, query.start_ms, query.end_ms) {
                    return api_error_response(&error);
                }
                if let Some(earliest) = earliest_allowed(inner) {
                    if query.end_ms < earliest {
                        // Nothing the tenant may see: answer without running it.
                        return empty_matrix();
                    }
                    if query.start_ms < earliest {
                        // Clamp to a step-aligned start so the points stay on the grid.
                        let steps_to_skip =
                            (earliest - query.start_ms + query.step_ms - 1) / query.step_ms;
                        query.start_ms += steps_to_skip * query.step_ms;
                    }
                }
                query_text_for_log = query.query.clone();
                QueryKind::Range(query)
            }
            Err(error) => return api_error_response(&error),
        },
        Route::Series | Route::Labels | Route::LabelValues(_) => {
            let (metadata_kind, label_name) = match route {
                Route::Series => (MetadataKind::Series, None),
                Route::Labels => (MetadataKind::LabelNames, None),
                Route::LabelValues(name) => (MetadataKind::LabelValues, Some(name.as_str())),
                _ => unreachable!("matched above"),
            };
            match params::parse_metadata_query(&form, metadata_kind, label_name) {
                Ok(mut query) => {
                    if let Some(earliest) = earliest_allowed(inner)
                        && query.start_ms.is_none_or(|start| start < earliest)
                    {
                        query.start_ms = Some(earliest);
                    }
                    query_text_for_log = query.matchers.join(",");
                    QueryKind::Metadata(query)
                }
                Err(error) => return api_error_response(&error),
            }
        }
        Route::Forwarded(path) => {
            query_text_for_log = String::new();
            QueryKind::Forwarded(ForwardedRequest {
                path: (*path).to_owned(),
                query_string: form.to_query_string(),
            })
        }
        Route::Ready | Route::Metrics | Route::NotFound => unreachable!("handled by the caller"),
    };
    let request_log = QueryLog {
        tenant: &tenant,
        route: route.label(),
        query: &query_text_for_log,
        started,
    };
    let deadline = started + inner.config.query_timeout;
    let mut stats = DispatchStats::default();
    let mut acceleration = AccelerationStats::default();
    // `Cache-Control: no-store` asks for an answer computed now and kept nowhere.
    let no_store = parts
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"));
    let memo_key = match (&kind, &inner.memo) {
        (QueryKind::Range(query), Some(_)) if !no_store => {
            crate::acceleration::AnswerMemo::key(&tenant, query, inner.config.max_cache_freshness)
        }
        _ => None,
    };
    if let (Some(key), Some(memo)) = (&memo_key, &inner.memo)
        && let Some(answer) = memo.get(key)
    {
        inner.metrics.memo_hits.inc();
        inner
            .metrics
            .samples
            .with_label_values(&["cache"])
            .inc_by(answer.samples() as u64);
        acceleration.memo_hit = true;
        acceleration.samples_from_cache = answer.samples();
        request_log.stats(inner, 200, "", &stats, &acceleration);
        return memo_response(answer, gzip);
    }
    let range_step_ms = match &kind {
        QueryKind::Range(query) => Some(query.step_ms),
        _ => None,
    };
    let (response, prefixes) = match kind {
        QueryKind::Range(query) => {
            let answer = inner
                .run_range_query(
                    &tenant,
                    query,
                    deadline,
                    RangeOptions { no_store, gzip },
                    &mut stats,
                    &mut acceleration,
                )
                .await;
            (answer.response, answer.prefixes)
        }
        QueryKind::Metadata(query) => {
            let request = QueryRequest {
                kind: Some(QueryKind::Metadata(query)),
            };
            let response = inner
                .run_metadata_query(&tenant, request, deadline, no_store, &mut stats)
                .await;
            (response, None)
        }
        other => {
            let response = inner
                .dispatch_collapsed(
                    &tenant,
                    QueryRequest { kind: Some(other) },
                    deadline,
                    &mut stats,
                )
                .await;
            (response, None)
        }
    };
    request_log.stats(
        inner,
        response.status_code(),
        &response.error,
        &stats,
        &acceleration,
    );
    // A range answer is assembled from encoded pieces of earlier answers
    // where it shares their samples (see `fragments`); `no-store` asks
    // for nothing kept, so it bypasses them.
    let assembled = match (range_step_ms, &inner.fragments) {
        (Some(step_ms), Some(fragments))
            if !no_store
                && !response.is_error()
                && matches!(response.data, Some(ResponseData::Query(_))) =>
        {
            let mut assembler = Assembler::new(fragments, step_ms).with_prefixes(prefixes.as_ref());
            let tail = json::encode_response_with(&response, &mut assembler);
            let counted = &inner.metrics.fragments;
            counted
                .with_label_values(&["kept"])
                .inc_by(assembler.tally.kept);
            counted
                .with_label_values(&["made"])
                .inc_by(assembler.tally.made);
            Some(assembler.finish(tail))
        }
        _ => None,
    };
    // This client's body, when the answer was assembled: the spliced gzip
    // form in a pooled buffer when it wants one and the answer is long
    // enough to gain from it, else the JSON as the buffers it is made of.
    let (sent, assembled) = match assembled {
        Some(assembled) if gzip && assembled.len() >= compression::MIN_COMPRESSED_LEN => {
            match assembled_gzip(assembled).await {
                Some((body, assembled)) => (Some(gzip_json_response(body)), Some(assembled)),
                None => return error_response(500, ErrorType::Internal, "compression failed"),
            }
        }
        Some(assembled) => {
            let body = Chunks::new(assembled.json_chunks());
            let sent = json_response(200, body, "application/json");
            (Some(sent), Some(assembled))
        }
        None => (None, None),
    };
    if let (Some(key), Some(memo)) = (memo_key, &inner.memo)
        && !response.is_error()
        && response.warnings.is_empty()
        && response.infos.is_empty()
    {
        let samples = response.sample_count();
        let answer = Arc::new(match assembled {
            Some(assembled) => MemoAnswer::assembled(assembled, samples),
            None => MemoAnswer::new(
                bytes::Bytes::from(json::encode_response(&response)),
                samples,
            ),
        });
        memo.put(key, answer.clone());
        // The body sent is not kept: most answers are never asked for
        // again (a dashboard moving with time); a repeat makes its own
        // form from the assembled answer, and that is kept.
        return sent.unwrap_or_else(|| memo_response(answer, gzip));
    }
    sent.unwrap_or_else(|| encode(&response))
}

/// Refuses a query expression or `match[]` selector longer than
/// `-query-frontend.max-query-expression-size-bytes` before anything parses it.
fn check_expression_sizes(inner: &Inner, form: &Form, route: &Route) -> Result<(), ApiError> {
    let limit = inner.config.max_query_expression_bytes;
    let name = match route {
        Route::Query | Route::QueryRange => "query",
        Route::Series | Route::Labels | Route::LabelValues(_) => "match[]",
        _ => return Ok(()),
    };
    if limit == 0 {
        return Ok(());
    }
    match form.get_all(name).find(|value| value.len() > limit) {
        Some(value) => Err(ApiError::bad_data(format!(
            "invalid parameter {}: the expression is {} bytes long, over the limit of {limit} \
             bytes (-query-frontend.max-query-expression-size-bytes)",
            params::go_quote(name),
            value.len()
        ))),
        None => Ok(()),
    }
}

/// `text` cut to at most `max_bytes` (on a character boundary) for a log
/// line, saying how much was cut: a query can be megabytes long.
fn bounded_for_log(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... ({} more bytes cut)",
        &text[..end],
        text.len() - end
    ))
}

/// What the query stats line says of a request besides its statistics.
struct QueryLog<'a> {
    tenant: &'a str,
    route: &'static str,
    query: &'a str,
    started: Instant,
}

impl QueryLog<'_> {
    /// The query stats line, for requests slower than
    /// `-query-frontend.log-queries-longer-than`.
    fn stats(
        &self,
        inner: &Inner,
        status: u16,
        error: &str,
        stats: &DispatchStats,
        acceleration: &AccelerationStats,
    ) {
        let elapsed = self.started.elapsed();
        if elapsed < inner.config.log_queries_longer_than {
            return;
        }
        tracing::info!(
            target: "query_stats",
            tenant = %self.tenant,
            route = self.route,
            query = %bounded_for_log(self.query, inner.config.log_query_max_bytes),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            execution_ms = stats.execution.as_secs_f64() * 1000.0,
            attempts = stats.attempts,
            pieces = acceleration.pieces,
            sub_queries = acceleration.sub_queries,
            cached_extents = acceleration.cached_extents,
            results_cache_hits = acceleration.cache_hits,
            results_cache_misses = acceleration.cache_misses,
            results_cache_hit_bytes = acceleration.cache_hit_bytes,
            answer_memo_hit = acceleration.memo_hit,
            samples = stats.samples,
            samples_from_cache = acceleration.samples_from_cache,
            error = %error,
            "query stats"
        );
    }
}

/// The gzip form of an assembled answer, in a pooled buffer (it is sent
/// once); off the async workers when much of it has to be compressed
/// afresh (a first answer). A moved range's edges and new pieces are tens
/// of kilobytes, well under a millisecond's work: handing them to another
/// thread would cost a wake-up instead.
async fn assembled_gzip(assembled: Assembled) -> Option<(bytes::Bytes, Assembled)> {
    let quick = assembled.splices_quickly();
    let splice = move || {
        let body = buffers::BODIES.written(|out| assembled.gzip_in(out));
        (body, assembled)
    };
    if quick {
        Some(splice())
    } else {
        tokio::task::spawn_blocking(splice).await.ok()
    }
}

fn gzip_json_response(body: bytes::Bytes) -> Response {
    let mut response = json_response(200, body, "application/json");
    compression::mark_gzip(response.headers_mut());
    response
}

/// A memoised answer as a response, in the form the client accepts. The
/// gzip form is a spliced one or one made in the background (see
/// [`MemoAnswer::gzipped`]); with neither ready the answer goes out as
/// JSON, which `handle` compresses on the fly when asked.
fn memo_response(answer: Arc<MemoAnswer>, gzip: bool) -> Response {
    if gzip
        && answer.json_len() >= compression::MIN_COMPRESSED_LEN
        && let Some(body) = answer.gzipped()
    {
        return gzip_json_response(body);
    }
    json_response(200, answer.json(), "application/json")
}

fn encode(response: &ApiResponse) -> Response {
    let status = response.status_code();
    match &response.data {
        Some(ResponseData::Raw(raw)) => json_response(status, raw.body.clone(), &raw.content_type),
        _ => json_response(status, json::encode_response(response), "application/json"),
    }
}

fn empty_matrix() -> Response {
    encode(&ApiResponse::success(ResponseData::Query(QueryData {
        result_type: ResultType::Matrix as i32,
        ..QueryData::default()
    })))
}

fn check_query_length(inner: &Inner, start_ms: i64, end_ms: i64) -> Result<(), ApiError> {
    let limit = inner.config.max_query_length;
    if limit.is_zero() {
        return Ok(());
    }
    let length = Duration::from_millis((end_ms - start_ms).max(0) as u64);
    if length > limit {
        return Err(ApiError::bad_data(format!(
            "the query time range exceeds the limit (query length: {}, limit: {})",
            humanize(length),
            humanize(limit)
        )));
    }
    Ok(())
}

fn earliest_allowed(inner: &Inner) -> Option<i64> {
    let lookback = inner.config.max_query_lookback;
    if lookback.is_zero() {
        return None;
    }
    Some(now_ms() - lookback.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_prometheus_and_mimir_paths() {
        assert_eq!(Route::of("/api/v1/query"), Route::Query);
        assert_eq!(
            Route::of("/prometheus/api/v1/query_range"),
            Route::QueryRange
        );
        assert_eq!(
            Route::of("/api/v1/label/job/values"),
            Route::LabelValues("job".into())
        );
        assert_eq!(
            Route::of("/api/v1/label/a%2Eb/values"),
            Route::LabelValues("a.b".into())
        );
        assert_eq!(Route::of("/api/v1/label//values"), Route::NotFound);
        assert_eq!(Route::of("/api/v1/nope"), Route::NotFound);
        assert_eq!(
            Route::of("/api/v1/status/buildinfo"),
            Route::Forwarded("/api/v1/status/buildinfo")
        );
        assert_eq!(Route::of("/ready"), Route::Ready);
    }
}
