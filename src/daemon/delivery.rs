//! Delivery of a rendered `Message` through the REST client (Azure or embedded, same code),
//! with the outcome counted in metrics and mapped to what a caller can act on. The one warn
//! line of a failed delivery, with its full cause, is written here (inside the request's
//! span, so it carries the `request_id`); callers answer without logging it again.

use std::error::Error as _;
use std::time::Duration;

use crate::message::Message;
use crate::signalr::rest::{RestClient, RestError};

/// Why a message could not be handed to the service. `Display` is what a caller may be told:
/// it never names the service's address, port, URL or key; the full cause is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message is over the service's 1 MB limit; nothing was sent.
    #[error("the message is {size} bytes, over the SignalR service's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The rendered message cannot be sent as it is (an empty or over-long user, group or
    /// connection id, an empty target...); nothing was sent.
    #[error("the message cannot be sent: {reason}")]
    Invalid { reason: String },
    /// The service refused the message or could not be reached (after the client's retries).
    #[error("the SignalR service did not accept the message")]
    Unavailable {
        /// How long the service asked callers to wait, when it said.
        retry_after: Option<Duration>,
        #[source]
        source: RestError,
    },
}

impl DeliveryError {
    /// What a caller is told about `e`.
    pub fn from_rest(e: RestError) -> DeliveryError {
        match e {
            RestError::TooLarge { size, limit } => DeliveryError::TooLarge { size, limit },
            RestError::InvalidArgument(reason) => DeliveryError::Invalid { reason },
            other => DeliveryError::Unavailable {
                retry_after: other.retry_after(),
                source: other,
            },
        }
    }
}

/// `error` and every cause under it, joined with `: ` (for the log line only).
pub(crate) fn full_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        // reqwest repeats its inner error in its own text; skip exact repeats.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
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
        let error = DeliveryError::from_rest(e);
        let cause = match error.source() {
            Some(rest) => full_cause(rest),
            None => error.to_string(),
        };
        tracing::warn!(source, name, hub = %message.hub, target = %message.target,
            error = %cause, "message could not be delivered");
        error
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Recipient;
    use crate::signalr::ServiceEndpoint;
    use crate::signalr::rest::RestOptions;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    /// A client for a port nobody listens on, with no retries.
    async fn unreachable() -> RestClient {
        crate::install_crypto();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint = ServiceEndpoint::new("http://127.0.0.1", Some(port), KEY).unwrap();
        let options = RestOptions {
            max_retries: 0,
            ..RestOptions::default()
        };
        RestClient::new(endpoint, options).unwrap()
    }

    #[tokio::test]
    async fn errors_are_typed_and_their_text_names_nothing_internal() {
        let rest = unreachable().await;
        let base = rest.endpoint().rest_base();
        let port = base.rsplit(':').next().unwrap().to_string();
        let message = Message::broadcast("chat", "t", vec![]);
        let err = deliver(&rest, &message, "route", "r").await.unwrap_err();
        let DeliveryError::Unavailable {
            retry_after: None,
            source: RestError::Transport { .. },
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        let shown = err.to_string();
        assert!(
            !shown.contains("127.0.0.1") && !shown.contains(&port),
            "{shown}"
        );
        // The full cause (for the log) says what happened.
        let cause = full_cause(err.source().unwrap());
        assert!(cause.contains("could not connect"), "{cause}");
        assert!(!cause.contains(KEY), "{cause}");

        let mut bad = Message::broadcast("chat", "t", vec![]);
        bad.to = Recipient::Group(String::new());
        let err = deliver(&rest, &bad, "route", "r").await.unwrap_err();
        assert!(matches!(err, DeliveryError::Invalid { .. }), "{err:?}");

        let mut big = Message::broadcast("chat", "t", vec![]);
        big.arguments = vec![serde_json::json!("x".repeat(1 << 20))];
        let err = deliver(&rest, &big, "route", "r").await.unwrap_err();
        assert!(
            matches!(
                err,
                DeliveryError::TooLarge {
                    limit: 1_048_576,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
