//! `POST /client/negotiate?hub=H[&negotiateVersion=N][&useStatefulReconnect=true]`: checks
//! the client token and creates a connection → ServiceHandle internals.
//!
//! Version 0 answers `connectionId` only (clients use it as `id`); version ≥ 1 also a
//! secret `connectionToken` (the transports' `id`). Stateful reconnect is answered
//! (`"useStatefulReconnect": true`) only when asked with `useStatefulReconnect=true`, at
//! negotiate version ≥ 1 (the resume presents the secret token), and when the service's
//! replay buffer is not zero; the JS client refuses a server that returns it unasked. The
//! connection then keeps a replay buffer; it applies to WebSockets only (the other
//! transports ignore it, as in ASP.NET Core).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::connection::{Connection, new_id, supervise};
use super::upstream::{self, ClientInfo};
use super::{Shared, auth, hub_key};

/// The highest negotiate version the service speaks.
const NEGOTIATE_VERSION: u64 = 1;

pub(crate) async fn negotiate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let query = auth::Query::of(&uri);
    let param = |name: &str| query.get(name);
    let Some(hub) = param("hub").filter(|h| !h.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "the `hub` query parameter is required",
        )
            .into_response();
    };
    let version = match param("negotiateVersion") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => v.min(NEGOTIATE_VERSION),
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "`negotiateVersion` must be an integer",
                )
                    .into_response();
            }
        },
    };
    let claims = match auth::client(&shared, &headers, &uri, hub, param("access_token")) {
        Ok(claims) => claims,
        Err(error) => return (StatusCode::UNAUTHORIZED, error.to_string()).into_response(),
    };
    let stateful = version >= 1
        && shared.options.stateful_reconnect_buffer > 0
        && param("useStatefulReconnect").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let connection_id = new_id();
    let token = if version >= 1 {
        new_id()
    } else {
        connection_id.clone()
    };
    let connection = match open(
        &shared,
        connection_id.clone(),
        token.clone(),
        hub,
        claims.user_id(),
        stateful,
        client_info(&shared, &headers, &uri, param("access_token")),
    ) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    let mut body = json!({
        "negotiateVersion": version,
        "connectionId": connection.id,
        "availableTransports": [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ],
    });
    if version >= 1 {
        body["connectionToken"] = json!(token);
    }
    if stateful {
        body["useStatefulReconnect"] = json!(true);
    }
    axum::Json(body).into_response()
}

/// A refused client-endpoint request: status and a short plain-text reason.
#[derive(Debug)]
pub(crate) struct ClientError {
    status: StatusCode,
    message: std::borrow::Cow<'static, str>,
}

impl ClientError {
    pub(crate) fn new(
        status: StatusCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Self {
        ClientError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

/// What the upstream headers will say about the client (nothing without an upstream).
pub(crate) fn client_info(
    shared: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    query_token: Option<&str>,
) -> ClientInfo {
    if shared.upstream.is_none() {
        return ClientInfo::default();
    }
    let token = auth::bearer(headers).or(query_token.filter(|t| !t.is_empty()));
    ClientInfo {
        claims: token.map(upstream::claims_of).unwrap_or_default(),
        query: upstream::client_query(uri.query()),
    }
}

/// Create and register a connection (with a replay buffer if `stateful`) and start its
/// supervisor; 503 when the service is full.
pub(crate) fn open(
    shared: &Arc<Shared>,
    id: String,
    token: String,
    hub: &str,
    user: Option<&str>,
    stateful: bool,
    info: ClientInfo,
) -> Result<Arc<Connection>, ClientError> {
    let connection = Connection::with_replay(
        id,
        token,
        hub_key(hub),
        user.map(str::to_string),
        shared.options.outbound_queue,
        stateful.then_some(shared.options.stateful_reconnect_buffer),
    );
    connection.set_client_info(info);
    if let Err(error) = shared.registry.insert(connection.clone()) {
        tracing::warn!(%error, "refusing a connection");
        return Err(ClientError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        ));
    }
    shared
        .tracker
        .spawn(supervise(connection.clone(), shared.clone()));
    Ok(connection)
}
