//! Job-wide configuration, validated before a job starts.

use std::sync::Arc;
use std::time::Duration;

use tideline_state::StateBackend;

use crate::checkpoint::{CheckpointConfig, RestoreFrom};
use crate::error::{Error, Result};
use crate::time::{duration_millis, Clock, LatenessRule, SystemClock};

/// How a job runs (DESIGN.md: the same job code runs both ways).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutionMode {
    /// Unbounded sources allowed; the job runs until stopped or all sources end.
    #[default]
    Streaming,
    /// Every source must be bounded; the job ends when they all end, and the
    /// watermark then becomes `+inf` so every timer and window fires.
    Bounded,
}

/// What happens to a record that user code rejects (`try_map` errors, parse failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Send it to the dead-letter output with the reason; the job goes on.
    #[default]
    DeadLetter,
    /// Stop the job with that error.
    FailFast,
}

/// Configuration shared by every task of a job.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Subtasks per operator (sources: at most one per partition).
    pub parallelism: usize,
    /// Execution mode.
    pub mode: ExecutionMode,
    /// Records per batch on channels (and per source read).
    pub batch_size: usize,
    /// A partially filled batch is flushed after this much processing time.
    pub flush_interval: Duration,
    /// Batches each input channel of a subtask (one upstream subtask of one
    /// input edge) holds before its sender blocks.
    pub channel_capacity: usize,
    /// Number of key groups (the maximum parallelism of keyed operators).
    pub key_groups: u16,
    /// Processing-time clock.
    pub clock: Arc<dyn Clock>,
    /// What to do with records user code rejects.
    pub failure_policy: FailurePolicy,
    /// Where keyed state lives (default: memory).
    pub state_backend: StateBackend,
    /// Periodic checkpoints (default: none).
    pub checkpointing: Option<CheckpointConfig>,
    /// The checkpoint to restart from (default: start from the beginning).
    pub restore: Option<RestoreFrom>,
    /// How operators decide that a record is late (default: per source
    /// partition, deterministic).
    pub lateness_rule: LatenessRule,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            mode: ExecutionMode::Streaming,
            batch_size: 1024,
            flush_interval: Duration::from_millis(50),
            channel_capacity: 16,
            key_groups: tideline_state::key_group::DEFAULT_KEY_GROUPS,
            clock: Arc::new(SystemClock),
            failure_policy: FailurePolicy::DeadLetter,
            state_backend: StateBackend::Memory,
            checkpointing: None,
            restore: None,
            lateness_rule: LatenessRule::PartitionLocal,
        }
    }
}

impl JobConfig {
    /// Rejects values that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.parallelism == 0 {
            return Err(Error::config("parallelism", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if self.channel_capacity == 0 {
            return Err(Error::config("channel_capacity", "must be at least 1"));
        }
        if self.key_groups == 0 {
            return Err(Error::config("key_groups", "must be at least 1"));
        }
        if self.parallelism > usize::from(self.key_groups) {
            return Err(Error::config(
                "parallelism",
                format!(
                    "{} exceeds key_groups ({}), the maximum parallelism",
                    self.parallelism, self.key_groups
                ),
            ));
        }
        if let Some(cp) = &self.checkpointing {
            if cp.interval.is_zero() {
                return Err(Error::config(
                    "checkpointing.interval",
                    "must be at least 1 ms",
                ));
            }
            if cp.retain == 0 {
                return Err(Error::config(
                    "checkpointing.retain",
                    "must keep at least 1 checkpoint",
                ));
            }
        }
        if self.flush_interval.is_zero() || duration_millis(self.flush_interval).is_none() {
            return Err(Error::config(
                "flush_interval",
                "must be at least 1 ms and fit i64 milliseconds",
            ));
        }
        Ok(())
    }

    pub(crate) fn flush_interval_millis(&self) -> i64 {
        duration_millis(self.flush_interval)
            .unwrap_or(i64::MAX)
            .max(1)
    }
}
