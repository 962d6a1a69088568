//! Status routes: match the request in the snapshot's endpoint table, check the caller, parse
//! the JSON body, render the route's template and send the message through the REST client;
//! answer `202 {"id"}`. `render_route` is the one "auth + variables + render" flow, also
//! called by the Azure Functions custom handler.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, Route, RouteAuth, render_message};
use crate::daemon::auth;
use crate::message::Message;
use crate::store::{Accept, Accepted, Idempotency, NewMessage, RetainKey};

/// Headers never exposed to templates: they carry credentials.
const HIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "cookie",
    "proxy-authorization",
];

/// What a status route reads from a request, however it arrived: the daemon's HTTP listener
/// or an Azure Functions custom-handler invocation (`daemon::functions::handler`).
#[derive(Debug)]
pub struct RouteRequest<'a> {
    /// Path parameters (`{param}` segments), decoded.
    pub params: BTreeMap<String, String>,
    /// Query parameters; repeated keys as the transport gives them.
    pub query: HashMap<String, String>,
    /// Request headers (credentials are checked here and hidden from templates).
    pub headers: &'a HeaderMap,
    /// The message id the caller will be given; templates see it as `id`.
    pub id: String,
}

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
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let request = RouteRequest {
        params,
        query,
        headers,
        id: uuid::Uuid::now_v7().to_string(),
    };
    let limit = cfg.http.body_limit;
    let body = async move {
        axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::payload_too_large(limit))
    };
    let message = render_route(route, &request, body).await?;
    let idempotency_key = idempotency_key(headers)?;
    accept_route(
        state,
        cfg,
        route,
        message,
        request.id,
        uri.path(),
        idempotency_key,
    )
    .await
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Store a route's rendered `message` durably and answer `202 {"id"}`: from here on it is
/// delivered even if herald dies (the outbox worker sends it). A repeated `Idempotency-Key`
/// within the window gets the first answer and stores nothing.
async fn accept_route(
    state: &AppState,
    cfg: &Config,
    route: &Route,
    message: Message,
    id: String,
    path: &str,
    idempotency_key: Option<String>,
) -> Result<Response, ApiError> {
    crate::signalr::rest::check_sendable(&message)
        .map_err(|e| ApiError::from(crate::daemon::delivery::DeliveryError::from_rest(e)))?;
    let source = format!("route:{}", route.name);
    let answer = json!({ "id": id });
    let accept = Accept {
        idempotency: idempotency_key.map(|key| Idempotency {
            scope: source.clone(),
            key,
            answer: answer.to_string(),
            window: cfg.state.idempotency_window,
        }),
        messages: vec![NewMessage {
            id: id.clone(),
            retain: route.retain.then(|| RetainKey {
                source: source.clone(),
                key: path.to_string(),
            }),
            for_acks: cfg.acks_in(&message.hub),
            source,
            message,
        }],
        fire: None,
    };
    let hub = accept.messages[0].message.hub.clone();
    match state.outbox.accept(accept).await {
        Ok(Accepted::Stored(_)) => {
            tracing::info!(route = %route.name, hub = %hub, id = %id, "message accepted");
            Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
        }
        Ok(Accepted::Repeat(first)) => {
            tracing::info!(route = %route.name, hub = %hub, "repeated Idempotency-Key: answered as the first time, nothing stored");
            let body: Value = serde_json::from_str(&first).unwrap_or(Value::Null);
            let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
            response.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Ok(Accepted::FireSeen) => Err(ApiError::unavailable("unexpected store answer")),
        Err(e) => {
            tracing::error!(route = %route.name, error = %e, "message could not be stored");
            Err(ApiError::unavailable(match state.outbox.store().broken() {
                Some(_) => {
                    "herald could not store the message: a sync of its state database to disk \
                     failed, and it keeps no more writes until it is restarted"
                }
                None => "herald could not store the message; nothing was accepted, retry later",
            }))
        }
    }
}

/// The one flow from a request to a route's `Message`: check the caller (401), then read the
/// body (only once the caller is known, so an unauthenticated caller learns nothing about
/// limits), parse it as a JSON object (400/415), build the template variables and render
/// (400 naming a missing field). Shared by the HTTP listener and the Functions handler.
pub async fn render_route(
    route: &Route,
    request: &RouteRequest<'_>,
    body: impl Future<Output = Result<Bytes, ApiError>>,
) -> Result<Message, ApiError> {
    check_auth(route, request.headers)?;
    let bytes = body.await?;
    let fields = parse_body(&bytes, request.headers)?;
    let vars = variables(fields, request, |name| route.uses(name));
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
            None => ApiError::bad_request(format!("template `{}`{at}: {e}", route.template.name)),
        }
    })
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
                .map_err(ApiError::from)
        }
    }
}

/// Parse the body as a JSON object (an empty body is `{}`).
fn parse_body(bytes: &[u8], headers: &HeaderMap) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    match serde_json::from_slice::<Value>(bytes) {
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

/// Template variables: the body's fields, then `params`, `query`, `headers`, `now` and `id` (these
/// names win over body fields of the same name). Each of those five is built only when
/// `used` says the templates read it.
fn variables(
    mut fields: Map<String, Value>,
    request: &RouteRequest<'_>,
    used: impl Fn(&str) -> bool,
) -> Value {
    if used("params") {
        fields.insert("params".into(), json!(request.params));
    }
    if used("query") {
        fields.insert("query".into(), json!(request.query));
    }
    if used("headers") {
        let mut headers = Map::new();
        for (name, value) in request.headers {
            let name = name.as_str();
            if HIDDEN_HEADERS.contains(&name) {
                continue;
            }
            if let Ok(v) = value.to_str() {
                headers.insert(name.to_string(), Value::String(v.to_string()));
            }
        }
        fields.insert("headers".into(), Value::Object(headers));
    }
    if used("now") {
        fields.insert("now".into(), Value::String(crate::daemon::now_rfc3339()));
    }
    if used("id") {
        fields.insert("id".into(), Value::String(request.id.clone()));
    }
    Value::Object(fields)
}
