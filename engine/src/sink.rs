//! The sink interface: where a stream's records leave the job.

use std::sync::Arc;

use crate::error::{guarded, Result};
use crate::record::{Data, Record};
use crate::runtime::metrics::OpCounters;
use crate::runtime::push::Push;
use crate::time::{EventTime, Watermark};

/// Receives a stream's records, one batch at a time; one instance per subtask.
///
/// A sink that can be cloned is attached with `Stream::sink` (each subtask
/// gets a clone); otherwise use `Stream::sink_with` and a factory.
pub trait Sink<T>: Send + 'static {
    /// A short name for errors and the job summary.
    fn name(&self) -> &str {
        "sink"
    }

    /// Writes one batch.
    ///
    /// # Errors
    /// Any error stops the job and is reported with the sink's name.
    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()>;

    /// Event time advanced (for sinks that commit by event time).
    ///
    /// # Errors
    /// Any error stops the job.
    fn on_watermark(&mut self, watermark: EventTime) -> Result<()> {
        let _ = watermark;
        Ok(())
    }

    /// End of input: flush and close.
    ///
    /// # Errors
    /// Any error stops the job.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which subtask a sink or source reader instance serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubtaskInfo {
    /// This subtask's index.
    pub subtask: usize,
    /// The number of subtasks.
    pub parallelism: usize,
}

pub(crate) struct SinkPush<S> {
    name: Arc<str>,
    sink: S,
    counters: Arc<OpCounters>,
}

impl<S> SinkPush<S> {
    pub(crate) fn new(name: Arc<str>, sink: S, counters: Arc<OpCounters>) -> Self {
        Self {
            name,
            sink,
            counters,
        }
    }
}

impl<T: Data, S: Sink<T>> Push<T> for SinkPush<S> {
    fn push_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        self.counters.add_in(batch.len());
        let sink = &mut self.sink;
        guarded(&self.name, || sink.write_batch(batch))
    }

    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        match watermark {
            Watermark::EventTime(wm) => {
                let sink = &mut self.sink;
                guarded(&self.name, || sink.on_watermark(wm))
            }
            Watermark::Idle => Ok(()),
        }
    }

    fn on_tick(&mut self, _now: i64) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let sink = &mut self.sink;
        guarded(&self.name, || sink.finish())
    }
}
