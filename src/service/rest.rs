//! The data-plane REST API, Azure SignalR's: `/api/...` (2022-06-01) and `/api/v1/...`, plus
//! the emulator's aliases (`hubs/{hub}` and `hubs/{hub}/:send`; both orderings of
//! connection/group and user/group paths; GET and HEAD for every existence check) →
//! ServiceHandle internals.
//!
//! Auth: `Authorization: Bearer` signed with an access key, `aud` = the request URL without
//! query (see `auth.rs`). Status codes follow the 2022-06-01 spec under `/api` and the v1
//! spec under `/api/v1`; a 404 from an existence check or a group operation carries
//! `x-ms-error-code`. Hub names are lowercased (`application` prefixes them as `app_hub`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ServiceHandle, Shared, auth};
use crate::message::{Message, Recipient};
use crate::signalr::names;
use crate::signalr::protocol::{HubMessage, json as json_protocol, msgpack};

/// Which spec's status codes apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/api/...`: 2022-06-01.
    Latest,
    /// `/api/v1/...`.
    V1,
}

/// Why a REST request failed, as `{code, message}` (Azure's `ErrorDetail`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "Error.Request.Invalid",
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::NOT_FOUND
            && let Ok(value) = HeaderValue::from_str(self.code)
        {
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
        Ok(status) => status.into_response(),
        Err(error) => error.into_response(),
    }
}

fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<StatusCode, ApiError> {
    let path = uri.path().strip_prefix("/api").unwrap_or(uri.path());
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(auth::percent_decode)
        .collect();
    let (api, segments) = match segments.split_first() {
        Some((first, rest)) if first == "v1" => (Api::V1, rest),
        _ => (Api::Latest, segments.as_slice()),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let read = *method == Method::GET || *method == Method::HEAD;

    if read && segments == ["health"] {
        return Ok(StatusCode::OK);
    }
    if let Err(error) = auth::rest(shared, headers, uri) {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "Error.Request.Unauthorized",
            message: error.to_string(),
        });
    }
    let Some((&"hubs", [hub, rest @ ..])) = segments.split_first() else {
        return Err(no_route());
    };
    let query = auth::Query::of(uri);
    let param = |name: &str| query.get(name);
    let hub = hub_name(hub, param("application"))?;
    let excluded: Vec<String> = query.all("excluded").map(str::to_string).collect();
    let reason = param("reason");
    let handle = ServiceHandle {
        shared: shared.clone(),
    };
    let send = |to: Recipient, excluded: Vec<String>| -> Result<StatusCode, ApiError> {
        let (target, arguments) = payload(headers, body)?;
        let report = handle.send(&Message {
            hub: hub.clone(),
            to,
            target,
            arguments,
            excluded,
        });
        tracing::debug!(hub = %hub, ?report, "REST send");
        Ok(StatusCode::ACCEPTED)
    };
    let close = |to: Recipient| {
        handle.close_connections(&hub, &to, &excluded, reason);
        Ok(StatusCode::NO_CONTENT)
    };
    let m = method.clone();
    match (m, rest) {
        // Sends.
        (Method::POST, [] | [":send"]) => send(Recipient::All, excluded.clone()),
        (Method::POST, ["users", user] | ["users", user, ":send"]) => {
            send(Recipient::User(name(user, names::user)?), Vec::new())
        }
        (Method::POST, ["groups", group] | ["groups", group, ":send"]) => {
            send(Recipient::Group(group_name(group)?), excluded.clone())
        }
        (Method::POST, ["connections", id] | ["connections", id, ":send"]) => send(
            Recipient::Connection(name(id, names::connection)?),
            Vec::new(),
        ),
        // Close many.
        (Method::POST, [":closeConnections"]) => close(Recipient::All),
        (Method::POST, ["users", user, ":closeConnections"]) => {
            close(Recipient::User(name(user, names::user)?))
        }
        (Method::POST, ["groups", group, ":closeConnections"]) => {
            close(Recipient::Group(group_name(group)?))
        }
        // Connections.
        (m, ["connections", id]) if read_method(&m) => {
            if handle.connection_exists(&hub, id) {
                Ok(StatusCode::OK)
            } else {
                Err(connection_not_found("Warning.Connection.NotExisted", id))
            }
        }
        (Method::DELETE, ["connections", id]) => {
            handle.close_connection(&hub, id, reason);
            Ok(match api {
                Api::Latest => StatusCode::OK,
                Api::V1 => StatusCode::ACCEPTED,
            })
        }
        (Method::DELETE, ["connections", id, "groups"]) => {
            handle.remove_connection_from_all_groups(&hub, id);
            Ok(StatusCode::OK)
        }
        // Groups.
        (m, ["groups", group]) if read_method(&m) => {
            if handle.group_exists(&hub, &group_name(group)?) {
                Ok(StatusCode::OK)
            } else {
                Err(ApiError::not_found(
                    "Warning.Group.NotExisted",
                    format!("group `{group}` has no connections"),
                ))
            }
        }
        (
            m @ (Method::PUT | Method::DELETE),
            ["groups", group, "connections", id] | ["connections", id, "groups", group],
        ) => {
            let group = group_name(group)?;
            if m == Method::PUT {
                if handle.add_connection_to_group(&hub, &group, id) {
                    Ok(StatusCode::OK)
                } else {
                    Err(connection_not_found("Error.Connection.NotExisted", id))
                }
            } else if handle.remove_connection_from_group(&hub, &group, id) {
                Ok(StatusCode::OK)
            } else {
                Err(connection_not_found("Warning.Connection.NotExisted", id))
            }
        }
        // Users.
        (m, ["users", user]) if read_method(&m) => {
            if handle.user_exists(&hub, user) {
                Ok(StatusCode::OK)
            } else {
                Err(ApiError::not_found(
                    "Warning.User.NotExisted",
                    format!("user `{user}` has no connections"),
                ))
            }
        }
        (m, ["users", user, "groups", group] | ["groups", group, "users", user]) => {
            let user = name(user, names::user)?;
            let group = group_name(group)?;
            match m {
                Method::PUT => {
                    let ttl = match param("ttl") {
                        None | Some("") => None,
                        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
                            ApiError::bad_request("`ttl` must be a non-negative integer (seconds)")
                        })?)),
                    };
                    handle.add_user_to_group(&hub, &group, &user, ttl);
                    Ok(match api {
                        Api::Latest => StatusCode::OK,
                        Api::V1 => StatusCode::ACCEPTED,
                    })
                }
                Method::DELETE => {
                    handle.remove_user_from_group(&hub, &group, &user);
                    Ok(match api {
                        Api::Latest => StatusCode::NO_CONTENT,
                        Api::V1 => StatusCode::ACCEPTED,
                    })
                }
                m if read_method(&m) => {
                    if handle.user_in_group(&hub, &group, &user) {
                        Ok(StatusCode::OK)
                    } else {
                        Err(ApiError::not_found(
                            "Info.User.NotInGroup",
                            format!("user `{user}` is not in group `{group}`"),
                        ))
                    }
                }
                _ => Err(no_route()),
            }
        }
        (Method::DELETE, ["users", user, "groups"]) => {
            handle.remove_user_from_all_groups(&hub, &name(user, names::user)?);
            Ok(match api {
                Api::Latest => StatusCode::NO_CONTENT,
                Api::V1 => StatusCode::OK,
            })
        }
        _ => Err(no_route()),
    }
}

fn read_method(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

fn no_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "Error.Request.NotFound",
        message: "no such REST API operation".into(),
    }
}

fn connection_not_found(code: &'static str, id: &str) -> ApiError {
    ApiError::not_found(code, format!("connection `{id}` does not exist"))
}

/// A hub (and optional application) name checked by [`names`]; returns the lowercased
/// table key.
fn hub_name(hub: &str, application: Option<&str>) -> Result<String, ApiError> {
    names::hub(hub).map_err(invalid)?;
    match application.filter(|a| !a.is_empty()) {
        None => Ok(hub.to_ascii_lowercase()),
        Some(app) => {
            names::application(app).map_err(invalid)?;
            Ok(format!("{app}_{hub}").to_ascii_lowercase())
        }
    }
}

fn invalid(e: names::NameError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// A group name checked by [`names::group`].
fn group_name(group: &str) -> Result<String, ApiError> {
    names::group(group).map_err(invalid)?;
    Ok(group.to_string())
}

/// A user or connection id checked by `check`.
fn name(value: &str, check: fn(&str) -> Result<(), names::NameError>) -> Result<String, ApiError> {
    check(value).map_err(invalid)?;
    Ok(value.to_string())
}

/// The send body: `{"target", "arguments"}` as JSON (default) or MessagePack
/// (`application/x-msgpack`), or the .NET SDK's `application/octet-stream` map of
/// pre-serialised frames (`{"json": bytes, "messagepack": bytes}`).
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<(String, Vec<Value>), ApiError> {
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
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?,
    };
    let target = value
        .get("target")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("`target` is required"))?
        .to_string();
    let arguments = match value.get("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("`arguments` must be an array")),
    };
    Ok((target, arguments))
}

fn read_msgpack(body: &[u8]) -> Result<rmpv::Value, ApiError> {
    let mut cursor = std::io::Cursor::new(body);
    rmpv::decode::read_value_with_max_depth(&mut cursor, 64)
        .map_err(|e| ApiError::bad_request(format!("invalid MessagePack body: {e}")))
}

fn pre_serialised(body: &[u8]) -> Result<(String, Vec<Value>), ApiError> {
    let rmpv::Value::Map(entries) = read_msgpack(body)? else {
        return Err(ApiError::bad_request(
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
        return Err(ApiError::bad_request(
            "the frame map has neither `json` nor `messagepack`",
        ));
    }
    .map_err(|e| ApiError::bad_request(format!("invalid pre-serialised frame: {e}")))?;
    messages
        .into_iter()
        .find_map(|m| match m {
            HubMessage::Invocation {
                target, arguments, ..
            } if !target.is_empty() => Some((target, arguments)),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("the frame holds no invocation"))
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
        assert!(group_name("  ").is_err());
        assert!(group_name(&"g".repeat(1025)).is_err());
        assert!(group_name("g 1").is_ok());
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
