//! `/healthz` (liveness and config state), `/readyz` (config loaded and the SignalR service's
//! health endpoint answers) and `/metrics` (Prometheus text format).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub async fn healthz(State(state): State<AppState>) -> Response {
    let cfg = state.live.current();
    let reload = state.reloads.snapshot();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "service": state.service_kind,
        "config": {
            "path": cfg.path.display().to_string(),
            "generation": state.live.generation(),
            "sha256": cfg.content_hash,
            "last_reload": reload,
        },
    }))
    .into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), state.rest.health()).await {
        Ok(Ok(())) => Json(json!({"ready": true})).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "detail": format!("SignalR service health check failed: {e}")})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "detail": "SignalR service health check timed out"})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
