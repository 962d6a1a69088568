//! `/healthz` (liveness and config state: `degraded` with a reason while the last reload is
//! rejected, the restart-only keys pending, the outbox backlog, each of several endpoints),
//! `/readyz` (config loaded and the state database answers and keeps writes; the SignalR
//! service's health is reported, not required, and a rejected reload does not make it
//! unready, the old config serves) and `/metrics`
//! (Prometheus text format, process metrics read at scrape). Clustered, both report Redis:
//! `/readyz` stays ready with `"cluster": "degraded"` while it is away (local service works),
//! `/healthz` says `degraded` and gives the node, Redis and the cluster-wide presence.

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
    let restart_required = state.reloads.restart_required();
    let mut body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "service": state.service_kind,
        "config": {
            "path": cfg.path.display().to_string(),
            "generation": state.live.generation(),
            "sha256": cfg.content_hash,
            "last_reload": reload,
        },
        "restart_required": restart_required,
    });
    // The backlog: while the service is away the outbox absorbs what is accepted, which is
    // herald doing its job (so not unready), but worth seeing.
    match state.outbox.store().outbox_stats().await {
        Ok(stats) => {
            let age = stats
                .oldest_ms
                .map(|t| (crate::store::now_ms() - t).max(0) as f64 / 1000.0);
            body["outbox"] = json!({ "depth": stats.depth, "oldest_age_seconds": age });
        }
        Err(e) => {
            body["status"] = json!("degraded");
            body["reason"] = json!(format!("the state database does not answer: {e}"));
        }
    }
    if let Some(cluster) = state.outbox.cluster() {
        let (section, up) = cluster_health(cluster).await;
        body["cluster"] = section;
        if !up {
            body["status"] = json!("degraded");
            body["reason"] = json!("the cluster's Redis is away: serving local connections only");
        }
    }
    // Several endpoints: each one's state; any down makes herald degraded (it still serves
    // through the others).
    if state.rest.endpoint_count() > 1 {
        let endpoints = state.rest.endpoint_states();
        let down: Vec<&str> = endpoints
            .iter()
            .filter(|e| !e.up)
            .map(|e| e.name.as_str())
            .collect();
        if !down.is_empty() {
            body["status"] = json!("degraded");
            body["reason"] = json!(format!(
                "SignalR endpoint{} down: {}",
                if down.len() == 1 { "" } else { "s" },
                down.join(", ")
            ));
        }
        body["endpoints"] = json!(endpoints);
    }
    if let Some(r) = reload.as_ref().filter(|r| r.rejected()) {
        body["status"] = json!("degraded");
        body["reason"] = json!(format!(
            "the last config reload was rejected ({} error{}); generation {} keeps running",
            r.errors.len(),
            if r.errors.len() == 1 { "" } else { "s" },
            r.generation
        ));
    }
    // Last, as the gravest: herald accepts nothing until it is restarted.
    if let Some(why) = state.outbox.store().broken() {
        body["status"] = json!("degraded");
        body["reason"] = json!(format!("the state database keeps no more writes: {why}"));
    }
    // 200 either way: the process is alive and serving (the systemd watchdog probes this).
    Json(body).into_response()
}

/// Ready while herald can accept messages: the config is loaded and the state database answers
/// (and has not stopped keeping writes after a failed sync). The SignalR service's health is
/// reported but does not make herald unready: while the service is away the outbox keeps what
/// is accepted and delivers it when it is back, which is herald doing its job; taking herald
/// out of a load balancer then would lose statuses.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let service = match tokio::time::timeout(Duration::from_secs(3), state.rest.health()).await {
        Ok(Ok(())) => json!({"healthy": true}),
        Ok(Err(e)) => {
            json!({"healthy": false, "detail": format!("SignalR service health check failed: {e}")})
        }
        Err(_) => json!({"healthy": false, "detail": "SignalR service health check timed out"}),
    };
    // Redis away is not unready either: local connections and deliveries keep working.
    let cluster = state
        .outbox
        .cluster()
        .map(|c| json!(if c.redis_up() { "ok" } else { "degraded" }));
    let store = state.outbox.store();
    let stats = match store.broken() {
        Some(why) => Err(format!("the state database keeps no more writes: {why}")),
        None => (store.outbox_stats().await)
            .map_err(|e| format!("the state database does not answer: {e}")),
    };
    match stats {
        Ok(stats) => {
            let mut body = json!({
                "ready": true,
                "service": service,
                "outbox": { "depth": stats.depth },
            });
            if let Some(cluster) = cluster {
                body["cluster"] = cluster;
            }
            Json(body).into_response()
        }
        Err(detail) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "detail": detail,
                "service": service,
            })),
        )
            .into_response(),
    }
}

/// `/healthz`'s `cluster` section and whether Redis is up.
async fn cluster_health(cluster: &crate::cluster::Cluster) -> (serde_json::Value, bool) {
    let up = cluster.redis_up();
    let mut section = json!({ "node": cluster.node(), "redis": if up { "up" } else { "down" } });
    if up
        && let Ok(Ok((nodes, connections))) =
            tokio::time::timeout(Duration::from_secs(2), cluster.presence()).await
    {
        section["nodes"] = json!(nodes);
        section["connections"] = json!(connections);
    }
    (section, up)
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            crate::telemetry::metrics::collect_process();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
