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
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::{Error, Result, StopHandle};

/// Turns SIGINT and SIGTERM into stops of one job until dropped (then the
/// process's own handling is back).
#[derive(Debug)]
pub struct SignalGuard {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Stops `job` on SIGINT/SIGTERM: the first signal with a savepoint into
/// `savepoint_dir` (an abort without one), the second with an abort. Each
/// decision is reported on stderr.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn stop_on_signals(job: StopHandle, savepoint_dir: Option<PathBuf>) -> Result<SignalGuard> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::user(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("tideline:signals".into())
        .spawn(move || {
            for (received, _) in signals.forever().enumerate() {
                let stopped = match (&savepoint_dir, received) {
                    (Some(dir), 0) => job.savepoint(dir.clone()).map(|()| dir),
                    (None, 0) => Err(Error::config("savepoint directory", "none given")),
                    _ => Err(Error::config("signal", "received a second time")),
                };
                match stopped {
                    Ok(dir) => eprintln!(
                        "stopping with a savepoint into {} (signal again to abort)",
                        dir.display()
                    ),
                    Err(e) => {
                        eprintln!("aborting the job: {e}");
                        job.abort();
                    }
                }
            }
        })
        .map_err(|e| Error::user(format!("cannot start the signal thread: {e}")))?;
    Ok(SignalGuard {
        handle,
        thread: Some(thread),
    })
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
