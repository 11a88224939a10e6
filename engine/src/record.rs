//! Records and the messages that carry them between tasks.
//!
//! Invariant: on every channel, records, watermarks and end-of-input travel in
//! one ordered sequence; a watermark or barrier is sent only after every
//! record that preceded it has been sent, and `End` is the last message.

use crate::time::{EventTime, Watermark};

/// What every record type must be: owned, cloneable (for fan-out and
/// broadcast) and movable between threads.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// A value with its event time ([`EventTime::MIN`] when it has none) and
/// its lateness watermark.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record<T> {
    /// Event time of the record.
    pub timestamp: EventTime,
    /// The record itself.
    pub value: T,
    /// The watermark of the record's source partition just before it (the
    /// partition-local lateness rule, see [`LatenessRule`](crate::time::LatenessRule)):
    /// sources set it, operators that pass a record on (or derive records
    /// from it while handling it) keep it, and records made later (window
    /// results, timer output) have [`EventTime::MIN`], "unknown", which
    /// leaves the judgement to the operator's watermark.
    ///
    /// Equality, ordering and hashing of records include it: records of the
    /// same value and time read from differently partitioned inputs can
    /// differ here. Compare `(timestamp, value)` to ignore it.
    pub lateness_watermark: EventTime,
}

impl<T> Record<T> {
    /// A record at `timestamp`.
    pub fn new(timestamp: impl Into<EventTime>, value: T) -> Self {
        Self {
            timestamp: timestamp.into(),
            value,
            lateness_watermark: EventTime::MIN,
        }
    }

    /// A record without a timestamp.
    pub fn untimed(value: T) -> Self {
        Self::new(EventTime::MIN, value)
    }

    /// This record's lateness watermark set to `watermark`.
    pub fn with_lateness_watermark(mut self, watermark: EventTime) -> Self {
        self.lateness_watermark = watermark;
        self
    }

    /// Maps the value, keeping the timestamp and the lateness watermark.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Record<U> {
        Record {
            timestamp: self.timestamp,
            value: f(self.value),
            lateness_watermark: self.lateness_watermark,
        }
    }
}

/// A message on a channel between tasks.
#[derive(Debug)]
pub(crate) enum Message<T> {
    Batch(Vec<Record<T>>),
    Watermark(Watermark),
    /// Checkpoint barrier `n`: everything before it belongs to checkpoint `n`.
    Barrier(u64),
    End,
}
