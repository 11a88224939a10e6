//! Joins of two keyed streams on event time.
//!
//! Both joins run on the union of the two inputs, each record tagged
//! [`Either::Left`] or [`Either::Right`] and keyed by its side's key.
//!
//! - **Window join** ([`JoinExt::window_join`]): the pairs of left and right
//!   records with the same key in the same window, emitted when the window
//!   fires (timestamp `window.max_timestamp`). It is a window `process`, so
//!   its state is freed when windows are cleaned up, and records late for all
//!   their windows go to the window's late output.
//! - **Interval join** ([`JoinExt::interval_join`]): every pair with the same
//!   key and `right.ts ∈ [left.ts + lower, left.ts + upper]`, emitted as soon
//!   as the second of the two arrives, at `max(left.ts, right.ts)`. A left
//!   record is kept until the watermark reaches `ts + upper`, a right one
//!   until `ts - lower`; after that no future partner can arrive. A record
//!   with `ts <= watermark` breaks the watermark's promise and goes to the
//!   late output (Flink drops it).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use tideline_engine::time::{LateReason, LatenessRule, TimerService};
use tideline_engine::{
    Data, Error, EventTime, KeySelector, KeyedStream, Operator, Output, OutputTag, Record,
    RestoreContext, Result, SnapshotWriter, Stream,
};
use tideline_state::{KeyedState, StateKey, StateValue, ValueStateDescriptor};

use crate::stateless::StreamExt;
use crate::window::{Span, WindowCollector, WindowExt, WindowInfo, WindowKind, WindowedStream};

/// A record of one of two inputs.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Either<A, B> {
    /// From the left (first) input.
    Left(A),
    /// From the right (second) input.
    Right(B),
}

/// Joins on keyed streams.
pub trait JoinExt<K, A> {
    /// Pairs records of `self` and `other` with equal keys in the same window.
    fn window_join<B: Data>(
        &self,
        other: &KeyedStream<K, B>,
        windows: impl Into<WindowKind<Either<A, B>>>,
    ) -> WindowJoin<K, A, B>;

    /// Pairs records with equal keys and `other.ts ∈ [self.ts + lower, self.ts + upper]`.
    fn interval_join<B: Data>(
        &self,
        other: &KeyedStream<K, B>,
        lower: impl Into<Span>,
        upper: impl Into<Span>,
    ) -> IntervalJoin<K, A, B>;
}

pub(crate) fn tagged_union<K, A, B>(
    left: &KeyedStream<K, A>,
    right: &KeyedStream<K, B>,
) -> KeyedStream<K, Either<A, B>>
where
    K: Hash + serde::Serialize + Eq + Clone + Send + 'static,
    A: Data,
    B: Data,
{
    let (kl, kr) = (left.key_selector(), right.key_selector());
    let l = left.input().map(Either::<A, B>::Left);
    let r = right.input().map(Either::<A, B>::Right);
    l.union(&r).key_by_local(move |e| match e {
        Either::Left(a) => kl(a),
        Either::Right(b) => kr(b),
    })
}

impl<K, A> JoinExt<K, A> for KeyedStream<K, A>
where
    K: Hash + serde::Serialize + Eq + Clone + Send + 'static,
    A: Data,
{
    fn window_join<B: Data>(
        &self,
        other: &KeyedStream<K, B>,
        windows: impl Into<WindowKind<Either<A, B>>>,
    ) -> WindowJoin<K, A, B> {
        WindowJoin {
            windowed: tagged_union(self, other).window(windows),
        }
    }

    fn interval_join<B: Data>(
        &self,
        other: &KeyedStream<K, B>,
        lower: impl Into<Span>,
        upper: impl Into<Span>,
    ) -> IntervalJoin<K, A, B> {
        IntervalJoin {
            input: tagged_union(self, other),
            lower: lower.into().as_millis(),
            upper: upper.into().as_millis(),
            late_tag: None,
        }
    }
}

/// A window join being configured; finish it with [`WindowJoin::apply`].
#[derive(Debug)]
pub struct WindowJoin<K, A, B> {
    windowed: WindowedStream<K, Either<A, B>>,
}

impl<K, A, B> WindowJoin<K, A, B>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
{
    /// See `WindowedStream::allowed_lateness` (a late firing emits the window's pairs again).
    pub fn allowed_lateness(self, lateness: impl Into<Span>) -> Self {
        Self {
            windowed: self.windowed.allowed_lateness(lateness),
        }
    }

    /// Records of either side late for all their windows go to `tag`.
    pub fn side_output_late_data(self, tag: &OutputTag<Either<A, B>>) -> Self {
        Self {
            windowed: self.windowed.side_output_late_data(tag),
        }
    }

    /// Emits `f(left, right)` for every pair in each window, left records in
    /// arrival order, then right records in arrival order.
    pub fn apply<O: Data, F: Fn(&A, &B) -> O + Send + Sync + 'static>(self, f: F) -> Stream<O> {
        let f = Arc::new(f);
        self.windowed.process(
            move |_key: &K,
                  _info: &WindowInfo,
                  items: Vec<Either<A, B>>,
                  out: &mut WindowCollector<'_, O>| {
                let (mut lefts, mut rights) = (Vec::new(), Vec::new());
                for item in &items {
                    match item {
                        Either::Left(a) => lefts.push(a),
                        Either::Right(b) => rights.push(b),
                    }
                }
                for a in &lefts {
                    for b in &rights {
                        out.collect(f(a, b));
                    }
                }
                Ok(())
            },
        )
    }

    /// Emits the pairs themselves.
    pub fn pairs(self) -> Stream<(A, B)> {
        self.apply(|a, b| (a.clone(), b.clone()))
    }
}

/// An interval join being configured; finish it with [`IntervalJoin::apply`].
#[derive(Debug)]
pub struct IntervalJoin<K, A, B> {
    input: KeyedStream<K, Either<A, B>>,
    lower: i64,
    upper: i64,
    late_tag: Option<OutputTag<Either<A, B>>>,
}

impl<K, A, B> IntervalJoin<K, A, B>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
{
    /// Records of either side behind the watermark go to `tag`.
    pub fn side_output_late_data(mut self, tag: &OutputTag<Either<A, B>>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// Emits `f(left, right)` for every matching pair.
    pub fn apply<O: Data, F: Fn(&A, &B) -> O + Send + Sync + 'static>(self, f: F) -> Stream<O> {
        let (lower, upper, late_tag) = (self.lower, self.upper, self.late_tag);
        let f = Arc::new(f);
        self.input
            .transform("interval_join", move |ctx, key| {
                Ok(IntervalJoinOperator {
                    key,
                    lower,
                    upper,
                    f: Arc::clone(&f),
                    late_tag: late_tag.clone(),
                    state: ctx.keyed_state()?,
                    timers: TimerService::new(),
                    watermark: EventTime::MIN,
                    rule: ctx.config.lateness_rule,
                })
            })
            .validate_with(move || {
                if lower > upper {
                    return Err(Error::config(
                        "interval_join.lower",
                        format!(
                            "lower bound ({lower} ms) must not exceed the upper bound ({upper} ms)"
                        ),
                    ));
                }
                Ok(())
            })
    }

    /// Emits the pairs themselves.
    pub fn pairs(self) -> Stream<(A, B)> {
        self.apply(|a, b| (a.clone(), b.clone()))
    }
}

/// Buffered records by timestamp, each with its lateness watermark: a match
/// carries the larger of its two records' (whichever arrived second), so
/// downstream lateness does not depend on their arrival order.
type Buffer<V> = BTreeMap<i64, Vec<(V, EventTime)>>;
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

fn left_buffer<A>() -> ValueStateDescriptor<Buffer<A>> {
    ValueStateDescriptor::new("interval-join-left")
}

fn right_buffer<B>() -> ValueStateDescriptor<Buffer<B>> {
    ValueStateDescriptor::new("interval-join-right")
}

struct IntervalJoinOperator<K, A, B, F> {
    key: KeySelector<K, Either<A, B>>,
    lower: i64,
    upper: i64,
    f: Arc<F>,
    late_tag: Option<OutputTag<Either<A, B>>>,
    state: KeyedState<K>,
    timers: TimerService<K, u8>,
    watermark: EventTime,
    rule: LatenessRule,
}

/// Emits a match for every buffered partner with timestamp in `[from, to]`.
fn probe<P: Clone, R>(
    buffer: Option<&Buffer<P>>,
    from: i64,
    to: i64,
    mut emit: impl FnMut(i64, &P, EventTime) -> R,
) {
    if let Some(buffer) = buffer {
        if from <= to {
            for (ts, items) in buffer.range(from..=to) {
                for (item, mark) in items {
                    emit(*ts, item, *mark);
                }
            }
        }
    }
}

impl<K, A, B, O, F> Operator<Either<A, B>, O> for IntervalJoinOperator<K, A, B, F>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
    O: Data,
    F: Fn(&A, &B) -> O + Send + Sync + 'static,
{
    fn process_batch(
        &mut self,
        batch: Vec<Record<Either<A, B>>>,
        out: &mut Output<O>,
    ) -> Result<()> {
        for record in batch {
            let Record {
                timestamp,
                lateness_watermark: mark,
                ..
            } = record;
            let judge = self.rule.judge(mark, self.watermark);
            if !timestamp.is_set() || timestamp <= judge {
                out.count_late_for(late_reason(self.rule, mark, timestamp), 1);
                if let Some(tag) = &self.late_tag {
                    out.push_to(tag, record);
                }
                continue;
            }
            let value = record.value;
            let key = (self.key)(&value);
            let ts = timestamp.millis();
            let f = &self.f;
            match value {
                Either::Left(a) => {
                    let partners = self.state.value(&right_buffer::<B>(), &key, &())?;
                    probe(
                        partners.get(),
                        ts.saturating_add(self.lower),
                        ts.saturating_add(self.upper),
                        |bts, b, b_mark| {
                            let at = EventTime::from_millis(ts.max(bts));
                            let joined = Record::new(at, f(&a, b));
                            out.push(joined.with_lateness_watermark(mark.max(b_mark)))
                        },
                    );
                    self.state
                        .value(&left_buffer::<A>(), &key, &())?
                        .get_or_insert_with(Buffer::new)
                        .entry(ts)
                        .or_default()
                        .push((a, mark));
                    self.timers.register(
                        &key,
                        &LEFT,
                        EventTime::from_millis(ts.saturating_add(self.upper)),
                    );
                }
                Either::Right(b) => {
                    let partners = self.state.value(&left_buffer::<A>(), &key, &())?;
                    probe(
                        partners.get(),
                        ts.saturating_sub(self.upper),
                        ts.saturating_sub(self.lower),
                        |ats, a, a_mark| {
                            let at = EventTime::from_millis(ts.max(ats));
                            let joined = Record::new(at, f(a, &b));
                            out.push(joined.with_lateness_watermark(mark.max(a_mark)))
                        },
                    );
                    self.state
                        .value(&right_buffer::<B>(), &key, &())?
                        .get_or_insert_with(Buffer::new)
                        .entry(ts)
                        .or_default()
                        .push((b, mark));
                    self.timers.register(
                        &key,
                        &RIGHT,
                        EventTime::from_millis(ts.saturating_sub(self.lower)),
                    );
                }
            }
        }
        Ok(())
    }

    fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
        crate::keyed_snapshot::snapshot_keyed(&mut self.state, &[&self.timers], snapshot)
    }

    fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
        crate::keyed_snapshot::restore_keyed(&mut self.state, &mut [&mut self.timers], restore)
    }

    fn state_size(&mut self) -> Option<tideline_engine::StateSize> {
        Some(self.state.size().into())
    }

    fn on_watermark(&mut self, watermark: EventTime, _out: &mut Output<O>) -> Result<()> {
        let watermark = watermark.max(self.watermark);
        self.watermark = watermark;
        while let Some((at, key, side)) = self.timers.pop_due(watermark) {
            // Drop entries whose expiry (ts + upper, or ts - lower) is <= `at`.
            if side == LEFT {
                let mut buffer = self.state.value(&left_buffer::<A>(), &key, &())?;
                let last = at.millis().saturating_sub(self.upper);
                if let Some(b) = buffer.get_mut() {
                    *b = b.split_off(&last.saturating_add(1));
                    if b.is_empty() {
                        buffer.take();
                    }
                }
            } else {
                let mut buffer = self.state.value(&right_buffer::<B>(), &key, &())?;
                let last = at.millis().saturating_add(self.lower);
                if let Some(b) = buffer.get_mut() {
                    *b = b.split_off(&last.saturating_add(1));
                    if b.is_empty() {
                        buffer.take();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a join's record at `timestamp` with lateness watermark `mark` is
/// late: a record without a timestamp can only be behind the operator's
/// watermark.
pub(crate) fn late_reason(rule: LatenessRule, mark: EventTime, timestamp: EventTime) -> LateReason {
    if timestamp.is_set() {
        rule.reason(mark, timestamp)
    } else {
        LateReason::OperatorWatermark
    }
}
