//! `GET /api/messages/{id}`: who acknowledged a message herald sent, with the same caller
//! check as the negotiate endpoint of the message's hub.

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Config;
use crate::daemon::http::AppState;
use crate::daemon::http::error::ApiError;
use crate::daemon::http::negotiate::user_id;

/// The path prefix of the acknowledgement endpoint.
pub const PREFIX: &str = "/api/messages/";

/// `{"id", "hub", "source", "acks": [{"user", "connection", "time"}]}`; 404 for an unknown id.
pub async fn message(
    state: &AppState,
    cfg: &Config,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let found = state.events.store.acks(id).await.map_err(|error| {
        tracing::error!(%error, "state database read failed");
        ApiError::unavailable("herald's state database is not answering")
    })?;
    let not_found = || ApiError::not_found(format!("no message `{id}` is known"));
    let Some(found) = found else {
        return Err(not_found());
    };
    // A hub removed from the config since: nobody may ask.
    let hub = cfg.hub_named(&found.hub).ok_or_else(not_found)?;
    user_id(hub, headers)?;
    Ok(Json(json!({
        "id": found.id,
        "hub": hub.name,
        "source": found.source,
        "acks": found.acks,
    }))
    .into_response())
}
