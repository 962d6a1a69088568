//! The daemon's HTTP API: one route table (`router`) with health, readiness and metrics, plus a
//! fallback that matches negotiate paths and status routes in the current config snapshot, so
//! a reload changes them with no router rebuild. Middleware: request metrics, request ids,
//! tracing, CORS from the live config, a request timeout and panic catching.

pub mod cors;
pub mod error;
pub mod health;
pub mod history;
pub mod metrics;
pub mod negotiate;
pub mod page;
pub mod rate_limit;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::EndpointMatch;
use crate::config::live::LiveConfig;
use crate::daemon::events;
use crate::daemon::reload::ReloadLog;
use crate::signalr::rest::RestClient;
use error::ApiError;

/// Everything a request handler needs: cheap-to-clone handles.
#[derive(Clone)]
pub struct AppState {
    pub live: LiveConfig,
    /// The one REST client (Azure or embedded service).
    pub rest: RestClient,
    /// `azure` or `embedded`, for `/healthz`.
    pub service_kind: &'static str,
    pub metrics: Option<PrometheusHandle>,
    pub reloads: Arc<ReloadLog>,
    pub limiters: Arc<rate_limit::RateLimiters>,
    /// Where accepted messages go: the state database, then the outbox worker.
    pub outbox: crate::daemon::outbox::Outbox,
    /// Client events (upstream endpoint, presence, acknowledgements).
    pub events: crate::daemon::events::Events,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The daemon's router with its middleware. `request_timeout` is fixed at start.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let live = state.live.clone();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/", any(page::index))
        .route("/status-page/retained", get(page::retained))
        .route("/status-page/{asset}", get(page::asset))
        .fallback(dispatch)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(live.clone(), metrics::record))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::unavailable("internal error").into_response()
                }))
                .layer(axum::middleware::from_fn_with_state(live, cors::cors))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout)),
        )
}

/// A 429 when route `index` is over its rate limit.
fn limited(state: &AppState, cfg: &crate::config::Config, index: usize) -> Option<ApiError> {
    let route = cfg.routes.get(index)?;
    let limit = route.rate_limit.as_ref()?;
    let wait = state.limiters.check(&route.name, limit).err()?;
    ::metrics::counter!(crate::telemetry::metrics::RATE_LIMITED, "route" => route.name.clone())
        .increment(1);
    Some(ApiError::too_many_requests(&route.name, wait))
}

/// Paths herald answers itself when no configured endpoint takes them.
enum Builtin<'a> {
    /// `GET /api/messages/{id}`: a message's acknowledgements.
    Message(&'a str),
    /// `GET /api/{hub}/presence`.
    Presence(&'a str),
}

fn builtin(path: &str) -> Option<Builtin<'_>> {
    if let Some(id) = path.strip_prefix(events::acks::PREFIX) {
        return (!id.is_empty() && !id.contains('/')).then_some(Builtin::Message(id));
    }
    let hub = path.strip_prefix("/api/")?.strip_suffix("/presence")?;
    (!hub.is_empty() && !hub.contains('/')).then_some(Builtin::Presence(hub))
}

/// Negotiate paths and status routes, looked up in the current snapshot.
async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let cfg = state.live.current();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == crate::signalr::upstream::FUNCTIONS_PATH {
        let result = if parts.method == Method::POST {
            events::upstream::handle(&state, &cfg, &parts.headers, body).await
        } else {
            Err(ApiError::method_not_allowed(vec![Method::POST]))
        };
        return result.unwrap_or_else(IntoResponse::into_response);
    }
    let result = match cfg.endpoints.lookup(&parts.method, path) {
        EndpointMatch::Negotiate(hub) => match cfg.hubs.get(hub) {
            Some(hub) => negotiate::negotiate(&state, hub, &parts.headers)
                .await
                .map(IntoResponse::into_response),
            None => Err(ApiError::not_found("hub not found")),
        },
        EndpointMatch::Route { index, params } => match limited(&state, &cfg, index) {
            Some(refusal) => Err(refusal),
            None => {
                status::handle(
                    &state,
                    &cfg,
                    index,
                    params,
                    &parts.uri,
                    &parts.headers,
                    body,
                )
                .await
            }
        },
        EndpointMatch::History(hub) => match cfg.hubs.get(hub) {
            Some(hub) => history::history(&state, hub, &parts.uri, &parts.headers).await,
            None => Err(ApiError::not_found("hub not found")),
        },
        EndpointMatch::Retained { index, .. } => match cfg.routes.get(index) {
            Some(route) => history::retained(&state, route, parts.uri.path()).await,
            None => Err(ApiError::not_found("route not found")),
        },
        EndpointMatch::MethodNotAllowed(allow) => Err(ApiError::method_not_allowed(allow)),
        EndpointMatch::NotFound => match builtin(path) {
            Some(_) if parts.method != Method::GET && parts.method != Method::HEAD => {
                Err(ApiError::method_not_allowed(vec![Method::GET]))
            }
            Some(Builtin::Message(id)) => {
                events::acks::message(&state, &cfg, id, &parts.headers).await
            }
            Some(Builtin::Presence(hub)) => match cfg.hub_named(hub) {
                Some(hub) => {
                    events::presence::presence(&state, hub, &parts.uri, &parts.headers).await
                }
                None => Err(ApiError::not_found(format!("no hub `{hub}` is configured"))),
            },
            None => Err(ApiError::not_found(format!(
                "nothing is configured at {} {}",
                parts.method,
                parts.uri.path()
            ))),
        },
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    if parts.method == Method::HEAD {
        return response.into_parts().0.status.into_response();
    }
    response
}
