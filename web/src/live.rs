//! What the page and the JSON API show: a [`MetricsSnapshot`] with rates
//! (records per second, the share of time blocked on output) computed
//! against the previous sample, and two minutes of history for the
//! sparklines.
//!
//! Rates are over wall time between samples (not the job's clock, which a
//! test or a replay may drive): they say how fast the process runs now.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::Serialize;
use tideline_engine::metrics::{
    AbortedRecord, CheckpointRecord, DeadLetterCount, JobState, MetricsSnapshot, OperatorKind,
    PartitionStatus, RecentDeadLetter, SubtaskMetrics,
};

/// Samples kept for the sparklines (one a second by default: two minutes).
pub(crate) const HISTORY: usize = 120;

/// The last sample, its view, and the history of the sparklines.
#[derive(Debug, Default)]
pub(crate) struct LiveState {
    /// The last sample: when, and what (rates are against it).
    last: Option<(Instant, MetricsSnapshot)>,
    history: VecDeque<HistoryPoint>,
    /// The view of the last sample (what `/api/metrics` serves).
    pub(crate) view: Option<LiveView>,
}

#[derive(Clone, Copy, Debug)]
struct HistoryPoint {
    time_ms: i64,
    throughput: f64,
    watermark_lag_ms: Option<i64>,
}

impl LiveState {
    /// The snapshot of the last sample (`/api/checkpoints`, `/api/dead-letters`).
    pub(crate) fn last_snapshot(&self) -> Option<&MetricsSnapshot> {
        self.last.as_ref().map(|(_, s)| s)
    }

    /// Takes in a new snapshot, taken at `now`.
    pub(crate) fn sample(&mut self, now: Instant, snapshot: MetricsSnapshot) {
        let elapsed = self
            .last
            .as_ref()
            .map(|(at, _)| now.duration_since(*at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let before = self.last.as_ref().map(|(_, s)| s);
        let mut view = LiveView::new(&snapshot, before, elapsed);
        self.history.push_back(HistoryPoint {
            time_ms: snapshot.time_ms,
            throughput: view.throughput,
            watermark_lag_ms: view.watermark_lag_ms,
        });
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        view.history = History::from(&self.history);
        self.view = Some(view);
        self.last = Some((now, snapshot));
    }
}

/// `/api/metrics`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LiveView {
    time_ms: i64,
    job: JobState,
    operators: Vec<OperatorView>,
    sources: Vec<PartitionView>,
    checkpoints: CheckpointsView,
    late_records: u64,
    late_by_operator_watermark: u64,
    dead_letters: u64,
    dead_letters_by_reason: Vec<DeadLetterCount>,
    recent_dead_letters: Vec<RecentDeadLetter>,
    /// Records per second read by every source.
    throughput: f64,
    /// The job clock minus the smallest sink watermark.
    watermark_lag_ms: Option<i64>,
    history: History,
}

#[derive(Clone, Debug, Serialize)]
struct OperatorView {
    id: usize,
    name: String,
    kind: OperatorKind,
    #[serde(flatten)]
    total: SubtaskView,
    dead_letters: u64,
    subtasks: Vec<SubtaskView>,
}

#[derive(Clone, Debug, Serialize)]
struct SubtaskView {
    #[serde(flatten)]
    metrics: SubtaskMetrics,
    in_per_s: f64,
    out_per_s: f64,
    /// Share of the last interval spent blocked on output (0..1).
    backpressure: f64,
}

impl SubtaskView {
    fn new(now: SubtaskMetrics, before: Option<&SubtaskMetrics>, elapsed: Option<f64>) -> Self {
        let rate = |now: u64, before: Option<u64>| match (before, elapsed) {
            (Some(b), Some(s)) => now.saturating_sub(b) as f64 / s,
            _ => 0.0,
        };
        let in_per_s = rate(now.records_in, before.map(|b| b.records_in));
        let out_per_s = rate(now.records_out, before.map(|b| b.records_out));
        // Blocked milliseconds per millisecond of the interval.
        let backpressure =
            (rate(now.blocked_ms, before.map(|b| b.blocked_ms)) / 1_000.0).clamp(0.0, 1.0);
        Self {
            metrics: now,
            in_per_s,
            out_per_s,
            backpressure,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
struct PartitionView {
    operator: String,
    partition: usize,
    position: Option<u64>,
    lag: Option<u64>,
    watermark_ms: Option<i64>,
    status: PartitionStatus,
}

#[derive(Clone, Debug, Serialize)]
struct CheckpointsView {
    completed: u64,
    failed: u64,
    restored_from: Option<u64>,
    last: Option<CheckpointRecord>,
    recent: Vec<CheckpointRecord>,
    aborted: Vec<AbortedRecord>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct History {
    time_ms: Vec<i64>,
    throughput: Vec<f64>,
    watermark_lag_ms: Vec<Option<i64>>,
}

impl From<&VecDeque<HistoryPoint>> for History {
    fn from(points: &VecDeque<HistoryPoint>) -> Self {
        Self {
            time_ms: points.iter().map(|p| p.time_ms).collect(),
            throughput: points.iter().map(|p| p.throughput).collect(),
            watermark_lag_ms: points.iter().map(|p| p.watermark_lag_ms).collect(),
        }
    }
}

impl LiveView {
    fn new(now: &MetricsSnapshot, before: Option<&MetricsSnapshot>, elapsed: Option<f64>) -> Self {
        let mut dead_by_operator: HashMap<&str, u64> = HashMap::new();
        for d in &now.dead_letters_by_reason {
            *dead_by_operator.entry(d.operator.as_str()).or_default() += d.count;
        }
        let operators: Vec<OperatorView> = now
            .operators
            .iter()
            .map(|op| {
                let previous = before.and_then(|b| b.operators.iter().find(|o| o.id == op.id));
                let subtasks: Vec<SubtaskView> = op
                    .subtasks
                    .iter()
                    .map(|s| {
                        let b = previous.and_then(|p| p.subtasks.get(s.subtask));
                        SubtaskView::new(s.clone(), b, elapsed)
                    })
                    .collect();
                let mut total =
                    SubtaskView::new(op.total(), previous.map(|p| p.total()).as_ref(), elapsed);
                // The operator is as backpressured as its most blocked subtask.
                total.backpressure = subtasks.iter().map(|s| s.backpressure).fold(0.0, f64::max);
                OperatorView {
                    id: op.id,
                    name: op.name.clone(),
                    kind: op.kind,
                    total,
                    dead_letters: dead_by_operator.get(op.name.as_str()).copied().unwrap_or(0),
                    subtasks,
                }
            })
            .collect();
        let throughput = operators
            .iter()
            .filter(|o| o.kind == OperatorKind::Source)
            .map(|o| o.total.out_per_s)
            .sum();
        let watermark_lag_ms = now
            .sink_watermark_ms()
            .filter(|w| *w != i64::MAX)
            .map(|w| now.time_ms.saturating_sub(w));
        Self {
            time_ms: now.time_ms,
            job: now.job.clone(),
            operators,
            sources: now
                .sources
                .iter()
                .map(|p| PartitionView {
                    operator: p.source.clone(),
                    partition: p.partition,
                    position: p.position,
                    lag: p.lag,
                    watermark_ms: p.watermark_ms,
                    status: p.status,
                })
                .collect(),
            checkpoints: CheckpointsView {
                completed: now.checkpoints.completed,
                failed: now.checkpoints.failed,
                restored_from: now.checkpoints.restored_from,
                last: now.checkpoints.last().cloned(),
                recent: now.checkpoints.recent.clone(),
                aborted: now.checkpoints.aborted.clone(),
            },
            late_records: now.late_records,
            late_by_operator_watermark: now.late_by_operator_watermark,
            dead_letters: now.dead_letters,
            dead_letters_by_reason: now.dead_letters_by_reason.clone(),
            recent_dead_letters: now.recent_dead_letters.clone(),
            throughput,
            watermark_lag_ms,
            history: History::default(),
        }
    }
}

impl LiveState {
    /// The backpressure of every operator subtask in the last sample.
    pub(crate) fn backpressure(&self) -> HashMap<(String, usize), f64> {
        self.view
            .iter()
            .flat_map(|v| v.operators.iter())
            .flat_map(|op| {
                op.subtasks
                    .iter()
                    .map(move |s| ((op.name.clone(), s.metrics.subtask), s.backpressure))
            })
            .collect()
    }
}
