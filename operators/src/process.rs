//! Keyed process functions: per-record user code with the current key, keyed
//! state, event- and processing-time timers, and side outputs — Flink's
//! `KeyedProcessFunction`.
//!
//! Invariants: state and timers are scoped to the key of the record (or timer)
//! being handled; an event-time timer fires exactly once, when the watermark
//! reaches its timestamp, in timestamp order; output emitted from a timer
//! carries the timer's timestamp.

use tideline_engine::time::{LatenessRule, TimerService};
use tideline_engine::{
    Data, EventTime, KeySelector, KeyedStream, Operator, Output, OutputTag, Record, RestoreContext,
    Result, SnapshotWriter, Stream,
};
use tideline_state::{
    KeyedState, ListState, ListStateDescriptor, MapState, MapStateDescriptor, StateKey, StateValue,
    ValueState, ValueStateDescriptor,
};

/// Which clock a timer was set on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark reaches it.
    EventTime,
    /// Fires when the job's clock reaches it.
    ProcessingTime,
}

/// User code run for each record of a keyed stream.
///
/// ```
/// use tideline_operators::prelude::*;
///
/// /// Counts records per key and emits the running count.
/// #[derive(Clone)]
/// struct Count;
/// const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
///
/// impl KeyedProcessFunction<String, String, (String, u64)> for Count {
///     fn process_element(&mut self, value: String, ctx: &mut ProcessContext<'_, String, (String, u64)>) -> Result<()> {
///         let n = {
///             let mut count = ctx.value_state(&COUNT)?;
///             let n = count.get_or_insert_with(|| 0);
///             *n += 1;
///             *n
///         };
///         ctx.collect((value, n));
///         Ok(())
///     }
/// }
/// let job = Job::new();
/// let out = CollectSink::new();
/// job.source(VecSource::new(vec!["a".to_string(), "b".into(), "a".into()]), WatermarkStrategy::none())
///     .key_by(|s: &String| s.clone())
///     .process(Count)
///     .sink(out.clone());
/// job.run()?;
/// assert_eq!(out.values(), vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub trait KeyedProcessFunction<K, I, O>: Send + 'static {
    /// Handles one record of the current key.
    ///
    /// # Errors
    /// An error stops the job (use [`ProcessContext::dead_letter`] to reject a
    /// single record instead).
    fn process_element(&mut self, value: I, ctx: &mut ProcessContext<'_, K, O>) -> Result<()>;

    /// A timer of the current key fired (`ctx.time_domain()` says which kind).
    ///
    /// # Errors
    /// An error stops the job.
    fn on_timer(&mut self, timestamp: EventTime, ctx: &mut ProcessContext<'_, K, O>) -> Result<()> {
        let _ = (timestamp, ctx);
        Ok(())
    }
}

/// What a [`KeyedProcessFunction`] can see and do.
#[derive(Debug)]
pub struct ProcessContext<'a, K, O> {
    key: &'a K,
    timestamp: EventTime,
    /// The lateness watermark of the record being handled (`MIN` in timers).
    lateness_watermark: EventTime,
    domain: Option<TimeDomain>,
    keyed: &'a mut KeyedRuntime<K>,
    out: &'a mut Output<O>,
}

/// The keyed state and timers of one process-function subtask.
#[derive(Debug)]
pub struct KeyedRuntime<K> {
    state: KeyedState<K>,
    event_timers: TimerService<K, ()>,
    processing_timers: TimerService<K, ()>,
    watermark: EventTime,
    processing_time: i64,
    rule: LatenessRule,
}

impl<K: StateKey> KeyedRuntime<K> {
    /// Keyed state in `state`, no timers, event and processing time at `-inf`.
    pub fn new(state: KeyedState<K>) -> Self {
        Self {
            state,
            event_timers: TimerService::new(),
            processing_timers: TimerService::new(),
            watermark: EventTime::MIN,
            processing_time: i64::MIN,
            rule: LatenessRule::PartitionLocal,
        }
    }
}

impl<K: StateKey, O: Data> ProcessContext<'_, K, O> {
    /// The key of the record or timer being handled.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The record's timestamp, or the timer's.
    pub fn timestamp(&self) -> EventTime {
        self.timestamp
    }

    /// Inside `on_timer`, which kind of timer fired; `None` in `process_element`.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> EventTime {
        self.keyed.watermark
    }

    /// The watermark to judge the current record's lateness by: under the
    /// job's default rule, the larger of its source partition's watermark
    /// just before it and the operator's watermark
    /// ([`LatenessRule::judge`]). A record with `timestamp <=
    /// lateness_watermark()` is behind; deciding by this rather than
    /// [`ProcessContext::current_watermark`] gives the same answer in every
    /// run. In `on_timer` it is the operator's watermark.
    pub fn lateness_watermark(&self) -> EventTime {
        self.keyed
            .rule
            .judge(self.lateness_watermark, self.keyed.watermark)
    }

    /// The job clock's time as last seen by the operator (ms).
    pub fn current_processing_time(&self) -> i64 {
        self.keyed.processing_time
    }

    /// Registers an event-time timer for the current key; `false` if it exists.
    /// A timer at or before the current watermark fires at the next watermark.
    pub fn register_event_time_timer(&mut self, at: impl Into<EventTime>) -> bool {
        self.keyed.event_timers.register(self.key, &(), at.into())
    }

    /// Deletes an event-time timer of the current key; `false` if there was none.
    pub fn delete_event_time_timer(&mut self, at: impl Into<EventTime>) -> bool {
        self.keyed.event_timers.delete(self.key, &(), at.into())
    }

    /// Registers a processing-time timer (job clock, ms) for the current key.
    pub fn register_processing_time_timer(&mut self, at_millis: i64) -> bool {
        self.keyed
            .processing_timers
            .register(self.key, &(), EventTime::from_millis(at_millis))
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, at_millis: i64) -> bool {
        self.keyed
            .processing_timers
            .delete(self.key, &(), EventTime::from_millis(at_millis))
    }

    /// The value state `descriptor` of the current key.
    ///
    /// # Errors
    /// When the state name is used with another type.
    pub fn value_state<V: StateValue>(
        &mut self,
        descriptor: &ValueStateDescriptor<V>,
    ) -> Result<ValueState<'_, K, (), V>> {
        Ok(self.keyed.state.value(descriptor, self.key, &())?)
    }

    /// The map state `descriptor` of the current key.
    ///
    /// # Errors
    /// When the state name is used with another type.
    pub fn map_state<MK: StateKey, MV: StateValue>(
        &mut self,
        descriptor: &MapStateDescriptor<MK, MV>,
    ) -> Result<MapState<'_, K, (), MK, MV>> {
        Ok(self.keyed.state.map(descriptor, self.key, &())?)
    }

    /// The list state `descriptor` of the current key.
    ///
    /// # Errors
    /// When the state name is used with another type.
    pub fn list_state<V: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<V>,
    ) -> Result<ListState<'_, K, (), V>> {
        Ok(self.keyed.state.list(descriptor, self.key, &())?)
    }

    /// Emits `value` at the current timestamp (keeping the current
    /// record's lateness watermark).
    pub fn collect(&mut self, value: O) {
        self.collect_at(self.timestamp, value);
    }

    /// Emits `value` at `timestamp` (keeping the current record's lateness
    /// watermark).
    pub fn collect_at(&mut self, timestamp: impl Into<EventTime>, value: O) {
        self.out.push(
            Record::new(timestamp.into(), value).with_lateness_watermark(self.lateness_watermark),
        );
    }

    /// Emits `value` on side output `tag`, at the current timestamp.
    pub fn output<T: Data>(&mut self, tag: &OutputTag<T>, value: T) {
        self.out.push_to(
            tag,
            Record::new(self.timestamp, value).with_lateness_watermark(self.lateness_watermark),
        );
    }

    /// Rejects the current record into the dead-letter output.
    ///
    /// # Errors
    /// Under `FailurePolicy::FailFast`.
    pub fn dead_letter(
        &mut self,
        reason: impl std::fmt::Display,
        record: &dyn std::fmt::Debug,
    ) -> Result<()> {
        self.out.dead_letter(self.timestamp, reason, record)
    }

    /// Like [`ProcessContext::dead_letter`], for records that are not
    /// `Debug`: `record` is the text the dead letter shows.
    ///
    /// # Errors
    /// Under `FailurePolicy::FailFast`.
    pub fn dead_letter_text(
        &mut self,
        reason: impl std::fmt::Display,
        record: String,
    ) -> Result<()> {
        self.out.dead_letter_text(self.timestamp, reason, record)
    }
}

/// Runs a [`KeyedProcessFunction`] in one subtask.
#[derive(Debug)]
pub struct KeyedProcessOperator<K, I, F> {
    function: F,
    key: KeySelectorDebug<K, I>,
    keyed: KeyedRuntime<K>,
}

/// A key selector (wrapped so the operator can derive `Debug`).
pub struct KeySelectorDebug<K, I>(KeySelector<K, I>);

impl<K, I> std::fmt::Debug for KeySelectorDebug<K, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySelector")
    }
}

impl<K: StateKey, I, F> KeyedProcessOperator<K, I, F> {
    /// An operator running `function`, keying records with `key`, its keyed
    /// state in `state`.
    pub fn new(function: F, key: KeySelector<K, I>, state: KeyedState<K>) -> Self {
        Self {
            function,
            key: KeySelectorDebug(key),
            keyed: KeyedRuntime::new(state),
        }
    }
}

impl<K: StateKey, I: Data, F> KeyedProcessOperator<K, I, F> {
    fn fire<O: Data>(
        &mut self,
        domain: TimeDomain,
        up_to: EventTime,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        F: KeyedProcessFunction<K, I, O>,
    {
        // Timers registered while due ones fire also fire now if due (as in
        // Flink), except at the end of input: a timer that re-registers
        // itself would then never stop, so only those registered before the
        // final watermark fire.
        let limit = (up_to == EventTime::MAX).then(|| match domain {
            TimeDomain::EventTime => self.keyed.event_timers.generation(),
            TimeDomain::ProcessingTime => self.keyed.processing_timers.generation(),
        });
        loop {
            let timers = match domain {
                TimeDomain::EventTime => &mut self.keyed.event_timers,
                TimeDomain::ProcessingTime => &mut self.keyed.processing_timers,
            };
            let next = match limit {
                Some(limit) => timers.pop_due_before(up_to, limit),
                None => timers.pop_due(up_to),
            };
            let Some((at, key, ())) = next else {
                return Ok(());
            };
            let mut ctx = ProcessContext {
                key: &key,
                timestamp: at,
                lateness_watermark: EventTime::MIN,
                domain: Some(domain),
                keyed: &mut self.keyed,
                out,
            };
            self.function.on_timer(at, &mut ctx)?;
        }
    }
}

impl<K, I, O, F> Operator<I, O> for KeyedProcessOperator<K, I, F>
where
    K: StateKey,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
{
    fn process_batch(&mut self, batch: Vec<Record<I>>, out: &mut Output<O>) -> Result<()> {
        for record in batch {
            let key = (self.key.0)(&record.value);
            let mut ctx = ProcessContext {
                key: &key,
                timestamp: record.timestamp,
                lateness_watermark: record.lateness_watermark,
                domain: None,
                keyed: &mut self.keyed,
                out,
            };
            self.function.process_element(record.value, &mut ctx)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
        let watermark = watermark.max(self.keyed.watermark);
        self.keyed.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark, out)
    }

    fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
        let keyed = &mut self.keyed;
        crate::keyed_snapshot::snapshot_keyed(
            &mut keyed.state,
            &[&keyed.event_timers, &keyed.processing_timers],
            snapshot,
        )
    }

    fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
        let keyed = &mut self.keyed;
        crate::keyed_snapshot::restore_keyed(
            &mut keyed.state,
            &mut [&mut keyed.event_timers, &mut keyed.processing_timers],
            restore,
        )
    }

    fn state_size(&mut self) -> Option<tideline_engine::StateSize> {
        Some(self.keyed.state.size().into())
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Output<O>) -> Result<()> {
        self.keyed.processing_time = now;
        self.fire(TimeDomain::ProcessingTime, EventTime::from_millis(now), out)
    }
}

/// Adds `process` to keyed streams.
pub trait KeyedProcessExt<K, T> {
    /// Runs `function` on every record with its key, keyed state and timers.
    /// Each subtask gets its own clone of `function`.
    fn process<O, F>(&self, function: F) -> Stream<O>
    where
        O: Data,
        F: KeyedProcessFunction<K, T, O> + Clone;
}

impl<K, T> KeyedProcessExt<K, T> for KeyedStream<K, T>
where
    K: StateKey,
    T: Data,
{
    fn process<O, F>(&self, function: F) -> Stream<O>
    where
        O: Data,
        F: KeyedProcessFunction<K, T, O> + Clone,
    {
        process_named(self, "process", function)
    }
}

/// [`KeyedProcessExt::process`] under another operator name (the built-in
/// operators that are process functions: `to_table`, `aggregate_changelog`).
pub(crate) fn process_named<K, T, O, F>(
    stream: &KeyedStream<K, T>,
    name: &str,
    function: F,
) -> Stream<O>
where
    K: StateKey,
    T: Data,
    O: Data,
    F: KeyedProcessFunction<K, T, O> + Clone,
{
    stream.transform(name, move |ctx, key| {
        let mut op = KeyedProcessOperator::new(function.clone(), key, ctx.keyed_state()?);
        op.keyed.rule = ctx.config.lateness_rule;
        Ok(op)
    })
}
