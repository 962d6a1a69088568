//! HTTP request metrics: `herald_http_requests_total{route,method,status}` and the latency
//! histogram `herald_http_request_duration_seconds{route,method}`, as the outermost middleware
//! (so preflights, timeouts and panics count too). `route` is a name, never the raw path, so
//! the number of series stays bounded: the config route's name, `negotiate`, `history`, the
//! fixed routes' names (`healthz`, `readyz`, `metrics`, ...), `upstream` (client events from
//! the service), `messages` and `presence` (herald's own APIs), `preflight`, or `unmatched`.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::EndpointMatch;
use crate::config::live::LiveConfig;
use crate::telemetry::metrics as m;

/// The `route` label of a request.
pub fn route_label(live: &LiveConfig, req: &Request) -> Cow<'static, str> {
    if let Some(p) = req.extensions().get::<MatchedPath>() {
        return match p.as_str() {
            // The status page, at `/`.
            "/" => Cow::Borrowed("status-page"),
            p => Cow::Owned(p.trim_start_matches('/').to_string()),
        };
    }
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Cow::Borrowed("preflight");
    }
    let cfg = live.current();
    match cfg.endpoints.lookup(req.method(), req.uri().path()) {
        EndpointMatch::Negotiate(_) => Cow::Borrowed("negotiate"),
        EndpointMatch::History(_) => Cow::Borrowed("history"),
        EndpointMatch::Retained { index, .. } => match cfg.routes.get(index) {
            Some(r) => Cow::Owned(format!("{}:retained", r.name)),
            None => Cow::Borrowed("unmatched"),
        },
        EndpointMatch::Route { index, .. } => match cfg.routes.get(index) {
            Some(r) => Cow::Owned(r.name.clone()),
            None => Cow::Borrowed("unmatched"),
        },
        EndpointMatch::NotFound if req.uri().path() == crate::signalr::upstream::FUNCTIONS_PATH => {
            Cow::Borrowed("upstream")
        }
        EndpointMatch::NotFound => match super::builtin(req.uri().path()) {
            Some(super::Builtin::Message(_)) => Cow::Borrowed("messages"),
            Some(super::Builtin::Presence(_)) => Cow::Borrowed("presence"),
            None => Cow::Borrowed("unmatched"),
        },
        EndpointMatch::MethodNotAllowed(_) => Cow::Borrowed("unmatched"),
    }
}

/// The `method` label: the standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The metrics middleware (state: the live config, to name routes).
pub async fn record(State(live): State<LiveConfig>, req: Request, next: Next) -> Response {
    let route = route_label(&live, &req);
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
