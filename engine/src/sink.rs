//! The sink interface: where a stream's records leave the job.

use std::sync::Arc;

use crate::checkpoint::snapshot::BarrierCtx;
use crate::error::{guarded, Result};
use crate::metrics::OpCounters;
use crate::record::{Data, Record};
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

    /// Called once, right after the sink is made and before anything else,
    /// with the subtask it serves (a sink attached with `Stream::sink` is a
    /// clone that does not know it otherwise). The default does nothing.
    ///
    /// # Errors
    /// Any error stops the job before it starts.
    fn open(&mut self, subtask: SubtaskInfo) -> Result<()> {
        let _ = subtask;
        Ok(())
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

    /// Every input of this subtask went idle (no data for its idle
    /// timeout): until data or a watermark comes again, its watermark
    /// should hold nobody back. For sinks that pass event time on (a
    /// worker-mode exchange tells the tasks downstream); others ignore it.
    ///
    /// # Errors
    /// Any error stops the job.
    fn on_idle(&mut self) -> Result<()> {
        Ok(())
    }

    /// End of input: flush and close.
    ///
    /// # Errors
    /// Any error stops the job.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Two-phase commit, phase one. The barrier of checkpoint `checkpoint`
    /// reached this subtask, or its input ended (then `checkpoint` is the
    /// final one, called just before [`Sink::finish`]). Make everything
    /// written since the last call durable but not yet visible, and describe
    /// it: the returned transaction is stored in the checkpoint and handed to
    /// [`Committer::commit`] once the checkpoint is complete. `None`: nothing
    /// to commit. Sinks that are not exactly-once keep this default.
    ///
    /// # Errors
    /// Any error stops the job (and the checkpoint never completes).
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let _ = checkpoint;
        Ok(None)
    }

    /// The committer of an exactly-once sink: one object serving every
    /// subtask of the sink, called by the checkpoint coordinator (not by the
    /// subtask). `None` for sinks that are not exactly-once.
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        None
    }
}

/// A boxed sink is a sink (what a [`RemoteExchange`](crate::RemoteExchange)
/// hands out).
impl<T: 'static> Sink<T> for Box<dyn Sink<T>> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn open(&mut self, subtask: SubtaskInfo) -> Result<()> {
        (**self).open(subtask)
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        (**self).write_batch(batch)
    }

    fn on_watermark(&mut self, watermark: EventTime) -> Result<()> {
        (**self).on_watermark(watermark)
    }

    fn on_idle(&mut self) -> Result<()> {
        (**self).on_idle()
    }

    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        (**self).pre_commit(checkpoint)
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        (**self).committer()
    }
}

/// Phase two of an exactly-once sink's two-phase commit.
///
/// Invariants the engine keeps: a transaction is committed only after the
/// checkpoint that holds it is complete (its metadata written); after a
/// crash, the transactions of the checkpoint restored from are committed
/// again (so [`Committer::commit`] must be idempotent) and everything else
/// the sink left behind is aborted. Without checkpointing, each subtask's
/// transaction is committed at the end of its input.
pub trait Committer: Send + Sync + 'static {
    /// Makes a pre-committed transaction visible (e.g. an atomic rename).
    /// Committing a transaction that is already committed does nothing.
    ///
    /// # Errors
    /// When the transaction cannot be committed; the job stops.
    fn commit(&self, transaction: &[u8]) -> Result<()>;

    /// Called once before a restored job starts: `keep` are the transactions
    /// of checkpoint `restored`, the one restored from (they are committed
    /// right after). Removes whatever else was written but never committed
    /// (in-progress and pre-committed files of the run that failed), and
    /// rolls back what was committed for checkpoints after `restored` — a
    /// restore from an older checkpoint (the newest one was corrupt)
    /// replays their records, so keeping them would show them twice.
    ///
    /// # Errors
    /// When leftovers cannot be removed; the job does not start.
    fn abort_uncommitted(&self, restored: u64, keep: &[Vec<u8>]) -> Result<()>;

    /// Every transaction of this sink that checkpoint `checkpoint` holds
    /// was committed: called right after them, once per completed
    /// checkpoint (also when it held none of this sink's), and again after
    /// a restore's commits of the restored checkpoint. A sink whose
    /// visible output is made from all its subtasks' transactions together
    /// (a table snapshot) writes it here, once per checkpoint. Not called
    /// without checkpointing (each subtask's transaction is committed at
    /// the end of its input, with id 0). The default does nothing.
    ///
    /// # Errors
    /// The job fails, and later checkpoints are not completed.
    fn checkpoint_committed(&self, checkpoint: u64) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }

    /// Checkpoint `checkpoint` was given up. Its transactions stay
    /// pre-committed: the next checkpoint that completes holds them and
    /// commits them. The default does nothing.
    ///
    /// # Errors
    /// Any error fails the job.
    fn notify_checkpoint_aborted(&self, checkpoint: u64) -> Result<()> {
        let _ = checkpoint;
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
    /// This subtask runs on its own: the job's other subtasks are other
    /// task runs, maybe on other machines (worker mode). A sink must then
    /// not fence, abort or clean up anything another subtask owns.
    pub isolated: bool,
}

pub(crate) struct SinkPush<S> {
    name: Arc<str>,
    /// Checkpoints store the sink's transactions under it.
    uid: Arc<str>,
    sink: S,
    counters: Arc<OpCounters>,
    subtask: usize,
    /// Without checkpoints, an exactly-once sink's committer commits the
    /// subtask's transaction at the end of its input.
    commit_at_end: Option<Arc<dyn Committer>>,
}

impl<S> SinkPush<S> {
    pub(crate) fn new(
        name: Arc<str>,
        uid: Arc<str>,
        sink: S,
        counters: Arc<OpCounters>,
        subtask: usize,
        commit_at_end: Option<Arc<dyn Committer>>,
    ) -> Self {
        Self {
            name,
            uid,
            sink,
            counters,
            subtask,
            commit_at_end,
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
            Watermark::Idle => {
                let sink = &mut self.sink;
                guarded(&self.name, || sink.on_idle())
            }
        }
    }

    fn on_tick(&mut self, _now: i64) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        self.pre_commit::<T>(barrier)
    }

    fn finish(&mut self, last: Option<&mut BarrierCtx>) -> Result<()> {
        match last {
            Some(barrier) => self.pre_commit::<T>(barrier)?,
            None => {
                if let Some(committer) = &self.commit_at_end {
                    let sink = &mut self.sink;
                    if let Some(txn) = guarded(&self.name, || sink.pre_commit(0))? {
                        guarded(&self.name, || committer.commit(&txn))?;
                    }
                }
            }
        }
        let sink = &mut self.sink;
        guarded(&self.name, || sink.finish())
    }

    fn stop(&mut self) -> Result<()> {
        // Everything written was pre-committed at the savepoint barrier;
        // close what the sink holds open.
        let sink = &mut self.sink;
        guarded(&self.name, || sink.finish())
    }
}

impl<S> SinkPush<S> {
    fn pre_commit<T: Data>(&mut self, barrier: &mut BarrierCtx) -> Result<()>
    where
        S: Sink<T>,
    {
        let (sink, id) = (&mut self.sink, barrier.id);
        if let Some(txn) = guarded(&self.name, || sink.pre_commit(id))? {
            barrier
                .snapshot
                .transactions
                .push((self.uid.to_string(), self.subtask, txn));
        }
        Ok(())
    }
}
