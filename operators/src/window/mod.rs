//! Event-time windows on keyed streams, with Flink's semantics (DESIGN.md
//! "Time semantics").
//!
//! ```
//! use std::time::Duration;
//! use tideline_operators::prelude::*;
//! use tideline_operators::window::{Count, Sum, Tumbling, WindowExt};
//!
//! let job = Job::new().mode(ExecutionMode::Bounded);
//! let out = CollectSink::new();
//! job.source(
//!     VecSource::timestamped(vec![(1_000, ('a', 1)), (4_000, ('a', 2)), (12_000, ('a', 5))]),
//!     WatermarkStrategy::monotonous(),
//! )
//! .key_by(|(k, _)| *k)
//! .window(Tumbling::of(Duration::from_secs(10)))
//! .aggregate((Count, Sum::of(|(_, v): &(char, i64)| *v)))
//! .sink(out.clone());
//! job.run()?;
//! let rows: Vec<_> = out.values().into_iter().map(|r| (r.window.start, r.value)).collect();
//! assert_eq!(rows, vec![(0, (2, 3)), (10_000, (1, 5))]);
//! # Ok::<(), tideline_engine::Error>(())
//! ```
//!
//! Windows: [`Tumbling`], [`Sliding`] (computed in panes), [`Session`] (fixed
//! or per-record gap) and [`GlobalWindows`]. Functions: incremental
//! [`WindowedStream::aggregate`] ([`Count`], [`Sum`], [`Min`], [`Max`],
//! [`Avg`] and tuples of them), [`WindowedStream::reduce`],
//! [`WindowedStream::process`] over all records, and
//! [`WindowedStream::aggregate_with`]. Triggers: [`EventTimeTrigger`]
//! (default), [`EarlyFiring`], [`CountTrigger`] or your own [`Trigger`].
//!
//! Tumbling and sliding aggregations whose merge is exact
//! ([`AggregateFunction::EXACT_MERGE`]: integer counts, sums, minima,
//! maxima and tuples of them) under the event-time trigger fold records
//! per key and pane where they are read, before the keyed exchange (an
//! operator named `window_combine`, chained to its input), and the window
//! operator merges the partials: the windows and late records are exactly
//! those of record-by-record processing (the argument is in the `combine`
//! module), while the exchange and window state see one entry per key and
//! pane instead of one per record.

mod aggregate;
mod assigner;
mod combine;
mod operator;
mod panes;
mod sessions;
mod trigger;

use std::hash::Hash;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tideline_engine::time::TimerService;
use tideline_engine::{Data, Error, EventTime, KeyedStream, Output, OutputTag, Result, Stream};
use tideline_state::{StateKey, StateValue};

pub use aggregate::{AggregateFunction, Avg, CollectAll, Count, Max, Min, Numeric, Reduce, Sum};
pub use assigner::{
    Gap, GlobalWindows, ParseSpanError, Session, Sliding, Span, TimeWindow, Tumbling, WindowKind,
};
pub use trigger::{
    CountTrigger, EarlyFiring, EarlyFiringState, EventTimeTrigger, Trigger, TriggerContext,
    TriggerResult,
};

use combine::{Combined, WindowCombiner};
use operator::combined::WindowOperator as CombinedWindowOperator;
use operator::{LiveCount, WindowOperator};
use panes::Grid;

/// Why a window emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Firing {
    /// Before the watermark reached the window's end (early trigger).
    Early,
    /// When the watermark reached the window's end.
    OnTime,
    /// After that, for records within the allowed lateness.
    Late,
}

/// Which window a result is for, and why it was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowInfo {
    /// The window.
    pub window: TimeWindow,
    /// Why it fired.
    pub firing: Firing,
    /// Whether this window emitted before (this result replaces the earlier one).
    pub update: bool,
}

/// One window's result.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowResult<K, R> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The aggregate.
    pub value: R,
    /// Why it fired.
    pub firing: Firing,
    /// Whether this window emitted before.
    pub update: bool,
}

/// Where a window function emits; results carry the window's `max_timestamp`.
#[derive(Debug)]
pub struct WindowCollector<'a, O> {
    out: &'a mut Output<O>,
    timestamp: EventTime,
}

impl<O: Data> WindowCollector<'_, O> {
    /// Emits `value`.
    pub fn collect(&mut self, value: O) {
        self.out.emit(self.timestamp, value);
    }
}

/// Turns a window's contents (all records, or an aggregate) into output.
pub trait ProcessWindowFunction<K, R, O>: Send + 'static {
    /// Called when the window fires, with its key, window and contents.
    ///
    /// # Errors
    /// An error stops the job.
    fn process(
        &mut self,
        key: &K,
        window: &WindowInfo,
        input: R,
        out: &mut WindowCollector<'_, O>,
    ) -> Result<()>;
}

impl<K, R, O, F> ProcessWindowFunction<K, R, O> for F
where
    F: FnMut(&K, &WindowInfo, R, &mut WindowCollector<'_, O>) -> Result<()> + Send + 'static,
{
    fn process(
        &mut self,
        key: &K,
        window: &WindowInfo,
        input: R,
        out: &mut WindowCollector<'_, O>,
    ) -> Result<()> {
        self(key, window, input, out)
    }
}

/// Emits [`WindowResult`]s.
#[derive(Debug, Default)]
pub(crate) struct ToResult;

impl<K: Data, R: Data> ProcessWindowFunction<K, R, WindowResult<K, R>> for ToResult {
    fn process(
        &mut self,
        key: &K,
        info: &WindowInfo,
        input: R,
        out: &mut WindowCollector<'_, WindowResult<K, R>>,
    ) -> Result<()> {
        out.collect(WindowResult {
            key: key.clone(),
            window: info.window,
            value: input,
            firing: info.firing,
            update: info.update,
        });
        Ok(())
    }
}

/// How many windows (panes, for sliding windows) hold state right now,
/// over all subtasks. Returns to 0 once the watermark passes everything.
#[derive(Clone, Debug, Default)]
pub struct LiveWindows(Arc<AtomicI64>);

impl LiveWindows {
    /// The current count.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A keyed stream cut into windows; finish it with an aggregate, `reduce` or `process`.
pub struct WindowedStream<K, T, Tr = EventTimeTrigger> {
    keyed: KeyedStream<K, T>,
    kind: WindowKind<T>,
    trigger: Tr,
    lateness: i64,
    late_tag: Option<OutputTag<T>>,
    live: LiveWindows,
    describe: Option<RecordText<T>>,
}

/// How an operator shows a record in a dead letter.
pub type RecordText<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

impl<K, T, Tr> std::fmt::Debug for WindowedStream<K, T, Tr> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("kind", &self.kind)
            .field("lateness", &self.lateness)
            .finish()
    }
}

/// Adds `window` to keyed streams.
pub trait WindowExt<K, T> {
    /// Assigns records to windows: [`Tumbling`], [`Sliding`], [`Session`] or [`GlobalWindows`].
    fn window(&self, windows: impl Into<WindowKind<T>>) -> WindowedStream<K, T>;
}

impl<K: Hash + serde::Serialize + Eq + Clone + Send + 'static, T: Data> WindowExt<K, T>
    for KeyedStream<K, T>
{
    fn window(&self, windows: impl Into<WindowKind<T>>) -> WindowedStream<K, T> {
        WindowedStream {
            keyed: self.clone(),
            kind: windows.into(),
            trigger: EventTimeTrigger,
            lateness: 0,
            late_tag: None,
            live: LiveWindows::default(),
            describe: None,
        }
    }
}

impl<K, T, Tr> WindowedStream<K, T, Tr>
where
    K: StateKey,
    T: Data,
    Tr: Trigger<T>,
{
    /// Keeps window state `lateness` past the window's end; each record
    /// arriving in that time fires the window again, marked as an update.
    pub fn allowed_lateness(mut self, lateness: impl Into<Span>) -> Self {
        self.lateness = lateness.into().as_millis();
        self
    }

    /// Sends records late for every window they belong to to `tag`
    /// (read it with `.side_output(&tag)` on the result stream). They are
    /// counted in the job summary's `late_records` either way.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// Replaces the default event-time trigger.
    pub fn trigger<Tr2: Trigger<T>>(self, trigger: Tr2) -> WindowedStream<K, T, Tr2> {
        WindowedStream {
            keyed: self.keyed,
            kind: self.kind,
            trigger,
            lateness: self.lateness,
            late_tag: self.late_tag,
            live: self.live,
            describe: self.describe,
        }
    }

    /// How dead letters of this operator (a record without event time, a
    /// non-positive session gap) show the record. Without it they show its
    /// type and its key as JSON, since records need not be `Debug`.
    pub fn dead_letter_text(mut self, text: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.describe = Some(Arc::new(text));
        self
    }

    /// Dead letters of this operator show the record's `Debug` form.
    pub fn debug_dead_letters(self) -> Self
    where
        T: std::fmt::Debug,
    {
        self.dead_letter_text(|record| format!("{record:?}"))
    }

    /// A gauge of live window state, for monitoring and tests.
    pub fn live_windows(&self) -> LiveWindows {
        self.live.clone()
    }

    /// Incremental aggregation; emits one [`WindowResult`] per firing.
    pub fn aggregate<A: AggregateFunction<T>>(self, agg: A) -> Stream<WindowResult<K, A::Out>>
    where
        K: Data,
    {
        self.build("window_aggregate", agg, || ToResult)
    }

    /// Combines records pairwise; emits one [`WindowResult`] per firing.
    pub fn reduce<F: Fn(T, T) -> T + Send + Sync + 'static>(
        self,
        f: F,
    ) -> Stream<WindowResult<K, T>>
    where
        K: Data,
        T: StateValue,
    {
        self.build("window_reduce", Reduce::new(f), || ToResult)
    }

    /// Calls `function` with all records of the window (in arrival order).
    /// Each subtask gets its own clone.
    pub fn process<O, P>(self, function: P) -> Stream<O>
    where
        O: Data,
        T: StateValue,
        P: ProcessWindowFunction<K, Vec<T>, O> + Clone,
    {
        self.build("window_process", CollectAll::new(), move || {
            function.clone()
        })
    }

    /// Aggregates incrementally, then calls `function` with the result and
    /// the window.
    pub fn aggregate_with<A, O, P>(self, agg: A, function: P) -> Stream<O>
    where
        A: AggregateFunction<T>,
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O> + Clone,
    {
        self.build("window_aggregate", agg, move || function.clone())
    }

    fn build<A, O, P>(self, name: &str, agg: A, function: impl Fn() -> P + 'static) -> Stream<O>
    where
        A: AggregateFunction<T>,
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let (kind, trigger, lateness, late_tag, live, describe) = (
            self.kind,
            self.trigger,
            self.lateness,
            self.late_tag,
            self.live,
            self.describe,
        );
        let check_kind = kind.clone();
        // Tumbling and sliding windows of exact aggregates under the
        // event-time trigger fold records where they are read (see `combine`).
        let panes = Grid::of(&kind, lateness);
        // In worker mode the exchange must cross workers, which the
        // combiner's partials (not serde) cannot.
        let combine = Tr::IS_EVENT_TIME
            && A::EXACT_MERGE
            && panes.is_some()
            && !self.keyed.input().worker_mode();
        // The window operator computes sliding windows from panes too.
        let sliding_panes = panes.filter(|_| matches!(kind, WindowKind::Sliding { .. }));
        let raw_key = self.keyed.key_selector();
        let combiner_agg = agg.clone();
        let make = move |ctx: &tideline_engine::OperatorContext,
                         key: tideline_engine::KeySelector<K, T>| {
            Ok::<_, Error>(WindowOperator {
                key,
                kind: kind.clone(),
                lateness,
                late_tag: late_tag.clone(),
                agg: agg.clone(),
                trigger: trigger.clone(),
                function: function(),
                state: ctx.keyed_state()?,
                event_timers: TimerService::new(),
                processing_timers: TimerService::new(),
                watermark: EventTime::MIN,
                processing_time: i64::MIN,
                live: LiveCount {
                    shared: Arc::clone(&live.0),
                    local: 0,
                    unpublished: 0,
                },
                grid: sliding_panes,
                rule: ctx.config.lateness_rule,
                describe: describe.clone(),
            })
        };
        let stream = match panes.filter(|_| combine) {
            Some(grid) => {
                let combiner_key = Arc::clone(&raw_key);
                let exchange_key = Arc::clone(&raw_key);
                self.keyed
                    .input()
                    .transform("window_combine", move |ctx| {
                        Ok(WindowCombiner::new(
                            Arc::clone(&combiner_key),
                            grid,
                            combiner_agg.clone(),
                            ctx.config.lateness_rule,
                        ))
                    })
                    .key_by_local(move |c: &Combined<K, T, A::Acc>| match c {
                        Combined::Raw(value) => exchange_key(value),
                        Combined::Partial { key, .. } => key.clone(),
                    })
                    .transform(name, move |ctx, _| {
                        Ok(CombinedWindowOperator(make(ctx, Arc::clone(&raw_key))?))
                    })
            }
            None => self.keyed.transform(name, move |ctx, key| make(ctx, key)),
        };
        stream
            .validate_with(move || {
                check_kind.validate()?;
                if lateness < 0 {
                    return Err(Error::config("window.allowed_lateness", format!("must not be negative, got {lateness} ms")));
                }
                if matches!(check_kind, WindowKind::Sliding { .. }) && !Tr::IS_EVENT_TIME {
                    return Err(Error::config(
                        "window.trigger",
                        "sliding windows are computed from shared panes and support only the event-time trigger; \
                         use tumbling windows for early or count triggers",
                    ));
                }
                Ok(())
            })
    }
}
