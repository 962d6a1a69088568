//! Every difference between the 2022-06-01 data-plane API (facts §4.1, §4.3) and the legacy
//! `/api/v1` one (facts §4.2) in one place: [`ApiVersion`], the path of each operation, the
//! `api-version` query and the token audience, plus the percent-encoding of path segments.
//! Names are checked here (with [`names`]) before they become a segment.

use std::fmt;

use crate::message::Recipient;
use crate::signalr::names;

use super::RestError;

/// The `api-version` query value of every 2022-06-01 call.
pub const API_VERSION_2022_06_01: &str = "2022-06-01";

/// Which REST API paths to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    /// `/api/hubs/...` with `?api-version=2022-06-01` (the current API).
    #[default]
    V2022_06_01,
    /// The legacy `/api/v1/hubs/...` paths, no `api-version` query.
    V1,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::V2022_06_01 => "2022-06-01",
            ApiVersion::V1 => "v1",
        })
    }
}

/// A send's path, with what the client needs to know about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SendPath {
    /// Human name for logs and errors (`send to group`).
    pub operation: &'static str,
    pub path: String,
    /// Whether the API takes `excluded` connection ids for this recipient (hub and group).
    pub takes_excluded: bool,
}

impl ApiVersion {
    /// `/api/hubs/{hub}` or `/api/v1/hubs/{hub}`, hub validated and lowercased.
    pub(crate) fn hub(self, hub: &str) -> Result<String, RestError> {
        names::hub(hub).map_err(|e| RestError::InvalidArgument(e.to_string()))?;
        let prefix = match self {
            ApiVersion::V2022_06_01 => "/api/hubs",
            ApiVersion::V1 => "/api/v1/hubs",
        };
        Ok(format!("{prefix}/{}", encode_segment(&hub.to_lowercase())))
    }

    /// Where a message for `to` is posted: 2022-06-01 sends end in `/:send`; v1 posts to
    /// the resource itself.
    pub(crate) fn send(self, hub: &str, to: &Recipient) -> Result<SendPath, RestError> {
        let hub = self.hub(hub)?;
        let send = match self {
            ApiVersion::V2022_06_01 => "/:send",
            ApiVersion::V1 => "",
        };
        let (operation, path) = match to {
            Recipient::All => ("send to hub", format!("{hub}{send}")),
            Recipient::User(user) => (
                "send to user",
                format!("{hub}/users/{}{send}", segment(names::user, user)?),
            ),
            Recipient::Group(group) => (
                "send to group",
                format!("{hub}/groups/{}{send}", segment(names::group, group)?),
            ),
            Recipient::Connection(connection) => (
                "send to connection",
                format!(
                    "{hub}/connections/{}{send}",
                    segment(names::connection, connection)?
                ),
            ),
        };
        Ok(SendPath {
            operation,
            path,
            takes_excluded: to.takes_excluded(),
        })
    }

    /// `{hub}/connections/{connection}` (close, exists): the same in both versions.
    pub(crate) fn connection(self, hub: &str, connection: &str) -> Result<String, RestError> {
        Ok(format!(
            "{}/connections/{}",
            self.hub(hub)?,
            segment(names::connection, connection)?
        ))
    }

    /// `{hub}/users/{user}` (exists): the same in both versions.
    pub(crate) fn user(self, hub: &str, user: &str) -> Result<String, RestError> {
        Ok(format!(
            "{}/users/{}",
            self.hub(hub)?,
            segment(names::user, user)?
        ))
    }

    /// `{hub}/groups/{group}` (exists): the same in both versions.
    pub(crate) fn group(self, hub: &str, group: &str) -> Result<String, RestError> {
        Ok(format!(
            "{}/groups/{}",
            self.hub(hub)?,
            segment(names::group, group)?
        ))
    }

    /// `{hub}/:sendBatch`, the same in both versions: several messages of one hub in one
    /// request, in order. A herald extension the embedded service answers (see
    /// [`RestOptions::batch_sends`](super::RestOptions)); Azure has no such operation.
    pub(crate) fn send_batch(self, hub: &str) -> Result<String, RestError> {
        Ok(format!("{}/:sendBatch", self.hub(hub)?))
    }

    /// `{hub}/presence`, the same in both versions. A herald extension (the embedded
    /// service answers it); Azure SignalR Service has no such operation and answers 404.
    pub(crate) fn presence(self, hub: &str) -> Result<String, RestError> {
        Ok(format!("{}/presence", self.hub(hub)?))
    }

    /// Both versions agree: `groups/{group}/connections/{connection}`.
    pub(crate) fn group_connection(
        self,
        hub: &str,
        group: &str,
        connection: &str,
    ) -> Result<String, RestError> {
        Ok(format!(
            "{}/groups/{}/connections/{}",
            self.hub(hub)?,
            segment(names::group, group)?,
            segment(names::connection, connection)?
        ))
    }

    /// 2022-06-01: `users/{user}/groups/{group}`; v1: `groups/{group}/users/{user}`.
    pub(crate) fn user_group(
        self,
        hub: &str,
        group: &str,
        user: &str,
    ) -> Result<String, RestError> {
        let hub = self.hub(hub)?;
        let group = segment(names::group, group)?;
        let user = segment(names::user, user)?;
        Ok(match self {
            ApiVersion::V2022_06_01 => format!("{hub}/users/{user}/groups/{group}"),
            ApiVersion::V1 => format!("{hub}/groups/{group}/users/{user}"),
        })
    }

    /// `{hub}/users/{user}/groups` (remove from all groups): the same in both versions.
    pub(crate) fn user_groups(self, hub: &str, user: &str) -> Result<String, RestError> {
        Ok(format!("{}/groups", self.user(hub, user)?))
    }

    /// `{hub}/connections/{connection}/groups`: only in 2022-06-01.
    pub(crate) fn connection_groups(
        self,
        operation: &'static str,
        hub: &str,
        connection: &str,
    ) -> Result<String, RestError> {
        match self {
            ApiVersion::V2022_06_01 => Ok(format!("{}/groups", self.connection(hub, connection)?)),
            ApiVersion::V1 => Err(RestError::Unsupported {
                operation,
                api: self,
            }),
        }
    }

    /// The service's health probe.
    pub(crate) fn health(self) -> &'static str {
        match self {
            ApiVersion::V2022_06_01 => "/api/health",
            ApiVersion::V1 => "/api/v1/health",
        }
    }

    /// The query that leads every call's query string (`api-version=2022-06-01`), if any.
    pub(crate) fn version_query(self) -> Option<String> {
        match self {
            ApiVersion::V2022_06_01 => Some(format!("api-version={API_VERSION_2022_06_01}")),
            ApiVersion::V1 => None,
        }
    }

    /// What the token audience holds after `scheme://host`: the API path, with
    /// `?api-version=` in 2022-06-01 (the SDK's form). Extra query parameters (`excluded`,
    /// `ttl`, `reason`) are never part of it.
    pub(crate) fn audience_path(self, path: &str) -> String {
        match self.version_query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }
}

/// A checked name (see [`names`]) as one percent-encoded path segment.
fn segment(
    check: fn(&str) -> Result<(), names::NameError>,
    value: &str,
) -> Result<String, RestError> {
    check(value).map_err(|e| RestError::InvalidArgument(e.to_string()))?;
    Ok(encode_segment(value))
}

/// Percent-encode everything but RFC 3986 unreserved characters (as .NET's
/// `Uri.EscapeDataString`), so ids with spaces, `/`, `?`, `#` or `%` stay one segment or one
/// query value.
pub(crate) fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names() {
        for ok in ["chat", "Chat_1", "a`,.[]", &"h".repeat(128)] {
            assert!(names::hub(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "_a", "a b", "a/b", "a-b", &"h".repeat(129)] {
            assert!(names::hub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            encode_segment("a b/c?d#e%f~g.h-i_j"),
            "a%20b%2Fc%3Fd%23e%25f~g.h-i_j"
        );
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn versions_differ_only_where_the_specs_do() {
        let new = ApiVersion::V2022_06_01;
        let old = ApiVersion::V1;
        let group = Recipient::Group("ops team".into());
        assert_eq!(
            new.send("Chat", &group).unwrap().path,
            "/api/hubs/chat/groups/ops%20team/:send"
        );
        assert_eq!(
            old.send("Chat", &group).unwrap().path,
            "/api/v1/hubs/chat/groups/ops%20team"
        );
        assert!(new.send("Chat", &Recipient::All).unwrap().takes_excluded);
        assert!(
            !old.send("Chat", &Recipient::User("u".into()))
                .unwrap()
                .takes_excluded
        );
        assert_eq!(
            new.user_group("chat", "g", "u").unwrap(),
            "/api/hubs/chat/users/u/groups/g"
        );
        assert_eq!(
            old.user_group("chat", "g", "u").unwrap(),
            "/api/v1/hubs/chat/groups/g/users/u"
        );
        assert_eq!(
            new.audience_path("/api/health"),
            "/api/health?api-version=2022-06-01"
        );
        assert_eq!(old.audience_path("/api/v1/health"), "/api/v1/health");
        assert!(matches!(
            old.connection_groups("op", "chat", "c"),
            Err(RestError::Unsupported {
                api: ApiVersion::V1,
                ..
            })
        ));
        assert_eq!(
            new.connection_groups("op", "chat", "c").unwrap(),
            "/api/hubs/chat/connections/c/groups"
        );
    }
}
