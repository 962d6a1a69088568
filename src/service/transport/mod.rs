//! The client transport endpoint `/client/?hub=H&id=…`: one dispatcher for WebSockets
//! (`ws.rs`), Server-Sent Events (`sse.rs`) and long polling (`long_polling.rs`), plus the
//! POST (send) and DELETE (end long polling) requests → one Connection reader/writer shape.
//!
//! Every request carries the client token (header or `access_token`), checked as at
//! negotiate. A WebSocket without `id` is a negotiate-less connection; SSE, long polling,
//! POST and DELETE need `id` (400), an unknown `id` is 404, and a token for another user
//! than the one that negotiated is 403. A WebSocket with the `id` of a stateful connection
//! (negotiated with `useStatefulReconnect=true`) that already had one resumes it.

mod long_polling;
mod read_gate;
mod sse;
mod ws;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::connection::{AttachError, Connection, TransportKind, new_id};
use super::negotiate::{self, ClientError};
use super::{Shared, auth, hub_key};
use crate::signalr::token::Claims;

/// `/client/` for every method.
pub(crate) async fn client(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Body,
) -> Response {
    let query = auth::Query::of(&uri);
    let param = |name: &str| query.get(name);
    let Some(hub) = param("hub") else {
        return (
            StatusCode::BAD_REQUEST,
            "the `hub` query parameter is required",
        )
            .into_response();
    };
    let claims = match auth::client(&shared, &headers, &uri, hub, param("access_token")) {
        Ok(claims) => claims,
        Err(error) => return (StatusCode::UNAUTHORIZED, error.to_string()).into_response(),
    };
    let id = param("id");

    if method == Method::GET {
        match upgrade {
            Ok(upgrade) => {
                let info = negotiate::client_info(&shared, &headers, &uri, param("access_token"));
                return websocket(&shared, upgrade, hub, id, &claims, info);
            }
            Err(rejection) if is_upgrade_request(&headers) => return rejection.into_response(),
            Err(_) => {}
        }
    }
    let Some(id) = id else {
        return (
            StatusCode::BAD_REQUEST,
            "the `id` query parameter is required",
        )
            .into_response();
    };
    let connection = match lookup(&shared, id, hub, &claims) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    match method {
        Method::GET if accepts_event_stream(&headers) => {
            if let Err(error) = connection.attach(TransportKind::ServerSentEvents).map(drop) {
                return attach_error(error);
            }
            sse::open(connection).await
        }
        Method::GET => {
            if let Err(error) = connection.attach(TransportKind::LongPolling).map(drop) {
                return attach_error(error);
            }
            long_polling::poll(&shared, connection).await
        }
        Method::POST => send(&shared, connection, body).await,
        Method::DELETE => {
            if connection.transport() != Some(TransportKind::LongPolling) {
                return (
                    StatusCode::BAD_REQUEST,
                    "Cannot terminate this connection using the DELETE endpoint.",
                )
                    .into_response();
            }
            connection.close(None);
            StatusCode::ACCEPTED.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn websocket(
    shared: &Arc<Shared>,
    upgrade: WebSocketUpgrade,
    hub: &str,
    id: Option<&str>,
    claims: &Claims,
    info: super::upstream::ClientInfo,
) -> Response {
    let connection = match id {
        Some(id) => match lookup(shared, id, hub, claims) {
            Ok(connection) => connection,
            Err(error) => return error.into_response(),
        },
        None => {
            // Negotiate-less: what pysignalr and signalrcore do after an Azure redirect.
            let id = new_id();
            match negotiate::open(shared, id.clone(), id, hub, claims.user_id(), false, info) {
                Ok(connection) => connection,
                Err(error) => return error.into_response(),
            }
        }
    };
    // A stateful connection's second WebSocket resumes it (see `Connection::attach`).
    let attachment = match connection.attach(TransportKind::WebSockets) {
        Ok(attachment) => attachment,
        Err(error) => return attach_error(error),
    };
    ws::upgrade(shared.clone(), upgrade, connection, attachment)
}

/// The live connection `id` of `hub`, owned by the token's user.
fn lookup(
    shared: &Shared,
    id: &str,
    hub: &str,
    claims: &Claims,
) -> Result<Arc<Connection>, ClientError> {
    let connection = shared
        .registry
        .by_token(id)
        .filter(|c| c.hub == hub_key(hub))
        .ok_or_else(|| ClientError::new(StatusCode::NOT_FOUND, "No Connection with that ID"))?;
    if connection.user.as_deref() != claims.user_id() {
        return Err(ClientError::new(
            StatusCode::FORBIDDEN,
            "the token's user does not own this connection",
        ));
    }
    Ok(connection)
}

/// POST: hub messages from an SSE or long-polling client.
async fn send(shared: &Arc<Shared>, connection: Arc<Connection>, body: Body) -> Response {
    if connection.transport() == Some(TransportKind::WebSockets) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        )
            .into_response();
    }
    if connection.is_closed() {
        return (StatusCode::NOT_FOUND, "No Connection with that ID").into_response();
    }
    let _guard = match connection.begin_post() {
        Ok(guard) => guard,
        Err(error) => return attach_error(error),
    };
    let bytes = match axum::body::to_bytes(body, shared.options.max_message_size).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the message is too large (or the body could not be read)",
            )
                .into_response();
        }
    };
    connection.receive(&bytes, shared);
    StatusCode::OK.into_response()
}

fn attach_error(error: AttachError) -> Response {
    let status = match error {
        AttachError::Busy => StatusCode::CONFLICT,
        AttachError::OtherTransport => StatusCode::BAD_REQUEST,
        AttachError::Closed => StatusCode::NOT_FOUND,
    };
    (status, error.to_string()).into_response()
}

fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}
