//! The HTTP routes. Every handler reads what the sampler published last
//! (under a mutex held for a copy, never across an await), so a slow
//! client never slows the job or the sampler.

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
        .with_state(state)
}

/// With a token: `Authorization: Bearer <token>`, the `tideline_token`
/// cookie, or `?token=<token>` (which sets the cookie, so the page's own
/// requests carry it).
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else {
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
    let snapshot = state.job.snapshot();
    Json(JobView {
        state: snapshot.job,
        graph: state.job.graph(),
    })
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
            fresh.sample(
                std::time::Instant::now(),
                state.job.snapshot(),
                state.job.graph(),
            );
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
    Json(state.job.snapshot().checkpoints)
}

/// `/api/dead-letters`.
#[derive(Serialize)]
struct DeadLettersView {
    total: u64,
    by_reason: Vec<tideline_engine::metrics::DeadLetterCount>,
    recent: Vec<tideline_engine::metrics::RecentDeadLetter>,
}

async fn api_dead_letters(State(state): State<Shared>) -> Json<DeadLettersView> {
    let s = state.job.snapshot();
    Json(DeadLettersView {
        total: s.dead_letters,
        by_reason: s.dead_letters_by_reason,
        recent: s.recent_dead_letters,
    })
}
