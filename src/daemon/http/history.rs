//! Reading what herald kept: `GET` on a hub's history path (the messages after a given id,
//! for a client that reconnects; the same caller check as negotiate) and `GET` on a retaining
//! route's path (its latest status). Clustered, both answer from Redis (`"source":
//! "cluster"`), or from this node's store while Redis is away (`"source": "local"`).

use axum::Json;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::negotiate::user_id;
use crate::config::{Hub, Route};
use crate::store::RetainKey;

/// Most messages one history answer carries, and the default.
pub const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

#[derive(serde::Deserialize)]
struct HistoryQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/{hub}/history?after=<id>&limit=<n>` → `{"messages": [...]}`, oldest first:
/// broadcasts, plus messages sent to the caller's own user id. An `after` that is not (or no
/// longer) in the history answers every kept message with `"reset": true`, so the client
/// knows it may have missed some.
pub async fn history(
    state: &AppState,
    hub: &Hub,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_id(hub, headers)?;
    let query: HistoryQuery = axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not `{text}`"
                )));
            }
        },
    };
    let after = query.after.filter(|a| !a.is_empty());
    // Clustered: from Redis (the same on every node), or this node's store while it is away.
    let shared = state.outbox.shared();
    let (found, source) = shared
        .history(&hub.name, after.clone(), user.clone(), limit)
        .await
        .map_err(unavailable)?;
    let (messages, reset) = match found {
        Some(messages) => (messages, false),
        None => {
            let (all, _) = shared
                .history(&hub.name, None, user, limit)
                .await
                .map_err(unavailable)?;
            (all.unwrap_or_default(), true)
        }
    };
    let mut body = json!({ "messages": messages });
    if reset {
        body["reset"] = json!(true);
    }
    if let Some(source) = source {
        body["source"] = json!(source);
    }
    Ok(Json(body).into_response())
}

/// `GET` on a retaining route's path → the latest message sent through it at this path:
/// `{"id", "time", "target", "arguments"}`; 404 before the first.
pub async fn retained(state: &AppState, route: &Route, path: &str) -> Result<Response, ApiError> {
    let key = RetainKey {
        source: format!("route:{}", route.name),
        key: path.to_string(),
    };
    let (found, source) = state
        .outbox
        .shared()
        .retained(&route.hub, key)
        .await
        .map_err(unavailable)?;
    match found {
        Some(r) => {
            let mut body = r.to_json();
            if let Some(source) = source {
                body["source"] = json!(source);
            }
            Ok(Json(body).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "no status has been sent to {path} yet"
        ))),
    }
}

/// A failed state-database read: logged with its cause, answered 503 without it.
pub(super) fn unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "state database read failed");
    ApiError::unavailable("herald's state database is not answering")
}
