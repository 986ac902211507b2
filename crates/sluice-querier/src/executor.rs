//! Executors run one sub-query. The `prometheus` executor forwards it to any
//! Prometheus-compatible HTTP API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use sluice_api::decode::{Expected, decode_response};
use sluice_api::params::format_time_param;
use sluice_proto::{
    ApiResponse, ErrorType, Header, MetadataKind, QueryKind, QueryRequest, RawData, ResponseData,
};

use crate::downstream::{Authorization, DownstreamOptions, static_headers};

/// What running a sub-query produced.
#[derive(Debug)]
pub struct Execution {
    pub response: ApiResponse,
    /// The failure may not happen again elsewhere (5xx, transport error).
    pub retryable: bool,
}

impl Execution {
    fn failed(error_type: ErrorType, message: String, retryable: bool) -> Execution {
        Execution {
            response: ApiResponse::error(error_type, message),
            retryable,
        }
    }
}

/// Runs sub-queries. Implementations must stop work promptly when the future
/// is dropped: that is how a cancelled query frees its resources.
pub trait Executor: Send + Sync + 'static {
    fn execute(
        &self,
        tenant: &str,
        request: &QueryRequest,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Execution> + Send;

    /// Like [`Executor::execute`], also handing `headers` (the client's,
    /// chosen by `-query-frontend.forward-headers`) to the backend; an
    /// executor without one to hand them to ignores them.
    fn execute_forwarding(
        &self,
        tenant: &str,
        request: &QueryRequest,
        headers: &[Header],
        timeout: Duration,
    ) -> impl std::future::Future<Output = Execution> + Send {
        let _ = headers;
        self.execute(tenant, request, timeout)
    }

    /// The latency of a trivial request to the backend, which the
    /// concurrency limit keeps near its unloaded level; `None` when this
    /// executor cannot probe (the limit then follows task latencies alone).
    fn probe(&self) -> impl std::future::Future<Output = Option<Duration>> + Send {
        std::future::ready(None)
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Forwards sub-queries to a Prometheus-compatible HTTP API.
///
/// It speaks HTTP/1.1 through hyper's pooled client directly: a general
/// client such as reqwest re-parses the URL (with IDNA) and clones its
/// connector stack for every request, which was a tenth of sluice's CPU per
/// cheap query in profiles.
#[derive(Clone)]
pub struct PrometheusExecutor {
    client: HttpClient,
    /// The API root without a trailing slash, e.g. `http://prometheus:9090`
    /// or `http://mimir/prometheus`.
    base_url: String,
    /// The endpoints every query hits, parsed once. Cloning a parsed `Uri`
    /// only bumps reference counts.
    query_url: Uri,
    query_range_url: Uri,
    series_url: Uri,
    labels_url: Uri,
    authorization: Arc<Authorization>,
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

/// Why a downstream exchange failed before an answer was read.
enum Failure {
    TimedOut,
    Transport(String),
}

impl PrometheusExecutor {
    /// A plain executor: no TLS settings, no credentials.
    pub fn new(downstream_url: &str, max_idle_connections: usize) -> Result<Self, String> {
        Self::with_options(
            downstream_url,
            max_idle_connections,
            &DownstreamOptions::default(),
        )
    }

    /// An executor for `downstream_url` (`http://` or `https://`), reached
    /// as `options` say.
    pub fn with_options(
        downstream_url: &str,
        max_idle_connections: usize,
        options: &DownstreamOptions,
    ) -> Result<Self, String> {
        let base_url = downstream_url.trim_end_matches('/').to_owned();
        let client = http_client(&base_url, max_idle_connections, options)?;
        let parse = |path: &str| {
            format!("{base_url}{path}")
                .parse::<Uri>()
                .map_err(|error| format!("invalid downstream url {downstream_url:?}: {error}"))
        };
        parse("")?;
        Ok(PrometheusExecutor {
            client,
            query_url: parse("/api/v1/query")?,
            query_range_url: parse("/api/v1/query_range")?,
            series_url: parse("/api/v1/series")?,
            labels_url: parse("/api/v1/labels")?,
            base_url,
            authorization: Arc::new(Authorization::from_options(options)?),
            headers: static_headers(&options.headers)?.into(),
        })
    }

    /// Adds the credentials, the extra headers and the client's forwarded
    /// ones. Configured credentials win over a forwarded `Authorization`,
    /// and the tenant is always sluice's own.
    fn decorate(
        &self,
        mut request: http::request::Builder,
        forwarded: &[Header],
    ) -> http::request::Builder {
        let authorization = self.authorization.value();
        for header in forwarded {
            let name = header.name.as_str();
            if name.eq_ignore_ascii_case("x-scope-orgid")
                || (authorization.is_some() && name.eq_ignore_ascii_case("authorization"))
            {
                continue;
            }
            request = request.header(name, header.value.as_str());
        }
        for (name, value) in self.headers.iter() {
            request = request.header(name, value.clone());
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
    }

    /// One exchange with the downstream: the answer's status, content type
    /// (kept as the header value: only forwarded answers need it as text)
    /// and whole body, all within `timeout`.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(u16, Option<header::HeaderValue>, Bytes), Failure> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                Failure::Transport(format!(
                    "error contacting downstream: {}",
                    error_chain(&error)
                ))
            })?;
            let status = response.status().as_u16();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| {
                    Failure::Transport(format!(
                        "error reading downstream answer: {}",
                        error_chain(&error)
                    ))
                })?
                .to_bytes();
            Ok((status, content_type, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    async fn send(
        &self,
        (tenant, forwarded): (&str, &[Header]),
        request: http::request::Builder,
        body: Full<Bytes>,
        timeout: Duration,
        expected: Option<Expected>,
    ) -> Execution {
        let started = Instant::now();
        let request = self.decorate(request, forwarded);
        let request = match request.header("X-Scope-OrgID", tenant).body(body) {
            Ok(request) => request,
            Err(error) => {
                return Execution::failed(
                    ErrorType::BadData,
                    format!("cannot forward the request: {error}"),
                    false,
                );
            }
        };
        let (status, content_type, body) = match self.exchange(request, timeout).await {
            Ok(answer) => answer,
            Err(Failure::TimedOut) => {
                return Execution::failed(
                    ErrorType::Timeout,
                    "error contacting downstream: the request timed out".to_owned(),
                    false,
                );
            }
            Err(Failure::Transport(message)) => {
                return Execution::failed(ErrorType::Internal, message, true);
            }
        };
        let retryable = status >= 500;
        let Some(expected) = expected else {
            return Execution {
                response: ApiResponse {
                    http_status: u32::from(status),
                    data: Some(ResponseData::Raw(RawData {
                        content_type: content_type
                            .as_ref()
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("application/json")
                            .to_owned(),
                        body: body.to_vec(),
                    })),
                    ..ApiResponse::default()
                },
                retryable,
            };
        };
        match decode_response(status, &body, expected) {
            Ok(response) => Execution {
                retryable: retryable && response.is_error(),
                response,
            },
            Err(error) => {
                let snippet = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
                tracing::warn!(status, %error, elapsed = ?started.elapsed(), "downstream answer not understood");
                Execution::failed(
                    ErrorType::Internal,
                    format!(
                        "downstream answered HTTP {status} with a body that is not a Prometheus API answer: {snippet}"
                    ),
                    retryable,
                )
            }
        }
    }
}

/// The pooled HTTP/1.1 client: TLS for `https://` URLs, plain otherwise.
fn http_client(
    base_url: &str,
    max_idle_connections: usize,
    options: &DownstreamOptions,
) -> Result<HttpClient, String> {
    let Some((scheme, rest)) = base_url.split_once("://") else {
        return Err("the downstream url must start with http:// or https://".into());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        // Not quoted: the part before the @ is a password.
        return Err("the downstream url must not hold credentials: use -querier.downstream-basic-auth-username and its password flags".into());
    }
    let tls = match scheme {
        "https" => options.tls.client_config()?,
        // Never used for plain http; no roots needed.
        "http" => rustls::ClientConfig::builder_with_provider(sluice_tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        _ => return Err("the downstream url must start with http:// or https://".into()),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = if options.tls.server_name.is_empty() {
        builder
    } else {
        let name = rustls::pki_types::ServerName::try_from(options.tls.server_name.clone())
            .map_err(|error| format!("invalid downstream TLS server name: {error}"))?;
        builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
    };
    let connector = builder.enable_http1().wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle_connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(connector))
}

/// Includes the causes: the HTTP client's top-level message alone hides
/// why a connection failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn form(pairs: &[(&str, &str)]) -> form_urlencoded::Serializer<'static, String> {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    form(pairs).finish()
}

/// The form of an instant or range query: its own `pairs`, then the
/// parameters both share, each sent only when the client gave it, so the
/// downstream applies its own defaults otherwise.
fn query_form(
    pairs: &[(&str, &str)],
    timeout_ms: i64,
    lookback_delta_ms: i64,
    stats: &str,
    limit: u64,
) -> String {
    let mut form = form(pairs);
    if timeout_ms > 0 {
        form.append_pair("timeout", &duration_param(timeout_ms));
    }
    if lookback_delta_ms > 0 {
        form.append_pair("lookback_delta", &duration_param(lookback_delta_ms));
    }
    if !stats.is_empty() {
        form.append_pair("stats", stats);
    }
    if limit > 0 {
        form.append_pair("limit", &limit.to_string());
    }
    form.finish()
}

fn duration_param(ms: i64) -> String {
    format_time_param(ms)
}

impl Executor for PrometheusExecutor {
    /// `query=1` at the downstream's instant API: parsed and evaluated in
    /// microseconds, so its latency is the time the backend made it wait.
    /// A probe that fails or times out counts as the longest wait.
    async fn probe(&self) -> Option<Duration> {
        const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
        let request = Request::post(self.query_url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let request = self
            .decorate(request, &[])
            .body(Full::new(Bytes::from_static(b"query=1")))
            .ok()?;
        let started = Instant::now();
        match self.exchange(request, PROBE_TIMEOUT).await {
            Ok((200, _, _)) => Some(started.elapsed()),
            _ => Some(PROBE_TIMEOUT),
        }
    }

    async fn execute(&self, tenant: &str, request: &QueryRequest, timeout: Duration) -> Execution {
        self.execute_forwarding(tenant, request, &[], timeout).await
    }

    async fn execute_forwarding(
        &self,
        tenant: &str,
        request: &QueryRequest,
        forwarded: &[Header],
        timeout: Duration,
    ) -> Execution {
        let Some(kind) = &request.kind else {
            return Execution::failed(ErrorType::BadData, "empty request".into(), false);
        };
        let post_form = |url: &Uri, body: String, expected: Expected| {
            let request = Request::post(url.clone())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            self.send(
                (tenant, forwarded),
                request,
                Full::new(Bytes::from(body)),
                timeout,
                Some(expected),
            )
        };
        let get = |uri: String, expected: Option<Expected>| {
            self.send(
                (tenant, forwarded),
                Request::get(uri),
                Full::new(Bytes::new()),
                timeout,
                expected,
            )
        };
        match kind {
            QueryKind::Instant(query) => {
                let body = query_form(
                    &[
                        ("query", &query.query),
                        ("time", &format_time_param(query.time_ms)),
                    ],
                    query.timeout_ms,
                    query.lookback_delta_ms,
                    &query.stats,
                    query.limit,
                );
                post_form(&self.query_url, body, Expected::Query).await
            }
            QueryKind::Range(query) => {
                let body = query_form(
                    &[
                        ("query", &query.query),
                        ("start", &format_time_param(query.start_ms)),
                        ("end", &format_time_param(query.end_ms)),
                        ("step", &duration_param(query.step_ms)),
                    ],
                    query.timeout_ms,
                    query.lookback_delta_ms,
                    &query.stats,
                    query.limit,
                );
                post_form(&self.query_range_url, body, Expected::Query).await
            }
            QueryKind::Metadata(query) => {
                let start = query.start_ms.map(format_time_param);
                let end = query.end_ms.map(format_time_param);
                let limit = query.limit.to_string();
                let mut pairs: Vec<(&str, &str)> = query
                    .matchers
                    .iter()
                    .map(|matcher| ("match[]", matcher.as_str()))
                    .collect();
                if let Some(start) = &start {
                    pairs.push(("start", start));
                }
                if let Some(end) = &end {
                    pairs.push(("end", end));
                }
                if query.limit > 0 {
                    pairs.push(("limit", &limit));
                }
                let body = form_body(&pairs);
                match query.kind() {
                    MetadataKind::Series => {
                        post_form(&self.series_url, body, Expected::Series).await
                    }
                    MetadataKind::LabelNames => {
                        post_form(&self.labels_url, body, Expected::Strings).await
                    }
                    MetadataKind::LabelValues => {
                        // Prometheus serves label values on GET only.
                        let name: String =
                            form_urlencoded::byte_serialize(query.label_name.as_bytes()).collect();
                        let separator = if body.is_empty() { "" } else { "?" };
                        get(
                            format!(
                                "{}/api/v1/label/{name}/values{separator}{body}",
                                self.base_url
                            ),
                            Some(Expected::Strings),
                        )
                        .await
                    }
                }
            }
            QueryKind::Forwarded(forwarded) => {
                let separator = if forwarded.query_string.is_empty() {
                    ""
                } else {
                    "?"
                };
                get(
                    format!(
                        "{}{}{separator}{}",
                        self.base_url, forwarded.path, forwarded.query_string
                    ),
                    None,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_urls_are_checked_at_start() {
        let executor = PrometheusExecutor::new("http://prometheus:9090/", 4).expect("plain http");
        assert_eq!(executor.base_url, "http://prometheus:9090");
        assert_eq!(
            executor.query_range_url.to_string(),
            "http://prometheus:9090/api/v1/query_range"
        );
        let prefixed =
            PrometheusExecutor::new("http://mimir/prometheus", 4).expect("a path prefix");
        assert_eq!(
            prefixed.labels_url.to_string(),
            "http://mimir/prometheus/api/v1/labels"
        );
        let https = PrometheusExecutor::new("https://prometheus:9090", 4)
            .expect("https with the system's roots");
        assert_eq!(https.base_url, "https://prometheus:9090");
        let with_password = PrometheusExecutor::new("http://user:hunter2@prometheus:9090", 4)
            .err()
            .unwrap();
        assert!(!with_password.contains("hunter2"), "{with_password}");
        assert!(PrometheusExecutor::new("ftp://prometheus", 4).is_err());
        assert!(PrometheusExecutor::new("prometheus:9090", 4).is_err());
        assert!(PrometheusExecutor::new("http://pro metheus:9090", 4).is_err());
    }

    fn instant(query: &str) -> QueryRequest {
        QueryRequest {
            kind: Some(QueryKind::Instant(sluice_proto::InstantQuery {
                query: query.into(),
                time_ms: 1000,
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn a_downstream_that_never_answers_times_out_and_is_not_retried() {
        // The kernel accepts connections into the backlog; nobody answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let executor = PrometheusExecutor::new(&format!("http://127.0.0.1:{port}"), 1).unwrap();
        let execution = executor
            .execute("anonymous", &instant("up"), Duration::from_millis(200))
            .await;
        assert!(!execution.retryable);
        assert_eq!(execution.response.error_type(), ErrorType::Timeout);
        drop(silent);
    }

    #[tokio::test]
    async fn an_unreachable_downstream_is_a_retryable_internal_error() {
        // A port nothing listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let executor = PrometheusExecutor::new(&format!("http://127.0.0.1:{port}"), 1).unwrap();
        let execution = executor
            .execute("anonymous", &instant("up"), Duration::from_secs(5))
            .await;
        assert!(execution.retryable);
        assert_eq!(execution.response.error_type(), ErrorType::Internal);
        assert!(
            execution
                .response
                .error
                .starts_with("error contacting downstream"),
            "{}",
            execution.response.error
        );
    }
}
