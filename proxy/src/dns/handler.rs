//! The request handler hickory's server calls for every well-formed query over TCP: the
//! [`respond`] of [`super::respond`] (the same answer as the UDP path), sent through hickory's
//! response handle, then counted. Malformed packets never get here: hickory answers FORMERR
//! when the header is readable and drops the rest.

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::metrics::Metrics;

use super::respond::respond;
use super::Shared;

pub use super::respond::MAX_UDP_PAYLOAD;

/// Serves the zone from the shared health state.
pub struct DnsHandler {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

impl DnsHandler {
    /// A handler over `shared`, counting into `metrics`.
    pub fn new(shared: Arc<Shared>, metrics: Arc<Metrics>) -> Self {
        Self { shared, metrics }
    }
}

fn send(sent: Result<ResponseInfo, hickory_server::net::NetError>, meta: Metadata) -> ResponseInfo {
    match sent {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "dns response not sent");
            let mut meta = meta;
            meta.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let current = self.shared.current();
        let reply = respond(
            &current,
            &self.metrics,
            request,
            request.src(),
            fastrand::u64(..),
        );
        let sent = response
            .send_response(reply.message(&request.queries))
            .await;
        let info = send(sent, reply.metadata());
        reply.sent(&self.metrics, &info);
        info
    }
}
