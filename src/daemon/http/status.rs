//! Status routes: match the request in the snapshot's endpoint table, check the caller, parse
//! the JSON body, render the route's template and send the message through the REST client;
//! answer `202 {"id"}`.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, Route, RouteAuth, render_message};
use crate::daemon::auth;
use crate::daemon::delivery::{DeliveryError, deliver};

/// Headers never exposed to templates: they carry credentials.
const HIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "cookie",
    "proxy-authorization",
];

/// Handle one request for route `index` of `cfg`.
pub async fn handle(
    state: &AppState,
    cfg: &Config,
    index: usize,
    params: BTreeMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(route) = cfg.routes.get(index) else {
        return Err(ApiError::not_found("route not found"));
    };
    check_auth(route, headers)?;
    let fields = read_body(body, headers, cfg.http.body_limit).await?;
    let vars = variables(fields, &params, uri, headers);
    let message =
        render_message(&route.hub, &route.template, route.to.as_ref(), &vars).map_err(|e| {
            let at = if e.at.is_empty() {
                String::new()
            } else {
                format!(" at {}", e.at)
            };
            match &e.missing {
                Some(name) => ApiError::bad_request(format!(
                    "missing field `{name}` for template `{}`{at}",
                    route.template.name
                )),
                None => {
                    ApiError::bad_request(format!("template `{}`{at}: {e}", route.template.name))
                }
            }
        })?;
    let id = uuid::Uuid::now_v7().to_string();
    match deliver(&state.rest, &message, "route", &route.name).await {
        Ok(()) => {
            tracing::info!(route = %route.name, hub = %message.hub, target = %message.target,
                to = message.to.kind(), id = %id, "message accepted");
            Ok((StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response())
        }
        Err(DeliveryError::TooLarge(detail)) => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "payload_too_large",
            detail,
            allow: Vec::new(),
            retry_after: None,
        }),
        Err(DeliveryError::Unavailable(detail)) => Err(ApiError::unavailable(detail)),
    }
}

fn check_auth(route: &Route, headers: &HeaderMap) -> Result<(), ApiError> {
    match &route.auth {
        None => Ok(()),
        Some(RouteAuth::ApiKey(key)) => {
            let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
            match given {
                Some(g) if auth::keys_equal(g, key.expose()) => Ok(()),
                Some(_) => Err(ApiError::unauthorized(
                    "the X-API-Key header does not match",
                )),
                None => Err(ApiError::unauthorized(
                    "send the route's key in the X-API-Key header",
                )),
            }
        }
        Some(RouteAuth::Bearer(rule)) => {
            let token = auth::bearer(headers).ok_or_else(|| {
                ApiError::unauthorized("send a bearer token in the Authorization header")
            })?;
            auth::verify_jwt(token, rule)
                .map(|_| ())
                .map_err(ApiError::unauthorized)
        }
    }
}

/// Read at most `limit` bytes and parse a JSON object (an empty body is `{}`).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            json_kind(&other)
        ))),
        Err(e) => {
            let declared_json = content_type.is_empty()
                || content_type.starts_with("application/json")
                || content_type.contains("+json")
                || content_type.starts_with("text/plain");
            if declared_json {
                Err(ApiError::bad_request(format!(
                    "the body is not valid JSON: {e}"
                )))
            } else {
                Err(ApiError::unsupported_media_type(&content_type))
            }
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Template variables: the body's fields, then `params`, `query`, `headers` and `now` (these
/// names win over body fields of the same name).
fn variables(
    mut fields: Map<String, Value>,
    params: &BTreeMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Value {
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let mut header_map = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HIDDEN_HEADERS.contains(&name) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            header_map.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    fields.insert("params".into(), json!(params));
    fields.insert("query".into(), json!(query));
    fields.insert("headers".into(), Value::Object(header_map));
    fields.insert("now".into(), Value::String(crate::daemon::now_rfc3339()));
    Value::Object(fields)
}
