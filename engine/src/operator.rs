//! The operator interface, and what an operator writes into: [`Output`].
//!
//! An operator is called once per batch. Whatever it writes to the output is
//! passed on (main output, side outputs, then any watermark it emitted) when
//! the call returns, so records always precede the watermark that follows
//! them. Watermarks an operator forwards never go backwards.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::checkpoint::snapshot::BarrierCtx;
use crate::checkpoint::{RestoreContext, SnapshotWriter};
use crate::config::{FailurePolicy, JobConfig};
use crate::error::{guarded, Error, Result};
use crate::metrics::OpCounters;
use crate::record::{Data, Record};
use crate::runtime::metrics::JobCounters;
use crate::runtime::push::{BoxPush, Push};
use crate::time::{EventTime, Periodic, Watermark};

/// A one-input operator; one instance runs in each subtask.
pub trait Operator<I, O>: Send + 'static {
    /// Processes one batch of records.
    ///
    /// # Errors
    /// Any error stops the job and is reported with the operator's name.
    fn process_batch(&mut self, batch: Vec<Record<I>>, out: &mut Output<O>) -> Result<()>;

    /// The input watermark advanced to `watermark` (timers due now fire here).
    ///
    /// # Errors
    /// Any error stops the job and is reported with the operator's name.
    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
        let _ = (watermark, out);
        Ok(())
    }

    /// Whether input watermarks are passed on. Operators that generate their
    /// own (`assign_timestamps`) return `false`; `+inf` is always passed on.
    fn forwards_watermarks(&self) -> bool {
        true
    }

    /// Processing time advanced to `now` (milliseconds of the job's clock).
    ///
    /// # Errors
    /// Any error stops the job and is reported with the operator's name.
    fn on_processing_time(&mut self, now: i64, out: &mut Output<O>) -> Result<()> {
        let _ = (now, out);
        Ok(())
    }

    /// End of input, after the final `+inf` watermark.
    ///
    /// # Errors
    /// Any error stops the job and is reported with the operator's name.
    fn finish(&mut self, out: &mut Output<O>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// A checkpoint barrier (or the end of a stop with a savepoint) is about
    /// to pass: emit what the operator holds back between calls, such as a
    /// pre-aggregation's partial results, so the snapshot need not keep it
    /// (Flink's `prepareSnapshotPreBarrier`). Most operators hold nothing.
    ///
    /// # Errors
    /// Any error stops the job (the checkpoint never completes).
    fn before_barrier(&mut self, out: &mut Output<O>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// The input went idle (its watermark no longer holds the job's
    /// back): emit what is held back, as before a barrier, since windows
    /// downstream may now fire without waiting for it.
    ///
    /// # Errors
    /// Any error stops the job and is reported with the operator's name.
    fn on_idle(&mut self, out: &mut Output<O>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// A checkpoint barrier passed: write everything needed to continue
    /// from exactly here (keyed state, timers) into `snapshot`. Called
    /// between batches. Stateless operators keep this default.
    ///
    /// # Errors
    /// Any error stops the job (the checkpoint never completes).
    fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
        let _ = snapshot;
        Ok(())
    }

    /// The job restarts from a checkpoint: load what
    /// [`Operator::snapshot_state`] wrote, keeping only the keys this subtask
    /// owns now ([`RestoreContext::owns_key`]). Called once, right after the
    /// operator is made and before any input.
    ///
    /// # Errors
    /// The job does not start.
    fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
        let _ = restore;
        Ok(())
    }

    /// The size of the operator's state, for metrics (asked every 250 ms
    /// of the job's clock, between batches: keep it cheap). Stateless
    /// operators keep this default, `None`.
    fn state_size(&mut self) -> Option<StateSize> {
        None
    }
}

/// The size of an operator subtask's state ([`Operator::state_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StateSize {
    /// Entries (keys × states), exact in memory, estimated with RocksDB.
    pub entries: u64,
    /// Bytes RocksDB holds for it (SST files and memtables), if known.
    pub bytes: Option<u64>,
}

impl From<tideline_state::StateSize> for StateSize {
    fn from(size: tideline_state::StateSize) -> Self {
        Self {
            entries: size.entries,
            bytes: size.disk_bytes,
        }
    }
}

/// Where an operator instance runs.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    /// The operator's name (as in errors and the job summary).
    pub name: Arc<str>,
    /// The operator's uid: its state is stored under it in checkpoints.
    pub uid: Arc<str>,
    /// This subtask's index, `0..parallelism`.
    pub subtask: usize,
    /// How many subtasks the operator has.
    pub parallelism: usize,
    /// The job's configuration (clock, key groups, batch size...).
    pub config: JobConfig,
}

impl OperatorContext {
    /// The key groups this subtask owns (contiguous, as in Flink).
    pub fn key_group_range(&self) -> std::ops::Range<u16> {
        self.state_scope().key_group_range
    }

    fn state_scope(&self) -> tideline_state::StateScope {
        tideline_state::StateScope::for_subtask(
            self.uid.to_string(),
            self.subtask,
            self.parallelism,
            self.config.key_groups,
        )
    }

    /// Keyed state for this subtask, in the job's state backend
    /// ([`JobConfig::state_backend`]).
    ///
    /// # Errors
    /// When the backend cannot be opened (RocksDB directory, options).
    pub fn keyed_state<K: tideline_state::StateKey>(
        &self,
    ) -> Result<tideline_state::KeyedState<K>> {
        Ok(tideline_state::KeyedState::open(
            &self.config.state_backend,
            self.state_scope(),
        )?)
    }
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
const DEAD_LETTER_TAG: u64 = 0;

/// Names a side output of type `T`. Create it once and use it both in the
/// operator that emits and in `Stream::side_output` that reads.
///
/// ```
/// use tideline_engine::OutputTag;
/// let late: OutputTag<(String, i64)> = OutputTag::new("late-clicks");
/// assert_eq!(late.name(), "late-clicks");
/// ```
pub struct OutputTag<T> {
    id: u64,
    name: Arc<str>,
    _type: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A new tag; every call makes a distinct one, even with the same name.
    pub fn new(name: &str) -> Self {
        Self {
            id: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            name: Arc::from(name),
            _type: PhantomData,
        }
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl OutputTag<DeadLetter> {
    /// The tag every operator sends rejected records to.
    pub fn dead_letters() -> Self {
        Self {
            id: DEAD_LETTER_TAG,
            name: Arc::from("dead-letters"),
            _type: PhantomData,
        }
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            name: Arc::clone(&self.name),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTag({:?}#{})", self.name, self.id)
    }
}

/// A record that a source or an operator rejected, with why and, where
/// known, where it came from. Fields may be added (it is `non_exhaustive`):
/// build one with [`DeadLetter::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The operator (or source) that rejected it.
    pub operator: String,
    /// The record's event time ([`EventTime::MIN`] for input a source could
    /// not turn into a record).
    pub timestamp: EventTime,
    /// Why it was rejected.
    pub reason: String,
    /// The record as text: its `Debug` form where the operator can show it
    /// (`try_map`, process functions), the input text for a source (a file
    /// row), otherwise what the operator was told to show (windows: see
    /// `WindowedStream::dead_letter_text`).
    pub record: String,
    /// The source partition it was read from, for a source's rejections.
    pub partition: Option<usize>,
    /// Where it was in that partition: as the source names it (a file's
    /// `path:line`), or else the reader's offset after the batch that held it.
    pub offset: Option<String>,
}

impl DeadLetter {
    /// A dead letter with no source position.
    pub fn new(
        operator: impl Into<String>,
        timestamp: EventTime,
        reason: impl Into<String>,
        record: impl Into<String>,
    ) -> Self {
        Self {
            operator: operator.into(),
            timestamp,
            reason: reason.into(),
            record: record.into(),
            partition: None,
            offset: None,
        }
    }

    /// The same, read from source partition `partition` at `offset`.
    pub fn at(mut self, partition: Option<usize>, offset: Option<String>) -> Self {
        self.partition = partition;
        self.offset = offset;
        self
    }
}

/// A side output's buffer inside a task, flushed after each operator call.
pub(crate) trait SideChannel: Send {
    fn tag(&self) -> u64;
    fn flush(&mut self) -> Result<()>;
    fn push_watermark(&mut self, watermark: Watermark) -> Result<()>;
    fn on_tick(&mut self, now: i64) -> Result<()>;
    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()>;
    fn finish(&mut self, last: Option<&mut BarrierCtx>) -> Result<()>;
    fn stop(&mut self) -> Result<()>;
    fn flush_downstream(&mut self) -> Result<()>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub(crate) struct SideBuffer<T> {
    tag: u64,
    buffer: Vec<Record<T>>,
    next: BoxPush<T>,
}

impl<T: Data> SideBuffer<T> {
    pub(crate) fn new(tag: u64, next: BoxPush<T>) -> Self {
        Self {
            tag,
            buffer: Vec::new(),
            next,
        }
    }
}

impl<T: Data> SideChannel for SideBuffer<T> {
    fn tag(&self) -> u64 {
        self.tag
    }
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.next.push_batch(std::mem::take(&mut self.buffer))
    }
    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.next.push_watermark(watermark)
    }
    fn on_tick(&mut self, now: i64) -> Result<()> {
        self.next.on_tick(now)
    }
    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        self.flush()?;
        self.next.push_barrier(barrier)
    }
    fn finish(&mut self, last: Option<&mut BarrierCtx>) -> Result<()> {
        self.next.finish(last)
    }
    fn stop(&mut self) -> Result<()> {
        self.flush()?;
        self.next.stop()
    }
    fn flush_downstream(&mut self) -> Result<()> {
        self.next.flush()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// What an operator writes into: the main output, side outputs, dead letters,
/// and (for watermark-generating operators) a new watermark.
pub struct Output<O> {
    records: Vec<Record<O>>,
    watermark: Option<EventTime>,
    sides: Vec<Box<dyn SideChannel>>,
    job: Arc<JobCounters>,
    /// The operator subtask's own counters (late records).
    counters: Arc<OpCounters>,
    operator: Arc<str>,
    failure_policy: FailurePolicy,
}

impl<O> fmt::Debug for Output<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("operator", &self.operator)
            .field("pending", &self.records.len())
            .finish()
    }
}

impl<O: Data> Output<O> {
    pub(crate) fn new(
        operator: Arc<str>,
        sides: Vec<Box<dyn SideChannel>>,
        job: Arc<JobCounters>,
        counters: Arc<OpCounters>,
        failure_policy: FailurePolicy,
    ) -> Self {
        Self {
            records: Vec::new(),
            watermark: None,
            sides,
            job,
            counters,
            operator,
            failure_policy,
        }
    }

    /// Emits `value` at `timestamp` on the main output, with no lateness
    /// watermark (downstream judges it by the operator's watermark). An
    /// operator that passes on or derives from an input record should
    /// [`Output::push`] a record made with
    /// [`Record::with_lateness_watermark`] instead, keeping the input's.
    pub fn emit(&mut self, timestamp: EventTime, value: O) {
        self.records.push(Record::new(timestamp, value));
    }

    /// Emits a record on the main output.
    pub fn push(&mut self, record: Record<O>) {
        self.records.push(record);
    }

    /// Emits a whole batch on the main output (without copying when nothing
    /// else is pending).
    pub fn push_batch(&mut self, mut batch: Vec<Record<O>>) {
        if self.records.is_empty() {
            self.records = batch;
        } else {
            self.records.append(&mut batch);
        }
    }

    /// Emits `value` on the side output `tag`. Without a consumer of that tag
    /// the record is dropped (count it with [`Output::count_late`] or a dead
    /// letter if it must not vanish).
    pub fn emit_to<T: Data>(&mut self, tag: &OutputTag<T>, timestamp: EventTime, value: T) {
        emit_side(&mut self.sides, tag.id(), Record::new(timestamp, value));
    }

    /// Emits `record` (timestamp and lateness watermark kept) on the side
    /// output `tag`.
    pub fn push_to<T: Data>(&mut self, tag: &OutputTag<T>, record: Record<T>) {
        emit_side(&mut self.sides, tag.id(), record);
    }

    /// Emits a watermark after this call's records (watermark-generating operators).
    pub fn emit_watermark(&mut self, watermark: EventTime) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// Rejects a record: under [`FailurePolicy::DeadLetter`] it goes to the
    /// dead-letter output (and the job's dead-letter count), under
    /// [`FailurePolicy::FailFast`] the job stops with `reason`.
    ///
    /// # Errors
    /// [`Error::User`] under `FailFast`.
    pub fn dead_letter(
        &mut self,
        timestamp: EventTime,
        reason: impl fmt::Display,
        record: &dyn fmt::Debug,
    ) -> Result<()> {
        self.dead_letter_text(timestamp, reason, format!("{record:?}"))
    }

    /// Like [`Output::dead_letter`], for records that are not `Debug`:
    /// `record` is the text the dead letter shows.
    ///
    /// # Errors
    /// [`Error::User`] under `FailFast`.
    pub fn dead_letter_text(
        &mut self,
        timestamp: EventTime,
        reason: impl fmt::Display,
        record: String,
    ) -> Result<()> {
        let letter = DeadLetter::new(&*self.operator, timestamp, reason.to_string(), record);
        reject(&mut self.sides, &self.job, self.failure_policy, letter)
    }

    /// Adds `n` to the job's count of late records.
    pub fn count_late(&mut self, n: u64) {
        self.counters.add_late(n);
    }

    /// Adds `n` to the job's count of late records, late for `reason`.
    pub fn count_late_for(&mut self, reason: crate::time::LateReason, n: u64) {
        self.count_late(n);
        if reason == crate::time::LateReason::OperatorWatermark {
            self.job
                .late_by_operator_watermark
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The operator's name.
    pub fn operator_name(&self) -> &str {
        &self.operator
    }
}

/// Appends `record` to the side channel of tag `tag`, if anyone reads it.
pub(crate) fn emit_side<T: Data>(sides: &mut [Box<dyn SideChannel>], tag: u64, record: Record<T>) {
    if let Some(side) = sides.iter_mut().find(|s| s.tag() == tag) {
        if let Some(buffer) = side.as_any_mut().downcast_mut::<SideBuffer<T>>() {
            buffer.buffer.push(record);
        }
    }
}

/// Rejects one record: counted and sent to the dead-letter output, or an
/// error under [`FailurePolicy::FailFast`].
pub(crate) fn reject(
    sides: &mut [Box<dyn SideChannel>],
    job: &JobCounters,
    policy: FailurePolicy,
    letter: DeadLetter,
) -> Result<()> {
    if policy == FailurePolicy::FailFast {
        let at = match (&letter.partition, &letter.offset) {
            (Some(p), Some(o)) => format!(" (partition {p}, {o})"),
            (Some(p), None) => format!(" (partition {p})"),
            (None, Some(o)) => format!(" ({o})"),
            (None, None) => String::new(),
        };
        return Err(Error::user(format!(
            "record {}{at} rejected: {}",
            letter.record, letter.reason
        )));
    }
    job.dead_letters.fetch_add(1, Ordering::Relaxed);
    job.dead_letter_log.record(&letter, job.clock.now_millis());
    let timestamp = letter.timestamp;
    emit_side(sides, DEAD_LETTER_TAG, Record::new(timestamp, letter));
    Ok(())
}

/// Runs an [`Operator`] inside a chain: counts records, catches panics,
/// names errors, and passes on what the operator wrote.
pub(crate) struct OperatorPush<I, O, Op> {
    name: Arc<str>,
    uid: Arc<str>,
    subtask: usize,
    parallelism: usize,
    op: Op,
    out: Output<O>,
    next: BoxPush<O>,
    counters: Arc<OpCounters>,
    last_watermark: EventTime,
    /// Idle was passed on: the next watermark announces we are active again,
    /// even if it is not larger than the last one.
    idle_sent: bool,
    /// When (job clock) the state size is sampled.
    state_sampling: Periodic,
    _input: PhantomData<fn(I)>,
}

impl<I: Data, O: Data, Op: Operator<I, O>> OperatorPush<I, O, Op> {
    pub(crate) fn new(
        op: Op,
        ctx: &OperatorContext,
        out: Output<O>,
        next: BoxPush<O>,
        counters: Arc<OpCounters>,
    ) -> Self {
        Self {
            name: Arc::clone(&out.operator),
            uid: Arc::clone(&ctx.uid),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            op,
            out,
            next,
            counters,
            last_watermark: EventTime::MIN,
            idle_sent: false,
            state_sampling: Periodic::new(crate::metrics::SAMPLE_INTERVAL_MILLIS),
            _input: PhantomData,
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.out.records.is_empty() {
            let batch = std::mem::take(&mut self.out.records);
            self.counters.add_out(batch.len());
            self.next.push_batch(batch)?;
        }
        for side in &mut self.out.sides {
            side.flush()?;
        }
        if let Some(wm) = self.out.watermark.take() {
            self.forward_watermark(wm)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        let mut writer = barrier.writer(
            &self.uid,
            crate::checkpoint::snapshot::operator_kind::<Op>(),
            self.subtask,
            self.parallelism,
        );
        let op = &mut self.op;
        guarded(&self.name, || op.snapshot_state(&mut writer))
    }

    fn forward_watermark(&mut self, wm: EventTime) -> Result<()> {
        if wm < self.last_watermark || (wm == self.last_watermark && !self.idle_sent) {
            return Ok(());
        }
        self.idle_sent = false;
        self.last_watermark = wm;
        self.next.push_watermark(Watermark::EventTime(wm))?;
        for side in &mut self.out.sides {
            side.push_watermark(Watermark::EventTime(wm))?;
        }
        Ok(())
    }
}

impl<I: Data, O: Data, Op: Operator<I, O>> Push<I> for OperatorPush<I, O, Op> {
    fn push_batch(&mut self, batch: Vec<Record<I>>) -> Result<()> {
        self.counters.add_in(batch.len());
        let (op, out) = (&mut self.op, &mut self.out);
        guarded(&self.name, || op.process_batch(batch, out))?;
        self.flush()
    }

    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        match watermark {
            Watermark::EventTime(wm) => {
                let (op, out) = (&mut self.op, &mut self.out);
                guarded(&self.name, || op.on_watermark(wm, out))?;
                self.flush()?;
                if self.op.forwards_watermarks() || wm == EventTime::MAX {
                    self.forward_watermark(wm)?;
                }
                Ok(())
            }
            Watermark::Idle => {
                let (op, out) = (&mut self.op, &mut self.out);
                guarded(&self.name, || op.on_idle(out))?;
                self.flush()?;
                self.idle_sent = true;
                self.next.push_watermark(Watermark::Idle)?;
                for side in &mut self.out.sides {
                    side.push_watermark(Watermark::Idle)?;
                }
                Ok(())
            }
        }
    }

    fn on_tick(&mut self, now: i64) -> Result<()> {
        if self.state_sampling.due(now) {
            self.counters.set_state_size(self.op.state_size());
        }
        let (op, out) = (&mut self.op, &mut self.out);
        guarded(&self.name, || op.on_processing_time(now, out))?;
        self.flush()?;
        self.next.on_tick(now)?;
        for side in &mut self.out.sides {
            side.on_tick(now)?;
        }
        Ok(())
    }

    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        let (op, out) = (&mut self.op, &mut self.out);
        guarded(&self.name, || op.before_barrier(out))?;
        self.flush()?;
        self.snapshot(barrier)?;
        self.next.push_barrier(barrier)?;
        for side in &mut self.out.sides {
            side.push_barrier(barrier)?;
        }
        Ok(())
    }

    fn finish(&mut self, mut last: Option<&mut BarrierCtx>) -> Result<()> {
        let (op, out) = (&mut self.op, &mut self.out);
        guarded(&self.name, || op.finish(out))?;
        self.flush()?;
        if let Some(barrier) = last.as_deref_mut() {
            self.snapshot(barrier)?;
        }
        self.next.finish(last.as_deref_mut())?;
        for side in &mut self.out.sides {
            side.finish(last.as_deref_mut())?;
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        // The operator's `finish` is not called: its state went into the
        // savepoint and continues after the resume.
        self.flush()?;
        self.next.stop()?;
        for side in &mut self.out.sides {
            side.stop()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.next.flush()?;
        for side in &mut self.out.sides {
            side.flush_downstream()?;
        }
        Ok(())
    }
}
