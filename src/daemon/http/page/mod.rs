//! The live status page: `GET /` serves one HTML page for a hub (`/?hub=NAME` with several),
//! with what the page needs (hubs, negotiate, history and presence paths, title) injected as
//! JSON at serve time; its assets under `/status-page/` (CSS, JS, icon, all embedded with
//! `include_str!`), and `GET /status-page/retained?hub=NAME`, the hub's retained statuses.
//! The page carries its own small SignalR JSON-protocol client, so it needs nothing from
//! outside the machine. `http.status_page: false` turns it all off: the requests then take
//! the daemon's ordinary path (404, or a config route at `/`).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::negotiate::user_id;
use crate::config::{Config, Hub};

/// The page's HTML; `__TITLE__` and `__CONFIG__` are filled in per request.
const INDEX_HTML: &str = include_str!("index.html");
/// Layout and colours (light and dark).
const STYLE_CSS: &str = include_str!("style.css");
/// The page's logic and its SignalR client.
const APP_JS: &str = include_str!("app.js");
/// The tab icon.
const ICON_SVG: &str = include_str!("icon.svg");

/// The largest the whole page (HTML, CSS, JS, icon) may be, in bytes.
pub const MAX_PAGE_BYTES: usize = 50 * 1024;

/// Where the page's assets and endpoints live; reserved in `config::compile`.
pub const PREFIX: &str = "/status-page";

/// The browser may load only from this origin and connect to the SignalR service (Azure or
/// embedded, at any address negotiate names).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self' http: https: ws: wss:; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

const CSP_HEADER: HeaderName = HeaderName::from_static("content-security-policy");
const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");

#[derive(serde::Deserialize)]
struct HubQuery {
    hub: Option<String>,
}

/// `GET /`: the page for the hub in `?hub=` (or the first hub). With the page off, the
/// request goes on to the config's routes as if this path had no handler.
pub async fn index(State(state): State<AppState>, req: Request) -> Response {
    let cfg = state.live.current();
    if !cfg.http.status_page {
        return super::dispatch(State(state), req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed();
    }
    match pick_hub(&cfg, req.uri()) {
        Ok(hub) => {
            let html = render(&cfg, hub);
            asset_response("text/html; charset=utf-8", html.into_bytes())
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /status-page/{asset}`: the page's CSS, JS and icon.
pub async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    if !state.live.current().http.status_page {
        return super::dispatch(State(state), req).await;
    }
    let (content_type, body) = match name.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => {
            return ApiError::not_found(format!("the status page has no asset `{name}`"))
                .into_response();
        }
    };
    asset_response(content_type, body.as_bytes().to_vec())
}

/// `GET /status-page/retained?hub=NAME` → `{"retained": [{"id", "time", "target",
/// "arguments"}]}`, oldest first: the hub's retained statuses sent to everyone or to the
/// caller's user id (the same caller check as negotiate).
pub async fn retained(State(state): State<AppState>, req: Request) -> Response {
    let cfg = state.live.current();
    if !cfg.http.status_page {
        return super::dispatch(State(state), req).await;
    }
    match retained_json(&state, &cfg, req.uri(), req.headers()).await {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn retained_json(
    state: &AppState,
    cfg: &Config,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let hub = pick_hub(cfg, uri)?;
    let user = user_id(hub, headers)?;
    let (all, source) = state
        .outbox
        .shared()
        .retained_in_hub(&hub.name)
        .await
        .map_err(super::history::unavailable)?;
    let retained: Vec<Value> = all
        .iter()
        .filter(|r| r.visible_to(user.as_deref()))
        .map(|r| r.to_json())
        .collect();
    let mut body = json!({ "retained": retained });
    if let Some(source) = source {
        body["source"] = json!(source);
    }
    Ok(body)
}

/// The hub named by `?hub=` (exact, then ignoring case), or the first hub.
fn pick_hub<'a>(cfg: &'a Config, uri: &Uri) -> Result<&'a Hub, ApiError> {
    let query: HubQuery = axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    match query.hub.as_deref().filter(|h| !h.is_empty()) {
        None => cfg
            .hubs
            .values()
            .next()
            .ok_or_else(|| ApiError::not_found("no hub is configured")),
        Some(name) => cfg
            .hubs
            .get(name)
            .or_else(|| {
                cfg.hubs
                    .values()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| ApiError::not_found(format!("no hub is named `{name}`"))),
    }
}

/// What the page's script reads from its `<script type="application/json">` element.
fn page_config(cfg: &Config, hub: &Hub) -> Value {
    json!({
        "title": format!("{} status", hub.name),
        "hub": hub.name,
        "hubs": cfg.hubs.keys().collect::<Vec<_>>(),
        "negotiate": hub.negotiate_path,
        "history": hub.history_path,
        "retained": format!("{PREFIX}/retained?hub={}", query_escape(&hub.name)),
        "presence": format!("/api/{}/presence", query_escape(&hub.name)),
        "severityField": "status",
    })
}

/// The page for `hub`.
fn render(cfg: &Config, hub: &Hub) -> String {
    let config = page_config(cfg, hub);
    let title = config["title"].as_str().unwrap_or("status").to_string();
    INDEX_HTML
        .replace("__TITLE__", &html_escape(&title))
        .replace("__CONFIG__", &script_json(&config))
}

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&` to end it early.
fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn query_escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn asset_response(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CSP_HEADER, HeaderValue::from_static(CSP));
    headers.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    response
}

fn method_not_allowed() -> Response {
    let mut response =
        ApiError::method_not_allowed(vec![Method::GET, Method::HEAD]).into_response();
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_page_is_under_50_kb() {
        let total = INDEX_HTML.len() + STYLE_CSS.len() + APP_JS.len() + ICON_SVG.len();
        assert!(
            total < MAX_PAGE_BYTES,
            "the status page is {total} bytes, over {MAX_PAGE_BYTES}"
        );
    }

    #[test]
    fn the_html_has_both_placeholders_and_links_its_assets() {
        assert!(INDEX_HTML.contains("__TITLE__"));
        assert!(INDEX_HTML.contains("__CONFIG__"));
        for asset in ["app.js", "style.css", "icon.svg"] {
            assert!(
                INDEX_HTML.contains(&format!("{PREFIX}/{asset}")),
                "index.html does not link {asset}"
            );
        }
    }

    #[test]
    fn injected_json_cannot_close_the_script_element() {
        let v = json!({"title": "</script><script>alert(1)</script> & co"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: Value = serde_json::from_str(&s).expect("still JSON");
        assert_eq!(back, v);
    }

    #[test]
    fn titles_are_escaped() {
        assert_eq!(
            html_escape(r#"<b>"a" & 'b'</b>"#),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn nothing_in_the_assets_points_off_the_machine() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("style.css", STYLE_CSS),
            ("app.js", APP_JS),
        ] {
            for needle in ["https://", "http://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains `{needle}`");
            }
        }
    }
}
