use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::storage::PartitionState;
use crate::error::{Error, Result};
use crate::operator::SideChannel;
use crate::record::Data;
use crate::runtime::push::BoxPush;
use crate::time::{Clock, EventTime, Watermark, WatermarkTracker};

/// What one step of a task achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something was processed; step again.
    Progress,
    /// Nothing to do right now.
    Idle,
    /// The task has finished (sent end-of-input downstream).
    Done,
}

pub(crate) trait Task: Send {
    fn name(&self) -> &str;
    /// Does a bounded amount of work. With `blocking`, may wait a short while
    /// for input; without, never waits.
    fn step(&mut self, blocking: bool) -> Result<Step>;
    /// Sends partially filled batches downstream now.
    fn flush(&mut self) -> Result<()>;
}

/// How a task takes part in checkpoints.
pub(crate) struct TaskCheckpoint {
    pub(crate) coordinator: Arc<Coordinator>,
    /// The task's index among all tasks of the job.
    pub(crate) task: usize,
    /// The name of the node's head operator (the node's identity in checkpoints).
    pub(crate) node: String,
    pub(crate) subtask: usize,
}

/// What every task keeps in front of its chain: the chain, the watermark
/// tracker over the task's inputs (partitions or channels), the clock that
/// drives ticks, and the job's cancel flag.
pub(crate) struct ChainHead<T> {
    pub(crate) name: Arc<str>,
    pub(crate) push: BoxPush<T>,
    pub(crate) tracker: WatermarkTracker,
    pub(crate) clock: Arc<dyn Clock>,
    cancel: Arc<AtomicBool>,
    /// Side outputs of the task's head (a source's dead letters): they see
    /// the same watermarks, ticks and end of input as the chain.
    pub(crate) sides: Vec<Box<dyn SideChannel>>,
    /// Processing time of the last tick; the chain is ticked whenever the clock moves.
    last_tick: i64,
    done: bool,
    pub(crate) checkpoint: Option<TaskCheckpoint>,
    /// Watermark restored from a checkpoint, passed down before any input.
    pub(crate) restored_watermark: Option<EventTime>,
    /// How long the barrier about to be taken was aligned (input tasks set
    /// it; it goes into that checkpoint's snapshot).
    pub(crate) alignment: std::time::Duration,
    /// The task's metric cells (watermark, idleness).
    pub(crate) metrics: Arc<crate::metrics::TaskCounters>,
}

impl<T: Data> ChainHead<T> {
    pub(crate) fn new(
        name: Arc<str>,
        push: BoxPush<T>,
        inputs: usize,
        clock: Arc<dyn Clock>,
        cancel: Arc<AtomicBool>,
        metrics: Arc<crate::metrics::TaskCounters>,
    ) -> Self {
        Self {
            name,
            push,
            tracker: WatermarkTracker::new(inputs),
            clock,
            cancel,
            sides: Vec::new(),
            last_tick: i64::MIN,
            done: false,
            checkpoint: None,
            restored_watermark: None,
            alignment: std::time::Duration::ZERO,
            metrics,
        }
    }

    /// Passes the restored watermark (if any) down the chain, once, before
    /// any input: restored operators continue at the event time they had.
    pub(crate) fn start(&mut self) -> Result<()> {
        if let Some(w) = self.restored_watermark.take() {
            self.tracker.restore(w);
            if w.is_set() {
                self.emit(Some(Watermark::EventTime(w)))?;
            }
        }
        Ok(())
    }

    /// Checkpoint barrier `id`: snapshots the chain (sources' partition
    /// states in `sources`), passes the barrier on, and acknowledges. The
    /// stop-with-savepoint barrier then stops the task (see [`Self::is_done`]).
    pub(crate) fn barrier(
        &mut self,
        id: u64,
        sources: Vec<(String, usize, PartitionState)>,
    ) -> Result<()> {
        let Some(cp) = &self.checkpoint else {
            return Err(Error::Internal(format!(
                "barrier {id} reached '{}', which takes no checkpoints",
                self.name
            )));
        };
        let mut ctx = cp.coordinator.barrier_ctx(id, &cp.node, cp.subtask);
        ctx.snapshot.watermark = self.tracker.current().millis();
        ctx.snapshot.sources = sources;
        ctx.snapshot.alignment = std::mem::take(&mut self.alignment);
        for side in &mut self.sides {
            side.flush()?;
            side.push_barrier(&mut ctx)?;
        }
        self.push.push_barrier(&mut ctx)?;
        let stop = cp.coordinator.is_stop(id);
        cp.coordinator.acknowledge(id, cp.task, ctx.snapshot);
        if stop {
            for side in &mut self.sides {
                side.stop()?;
            }
            self.push.stop()?;
            self.done = true;
        }
        Ok(())
    }

    /// `Some(Done)` once finished; an error once the job is cancelled.
    pub(crate) fn check(&self) -> Result<Option<Step>> {
        if self.done {
            return Ok(Some(Step::Done));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(None)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Passes on what the tracker decided, if anything.
    pub(crate) fn emit(&mut self, watermark: Option<Watermark>) -> Result<()> {
        let Some(w) = watermark else {
            return Ok(());
        };
        match w {
            Watermark::EventTime(t) => self.metrics.set_watermark(t),
            Watermark::Idle => self.metrics.set_idle(),
        }
        for side in &mut self.sides {
            side.flush()?;
            side.push_watermark(w)?;
        }
        self.push.push_watermark(w)
    }

    /// Ticks the chain if processing time moved since the last tick.
    pub(crate) fn tick(&mut self, now: i64) -> Result<()> {
        if now > self.last_tick {
            self.last_tick = now;
            self.push.on_tick(now)?;
            for side in &mut self.sides {
                side.on_tick(now)?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        for side in &mut self.sides {
            side.flush()?;
            side.flush_downstream()?;
        }
        self.push.flush()
    }

    /// End of input: the watermark becomes `+inf` (if it is not already),
    /// then the chain finishes.
    ///
    /// With checkpoints, the task's final snapshot (taken after every
    /// operator finished, with `sources`' partition states) is handed to
    /// the coordinator, which stands it in for the task from now on.
    pub(crate) fn finish(&mut self, sources: Vec<(String, usize, PartitionState)>) -> Result<Step> {
        if self.tracker.current() != EventTime::MAX {
            self.emit(Some(Watermark::EventTime(EventTime::MAX)))?;
        }
        let mut last = self.checkpoint.as_ref().map(|cp| {
            let mut ctx = cp.coordinator.final_ctx(cp.task, &cp.node, cp.subtask);
            ctx.snapshot.watermark = EventTime::MAX.millis();
            ctx.snapshot.sources = sources;
            ctx
        });
        for side in &mut self.sides {
            side.flush()?;
            side.finish(last.as_mut())?;
        }
        self.push.finish(last.as_mut())?;
        if let (Some(cp), Some(ctx)) = (&self.checkpoint, last) {
            cp.coordinator.finished(cp.task, ctx.snapshot);
        }
        self.done = true;
        Ok(Step::Done)
    }
}
