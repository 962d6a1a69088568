//! The custom handler: the Functions host's invocation envelopes (`POST /{function}` with
//! `{Data, Metadata}`, answered with `{Outputs, Logs, ReturnValue}`) turned into the same code
//! the daemon runs: `status::render_route` for routes, `schedule::render_schedule` for timers,
//! the hub's user-id rule for negotiate. `GET /` answers the host's readiness probe.
//!
//! Wire rules (facts §6): the http output always carries `statusCode`, `status`, `body` and
//! `headers`; binding outputs are objects, never strings (a string that happens to be base64
//! would reach the binding as bytes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{FunctionKind, FunctionsError, binding, function_table};
use crate::config::{Config, FunctionsDelivery, Hub, SignalrConfig, UserIdSource};
use crate::daemon::delivery::deliver;
use crate::daemon::http::error::ApiError;
use crate::daemon::http::negotiate::{self, user_id};
use crate::daemon::http::status::{RouteRequest, render_route, send_route};
use crate::daemon::schedule::render_schedule;
use crate::message::{Message, Recipient};
use crate::signalr::rest::RestClient;

/// Everything an invocation needs; cloned per request (one `Arc` inside).
#[derive(Clone)]
pub struct HandlerState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The config, fixed for the handler's life (function.json files are fixed at deploy).
    cfg: Config,
    /// Function name, lowercased (the host matches names case-insensitively) → what it does.
    functions: HashMap<String, FunctionKind>,
    /// The REST client for `delivery: direct`, and the endpoint whose key signs tokens for
    /// bearer-verified negotiate; `None` without a connection string.
    rest: Option<RestClient>,
}

impl HandlerState {
    /// Build the state; `delivery: direct` without a connection string is refused here.
    pub fn new(cfg: Config) -> Result<HandlerState, FunctionsError> {
        let functions = function_table(&cfg)?
            .into_iter()
            .map(|d| (d.name.to_ascii_lowercase(), d.kind))
            .collect();
        let rest = match &cfg.signalr {
            SignalrConfig::Azure(endpoint) => Some(RestClient::new(
                (**endpoint).clone(),
                crate::daemon::rest_options(&cfg),
            )?),
            SignalrConfig::Embedded { .. } => None,
        };
        if cfg.functions.delivery == FunctionsDelivery::Direct && rest.is_none() {
            return Err(FunctionsError::DirectNeedsConnectionString);
        }
        Ok(HandlerState {
            inner: Arc::new(Inner {
                cfg,
                functions,
                rest,
            }),
        })
    }

    /// The served function names, sorted (for the start-up log).
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.functions.keys().cloned().collect();
        names.sort();
        names
    }

    /// `binding` or `direct`.
    pub fn delivery_name(&self) -> &'static str {
        match self.inner.cfg.functions.delivery {
            FunctionsDelivery::Binding => "binding",
            FunctionsDelivery::Direct => "direct",
        }
    }
}

/// The handler's routes: the readiness probe and one invocation endpoint per function name.
pub fn router(state: HandlerState) -> Router {
    // The envelope carries the request body plus headers and metadata: allow room above the
    // configured body limit (which `Body` itself is held to, answering 413).
    let limit = state
        .inner
        .cfg
        .http
        .body_limit
        .saturating_mul(4)
        .saturating_add(1 << 20);
    Router::new()
        .route("/", get(ready))
        .route("/{function}", post(invoke_route))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn ready() -> &'static str {
    "herald custom handler ready\n"
}

async fn invoke_route(
    State(state): State<HandlerState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Response {
    let envelope: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                vec![format!("invocation body is not JSON: {e}")],
            );
        }
    };
    let (status, answer) = invoke(&state, &function, &envelope).await;
    (status, axum::Json(answer)).into_response()
}

/// An invocation answer: `{Outputs, Logs, ReturnValue}`.
fn answer(outputs: Map<String, Value>, logs: Vec<String>) -> Value {
    json!({ "Outputs": outputs, "Logs": logs, "ReturnValue": null })
}

/// A non-2xx answer: the host marks the invocation failed.
fn failure(status: StatusCode, logs: Vec<String>) -> Response {
    for l in &logs {
        tracing::warn!("{l}");
    }
    (status, axum::Json(answer(Map::new(), logs))).into_response()
}

/// Handle one invocation of `function` with `envelope`; the status for the host and the body.
pub async fn invoke(state: &HandlerState, function: &str, envelope: &Value) -> (StatusCode, Value) {
    let Some(kind) = state.inner.functions.get(&function.to_ascii_lowercase()) else {
        let logs = vec![format!("herald has no function `{function}`")];
        tracing::warn!(function, "invocation of an unknown function");
        return (StatusCode::NOT_FOUND, answer(Map::new(), logs));
    };
    let cfg = &state.inner.cfg;
    let data = field(envelope, "Data").unwrap_or(&Value::Null);
    let metadata = field(envelope, "Metadata").unwrap_or(&Value::Null);
    let mut logs = Vec::new();
    let mut outputs = Map::new();
    match kind {
        FunctionKind::Negotiate { hub } => {
            let res = match cfg.hubs.get(hub) {
                Some(hub) => negotiate(state, hub, data, &mut logs),
                None => Err(ApiError::not_found("hub not found")),
            };
            outputs.insert(binding::RES.into(), http_result(res, &mut logs));
        }
        FunctionKind::Route { index } => {
            let Some(route) = cfg.routes.get(*index) else {
                return (StatusCode::NOT_FOUND, answer(outputs, logs));
            };
            let res = match field(data, binding::REQ) {
                Some(req) => {
                    let (request_parts, body) = request(req);
                    let request = RouteRequest {
                        params: request_parts.params,
                        query: request_parts.query,
                        headers: &request_parts.headers,
                    };
                    let limit = cfg.http.body_limit;
                    let body = async move {
                        if body.len() > limit {
                            Err(ApiError::payload_too_large(limit))
                        } else {
                            Ok(body)
                        }
                    };
                    route_invocation(state, route, &request, body, &mut outputs, &mut logs).await
                }
                None => Err(ApiError::bad_request(format!(
                    "the invocation has no Data.{}",
                    binding::REQ
                ))),
            };
            outputs.insert(binding::RES.into(), http_result(res, &mut logs));
        }
        FunctionKind::Schedule { name } => {
            let at = match cfg.schedules.get(name) {
                Some(s) => scheduled_instant(&s.cron, fire_instant(metadata)),
                None => fire_instant(metadata),
            };
            if field(data, binding::TIMER)
                .and_then(|t| field(t, "IsPastDue"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                logs.push(format!("schedule {name}: the timer is past due"));
            }
            let message = match render_schedule(cfg, name, at) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::error!(schedule = %name, error = %e, at = %e.at, "schedule template failed to render");
                    logs.push(format!("schedule {name}: template failed to render: {e}"));
                    return (StatusCode::INTERNAL_SERVER_ERROR, answer(outputs, logs));
                }
                None => return (StatusCode::NOT_FOUND, answer(outputs, logs)),
            };
            let line = format!(
                "schedule {name}: {} to {} in hub {}",
                message.target,
                recipient_text(&message.to),
                message.hub
            );
            match &state.inner.rest {
                Some(rest) if cfg.functions.delivery == FunctionsDelivery::Direct => {
                    if let Err(e) = deliver(rest, &message, "schedule", name).await {
                        logs.push(format!("{line}: not delivered: {e}"));
                        return (StatusCode::INTERNAL_SERVER_ERROR, answer(outputs, logs));
                    }
                    logs.push(format!("{line}, sent"));
                }
                _ => {
                    outputs.insert(binding::SIGNALR_MESSAGES.into(), binding_message(&message));
                    logs.push(line);
                }
            }
            tracing::info!(schedule = %name, at = %at.to_rfc3339(), "schedule fired");
        }
    }
    (StatusCode::OK, answer(outputs, logs))
}

/// Render a route's message and hand it to the binding (or send it, with `direct`); the
/// route's `202 {"id"}` answer.
async fn route_invocation(
    state: &HandlerState,
    route: &crate::config::Route,
    request: &RouteRequest<'_>,
    body: impl Future<Output = Result<Bytes, ApiError>>,
    outputs: &mut Map<String, Value>,
    logs: &mut Vec<String>,
) -> Result<(StatusCode, Value), ApiError> {
    let message = render_route(route, request, body).await?;
    let line = format!(
        "route {}: {} to {} in hub {}",
        route.name,
        message.target,
        recipient_text(&message.to),
        message.hub
    );
    let id = match &state.inner.rest {
        Some(rest) if state.inner.cfg.functions.delivery == FunctionsDelivery::Direct => {
            let id = send_route(rest, route, &message).await?;
            logs.push(format!("{line}, sent (id {id})"));
            id
        }
        _ => {
            let id = uuid::Uuid::now_v7().to_string();
            outputs.insert(binding::SIGNALR_MESSAGES.into(), binding_message(&message));
            logs.push(format!("{line} (id {id})"));
            tracing::info!(route = %route.name, hub = %message.hub, target = %message.target,
                to = message.to.kind(), id = %id, "message accepted");
            id
        }
    };
    Ok((StatusCode::ACCEPTED, json!({ "id": id })))
}

/// Negotiate: the hub's user-id rule is checked as the daemon checks it (401 when a required
/// id is missing or a bearer token is bad). Header ids and anonymous callers get the
/// `signalRConnectionInfo` binding's connection info (its `userId` expression reads the same
/// header). A bearer-verified user id cannot be expressed as a binding expression, so herald
/// signs that token itself with the connection string's key.
fn negotiate(
    state: &HandlerState,
    hub: &Hub,
    data: &Value,
    logs: &mut Vec<String>,
) -> Result<(StatusCode, Value), ApiError> {
    let headers = field(data, binding::REQ)
        .map(|req| request(req).0.headers)
        .unwrap_or_default();
    let user = user_id(hub, &headers)?;
    let who = user
        .as_deref()
        .map(|u| format!("user {u}"))
        .unwrap_or_else(|| "anonymous".to_string());
    let bearer_user = matches!(
        hub.user_id.as_ref().map(|r| &r.source),
        Some(UserIdSource::Bearer(_))
    ) && user.is_some();
    let info = if bearer_user {
        let Some(rest) = &state.inner.rest else {
            return Err(ApiError::unavailable(format!(
                "bearer user ids need the {} app setting in the handler's environment",
                super::CONNECTION_STRING_SETTING
            )));
        };
        negotiate::connection_info(rest.endpoint(), hub, user.as_deref())?
    } else {
        match field(data, binding::CONNECTION_INFO) {
            Some(Value::Object(o)) => Value::Object(o.clone()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(ApiError::unavailable(
                        "the signalRConnectionInfo binding gave no connection info",
                    ));
                }
            },
            _ => {
                return Err(ApiError::unavailable(
                    "the signalRConnectionInfo binding gave no connection info",
                ));
            }
        }
    };
    metrics::counter!("herald_negotiate_total", "hub" => hub.name.clone()).increment(1);
    logs.push(format!("negotiate: hub {}, {who}", hub.name));
    Ok((StatusCode::OK, info))
}

/// An http output from a result: the answer, or the `ApiError` as `{"error", "detail"}`.
fn http_result(result: Result<(StatusCode, Value), ApiError>, logs: &mut Vec<String>) -> Value {
    match result {
        Ok((status, body)) => http_output(status, &body, &[]),
        Err(e) => {
            logs.push(format!(
                "answered {} {}: {}",
                e.status.as_u16(),
                e.error,
                e.detail
            ));
            let mut extra = Vec::new();
            if !e.allow.is_empty() {
                let names: Vec<&str> = e.allow.iter().map(|m| m.as_str()).collect();
                extra.push((header::ALLOW.as_str(), names.join(", ")));
            }
            if let Some(secs) = e.retry_after {
                extra.push(("Retry-After", secs.to_string()));
            }
            http_output(
                e.status,
                &json!({"error": e.error, "detail": e.detail}),
                &extra,
            )
        }
    }
}

/// The http output object: all four fields, the body as JSON text.
fn http_output(status: StatusCode, body: &Value, extra_headers: &[(&str, String)]) -> Value {
    let mut headers = Map::new();
    headers.insert("Content-Type".into(), json!("application/json"));
    for (k, v) in extra_headers {
        headers.insert((*k).to_string(), json!(v));
    }
    json!({
        "statusCode": status.as_u16(),
        "status": status.as_u16(),
        "body": body.to_string(),
        "headers": headers,
    })
}

/// A message as a `signalR` output binding item (facts §4.4): `target`, `arguments` and the
/// recipient as `userId`, `groupName` or `connectionId`.
pub fn binding_message(message: &Message) -> Value {
    let mut item = json!({ "target": message.target, "arguments": message.arguments });
    match &message.to {
        Recipient::All => {}
        Recipient::User(u) => item["userId"] = json!(u),
        Recipient::Group(g) => item["groupName"] = json!(g),
        Recipient::Connection(c) => item["connectionId"] = json!(c),
    }
    item
}

fn recipient_text(to: &Recipient) -> String {
    match to {
        Recipient::All => "all".to_string(),
        Recipient::User(u) => format!("user {u}"),
        Recipient::Group(g) => format!("group {g}"),
        Recipient::Connection(c) => format!("connection {c}"),
    }
}

/// A field of a JSON object, by exact name first, then ignoring ASCII case (the host's
/// property names are case-insensitive).
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The parts of `Data.req` a route reads.
struct RequestParts {
    params: BTreeMap<String, String>,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Read the host's http request object: `Headers` (name → array of strings, or a string),
/// `Query` (an object, or the same as a JSON string; absent → the `Url`'s query), `Params`,
/// and `Body` (text; a JSON value from a host that parsed it is written back as JSON).
fn request(req: &Value) -> (RequestParts, Bytes) {
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(h)) = field(req, "Headers") {
        for (name, values) in h {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let values: Vec<String> = match values {
                Value::Array(items) => items.iter().map(text_of).collect(),
                Value::Null => Vec::new(),
                other => vec![text_of(other)],
            };
            for v in values {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.append(name.clone(), v);
                }
            }
        }
    }
    let query_object = match field(req, "Query") {
        Some(Value::Object(q)) => Some(q.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(q)) => Some(q),
            _ => None,
        },
        _ => None,
    };
    let query: HashMap<String, String> = match query_object {
        Some(q) => q.iter().map(|(k, v)| (k.clone(), text_of(v))).collect(),
        None => field(req, "Url")
            .and_then(Value::as_str)
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|uri| axum::extract::Query::try_from_uri(&uri).ok())
            .map(|q| q.0)
            .unwrap_or_default(),
    };
    let params = match field(req, "Params") {
        Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.clone(), text_of(v))).collect(),
        _ => BTreeMap::new(),
    };
    let body = match field(req, "Body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    (
        RequestParts {
            params,
            query,
            headers,
        },
        body,
    )
}

/// The instant a timer invocation renders for: the host's `Metadata.sys.UtcNow`, else now.
fn fire_instant(metadata: &Value) -> DateTime<Utc> {
    field(metadata, "sys")
        .and_then(|s| field(s, "UtcNow"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// The schedule's slot this invocation is for: its latest fire instant in the minute up to
/// `now` (so `now` renders as the daemon renders it, e.g. `10:30:00.000Z`, not the host's
/// jitter), else `now` itself (a late, manual or start-up run).
fn scheduled_instant(cron: &crate::cron::CronSchedule, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut from = now - chrono::Duration::seconds(60);
    let mut latest = None;
    while let Some(next) = cron.next_after(from) {
        if next > now {
            break;
        }
        latest = Some(next);
        from = next;
    }
    latest.unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signalr::token;
    use std::path::Path as FsPath;

    fn state(text: &str, env: &[(&str, &str)]) -> HandlerState {
        crate::install_crypto();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg =
            crate::config::load_str(FsPath::new("t.yaml"), text, &|k| env.get(k).cloned()).unwrap();
        HandlerState::new(cfg).unwrap()
    }

    const CS: &str = "Endpoint=https://x.service.signalr.net;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789;Version=1.0;";

    #[test]
    fn request_reads_both_query_forms_and_header_arrays() {
        let (parts, body) = request(&json!({
            "Url": "https://a/api/x?ignored=1",
            "Query": "{\"a\":\"1\"}",
            "Headers": {"X-Api-Key": ["k"], "Accept": ["a", "b"]},
            "Params": {"id": "7"},
            "Body": "{\"s\":1}"
        }));
        assert_eq!(parts.query["a"], "1");
        assert!(!parts.query.contains_key("ignored"));
        assert_eq!(parts.headers["x-api-key"], "k");
        assert_eq!(parts.headers.get_all("accept").iter().count(), 2);
        assert_eq!(parts.params["id"], "7");
        assert_eq!(&body[..], b"{\"s\":1}");
        let (parts, body) = request(&json!({"Url": "https://a/api/x?b=2", "Body": {"s": 1}}));
        assert_eq!(parts.query["b"], "2");
        assert_eq!(&body[..], b"{\"s\":1}");
    }

    #[test]
    fn timer_renders_for_its_slot() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let cron = crate::cron::CronSchedule::parse("0 */30 * * * *", "UTC").unwrap();
        assert_eq!(
            scheduled_instant(&cron, utc("2026-01-01T10:30:00.0123Z")),
            utc("2026-01-01T10:30:00Z")
        );
        assert_eq!(
            scheduled_instant(&cron, utc("2026-01-01T10:45:00Z")),
            utc("2026-01-01T10:45:00Z")
        );
        let every = crate::cron::CronSchedule::parse("*/30 * * * * *", "UTC").unwrap();
        assert_eq!(
            scheduled_instant(&every, utc("2026-01-01T10:00:59Z")),
            utc("2026-01-01T10:00:30Z")
        );
    }

    #[test]
    fn binding_items_carry_the_recipient() {
        let mut m = Message::broadcast("h", "t", vec![json!(1)]);
        assert_eq!(
            binding_message(&m),
            json!({"target": "t", "arguments": [1]})
        );
        m.to = Recipient::User("alice".into());
        assert_eq!(binding_message(&m)["userId"], "alice");
        m.to = Recipient::Group("ops".into());
        assert_eq!(binding_message(&m)["groupName"], "ops");
        m.to = Recipient::Connection("c1".into());
        assert_eq!(binding_message(&m)["connectionId"], "c1");
    }

    #[tokio::test]
    async fn bearer_negotiate_is_verified_and_signed_by_herald() {
        use jsonwebtoken::{EncodingKey, Header};
        let s = state(
            "hubs: {chat: {negotiate: {user_id: {bearer: {secret: s3cret-s3cret}, required: true}}}}\n",
            &[("AzureSignalRConnectionString", CS)],
        );
        let missing = json!({"Data": {"req": {"Headers": {}}, "connectionInfo": {"url": "u", "accessToken": "t"}}});
        let (status, body) = invoke(&s, "negotiate", &missing).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Outputs"]["res"]["statusCode"], 401);

        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let jwt = jsonwebtoken::encode(
            &Header::default(),
            &json!({"sub": "alice", "exp": exp}),
            &EncodingKey::from_secret(b"s3cret-s3cret"),
        )
        .unwrap();
        let ok = json!({"Data": {"req": {"Headers": {"Authorization": [format!("Bearer {jwt}")]}},
            "connectionInfo": {"url": "u", "accessToken": "t"}}});
        let (_, body) = invoke(&s, "negotiate", &ok).await;
        let res = &body["Outputs"]["res"];
        assert_eq!(res["statusCode"], 200);
        let info: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            info["url"],
            "https://x.service.signalr.net/client/?hub=chat"
        );
        let claims = token::verify(
            info["accessToken"].as_str().unwrap(),
            &["ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"],
            "https://x.service.signalr.net/client/?hub=chat",
        )
        .unwrap();
        assert_eq!(claims.user_id(), Some("alice"));
    }

    #[tokio::test]
    async fn unknown_function_and_missing_connection_info() {
        let s = state("hubs: {chat: {}}\n", &[]);
        let (status, _) = invoke(&s, "nope", &json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, body) = invoke(&s, "NEGOTIATE", &json!({"Data": {"req": {}}})).await;
        assert_eq!(body["Outputs"]["res"]["statusCode"], 503);
    }

    #[test]
    fn direct_delivery_needs_a_connection_string() {
        let cfg = crate::config::load_str(
            FsPath::new("t.yaml"),
            "hubs: {chat: {}}\nfunctions: {delivery: direct}\n",
            &|_| None,
        )
        .unwrap();
        assert!(matches!(
            HandlerState::new(cfg),
            Err(FunctionsError::DirectNeedsConnectionString)
        ));
    }
}
