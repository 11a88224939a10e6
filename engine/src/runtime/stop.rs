//! Stopping a running job, Flink's two ways, plus an abort.
//!
//! - **With a savepoint** ([`StopHandle::savepoint`]): the next checkpoint
//!   barrier is the last. Sources record their offsets and stop; every task
//!   snapshots at that barrier and stops without draining: no window fires,
//!   the watermarks in the savepoint are the real ones, sinks pre-commit
//!   what they wrote and the savepoint's completion commits it. The
//!   savepoint is exported into a directory of its own that no job ever
//!   prunes; `RestoreFrom::Path` resumes from it, also with a new version
//!   of the program (operators are matched by uid) and at another
//!   parallelism. Windows open at the stop fire after the resume, with all
//!   their data.
//! - **With a drain** ([`StopHandle::drain`]): sources end their input, the
//!   watermark becomes `+inf`, every window fires with what it has, sinks
//!   finish. Final: the job's last checkpoint is marked drained and
//!   restoring from it is refused.
//! - **Abort** ([`StopHandle::abort`]): the job is cancelled at once and
//!   ends with [`Error::Aborted`]; nothing after the last completed
//!   checkpoint is committed.
//!
//! A handle can be taken before the job runs ([`Job::stop_handle`](crate::Job::stop_handle));
//! a request made before the job started applies when it starts, and a
//! handle outlives restarts (it stops whichever attempt is running).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::checkpoint::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::runtime::shared::Shared;

#[derive(Clone, Debug)]
enum Request {
    Savepoint(PathBuf),
    Drain,
    Abort,
}

#[derive(Debug, Default)]
struct State {
    /// The attempt running now.
    run: Option<(Arc<Shared>, Option<Arc<Coordinator>>)>,
    /// The first stop asked for (later ones only escalate to an abort).
    request: Option<Request>,
}

/// Stops a running job from any thread (a signal handler, a supervisor).
/// Cheap to clone; every clone stops the same job.
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    state: Arc<Mutex<State>>,
}

impl StopHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the job with a savepoint exported into `dir` (see the module
    /// docs). Returns at once; the job ends after the savepoint completed,
    /// and its summary names the `chk-N` directory to resume from
    /// ([`JobSummary::savepoint`](crate::JobSummary::savepoint)).
    ///
    /// # Errors
    /// When the job takes no checkpoints (a savepoint is one), `dir` is its
    /// checkpoint directory, or another stop was asked for already.
    pub fn savepoint(&self, dir: impl Into<PathBuf>) -> Result<()> {
        let dir = dir.into();
        let mut state = self.lock();
        if state.request.is_some() {
            return Err(Error::config(
                "stop_with_savepoint",
                "the job is stopping already",
            ));
        }
        if let Some((_, coordinator)) = &state.run {
            apply_savepoint(coordinator.as_ref(), dir.clone())?;
        }
        state.request = Some(Request::Savepoint(dir));
        Ok(())
    }

    /// Stops the job with a drain (see the module docs). Returns at once.
    pub fn drain(&self) {
        let mut state = self.lock();
        match state.request {
            // A stop with a savepoint is under way: the first stop wins.
            Some(Request::Savepoint(_)) => return,
            None => state.request = Some(Request::Drain),
            Some(_) => {}
        }
        if let Some((shared, _)) = &state.run {
            shared.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Cancels the job at once; it ends with [`Error::Aborted`].
    pub fn abort(&self) {
        let mut state = self.lock();
        state.request = Some(Request::Abort);
        if let Some((shared, _)) = &state.run {
            shared.fail(Error::Aborted);
        }
    }

    /// Whether a stop (of any kind) was asked for: a failing job is then
    /// not restarted.
    pub fn is_stopping(&self) -> bool {
        self.lock().request.is_some()
    }

    /// Waits up to `delay` (a restart's backoff), returning early, with
    /// `true`, when a stop is asked for.
    pub(crate) fn wait_unless_stopped(&self, delay: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + delay;
        loop {
            if self.is_stopping() {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(20)));
        }
    }

    /// Connects the handle to the attempt that starts now and applies a
    /// stop asked for before it.
    pub(crate) fn attach(&self, shared: &Arc<Shared>, coordinator: Option<&Arc<Coordinator>>) {
        let mut state = self.lock();
        state.run = Some((Arc::clone(shared), coordinator.map(Arc::clone)));
        match state.request.clone() {
            None => {}
            Some(Request::Drain) => shared.stop.store(true, Ordering::SeqCst),
            Some(Request::Abort) => shared.fail(Error::Aborted),
            Some(Request::Savepoint(dir)) => {
                if let Err(e) = apply_savepoint(coordinator, dir) {
                    shared.fail(e);
                }
            }
        }
    }
}

fn apply_savepoint(coordinator: Option<&Arc<Coordinator>>, dir: PathBuf) -> Result<()> {
    match coordinator {
        Some(c) => c.request_savepoint(dir),
        None => Err(Error::config(
            "stop_with_savepoint",
            "the job takes no checkpoints; a savepoint is a checkpoint: call job.checkpointing(...)",
        )),
    }
}
