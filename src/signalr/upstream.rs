//! Serverless upstream, as Azure SignalR Service does it (facts §5): the service POSTs a
//! client's `connected` and `disconnected` events and its invocations to a URL chosen by an
//! ordered list of templates, with `X-ASRS-*` headers and an `X-ASRS-Signature` per access key.
//! Shared by the embedded service (which sends them) and the daemon (which receives and
//! verifies them), so both sides agree byte for byte.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER_CONNECTION_ID: &str = "x-asrs-connection-id";
pub const HEADER_HUB: &str = "x-asrs-hub";
pub const HEADER_CATEGORY: &str = "x-asrs-category";
pub const HEADER_EVENT: &str = "x-asrs-event";
pub const HEADER_SIGNATURE: &str = "x-asrs-signature";
pub const HEADER_USER_ID: &str = "x-asrs-user-id";
pub const HEADER_USER_CLAIMS: &str = "x-asrs-user-claims";
pub const HEADER_CLIENT_QUERY: &str = "x-asrs-client-query";

/// The category of connection events.
pub const CATEGORY_CONNECTIONS: &str = "connections";
/// The category of client invocations (the event is the invocation's target).
pub const CATEGORY_MESSAGES: &str = "messages";
pub const EVENT_CONNECTED: &str = "connected";
pub const EVENT_DISCONNECTED: &str = "disconnected";

/// The path the Azure Functions SignalR trigger listens on (and `herald run` by default).
pub const FUNCTIONS_PATH: &str = "/runtime/webhooks/signalr";

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str, connection_id: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(connection_id.as_bytes());
    mac
}

/// `X-ASRS-Signature`: `sha256=<HEX>` per access key (upper-case hex, as the emulator
/// writes it), comma-joined, of HMAC-SHA256(key, connection id).
pub fn signature(keys: &[&str], connection_id: &str) -> String {
    keys.iter()
        .map(|key| {
            let bytes = mac(key, connection_id).finalize().into_bytes();
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            format!("sha256={hex}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `header` carries a valid signature of `connection_id` by any of `keys`. Hex is
/// compared case-insensitively (as the Functions trigger does) and in constant time.
pub fn verify(header: &str, keys: &[&str], connection_id: &str) -> bool {
    let candidates: Vec<Vec<u8>> = header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("sha256="))
        .filter_map(decode_hex)
        .collect();
    keys.iter().any(|key| {
        candidates
            .iter()
            .any(|c| mac(key, connection_id).verify_slice(c).is_ok())
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One upstream setting: where events matching the three patterns go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTemplate {
    /// `http://host/{hub}/api/{category}/{event}`; placeholders are URL-escaped.
    pub url_template: String,
    /// `*`, a name, or a comma-separated list (trimmed; hub names compare case-insensitively).
    pub hub_pattern: String,
    pub category_pattern: String,
    pub event_pattern: String,
}

impl UpstreamTemplate {
    /// A template that takes every event.
    pub fn all(url_template: impl Into<String>) -> UpstreamTemplate {
        UpstreamTemplate {
            url_template: url_template.into(),
            hub_pattern: "*".into(),
            category_pattern: "*".into(),
            event_pattern: "*".into(),
        }
    }

    pub fn matches(&self, hub: &str, category: &str, event: &str) -> bool {
        pattern_matches(&self.hub_pattern, hub, true)
            && pattern_matches(&self.category_pattern, category, false)
            && pattern_matches(&self.event_pattern, event, false)
    }

    /// The URL for this event.
    pub fn url(&self, hub: &str, category: &str, event: &str) -> String {
        let esc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        self.url_template
            .replace("{hub}", &esc(hub))
            .replace("{category}", &esc(category))
            .replace("{event}", &esc(event))
    }
}

fn pattern_matches(pattern: &str, value: &str, ignore_case: bool) -> bool {
    pattern.split(',').map(str::trim).any(|p| {
        p == "*"
            || if ignore_case {
                p.eq_ignore_ascii_case(value)
            } else {
                p == value
            }
    })
}

/// The first template matching the event, as Azure picks it.
pub fn pick<'a>(
    templates: &'a [UpstreamTemplate],
    hub: &str,
    category: &str,
    event: &str,
) -> Option<&'a UpstreamTemplate> {
    templates.iter().find(|t| t.matches(hub, category, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_connection_id_per_key() {
        // HMAC-SHA256(key="key", msg="The quick brown fox jumps over the lazy dog").
        let sig = signature(&["key"], "The quick brown fox jumps over the lazy dog");
        assert_eq!(
            sig,
            "sha256=F7BC83F430538424B13298E6AA6FB143EF4D59A14946175997479DBC2D1A3CD8"
        );
        let two = signature(&["k1", "k2"], "conn");
        assert_eq!(two.split(',').count(), 2);
        assert!(verify(&two, &["k2"], "conn"));
        assert!(
            verify(&two.to_lowercase(), &["k1"], "conn"),
            "hex case does not matter"
        );
        assert!(!verify(&two, &["k3"], "conn"));
        assert!(!verify(&two, &["k1"], "other-connection"));
        assert!(!verify("sha256=zz", &["k1"], "conn"));
        assert!(!verify("", &["k1"], "conn"));
    }

    #[test]
    fn the_first_matching_template_wins_and_placeholders_are_escaped() {
        let templates = vec![
            UpstreamTemplate {
                url_template: "http://a/{hub}/{category}/{event}".into(),
                hub_pattern: "chat, News".into(),
                category_pattern: "messages".into(),
                event_pattern: "*".into(),
            },
            UpstreamTemplate::all("http://b/{event}"),
        ];
        let t = pick(&templates, "news", "messages", "send it").unwrap();
        assert_eq!(
            t.url("news", "messages", "send it"),
            "http://a/news/messages/send%20it"
        );
        let t = pick(&templates, "chat", "connections", "connected").unwrap();
        assert_eq!(t.url_template, "http://b/{event}");
        assert!(pick(&templates[..1], "other", "messages", "x").is_none());
    }
}
