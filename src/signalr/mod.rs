//! Talking to a SignalR service (Azure or embedded): connection strings and endpoint URLs,
//! access tokens, several endpoints with roles (`endpoints`), the data-plane REST client and
//! the hub protocol.
//!
//! [`ServiceEndpoint`] is parsed from an Azure SignalR connection string with the rules of the
//! official SDK (`ConnectionStringParser.cs`) and derives every URL and token audience the
//! daemon needs. Its `Debug` and `Display` never show the access key.

pub mod endpoints;
pub mod names;
pub mod protocol;
pub mod rest;
pub mod token;
pub mod upstream;

use std::fmt;
use std::str::FromStr;

use reqwest::Url;

/// The `Version` herald writes when it composes a connection string itself (as the emulator
/// prints it).
const DEFAULT_VERSION: &str = "1.0";

/// Why a connection string (or an endpoint given piece by piece) was refused.
///
/// Values echoed in these messages pass through a scrubber first: the access key never
/// appears, even when a connection string was pasted with the wrong separators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string has no Endpoint")]
    MissingEndpoint,
    #[error("connection string has no AccessKey")]
    MissingAccessKey,
    #[error("the AccessKey is empty")]
    EmptyAccessKey,
    #[error("connection string has the key `{key}` more than once")]
    Duplicate { key: String },
    #[error("{key} `{value}` is not a valid http(s) URI: {reason}")]
    InvalidUri {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("Version `{value}` is not supported (expected 1.x, e.g. `1.0`)")]
    InvalidVersion { value: String },
    #[error("Port `{value}` is not an integer in 1..65535")]
    InvalidPort { value: String },
    #[error(
        "AuthType={value} (Microsoft Entra ID) is not supported; use an AccessKey connection string"
    )]
    UnsupportedAuthType { value: String },
}

/// One SignalR service: where clients connect, where REST calls go, which audiences tokens
/// carry, and the shared access key that signs them.
///
/// Built from a connection string ([`ServiceEndpoint::from_connection_string`]) or, for the
/// embedded service, from its parts ([`ServiceEndpoint::new`]). `Clone` and `PartialEq` are
/// derived (a config diff compares endpoints); `Debug` and `Display` are written by hand so
/// that the key is always shown as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceEndpoint {
    /// `Endpoint`, trailing `/` trimmed, with its own port (the `Port` key is not applied
    /// here): token audiences are built from its scheme and host only.
    endpoint: Url,
    /// `Port`: replaces the port of `endpoint` for the client and REST URLs, and nothing else.
    port: Option<u16>,
    /// `AccessKey`, used as UTF-8 text (not base64-decoded) to sign HS256 tokens.
    access_key: String,
    /// `Version`, kept only to print the connection string back.
    version: Option<String>,
    /// `ClientEndpoint`: the base handed to clients in negotiate (reverse proxy / gateway).
    client_endpoint: Option<Url>,
    /// `ServerEndpoint`: the base for REST calls.
    server_endpoint: Option<Url>,
}

impl ServiceEndpoint {
    /// Parse an Azure SignalR connection string
    /// (`Endpoint=https://x.service.signalr.net;AccessKey=...;Version=1.0;`).
    ///
    /// Keys are case-insensitive, values trimmed, empty segments and segments without `=`
    /// skipped, and only the first `=` splits (keys may end in base64 padding). Unknown keys
    /// are ignored, as the SDK does.
    pub fn from_connection_string(s: &str) -> Result<Self, ConnectionStringError> {
        // (lowercased key, key as written, trimmed value)
        let mut pairs: Vec<(String, &str, &str)> = Vec::new();
        for segment in s.split(';') {
            let Some((key, value)) = segment.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.is_empty() {
                continue;
            }
            pairs.push((key.to_ascii_lowercase(), key, value.trim()));
        }
        let get = |name: &str| pairs.iter().find(|(k, _, _)| k == name).map(|(_, _, v)| *v);
        // Known before any error is built, so every echoed value can be scrubbed of it.
        let key_hint = get("accesskey");

        for (i, (lower, written, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k, _, _)| k == lower) {
                return Err(ConnectionStringError::Duplicate {
                    key: scrub(written, key_hint),
                });
            }
        }

        if let Some(auth) = get("authtype").filter(|v| !v.is_empty()) {
            return Err(ConnectionStringError::UnsupportedAuthType {
                value: scrub(auth, key_hint),
            });
        }

        let endpoint = get("endpoint").ok_or(ConnectionStringError::MissingEndpoint)?;
        let endpoint = parse_http_uri("Endpoint", endpoint.trim_end_matches('/'), key_hint)?;

        let version = match get("version") {
            Some(v) if is_supported_version(v) => Some(v.to_string()),
            Some(v) => {
                return Err(ConnectionStringError::InvalidVersion {
                    value: scrub(v, key_hint),
                });
            }
            None => None,
        };

        let port = match get("port") {
            Some(p) => Some(
                parse_port(p).ok_or_else(|| ConnectionStringError::InvalidPort {
                    value: scrub(p, key_hint),
                })?,
            ),
            None => None,
        };

        let client_endpoint = get("clientendpoint")
            .map(|v| parse_http_uri("ClientEndpoint", v, key_hint))
            .transpose()?;
        let server_endpoint = get("serverendpoint")
            .map(|v| parse_http_uri("ServerEndpoint", v, key_hint))
            .transpose()?;

        let access_key = get("accesskey").ok_or(ConnectionStringError::MissingAccessKey)?;
        if access_key.is_empty() {
            return Err(ConnectionStringError::EmptyAccessKey);
        }

        Ok(ServiceEndpoint {
            endpoint,
            port,
            access_key: access_key.to_string(),
            version,
            client_endpoint,
            server_endpoint,
        })
    }

    /// An endpoint from its parts, as the embedded service announces itself:
    /// `endpoint_url` (http or https, trailing `/` trimmed), an optional `Port` that replaces
    /// its port for client and REST URLs, and the access key.
    pub fn new(
        endpoint_url: &str,
        port: Option<u16>,
        access_key: &str,
    ) -> Result<Self, ConnectionStringError> {
        if access_key.is_empty() {
            return Err(ConnectionStringError::EmptyAccessKey);
        }
        let endpoint = parse_http_uri(
            "Endpoint",
            endpoint_url.trim().trim_end_matches('/'),
            Some(access_key),
        )?;
        if port == Some(0) {
            return Err(ConnectionStringError::InvalidPort { value: "0".into() });
        }
        Ok(ServiceEndpoint {
            endpoint,
            port,
            access_key: access_key.to_string(),
            version: Some(DEFAULT_VERSION.to_string()),
            client_endpoint: None,
            server_endpoint: None,
        })
    }

    /// The URL a client connects to after negotiate:
    /// `{ClientEndpoint or Endpoint+Port}/client/?hub={hub lowercased}`.
    ///
    /// Unlike the SDK, a base with a path but no trailing `/` still joins correctly.
    pub fn client_url(&self, hub: &str) -> String {
        let base = match &self.client_endpoint {
            Some(url) => url.as_str().to_string(),
            None => self.endpoint_with_port().as_str().to_string(),
        };
        let sep = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{sep}client/?hub={}", hub.to_lowercase())
    }

    /// The `aud` of a client token: `scheme://host/client/?hub={hub lowercased}` of
    /// `Endpoint`, without any port (facts §0.2: the SDK drops it, and the service compares
    /// audiences ignoring it).
    pub fn client_audience(&self, hub: &str) -> String {
        format!("{}/client/?hub={}", self.origin(), hub.to_lowercase())
    }

    /// Where REST calls go: `ServerEndpoint`, else `Endpoint` with `Port` applied; never a
    /// trailing `/`, so an API path starting with `/` can be appended.
    pub fn rest_base(&self) -> String {
        let url = match &self.server_endpoint {
            Some(url) => url.clone(),
            None => self.endpoint_with_port(),
        };
        url.as_str().trim_end_matches('/').to_string()
    }

    /// The `aud` of a REST token for a call to `path_and_query` (e.g.
    /// `/api/hubs/chat/:send?api-version=2022-06-01`): `scheme://host` of `Endpoint`, no port,
    /// followed by `path_and_query` as given.
    pub fn rest_audience(&self, path_and_query: &str) -> String {
        let sep = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!("{}{sep}{path_and_query}", self.origin())
    }

    /// The shared access key (UTF-8 text, the HMAC key of every token).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The connection string with the key shown as `AccessKey=***`, for logs and errors.
    pub fn connection_string_redacted(&self) -> String {
        self.compose("***")
    }

    /// The full connection string, key included, for `herald service` to print so that a
    /// daemon (or an Azure Functions app) can be pointed at the embedded service.
    pub fn to_connection_string(&self) -> String {
        self.compose(&self.access_key)
    }

    /// `Endpoint`=…;`Port`=…;`AccessKey`=…;`Version`=…; in the emulator's order, followed by the
    /// optional client and server endpoints.
    fn compose(&self, key: &str) -> String {
        let mut s = format!("Endpoint={};", self.endpoint.as_str().trim_end_matches('/'));
        if let Some(port) = self.port {
            s.push_str(&format!("Port={port};"));
        }
        s.push_str(&format!("AccessKey={key};"));
        if let Some(version) = &self.version {
            s.push_str(&format!("Version={version};"));
        }
        if let Some(url) = &self.client_endpoint {
            s.push_str(&format!("ClientEndpoint={url};"));
        }
        if let Some(url) = &self.server_endpoint {
            s.push_str(&format!("ServerEndpoint={url};"));
        }
        s
    }

    /// `Endpoint` with `Port` applied.
    fn endpoint_with_port(&self) -> Url {
        let mut url = self.endpoint.clone();
        if let Some(port) = self.port {
            // Cannot fail: `endpoint` was checked to be http(s) with a host.
            let _ = url.set_port(Some(port));
        }
        url
    }

    /// `scheme://host` of `Endpoint`, never with a port (IPv6 hosts keep their brackets).
    fn origin(&self) -> String {
        format!(
            "{}://{}",
            self.endpoint.scheme(),
            self.endpoint.host_str().unwrap_or_default()
        )
    }
}

impl FromStr for ServiceEndpoint {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceEndpoint::from_connection_string(s)
    }
}

impl fmt::Display for ServiceEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.connection_string_redacted())
    }
}

impl fmt::Debug for ServiceEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceEndpoint")
            .field("endpoint", &self.endpoint.as_str())
            .field("port", &self.port)
            .field("access_key", &"***")
            .field("version", &self.version)
            .field(
                "client_endpoint",
                &self.client_endpoint.as_ref().map(Url::as_str),
            )
            .field(
                "server_endpoint",
                &self.server_endpoint.as_ref().map(Url::as_str),
            )
            .finish()
    }
}

/// Parse an absolute http(s) URI with a host. Query strings and fragments are refused
/// because paths are appended to these bases.
fn parse_http_uri(
    key: &'static str,
    value: &str,
    access_key: Option<&str>,
) -> Result<Url, ConnectionStringError> {
    let invalid = |reason: String| ConnectionStringError::InvalidUri {
        key,
        value: scrub(value, access_key),
        reason,
    };
    let url = Url::parse(value).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment".into()));
    }
    Ok(url)
}

/// `Port`: an integer in 1..=65535 (leading/trailing spaces already trimmed).
fn parse_port(value: &str) -> Option<u16> {
    value.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The SDK's `^1\.\d+(?:[\w-.]+)?$`: `1.`, at least one digit, then word characters, `-`
/// or `.` only.
fn is_supported_version(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("1.") else {
        return false;
    };
    rest.chars().next().is_some_and(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Make a value safe to echo in an error: the access key (when known) is replaced by `***`,
/// and anything from an `AccessKey` marker on is cut, for strings pasted with the wrong
/// separators (`Endpoint=https://x,AccessKey=...`).
fn scrub(value: &str, access_key: Option<&str>) -> String {
    let mut out = match access_key.filter(|k| !k.is_empty()) {
        Some(key) => value.replace(key, "***"),
        None => value.to_string(),
    };
    if let Some(i) = out.to_ascii_lowercase().find("accesskey") {
        out.truncate(i);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    fn parse(s: &str) -> Result<ServiceEndpoint, ConnectionStringError> {
        ServiceEndpoint::from_connection_string(s)
    }

    #[test]
    fn emulator_string() {
        let e = parse(&format!(
            "Endpoint=http://localhost;Port=8888;AccessKey={KEY};Version=1.0;"
        ))
        .unwrap();
        assert_eq!(e.access_key(), KEY);
        assert_eq!(
            e.client_url("Chat"),
            "http://localhost:8888/client/?hub=chat"
        );
        assert_eq!(
            e.client_audience("Chat"),
            "http://localhost/client/?hub=chat"
        );
        assert_eq!(e.rest_base(), "http://localhost:8888");
        assert_eq!(
            e.rest_audience("/api/hubs/chat/:send?api-version=2022-06-01"),
            "http://localhost/api/hubs/chat/:send?api-version=2022-06-01"
        );
        assert_eq!(
            e.to_connection_string(),
            format!("Endpoint=http://localhost;Port=8888;AccessKey={KEY};Version=1.0;")
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_values_trimmed() {
        let e = parse(&format!(
            " endpoint = https://x.service.signalr.net/ ; ACCESSKEY= {KEY} ;version=1.0;;"
        ))
        .unwrap();
        assert_eq!(e.access_key(), KEY);
        assert_eq!(e.rest_base(), "https://x.service.signalr.net");
        assert_eq!(
            e.client_url("hub"),
            "https://x.service.signalr.net/client/?hub=hub"
        );
    }

    #[test]
    fn only_the_first_equals_splits() {
        let e = parse("Endpoint=https://x;AccessKey=abc==;").unwrap();
        assert_eq!(e.access_key(), "abc==");
        let e = parse("AccessKey=a=b=c;Endpoint=https://x").unwrap();
        assert_eq!(e.access_key(), "a=b=c");
    }

    #[test]
    fn unknown_keys_and_segments_without_equals_are_ignored() {
        let e = parse("Endpoint=https://x;AccessKey=k;Foo=bar;loose;ClientId=abc").unwrap();
        assert_eq!(e.access_key(), "k");
    }

    #[test]
    fn port_replaces_only_the_endpoint_port() {
        let e = parse(
            "Endpoint=https://svc:1234/;Port=8443;AccessKey=k;\
             ClientEndpoint=https://gw:9000/signalr/",
        )
        .unwrap();
        assert_eq!(e.rest_base(), "https://svc:8443");
        // Port does not apply to ClientEndpoint.
        assert_eq!(
            e.client_url("Chat"),
            "https://gw:9000/signalr/client/?hub=chat"
        );
        // Audiences never carry a port.
        assert_eq!(e.client_audience("Chat"), "https://svc/client/?hub=chat");
        assert_eq!(e.rest_audience("/api/health"), "https://svc/api/health");
    }

    #[test]
    fn client_endpoint_is_used_for_client_url_with_or_without_slash() {
        let e = parse("Endpoint=https://svc;AccessKey=k;ClientEndpoint=https://gw/prefix").unwrap();
        assert_eq!(e.client_url("A"), "https://gw/prefix/client/?hub=a");
        let e = parse("Endpoint=https://svc;AccessKey=k;ClientEndpoint=https://gw").unwrap();
        assert_eq!(e.client_url("A"), "https://gw/client/?hub=a");
        // The audience still comes from Endpoint.
        assert_eq!(e.client_audience("A"), "https://svc/client/?hub=a");
    }

    #[test]
    fn server_endpoint_is_used_for_rest_base() {
        let e = parse(
            "Endpoint=https://svc;Port=8080;AccessKey=k;ServerEndpoint=http://internal:7000/",
        )
        .unwrap();
        assert_eq!(e.rest_base(), "http://internal:7000");
        assert_eq!(e.client_url("h"), "https://svc:8080/client/?hub=h");
        assert_eq!(
            e.rest_audience("api/hubs/h/:send"),
            "https://svc/api/hubs/h/:send"
        );
    }

    #[test]
    fn ipv6_host_keeps_brackets_in_audience() {
        let e = parse("Endpoint=http://[::1];Port=8888;AccessKey=k").unwrap();
        assert_eq!(e.rest_base(), "http://[::1]:8888");
        assert_eq!(e.client_audience("h"), "http://[::1]/client/?hub=h");
    }

    #[test]
    fn versions() {
        for ok in ["1.0", "1.10", "1.0-preview", "1.0.1_beta"] {
            assert!(is_supported_version(ok), "{ok}");
            parse(&format!("Endpoint=https://x;AccessKey=k;Version={ok}")).unwrap();
        }
        for bad in ["2.0", "1", "1.", "1.x", "1.0+build", "v1.0", ""] {
            assert!(!is_supported_version(bad), "{bad}");
            assert!(matches!(
                parse(&format!("Endpoint=https://x;AccessKey=k;Version={bad}")),
                Err(ConnectionStringError::InvalidVersion { .. })
            ));
        }
    }

    #[test]
    fn error_cases() {
        use ConnectionStringError as E;
        assert_eq!(parse(""), Err(E::MissingEndpoint));
        assert_eq!(parse("AccessKey=k"), Err(E::MissingEndpoint));
        assert_eq!(parse("Endpoint=https://x"), Err(E::MissingAccessKey));
        assert_eq!(
            parse("Endpoint=https://x;AccessKey="),
            Err(E::EmptyAccessKey)
        );
        assert_eq!(
            parse("Endpoint=https://x;endpoint=https://y;AccessKey=k"),
            Err(E::Duplicate {
                key: "endpoint".into()
            })
        );
        for bad in [
            "ftp://x",
            "x.service.signalr.net",
            "https://",
            "https://x?a=b",
        ] {
            assert!(
                matches!(
                    parse(&format!("Endpoint={bad};AccessKey=k")),
                    Err(E::InvalidUri {
                        key: "Endpoint",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for bad in ["0", "65536", "-1", "http", "80a"] {
            assert_eq!(
                parse(&format!("Endpoint=https://x;AccessKey=k;Port={bad}")),
                Err(E::InvalidPort { value: bad.into() })
            );
        }
        assert!(matches!(
            parse("Endpoint=https://x;AccessKey=k;ClientEndpoint=ws://gw"),
            Err(E::InvalidUri {
                key: "ClientEndpoint",
                ..
            })
        ));
        assert!(matches!(
            parse("Endpoint=https://x;AccessKey=k;ServerEndpoint=nope"),
            Err(E::InvalidUri {
                key: "ServerEndpoint",
                ..
            })
        ));
        for auth in ["aad", "azure", "azure.app", "azure.msi", "Azure.MSI"] {
            let err = parse(&format!("Endpoint=https://x;AuthType={auth};ClientId=1")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "AuthType={auth} (Microsoft Entra ID) is not supported; \
                     use an AccessKey connection string"
                )
            );
        }
    }

    #[test]
    fn errors_never_contain_the_key() {
        let cases = [
            format!("Endpoint=not a uri {KEY};AccessKey={KEY}"),
            format!("Endpoint=https://x,AccessKey={KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};Port={KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};Version={KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};AuthType=aad{KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};ClientEndpoint={KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};accesskey={KEY}"),
            format!("Endpoint=https://x;AccessKey={KEY};{KEY}=1;{KEY}=2"),
        ];
        for case in cases {
            let err = parse(&case).unwrap_err();
            assert!(!err.to_string().contains(KEY), "{err}");
            assert!(!format!("{err:?}").contains(KEY), "{err:?}");
        }
        let err = ServiceEndpoint::new(&format!("bad {KEY}"), None, KEY).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(KEY));
    }

    #[test]
    fn debug_and_display_redact_the_key() {
        let e = parse(&format!(
            "Endpoint=https://x;AccessKey={KEY};ClientEndpoint=https://gw/;ServerEndpoint=https://s/"
        ))
        .unwrap();
        for shown in [
            format!("{e:?}"),
            format!("{e}"),
            e.connection_string_redacted(),
        ] {
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            e.to_string(),
            "Endpoint=https://x;AccessKey=***;ClientEndpoint=https://gw/;ServerEndpoint=https://s/;"
        );
    }

    #[test]
    fn connection_string_round_trips() {
        let original = parse(&format!(
            "Endpoint=https://x/;Port=444;AccessKey={KEY};Version=1.0;ClientEndpoint=https://gw/a/"
        ))
        .unwrap();
        let again: ServiceEndpoint = original.to_connection_string().parse().unwrap();
        assert_eq!(original, again);
    }

    #[test]
    fn new_for_the_embedded_service() {
        let e = ServiceEndpoint::new("http://127.0.0.1:5000/", Some(8888), KEY).unwrap();
        assert_eq!(e.rest_base(), "http://127.0.0.1:8888");
        assert_eq!(e.client_url("Hub"), "http://127.0.0.1:8888/client/?hub=hub");
        assert_eq!(e.client_audience("Hub"), "http://127.0.0.1/client/?hub=hub");
        assert_eq!(
            e.to_connection_string(),
            format!("Endpoint=http://127.0.0.1:5000;Port=8888;AccessKey={KEY};Version=1.0;")
        );
        let e = ServiceEndpoint::new("http://localhost:7000", None, "k").unwrap();
        assert_eq!(e.rest_base(), "http://localhost:7000");
        assert_eq!(
            ServiceEndpoint::new("http://h", Some(0), "k"),
            Err(ConnectionStringError::InvalidPort { value: "0".into() })
        );
        assert_eq!(
            ServiceEndpoint::new("http://h", None, ""),
            Err(ConnectionStringError::EmptyAccessKey)
        );
    }
}
