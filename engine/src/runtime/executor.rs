//! Running tasks: one thread each ([`JobHandle`]), or all stepped in the
//! caller's thread ([`LocalRun`]).
//!
//! Failure rule: the first error that is not a cancellation is the job's
//! error; it sets the cancel flag, every other task stops (blocked sends and
//! receives end because the failed task dropped its channels, waits re-check
//! the flag), and `join` returns that error once every thread has ended.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::SkippedCheckpoint;
use crate::error::{Error, Result};
use crate::metrics::OpCounters;
use crate::runtime::metrics::{JobCounters, JobSummary, OperatorSummary};
use crate::runtime::shared::Shared;
use crate::runtime::stop::StopHandle;
use crate::runtime::task::{Step, Task};

/// Everything needed to report on a job after it ran.
#[derive(Debug)]
pub(crate) struct JobReport {
    /// Name, parallelism and per-subtask counters of every operator.
    pub(crate) operators: Vec<(String, usize, Vec<Arc<OpCounters>>)>,
    pub(crate) counters: Arc<JobCounters>,
    pub(crate) coordinator: Option<Arc<Coordinator>>,
    pub(crate) restored_from: Option<u64>,
    pub(crate) skipped_checkpoints: Vec<SkippedCheckpoint>,
    pub(crate) stop: StopHandle,
    pub(crate) metrics: Arc<crate::metrics::JobMetrics>,
    /// What the job keeps alive while it runs ([`crate::Job::attach`]).
    pub(crate) attachments: Vec<Box<dyn std::any::Any + Send>>,
}

impl Drop for JobReport {
    fn drop(&mut self) {
        self.finish_checkpoints();
    }
}

impl JobReport {
    /// Waits for the checkpoints the job completed to be written and committed.
    fn finish_checkpoints(&self) {
        if let Some(c) = &self.coordinator {
            c.shutdown();
        }
    }

    fn summary(&self, elapsed: Duration) -> JobSummary {
        JobSummary {
            elapsed,
            operators: self
                .operators
                .iter()
                .map(|(name, parallelism, subtasks)| {
                    let counts = subtasks.iter().map(|c| c.counts());
                    OperatorSummary {
                        name: name.clone(),
                        parallelism: *parallelism,
                        records_in: counts.clone().map(|c| c.records_in).sum(),
                        records_out: counts.map(|c| c.records_out).sum(),
                    }
                })
                .collect(),
            // Every late record is counted by the operator that found it late.
            late_records: self
                .operators
                .iter()
                .flat_map(|(_, _, subtasks)| subtasks)
                .map(|c| c.counts().late)
                .sum(),
            late_by_operator_watermark: self
                .counters
                .late_by_operator_watermark
                .load(Ordering::Relaxed),
            dead_letters: self.counters.dead_letters.load(Ordering::Relaxed),
            checkpoints: self
                .coordinator
                .as_ref()
                .map(|c| c.stats())
                .unwrap_or_default(),
            aborted_checkpoints: self
                .coordinator
                .as_ref()
                .map(|c| c.aborted())
                .unwrap_or_default(),
            restored_from: self.restored_from,
            skipped_checkpoints: self.skipped_checkpoints.clone(),
            restarts: Vec::new(),
            savepoint: self.coordinator.as_ref().and_then(|c| c.savepoint()),
        }
    }
}

/// The job ended for good with `result`: the metrics say so, and so do the logs.
pub(crate) fn report_end(
    metrics: &crate::metrics::JobMetrics,
    result: std::result::Result<&JobSummary, &Error>,
) {
    match result {
        Ok(summary) => {
            metrics.set_status(crate::metrics::JobStatus::Finished);
            tracing::info!(
                elapsed_ms = summary.elapsed.as_millis() as u64,
                late = summary.late_records,
                dead_letters = summary.dead_letters,
                checkpoints = summary.checkpoints.len(),
                "job finished"
            );
        }
        // Asked for (a stop handle; worker mode moving a task): not a failure.
        Err(e @ Error::Aborted) => {
            metrics.failed(e, false);
            tracing::info!("job aborted");
        }
        Err(e) => {
            metrics.failed(e, false);
            tracing::error!(error = %e, "job failed");
        }
    }
}

fn step_guarded(task: &mut dyn Task, blocking: bool) -> Result<Step> {
    match catch_unwind(AssertUnwindSafe(|| task.step(blocking))) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(payload).in_operator(task.name())),
    }
}

/// A job running on its own threads.
#[derive(Debug)]
pub struct JobHandle {
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    report: JobReport,
    started: Instant,
}

impl JobHandle {
    pub(crate) fn spawn(
        tasks: Vec<Box<dyn Task>>,
        shared: Arc<Shared>,
        report: JobReport,
    ) -> Result<Self> {
        let started = Instant::now();
        tracing::info!(
            tasks = tasks.len(),
            restored_from = report.restored_from,
            "job started"
        );
        let mut threads = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            let shared_for_task = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("tideline:{}", task.name()))
                .spawn(move || {
                    let mut idle_rounds = 0u32;
                    loop {
                        match step_guarded(task.as_mut(), true) {
                            Ok(Step::Done) => break,
                            Ok(Step::Progress) => idle_rounds = 0,
                            Ok(Step::Idle) => {
                                // Nothing to do: send partial batches now rather
                                // than at the flush interval (latency at low load).
                                if idle_rounds == 0 {
                                    if let Err(e) = task.flush() {
                                        drop(task);
                                        shared_for_task.fail(e);
                                        return;
                                    }
                                }
                                idle_rounds = idle_rounds.saturating_add(1);
                                backoff(idle_rounds);
                            }
                            Err(e) => {
                                drop(task);
                                shared_for_task.fail(e);
                                return;
                            }
                        }
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.fail(Error::Internal(format!("cannot spawn a task thread: {e}")));
                    break;
                }
            }
        }
        Ok(Self {
            threads,
            shared,
            report,
            started,
        })
    }

    /// Stops the job with a savepoint exported into `dir`, without draining
    /// (see [`StopHandle::savepoint`]). Returns at once; [`JobHandle::join`]
    /// waits for the end, and its summary names the savepoint.
    ///
    /// # Errors
    /// When the job takes no checkpoints or is stopping already.
    pub fn stop_with_savepoint(&self, dir: impl Into<std::path::PathBuf>) -> Result<()> {
        self.report.stop.savepoint(dir)
    }

    /// Stops the job for good: sources end their input, records in flight
    /// are processed, the watermark becomes `+inf` (every window and timer
    /// fires) and sinks finish (see [`StopHandle::drain`]). Returns at once;
    /// [`JobHandle::join`] waits for the end.
    pub fn stop_and_drain(&self) {
        self.report.stop.drain();
    }

    /// A handle that stops this job from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.report.stop.clone()
    }

    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the job to end.
    ///
    /// # Errors
    /// The first error raised by any operator, source or sink, naming it.
    pub fn join(self) -> Result<JobSummary> {
        let metrics = Arc::clone(&self.report.metrics);
        let result = self.join_run();
        report_end(&metrics, result.as_ref());
        result
    }

    /// Waits for the end of this run, leaving the job's status to the
    /// caller (which may restart it).
    pub(crate) fn join_run(self) -> Result<JobSummary> {
        for t in self.threads {
            if t.join().is_err() {
                self.shared.fail(Error::Internal(
                    "a task thread panicked outside its guard".into(),
                ));
            }
        }
        self.report.finish_checkpoints();
        let result = match self.shared.take_error() {
            Some(e) => Err(e),
            None => Ok(self.report.summary(self.started.elapsed())),
        };
        report_end(&self.report.metrics, result.as_ref());
        result
    }
}

/// Idle source tasks poll again after a short, growing pause (they have no
/// channel to block on); input tasks block in their receive instead.
fn backoff(idle_rounds: u32) {
    if idle_rounds < 16 {
        std::thread::yield_now();
    } else {
        let micros = u64::from(idle_rounds.min(1_000)) * 10;
        std::thread::sleep(Duration::from_micros(micros.min(2_000)));
    }
}

/// A job whose tasks all run in the calling thread, stepped explicitly:
/// what `tideline::testing` builds on. Channels are unbounded, so stepping
/// never blocks.
pub struct LocalRun {
    tasks: Vec<(Box<dyn Task>, bool)>,
    shared: Arc<Shared>,
    report: JobReport,
    started: Instant,
}

impl std::fmt::Debug for LocalRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .tasks
            .iter()
            .map(|(t, _)| t.name().to_string())
            .collect();
        f.debug_struct("LocalRun").field("tasks", &names).finish()
    }
}

impl LocalRun {
    pub(crate) fn new(tasks: Vec<Box<dyn Task>>, shared: Arc<Shared>, report: JobReport) -> Self {
        Self {
            tasks: tasks.into_iter().map(|t| (t, false)).collect(),
            shared,
            report,
            started: Instant::now(),
        }
    }

    /// Steps every task until none can make progress, flushing partial
    /// batches whenever they are all quiet: everything pushed into the
    /// sources has been processed as far as it can go.
    ///
    /// # Errors
    /// The first error of any task (the run is then unusable).
    pub fn step(&mut self) -> Result<()> {
        self.step_unflushed()?;
        loop {
            for (task, done) in &mut self.tasks {
                if !*done {
                    task.flush()?;
                }
            }
            if !self.step_unflushed()? {
                return Ok(());
            }
        }
    }

    /// Like [`LocalRun::step`], but partial batches wait in exchange buffers
    /// until the flush interval passes on the job's clock (to test that
    /// interval). Returns whether anything progressed.
    ///
    /// # Errors
    /// The first error of any task (the run is then unusable).
    pub fn step_unflushed(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            let mut progressed = false;
            for (task, done) in &mut self.tasks {
                if *done {
                    continue;
                }
                match step_guarded(task.as_mut(), false)? {
                    Step::Done => {
                        *done = true;
                        progressed = true;
                    }
                    Step::Progress => progressed = true,
                    Step::Idle => {}
                }
            }
            if !progressed {
                return Ok(any);
            }
            any = true;
        }
    }

    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(|(_, done)| *done)
    }

    /// The tasks, named after their head operator and subtask (`map[0]`):
    /// chained operators share one task.
    pub fn task_names(&self) -> Vec<String> {
        self.tasks
            .iter()
            .map(|(t, _)| t.name().to_string())
            .collect()
    }

    /// Ends all input (a drain, as [`JobHandle::stop_and_drain`]), steps until every task is done,
    /// and returns the summary.
    ///
    /// # Errors
    /// The first error of any task.
    pub fn finish(mut self) -> Result<JobSummary> {
        // Read what is already queued at the sources before ending them.
        self.step()?;
        self.shared.stop.store(true, Ordering::SeqCst);
        self.step()?;
        if !self.is_finished() {
            return Err(Error::Internal(
                "tasks did not finish after end of input".into(),
            ));
        }
        self.report.finish_checkpoints();
        let result = match self.shared.take_error() {
            Some(e) => Err(e),
            None => Ok(self.report.summary(self.started.elapsed())),
        };
        report_end(&self.report.metrics, result.as_ref());
        result
    }

    /// A handle that stops this run (with a savepoint, a drain, or an
    /// abort) at its next steps.
    pub fn stop_handle(&self) -> StopHandle {
        self.report.stop.clone()
    }

    /// The summary so far.
    pub fn summary(&self) -> JobSummary {
        self.report.summary(self.started.elapsed())
    }
}
