//! Sending results straight to the frontend that asked, by its address:
//! queriers do it for every sub-query a scheduler handed them, schedulers do
//! it to report a querier lost mid-query. Channels are cached per address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::frontend_results::frontend_results_client::FrontendResultsClient;
use crate::{QueryResult, ResultReport};

/// Clients to frontends' `FrontendResults` service, one channel per address.
#[derive(Clone, Default)]
pub struct ResultDelivery {
    channels: Arc<Mutex<HashMap<String, tonic::transport::Channel>>>,
}

impl ResultDelivery {
    fn channel(&self, address: &str) -> Result<tonic::transport::Channel, String> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| format!("invalid frontend address {address:?}: {error}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Delivers `result` for `tenant` to the frontend at `address`. One
    /// try: results can be large, and a frontend that cannot be reached has
    /// lost the client waiting for it anyway.
    pub async fn deliver(
        &self,
        address: &str,
        tenant: &str,
        result: QueryResult,
        timeout: Duration,
    ) -> Result<(), String> {
        let channel = self.channel(address)?;
        let mut client = FrontendResultsClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(ResultReport {
            tenant: tenant.to_owned(),
            result: Some(result),
        });
        request.set_timeout(timeout);
        client
            .query_result(request)
            .await
            .map(|_| ())
            .map_err(|status| format!("delivering a result to frontend {address}: {status}"))
    }
}
