use super::{EventTime, TimestampFn};
use crate::record::Record;

/// The watermark generator of one source partition (or one subtask of an
/// `assign_timestamps` operator): tracks the largest timestamp seen and when
/// data was last seen, for idleness.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkGenerator {
    out_of_orderness: Option<i64>,
    idle_timeout: Option<i64>,
    max_timestamp: EventTime,
    explicit: EventTime,
    last_data_at: Option<i64>,
    /// Leave records' lateness watermarks as the reader set them.
    pub(crate) keep_lateness: bool,
}

impl WatermarkGenerator {
    pub(crate) fn new(out_of_orderness: Option<i64>, idle_timeout: Option<i64>) -> Self {
        Self {
            out_of_orderness,
            idle_timeout,
            max_timestamp: EventTime::MIN,
            explicit: EventTime::MIN,
            last_data_at: None,
            keep_lateness: false,
        }
    }

    pub(crate) fn on_timestamp(&mut self, ts: EventTime) {
        if ts > self.max_timestamp {
            self.max_timestamp = ts;
        }
    }

    /// Stamps a batch read from this generator's partition, in order: each
    /// record's event time (from `timestamps`, or as the source set it) and
    /// its lateness watermark, the watermark just before it.
    pub(crate) fn stamp<T>(
        &mut self,
        records: &mut [Record<T>],
        timestamps: Option<&TimestampFn<T>>,
    ) {
        for r in records {
            if let Some(f) = timestamps {
                r.timestamp = f(&r.value);
            }
            if !self.keep_lateness {
                r.lateness_watermark = self.current();
            }
            self.on_timestamp(r.timestamp);
        }
    }

    /// A watermark the source itself asserts (punctuation).
    pub(crate) fn on_explicit(&mut self, wm: EventTime) {
        self.explicit = self.explicit.max(wm);
    }

    pub(crate) fn on_data(&mut self, now: i64) {
        self.last_data_at = Some(now);
    }

    /// The current watermark: `max - d - 1` (or the explicit one if larger).
    pub(crate) fn current(&self) -> EventTime {
        let generated = match self.out_of_orderness {
            Some(d) if self.max_timestamp.is_set() => self
                .max_timestamp
                .saturating_sub_millis(d)
                .saturating_sub_millis(1),
            _ => EventTime::MIN,
        };
        generated.max(self.explicit)
    }

    /// `(largest timestamp seen, explicit watermark)`: what a checkpoint
    /// keeps so a restored partition's watermarks continue exactly.
    pub(crate) fn state(&self) -> (EventTime, EventTime) {
        (self.max_timestamp, self.explicit)
    }

    /// Continues from a [`WatermarkGenerator::state`].
    pub(crate) fn restore(&mut self, max_timestamp: EventTime, explicit: EventTime) {
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        self.explicit = self.explicit.max(explicit);
    }

    /// Whether the partition has gone `idle_timeout` without data at `now`.
    /// A partition that has never produced counts from `started_at`.
    pub(crate) fn is_idle(&self, now: i64, started_at: i64) -> bool {
        match self.idle_timeout {
            Some(timeout) => now.saturating_sub(self.last_data_at.unwrap_or(started_at)) >= timeout,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_formula() {
        let mut g = WatermarkGenerator::new(Some(2_000), None);
        assert_eq!(g.current(), EventTime::MIN);
        g.on_timestamp(EventTime::from_millis(10_000));
        g.on_timestamp(EventTime::from_millis(9_000));
        assert_eq!(g.current(), EventTime::from_millis(7_999));
        g.on_explicit(EventTime::from_millis(9_500));
        assert_eq!(g.current(), EventTime::from_millis(9_500));
    }

    #[test]
    fn stamps_each_record_with_the_watermark_just_before_it() {
        let mut g = WatermarkGenerator::new(Some(1_000), None);
        let mut batch: Vec<Record<i64>> = [5_000, 7_000, 4_000, 9_000]
            .into_iter()
            .map(|ts| Record::new(ts, ts))
            .collect();
        g.stamp(&mut batch, None);
        let marks: Vec<i64> = batch
            .iter()
            .map(|r| r.lateness_watermark.millis())
            .collect();
        assert_eq!(marks, vec![i64::MIN, 3_999, 5_999, 5_999]);
        assert_eq!(g.current(), EventTime::from_millis(7_999));
    }

    #[test]
    fn idleness_counts_from_last_data() {
        let mut g = WatermarkGenerator::new(None, Some(100));
        assert!(!g.is_idle(50, 0));
        assert!(g.is_idle(100, 0));
        g.on_data(100);
        assert!(!g.is_idle(199, 0));
        assert!(g.is_idle(200, 0));
    }
}
