//! Event time, watermarks, watermark strategies and clocks.
//!
//! Invariants (DESIGN.md, "Time semantics"):
//! - event time is `i64` milliseconds since the Unix epoch, wrapped in [`EventTime`];
//! - a watermark `W` asserts that no more records with timestamp `<= W` are expected;
//! - with bounded out-of-orderness `d`, after a maximum timestamp `M` the watermark is `M - d - 1`;
//! - watermarks never go backwards: every [`WatermarkTracker`] only ever emits increasing values;
//! - lateness is judged per source partition ([`LatenessRule`]; the argument is in [`lateness`]);
//! - processing time never comes from the system directly but from a [`Clock`], so tests drive it.

mod clock;
mod generator;
pub mod lateness;
mod strategy;
mod timers;
mod tracker;

pub(crate) use clock::Periodic;
pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use generator::WatermarkGenerator;
pub use lateness::{LateReason, LatenessRule};
pub use strategy::{TimestampFn, WatermarkStrategy};
pub use timers::TimerService;
pub use tracker::WatermarkTracker;

use std::fmt;
use std::time::Duration;

/// A point in event time: milliseconds since the Unix epoch.
///
/// [`EventTime::MIN`] doubles as "no timestamp" for records that were never
/// given one and as the watermark of an input that has said nothing yet;
/// [`EventTime::MAX`] is the watermark of a finished input (`+inf`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct EventTime(i64);

impl EventTime {
    /// `-inf`: before every timestamp; also "no timestamp".
    pub const MIN: EventTime = EventTime(i64::MIN);
    /// `+inf`: the watermark at the end of input.
    pub const MAX: EventTime = EventTime(i64::MAX);

    /// The time `millis` ms after the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        EventTime(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whether this is a real timestamp (not [`EventTime::MIN`]).
    pub const fn is_set(self) -> bool {
        self.0 != i64::MIN
    }

    /// `self + ms`, saturating at the infinities.
    pub const fn saturating_add_millis(self, ms: i64) -> Self {
        EventTime(self.0.saturating_add(ms))
    }

    /// `self - ms`, saturating at the infinities.
    pub const fn saturating_sub_millis(self, ms: i64) -> Self {
        EventTime(self.0.saturating_sub(ms))
    }

    /// Converts from a chrono UTC date-time (sub-millisecond part dropped).
    pub fn from_datetime(dt: chrono::DateTime<chrono::Utc>) -> Self {
        EventTime(dt.timestamp_millis())
    }

    /// Converts to a chrono UTC date-time; `None` for the infinities and
    /// out-of-range values.
    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        if self == Self::MIN || self == Self::MAX {
            return None;
        }
        chrono::DateTime::from_timestamp_millis(self.0)
    }
}

impl From<i64> for EventTime {
    fn from(millis: i64) -> Self {
        EventTime(millis)
    }
}

impl From<chrono::DateTime<chrono::Utc>> for EventTime {
    fn from(dt: chrono::DateTime<chrono::Utc>) -> Self {
        Self::from_datetime(dt)
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MIN => f.write_str("-inf"),
            Self::MAX => f.write_str("+inf"),
            EventTime(ms) => write!(f, "{ms}"),
        }
    }
}

/// What flows between tasks to say how far event time has progressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// No more records with timestamp `<=` this are expected.
    EventTime(EventTime),
    /// The sender has no data for now: leave it out of the minimum until it
    /// sends a record or a watermark again.
    Idle,
}

/// Milliseconds in `d`, or `None` when `d` does not fit an `i64` of ms.
pub(crate) fn duration_millis(d: Duration) -> Option<i64> {
    i64::try_from(d.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrono_round_trip_and_infinities() {
        let t = EventTime::from_millis(1_700_000_000_123);
        let dt = t.to_datetime();
        assert_eq!(dt.map(EventTime::from), Some(t));
        assert_eq!(EventTime::MAX.to_datetime(), None);
        assert_eq!(EventTime::MIN.to_string(), "-inf");
        assert_eq!(EventTime::MAX.saturating_add_millis(5), EventTime::MAX);
        assert!(!EventTime::MIN.is_set());
    }
}
