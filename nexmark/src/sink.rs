//! The benchmark sink: counts results and, for paced runs, measures
//! end-to-end latency.
//!
//! Latency is processing time from when the input that completed a result
//! was generated to when the result reached the sink. A paced source emits
//! event `i` at `start + i / rate`; Nexmark event times advance by
//! `1 / events_per_second` per event, so a result stamped with event time
//! `ts` (a bid's time, or a window's last millisecond) became possible when
//! the source emitted the event at `ts`, at
//! `start + (ts - base_time) * events_per_second / rate`. Results that
//! arrive before that (windows the end of a bounded input closes early) are
//! counted but not measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tideline::connectors::PacingStart;
use tideline::{Data, Record, Result, Sink};

use crate::source::NexmarkConfig;

/// Maps an event time to when a paced source emitted it.
#[derive(Clone, Debug)]
pub struct LatencyProbe {
    start: PacingStart,
    base_time: i64,
    /// Wall milliseconds per event-time millisecond.
    scale: f64,
}

impl LatencyProbe {
    /// For a source generating with `config`, paced at `rate` events per second.
    pub fn new(start: PacingStart, config: &NexmarkConfig, rate: f64) -> Self {
        Self {
            start,
            base_time: config.base_time,
            scale: config.events_per_second as f64 / rate,
        }
    }

    /// Milliseconds from when `ts` was emitted until now (`now_ms`); `None`
    /// before the source started, and for results ahead of their input's
    /// schedule: windows closed early by the end of a bounded input (its
    /// final watermark), whose latency says nothing about the pipeline.
    fn latency_ms(&self, ts: i64, now_ms: f64) -> Option<f64> {
        let start = self.start.millis()? as f64;
        let due = start + (ts - self.base_time) as f64 * self.scale;
        // Pacing releases a millisecond's events at once: allow that much.
        (now_ms + 1.0 >= due).then(|| (now_ms - due).max(0.0))
    }
}

/// Counts every record; with a probe, records each one's latency.
#[derive(Clone, Debug, Default)]
pub struct BenchSink {
    count: Arc<AtomicU64>,
    probe: Option<LatencyProbe>,
    latencies: Arc<Mutex<Vec<f32>>>,
}

impl BenchSink {
    /// A counting sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counting sink that also measures latency with `probe`.
    pub fn with_latency(probe: LatencyProbe) -> Self {
        Self {
            probe: Some(probe),
            ..Self::default()
        }
    }

    /// Records received so far (all subtasks).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `q`-quantile (0..=1) of the measured latencies, in milliseconds.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let mut all = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if all.is_empty() {
            return None;
        }
        all.sort_by(f32::total_cmp);
        let rank = ((all.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        all.get(rank).map(|&v| f64::from(v))
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl<T: Data> Sink<T> for BenchSink {
    fn name(&self) -> &str {
        "bench"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        self.count.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            let now = now_ms();
            let measured = batch
                .iter()
                .filter_map(|r| probe.latency_ms(r.timestamp.millis(), now))
                .map(|ms| ms as f32);
            self.latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(measured);
        }
        Ok(())
    }
}
