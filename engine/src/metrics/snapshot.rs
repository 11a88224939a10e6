//! What [`JobMetrics::snapshot`](super::JobMetrics::snapshot) and
//! [`JobMetrics::graph`](super::JobMetrics::graph) return: plain values,
//! serializable as JSON (the web UI's API serves them as they are).
//! Milliseconds are of the job's clock; cumulative counts cover every run
//! of the job (restarts included), so they never go down.

use serde::Serialize;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Built, not started.
    Created,
    /// Its tasks run.
    Running,
    /// It failed and waits to be restarted from its latest checkpoint.
    Restarting,
    /// It ended: bounded input done, drained, or stopped with a savepoint.
    Finished,
    /// It failed for good.
    Failed,
    /// It was aborted ([`StopHandle::abort`](crate::StopHandle::abort)).
    Cancelled,
}

impl JobStatus {
    /// Every status, for exporters that publish one series per status.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Restarting,
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// Its name, as in the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Running => "running",
            JobStatus::Restarting => "restarting",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// What an operator of the graph is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorKind {
    /// Reads partitions.
    Source,
    /// Transforms records.
    Operator,
    /// Writes records out.
    Sink,
}

/// How records go from one operator to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The same thread calls the next operator directly (fused).
    Chained,
    /// Over a channel to the subtask of the same index.
    Forward,
    /// Whole batches round-robin over the next subtasks.
    Rebalance,
    /// Every record to every next subtask.
    Broadcast,
    /// By key group (`key_by`).
    Keyed,
}

/// The job's operators and how they connect (exchanges are edges, not
/// operators).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobGraph {
    /// In the order they were added.
    pub operators: Vec<GraphOperator>,
    /// Producer to consumer.
    pub edges: Vec<GraphEdge>,
}

/// One operator of a [`JobGraph`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GraphOperator {
    /// Its index in [`JobGraph::operators`].
    pub id: usize,
    /// Its unique name.
    pub name: String,
    /// Source, operator or sink.
    pub kind: OperatorKind,
    /// Subtasks it runs as.
    pub parallelism: usize,
    /// The task it runs in, named after the task's head: operators with
    /// the same task are chained into one thread per subtask.
    pub task: String,
}

/// One edge of a [`JobGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GraphEdge {
    /// The producing operator's id.
    pub from: usize,
    /// The consuming operator's id.
    pub to: usize,
    /// How records travel.
    pub kind: EdgeKind,
}

/// Everything measured about a job at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// When it was taken (job clock).
    pub time_ms: i64,
    /// Status, uptime, restarts.
    pub job: JobState,
    /// Per operator (as in [`JobGraph::operators`]) and subtask.
    pub operators: Vec<OperatorMetrics>,
    /// Per source partition.
    pub sources: Vec<PartitionMetrics>,
    /// Completed and failed checkpoints.
    pub checkpoints: CheckpointMetrics,
    /// Records too late for every window (or join) they belonged to.
    pub late_records: u64,
    /// Of those, the ones the operator's watermark made late (a partition
    /// resuming after being idle, or `LatenessRule::OperatorWatermark`).
    pub late_by_operator_watermark: u64,
    /// Records rejected into dead-letter outputs.
    pub dead_letters: u64,
    /// Dead letters counted by operator and reason (at most 32 reasons per
    /// operator; the rest as "(other reasons)").
    pub dead_letters_by_reason: Vec<DeadLetterCount>,
    /// The latest 20 dead letters, oldest first.
    pub recent_dead_letters: Vec<RecentDeadLetter>,
}

impl MetricsSnapshot {
    /// The metrics of the operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorMetrics> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// The smallest watermark over the job's sinks (how far event time has
    /// got through the whole job), if every sink has one.
    pub fn sink_watermark_ms(&self) -> Option<i64> {
        min_of_all(
            self.operators
                .iter()
                .filter(|o| o.kind == OperatorKind::Sink)
                .map(OperatorMetrics::watermark_ms),
        )
    }

    /// Records read by every source so far.
    pub fn records_read(&self) -> u64 {
        self.operators
            .iter()
            .filter(|o| o.kind == OperatorKind::Source)
            .map(|o| o.total().records_out)
            .sum()
    }
}

/// Status, uptime and restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobState {
    /// Where the job is in its life.
    pub status: JobStatus,
    /// Since the job first started (wall time), in milliseconds.
    pub uptime_ms: u64,
    /// Times it was restarted after a failure.
    pub restarts: u64,
    /// The error of the last failure, if any.
    pub last_error: Option<String>,
}

/// One operator's subtasks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorMetrics {
    /// Its index in the [`JobGraph`].
    pub id: usize,
    /// Its name.
    pub name: String,
    /// Source, operator or sink.
    pub kind: OperatorKind,
    /// Per subtask, by index.
    pub subtasks: Vec<SubtaskMetrics>,
}

impl OperatorMetrics {
    /// Its subtasks summed (counts), maximum (blocked time, queue fill) or
    /// minimum (watermark; `None` unless every subtask has one).
    pub fn total(&self) -> SubtaskMetrics {
        let mut total = SubtaskMetrics {
            subtask: 0,
            records_in: 0,
            records_out: 0,
            late_records: 0,
            watermark_ms: self.watermark_ms(),
            watermark_lag_ms: None,
            idle: !self.subtasks.is_empty() && self.subtasks.iter().all(|s| s.idle),
            blocked_ms: 0,
            queue_fill: None,
            state_entries: None,
            state_bytes: None,
        };
        for s in &self.subtasks {
            total.records_in += s.records_in;
            total.records_out += s.records_out;
            total.late_records += s.late_records;
            total.blocked_ms = total.blocked_ms.max(s.blocked_ms);
            total.watermark_lag_ms = max_option(total.watermark_lag_ms, s.watermark_lag_ms);
            total.queue_fill = match (total.queue_fill, s.queue_fill) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            total.state_entries = add_option(total.state_entries, s.state_entries);
            total.state_bytes = add_option(total.state_bytes, s.state_bytes);
        }
        total
    }

    /// The smallest watermark over its subtasks, if every one has one.
    pub fn watermark_ms(&self) -> Option<i64> {
        min_of_all(self.subtasks.iter().map(|s| s.watermark_ms))
    }
}

/// The smallest value, if there is at least one and every one is known.
fn min_of_all(values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    let mut min = None;
    for v in values {
        let v = v?;
        min = Some(min.map_or(v, |m: i64| m.min(v)));
    }
    min
}

fn add_option(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

fn max_option(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One operator subtask.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubtaskMetrics {
    /// Its index.
    pub subtask: usize,
    /// Records it received (0 for sources).
    pub records_in: u64,
    /// Records it emitted on its main output (0 for sinks).
    pub records_out: u64,
    /// Records it found late.
    pub late_records: u64,
    /// The watermark of its task's input (`None`: none yet). `i64::MAX`
    /// once the input ended.
    pub watermark_ms: Option<i64>,
    /// Processing time minus the watermark: how far event time lags
    /// behind the clock (`None` without a watermark, or once input ended).
    pub watermark_lag_ms: Option<i64>,
    /// Every input of its task is idle.
    pub idle: bool,
    /// Time its task spent blocked sending downstream (backpressure),
    /// cumulative, in milliseconds.
    pub blocked_ms: u64,
    /// How full its task's input channels were when it last looked (0..1;
    /// `None` for sources and unbounded channels).
    pub queue_fill: Option<f64>,
    /// Keyed state entries (`None`: no state, or not reported).
    pub state_entries: Option<u64>,
    /// Keyed state bytes in RocksDB, SST files and memtables (`None` in memory).
    pub state_bytes: Option<u64>,
}

/// Whether a source partition is read, idle or done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStatus {
    /// Records or watermarks arrive.
    Active,
    /// Nothing arrived for the strategy's idle timeout: left out of the watermark.
    Idle,
    /// It ended.
    Finished,
}

/// One source partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionMetrics {
    /// The source operator's name.
    pub source: String,
    /// The partition's number in its source.
    pub partition: usize,
    /// Where its reader stands, in the source's unit (a Kafka offset, rows
    /// of a file, a log position), if the source says.
    pub position: Option<u64>,
    /// How far behind the reader is, in the same unit, if the source
    /// knows (Kafka: the high watermark, or the end of a bounded read,
    /// minus the position; PostgreSQL: WAL bytes behind the server, or
    /// rows of the snapshot left by the planner's estimate while it is
    /// copied; Parquet files: rows left).
    pub lag: Option<u64>,
    /// The partition ends where `lag` reaches 0.
    pub bounded: bool,
    /// The partition's watermark.
    pub watermark_ms: Option<i64>,
    /// Read, idle or done.
    pub status: PartitionStatus,
}

/// Completed and given-up checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct CheckpointMetrics {
    /// Checkpoints completed (every run of the job).
    pub completed: u64,
    /// Checkpoints given up (an alignment timeout) in every run.
    pub failed: u64,
    /// The checkpoint the current run restored from.
    pub restored_from: Option<u64>,
    /// The latest completed ones, newest last (at most 10).
    pub recent: Vec<CheckpointRecord>,
    /// The latest given-up ones, newest last (at most 10).
    pub aborted: Vec<AbortedRecord>,
}

impl CheckpointMetrics {
    /// The newest completed checkpoint.
    pub fn last(&self) -> Option<&CheckpointRecord> {
        self.recent.last()
    }
}

/// A completed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    /// Its id.
    pub id: u64,
    /// The final checkpoint of a bounded run.
    pub is_final: bool,
    /// From trigger to durable metadata.
    pub duration_ms: u64,
    /// Bytes it references.
    pub size_bytes: u64,
    /// Bytes written for it.
    pub new_bytes: u64,
    /// The longest barrier alignment of any task.
    pub alignment_ms: u64,
    /// When it completed (job clock).
    pub completed_at_ms: i64,
    /// How long ago, at the snapshot.
    pub age_ms: i64,
}

/// A checkpoint given up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AbortedRecord {
    /// Its id.
    pub id: u64,
    /// Why, naming the task.
    pub reason: String,
}

/// Dead letters of one operator for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetterCount {
    /// The operator (or source) that rejected them.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A dead letter as the latest ones are shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentDeadLetter {
    /// The operator (or source) that rejected it.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// The record as text (at most 2,000 bytes; longer ones are cut, marked `…`).
    pub record: String,
    /// Its source partition, for a source's rejections.
    pub partition: Option<usize>,
    /// Where it was in its partition.
    pub offset: Option<String>,
    /// Its event time, if it had one.
    pub timestamp_ms: Option<i64>,
    /// When it was rejected (job clock).
    pub at_ms: i64,
}
