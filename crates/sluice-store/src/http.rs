//! The remote-write endpoints. Answers are plain text, as Prometheus's and
//! Mimir's receivers answer, with their status codes.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_remotewrite::Protocol;

use crate::Store;

/// Finds a request's tenant from its headers, or the status and message
/// to refuse it with (the frontend's rules, so queries and writes agree).
pub type TenantOf = Arc<dyn Fn(&HeaderMap) -> Result<String, (u16, String)> + Send + Sync>;

#[derive(Clone)]
struct PushState {
    store: Arc<Store>,
    tenant_of: TenantOf,
}

/// `POST /api/v1/push` and `POST /api/v1/write`.
pub fn router(store: Arc<Store>, tenant_of: TenantOf) -> axum::Router {
    // Bodies up to twice the limit reach the decoder, which answers 413
    // with Mimir's message; larger ones get axum's 413 before they are
    // read whole.
    let limit = store.config.max_recv_msg_size.saturating_mul(2);
    axum::Router::new()
        .route("/api/v1/push", axum::routing::post(push))
        .route("/api/v1/write", axum::routing::post(push))
        .route("/ingester/flush", axum::routing::post(flush).get(flush))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(PushState { store, tenant_of })
}

fn text(status: u16, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, message).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn push(State(state): State<PushState>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match (state.tenant_of)(&headers) {
        Ok(tenant) => tenant,
        Err((status, message)) => return text(status, message),
    };
    let protocol = match sluice_remotewrite::protocol(
        header(&headers, "content-type"),
        header(&headers, "content-encoding"),
    ) {
        Ok(protocol) => protocol,
        Err(error) => return text(error.status(), error.to_string()),
    };
    let store = Arc::clone(&state.store);
    let ingested =
        tokio::task::spawn_blocking(move || store.ingest(&tenant, protocol, &body)).await;
    let reply = match ingested {
        Ok(reply) => reply,
        Err(error) => return text(500, format!("ingest failed: {error}")),
    };
    if reply.status != 204 {
        if reply.status >= 500 {
            tracing::warn!(status = reply.status, message = %reply.message, "push refused");
        }
        return text(reply.status, reply.message);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if protocol == Protocol::V2 {
        let headers = response.headers_mut();
        headers.insert(
            "X-Prometheus-Remote-Write-Samples-Written",
            HeaderValue::from(reply.written),
        );
        headers.insert(
            "X-Prometheus-Remote-Write-Histograms-Written",
            HeaderValue::from(0),
        );
        headers.insert(
            "X-Prometheus-Remote-Write-Exemplars-Written",
            HeaderValue::from(0),
        );
    }
    response
}

/// Mimir's `/ingester/flush`: cuts every tenant's head into blocks now.
async fn flush(State(state): State<PushState>) -> Response {
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || store.cut_blocks(true)).await {
        Ok(Ok(report)) => {
            tracing::info!(
                blocks = report.blocks,
                series = report.series,
                samples = report.samples,
                "flushed"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(error)) => text(500, format!("flush failed: {error}")),
        Err(error) => text(500, format!("flush failed: {error}")),
    }
}
