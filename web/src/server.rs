//! The HTTP routes. Handlers read what the sampler published last (under a
//! mutex held for a copy, never across an await); `/api/job` reads the
//! graph and the job's status, which touch no task's cells. So a client
//! polling in a loop never contends with the job.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tideline_engine::metrics::{JobGraph, JobMetrics, JobState, JobStatus};

use crate::live::LiveState;
use crate::prometheus::Metrics;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) job: Arc<JobMetrics>,
    pub(crate) live: Arc<Mutex<LiveState>>,
    pub(crate) prometheus: Arc<Mutex<Metrics>>,
    pub(crate) token: Option<String>,
}

type Shared = Arc<AppState>;

pub(crate) fn router(state: Shared) -> Router {
    let guarded = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/metrics", get(metrics))
        .route("/api/job", get(api_job))
        .route("/api/metrics", get(api_metrics))
        .route("/api/checkpoints", get(api_checkpoints))
        .route("/api/dead-letters", get(api_dead_letters))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ));
    // Orchestrators probe without credentials; the probes reveal nothing
    // but the status.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

/// Everything the page needs comes from this server, and nothing it
/// serves is to be sniffed into another type.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether `Host` names this server the way a browser on this machine
/// does: an IP address (with or without a port) or `localhost`. A host
/// name means a page may have rebound its own name to this address.
fn direct_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: not a browser following a page's name.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// With a token: `Authorization: Bearer <token>`, the `tideline_token`
/// cookie, or `?token=<token>` (which sets the cookie, so the page's own
/// requests carry it).
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else {
        if !direct_host(request.headers()) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this Tideline web UI answers to its IP address or localhost only (no token is set)\n",
            )
                .into_response();
        }
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = cookie_token(headers);
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let matches = |t: Option<&str>| t.is_some_and(|t| constant_time_eq(t, token));
    if matches(bearer) || matches(cookie.as_deref()) {
        return next.run(request).await;
    }
    if matches(query) {
        let mut response = next.run(request).await;
        if let Ok(value) = HeaderValue::from_str(&format!(
            "tideline_token={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        "this Tideline web UI needs its token: Authorization: Bearer <token>, or ?token=<token>\n",
    )
        .into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix("tideline_token=")
                .map(str::to_string)
        })
}

/// Compares without stopping at the first difference (no timing oracle).
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn metrics(State(state): State<Shared>) -> Response {
    let encoded = state
        .prometheus
        .lock()
        .map_err(|_| "metrics registry poisoned".to_string())
        .and_then(|m| m.encode().map_err(|e| e.to_string()));
    match encoded {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// A probe's answer: 200 when `ok` says so of the job's status, else 503;
/// the body is the status.
fn probe(state: &AppState, ok: impl Fn(JobStatus) -> bool) -> Response {
    let status = state.job.status();
    let code = if ok(status) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{}\n", status.as_str())).into_response()
}

/// Alive: the process serves, and the job has not failed for good.
async fn healthz(State(state): State<Shared>) -> Response {
    probe(&state, |s| s != JobStatus::Failed)
}

/// Ready: the job's tasks run.
async fn readyz(State(state): State<Shared>) -> Response {
    probe(&state, |s| s == JobStatus::Running)
}

/// `/api/job`: the status and the graph.
#[derive(Serialize)]
struct JobView {
    #[serde(flatten)]
    state: JobState,
    #[serde(flatten)]
    graph: JobGraph,
}

async fn api_job(State(state): State<Shared>) -> Json<JobView> {
    Json(JobView {
        state: state.job.job_state(),
        graph: state.job.graph(),
    })
}

/// The last sample's snapshot (a fresh one before the first sample).
fn last_snapshot(state: &AppState) -> tideline_engine::metrics::MetricsSnapshot {
    state
        .live
        .lock()
        .ok()
        .and_then(|l| l.last_snapshot().cloned())
        .unwrap_or_else(|| state.job.snapshot())
}

/// The last sample's view, or a fresh one before the first sample.
fn live_view(state: &AppState) -> serde_json::Value {
    let view = state
        .live
        .lock()
        .ok()
        .and_then(|l| l.view.as_ref().map(serde_json::to_value));
    match view {
        Some(Ok(v)) => v,
        _ => {
            let mut fresh = LiveState::default();
            fresh.sample(std::time::Instant::now(), state.job.snapshot());
            fresh
                .view
                .as_ref()
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or_default()
        }
    }
}

async fn api_metrics(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(live_view(&state))
}

async fn api_checkpoints(
    State(state): State<Shared>,
) -> Json<tideline_engine::metrics::CheckpointMetrics> {
    Json(last_snapshot(&state).checkpoints)
}

/// `/api/dead-letters`.
#[derive(Serialize)]
struct DeadLettersView {
    total: u64,
    by_reason: Vec<tideline_engine::metrics::DeadLetterCount>,
    recent: Vec<tideline_engine::metrics::RecentDeadLetter>,
}

async fn api_dead_letters(State(state): State<Shared>) -> Json<DeadLettersView> {
    let s = last_snapshot(&state);
    Json(DeadLettersView {
        total: s.dead_letters,
        by_reason: s.dead_letters_by_reason,
        recent: s.recent_dead_letters,
    })
}
