//! The cells tasks write while they run. Each belongs to one subtask (one
//! operator subtask, one task, one source task), so writers never contend;
//! they are written once per batch (records), once per watermark, or once
//! per sampling interval (state size, partition positions), never per
//! record. Readers (a snapshot) load them with relaxed ordering: a snapshot
//! is a consistent-enough view, not a barrier.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::operator::DeadLetter;
use crate::time::EventTime;

/// How often (job-clock milliseconds) a task samples what is costly to read
/// on every batch: state sizes and source partition positions.
pub(crate) const SAMPLE_INTERVAL_MILLIS: i64 = 250;

/// A `u64` cell whose `u64::MAX` means "unknown".
const UNKNOWN: u64 = u64::MAX;

fn known(value: u64) -> Option<u64> {
    (value != UNKNOWN).then_some(value)
}

/// Records through one operator subtask. Aligned to its own cache lines:
/// the counters of neighbouring subtasks, written by different threads on
/// every batch, would otherwise share one.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct OpCounters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late: AtomicU64,
    state_entries: AtomicU64,
    state_bytes: AtomicU64,
}

impl Default for OpCounters {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            late: AtomicU64::new(0),
            state_entries: AtomicU64::new(UNKNOWN),
            state_bytes: AtomicU64::new(UNKNOWN),
        }
    }
}

/// What an [`OpCounters`] holds at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpCounts {
    pub(crate) records_in: u64,
    pub(crate) records_out: u64,
    pub(crate) late: u64,
    pub(crate) state_entries: Option<u64>,
    pub(crate) state_bytes: Option<u64>,
}

impl OpCounters {
    pub(crate) fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_late(&self, n: u64) {
        self.late.fetch_add(n, Ordering::Relaxed);
    }

    /// The operator's state size as it reported it (`None`: it keeps none,
    /// or cannot tell).
    pub(crate) fn set_state_size(&self, size: Option<crate::operator::StateSize>) {
        let (entries, bytes) = size.map_or((UNKNOWN, UNKNOWN), |s| {
            (s.entries, s.bytes.unwrap_or(UNKNOWN))
        });
        self.state_entries.store(entries, Ordering::Relaxed);
        self.state_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> OpCounts {
        OpCounts {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            state_entries: known(self.state_entries.load(Ordering::Relaxed)),
            state_bytes: known(self.state_bytes.load(Ordering::Relaxed)),
        }
    }
}

/// What one task (a chain of operators in one thread) observes about its
/// inputs and outputs (on cache lines of its own, as [`OpCounters`]).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct TaskCounters {
    /// The task's input watermark in milliseconds (`i64::MIN`: not set yet).
    watermark: AtomicI64,
    /// Every input is idle.
    idle: AtomicBool,
    /// Nanoseconds spent blocked sending into full channels downstream.
    blocked_nanos: AtomicU64,
    /// Messages waiting in the task's input channels when it last looked,
    /// and how many they hold at most (0: unbounded, or no channels).
    queued: AtomicU64,
    queue_capacity: AtomicU64,
}

impl Default for TaskCounters {
    fn default() -> Self {
        Self {
            watermark: AtomicI64::new(i64::MIN),
            idle: AtomicBool::new(false),
            blocked_nanos: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(0),
        }
    }
}

/// What a [`TaskCounters`] holds at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TaskCounts {
    pub(crate) watermark: Option<EventTime>,
    pub(crate) idle: bool,
    pub(crate) blocked: Duration,
    pub(crate) queue_fill: Option<f64>,
}

impl TaskCounters {
    pub(crate) fn set_watermark(&self, watermark: EventTime) {
        self.watermark.store(watermark.millis(), Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
    }

    pub(crate) fn set_idle(&self) {
        self.idle.store(true, Ordering::Relaxed);
    }

    pub(crate) fn add_blocked(&self, blocked: Duration) {
        let nanos = u64::try_from(blocked.as_nanos()).unwrap_or(u64::MAX);
        self.blocked_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn set_queue(&self, queued: usize, capacity: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
        self.queue_capacity
            .store(capacity as u64, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> TaskCounts {
        let watermark = self.watermark.load(Ordering::Relaxed);
        let capacity = self.queue_capacity.load(Ordering::Relaxed);
        TaskCounts {
            watermark: (watermark != i64::MIN).then(|| EventTime::from_millis(watermark)),
            idle: self.idle.load(Ordering::Relaxed),
            blocked: Duration::from_nanos(self.blocked_nanos.load(Ordering::Relaxed)),
            queue_fill: (capacity > 0)
                .then(|| self.queued.load(Ordering::Relaxed) as f64 / capacity as f64),
        }
    }
}

/// Where a source partition stands, as its subtask last sampled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartitionSample {
    pub(crate) partition: usize,
    pub(crate) progress: Option<crate::source::PartitionProgress>,
    pub(crate) watermark: Option<EventTime>,
    pub(crate) idle: bool,
    pub(crate) finished: bool,
}

/// The partitions of one source subtask, sampled every
/// [`SAMPLE_INTERVAL_MILLIS`] (and when the subtask finishes).
#[derive(Debug, Default)]
pub(crate) struct SourceTaskMetrics {
    partitions: Mutex<Vec<PartitionSample>>,
}

impl SourceTaskMetrics {
    pub(crate) fn publish(&self, samples: Vec<PartitionSample>) {
        if let Ok(mut slot) = self.partitions.lock() {
            *slot = samples;
        }
    }

    pub(crate) fn partitions(&self) -> Vec<PartitionSample> {
        self.partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// How many dead letters the log keeps to show.
pub(crate) const RECENT_DEAD_LETTERS: usize = 20;
/// Longest record text (bytes) the log keeps of one.
pub(crate) const DEAD_LETTER_TEXT: usize = 2_000;
/// Distinct reasons counted per operator; the rest count as "other"
/// (reasons are free text: unbounded label values would swamp a metrics
/// backend).
pub(crate) const REASONS_PER_OPERATOR: usize = 32;
/// The reason that stands for every reason past [`REASONS_PER_OPERATOR`].
pub(crate) const OTHER_REASON: &str = "(other reasons)";

/// Dead letters by operator and reason, and the latest few. Written on the
/// dead-letter path only (rare, and already costly: the record is formatted).
#[derive(Debug, Default)]
pub(crate) struct DeadLetterLog {
    inner: Mutex<DeadLetterLogInner>,
}

#[derive(Debug, Default)]
struct DeadLetterLogInner {
    by_reason: HashMap<String, HashMap<String, u64>>,
    recent: VecDeque<(DeadLetter, i64)>,
}

impl DeadLetterLog {
    /// Counts `letter`, rejected at processing time `at` (job-clock ms).
    pub(crate) fn record(&self, letter: &DeadLetter, at: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let reasons = inner.by_reason.entry(letter.operator.clone()).or_default();
        let reason = if reasons.contains_key(&letter.reason) || reasons.len() < REASONS_PER_OPERATOR
        {
            letter.reason.clone()
        } else {
            OTHER_REASON.to_string()
        };
        *reasons.entry(reason).or_default() += 1;
        if inner.recent.len() == RECENT_DEAD_LETTERS {
            inner.recent.pop_front();
        }
        let mut kept = letter.clone();
        truncate(&mut kept.record, DEAD_LETTER_TEXT);
        inner.recent.push_back((kept, at));
    }

    /// `(operator, reason, count)`, sorted.
    pub(crate) fn by_reason(&self) -> Vec<(String, String, u64)> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = inner
            .by_reason
            .iter()
            .flat_map(|(op, reasons)| {
                reasons
                    .iter()
                    .map(move |(reason, n)| (op.clone(), reason.clone(), *n))
            })
            .collect();
        all.sort();
        all
    }

    /// The latest dead letters, oldest first, with when they were rejected.
    pub(crate) fn recent(&self) -> Vec<(DeadLetter, i64)> {
        self.inner
            .lock()
            .map(|i| i.recent.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Cuts `text` to at most `max` bytes (at a character boundary), marking the cut.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
}
