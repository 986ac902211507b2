//! The security settings of one process: TLS for the gRPC and HTTP servers,
//! TLS for each family of gRPC clients, and how the querier reaches its
//! downstream. Filled by the `-server.*-tls-*`, `-*.tls-*` and
//! `-querier.downstream-*` rows of the settings table, checked (files read)
//! once at start in [`Security::validate`].

use sluice_querier::DownstreamOptions;
use sluice_tls::{ClientTls, GrpcChannels, ServerTls};

#[derive(Clone, Debug, Default)]
pub(crate) struct Security {
    pub(crate) grpc_server: ServerTls,
    pub(crate) http_server: ServerTls,
    /// Querier → query-frontends and query-schedulers, and its results to
    /// frontends: `-querier.frontend-client.*`.
    pub(crate) querier_client: ClientTls,
    /// Query-frontend → query-schedulers: `-query-frontend.grpc-client-config.*`.
    pub(crate) frontend_client: ClientTls,
    /// Query-scheduler → query-frontends (lost-querier reports):
    /// `-query-scheduler.grpc-client-config.*`.
    pub(crate) scheduler_client: ClientTls,
    pub(crate) downstream: DownstreamOptions,
    pub(crate) http_limits: sluice_frontend::HttpLimits,
    /// Made from `querier_client` by `validate`.
    pub(crate) querier_channels: GrpcChannels,
    /// Made from the server settings by `validate`.
    pub(crate) grpc_server_config: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub(crate) http_server_config: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Security {
    /// Reads every certificate and key named, so a wrong path or file
    /// stops the process at start with the flag's name, not at first use.
    pub(crate) fn validate(
        &mut self,
        frontend: &mut sluice_frontend::FrontendConfig,
        scheduler: &mut sluice_scheduler::SchedulerConfig,
    ) -> Result<(), String> {
        let channels = |tls: &ClientTls, flags: &str| {
            GrpcChannels::new(tls).map_err(|error| format!("-{flags}.tls-*: {error}"))
        };
        self.querier_channels = channels(&self.querier_client, "querier.frontend-client")?;
        frontend.grpc_client =
            channels(&self.frontend_client, "query-frontend.grpc-client-config")?;
        scheduler.grpc_client =
            channels(&self.scheduler_client, "query-scheduler.grpc-client-config")?;
        let server = |tls: &ServerTls, alpn: &[&[u8]], flags: &str| {
            tls.is_enabled()
                .then(|| tls.server_config(alpn).map(std::sync::Arc::new))
                .transpose()
                .map_err(|error| format!("-server.{flags}-tls-*: {error}"))
        };
        self.grpc_server_config = server(&self.grpc_server, &[b"h2"], "grpc")?;
        self.http_server_config = server(&self.http_server, &[b"http/1.1"], "http")?;
        Ok(())
    }
}

/// `-querier.downstream-header` values: `Name: value`, several separated
/// by commas (a YAML list arrives joined by commas too). A comma inside a
/// value stays there: only a comma followed by `Name:` starts a header.
pub(crate) fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for piece in text.split(',') {
        let starts_header = piece.split_once(':').is_some_and(|(name, _)| {
            let name = name.trim();
            !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        });
        match (starts_header, headers.last_mut()) {
            (true, _) => {
                let (name, value) = piece.split_once(':').expect("checked above");
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            (false, Some((_, value))) => {
                value.push(',');
                value.push_str(piece);
            }
            (false, None) if piece.trim().is_empty() => {}
            (false, None) => {
                return Err("a downstream header is written Name: value".into());
            }
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::{Security, parse_headers};

    #[test]
    fn a_missing_certificate_stops_the_start_naming_its_flags() {
        let mut security = Security::default();
        security.grpc_server.cert_path = "/nonexistent/server.pem".into();
        security.grpc_server.key_path = "/nonexistent/server.key".into();
        let error = security
            .validate(&mut Default::default(), &mut Default::default())
            .unwrap_err();
        assert!(error.starts_with("-server.grpc-tls-*"), "{error}");
        assert!(error.contains("/nonexistent/server.pem"), "{error}");
        let mut security = Security::default();
        security.frontend_client.enabled = true;
        security.frontend_client.ca_path = "/nonexistent/ca.pem".into();
        let error = security
            .validate(&mut Default::default(), &mut Default::default())
            .unwrap_err();
        assert!(
            error.starts_with("-query-frontend.grpc-client-config.tls-*"),
            "{error}"
        );
    }

    #[test]
    fn headers_split_at_commas_that_start_a_header() {
        let headers = parse_headers("X-Api-Key: a,b, X-Team: metrics").unwrap();
        assert_eq!(
            headers,
            vec![
                ("X-Api-Key".to_owned(), "a,b".to_owned()),
                ("X-Team".to_owned(), "metrics".to_owned())
            ]
        );
        assert!(parse_headers("no colon here").is_err());
        assert_eq!(parse_headers("").unwrap(), vec![]);
    }
}
