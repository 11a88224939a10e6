//! Processing time. Everything that depends on wall-clock time (flush
//! intervals, idleness, rate limits, processing-time timers) asks a [`Clock`],
//! so tests swap in a [`ManualClock`] and move time by hand.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of processing time, in milliseconds.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current processing time in milliseconds (the epoch is the clock's choice;
    /// only differences matter).
    fn now_millis(&self) -> i64;
}

/// The machine's clock (milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        // The one place that reads the wall clock.
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to; share it through an `Arc`.
///
/// ```
/// use tideline_engine::time::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(clock.now_millis(), 1_250);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock showing `millis`.
    pub fn new(millis: i64) -> Self {
        Self {
            now: AtomicI64::new(millis),
        }
    }

    /// Sets the time (it may go backwards; the engine does not rely on monotony).
    pub fn set(&self, millis: i64) {
        self.now.store(millis, Ordering::SeqCst);
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Something done every `interval` of processing time, checked from a
/// task's loop: due at the first check at or after its next time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Periodic {
    interval_millis: i64,
    next: i64,
}

impl Periodic {
    /// Due at the first check, then every `interval_millis`.
    pub(crate) fn new(interval_millis: i64) -> Self {
        Self {
            interval_millis,
            next: i64::MIN,
        }
    }

    /// Due from `start` on, then every `interval`.
    pub(crate) fn starting_at(start: i64, interval: Duration) -> Self {
        Self {
            interval_millis: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            next: start,
        }
    }

    /// Whether it is due at `now`; if so, the next time is `now + interval`.
    pub(crate) fn due(&mut self, now: i64) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.saturating_add(self.interval_millis);
        true
    }
}
