use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{duration_millis, EventTime};
use crate::error::{Error, Result};

/// Extracts a record's event time.
pub type TimestampFn<T> = Arc<dyn Fn(&T) -> EventTime + Send + Sync>;

/// How a source partition (or an `assign_timestamps` operator) stamps records
/// and generates watermarks.
///
/// ```
/// use std::time::Duration;
/// use tideline_engine::time::WatermarkStrategy;
/// struct Click { ts: i64 }
/// let strategy = WatermarkStrategy::<Click>::bounded_out_of_orderness(Duration::from_secs(2))
///     .with_timestamps(|c| c.ts)
///     .with_idleness(Duration::from_secs(30));
/// # let _ = strategy;
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) out_of_orderness: Option<Duration>,
    pub(crate) timestamps: Option<TimestampFn<T>>,
    pub(crate) idle_timeout: Option<Duration>,
    /// Records keep the lateness watermark their reader gave them (a
    /// keyed exchange read from other workers, where the upstream task
    /// stamped it).
    pub(crate) keep_lateness: bool,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            out_of_orderness: self.out_of_orderness,
            timestamps: self.timestamps.clone(),
            idle_timeout: self.idle_timeout,
            keep_lateness: self.keep_lateness,
        }
    }
}

impl<T> fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("out_of_orderness", &self.out_of_orderness)
            .field("timestamps", &self.timestamps.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<T> WatermarkStrategy<T> {
    /// Watermark `max_ts - d - 1`: records may arrive up to `d` behind the
    /// largest timestamp seen.
    pub fn bounded_out_of_orderness(d: Duration) -> Self {
        Self {
            out_of_orderness: Some(d),
            timestamps: None,
            idle_timeout: None,
            keep_lateness: false,
        }
    }

    /// Timestamps never decrease: watermark `max_ts - 1`.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// No watermarks (only `+inf` at the end of input, and any explicit
    /// watermarks a source reports).
    pub fn none() -> Self {
        Self {
            out_of_orderness: None,
            timestamps: None,
            idle_timeout: None,
            keep_lateness: false,
        }
    }

    /// Only the watermarks the reader asserts, and each record's lateness
    /// watermark as the reader set it: a keyed exchange read from other
    /// workers.
    pub(crate) fn asserted_only() -> Self {
        Self {
            keep_lateness: true,
            ..Self::none()
        }
    }

    /// Takes each record's event time from `f` (milliseconds or [`EventTime`]).
    /// Without it, records keep the timestamp their source gave them.
    pub fn with_timestamps<R, F>(mut self, f: F) -> Self
    where
        R: Into<EventTime>,
        F: Fn(&T) -> R + Send + Sync + 'static,
    {
        self.timestamps = Some(Arc::new(move |t| f(t).into()));
        self
    }

    /// Marks a partition idle after `timeout` of processing time without
    /// records, so it stops holding the watermark back until data returns.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Checks the durations fit `i64` milliseconds.
    pub(crate) fn validate(&self, operator: &str) -> Result<()> {
        for (field, d) in [
            ("out_of_orderness", self.out_of_orderness),
            ("idle_timeout", self.idle_timeout),
        ] {
            if let Some(d) = d {
                if duration_millis(d).is_none() {
                    return Err(Error::config(
                        format!("{operator}.watermark_strategy.{field}"),
                        format!("{d:?} does not fit in i64 milliseconds"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn generator(&self) -> super::WatermarkGenerator {
        let mut generator = super::WatermarkGenerator::new(
            self.out_of_orderness.and_then(duration_millis),
            self.idle_timeout.and_then(duration_millis),
        );
        generator.keep_lateness = self.keep_lateness;
        generator
    }
}
