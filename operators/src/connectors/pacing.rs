//! Helpers for partitioned sources that generate records: which records a
//! partition holds, and pacing to a fixed rate by the job's clock.
//!
//! Invariant: a paced partition has emitted at most
//! `1 + elapsed_ms * rate / partitions / 1000` records since it (or the
//! first partition sharing its [`PacingStart`]) started, counting from the
//! position it resumed at.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tideline_engine::time::Clock;
use tideline_engine::{Error, Result};

/// How many of `total` records partition `partition` of `partitions` holds
/// when records are dealt round-robin (indices `partition`,
/// `partition + partitions`, …).
pub fn partition_len(total: u64, partition: usize, partitions: usize) -> u64 {
    total
        .saturating_sub(partition as u64)
        .div_ceil(partitions.max(1) as u64)
}

/// When pacing started, in the job clock's milliseconds; shared by the
/// partitions of a source so they all pace from the first one's start (and
/// readable by a sink that measures latency against the schedule).
#[derive(Clone, Debug)]
pub struct PacingStart(Arc<AtomicI64>);

impl Default for PacingStart {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(i64::MIN)))
    }
}

impl PacingStart {
    /// The start, once a paced reader has polled.
    pub fn millis(&self) -> Option<i64> {
        match self.0.load(Ordering::Acquire) {
            i64::MIN => None,
            start => Some(start),
        }
    }

    /// The start, set to `now` if nobody has started yet.
    fn get_or_start(&self, now: i64) -> i64 {
        match self
            .0
            .compare_exchange(i64::MIN, now, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => now,
            Err(start) => start,
        }
    }
}

/// Paces one partition of a source to its share of a total rate.
#[derive(Debug)]
pub struct RateLimit {
    per_ms: f64,
    clock: Arc<dyn Clock>,
    start: PacingStart,
    started: Option<i64>,
    resumed_at: u64,
}

impl RateLimit {
    /// `records_per_second` in total over `partitions` partitions, for a
    /// partition that has already emitted `resumed_at` records (pacing
    /// counts from there). `what` names the setting in errors.
    ///
    /// # Errors
    /// When the rate is not a positive number.
    pub fn new(
        what: &str,
        records_per_second: f64,
        partitions: usize,
        clock: Arc<dyn Clock>,
        resumed_at: u64,
    ) -> Result<Self> {
        if !(records_per_second.is_finite() && records_per_second > 0.0) {
            return Err(Error::config(
                what,
                format!("{records_per_second} is not a positive number of records per second"),
            ));
        }
        Ok(Self {
            per_ms: records_per_second / partitions.max(1) as f64 / 1000.0,
            clock,
            start: PacingStart::default(),
            started: None,
            resumed_at,
        })
    }

    /// Paces from `start`, shared with other partitions.
    pub fn with_start(mut self, start: PacingStart) -> Self {
        self.start = start;
        self
    }

    /// How many more records may go now, for a partition that has emitted
    /// `emitted` in all (including those before `resumed_at`).
    pub fn allowed(&mut self, emitted: u64) -> u64 {
        let now = self.clock.now_millis();
        let shared = &self.start;
        let start = *self.started.get_or_insert_with(|| shared.get_or_start(now));
        let due = ((now - start) as f64 * self.per_ms) as u64 + 1;
        due.saturating_sub(emitted.saturating_sub(self.resumed_at))
    }
}
