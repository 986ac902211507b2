//! Sending results straight to the frontend that asked, by its address:
//! queriers do it for every sub-query a scheduler handed them, schedulers do
//! it to report a querier lost mid-query.
//!
//! Small results go over one long-lived, pipelined stream per frontend, each
//! acknowledged by query id: a unary call per result would pay for a new
//! HTTP/2 stream and its headers every time, which dominated the scheduler
//! path's cost. Large results, and any whose stream fails, use a unary call,
//! so a broken stream never loses a result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::frontend_results::frontend_results_client::FrontendResultsClient;
use crate::{QueryResult, ResultReport};

/// Results above this size go unary: their per-call cost is small beside
/// their encoding, and the stream path would have to keep a copy for retry.
const STREAM_LIMIT_BYTES: usize = 64 * 1024;

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>>;

/// One open results stream to one frontend.
struct Link {
    sender: mpsc::Sender<ResultReport>,
    acks: Acks,
    alive: Arc<AtomicBool>,
}

/// Clients to frontends' `FrontendResults` service.
#[derive(Clone, Default)]
pub struct ResultDelivery {
    channels: Arc<Mutex<HashMap<String, tonic::transport::Channel>>>,
    links: Arc<tokio::sync::Mutex<HashMap<String, Arc<Link>>>>,
    /// Plain or TLS, as the gRPC client flags say.
    grpc: sluice_tls::GrpcChannels,
}

impl ResultDelivery {
    /// Delivers over channels made by `grpc` (TLS when configured).
    pub fn new(grpc: sluice_tls::GrpcChannels) -> ResultDelivery {
        ResultDelivery {
            grpc,
            ..ResultDelivery::default()
        }
    }

    fn client(
        &self,
        address: &str,
    ) -> Result<FrontendResultsClient<tonic::transport::Channel>, String> {
        let mut channels = self.channels.lock().expect("channels lock");
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let host = sluice_tls::host_of(address);
                let channel = self
                    .grpc
                    .channel(host, address, |endpoint| {
                        endpoint
                            .tcp_nodelay(true)
                            .connect_timeout(Duration::from_secs(2))
                            .http2_keep_alive_interval(Duration::from_secs(10))
                            .keep_alive_timeout(Duration::from_secs(10))
                    })
                    .map_err(|error| format!("frontend address {address:?}: {error}"))?;
                channels.insert(address.to_owned(), channel.clone());
                channel
            }
        };
        Ok(FrontendResultsClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX))
    }

    /// The open stream to `address`, opening one if there is none.
    async fn link(&self, address: &str) -> Result<Arc<Link>, String> {
        let mut links = self.links.lock().await;
        if let Some(link) = links.get(address)
            && link.alive.load(Ordering::Relaxed)
        {
            return Ok(link.clone());
        }
        let (sender, receiver) = mpsc::channel(1024);
        let mut acks_stream = self
            .client(address)?
            .result_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .map_err(|status| format!("opening the results stream to {address}: {status}"))?
            .into_inner();
        let link = Arc::new(Link {
            sender,
            acks: Acks::default(),
            alive: Arc::new(AtomicBool::new(true)),
        });
        let (acks, alive) = (link.acks.clone(), link.alive.clone());
        tokio::spawn(async move {
            while let Some(Ok(ack)) = acks_stream.next().await {
                let waiter = acks.lock().expect("acks lock").remove(&ack.query_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(if ack.error.is_empty() {
                        Ok(())
                    } else {
                        Err(ack.error)
                    });
                }
            }
            alive.store(false, Ordering::Relaxed);
            // Whatever was in flight on the dead stream is retried unary.
            let stranded: Vec<_> = acks.lock().expect("acks lock").drain().collect();
            for (_, waiter) in stranded {
                let _ = waiter.send(Err("results stream closed".to_owned()));
            }
        });
        links.insert(address.to_owned(), link.clone());
        Ok(link)
    }

    /// Delivers `result` for `tenant` to the frontend at `address`, with
    /// the task's `result_token`.
    pub async fn deliver(
        &self,
        address: &str,
        tenant: &str,
        result_token: &[u8],
        result: QueryResult,
        timeout: Duration,
    ) -> Result<(), String> {
        let report = ResultReport {
            tenant: tenant.to_owned(),
            result: Some(result),
            result_token: result_token.to_vec(),
        };
        if report.encoded_len() <= STREAM_LIMIT_BYTES {
            match self
                .deliver_on_stream(address, report.clone(), timeout)
                .await
            {
                Ok(()) => return Ok(()),
                // The frontend refused it: retrying cannot help.
                Err(StreamFailure::Refused(error)) => return Err(error),
                Err(StreamFailure::Broken(error)) => {
                    tracing::debug!(%address, %error, "results stream failed; delivering unary");
                }
            }
        }
        let mut request = tonic::Request::new(report);
        request.set_timeout(timeout);
        self.client(address)?
            .query_result(request)
            .await
            .map(|_| ())
            .map_err(|status| format!("delivering a result to frontend {address}: {status}"))
    }

    async fn deliver_on_stream(
        &self,
        address: &str,
        report: ResultReport,
        timeout: Duration,
    ) -> Result<(), StreamFailure> {
        let link = self.link(address).await.map_err(StreamFailure::Broken)?;
        let query_id = report
            .result
            .as_ref()
            .map(|result| result.query_id)
            .unwrap_or(0);
        let (ack, acked) = oneshot::channel();
        link.acks.lock().expect("acks lock").insert(query_id, ack);
        if link.sender.send(report).await.is_err() {
            link.acks.lock().expect("acks lock").remove(&query_id);
            return Err(StreamFailure::Broken("results stream closed".into()));
        }
        match tokio::time::timeout(timeout, acked).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) if error == "results stream closed" => {
                Err(StreamFailure::Broken(error))
            }
            Ok(Ok(Err(error))) => Err(StreamFailure::Refused(error)),
            Ok(Err(_)) => Err(StreamFailure::Broken("results stream closed".into())),
            Err(_) => {
                link.acks.lock().expect("acks lock").remove(&query_id);
                Err(StreamFailure::Broken("no acknowledgement in time".into()))
            }
        }
    }
}

enum StreamFailure {
    Broken(String),
    Refused(String),
}
