//! The data-plane REST API, Azure SignalR's: `/api/...` (2022-06-01) and `/api/v1/...`, plus
//! the emulator's aliases (`hubs/{hub}` and `hubs/{hub}/:send`; both orderings of
//! connection/group and user/group paths; GET and HEAD for every existence check) →
//! ServiceHandle internals.
//!
//! Auth: `Authorization: Bearer` signed with an access key, `aud` = the request URL without
//! query (see `auth.rs`). Status codes follow the 2022-06-01 spec under `/api` and the v1
//! spec under `/api/v1`; a 404 from an existence check or a group operation carries
//! `x-ms-error-code`. Hub names are lowercased (`application` prefixes them as `app_hub`).
//!
//! Sends carrying `x-herald-message-id` (herald's outbox sets it) are deduplicated: a repeat
//! of an id seen within the window is answered 202 and not fanned out (see `dedupe.rs`).
//!
//! Two herald extensions, not in Azure's API: `GET hubs/{hub}/presence`, and
//! `POST hubs/{hub}/:sendBatch`, a JSON list of messages for one hub, delivered in order
//! (each with its own recipient and id, deduplicated as single sends are). Every item is
//! checked before any is delivered: a bad one is a 400 naming its index, and nothing of the
//! batch goes out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::metrics::{self as service_metrics, DropReason};
use super::{ServiceHandle, Shared, auth};
use crate::message::{Message, Recipient};
use crate::signalr::names;
use crate::signalr::protocol::{HubMessage, json as json_protocol, msgpack};
use crate::signalr::rest::MESSAGE_ID_HEADER;

/// Which spec's status codes apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/api/...`: 2022-06-01.
    Latest,
    /// `/api/v1/...`.
    V1,
}

/// Why a REST request failed, as `{code, message}` (Azure's `ErrorDetail`) with the code
/// also in `x-ms-error-code`. (Not the daemon's `RestFailure`: this one speaks Azure's REST
/// error shape.)
#[derive(Debug)]
struct RestFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RestFailure {
    fn bad_request(message: impl Into<String>) -> Self {
        RestFailure {
            status: StatusCode::BAD_REQUEST,
            code: "Error.Request.Invalid",
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        RestFailure {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for RestFailure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(self.code) {
            response.headers_mut().insert("x-ms-error-code", value);
        }
        response
    }
}

/// Every `/api` request.
pub(crate) async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, &method, &uri, &headers, &body) {
        Ok(reply) => reply,
        Err(error) => error.into_response(),
    }
}

/// The path below `/api`, split into percent-decoded segments. Empty segments are kept:
/// `users//:send` has an empty user id, and `groups/g/users/` an empty user id too (a
/// trailing slash is only dropped where the path means nothing with it, see [`handle`]).
fn segments(path: &str) -> Vec<String> {
    let path = path.strip_prefix("/api").unwrap_or(path);
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        return Vec::new();
    }
    path.split('/').map(auth::percent_decode).collect()
}

/// `segments` without one trailing empty segment (a trailing slash).
fn without_trailing_slash<'a, 'b>(segments: &'a [&'b str]) -> &'a [&'b str] {
    match segments.split_last() {
        Some((&"", rest)) => rest,
        _ => segments,
    }
}

/// Who an operation addresses (hub-wide, or one user, group or connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    All,
    User(&'a str),
    Group(&'a str),
    Connection(&'a str),
}

/// What a user-group path asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Add,
    Remove,
    Check,
}

/// One data-plane operation, as recognised from method and path (names not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation<'a> {
    Send(Target<'a>),
    /// `:closeConnections` (all, a user's or a group's).
    CloseMany(Target<'a>),
    ConnectionExists(&'a str),
    CloseConnection(&'a str),
    RemoveConnectionFromAllGroups(&'a str),
    GroupExists(&'a str),
    ConnectionGroup {
        add: bool,
        group: &'a str,
        connection: &'a str,
    },
    UserExists(&'a str),
    UserGroup {
        membership: Membership,
        user: &'a str,
        group: &'a str,
    },
    RemoveUserFromAllGroups(&'a str),
    /// `GET presence`: a herald extension (not in Azure's API).
    Presence,
    /// `POST :sendBatch`: a herald extension (not in Azure's API).
    SendBatch,
}

/// In the short alias `users/{user}` (POST), an action segment in the name's place means
/// the name is missing (`users//:send` after a client resolved the empty segment, or
/// `users/./:send` after it resolved the dot).
fn alias_name(segment: &str) -> &str {
    if segment.starts_with(':') {
        ""
    } else {
        segment
    }
}

/// Recognise the operation of a path below `hubs/{hub}`; `None` for an unknown shape (404).
fn operation<'a>(method: &Method, rest: &[&'a str]) -> Option<Operation<'a>> {
    use Operation as Op;
    let read = read_method(method);
    let op = match (method.clone(), rest) {
        (Method::POST, [] | [":send"]) => Op::Send(Target::All),
        (Method::POST, [":sendBatch"]) => Op::SendBatch,
        (Method::POST, ["users", user, ":send"]) => Op::Send(Target::User(user)),
        (Method::POST, ["users", user]) => Op::Send(Target::User(alias_name(user))),
        (Method::POST, ["groups", group, ":send"]) => Op::Send(Target::Group(group)),
        (Method::POST, ["groups", group]) => Op::Send(Target::Group(alias_name(group))),
        (Method::POST, ["connections", id, ":send"]) => Op::Send(Target::Connection(id)),
        (Method::POST, ["connections", id]) => Op::Send(Target::Connection(alias_name(id))),
        (Method::POST, [":closeConnections"]) => Op::CloseMany(Target::All),
        (Method::POST, ["users", user, ":closeConnections"]) => Op::CloseMany(Target::User(user)),
        (Method::POST, ["groups", group, ":closeConnections"]) => {
            Op::CloseMany(Target::Group(group))
        }
        (_, ["connections", id]) if read => Op::ConnectionExists(id),
        (Method::DELETE, ["connections", id]) => Op::CloseConnection(id),
        (Method::DELETE, ["connections", id, "groups"]) => Op::RemoveConnectionFromAllGroups(id),
        (_, ["groups", group]) if read => Op::GroupExists(group),
        (
            m @ (Method::PUT | Method::DELETE),
            ["groups", group, "connections", connection]
            | ["connections", connection, "groups", group],
        ) => Op::ConnectionGroup {
            add: m == Method::PUT,
            group,
            connection,
        },
        (_, ["users", user]) if read => Op::UserExists(user),
        (m, ["users", user, "groups", group] | ["groups", group, "users", user]) => {
            let membership = match m {
                Method::PUT => Membership::Add,
                Method::DELETE => Membership::Remove,
                _ if read => Membership::Check,
                _ => return None,
            };
            Op::UserGroup {
                membership,
                user,
                group,
            }
        }
        (Method::DELETE, ["users", user, "groups"]) => Op::RemoveUserFromAllGroups(user),
        (_, ["presence"]) if read => Op::Presence,
        _ => return None,
    };
    Some(op)
}

impl Operation<'_> {
    /// Check every user, group and connection name the operation carries with
    /// [`names`]; the first bad one is a 400 that names it.
    fn check_names(&self) -> Result<(), RestFailure> {
        use Operation as Op;
        let target = |t: &Target<'_>| match *t {
            Target::All => Ok(()),
            Target::User(u) => names::user(u),
            Target::Group(g) => names::group(g),
            Target::Connection(c) => names::connection(c),
        };
        match self {
            Op::Send(t) | Op::CloseMany(t) => target(t),
            Op::ConnectionExists(c)
            | Op::CloseConnection(c)
            | Op::RemoveConnectionFromAllGroups(c) => names::connection(c),
            Op::GroupExists(g) => names::group(g),
            Op::ConnectionGroup {
                group, connection, ..
            } => names::group(group).and_then(|()| names::connection(connection)),
            Op::UserExists(u) | Op::RemoveUserFromAllGroups(u) => names::user(u),
            // Each item's names are checked when the body is read.
            Op::Presence | Op::SendBatch => Ok(()),
            Op::UserGroup { user, group, .. } => {
                names::user(user).and_then(|()| names::group(group))
            }
        }
        .map_err(invalid)
    }
}

fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RestFailure> {
    let segments = segments(uri.path());
    let (api, segments) = match segments.split_first() {
        Some((first, rest)) if first == "v1" => (Api::V1, rest),
        _ => (Api::Latest, segments.as_slice()),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();

    if read_method(method) && without_trailing_slash(&segments) == ["health"] {
        return Ok(StatusCode::OK.into_response());
    }
    if let Err(error) = auth::rest(shared, headers, uri) {
        return Err(RestFailure {
            status: StatusCode::UNAUTHORIZED,
            code: "Error.Request.Unauthorized",
            message: error.to_string(),
        });
    }
    let Some((&"hubs", [hub, rest @ ..])) = segments.split_first() else {
        return Err(no_route());
    };
    // A trailing slash is an empty name where the shape has a name there
    // (`groups/g/users/`), and is ignored where it has none (`hubs/chat/`).
    let operation = operation(method, rest)
        .or_else(|| operation(method, without_trailing_slash(rest)))
        .ok_or_else(no_route)?;
    let query = auth::Query::of(uri);
    let param = |name: &str| query.get(name);
    let hub = hub_name(hub, param("application"))?;
    operation.check_names()?;
    let excluded: Vec<String> = query.all("excluded").map(str::to_string).collect();
    let reason = param("reason");
    let handle = ServiceHandle {
        shared: shared.clone(),
    };
    let by_api = |latest: StatusCode, v1: StatusCode| match api {
        Api::Latest => latest,
        Api::V1 => v1,
    };
    let recipient = |target: Target<'_>| match target {
        Target::All => Recipient::All,
        Target::User(u) => Recipient::User(u.to_string()),
        Target::Group(g) => Recipient::Group(g.to_string()),
        Target::Connection(c) => Recipient::Connection(c.to_string()),
    };

    use Operation as Op;
    let status = match operation {
        Op::Presence => return Ok(axum::Json(handle.presence(&hub)).into_response()),
        Op::SendBatch => {
            for (id, message) in batch(&hub, body)? {
                if let Some(id) = id.filter(|id| !id.is_empty())
                    && !shared.dedupe.first_time(&id)
                {
                    service_metrics::dropped(DropReason::Duplicate);
                    tracing::debug!(hub = %hub, message_id = %id, "batched send repeats a message id: not delivered again");
                    continue;
                }
                let report = handle.send(&message);
                tracing::debug!(hub = %hub, ?report, "REST batched send");
            }
            Ok(StatusCode::ACCEPTED)
        }
        Op::Send(target) => {
            let (target_name, arguments) = payload(headers, body)?;
            // Exactly once: a repeated message id is accepted but not fanned out again.
            if let Some(id) = headers
                .get(MESSAGE_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|id| !id.is_empty())
                && !shared.dedupe.first_time(id)
            {
                service_metrics::dropped(DropReason::Duplicate);
                tracing::debug!(hub = %hub, message_id = id, "REST send repeats a message id: not delivered again");
                return Ok(StatusCode::ACCEPTED.into_response());
            }
            let to = recipient(target);
            let excluded = if to.takes_excluded() {
                excluded
            } else {
                Vec::new()
            };
            let report = handle.send(&Message {
                hub: hub.clone(),
                to,
                target: target_name,
                arguments,
                excluded,
            });
            tracing::debug!(hub = %hub, ?report, "REST send");
            Ok(StatusCode::ACCEPTED)
        }
        Op::CloseMany(target) => {
            handle.close_connections(&hub, &recipient(target), &excluded, reason);
            Ok(StatusCode::NO_CONTENT)
        }
        Op::ConnectionExists(id) => {
            if handle.connection_exists(&hub, id) {
                Ok(StatusCode::OK)
            } else {
                Err(connection_not_found("Warning.Connection.NotExisted", id))
            }
        }
        Op::CloseConnection(id) => {
            handle.close_connection(&hub, id, reason);
            Ok(by_api(StatusCode::OK, StatusCode::ACCEPTED))
        }
        Op::RemoveConnectionFromAllGroups(id) => {
            handle.remove_connection_from_all_groups(&hub, id);
            Ok(StatusCode::OK)
        }
        Op::GroupExists(group) => {
            if handle.group_exists(&hub, group) {
                Ok(StatusCode::OK)
            } else {
                Err(RestFailure::not_found(
                    "Warning.Group.NotExisted",
                    format!("group `{group}` has no connections"),
                ))
            }
        }
        Op::ConnectionGroup {
            add: true,
            group,
            connection,
        } => {
            if handle.add_connection_to_group(&hub, group, connection) {
                Ok(StatusCode::OK)
            } else {
                Err(connection_not_found(
                    "Error.Connection.NotExisted",
                    connection,
                ))
            }
        }
        Op::ConnectionGroup {
            add: false,
            group,
            connection,
        } => {
            if handle.remove_connection_from_group(&hub, group, connection) {
                Ok(StatusCode::OK)
            } else {
                Err(connection_not_found(
                    "Warning.Connection.NotExisted",
                    connection,
                ))
            }
        }
        Op::UserExists(user) => {
            if handle.user_exists(&hub, user) {
                Ok(StatusCode::OK)
            } else {
                Err(RestFailure::not_found(
                    "Warning.User.NotExisted",
                    format!("user `{user}` has no connections"),
                ))
            }
        }
        Op::UserGroup {
            membership,
            user,
            group,
        } => match membership {
            Membership::Add => {
                let ttl = match param("ttl") {
                    None | Some("") => None,
                    Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
                        RestFailure::bad_request("`ttl` must be a non-negative integer (seconds)")
                    })?)),
                };
                handle.add_user_to_group(&hub, group, user, ttl);
                Ok(by_api(StatusCode::OK, StatusCode::ACCEPTED))
            }
            Membership::Remove => {
                handle.remove_user_from_group(&hub, group, user);
                Ok(by_api(StatusCode::NO_CONTENT, StatusCode::ACCEPTED))
            }
            Membership::Check => {
                if handle.user_in_group(&hub, group, user) {
                    Ok(StatusCode::OK)
                } else {
                    Err(RestFailure::not_found(
                        "Info.User.NotInGroup",
                        format!("user `{user}` is not in group `{group}`"),
                    ))
                }
            }
        },
        Op::RemoveUserFromAllGroups(user) => {
            handle.remove_user_from_all_groups(&hub, user);
            Ok(by_api(StatusCode::NO_CONTENT, StatusCode::OK))
        }
    };
    status.map(IntoResponse::into_response)
}

fn read_method(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

fn no_route() -> RestFailure {
    RestFailure {
        status: StatusCode::NOT_FOUND,
        code: "Error.Request.NotFound",
        message: "no such REST API operation".into(),
    }
}

fn connection_not_found(code: &'static str, id: &str) -> RestFailure {
    RestFailure::not_found(code, format!("connection `{id}` does not exist"))
}

/// A hub (and optional application) name checked by [`names`]; returns the lowercased
/// table key.
fn hub_name(hub: &str, application: Option<&str>) -> Result<String, RestFailure> {
    names::hub(hub).map_err(invalid)?;
    match application.filter(|a| !a.is_empty()) {
        None => Ok(hub.to_ascii_lowercase()),
        Some(app) => {
            names::application(app).map_err(invalid)?;
            Ok(format!("{app}_{hub}").to_ascii_lowercase())
        }
    }
}

fn invalid(e: names::NameError) -> RestFailure {
    RestFailure::bad_request(e.to_string())
}

/// The send body: `{"target", "arguments"}` as JSON (default) or MessagePack
/// (`application/x-msgpack`), or the .NET SDK's `application/octet-stream` map of
/// pre-serialised frames (`{"json": bytes, "messagepack": bytes}`).
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<(String, Vec<Value>), RestFailure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let value = match content_type.as_str() {
        "application/x-msgpack" | "application/msgpack" => {
            msgpack::value_to_json(read_msgpack(body)?)
        }
        "application/octet-stream" => return pre_serialised(body),
        _ => serde_json::from_slice::<Value>(body)
            .map_err(|e| RestFailure::bad_request(format!("invalid JSON body: {e}")))?,
    };
    let target = value
        .get("target")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RestFailure::bad_request("`target` is required"))?
        .to_string();
    let arguments = match value.get("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(RestFailure::bad_request("`arguments` must be an array")),
    };
    Ok((target, arguments))
}

/// One message of a `:sendBatch` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    #[serde(default)]
    id: Option<String>,
    target: String,
    #[serde(default)]
    arguments: Vec<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    connection: Option<String>,
    #[serde(default)]
    excluded: Vec<String>,
}

/// The messages of a `:sendBatch` body for `hub`, each with its id; the first bad item is
/// a 400 that names its index.
fn batch(hub: &str, body: &[u8]) -> Result<Vec<(Option<String>, Message)>, RestFailure> {
    let items: Vec<BatchItem> = serde_json::from_slice(body)
        .map_err(|e| RestFailure::bad_request(format!("invalid batch body: {e}")))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let bad = |why: String| RestFailure::bad_request(format!("batch item {i}: {why}"));
            if item.target.is_empty() {
                return Err(bad("`target` is required".into()));
            }
            let to = match (item.user, item.group, item.connection) {
                (None, None, None) => Recipient::All,
                (Some(u), None, None) => {
                    names::user(&u).map_err(|e| bad(e.to_string()))?;
                    Recipient::User(u)
                }
                (None, Some(g), None) => {
                    names::group(&g).map_err(|e| bad(e.to_string()))?;
                    Recipient::Group(g)
                }
                (None, None, Some(c)) => {
                    names::connection(&c).map_err(|e| bad(e.to_string()))?;
                    Recipient::Connection(c)
                }
                _ => {
                    return Err(bad("at most one of `user`, `group` and `connection`".into()));
                }
            };
            let excluded = if to.takes_excluded() {
                item.excluded
            } else {
                Vec::new()
            };
            Ok((
                item.id,
                Message {
                    hub: hub.to_string(),
                    to,
                    target: item.target,
                    arguments: item.arguments,
                    excluded,
                },
            ))
        })
        .collect()
}

fn read_msgpack(body: &[u8]) -> Result<rmpv::Value, RestFailure> {
    let mut cursor = std::io::Cursor::new(body);
    rmpv::decode::read_value_with_max_depth(&mut cursor, 64)
        .map_err(|e| RestFailure::bad_request(format!("invalid MessagePack body: {e}")))
}

fn pre_serialised(body: &[u8]) -> Result<(String, Vec<Value>), RestFailure> {
    let rmpv::Value::Map(entries) = read_msgpack(body)? else {
        return Err(RestFailure::bad_request(
            "expected a MessagePack map of frames",
        ));
    };
    let frame = |key: &str| {
        entries.iter().find_map(|(k, v)| match (k.as_str(), v) {
            (Some(k), rmpv::Value::Binary(b)) if k.eq_ignore_ascii_case(key) => Some(b.clone()),
            _ => None,
        })
    };
    let messages = if let Some(json) = frame("json") {
        json_protocol::decode_frame(&json)
    } else if let Some(mp) = frame("messagepack") {
        msgpack::decode_frame(&mp)
    } else {
        return Err(RestFailure::bad_request(
            "the frame map has neither `json` nor `messagepack`",
        ));
    }
    .map_err(|e| RestFailure::bad_request(format!("invalid pre-serialised frame: {e}")))?;
    messages
        .into_iter()
        .find_map(|m| match m {
            HubMessage::Invocation {
                target, arguments, ..
            } if !target.is_empty() => Some((target, arguments)),
            _ => None,
        })
        .ok_or_else(|| RestFailure::bad_request("the frame holds no invocation"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(hub_name("Chat", None).unwrap(), "chat");
        assert_eq!(hub_name("Chat", Some("App")).unwrap(), "app_chat");
        assert!(hub_name("1chat", None).is_err());
        assert!(hub_name("ch at", None).is_err());
    }

    #[test]
    fn empty_segments_are_kept() {
        assert_eq!(segments("/api"), Vec::<String>::new());
        assert_eq!(segments("/api/"), Vec::<String>::new());
        assert_eq!(segments("/api/v1/hubs/chat/"), ["v1", "hubs", "chat", ""]);
        assert_eq!(
            segments("/api/hubs/chat/users//:send"),
            ["hubs", "chat", "users", "", ":send"]
        );
        assert_eq!(
            segments("/api/hubs/chat/users/%2E"),
            ["hubs", "chat", "users", "."]
        );
    }

    /// The operation of `method path` with its names checked: `Err(message)` for a 400.
    fn checked(method: Method, path: &str) -> Option<Result<(), String>> {
        let rest: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        operation(&method, &rest).map(|op| op.check_names().map_err(|e| e.message))
    }

    #[test]
    fn every_name_of_every_operation_is_checked() {
        let err = |m: Method, p: &str| checked(m, p).and_then(Result::err).unwrap_or_default();
        assert_eq!(err(Method::POST, "users//:send"), "user id is empty");
        assert_eq!(err(Method::POST, "users/:send"), "user id is empty");
        assert_eq!(err(Method::POST, "users/ "), "user id is only whitespace");
        assert_eq!(
            err(Method::POST, "groups/./:send"),
            "group name `.` cannot be used in a URL path"
        );
        assert_eq!(
            err(Method::POST, "connections/:send"),
            "connection id is empty"
        );
        assert_eq!(
            err(Method::POST, "users/ /:closeConnections"),
            "user id is only whitespace"
        );
        assert_eq!(
            err(Method::POST, "groups//:closeConnections"),
            "group name is empty"
        );
        assert_eq!(
            err(Method::GET, "connections/.."),
            "connection id `..` cannot be used in a URL path"
        );
        assert_eq!(
            err(Method::DELETE, "connections/ "),
            "connection id is only whitespace"
        );
        assert_eq!(
            err(Method::DELETE, "connections//groups"),
            "connection id is empty"
        );
        assert_eq!(
            err(Method::HEAD, "groups/\t"),
            "group name is only whitespace"
        );
        assert_eq!(
            err(Method::PUT, "groups/g/connections/"),
            "connection id is empty"
        );
        assert_eq!(
            err(Method::DELETE, "connections/c/groups/"),
            "group name is empty"
        );
        assert_eq!(err(Method::GET, "users/"), "user id is empty");
        assert_eq!(err(Method::PUT, "users//groups/g"), "user id is empty");
        assert_eq!(
            err(Method::DELETE, "groups/g/users/."),
            "user id `.` cannot be used in a URL path"
        );
        assert_eq!(err(Method::GET, "users/u/groups/"), "group name is empty");
        assert_eq!(err(Method::DELETE, "users//groups"), "user id is empty");
        assert!(
            err(Method::POST, &format!("groups/{}", "g".repeat(1025))).contains("longer than 1024")
        );
        // Good names pass; unknown shapes stay unknown (404), whatever their names.
        for (m, p) in [
            (Method::POST, ""),
            (Method::POST, ":send"),
            (Method::POST, "users/a b/:send"),
            (Method::PUT, "connections/c/groups/g 1"),
            (Method::GET, "users/u/groups/g"),
        ] {
            assert_eq!(checked(m.clone(), p), Some(Ok(())), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "users"),
            (Method::GET, "users//x/y"),
            (Method::PATCH, "users/u/groups/g"),
            (Method::POST, "nope/x"),
        ] {
            assert_eq!(checked(m.clone(), p), None, "{m} {p}");
        }
    }

    #[test]
    fn payloads() {
        let h = HeaderMap::new();
        assert_eq!(
            payload(&h, br#"{"target":"t","arguments":[1]}"#).unwrap(),
            ("t".to_string(), vec![json!(1)])
        );
        assert_eq!(
            payload(&h, br#"{"target":"t"}"#).unwrap().1,
            Vec::<Value>::new()
        );
        assert!(payload(&h, br#"{"target":""}"#).is_err());
        assert!(payload(&h, br#"{"arguments":[]}"#).is_err());
        assert!(payload(&h, b"nope").is_err());

        let mut mp = HeaderMap::new();
        mp.insert(
            header::CONTENT_TYPE,
            "application/x-msgpack".parse().unwrap(),
        );
        let mut body = Vec::new();
        rmpv::encode::write_value(
            &mut body,
            &rmpv::Value::Map(vec![
                ("target".into(), "t".into()),
                ("arguments".into(), rmpv::Value::Array(vec![2.into()])),
            ]),
        )
        .unwrap();
        assert_eq!(
            payload(&mp, &body).unwrap(),
            ("t".to_string(), vec![json!(2)])
        );

        let mut os = HeaderMap::new();
        os.insert(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().unwrap(),
        );
        let frame = json_protocol::encode(&HubMessage::invocation("x", vec![json!("a")])).unwrap();
        let mut body = Vec::new();
        rmpv::encode::write_value(
            &mut body,
            &rmpv::Value::Map(vec![("json".into(), rmpv::Value::Binary(frame))]),
        )
        .unwrap();
        assert_eq!(
            payload(&os, &body).unwrap(),
            ("x".to_string(), vec![json!("a")])
        );
        assert!(payload(&os, b"\xc1").is_err());
    }
}
