//! Negotiate: `GET`/`POST` on a hub's negotiate path answers `{"url", "accessToken"}` exactly
//! as the Azure Functions `signalRConnectionInfo` binding does, so official clients follow it
//! to the service (with several endpoints, a healthy primary, else a healthy secondary). The
//! user id comes from a trusted header or a verified bearer token.

use axum::Json;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::config::{Hub, UserIdSource};
use crate::daemon::auth;
use crate::signalr::{ServiceEndpoint, token};

/// Connection info for `hub`, for the caller described by `headers`.
pub async fn negotiate(
    state: &AppState,
    hub: &Hub,
    headers: &HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(hub, headers)?;
    let info = connection_info(state.rest.negotiate_endpoint(), hub, user.as_deref())?;
    metrics::counter!("herald_negotiate_total", "hub" => hub.name.clone()).increment(1);
    tracing::debug!(hub = %hub.name, user = user.as_deref().unwrap_or(""), "negotiated");
    Ok(Json(info))
}

/// `{"url", "accessToken"}` for `hub` on `endpoint`, with `user` in the token (the answer of
/// the `signalRConnectionInfo` binding). Shared with the Functions handler.
pub(crate) fn connection_info(
    endpoint: &ServiceEndpoint,
    hub: &Hub,
    user: Option<&str>,
) -> Result<Value, ApiError> {
    let access_token = token::mint_client(
        endpoint.access_key(),
        &endpoint.client_audience(&hub.name),
        user,
        hub.token_ttl,
    )
    .map_err(|e| {
        tracing::error!(hub = %hub.name, error = %e, "could not mint a client token");
        ApiError::unavailable("could not issue a token")
    })?;
    Ok(json!({
        "url": endpoint.client_url(&hub.name),
        "accessToken": access_token,
    }))
}

/// The user id per the hub's rule; 401 when a presented token is bad or a required id is
/// missing.
pub(crate) fn user_id(hub: &Hub, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(rule) = &hub.user_id else {
        return Ok(None);
    };
    let user = match &rule.source {
        UserIdSource::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        UserIdSource::Bearer(jwt) => match auth::bearer(headers) {
            Some(t) => auth::verify_jwt(t, jwt).map_err(ApiError::from)?,
            None => None,
        },
    };
    if user.is_none() && rule.required {
        let what = match &rule.source {
            UserIdSource::Header(name) => format!("header `{name}`"),
            UserIdSource::Bearer(_) => "a bearer token carrying the user claim".to_string(),
        };
        return Err(ApiError::unauthorized(format!(
            "this hub needs a user id: send {what}"
        )));
    }
    Ok(user)
}
