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

/// Makes [`PlainHttp`] clients for object_store.
#[derive(Debug, Default)]
pub(crate) struct PlainHttpConnector;

impl HttpConnector for PlainHttpConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut connector = HyperConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(HttpClient::new(PlainHttp { client }))
    }
}

/// A pooled HTTP/1.1 client.
#[derive(Debug)]
struct PlainHttp {
    client: Client<HyperConnector, HttpRequestBody>,
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
            let response = self.client.request(request).await.map_err(|error| {
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
