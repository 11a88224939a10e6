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

/// What a job does when it fails while running (Flink's restart
/// strategies). A restart rebuilds every task inside the same process and
/// restores it from the latest complete checkpoint, so it needs
/// checkpointing; exactly-once sinks then show every record once.
///
/// Not restarted: configuration errors (found before the job runs), an
/// abort, and a failure while the job was being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum RestartStrategy {
    /// The first failure is the job's (default).
    #[default]
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Up to `attempts` restarts; the wait starts at `initial` and is
    /// multiplied by `multiplier` after each, up to `max`.
    ExponentialBackoff {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before the first restart.
        initial: Duration,
        /// Longest wait.
        max: Duration,
        /// Growth of the wait per restart (at least 1).
        multiplier: f64,
    },
}

impl RestartStrategy {
    /// The wait before restart number `restart` (0-based), or `None` when
    /// no more restarts are allowed.
    pub fn delay(&self, restart: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (restart < attempts).then_some(delay)
            }
            RestartStrategy::ExponentialBackoff {
                attempts,
                initial,
                max,
                multiplier,
            } => (restart < attempts).then(|| {
                let factor = multiplier
                    .max(1.0)
                    .powi(i32::try_from(restart).unwrap_or(i32::MAX));
                initial.mul_f64(factor.min(1e9)).min(max)
            }),
        }
    }

    fn validate(&self, checkpointing: bool) -> Result<()> {
        if *self == RestartStrategy::None {
            return Ok(());
        }
        if !checkpointing {
            return Err(Error::config(
                "restart_strategy",
                "a restart restores the latest checkpoint: call job.checkpointing(...) too",
            ));
        }
        if let RestartStrategy::ExponentialBackoff {
            multiplier,
            initial,
            max,
            ..
        } = self
        {
            if !(multiplier.is_finite() && *multiplier >= 1.0) {
                return Err(Error::config(
                    "restart_strategy.multiplier",
                    format!("must be a finite number of at least 1, got {multiplier}"),
                ));
            }
            if initial > max {
                return Err(Error::config(
                    "restart_strategy.initial",
                    "must not exceed max",
                ));
            }
        }
        Ok(())
    }
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
    /// Restore even when the checkpoint holds state for uids the job no
    /// longer has (that state is dropped). Default: refuse.
    pub allow_non_restored_state: bool,
    /// What to do when the job fails while running (default: nothing).
    pub restart_strategy: RestartStrategy,
    /// How operators decide that a record is late (default: per source
    /// partition, deterministic).
    pub lateness_rule: LatenessRule,
    /// The job runs as tasks on several workers ([`Job::spawn_part`](crate::Job::spawn_part)):
    /// operators then build only exchanges that can cross workers (a
    /// window aggregation skips its pre-aggregating combiner, whose
    /// partials are not serde). Default: off.
    pub worker_mode: bool,
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
            allow_non_restored_state: false,
            restart_strategy: RestartStrategy::None,
            lateness_rule: LatenessRule::PartitionLocal,
            worker_mode: false,
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
        self.restart_strategy
            .validate(self.checkpointing.is_some())?;
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
