//! What every task of one running job shares: the cancel and drain flags and
//! the job's first error.
//!
//! Failure rule: the first error that is not a cancellation is the job's
//! error; recording it sets the cancel flag, so every other task stops at its
//! next step. Anything that runs beside the tasks (the checkpoint thread)
//! fails the job through the same [`Shared::fail`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Flags and the first error, shared by all tasks of a job.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) cancel: Arc<AtomicBool>,
    /// Sources end their input (a drain: the watermark becomes `+inf`).
    pub(crate) stop: Arc<AtomicBool>,
    error: Mutex<Option<Error>>,
}

impl Shared {
    /// Records `error` (unless one is recorded already) and cancels the job.
    pub(crate) fn fail(&self, error: Error) {
        if !matches!(error, Error::Cancelled) {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(error);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether the job was cancelled (by a failure or an abort).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The job's error, if it failed.
    pub(crate) fn take_error(&self) -> Option<Error> {
        let recorded = self.error.lock().ok().and_then(|mut e| e.take());
        match recorded {
            Some(e) => Some(e),
            None if self.is_cancelled() => Some(Error::Internal(
                "job cancelled without a recorded cause".into(),
            )),
            None => None,
        }
    }
}
