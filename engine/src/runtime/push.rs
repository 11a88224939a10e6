//! The push interface that chained operators call on each other inside a task.
//! One call per batch, never per record; the last push of a chain is an
//! exchange writer (into channels) or a sink.

use crate::checkpoint::snapshot::BarrierCtx;
use crate::error::Result;
use crate::record::{Data, Record};
use crate::time::Watermark;

pub(crate) trait Push<T>: Send {
    fn push_batch(&mut self, batch: Vec<Record<T>>) -> Result<()>;
    fn push_watermark(&mut self, watermark: Watermark) -> Result<()>;
    /// Processing time moved on: flush what waited for the flush interval.
    fn on_tick(&mut self, now: i64) -> Result<()>;
    /// Checkpoint barrier: snapshot what lies below and pass the barrier on
    /// (after everything that preceded it).
    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()>;
    /// End of input (after the final `+inf` watermark). With checkpointing,
    /// `last` collects the final snapshot, taken after each operator's
    /// `finish` (sinks pre-commit their last transaction into it).
    fn finish(&mut self, last: Option<&mut BarrierCtx>) -> Result<()>;
    /// The job stops at the savepoint barrier that just passed: close
    /// without finishing (no final output, no end of input downstream, so
    /// open windows stay open in the savepoint and fire after the resume).
    fn stop(&mut self) -> Result<()>;
    /// Send partially filled batches now (the task has nothing else to do).
    fn flush(&mut self) -> Result<()>;
}

pub(crate) type BoxPush<T> = Box<dyn Push<T>>;

/// Several consumers of one stream: the batch is cloned for all but the last.
pub(crate) struct FanOut<T>(pub(crate) Vec<BoxPush<T>>);

impl<T: Data> Push<T> for FanOut<T> {
    fn push_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for p in rest {
                p.push_batch(batch.clone())?;
            }
            last.push_batch(batch)?;
        }
        Ok(())
    }

    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|p| p.push_watermark(watermark))
    }

    fn on_tick(&mut self, now: i64) -> Result<()> {
        self.0.iter_mut().try_for_each(|p| p.on_tick(now))
    }

    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        self.0.iter_mut().try_for_each(|p| p.push_barrier(barrier))
    }

    fn finish(&mut self, mut last: Option<&mut BarrierCtx>) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|p| p.finish(last.as_deref_mut()))
    }

    fn stop(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|p| p.stop())
    }

    fn flush(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|p| p.flush())
    }
}

/// The output of a stream nobody consumes (allowed only for outputs whose
/// operator has another consumed output; validation rejects the rest).
pub(crate) struct Discard;

impl<T: Data> Push<T> for Discard {
    fn push_batch(&mut self, _batch: Vec<Record<T>>) -> Result<()> {
        Ok(())
    }
    fn push_watermark(&mut self, _watermark: Watermark) -> Result<()> {
        Ok(())
    }
    fn on_tick(&mut self, _now: i64) -> Result<()> {
        Ok(())
    }
    fn push_barrier(&mut self, _barrier: &mut BarrierCtx) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _last: Option<&mut BarrierCtx>) -> Result<()> {
        Ok(())
    }
    fn stop(&mut self) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
