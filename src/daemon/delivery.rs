//! Delivery of a rendered `Message` through the REST client (Azure or embedded, same code),
//! with the outcome counted in metrics and mapped to what a caller can act on.

use crate::message::Message;
use crate::signalr::rest::{RestClient, RestError};

/// Why a message could not be handed to the service.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message is over the service's 1 MB limit.
    #[error("{0}")]
    TooLarge(String),
    /// The service refused it or could not be reached (after retries).
    #[error("{0}")]
    Unavailable(String),
}

/// Send `message`; `source` (`route`/`schedule`) and `name` label logs and metrics.
pub async fn deliver(
    rest: &RestClient,
    message: &Message,
    source: &'static str,
    name: &str,
) -> Result<(), DeliveryError> {
    let started = std::time::Instant::now();
    let result = rest.send(message).await;
    metrics::histogram!("herald_rest_request_seconds", "operation" => "send")
        .record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "sent" } else { "failed" };
    metrics::counter!("herald_messages_total",
        "hub" => message.hub.clone(), "to" => message.to.kind(), "source" => source, "outcome" => outcome)
    .increment(1);
    result.map_err(|e| {
        tracing::warn!(source, name, hub = %message.hub, target = %message.target, error = %e,
            "message could not be delivered");
        match e {
            RestError::TooLarge { .. } => DeliveryError::TooLarge(e.to_string()),
            other => DeliveryError::Unavailable(format!(
                "the SignalR service did not accept the message: {other}"
            )),
        }
    })
}
