//! CORS from the live config's `http.cors.allowed_origins`: a listed origin is echoed with
//! `Access-Control-Allow-Credentials: true`; with `*` in the list, any other origin gets
//! `Access-Control-Allow-Origin: *` and never credentials; an origin that matches neither gets
//! no CORS headers. Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered
//! here, mirroring the requested method and headers. Written as middleware rather than
//! `tower_http::cors` because the policy is per origin and changes with each reload.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::live::LiveConfig;

/// How long a browser may cache a preflight answer.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// What the config allows for one request's `Origin`.
#[derive(Debug, PartialEq, Eq)]
pub enum Policy {
    /// A listed origin: echoed, with credentials.
    Listed(HeaderValue),
    /// Any origin by `*`: `Access-Control-Allow-Origin: *`, no credentials.
    Any,
    /// Not allowed: no CORS headers.
    Denied,
}

/// The policy for `origin` under `allowed` (the config's list, trailing `/` trimmed).
pub fn policy(allowed: &[String], origin: &HeaderValue) -> Policy {
    let text = origin.to_str().unwrap_or("");
    if !text.is_empty()
        && allowed
            .iter()
            .any(|o| o != "*" && o.eq_ignore_ascii_case(text))
    {
        Policy::Listed(origin.clone())
    } else if allowed.iter().any(|o| o == "*") {
        Policy::Any
    } else {
        Policy::Denied
    }
}

fn allow(headers: &mut HeaderMap, policy: &Policy) {
    match policy {
        Policy::Listed(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Policy::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        Policy::Denied => {}
    }
}

/// The CORS middleware (state: the live config, read per request).
pub async fn cors(State(live): State<LiveConfig>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let policy = policy(&live.current().http.cors_origins, &origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::OK.into_response();
        let asked = req.headers();
        let headers = response.headers_mut();
        if policy != Policy::Denied {
            allow(headers, &policy);
            if let Some(m) = asked.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
            }
            if let Some(h) = asked.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
            }
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        }
        headers.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        return response;
    }
    let mut response = next.run(req).await;
    allow(response.headers_mut(), &policy);
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listed_origins_get_credentials_and_star_never_does() {
        let app = HeaderValue::from_static("https://app.example.com");
        let other = HeaderValue::from_static("https://evil.example");
        assert_eq!(policy(&list(&["*"]), &app), Policy::Any);
        let mixed = list(&["https://APP.example.com", "*"]);
        assert_eq!(policy(&mixed, &app), Policy::Listed(app.clone()));
        assert_eq!(policy(&mixed, &other), Policy::Any);
        let only = list(&["https://app.example.com"]);
        assert_eq!(policy(&only, &other), Policy::Denied);
        assert_eq!(policy(&[], &app), Policy::Denied);
    }
}
