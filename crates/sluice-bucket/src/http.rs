//! object_store's HTTP client for S3 over plain HTTP, on hyper: the build
//! gets S3 without reqwest's TLS stack (and so without C crypto). With the
//! `s3-tls` feature object_store's own reqwest client is used instead.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as HyperConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};

/// How long a request may wait for its response headers: a store that
/// accepts connections but never answers fails the request (object_store
/// then retries it) instead of holding the query until its own timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes [`PlainHttp`] clients for object_store.
#[derive(Debug)]
pub(crate) struct PlainHttpConnector {
    pub(crate) response_timeout: Duration,
}

impl Default for PlainHttpConnector {
    fn default() -> PlainHttpConnector {
        PlainHttpConnector {
            response_timeout: RESPONSE_TIMEOUT,
        }
    }
}

impl HttpConnector for PlainHttpConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut connector = HyperConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(HttpClient::new(PlainHttp {
            client,
            response_timeout: self.response_timeout,
        }))
    }
}

/// A pooled HTTP/1.1 client.
#[derive(Debug)]
struct PlainHttp {
    client: Client<HyperConnector, HttpRequestBody>,
    response_timeout: Duration,
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'a>>;

impl HttpService for PlainHttp {
    // Written out instead of through `#[async_trait]`, which object_store
    // uses to declare the trait, to spare the build that macro crate.
    fn call<'life0, 'async_trait>(&'life0 self, request: HttpRequest) -> Call<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let pending = self.client.request(request);
            let Ok(answered) = tokio::time::timeout(self.response_timeout, pending).await else {
                let waited = format!("no response within {:?}", self.response_timeout);
                return Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, waited),
                ));
            };
            let response = answered.map_err(|error| {
                let kind = if error.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, error)
            })?;
            let (parts, body) = response.into_parts();
            let body = body.map_err(|error| HttpError::new(HttpErrorKind::Interrupted, error));
            Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that accepts connections and never answers fails the
    /// request after the response timeout, as a timeout object_store retries.
    #[tokio::test]
    async fn a_silent_store_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                open.push(connection);
            }
        });
        let connector = PlainHttpConnector {
            response_timeout: Duration::from_millis(200),
        };
        let client = connector.connect(&ClientOptions::default()).unwrap();
        let mut request = HttpRequest::new(HttpRequestBody::from(Vec::new()));
        *request.uri_mut() = format!("http://{address}/bucket/key").parse().unwrap();
        let started = std::time::Instant::now();
        let error = client.execute(request).await.unwrap_err();
        assert_eq!(error.kind(), HttpErrorKind::Timeout, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        held.abort();
    }
}
