//! The custom handler: the Functions host's invocation envelopes (`POST /{function}` with
//! `{Data, Metadata}`, answered with `{Outputs, Logs, ReturnValue}`) turned into the same code
//! the daemon runs: `status::render_route` for routes, `schedule::render_schedule` for timers,
//! the hub's user-id rule for negotiate. `GET /` answers the host's readiness probe.
//!
//! The envelope is decoded into serde types (`Invocation`, `HttpRequest`...) named as the host
//! names them (PascalCase, with aliases for the camelCase and lowercase spellings hosts send);
//! a field of an unexpected shape counts as absent, since the shapes vary by host version
//! (facts §6.2). How messages leave (the `signalR` output binding, or herald's own REST
//! client with `delivery: direct`) is fixed once, in [`HandlerState::new`].
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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::{FunctionKind, FunctionsError, binding, function_table};
use crate::config::{Config, FunctionsDelivery, Hub, UserIdSource};
use crate::daemon::delivery::{DeliveryError, deliver};
use crate::daemon::http::error::ApiError;
use crate::daemon::http::negotiate::{self, user_id};
use crate::daemon::http::status::{RouteRequest, render_route};
use crate::daemon::schedule::render_schedule;
use crate::message::{Message, Recipient};
use crate::signalr::ServiceEndpoint;
use crate::signalr::rest::RestClient;

/// Everything an invocation needs; cloned per request (one `Arc` inside).
#[derive(Clone)]
pub struct HandlerState {
    inner: Arc<Inner>,
}

/// Fixed for the handler's life (function.json files are fixed at deploy), so no lock.
struct Inner {
    cfg: Config,
    /// Function name, lowercased (the host matches names case-insensitively) → what it does.
    functions: HashMap<String, FunctionKind>,
    /// How rendered messages leave; chosen once from `functions.delivery`.
    delivery: Delivery,
    /// The endpoint whose key signs tokens for bearer-verified negotiate; `None` without a
    /// connection string.
    endpoint: Option<ServiceEndpoint>,
    /// The client-event actions (`events:`), the same code as the daemon's upstream endpoint;
    /// `None` when no events are configured or there is no connection string.
    events: Option<crate::daemon::events::Events>,
}

/// How a rendered message leaves the handler.
enum Delivery {
    /// As an item of the `signalR` output binding; the host sends it.
    Binding,
    /// Sent by herald through the REST client before the invocation answers.
    Direct(RestClient),
}

/// What [`Delivery::hand_on`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandedOn {
    /// Put in `Outputs.signalRMessages` for the host.
    ToBinding,
    /// Accepted by the service.
    Sent,
}

impl Delivery {
    fn name(&self) -> &'static str {
        match self {
            Delivery::Binding => "binding",
            Delivery::Direct(_) => "direct",
        }
    }

    /// Hand `message` on: into `outputs` as the binding item, or sent now. `source` and
    /// `name` label the delivery's logs and metrics.
    async fn hand_on(
        &self,
        message: &Message,
        source: &'static str,
        name: &str,
        outputs: &mut Map<String, Value>,
    ) -> Result<HandedOn, DeliveryError> {
        match self {
            Delivery::Binding => {
                outputs.insert(binding::SIGNALR_MESSAGES.into(), binding_message(message));
                Ok(HandedOn::ToBinding)
            }
            Delivery::Direct(rest) => {
                deliver(rest, message, source, name).await?;
                Ok(HandedOn::Sent)
            }
        }
    }
}

impl HandlerState {
    /// Build the state; `delivery: direct` without a connection string is refused here.
    pub fn new(cfg: Config) -> Result<HandlerState, FunctionsError> {
        let functions = function_table(&cfg)?
            .into_iter()
            .map(|d| (d.name.to_ascii_lowercase(), d.kind))
            .collect();
        let endpoint = cfg.signalr.azure_primary().cloned();
        let delivery = match (cfg.functions.delivery, cfg.signalr.azure_endpoints()) {
            (FunctionsDelivery::Binding, _) => Delivery::Binding,
            (FunctionsDelivery::Direct, Some(set)) => Delivery::Direct(RestClient::with_endpoints(
                set.to_vec(),
                crate::daemon::rest_options(&cfg),
            )?),
            (FunctionsDelivery::Direct, None) => {
                return Err(FunctionsError::DirectNeedsConnectionString);
            }
        };
        let events = match &endpoint {
            Some(endpoint) if !cfg.events.is_empty() => {
                let dir = cfg
                    .state
                    .dir
                    .clone()
                    .unwrap_or_else(crate::state::state_dir);
                Some(crate::daemon::events::Events {
                    rest: RestClient::new(endpoint.clone(), crate::daemon::rest_options(&cfg))?,
                    store: crate::store::Store::open(&dir, cfg.state.synchronous)?,
                    outbox: None,
                    limiters: Arc::default(),
                    presence: Arc::default(),
                })
            }
            _ => None,
        };
        Ok(HandlerState {
            inner: Arc::new(Inner {
                cfg,
                functions,
                delivery,
                endpoint,
                events,
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
        self.inner.delivery.name()
    }
}

/// Deserialize `T`, or `None` when the value has another shape: one odd field of the host's
/// envelope must not fail the whole invocation.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// One invocation: `{Data, Metadata}` (facts §6.2). Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Invocation {
    #[serde(default, alias = "data", deserialize_with = "lenient")]
    data: Option<InvocationData>,
    #[serde(default, alias = "metadata", deserialize_with = "lenient")]
    metadata: Option<Metadata>,
}

/// `Data`: one entry per trigger or input binding, by the binding names of `binding::*`.
#[derive(Debug, Default, Deserialize)]
struct InvocationData {
    /// [`binding::REQ`]: the HTTP trigger's request.
    #[serde(default, alias = "Req", alias = "REQ", deserialize_with = "lenient")]
    req: Option<HttpRequest>,
    /// [`binding::CONNECTION_INFO`]: the `signalRConnectionInfo` input (an object, or the
    /// same as a JSON string).
    #[serde(
        default,
        rename = "connectionInfo",
        alias = "ConnectionInfo",
        alias = "connectioninfo"
    )]
    connection_info: Option<Value>,
    /// [`binding::TIMER`]: the timer trigger's status.
    #[serde(default, alias = "Timer", deserialize_with = "lenient")]
    timer: Option<TimerInfo>,
    /// [`binding::INVOCATION`]: the `signalRTrigger`'s invocation context.
    #[serde(default, alias = "Invocation", deserialize_with = "lenient")]
    invocation: Option<InvocationContext>,
}

/// The `signalRTrigger`'s `InvocationContext` (facts §5): who raised the event and the
/// invocation's arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InvocationContext {
    #[serde(default, alias = "arguments", deserialize_with = "lenient")]
    arguments: Option<Vec<Value>>,
    #[serde(default, alias = "hub", deserialize_with = "lenient")]
    hub: Option<String>,
    #[serde(default, alias = "connectionId", deserialize_with = "lenient")]
    connection_id: Option<String>,
    #[serde(default, alias = "userId", deserialize_with = "lenient")]
    user_id: Option<String>,
}

/// The HTTP trigger's request object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HttpRequest {
    #[serde(default, alias = "url", deserialize_with = "lenient")]
    url: Option<String>,
    /// Header name → array of strings (or one value).
    #[serde(default, alias = "headers", deserialize_with = "lenient")]
    headers: Option<BTreeMap<String, OneOrMany>>,
    /// An object in newer hosts, the same as a JSON string in older ones.
    #[serde(default, alias = "query", deserialize_with = "lenient")]
    query: Option<QueryField>,
    #[serde(default, alias = "params", deserialize_with = "lenient")]
    params: Option<Map<String, Value>>,
    /// Text; a JSON value from a host that parsed it.
    #[serde(default, alias = "body")]
    body: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Value>),
    One(Value),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum QueryField {
    Object(Map<String, Value>),
    Text(String),
}

/// The timer trigger's `Data.timer` (only `IsPastDue` is read).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TimerInfo {
    #[serde(
        default,
        alias = "isPastDue",
        alias = "ispastdue",
        deserialize_with = "lenient"
    )]
    is_past_due: Option<bool>,
}

/// `Metadata` (only `sys.UtcNow` is read).
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default, alias = "Sys", deserialize_with = "lenient")]
    sys: Option<SysMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SysMetadata {
    #[serde(
        default,
        alias = "utcNow",
        alias = "utcnow",
        deserialize_with = "lenient"
    )]
    utc_now: Option<String>,
}

impl Invocation {
    /// Decode an invocation body.
    pub fn from_slice(body: &[u8]) -> Result<Invocation, serde_json::Error> {
        serde_json::from_slice(body)
    }

    fn data(&self) -> Option<&InvocationData> {
        self.data.as_ref()
    }

    fn req(&self) -> Option<&HttpRequest> {
        self.data()?.req.as_ref()
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
    let invocation = match Invocation::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                vec![format!("invocation body is not a JSON envelope: {e}")],
            );
        }
    };
    let (status, answer) = invoke(&state, &function, &invocation).await;
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

/// Handle one invocation of `function`; the status for the host and the body.
pub async fn invoke(
    state: &HandlerState,
    function: &str,
    invocation: &Invocation,
) -> (StatusCode, Value) {
    let Some(kind) = state.inner.functions.get(&function.to_ascii_lowercase()) else {
        let logs = vec![format!("herald has no function `{function}`")];
        tracing::warn!(function, "invocation of an unknown function");
        return (StatusCode::NOT_FOUND, answer(Map::new(), logs));
    };
    let cfg = &state.inner.cfg;
    let mut logs = Vec::new();
    let mut outputs = Map::new();
    match kind {
        FunctionKind::Negotiate { hub } => {
            let res = match cfg.hubs.get(hub) {
                Some(hub) => negotiate(state, hub, invocation, &mut logs),
                None => Err(ApiError::not_found("hub not found")),
            };
            outputs.insert(binding::RES.into(), http_result(res, &mut logs));
        }
        FunctionKind::Route { index } => {
            let Some(route) = cfg.routes.get(*index) else {
                return (StatusCode::NOT_FOUND, answer(outputs, logs));
            };
            let res = match invocation.req() {
                Some(req) => {
                    let (request_parts, body) = request(req);
                    let request = RouteRequest {
                        params: request_parts.params,
                        query: request_parts.query,
                        headers: &request_parts.headers,
                        id: uuid::Uuid::now_v7().to_string(),
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
            let now = fire_instant(invocation);
            let at = match cfg.schedules.get(name) {
                Some(s) => scheduled_instant(&s.cron, now),
                None => now,
            };
            let past_due = invocation
                .data()
                .and_then(|d| d.timer.as_ref())
                .and_then(|t| t.is_past_due);
            if past_due == Some(true) {
                logs.push(format!("schedule {name}: the timer is past due"));
            }
            let message = match render_schedule(cfg, name, at, &uuid::Uuid::now_v7().to_string()) {
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
            match state
                .inner
                .delivery
                .hand_on(&message, "schedule", name, &mut outputs)
                .await
            {
                Ok(HandedOn::Sent) => logs.push(format!("{line}, sent")),
                Ok(HandedOn::ToBinding) => logs.push(line),
                Err(e) => {
                    logs.push(format!("{line}: not delivered: {e}"));
                    return (StatusCode::INTERNAL_SERVER_ERROR, answer(outputs, logs));
                }
            }
            tracing::info!(schedule = %name, at = %at.to_rfc3339(), "schedule fired");
        }
        FunctionKind::Connected { hub } | FunctionKind::Method { hub, .. } => {
            return client_event(state, kind, hub, invocation).await;
        }
    }
    (StatusCode::OK, answer(outputs, logs))
}

/// A `signalRTrigger` invocation: the same actions as the daemon's upstream endpoint. A
/// method's result is the `ReturnValue`; a refusal fails the invocation (500, the reason in
/// `Logs`), so the client's `invoke` rejects.
async fn client_event(
    state: &HandlerState,
    kind: &FunctionKind,
    hub: &str,
    invocation: &Invocation,
) -> (StatusCode, Value) {
    let mut logs = Vec::new();
    let Some(events) = &state.inner.events else {
        logs.push(
            "client events need the SignalR connection string (AzureSignalRConnectionString)"
                .to_string(),
        );
        return (StatusCode::INTERNAL_SERVER_ERROR, answer(Map::new(), logs));
    };
    let Some(context) = invocation.data().and_then(|d| d.invocation.as_ref()) else {
        logs.push(format!(
            "the invocation has no Data.{}",
            binding::INVOCATION
        ));
        return (StatusCode::BAD_REQUEST, answer(Map::new(), logs));
    };
    let Some(connection) = context.connection_id.clone().filter(|c| !c.is_empty()) else {
        logs.push("the invocation context has no ConnectionId".to_string());
        return (StatusCode::BAD_REQUEST, answer(Map::new(), logs));
    };
    let caller = crate::daemon::events::Caller {
        hub: context.hub.clone().unwrap_or_else(|| hub.to_string()),
        connection,
        user: context.user_id.clone().filter(|u| !u.is_empty()),
    };
    let cfg = &state.inner.cfg;
    match kind {
        FunctionKind::Method { method, .. } => {
            let arguments = context.arguments.clone().unwrap_or_default();
            match events.invoke(cfg, &caller, method, &arguments).await {
                Ok(result) => (
                    StatusCode::OK,
                    json!({ "Outputs": {}, "Logs": logs, "ReturnValue": result }),
                ),
                Err(refusal) => {
                    logs.push(format!("{method}: {refusal}"));
                    (StatusCode::INTERNAL_SERVER_ERROR, answer(Map::new(), logs))
                }
            }
        }
        _ => {
            events.connected(cfg, &caller).await;
            logs.push(format!("connected: {}", caller.connection));
            (StatusCode::OK, answer(Map::new(), logs))
        }
    }
}

/// Render a route's message and hand it on (binding, or sent with `direct`); the route's
/// `202 {"id"}` answer.
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
    let handed = state
        .inner
        .delivery
        .hand_on(&message, "route", &route.name, outputs)
        .await?;
    let id = &request.id;
    match handed {
        HandedOn::Sent => logs.push(format!("{line}, sent (id {id})")),
        HandedOn::ToBinding => logs.push(format!("{line} (id {id})")),
    }
    tracing::info!(route = %route.name, hub = %message.hub, target = %message.target,
        to = message.to.kind(), id = %id, "message accepted");
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
    invocation: &Invocation,
    logs: &mut Vec<String>,
) -> Result<(StatusCode, Value), ApiError> {
    let headers = invocation
        .req()
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
        let Some(endpoint) = &state.inner.endpoint else {
            return Err(ApiError::unavailable(format!(
                "bearer user ids need the {} app setting in the handler's environment",
                super::CONNECTION_STRING_SETTING
            )));
        };
        negotiate::connection_info(endpoint, hub, user.as_deref())?
    } else {
        let given = invocation.data().and_then(|d| d.connection_info.as_ref());
        match given {
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

/// An http output from a result: the answer as JSON, or the `ApiError` as its
/// (status, headers, body) parts, the same the daemon's listener answers.
fn http_result(result: Result<(StatusCode, Value), ApiError>, logs: &mut Vec<String>) -> Value {
    match result {
        Ok((status, body)) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            http_output(status, &headers, body.to_string().as_bytes())
        }
        Err(e) => {
            logs.push(format!(
                "answered {} {}: {}",
                e.status.as_u16(),
                e.error,
                e.detail
            ));
            let (status, headers, body) = e.into_parts();
            http_output(status, &headers, &body)
        }
    }
}

/// The http output object: all four fields, the body as text, header names in the
/// `Content-Type` spelling the host and its docs use.
fn http_output(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        out.insert(
            title_case(name.as_str()),
            json!(String::from_utf8_lossy(value.as_bytes())),
        );
    }
    json!({
        "statusCode": status.as_u16(),
        "status": status.as_u16(),
        "body": String::from_utf8_lossy(body),
        "headers": out,
    })
}

/// `retry-after` → `Retry-After`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
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

/// The host's http request as a route reads it: headers (each value appended), the query
/// (the object or JSON-string form; absent → the `Url`'s query), params, and the body (text;
/// a JSON value from a host that parsed it is written back as JSON).
fn request(req: &HttpRequest) -> (RequestParts, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, values) in req.headers.iter().flatten() {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<String> = match values {
            OneOrMany::Many(items) => items.iter().map(text_of).collect(),
            OneOrMany::One(Value::Null) => Vec::new(),
            OneOrMany::One(other) => vec![text_of(other)],
        };
        for v in values {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.append(name.clone(), v);
            }
        }
    }
    let query_object = match &req.query {
        Some(QueryField::Object(q)) => Some(q.clone()),
        Some(QueryField::Text(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(q)) => Some(q),
            _ => None,
        },
        None => None,
    };
    let query: HashMap<String, String> = match query_object {
        Some(q) => q.iter().map(|(k, v)| (k.clone(), text_of(v))).collect(),
        None => req
            .url
            .as_deref()
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|uri| axum::extract::Query::try_from_uri(&uri).ok())
            .map(|q| q.0)
            .unwrap_or_default(),
    };
    let params = req
        .params
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text_of(v)))
        .collect();
    let body = match &req.body {
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
fn fire_instant(invocation: &Invocation) -> DateTime<Utc> {
    invocation
        .metadata
        .as_ref()
        .and_then(|m| m.sys.as_ref())
        .and_then(|s| s.utc_now.as_deref())
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

    /// An envelope as the host would post it.
    fn inv(v: Value) -> Invocation {
        Invocation::from_slice(v.to_string().as_bytes()).unwrap()
    }

    fn req(v: Value) -> HttpRequest {
        serde_json::from_value(v).unwrap()
    }

    const CS: &str = "Endpoint=https://x.service.signalr.net;AccessKey=ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789;Version=1.0;";

    #[test]
    fn request_reads_both_query_forms_and_header_arrays() {
        let (parts, body) = request(&req(json!({
            "Url": "https://a/api/x?ignored=1",
            "Query": "{\"a\":\"1\"}",
            "Headers": {"X-Api-Key": ["k"], "Accept": ["a", "b"]},
            "Params": {"id": "7"},
            "Body": "{\"s\":1}"
        })));
        assert_eq!(parts.query["a"], "1");
        assert!(!parts.query.contains_key("ignored"));
        assert_eq!(parts.headers["x-api-key"], "k");
        assert_eq!(parts.headers.get_all("accept").iter().count(), 2);
        assert_eq!(parts.params["id"], "7");
        assert_eq!(&body[..], b"{\"s\":1}");
        let (parts, body) = request(&req(
            json!({"Url": "https://a/api/x?b=2", "Body": {"s": 1}}),
        ));
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
        let (status, body) = invoke(&s, "negotiate", &inv(missing)).await;
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
        let (_, body) = invoke(&s, "negotiate", &inv(ok)).await;
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
        let (status, _) = invoke(&s, "nope", &inv(json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, body) = invoke(&s, "NEGOTIATE", &inv(json!({"Data": {"req": {}}}))).await;
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

    #[test]
    fn envelopes_decode_in_every_spelling_the_hosts_use() {
        let pascal = inv(json!({
            "Data": {binding::REQ: {"Url": "https://a/x?q=1", "Headers": {"A": ["1"]}},
                     binding::CONNECTION_INFO: {"url": "u"}, binding::TIMER: {"IsPastDue": true}},
            "Metadata": {"sys": {"UtcNow": "2026-01-01T10:00:00Z"}}
        }));
        let lower = inv(json!({
            "data": {"Req": {"url": "https://a/x?q=1", "headers": {"A": "1"}},
                     "ConnectionInfo": "{\"url\":\"u\"}", "Timer": {"isPastDue": true}},
            "metadata": {"Sys": {"utcNow": "2026-01-01T10:00:00Z"}}
        }));
        for e in [&pascal, &lower] {
            let (parts, _) = request(e.req().unwrap());
            assert_eq!(parts.query["q"], "1");
            assert_eq!(parts.headers["a"], "1");
            assert!(e.data().unwrap().connection_info.is_some());
            assert_eq!(
                e.data().unwrap().timer.as_ref().unwrap().is_past_due,
                Some(true)
            );
            assert_eq!(fire_instant(e).to_rfc3339(), "2026-01-01T10:00:00+00:00");
        }
        // A field of an unexpected shape counts as absent; the rest still decodes.
        let odd = inv(
            json!({"Data": {"req": {"Headers": "nope", "Params": [1], "Url": "https://a/?z=2"},
            "timer": "x"}, "Metadata": 7}),
        );
        let (parts, _) = request(odd.req().unwrap());
        assert!(parts.headers.is_empty() && parts.params.is_empty());
        assert_eq!(parts.query["z"], "2");
        assert!(odd.data().unwrap().timer.is_none());
        assert!(Invocation::from_slice(b"not json").is_err());
        assert!(Invocation::from_slice(b"\"text\"").is_err());
    }

    #[test]
    fn api_errors_become_the_same_http_output_as_on_the_listener() {
        let mut logs = Vec::new();
        let e = ApiError::method_not_allowed(vec![axum::http::Method::POST]);
        let out = http_result(Err(e), &mut logs);
        assert_eq!(
            out,
            json!({"statusCode": 405, "status": 405,
                   "body": json!({"error": "method_not_allowed", "detail": "this path answers POST"}).to_string(),
                   "headers": {"Content-Type": "application/json", "Allow": "POST"}})
        );
        let out = http_result(Err(ApiError::unavailable("x")), &mut logs);
        assert_eq!(out["headers"]["Retry-After"], "5");
        assert_eq!(logs.len(), 2);
    }

    #[test]
    fn delivery_mode_is_fixed_at_start() {
        let s = state(
            "hubs: {chat: {}}\n",
            &[("AzureSignalRConnectionString", CS)],
        );
        assert_eq!(s.delivery_name(), "binding");
        let s = state(
            "hubs: {chat: {}}\nfunctions: {delivery: direct}\n",
            &[("AzureSignalRConnectionString", CS)],
        );
        assert_eq!(s.delivery_name(), "direct");
    }
}
