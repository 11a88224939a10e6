//! Metrics of a running job: one registry per [`Job`](crate::Job), no
//! global state.
//!
//! Tasks write plain atomic cells that belong to one subtask each (records
//! in and out once per batch, the watermark once per watermark, state sizes
//! and source positions every 250 ms of the job's clock), so collection is
//! always on and costs nothing measurable on the hot path. Readers take a
//! [`MetricsSnapshot`] whenever they like — the web UI and its Prometheus
//! endpoint every second, the progress bar a few times a second, tests at
//! exact points of a scripted run — and derive rates from consecutive
//! snapshots.
//!
//! Invariants:
//! - counts are cumulative over every run of the job: a restart folds the
//!   failed run's counts into the totals, so counters never go down (what
//!   Prometheus' `rate()` expects) while [`JobSummary`](crate::JobSummary)
//!   still counts the last run only;
//! - the watermark of an operator subtask is its task's input watermark
//!   (chained operators share one; an `assign_timestamps` inside a chain
//!   reports the watermark it receives, not the one it makes);
//! - the watermark lag is the job clock's time minus the watermark, so
//!   under a manual clock it is exact;
//! - a snapshot is not atomic across subtasks: each cell is read once, in
//!   an unspecified order, while the job runs.

mod counters;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

pub(crate) use counters::{
    DeadLetterLog, OpCounters, PartitionSample, SourceTaskMetrics, TaskCounters,
    SAMPLE_INTERVAL_MILLIS,
};
pub use snapshot::*;

use crate::checkpoint::coordinator::Coordinator;
use crate::runtime::metrics::JobCounters;
use crate::time::{Clock, EventTime};

/// Checkpoints kept in [`CheckpointMetrics::recent`] and `aborted`.
const RECENT_CHECKPOINTS: usize = 10;

/// The metrics registry of one job. Get it with
/// [`Job::metrics`](crate::Job::metrics) before the job runs and read it
/// from any thread while it runs (and after).
///
/// ```
/// use tideline_engine::{Job, metrics::JobStatus};
/// let job = Job::new();
/// let metrics = job.metrics();
/// assert_eq!(metrics.snapshot().job.status, JobStatus::Created);
/// ```
#[derive(Default)]
pub struct JobMetrics {
    status: AtomicU8,
    restarts: AtomicU64,
    started: OnceLock<Instant>,
    last_error: Mutex<Option<String>>,
    run: RwLock<Option<Arc<RunMetrics>>>,
    carried: Mutex<Carried>,
    pub(crate) dead_letters: Arc<DeadLetterLog>,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMetrics")
            .field("status", &self.status())
            .field("restarts", &self.restarts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What earlier runs of the job counted.
#[derive(Debug, Default)]
struct Carried {
    /// By (operator id, subtask).
    ops: HashMap<(usize, usize), Cumulative>,
    late_by_operator_watermark: u64,
    checkpoints: Vec<CheckpointRecord>,
    completed: u64,
    aborted: Vec<AbortedRecord>,
    failed: u64,
}

/// The cumulative counts of one operator subtask.
#[derive(Clone, Copy, Debug, Default)]
struct Cumulative {
    records_in: u64,
    records_out: u64,
    late: u64,
    blocked_ms: u64,
}

/// One operator of the graph, with where its cells are.
#[derive(Debug)]
pub(crate) struct RunOperator {
    pub(crate) info: GraphOperator,
    /// Per subtask.
    pub(crate) counters: Vec<Arc<OpCounters>>,
    /// Its task's cells, per subtask.
    pub(crate) tasks: Vec<Arc<TaskCounters>>,
    /// For sources: each subtask's partitions.
    pub(crate) partitions: Vec<Arc<SourceTaskMetrics>>,
}

/// The cells of one run (one build) of the job.
pub(crate) struct RunMetrics {
    pub(crate) graph: JobGraph,
    pub(crate) operators: Vec<RunOperator>,
    pub(crate) job: Arc<JobCounters>,
    pub(crate) coordinator: Option<Arc<Coordinator>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) restored_from: Option<u64>,
}

impl std::fmt::Debug for RunMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunMetrics")
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

fn status_from(code: u8) -> JobStatus {
    JobStatus::ALL
        .get(usize::from(code))
        .copied()
        .unwrap_or(JobStatus::Failed)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl JobMetrics {
    /// Where the job is in its life.
    pub fn status(&self) -> JobStatus {
        status_from(self.status.load(Ordering::Relaxed))
    }

    pub(crate) fn set_status(&self, status: JobStatus) {
        let code = JobStatus::ALL
            .iter()
            .position(|s| *s == status)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        self.status.store(code, Ordering::Relaxed);
    }

    /// The job failed with `error`; it restarts when `restarting`.
    pub(crate) fn failed(&self, error: &crate::Error, restarting: bool) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error.to_string());
        }
        if restarting {
            self.restarts.fetch_add(1, Ordering::Relaxed);
            self.set_status(JobStatus::Restarting);
        } else if matches!(error, crate::Error::Aborted) {
            self.set_status(JobStatus::Cancelled);
        } else {
            self.set_status(JobStatus::Failed);
        }
    }

    /// A run of the job was built: from now on its cells are read. The
    /// previous run's counts are carried into the totals.
    pub(crate) fn begin_run(&self, run: RunMetrics) {
        self.started.get_or_init(Instant::now);
        // `carried` before `run`, as in `snapshot`: a snapshot sees the old
        // run with the old totals or the new run with the new ones, never a
        // mix (which would make counters go down, or count a run twice).
        let mut carried = self.carried.lock();
        if let Ok(mut slot) = self.run.write() {
            if let (Some(previous), Ok(carried)) = (slot.replace(Arc::new(run)), carried.as_mut()) {
                previous.carry_into(carried);
            }
        }
        drop(carried);
        self.set_status(JobStatus::Running);
    }

    fn current_run(&self) -> Option<Arc<RunMetrics>> {
        self.run.read().ok().and_then(|r| r.clone())
    }

    /// Status, uptime, restarts and the last error: cheap, no task's cell
    /// is read.
    pub fn job_state(&self) -> JobState {
        JobState {
            status: self.status(),
            uptime_ms: self.started.get().map_or(0, |s| millis(s.elapsed())),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// The job's operators and edges (empty before the job is built).
    pub fn graph(&self) -> JobGraph {
        self.current_run().map_or(
            JobGraph {
                operators: Vec::new(),
                edges: Vec::new(),
            },
            |r| r.graph.clone(),
        )
    }

    /// Everything measured, now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        // Lock order: `carried`, then `run` (see `begin_run`).
        let carried = self.carried.lock();
        let run = self.current_run();
        let empty = Carried::default();
        let carried = carried.as_deref().unwrap_or(&empty);
        let time_ms = run.as_ref().map_or_else(
            || crate::time::SystemClock.now_millis(),
            |r| r.clock.now_millis(),
        );
        let job = self.job_state();
        let dead_letters_by_reason: Vec<DeadLetterCount> = self
            .dead_letters
            .by_reason()
            .into_iter()
            .map(|(operator, reason, count)| DeadLetterCount {
                operator,
                reason,
                count,
            })
            .collect();
        let recent_dead_letters = self
            .dead_letters
            .recent()
            .into_iter()
            .map(|(letter, at_ms)| RecentDeadLetter {
                operator: letter.operator,
                reason: letter.reason,
                record: letter.record,
                partition: letter.partition,
                offset: letter.offset,
                timestamp_ms: (letter.timestamp != EventTime::MIN)
                    .then(|| letter.timestamp.millis()),
                at_ms,
            })
            .collect();
        let dead_letters = dead_letters_by_reason.iter().map(|d| d.count).sum();
        let Some(run) = run else {
            return MetricsSnapshot {
                time_ms,
                job,
                operators: Vec::new(),
                sources: Vec::new(),
                checkpoints: CheckpointMetrics::default(),
                late_records: 0,
                late_by_operator_watermark: carried.late_by_operator_watermark,
                dead_letters,
                dead_letters_by_reason,
                recent_dead_letters,
            };
        };
        let operators = run.operators(carried, time_ms);
        MetricsSnapshot {
            time_ms,
            job,
            // Every late record is counted by the operator that found it late.
            late_records: operators.iter().map(|o| o.total().late_records).sum(),
            operators,
            sources: run.partitions(),
            checkpoints: run.checkpoints(carried, time_ms),
            late_by_operator_watermark: carried.late_by_operator_watermark
                + run.job.late_by_operator_watermark.load(Ordering::Relaxed),
            dead_letters,
            dead_letters_by_reason,
            recent_dead_letters,
        }
    }
}

/// Drops all but the last `n` items.
fn keep_last<T>(items: &mut Vec<T>, n: usize) {
    let excess = items.len().saturating_sub(n);
    items.drain(..excess);
}

impl RunMetrics {
    fn operators(&self, carried: &Carried, now: i64) -> Vec<OperatorMetrics> {
        self.operators
            .iter()
            .map(|op| OperatorMetrics {
                id: op.info.id,
                name: op.info.name.clone(),
                kind: op.info.kind,
                subtasks: op
                    .counters
                    .iter()
                    .zip(&op.tasks)
                    .enumerate()
                    .map(|(subtask, (counters, task))| {
                        let c = counters.counts();
                        let t = task.counts();
                        let before = carried
                            .ops
                            .get(&(op.info.id, subtask))
                            .copied()
                            .unwrap_or_default();
                        let watermark = t.watermark.map(EventTime::millis);
                        SubtaskMetrics {
                            subtask,
                            records_in: before.records_in + c.records_in,
                            records_out: before.records_out + c.records_out,
                            late_records: before.late + c.late,
                            watermark_ms: watermark,
                            watermark_lag_ms: watermark
                                .filter(|w| *w != i64::MAX)
                                .map(|w| now.saturating_sub(w)),
                            idle: t.idle,
                            blocked_ms: before.blocked_ms + millis(t.blocked),
                            queue_fill: t.queue_fill,
                            state_entries: c.state_entries,
                            state_bytes: c.state_bytes,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn partitions(&self) -> Vec<PartitionMetrics> {
        let mut all: Vec<PartitionMetrics> = self
            .operators
            .iter()
            .flat_map(|op| {
                op.partitions.iter().flat_map(move |subtask| {
                    subtask
                        .partitions()
                        .into_iter()
                        .map(move |p| PartitionMetrics {
                            source: op.info.name.clone(),
                            partition: p.partition,
                            position: p.progress.map(|p| p.position),
                            lag: p.progress.and_then(|p| p.lag),
                            bounded: p.progress.is_some_and(|p| p.bounded),
                            watermark_ms: p.watermark.map(EventTime::millis),
                            status: if p.finished {
                                PartitionStatus::Finished
                            } else if p.idle {
                                PartitionStatus::Idle
                            } else {
                                PartitionStatus::Active
                            },
                        })
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.source, a.partition).cmp(&(&b.source, b.partition)));
        all
    }

    fn checkpoints(&self, carried: &Carried, now: i64) -> CheckpointMetrics {
        let (stats, aborted) = self
            .coordinator
            .as_ref()
            .map(|c| (c.stats(), c.aborted()))
            .unwrap_or_default();
        let mut recent = carried.checkpoints.clone();
        recent.extend(stats.iter().map(|s| CheckpointRecord {
            id: s.id,
            is_final: s.is_final,
            duration_ms: millis(s.duration),
            size_bytes: s.size_bytes,
            new_bytes: s.new_bytes,
            alignment_ms: millis(s.alignment),
            completed_at_ms: s.completed_at_ms,
            age_ms: 0,
        }));
        for r in &mut recent {
            r.age_ms = now.saturating_sub(r.completed_at_ms);
        }
        let mut aborted_all = carried.aborted.clone();
        aborted_all.extend(aborted.iter().map(|a| AbortedRecord {
            id: a.id,
            reason: a.reason.clone(),
        }));
        keep_last(&mut recent, RECENT_CHECKPOINTS);
        keep_last(&mut aborted_all, RECENT_CHECKPOINTS);
        CheckpointMetrics {
            completed: carried.completed + stats.len() as u64,
            failed: carried.failed + aborted.len() as u64,
            restored_from: self.restored_from,
            recent,
            aborted: aborted_all,
        }
    }

    /// Makes `carried` the totals up to the end of this run (what a
    /// snapshot of this run reports).
    fn carry_into(&self, carried: &mut Carried) {
        let now = self.clock.now_millis();
        for op in self.operators(carried, now) {
            for s in op.subtasks {
                let totals = Cumulative {
                    records_in: s.records_in,
                    records_out: s.records_out,
                    late: s.late_records,
                    blocked_ms: s.blocked_ms,
                };
                carried.ops.insert((op.id, s.subtask), totals);
            }
        }
        carried.late_by_operator_watermark +=
            self.job.late_by_operator_watermark.load(Ordering::Relaxed);
        let checkpoints = self.checkpoints(carried, now);
        carried.completed = checkpoints.completed;
        carried.failed = checkpoints.failed;
        carried.checkpoints = checkpoints.recent;
        carried.aborted = checkpoints.aborted;
    }
}
