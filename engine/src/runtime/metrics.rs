//! Counters kept while a job runs (updated once per batch, not per record)
//! and the summary `run()` returns.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{AbortedCheckpoint, CheckpointStats, SkippedCheckpoint};
use crate::time::Clock;

/// Counts of one run of the job (the summary's), and where dead letters
/// are logged for the job's metrics.
pub(crate) struct JobCounters {
    pub(crate) late_by_operator_watermark: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) dead_letter_log: Arc<crate::metrics::DeadLetterLog>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl fmt::Debug for JobCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCounters")
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

impl JobCounters {
    pub(crate) fn new(
        dead_letter_log: Arc<crate::metrics::DeadLetterLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            late_by_operator_watermark: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dead_letter_log,
            clock,
        }
    }
}

/// Records in and out of one operator, summed over its subtasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSummary {
    /// The operator's name.
    pub name: String,
    /// Subtasks it ran as.
    pub parallelism: usize,
    /// Records it received (0 for sources).
    pub records_in: u64,
    /// Records it emitted on its main output (0 for sinks).
    pub records_out: u64,
}

/// What a finished job reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSummary {
    /// Wall-clock time from start to end.
    pub elapsed: Duration,
    /// Per operator, in the order they were added to the job.
    pub operators: Vec<OperatorSummary>,
    /// Records that arrived too late for every window they belonged to.
    pub late_records: u64,
    /// Of those, the records the operator's watermark made late though their
    /// source partition's had not passed (a partition resuming after being
    /// idle; records made downstream; or [`LatenessRule::OperatorWatermark`](crate::time::LatenessRule)).
    pub late_by_operator_watermark: u64,
    /// Records rejected into the dead-letter output.
    pub dead_letters: u64,
    /// The checkpoints completed, in order (empty without checkpointing).
    pub checkpoints: Vec<CheckpointStats>,
    /// Checkpoints given up before completing (an alignment timeout), in
    /// order: their count is the number of aborted checkpoints.
    pub aborted_checkpoints: Vec<AbortedCheckpoint>,
    /// The checkpoint the job restarted from, if any.
    pub restored_from: Option<u64>,
    /// Newer checkpoints passed over on restore because they did not verify.
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
    /// Times the job was restarted from its latest checkpoint after a
    /// failure (see [`RestartStrategy`](crate::RestartStrategy)), with the
    /// errors that caused them.
    pub restarts: Vec<String>,
    /// The savepoint the job stopped with ([`StopHandle::savepoint`](crate::StopHandle::savepoint)):
    /// the `chk-N` directory to resume from with `RestoreFrom::Path`.
    pub savepoint: Option<std::path::PathBuf>,
}

impl JobSummary {
    /// The summary of the operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorSummary> {
        self.operators.iter().find(|o| o.name == name)
    }
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job finished in {:.3}s", self.elapsed.as_secs_f64())?;
        for op in &self.operators {
            writeln!(
                f,
                "  {:<24} x{:<3} in={:<12} out={}",
                op.name, op.parallelism, op.records_in, op.records_out
            )?;
        }
        write!(
            f,
            "  late={} dead_letter={}",
            self.late_records, self.dead_letters
        )?;
        if self.late_by_operator_watermark > 0 {
            write!(
                f,
                " (late by the operator's watermark: {})",
                self.late_by_operator_watermark
            )?;
        }
        Ok(())
    }
}
