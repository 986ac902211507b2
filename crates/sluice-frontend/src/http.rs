//! The HTTP face of the frontend: Prometheus's API routes, `/ready`,
//! `/metrics`. It only speaks HTTP: a request is parsed and validated into a
//! typed [`Request`], handed to the first stage of the chain, and the answer
//! encoded here, at the edge.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use sluice_api::params::{self, Form};
use sluice_api::{ApiError, json};
use sluice_limits::{Tenant, TenantLimits};
use sluice_proto::{
    ApiResponse, ErrorType, ForwardedRequest, Header, MetadataKind, QueryData, QueryKind,
    ResponseData, ResultType,
};
use tokio::time::Instant;

use crate::Inner;
use crate::chunks::Chunks;
use crate::compression;
use crate::request::{Answer, CacheControl, EncodedBody, QueryStats, Request};
use crate::stages::dispatch::humanize;
use crate::tenant::query_tenant_of;

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
        if let Some((forwarded_path, _)) = forwarded(api_path) {
            return Route::Forwarded(forwarded_path);
        }
        match api_path {
            "/api/v1/query" => Route::Query,
            "/api/v1/query_range" => Route::QueryRange,
            "/api/v1/series" => Route::Series,
            "/api/v1/labels" => Route::Labels,
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
            Route::Forwarded(path) => forwarded(path).map_or("other", |(_, label)| label),
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::NotFound => "other",
        }
    }
}

/// The read-only paths passed to a querier as they came, with their metric
/// label. Admin paths (`/api/v1/admin/...`) are absent on purpose: they
/// change the downstream's data and are never passed through.
const FORWARDED: &[(&str, &str)] = &[
    ("/api/v1/status/buildinfo", "api_v1_status_buildinfo"),
    ("/api/v1/status/config", "api_v1_status_config"),
    ("/api/v1/status/flags", "api_v1_status_flags"),
    ("/api/v1/status/runtimeinfo", "api_v1_status_runtimeinfo"),
    ("/api/v1/status/tsdb", "api_v1_status_tsdb"),
    ("/api/v1/status/walreplay", "api_v1_status_walreplay"),
    ("/api/v1/metadata", "api_v1_metadata"),
    ("/api/v1/query_exemplars", "api_v1_query_exemplars"),
    ("/api/v1/format_query", "api_v1_format_query"),
    ("/api/v1/parse_query", "api_v1_parse_query"),
    ("/api/v1/rules", "api_v1_rules"),
    ("/api/v1/alerts", "api_v1_alerts"),
    ("/api/v1/targets", "api_v1_targets"),
    ("/api/v1/targets/metadata", "api_v1_targets_metadata"),
    ("/api/v1/alertmanagers", "api_v1_alertmanagers"),
];

fn forwarded(path: &str) -> Option<(&'static str, &'static str)> {
    FORWARDED.iter().copied().find(|(known, _)| *known == path)
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

async fn handle(State(state): State<AppState>, request: http::Request<Body>) -> Response {
    let started = state.inner.clock.now();
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
        .observe((inner.clock.now() - started).as_secs_f64());
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

/// A query the chain answers: parsed into a [`Request`], run, encoded.
async fn api(
    inner: &Arc<Inner>,
    route: &Route,
    request: http::Request<Body>,
    started: Instant,
    gzip: bool,
) -> Response {
    let (request, query_text) = match parse_request(inner, route, request, started, gzip).await {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let tenant = request.tenant.clone();
    let is_range = request.range().is_some();
    let mut answer = inner.chain.handle(request).await;
    if is_range && !answer.stats.memo_hit {
        answer.stats.pieces = answer.stats.pieces.max(1);
        inner.metrics.pieces.observe(answer.stats.pieces as f64);
    }
    let request_log = QueryLog {
        tenant: &tenant,
        route: route.label(),
        query: &query_text,
        started,
    };
    let response = answer.response();
    request_log.stats(
        inner,
        response.status_code(),
        &response.error,
        &answer.stats,
    );
    encoded(answer)
}

/// The answer as an HTTP response: the body a stage made, or else the
/// answer encoded as Prometheus JSON.
fn encoded(answer: Answer) -> Response {
    match answer.encoded {
        Some(EncodedBody::Json(json)) => json_response(200, json, "application/json"),
        Some(EncodedBody::JsonChunks(chunks)) => {
            json_response(200, Chunks::new(chunks), "application/json")
        }
        Some(EncodedBody::Gzip(body)) => gzip_json_response(body),
        None => encode(&answer.into_response()),
    }
}

/// `request` as the chain's [`Request`] and the query text its log line
/// carries, or the response refusing it (or answering it outright).
async fn parse_request(
    inner: &Inner,
    route: &Route,
    request: http::Request<Body>,
    started: Instant,
    gzip: bool,
) -> Result<(Request, String), Refused> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        let message = format!("method {} not allowed", parts.method);
        return Err(Refused::Error(405, ErrorType::BadData, message));
    }
    let tenant = query_tenant_of(
        &parts.headers,
        inner.config.multitenancy_enabled,
        inner.config.tenant_federation_enabled,
    )
    .map_err(Refused::from)?;
    let form = read_form(inner, &parts, body).await?;
    check_expression_sizes(inner, &form, route).map_err(Refused::from)?;
    let limits = inner.overrides.tenant(&tenant);
    let (kind, query_text) = parse_kind(inner, route, &form, &limits.limits)?;
    check_blocked(inner, &tenant, &kind, &limits)?;
    let cache_control = CacheControl::parse(
        parts
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
    let mut request = Request::new(
        Arc::from(tenant),
        kind,
        started + inner.config.query_timeout,
    );
    request.cache_control = cache_control;
    request.accepts_gzip = gzip;
    request.limits = Some(limits);
    request.forwarded_headers = forwarded_headers(&inner.config.forward_headers, &parts.headers);
    Ok((request, query_text))
}

/// The client's headers named by `-query-frontend.forward-headers`, for the
/// downstream; `None` when none is configured or present.
fn forwarded_headers(names: &[String], headers: &http::HeaderMap) -> Option<Arc<[Header]>> {
    if names.is_empty() {
        return None;
    }
    let found: Vec<Header> = names
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|value| value.to_str().ok())
                .map(|value| Header {
                    name: name.clone(),
                    value: value.to_owned(),
                })
        })
        .collect();
    (!found.is_empty()).then(|| Arc::from(found))
}

/// The request's parameters, from its URL and, for a form POST, its body.
async fn read_form(
    inner: &Inner,
    parts: &http::request::Parts,
    body: Body,
) -> Result<Form, Refused> {
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
    let limit = inner.config.max_body_bytes;
    let body_bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let message = format!("request body too large: limit is {limit} bytes");
            return Err(Refused::Error(413, ErrorType::BadData, message));
        }
        Err(BodyError::Unreadable(error)) => {
            let message = format!("error reading request body: {error}");
            return Err(Refused::Error(400, ErrorType::BadData, message));
        }
    };
    let form = Form::parse(
        parts.uri.query(),
        if is_form { Some(&body_bytes[..]) } else { None },
    );
    if let Some(problem) = form.parse_error() {
        let message = format!("error parsing form values: {problem}");
        return Err(Refused::Error(400, ErrorType::BadData, message));
    }
    Ok(form)
}

/// Refuses a query the tenant's `blocked_queries` name (400, as Mimir).
fn check_blocked(
    inner: &Inner,
    tenant: &str,
    kind: &QueryKind,
    limits: &Tenant,
) -> Result<(), Refused> {
    let query = match kind {
        QueryKind::Instant(query) => &query.query,
        QueryKind::Range(query) => &query.query,
        _ => return Ok(()),
    };
    match limits.blocked(query) {
        Some(rule) => {
            inner
                .metrics
                .rejected
                .with_label_values(&[tenant, "blocked"])
                .inc();
            let message = sluice_limits::blocked_message(rule);
            Err(Refused::Error(400, ErrorType::BadData, message))
        }
        None => Ok(()),
    }
}

/// What `route` asks with `form`, and the query text for the log line.
fn parse_kind(
    inner: &Inner,
    route: &Route,
    form: &Form,
    limits: &TenantLimits,
) -> Result<(QueryKind, String), Refused> {
    match route {
        Route::Query => {
            let query =
                params::parse_instant_query(form, inner.clock.now_ms()).map_err(Refused::from)?;
            let text = query.query.clone();
            Ok((QueryKind::Instant(query), text))
        }
        Route::QueryRange => parse_range(inner, form, limits),
        Route::Series => parse_metadata(inner, form, (MetadataKind::Series, None), limits),
        Route::Labels => parse_metadata(inner, form, (MetadataKind::LabelNames, None), limits),
        Route::LabelValues(name) => {
            parse_metadata(inner, form, (MetadataKind::LabelValues, Some(name)), limits)
        }
        Route::Forwarded(path) => {
            let forwarded = ForwardedRequest {
                path: (*path).to_owned(),
                query_string: form.to_query_string(),
            };
            Ok((QueryKind::Forwarded(forwarded), String::new()))
        }
        Route::Ready | Route::Metrics | Route::NotFound => unreachable!("handled by the caller"),
    }
}

/// A range query, its length checked and its start clamped to the oldest
/// data the tenant may read.
fn parse_range(
    inner: &Inner,
    form: &Form,
    limits: &TenantLimits,
) -> Result<(QueryKind, String), Refused> {
    let mut query = params::parse_range_query(form).map_err(Refused::from)?;
    check_query_length(limits, query.start_ms, query.end_ms).map_err(Refused::from)?;
    if let Some(earliest) = earliest_allowed(inner, limits) {
        if query.end_ms < earliest {
            // Nothing the tenant may see: answer without running it.
            return Err(Refused::EmptyMatrix);
        }
        if query.start_ms < earliest {
            // Clamp to a step-aligned start so the points stay on the grid.
            let steps_to_skip = (earliest - query.start_ms + query.step_ms - 1) / query.step_ms;
            query.start_ms += steps_to_skip * query.step_ms;
        }
    }
    let text = query.query.clone();
    Ok((QueryKind::Range(query), text))
}

/// A `series`, `labels` or label values request, its start clamped to the
/// oldest data the tenant may read.
fn parse_metadata(
    inner: &Inner,
    form: &Form,
    (metadata_kind, label_name): (MetadataKind, Option<&str>),
    limits: &TenantLimits,
) -> Result<(QueryKind, String), Refused> {
    let mut query =
        params::parse_metadata_query(form, metadata_kind, label_name).map_err(Refused::from)?;
    if let Some(earliest) = earliest_allowed(inner, limits)
        && query.start_ms.is_none_or(|start| start < earliest)
    {
        query.start_ms = Some(earliest);
    }
    let text = query.matchers.join(",");
    Ok((QueryKind::Metadata(query), text))
}

/// Why a request does not reach the chain.
enum Refused {
    /// A Prometheus error envelope, with its HTTP status.
    Error(u16, ErrorType, String),
    /// Nothing the tenant may see: an empty matrix, without running anything.
    EmptyMatrix,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused::Error(error.http_status(), error.error_type, error.message)
    }
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Error(status, error_type, message) => {
                error_response(status, error_type, &message)
            }
            Refused::EmptyMatrix => empty_matrix(),
        }
    }
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
    fn stats(&self, inner: &Inner, status: u16, error: &str, stats: &QueryStats) {
        let answered_at = stats.answered_at.unwrap_or_else(|| inner.clock.now());
        let elapsed = answered_at.saturating_duration_since(self.started);
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
            pieces = stats.pieces,
            sub_queries = stats.sub_queries,
            shards = stats.shards,
            shard_legs = stats.shard_legs,
            cached_extents = stats.cached_extents,
            results_cache_hits = stats.cache_hits,
            results_cache_misses = stats.cache_misses,
            results_cache_hit_bytes = stats.cache_hit_bytes,
            answer_memo_hit = stats.memo_hit,
            samples = stats.samples,
            samples_from_cache = stats.samples_from_cache,
            error = %error,
            "query stats"
        );
    }
}

fn gzip_json_response(body: bytes::Bytes) -> Response {
    let mut response = json_response(200, body, "application/json");
    compression::mark_gzip(response.headers_mut());
    response
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

fn check_query_length(limits: &TenantLimits, start_ms: i64, end_ms: i64) -> Result<(), ApiError> {
    let limit = limits.max_query_length;
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

fn earliest_allowed(inner: &Inner, limits: &TenantLimits) -> Option<i64> {
    let lookback = limits.max_query_lookback;
    if lookback.is_zero() {
        return None;
    }
    Some(inner.clock.now_ms() - lookback.as_millis() as i64)
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
        assert_eq!(
            Route::of("/prometheus/api/v1/targets/metadata"),
            Route::Forwarded("/api/v1/targets/metadata")
        );
        assert_eq!(
            Route::of("/api/v1/targets/metadata").label(),
            "api_v1_targets_metadata"
        );
        // Admin endpoints change the downstream's data: never passed on.
        assert_eq!(
            Route::of("/api/v1/admin/tsdb/delete_series"),
            Route::NotFound
        );
        assert_eq!(Route::of("/api/v1/admin/tsdb/snapshot"), Route::NotFound);
        assert_eq!(Route::of("/ready"), Route::Ready);
    }
}
