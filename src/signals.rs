//! Stopping a job from a terminal or a process supervisor: SIGINT (Ctrl-C)
//! and SIGTERM become a stop with a savepoint, the way `flink stop` works.
//!
//! The first signal asks the job to stop with a savepoint into the given
//! directory ([`StopHandle::savepoint`]): no window fires early, and the job
//! ends with [`JobSummary::savepoint`](crate::JobSummary::savepoint) naming
//! the `chk-N` directory to resume from with `RestoreFrom::Path`. A second
//! signal, or the first when there is no savepoint directory (or the job
//! takes no checkpoints), aborts the job.
//!
//! ```no_run
//! use tideline::prelude::*;
//! # fn build() -> Job { Job::new() }
//! let job = build();
//! let _signals = tideline::signals::stop_on_signals(job.stop_handle(), Some("savepoints".into()))?;
//! let summary = job.run()?;
//! if let Some(savepoint) = &summary.savepoint {
//!     println!("stopped; resume from {}", savepoint.display());
//! }
//! # Ok::<(), tideline::Error>(())
//! ```

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{Error, Result, StopHandle};

/// The job signals stop now, and how many signals it has seen.
#[derive(Debug)]
struct Target {
    job: StopHandle,
    savepoint_dir: Option<PathBuf>,
    received: usize,
    /// Which guard installed it (a later guard replaces an earlier one).
    guard: u64,
}

/// One listener per process: handlers, once installed, stay installed, so
/// the listener forwards to whichever job is guarded now and acts as the
/// default handler (ends the process) when none is.
fn target() -> &'static Mutex<Option<Target>> {
    static TARGET: Mutex<Option<Target>> = Mutex::new(None);
    &TARGET
}

fn listen() -> Result<()> {
    static LISTENING: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let started = LISTENING.get_or_init(|| {
        let mut signals = Signals::new([SIGINT, SIGTERM])
            .map_err(|e| format!("cannot handle SIGINT/SIGTERM: {e}"))?;
        std::thread::Builder::new()
            .name("tideline:signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    on_signal(signal);
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the signal thread: {e}"))
    });
    started.clone().map_err(Error::user)
}

fn on_signal(signal: i32) {
    let mut target = target().lock().unwrap_or_else(PoisonError::into_inner);
    let Some(t) = target.as_mut() else {
        drop(target);
        let _ = signal_hook::low_level::emulate_default_handler(signal);
        return;
    };
    t.received += 1;
    let stopped = match (&t.savepoint_dir, t.received) {
        (Some(dir), 1) => t.job.savepoint(dir.clone()).map(|()| dir),
        (None, 1) => Err(Error::config("savepoint directory", "none given")),
        _ => Err(Error::config("signal", "received a second time")),
    };
    match stopped {
        Ok(dir) => eprintln!(
            "stopping with a savepoint into {} (signal again to abort)",
            dir.display()
        ),
        Err(e) => {
            eprintln!("aborting the job: {e}");
            t.job.abort();
        }
    }
}

/// Turns SIGINT and SIGTERM into stops of one job until dropped; after
/// that they have their default effect again (the process ends).
#[derive(Debug)]
pub struct SignalGuard {
    id: u64,
}

/// Stops `job` on SIGINT/SIGTERM: the first signal with a savepoint into
/// `savepoint_dir` (an abort without one), the second with an abort. Each
/// decision is reported on stderr. A later guard takes over from an
/// earlier one.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn stop_on_signals(job: StopHandle, savepoint_dir: Option<PathBuf>) -> Result<SignalGuard> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    listen()?;
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *target().lock().unwrap_or_else(PoisonError::into_inner) = Some(Target {
        job,
        savepoint_dir,
        received: 0,
        guard: id,
    });
    Ok(SignalGuard { id })
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut target = target().lock().unwrap_or_else(PoisonError::into_inner);
        if target.as_ref().is_some_and(|t| t.guard == self.id) {
            *target = None;
        }
    }
}
