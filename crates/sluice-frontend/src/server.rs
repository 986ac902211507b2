//! The HTTP server every role's API runs on: hyper's HTTP/1.1 connections
//! with limits a slow or hostile client cannot get past, optional TLS, and
//! a graceful stop.
//!
//! - a request whose URL or headers are too long is answered 414 or 431
//!   with the Prometheus error envelope (beyond twice the header limit,
//!   hyper itself answers 431 without a body: it will not buffer more);
//! - a client that has not sent its whole request head within the read
//!   header timeout is disconnected, so idle half-requests cannot pile up;
//! - past the connection cap, a new connection is answered 503 with the
//!   envelope and closed, without being routed anywhere.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sluice_proto::ErrorType;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// What one HTTP server allows.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Request line and headers together, in bytes.
    pub max_header_bytes: usize,
    /// The request target (path and query string), in bytes.
    pub max_url_bytes: usize,
    /// Time a client has to send its whole request head; zero: no limit.
    pub read_header_timeout: Duration,
    /// Connections served at once; zero: no cap.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            // Go's http.DefaultMaxHeaderBytes, as Prometheus has.
            max_header_bytes: 1 << 20,
            max_url_bytes: 1 << 20,
            read_header_timeout: Duration::from_secs(10),
            max_connections: 0,
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets
/// requests in flight finish.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let slots =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Answers must leave at once, not wait on Nagle for the client's ACK.
        let _ = stream.set_nodelay(true);
        let permit = match &slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tokio::spawn(refuse_connection(stream));
                    continue;
                }
            },
        };
        let (router, limits, acceptor) = (router.clone(), limits.clone(), acceptor.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(stream, router, &limits, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => serve_connection(tls, router, &limits, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%error, "HTTP TLS handshake failed"),
                        Err(_) => tracing::debug!("HTTP TLS handshake timed out"),
                    }
                }
            }
        });
    }
    graceful.shutdown().await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Answers 503 with the envelope and closes. The request's first bytes
/// are read first (a second at most), and what follows the answer is
/// drained briefly: closing a socket with unread data resets it, and the
/// client would see a reset instead of the answer.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await;
    let body = sluice_api::json::encode_error(
        ErrorType::Unavailable,
        "too many open connections: try again later",
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
    })
    .await;
}

async fn serve_connection<S>(
    stream: S,
    router: axum::Router,
    limits: &HttpLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (max_header_bytes, max_url_bytes) = (limits.max_header_bytes, limits.max_url_bytes);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let router = router.clone();
        async move {
            if let Some(refusal) = oversized(&request, max_header_bytes, max_url_bytes) {
                return Ok::<_, std::convert::Infallible>(refusal);
            }
            router.oneshot(request.map(Body::new)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper refuses (bare 431) only past this; below it the check in
        // `oversized` answers with the envelope.
        .max_buf_size(max_header_bytes.saturating_mul(2).max(8192));
    if !limits.read_header_timeout.is_zero() {
        builder.header_read_timeout(limits.read_header_timeout);
    }
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// The refusal of a request whose target or head is over the limits.
fn oversized(
    request: &http::Request<Incoming>,
    max_header_bytes: usize,
    max_url_bytes: usize,
) -> Option<axum::response::Response> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > max_url_bytes {
        let message = format!(
            "request URL of {target} bytes is over the limit of {max_url_bytes}: send the parameters in a POST form body"
        );
        return Some(refusal(414, &message));
    }
    // Each header line is `name: value\r\n`.
    let head = target
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > max_header_bytes {
        let message =
            format!("request headers of {head} bytes are over the limit of {max_header_bytes}");
        return Some(refusal(431, &message));
    }
    None
}

fn refusal(status: u16, message: &str) -> axum::response::Response {
    let mut response = axum::response::Response::new(Body::from(sluice_api::json::encode_error(
        ErrorType::BadData,
        message,
    )));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request over TLS to `port`, trusting `pki`'s CA; the raw answer.
    async fn https_get(pki: &sluice_testkit::TestPki, port: u16, path: &str) -> String {
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for certificate in rustls_pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem"))
            .unwrap()
            .map(Result::unwrap)
        {
            roots.add(certificate).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(sluice_tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_api_is_served_over_tls_with_the_same_limits() {
        let pki = sluice_testkit::TestPki::generate();
        let tls = sluice_tls::ServerTls {
            cert_path: pki.path("server.pem"),
            key_path: pki.path("server.key"),
            ..sluice_tls::ServerTls::default()
        }
        .server_config(&[b"http/1.1"])
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().route("/ok", axum::routing::get(|| async { "fine" }));
        let limits = HttpLimits {
            max_url_bytes: 100,
            ..HttpLimits::default()
        };
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve_http(
            listener,
            router,
            limits,
            Some(Arc::new(tls)),
            stopped,
        ));
        let answer = https_get(&pki, port, "/ok").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("fine"), "{answer}");
        let long = format!("/ok?{}", "a".repeat(200));
        let answer = https_get(&pki, port, &long).await;
        assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
        assert!(answer.contains(r#""errorType":"bad_data""#), "{answer}");
        // Plain HTTP to a TLS port gets no answer, only a closed connection.
        let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        plain
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer).await;
        assert!(!String::from_utf8_lossy(&answer).contains("fine"));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops when told")
            .unwrap();
    }
}
