//! The upstream endpoint of `herald run` (`/runtime/webhooks/signalr`, the Functions
//! trigger's path): the SignalR service (Azure, or the embedded service, which `herald run`
//! points here itself) POSTs each client's `connected`/`disconnected` event and invocation
//! with `X-ASRS-*` headers. The signature is verified against the service's access key
//! before the body is read (401 otherwise); an invocation is answered with the framed
//! Completion the service hands to the client (facts §5).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Caller;
use crate::config::Config;
use crate::daemon::http::AppState;
use crate::daemon::http::error::ApiError;
use crate::signalr::protocol::{CompletionResult, Headers, HubMessage, Protocol, json, msgpack};
use crate::signalr::upstream as wire;

/// Content type of MessagePack invocations (the client's protocol).
pub const MSGPACK: &str = "application/x-msgpack";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// One upstream request, already authenticated.
#[derive(Debug)]
struct Upstream {
    caller: Caller,
    category: String,
    event: String,
}

fn parse(headers: &HeaderMap, keys: &[&str]) -> Result<Upstream, ApiError> {
    let connection = header(headers, wire::HEADER_CONNECTION_ID)
        .ok_or_else(|| ApiError::bad_request("missing X-ASRS-Connection-Id"))?;
    let signature = header(headers, wire::HEADER_SIGNATURE)
        .ok_or_else(|| ApiError::unauthorized("missing X-ASRS-Signature"))?;
    if !wire::verify(signature, keys, connection) {
        return Err(ApiError::unauthorized(
            "X-ASRS-Signature does not verify with the service's access key",
        ));
    }
    let need = |name: &str, what: &str| {
        header(headers, name)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("missing {what}")))
    };
    Ok(Upstream {
        caller: Caller {
            hub: need(wire::HEADER_HUB, "X-ASRS-Hub")?,
            connection: connection.to_string(),
            user: header(headers, wire::HEADER_USER_ID).map(str::to_string),
        },
        category: need(wire::HEADER_CATEGORY, "X-ASRS-Category")?,
        event: need(wire::HEADER_EVENT, "X-ASRS-Event")?,
    })
}

/// Handle one upstream POST.
pub async fn handle(
    state: &AppState,
    cfg: &Config,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = state.rest.endpoint().access_key().to_string();
    let up = parse(headers, &[key.as_str()])?;
    let limit = cfg.http.body_limit;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    match (up.category.as_str(), up.event.as_str()) {
        (wire::CATEGORY_CONNECTIONS, wire::EVENT_CONNECTED) => {
            state.events.connected(cfg, &up.caller).await;
            Ok(StatusCode::OK.into_response())
        }
        (wire::CATEGORY_CONNECTIONS, wire::EVENT_DISCONNECTED) => {
            state.events.disconnected(&up.caller);
            Ok(StatusCode::OK.into_response())
        }
        (wire::CATEGORY_CONNECTIONS, other) => Err(ApiError::bad_request(format!(
            "unknown connection event `{other}`"
        ))),
        (wire::CATEGORY_MESSAGES, _) => {
            let protocol = protocol_of(headers);
            let (invocation_id, target, arguments) = decode_invocation(protocol, &bytes)?;
            let result = state
                .events
                .invoke(cfg, &up.caller, &target, &arguments)
                .await;
            Ok(completion_response(protocol, invocation_id, result))
        }
        (other, _) => Err(ApiError::bad_request(format!("unknown category `{other}`"))),
    }
}

/// MessagePack when the service says the body is, else JSON.
pub fn protocol_of(headers: &HeaderMap) -> Protocol {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with(MSGPACK) || ct.contains("msgpack") || ct.contains("messagepack") {
        Protocol::MessagePack
    } else {
        Protocol::Json
    }
}

/// The invocation in an upstream body: the client's Invocation as sent, without its framing
/// (a trailing `0x1E` or a VarInt prefix is tolerated).
pub fn decode_invocation(
    protocol: Protocol,
    bytes: &[u8],
) -> Result<(Option<String>, String, Vec<Value>), ApiError> {
    let decoded = match protocol {
        Protocol::Json => {
            let record = bytes
                .strip_suffix(&[crate::signalr::protocol::RECORD_SEPARATOR])
                .unwrap_or(bytes);
            json::decode_record(record)
        }
        Protocol::MessagePack => msgpack::decode_body(bytes).or_else(|first| {
            msgpack::decode_frame(bytes)
                .map(|mut all| (all.len() == 1).then(|| all.remove(0)))
                .map_err(|_| first)
        }),
    };
    match decoded {
        Ok(Some(HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            ..
        })) => Ok((invocation_id, target, arguments)),
        Ok(_) => Err(ApiError::bad_request(
            "the body is not an Invocation message",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body is not a valid {} Invocation: {e}",
            protocol.name()
        ))),
    }
}

/// The answer to an invocation: without an invocation id the service ignores it (200,
/// empty); with one, the framed Completion the client receives.
pub fn completion_response(
    protocol: Protocol,
    invocation_id: Option<String>,
    result: Result<Value, super::Refusal>,
) -> Response {
    let Some(invocation_id) = invocation_id else {
        return StatusCode::OK.into_response();
    };
    let bytes = completion_bytes(protocol, invocation_id, result);
    let content_type = match protocol {
        Protocol::Json => "application/json",
        Protocol::MessagePack => MSGPACK,
    };
    let mut response = (StatusCode::OK, Bytes::from(bytes)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A framed Completion (`{"type":3,"invocationId":..,"result":..}` + `0x1E`, or MessagePack).
pub fn completion_bytes(
    protocol: Protocol,
    invocation_id: String,
    result: Result<Value, super::Refusal>,
) -> Vec<u8> {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id,
        result: match result {
            Ok(v) => CompletionResult::Value(v),
            Err(refusal) => CompletionResult::Error(refusal.0),
        },
    };
    protocol.encode(&message).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a Completion");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_framed_for_the_client() {
        let ok = completion_bytes(Protocol::Json, "7".into(), Ok(serde_json::json!(1)));
        assert_eq!(ok, b"{\"type\":3,\"invocationId\":\"7\",\"result\":1}\x1e");
        let refused = completion_bytes(
            Protocol::Json,
            "8".into(),
            Err(super::super::Refusal("group `x` is not allowed".into())),
        );
        let text = String::from_utf8(refused).unwrap();
        assert!(
            text.contains("\"error\":\"group `x` is not allowed\""),
            "{text}"
        );
        let mp = completion_bytes(
            Protocol::MessagePack,
            "9".into(),
            Ok(serde_json::json!("a")),
        );
        let back = msgpack::decode_frame(&mp).unwrap();
        assert!(
            matches!(&back[0], HubMessage::Completion { invocation_id, .. } if invocation_id == "9")
        );
    }

    #[test]
    fn invocations_decode_with_or_without_framing() {
        let body = br#"{"type":1,"invocationId":"1","target":"ack","arguments":["m1"]}"#;
        let (id, target, args) = decode_invocation(Protocol::Json, body).unwrap();
        assert_eq!((id.as_deref(), target.as_str()), (Some("1"), "ack"));
        assert_eq!(args, vec![serde_json::json!("m1")]);
        let mut framed = body.to_vec();
        framed.push(0x1e);
        assert!(decode_invocation(Protocol::Json, &framed).is_ok());
        let mp = msgpack::encode(&HubMessage::Invocation {
            headers: Headers::new(),
            invocation_id: Some("2".into()),
            target: "join".into(),
            arguments: vec![serde_json::json!("orders-1")],
            stream_ids: vec![],
        })
        .unwrap();
        // With the VarInt prefix, and without (as the service forwards it).
        assert!(decode_invocation(Protocol::MessagePack, &mp).is_ok());
        let (_, target, _) = decode_invocation(Protocol::MessagePack, &mp[1..]).unwrap();
        assert_eq!(target, "join");
        assert!(decode_invocation(Protocol::Json, b"{\"type\":6}").is_err());
    }
}
