//! HTTP helpers for daemon tests: one JSON POST (with an optional `X-API-Key`), the same from a
//! synchronous test, the `{error, detail}` check of an error answer, and the one "wait until"
//! poller (async and blocking).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

/// How often the pollers look again.
const POLL: Duration = Duration::from_millis(25);

/// `POST url` with `body` as JSON, and `X-API-Key: key` when given.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let mut request = http.post(url).json(body);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    request.send().await
}

/// [`post`] from a synchronous test (its own runtime); asserts a 202.
pub fn post_accepted_blocking(url: &str, key: Option<&str>, body: &Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let r = post(&reqwest::Client::new(), url, key, body)
            .await
            .expect("POST");
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    });
}

/// An error answer's status and body, checked to have the `{error, detail}` shape.
pub async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body: Value = r.json().await.expect("JSON error body");
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    (status, body)
}

/// Call `probe` until it answers `Ok`; after `timeout`, panic with `what` and the last `Err`.
pub async fn wait_until<T, E, F, Fut>(timeout: Duration, what: impl Display, mut probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for synchronous tests.
pub fn wait_until_blocking<T, E: Display>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(POLL);
    }
}
