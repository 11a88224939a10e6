//! The web UI of a running job: Prometheus metrics, health probes, a JSON
//! API and a live page — what Flink's web UI shows, for one job, from the
//! job's own process.
//!
//! ```no_run
//! use tideline_engine::Job;
//! use tideline_web::JobWebUi;
//! let job = Job::new().web_ui("127.0.0.1:8081")?;
//! // ... add sources, operators and sinks, then:
//! // job.run()?;
//! # Ok::<(), tideline_engine::Error>(())
//! ```
//!
//! # Endpoints
//! - `/`: the live page (its assets are embedded in the binary, nothing is
//!   fetched from elsewhere): the job graph, per-operator throughput,
//!   watermarks and backpressure, source partitions with their lag,
//!   sparklines, checkpoints, late records and dead letters; it polls
//!   `/api/job` and `/api/metrics` every second.
//! - `/metrics`: every metric in the OpenMetrics text format (see the
//!   [`prometheus`] module docs for names and labels), published from the
//!   latest sample.
//! - `/healthz`: 200 unless the job failed for good (503); `/readyz`: 200
//!   while the job's tasks run, 503 before, while restarting and after.
//!   The body is the status. Both answer without the token.
//! - `/api/job`: status, uptime, restarts, the last error, and the graph
//!   (`operators` with `id`, `name`, `kind`, `parallelism`, `task`;
//!   `edges` with `from`, `to`, `kind`).
//! - `/api/metrics`: the latest sample with rates (records per second,
//!   backpressure as the share of the interval blocked sending downstream)
//!   and two minutes of history.
//! - `/api/checkpoints`, `/api/dead-letters`: those parts of the latest sample.
//!
//! # Security
//! The page and the API have no authentication of their own and show
//! record contents (the latest dead letters). They bind to loopback by
//! default; binding any other address is refused unless
//! [`WebUiOptions::allow_remote`] says so, and should come with a
//! [`WebUiOptions::token`] (asked as `Authorization: Bearer`, a cookie, or
//! `?token=` once in the browser) or a proxy that authenticates.
//!
//! # Failure analysis
//! - The server runs on one thread with its own runtime; the job's tasks
//!   never wait on it. Metrics are sampled once a second (by default) into
//!   a copy that handlers read, so scrapes cost the job nothing.
//! - Stopping waits at most 2 s for open connections, then drops them: a
//!   client that never finishes its request cannot keep the job's run (to
//!   which the UI is attached) from ending.
//! - Without a token, requests must name the server by an IP address or
//!   `localhost` in their `Host` header: a web page the user visits cannot
//!   rebind its own host name to 127.0.0.1 and read the API (DNS
//!   rebinding).
//! - Binding fails before the job starts (the address is in use, or not
//!   loopback without `allow_remote`), with the address in the error.
//! - Dropping the [`WebUi`] (or the run of a job it is attached to
//!   ending) stops the server: open connections are closed gracefully.

mod live;
pub mod prometheus;
mod server;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tideline_engine::metrics::JobMetrics;
use tideline_engine::{Error, Job, Result};

use crate::live::LiveState;

/// The shortest sampling interval: a shorter one would spin the server's thread.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// How long open connections get to finish once the UI stops; then they
/// are dropped, so a client that never finishes a request cannot keep
/// the job's run from ending.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How to serve a job's web UI.
#[derive(Clone, Debug)]
pub struct WebUiOptions {
    address: String,
    allow_remote: bool,
    token: Option<String>,
    sample_interval: Duration,
}

impl WebUiOptions {
    /// Serve on `address` (`host:port`; port 0 picks a free one).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            allow_remote: false,
            token: None,
            sample_interval: Duration::from_secs(1),
        }
    }

    /// Allows binding an address other than loopback (the page has no
    /// authentication unless [`WebUiOptions::token`] is set).
    pub fn allow_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }

    /// Requires `token` on every request except the health probes.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How often metrics are sampled for `/metrics` and the page (default 1 s).
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// Starts serving `metrics`.
    ///
    /// # Errors
    /// [`Error::Config`] for an address that does not parse, is not
    /// loopback without `allow_remote`, or an empty token or zero interval;
    /// [`Error::External`] when it cannot be bound (in use, say).
    pub fn start(self, metrics: Arc<JobMetrics>) -> Result<WebUi> {
        let field = "web_ui.address";
        let addresses: Vec<SocketAddr> = self
            .address
            .to_socket_addrs()
            .map_err(|e| Error::config(field, format!("'{}' is not host:port: {e}", self.address)))?
            .collect();
        if addresses.is_empty() {
            return Err(Error::config(
                field,
                format!("'{}' resolves to no address", self.address),
            ));
        }
        if !self.allow_remote {
            if let Some(remote) = addresses.iter().find(|a| !a.ip().is_loopback()) {
                return Err(Error::config(
                    field,
                    format!(
                        "{remote} is not a loopback address: the page has no authentication and \
                         shows record contents; use 127.0.0.1, or allow_remote(true) with a token"
                    ),
                ));
            }
        }
        if let Some(token) = &self.token {
            let safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
            if token.is_empty() || !token.chars().all(safe) {
                return Err(Error::config(
                    "web_ui.token",
                    "must be non-empty and use only letters, digits and - . _ ~ \
                     (it travels in a header, a URL and a cookie)",
                ));
            }
        }
        if self.sample_interval < MIN_SAMPLE_INTERVAL {
            return Err(Error::config(
                "web_ui.sample_interval",
                format!("must be at least {MIN_SAMPLE_INTERVAL:?}"),
            ));
        }
        if self.token.is_none() && addresses.iter().any(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                address = %self.address,
                "web UI on a non-loopback address without a token: anyone who can reach it \
                 sees the job's metrics and dead letters"
            );
        }
        let system = format!("web UI at {}", self.address);
        let listener = TcpListener::bind(addresses.as_slice())
            .map_err(|e| Error::external(system.clone(), "bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::external(system.clone(), "configure the socket", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::external(system.clone(), "read the bound address", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::external(system.clone(), "start its runtime", e))?;
        let state = Arc::new(server::AppState {
            job: metrics,
            live: Arc::new(Mutex::new(LiveState::default())),
            prometheus: Arc::new(Mutex::new(prometheus::Metrics::new())),
            token: self.token,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let interval = self.sample_interval;
        let thread = std::thread::Builder::new()
            .name("tideline:web".into())
            .spawn(move || {
                runtime.block_on(serve(listener, state, interval, stopped));
            })
            .map_err(|e| Error::external(system, "spawn its thread", e))?;
        tracing::info!(url = %format!("http://{address}/"), "web UI listening");
        Ok(WebUi {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<server::AppState>,
    interval: Duration,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "web UI cannot listen");
            return;
        }
    };
    let sampler = tokio::spawn(sample_every(Arc::clone(&state), interval));
    let (stopping, mut stop_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = stopped.await;
        let _ = stopping.send(true);
    });
    let mut grace_seen = stop_seen.clone();
    let serve = axum::serve(listener, server::router(state)).with_graceful_shutdown(async move {
        let _ = stop_seen.wait_for(|stop| *stop).await;
    });
    let deadline = async move {
        let _ = grace_seen.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serve => {
            if let Err(e) = served {
                tracing::error!(error = %e, "web UI stopped");
            }
        }
        () = deadline => {
            tracing::warn!("web UI stopped with connections still open");
        }
    }
    sampler.abort();
}

/// Takes a sample every `interval`: the page's view and the registry.
async fn sample_every(state: Arc<server::AppState>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = state.job.snapshot();
        let backpressure = match state.live.lock() {
            Ok(mut live) => {
                live.sample(Instant::now(), snapshot.clone());
                live.backpressure()
            }
            Err(_) => Default::default(),
        };
        if let Ok(mut registry) = state.prometheus.lock() {
            registry.publish(&snapshot, &backpressure);
        }
    }
}

/// A running web UI; dropping it stops the server.
#[derive(Debug)]
pub struct WebUi {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebUi {
    /// Serves `metrics` on `address`, loopback only (see [`WebUiOptions`]).
    ///
    /// # Errors
    /// As [`WebUiOptions::start`].
    pub fn start(address: &str, metrics: Arc<JobMetrics>) -> Result<Self> {
        WebUiOptions::new(address).start(metrics)
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }
}

impl Drop for WebUi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serving a [`Job`]'s web UI while it runs.
pub trait JobWebUi: Sized {
    /// Serves the job's web UI on `address` (loopback) until its run ends.
    ///
    /// # Errors
    /// As [`WebUiOptions::start`].
    fn web_ui(self, address: &str) -> Result<Self> {
        self.web_ui_with(WebUiOptions::new(address))
    }

    /// Serves the job's web UI with `options` until its run ends.
    ///
    /// # Errors
    /// As [`WebUiOptions::start`].
    fn web_ui_with(self, options: WebUiOptions) -> Result<Self>;
}

impl JobWebUi for Job {
    fn web_ui_with(self, options: WebUiOptions) -> Result<Self> {
        let ui = options.start(self.metrics())?;
        Ok(self.attach(ui))
    }
}
