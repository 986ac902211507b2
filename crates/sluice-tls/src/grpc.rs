//! gRPC over TLS: the server's accepted streams, and client channels.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::ClientTls;

/// A client that has not finished its handshake by then is dropped, so
/// slow or silent peers cannot hold connections open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`. Handshakes run concurrently, each in its own
/// task, so one slow client delays nobody else; a failed handshake (no
/// client certificate where one is required, one from another CA, plain
/// text) closes that connection and is logged. Accepting stops when the
/// stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = sender.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause, not spin.
                    tracing::warn!(%error, "accepting a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "gRPC TLS handshake failed")
                    }
                    Err(_) => tracing::warn!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Makes gRPC channels to other roles: plain HTTP/2, or TLS as configured.
#[derive(Clone, Default)]
pub struct GrpcChannels {
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl std::fmt::Debug for GrpcChannels {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GrpcChannels")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl GrpcChannels {
    /// Channels as `tls` says: plain unless it is enabled.
    pub fn new(tls: &ClientTls) -> Result<GrpcChannels, String> {
        if !tls.enabled {
            return Ok(GrpcChannels::default());
        }
        let config = tls.client_config()?;
        Ok(GrpcChannels {
            tls: Some((Arc::new(config), tls.server_name.clone())),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A lazily connecting channel to `address` (`ip:port` or
    /// `host:port`), set up further by `configure` (timeouts, keepalive).
    /// Over TLS the server's certificate must name the configured server
    /// name, else `host`: the name the operator gave, not the address it
    /// resolved to.
    pub fn channel(
        &self,
        host: &str,
        address: &str,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, String> {
        let Some((config, server_name)) = &self.tls else {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| format!("invalid gRPC address {address:?}: {error}"))?;
            return Ok(configure(endpoint).connect_lazy());
        };
        let name = if server_name.is_empty() {
            host
        } else {
            server_name
        };
        let name = ServerName::try_from(name.to_owned())
            .map_err(|error| format!("invalid TLS server name {name:?}: {error}"))?;
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|error| format!("invalid gRPC address {address:?}: {error}"))?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config((**config).clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(name))
            .enable_http2()
            .wrap_connector(tcp);
        Ok(configure(endpoint).connect_with_connector_lazy(connector))
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_what_the_certificate_must_name() {
        assert_eq!(host_of("frontend.example:9095"), "frontend.example");
        assert_eq!(host_of("127.0.0.1:9095"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9095"), "::1");
        assert_eq!(host_of("scheduler"), "scheduler");
    }
}
