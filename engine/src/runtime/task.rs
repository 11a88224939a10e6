use crate::error::Result;

/// What one step of a task achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something was processed; step again.
    Progress,
    /// Nothing to do right now.
    Idle,
    /// The task has finished (sent end-of-input downstream).
    Done,
}

pub(crate) trait Task: Send {
    fn name(&self) -> &str;
    /// Does a bounded amount of work. With `blocking`, may wait a short while
    /// for input; without, never waits.
    fn step(&mut self, blocking: bool) -> Result<Step>;
    /// Sends partially filled batches downstream now.
    fn flush(&mut self) -> Result<()>;
}
