//! Client events (`events:`): what herald does when the SignalR service forwards a client's
//! `connected`/`disconnected` event or invocation upstream. The actions live here, once, for
//! both ways in: the daemon's upstream endpoint (`upstream`, Azure and the embedded service
//! POST to it) and the Azure Functions `signalRTrigger` functions (`daemon::functions`).
//! `presence` keeps who is connected; `acks` answers who acknowledged a message.

pub mod acks;
pub mod presence;
pub mod upstream;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, EventAction, EventMethod, GroupPattern, HubEvents, render_message};
use crate::daemon::http::rate_limit::RateLimiters;
use crate::message::{Message, Recipient};
use crate::signalr::rest::RestClient;
use crate::store::{Accept, Accepted, AckOutcome, NewAck, NewMessage};
use crate::telemetry::metrics as m;

pub use presence::Presence;

/// Who raised an event: the connection, its hub and its user id (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub hub: String,
    pub connection: String,
    pub user: Option<String>,
}

/// What the actions need: cheap handles, shared by the daemon and the Functions handler.
#[derive(Clone)]
pub struct Events {
    pub rest: RestClient,
    /// Acknowledgements and retained statuses.
    pub store: crate::store::Store,
    /// Where relayed messages go: the daemon's outbox (durable, retried). `None` in
    /// custom-handler mode, which has no outbox worker: relays are sent at once.
    pub outbox: Option<crate::daemon::outbox::Outbox>,
    pub limiters: Arc<RateLimiters>,
    pub presence: Arc<Presence>,
}

/// Why an invocation was refused: the text is the error of the client's Completion, safe to
/// show (it names the method or group, never an internal cause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(text: impl Into<String>) -> Refusal {
    Refusal(text.into())
}

fn count(hub: &str, event: &str, outcome: &'static str) {
    metrics::counter!(m::CLIENT_EVENTS, "hub" => hub.to_ascii_lowercase(), "event" => event.to_string(), "outcome" => outcome)
        .increment(1);
}

impl Events {
    /// A client connected: note it in presence and, when configured, send it the hub's
    /// retained statuses (oldest first) before answering. A failed send is logged; the
    /// connection stays.
    pub async fn connected(&self, cfg: &Config, caller: &Caller) {
        self.presence.connected(caller);
        let Some(events) = cfg.events_of(&caller.hub) else {
            count(&caller.hub, "connected", "ok");
            return;
        };
        if !events.send_retained {
            count(&caller.hub, "connected", "ok");
            return;
        }
        // Clustered: the cluster-wide statuses (Redis), whichever node accepted them.
        let read = match &self.outbox {
            Some(outbox) => outbox.shared().retained_in_hub(&caller.hub).await,
            None => self
                .store
                .retained_in_hub(&caller.hub)
                .await
                .map(|r| (r, None)),
        };
        let retained = match read {
            Ok((r, _)) => r,
            Err(error) => {
                tracing::error!(%error, hub = %caller.hub, "cannot read retained statuses for a new connection");
                count(&caller.hub, "connected", "failed");
                return;
            }
        };
        let mut outcome = "ok";
        // Only what this caller may read: broadcasts and statuses sent to its own user, the
        // rule of history and of the retained GETs (never another user's status).
        for r in retained
            .into_iter()
            .filter(|r| r.visible_to(caller.user.as_deref()))
        {
            let message = Message {
                hub: events.hub.clone(),
                to: Recipient::Connection(caller.connection.clone()),
                target: r.message.target,
                arguments: r.message.arguments,
                excluded: Vec::new(),
            };
            if let Err(error) = self.rest.send(&message).await {
                tracing::warn!(%error, hub = %caller.hub, connection = %caller.connection, id = %r.id, "retained status not sent to a new connection");
                outcome = "failed";
                break;
            }
        }
        count(&caller.hub, "connected", outcome);
    }

    /// A client disconnected: presence forgets the connection.
    pub fn disconnected(&self, caller: &Caller) {
        self.presence.disconnected(caller);
        count(&caller.hub, "disconnected", "ok");
    }

    /// A client invoked `target` with `arguments`: run the configured action. `Ok` is the
    /// Completion's result; a refusal is its error. Nothing is dropped silently.
    pub async fn invoke(
        &self,
        cfg: &Config,
        caller: &Caller,
        target: &str,
        arguments: &[Value],
    ) -> Result<Value, Refusal> {
        let result = self.run(cfg, caller, target, arguments).await;
        count(
            &caller.hub,
            target,
            if result.is_ok() { "ok" } else { "refused" },
        );
        if let Err(refusal) = &result {
            tracing::info!(hub = %caller.hub, connection = %caller.connection, method = %target, %refusal, "client invocation refused");
        }
        result
    }

    async fn run(
        &self,
        cfg: &Config,
        caller: &Caller,
        target: &str,
        arguments: &[Value],
    ) -> Result<Value, Refusal> {
        let method = cfg
            .events_of(&caller.hub)
            .and_then(|e: &HubEvents| e.method(target))
            .ok_or_else(|| refuse(format!("method `{target}` is not configured")))?;
        self.check_rate(caller, method)?;
        match &method.action {
            EventAction::Ack => self.ack(caller, method, arguments).await,
            EventAction::JoinGroup(pattern) => {
                let group = group_argument(method, pattern, caller, arguments)?;
                self.rest
                    .add_connection_to_group(&caller.hub, &group, &caller.connection)
                    .await
                    .map_err(|e| failed(caller, method, e))?;
                Ok(json!({ "group": group, "joined": true }))
            }
            EventAction::LeaveGroup(pattern) => {
                let group = group_argument(method, pattern, caller, arguments)?;
                self.rest
                    .remove_connection_from_group(&caller.hub, &group, &caller.connection)
                    .await
                    .map_err(|e| failed(caller, method, e))?;
                Ok(json!({ "group": group, "left": true }))
            }
            EventAction::Relay { template, to } => {
                let id = uuid::Uuid::now_v7().to_string();
                let vars = json!({
                    "args": arguments,
                    "user": caller.user,
                    "connection": caller.connection,
                    "hub": caller.hub,
                    "now": crate::daemon::now_rfc3339(),
                    "id": id,
                });
                let hub = cfg
                    .hub_named(&caller.hub)
                    .map_or(caller.hub.clone(), |h| h.name.clone());
                let message =
                    render_message(&hub, template, to.as_deref(), &vars).map_err(|e| {
                        refuse(format!(
                            "method `{}`: the arguments do not fit template `{}`: {e}",
                            method.name, template.name
                        ))
                    })?;
                crate::signalr::rest::check_sendable(&message)
                    .map_err(|e| refuse(format!("method `{}`: {e}", method.name)))?;
                let source = format!("event:{}.{}", events_hub(cfg, caller), method.name);
                let for_acks = cfg.acks_in(&message.hub);
                self.relay(message, id, source, for_acks).await
            }
        }
    }

    /// Hand a relayed message on: into the outbox, or (custom-handler mode) straight to the
    /// service.
    async fn relay(
        &self,
        message: Message,
        id: String,
        source: String,
        for_acks: bool,
    ) -> Result<Value, Refusal> {
        let Some(outbox) = &self.outbox else {
            return match self.rest.send_with_id(&message, Some(&id)).await {
                Ok(()) => Ok(json!({ "id": id })),
                Err(error) => {
                    tracing::warn!(%error, %source, "relayed message not sent");
                    Err(refuse(
                        "the SignalR service did not take the message; retry later",
                    ))
                }
            };
        };
        let accept = Accept {
            messages: vec![NewMessage {
                id: id.clone(),
                message,
                source,
                retain: None,
                for_acks,
            }],
            ..Accept::default()
        };
        match outbox.accept(accept).await {
            Ok(Accepted::Stored(_)) => Ok(json!({ "id": id })),
            Ok(_) => Err(refuse("unexpected store answer")),
            Err(error) => {
                tracing::error!(%error, "relayed message could not be stored");
                Err(refuse(
                    "herald could not store the message; nothing was sent, retry later",
                ))
            }
        }
    }

    fn check_rate(&self, caller: &Caller, method: &EventMethod) -> Result<(), Refusal> {
        let Some(limit) = &method.rate_limit else {
            return Ok(());
        };
        let key = format!("event:{}.{}", caller.hub.to_ascii_lowercase(), method.name);
        match self.limiters.check(&key, limit) {
            Ok(()) => Ok(()),
            Err(wait) => {
                metrics::counter!(m::RATE_LIMITED, "route" => key).increment(1);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(refuse(format!(
                    "method `{}` is over its rate limit; retry in {secs} s",
                    method.name
                )))
            }
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        method: &EventMethod,
        arguments: &[Value],
    ) -> Result<Value, Refusal> {
        let id = match arguments.first() {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 255 => id.clone(),
            _ => {
                return Err(refuse(format!(
                    "method `{}` takes the message id (a string) as its argument",
                    method.name
                )));
            }
        };
        let outcome = self
            .store
            .ack(NewAck {
                id: id.clone(),
                connection: caller.connection.clone(),
                user: caller.user.clone(),
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "acknowledgement could not be stored");
                refuse("herald could not record the acknowledgement; retry later")
            })?;
        match outcome {
            AckOutcome::Recorded { hub, source, first } => {
                if !hub.eq_ignore_ascii_case(&caller.hub) {
                    return Err(refuse(format!("message `{id}` is not known")));
                }
                if first {
                    metrics::counter!(m::ACKS, "route" => source).increment(1);
                }
                Ok(json!({ "id": id, "acknowledged": true }))
            }
            AckOutcome::UnknownMessage => Err(refuse(format!("message `{id}` is not known"))),
        }
    }
}

/// The hub name as the `events:` section spells it (for sources and logs).
fn events_hub(cfg: &Config, caller: &Caller) -> String {
    cfg.events_of(&caller.hub)
        .map_or(caller.hub.clone(), |e| e.hub.clone())
}

/// The group name in the first argument, when the pattern allows it for this caller.
fn group_argument(
    method: &EventMethod,
    pattern: &GroupPattern,
    caller: &Caller,
    arguments: &[Value],
) -> Result<String, Refusal> {
    let Some(Value::String(group)) = arguments.first() else {
        return Err(refuse(format!(
            "method `{}` takes the group name (a string) as its argument",
            method.name
        )));
    };
    if crate::signalr::names::group(group).is_err()
        || !pattern.matches(group, caller.user.as_deref())
    {
        return Err(refuse(format!("group `{group}` is not allowed")));
    }
    Ok(group.clone())
}

fn failed(caller: &Caller, method: &EventMethod, e: crate::signalr::rest::RestError) -> Refusal {
    tracing::warn!(error = %e, hub = %caller.hub, method = %method.name, "client method failed at the service");
    refuse(format!(
        "method `{}` could not be completed by the SignalR service; retry later",
        method.name
    ))
}
