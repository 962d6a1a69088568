//! `ApiError`: every error the daemon's HTTP API answers, as JSON `{"error", "detail"}` with
//! the right status and headers. [`ApiError::into_parts`] is the one place that turns it into
//! (status, headers, body), for the listener (`IntoResponse`) and the Functions handler's http
//! output alike. Internal causes are logged where they happen, never sent to clients: a
//! delivery failure says what the caller may do (retry after N s), not why.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::daemon::auth::JwtError;
use crate::daemon::delivery::DeliveryError;

/// The `Retry-After` of a 503 when the service did not say how long to wait.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 5;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short machine-readable code, e.g. `unauthorized`.
    pub error: &'static str,
    /// What a human should know to fix the request.
    pub detail: String,
    /// Methods for a 405's `Allow` header.
    pub allow: Vec<Method>,
    /// Seconds for a 429/503's `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            allow: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
    pub fn method_not_allowed(allow: Vec<Method>) -> Self {
        let names: Vec<&str> = allow.iter().map(Method::as_str).collect();
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path answers {}", names.join(", ")),
        );
        e.allow = allow;
        e
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over the limit of {limit} bytes"),
        )
    }
    pub fn unsupported_media_type(found: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the body as application/json (got `{found}`)"),
        )
    }
    pub fn too_many_requests(route: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("route `{route}` is over its rate limit; retry in {secs} s"),
        );
        e.retry_after = Some(secs.max(1));
        e
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            detail,
        );
        e.retry_after = Some(DEFAULT_RETRY_AFTER_SECS);
        e
    }

    /// The answer as (status, headers, JSON body): `Content-Type`, `Allow` for a 405 and
    /// `Retry-After` when set. The listener and the Functions handler both answer with this.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        let body = serde_json::json!({ "error": self.error, "detail": self.detail });
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if !self.allow.is_empty() {
            let names: Vec<&str> = self.allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                headers.insert(header::ALLOW, v);
            }
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        (self.status, headers, Bytes::from(body.to_string()))
    }
}

/// A refused bearer token: 401 naming the check that failed.
impl From<JwtError> for ApiError {
    fn from(e: JwtError) -> Self {
        ApiError::unauthorized(e.to_string())
    }
}

/// A failed delivery: 413 over the service's size limit, 400 for a message that cannot be
/// sent as rendered, else 503 telling the caller when to retry (the service's `Retry-After`
/// when it gave one, rounded up, else [`DEFAULT_RETRY_AFTER_SECS`]). The cause was logged by
/// `delivery::deliver`; none of it is repeated here.
impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            DeliveryError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            DeliveryError::Unavailable { retry_after, .. } => {
                let secs = retry_after
                    .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS);
                let mut e = ApiError::unavailable(format!(
                    "the SignalR service is unavailable; retry after {secs} s"
                ));
                e.retry_after = Some(secs);
                e
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, headers, body) = self.into_parts();
        (status, headers, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parts_carry_status_headers_and_body() {
        let (status, headers, body) =
            ApiError::method_not_allowed(vec![Method::GET, Method::POST]).into_parts();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, POST");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(body["detail"], "this path answers GET, POST");
    }

    #[test]
    fn an_unavailable_service_says_when_to_retry_and_nothing_else() {
        let source =
            crate::signalr::rest::RestError::InvalidArgument("http://10.0.0.1:8080".into());
        let e = ApiError::from(DeliveryError::Unavailable {
            retry_after: Some(Duration::from_millis(1500)),
            source,
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(2));
        assert_eq!(
            e.detail,
            "the SignalR service is unavailable; retry after 2 s"
        );
        let (_, headers, body) = e.into_parts();
        assert_eq!(headers[header::RETRY_AFTER], "2");
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.1"));

        let source = crate::signalr::rest::RestError::InvalidArgument(String::new());
        let e = ApiError::from(DeliveryError::Unavailable {
            retry_after: None,
            source,
        });
        assert_eq!(e.retry_after, Some(DEFAULT_RETRY_AFTER_SECS));
    }
}
