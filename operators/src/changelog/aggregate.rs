//! Aggregates over a changelog that retract: `count` and `sum` of orders
//! per status stay right when an order moves from `pending` to `paid`.
//!
//! [`AggregateChangelogExt::aggregate_changelog`] runs on a changelog keyed
//! by the group ([`ChangelogStreamExt::key_by_row`](super::ChangelogStreamExt::key_by_row)).
//! Per group it keeps one accumulator: `+I`/`+U` rows are
//! [added](RetractingAggregate::add), `-U`/`-D` rows
//! [retracted](RetractingAggregate::retract). After each row it compares
//! the group's result with the one before and emits the group's own
//! normalized changelog of `(group, result)` rows:
//!
//! | before | after | emitted |
//! |---|---|---|
//! | empty | `new` | `+I (k, new)` |
//! | `old` | `new != old` | `-U (k, old)`, `+U (k, new)` |
//! | `old` | `old` | nothing |
//! | `old` | empty ([`is_empty`](RetractingAggregate::is_empty)) | `-D (k, old)` |
//!
//! Invariants:
//! - the accumulator is keyed state (value state `changelog-aggregate`),
//!   checkpointed and restored with either backend; it is removed when the
//!   group becomes empty, so groups that come and go leave no state;
//! - results are exact when every retraction retracts a row that was added
//!   before it in the same group, which a normalized changelog (such as
//!   [`to_table`](super::ToTableExt::to_table)'s) keyed by a function of
//!   the row guarantees: the `-U` of a row that changes group carries the
//!   old row, so it reaches the old group, after the row's earlier
//!   addition (both come out of the subtask owning the row's primary key,
//!   in order);
//! - a retraction reaching a group that holds nothing cannot be right; it
//!   goes to the dead-letter output (or fails the job under
//!   `FailurePolicy::FailFast`) instead of making a count negative;
//! - integer sums are exact under any sequence of additions and
//!   retractions; floating-point sums accumulate rounding error, as
//!   retraction in any system does.
//!
//! Built-ins reuse the window aggregates' names: [`Count`], [`Sum`],
//! [`Avg`], and tuples of up to three aggregates computed together, e.g.
//! `(Count, Sum::of(|o: &Order| o.amount))`.

use std::ops::Sub;

use tideline_engine::{Data, KeyedStream, Result, Stream};
use tideline_state::{StateKey, StateValue, ValueStateDescriptor};

use super::{ChangelogRow, RowKind};
use crate::process::{process_named, KeyedProcessFunction, ProcessContext};
use crate::window::{Avg, Count, Numeric, Sum};

/// An aggregation that can take rows back: the aggregate of a changelog.
pub trait RetractingAggregate<T>: Clone + Send + Sync + 'static {
    /// The running state of one group (kept in keyed state, so it is
    /// checkpointed: it must be serde-serializable).
    type Acc: StateValue;
    /// What the aggregate emits per group.
    type Out: Data + PartialEq;

    /// An empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one row (`+I`, `+U`).
    fn add(&self, acc: &mut Self::Acc, row: &T);
    /// Takes back one row added before (`-U`, `-D`).
    fn retract(&self, acc: &mut Self::Acc, row: &T);
    /// The result of an accumulator.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
    /// Whether the accumulator holds no row (e.g. `count == 0`): the group
    /// is then deleted (`-D`) and its state removed.
    fn is_empty(&self, acc: &Self::Acc) -> bool;
}

/// Counts rows: `u64`.
impl<T> RetractingAggregate<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _row: &T) {
        *acc += 1;
    }
    fn retract(&self, acc: &mut u64, _row: &T) {
        *acc = acc.saturating_sub(1);
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn is_empty(&self, acc: &u64) -> bool {
        *acc == 0
    }
}

/// Sums a numeric field; the accumulator also counts rows, to know when the
/// group is empty (a sum of 0 is not an empty group).
impl<T: 'static, N: Numeric + Sub<Output = N> + PartialEq> RetractingAggregate<T> for Sum<T, N> {
    type Acc = (u64, N);
    type Out = N;
    fn create(&self) -> (u64, N) {
        (0, N::default())
    }
    fn add(&self, acc: &mut (u64, N), row: &T) {
        acc.0 += 1;
        acc.1 = acc.1.plus(self.extract(row));
    }
    fn retract(&self, acc: &mut (u64, N), row: &T) {
        acc.0 = acc.0.saturating_sub(1);
        acc.1 = acc.1.minus(self.extract(row));
    }
    fn result(&self, acc: &(u64, N)) -> N {
        acc.1
    }
    fn is_empty(&self, acc: &(u64, N)) -> bool {
        acc.0 == 0
    }
}

/// The mean of a numeric field, as `f64` (0 for an empty group, which is
/// never emitted).
impl<T: 'static, N: Numeric> RetractingAggregate<T> for Avg<T, N> {
    type Acc = (f64, u64);
    type Out = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), row: &T) {
        acc.0 += self.extract(row).as_f64();
        acc.1 += 1;
    }
    fn retract(&self, acc: &mut (f64, u64), row: &T) {
        acc.0 -= self.extract(row).as_f64();
        acc.1 = acc.1.saturating_sub(1);
    }
    fn result(&self, acc: &(f64, u64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0 / acc.1 as f64
        }
    }
    fn is_empty(&self, acc: &(f64, u64)) -> bool {
        acc.1 == 0
    }
}

macro_rules! tuple_retracting {
    ($($a:ident $i:tt),+) => {
        /// Several aggregates over the same rows, computed together; the
        /// group is empty when every one of them is.
        impl<T: 'static, $($a: RetractingAggregate<T>),+> RetractingAggregate<T> for ($($a,)+) {
            type Acc = ($($a::Acc,)+);
            type Out = ($($a::Out,)+);
            fn create(&self) -> Self::Acc {
                ($(self.$i.create(),)+)
            }
            fn add(&self, acc: &mut Self::Acc, row: &T) {
                $(self.$i.add(&mut acc.$i, row);)+
            }
            fn retract(&self, acc: &mut Self::Acc, row: &T) {
                $(self.$i.retract(&mut acc.$i, row);)+
            }
            fn result(&self, acc: &Self::Acc) -> Self::Out {
                ($(self.$i.result(&acc.$i),)+)
            }
            fn is_empty(&self, acc: &Self::Acc) -> bool {
                true $(&& self.$i.is_empty(&acc.$i))+
            }
        }
    };
}
tuple_retracting!(A 0, B 1);
tuple_retracting!(A 0, B 1, C 2);

/// Adds [`aggregate_changelog`](AggregateChangelogExt::aggregate_changelog)
/// to changelogs keyed by group.
pub trait AggregateChangelogExt<K, T> {
    /// Aggregates each group's rows with `aggregate`, retracting `-U`/`-D`
    /// rows, and emits the groups' results as a normalized changelog of
    /// `(group, result)` (see the [module docs](self)).
    ///
    /// ```
    /// use tideline_operators::changelog::{AggregateChangelogExt, ChangelogRow, ChangelogStreamExt};
    /// use tideline_operators::prelude::*;
    /// use tideline_operators::window::{Count, Sum};
    ///
    /// // (order id, status, amount)
    /// type Order = (u32, &'static str, i64);
    /// let job = Job::new().parallelism(1);
    /// let out = CollectSink::new();
    /// job.source(
    ///     VecSource::new(vec![
    ///         ChangelogRow::insert((1, "pending", 30)),
    ///         ChangelogRow::insert((2, "pending", 5)),
    ///         ChangelogRow::delete((2, "pending", 5)),
    ///     ]),
    ///     WatermarkStrategy::none(),
    /// )
    /// .key_by_row(|o: &Order| o.1.to_string())
    /// .aggregate_changelog((Count, Sum::of(|o: &Order| o.2)))
    /// .sink(out.clone());
    /// job.run()?;
    /// assert_eq!(
    ///     out.values(),
    ///     vec![
    ///         ChangelogRow::insert(("pending".to_string(), (1, 30))),
    ///         ChangelogRow::update_before(("pending".to_string(), (1, 30))),
    ///         ChangelogRow::update_after(("pending".to_string(), (2, 35))),
    ///         ChangelogRow::update_before(("pending".to_string(), (2, 35))),
    ///         ChangelogRow::update_after(("pending".to_string(), (1, 30))),
    ///     ]
    /// );
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    fn aggregate_changelog<A>(&self, aggregate: A) -> Stream<ChangelogRow<(K, A::Out)>>
    where
        A: RetractingAggregate<T>;
}

impl<K, T> AggregateChangelogExt<K, T> for KeyedStream<K, ChangelogRow<T>>
where
    K: StateKey,
    T: Data,
{
    fn aggregate_changelog<A>(&self, aggregate: A) -> Stream<ChangelogRow<(K, A::Out)>>
    where
        A: RetractingAggregate<T>,
    {
        process_named(self, "aggregate_changelog", AggregateChangelog(aggregate))
    }
}

fn acc_state<Acc>() -> ValueStateDescriptor<Acc> {
    ValueStateDescriptor::new("changelog-aggregate")
}

/// The process function behind [`AggregateChangelogExt::aggregate_changelog`].
#[derive(Clone, Debug)]
struct AggregateChangelog<A>(A);

impl<K, T, A> KeyedProcessFunction<K, ChangelogRow<T>, ChangelogRow<(K, A::Out)>>
    for AggregateChangelog<A>
where
    K: StateKey,
    T: Data,
    A: RetractingAggregate<T>,
{
    fn process_element(
        &mut self,
        row: ChangelogRow<T>,
        ctx: &mut ProcessContext<'_, K, ChangelogRow<(K, A::Out)>>,
    ) -> Result<()> {
        let agg = &self.0;
        let (old, new) = {
            let mut state = ctx.value_state(&acc_state::<A::Acc>())?;
            if state.get().is_none() && !row.kind.is_addition() {
                return ctx.dead_letter_text(
                    "a retraction for a group that holds no row (the changelog is not \
                     normalized, or its rows of one key arrive out of order)",
                    format!("{} row", row.kind),
                );
            }
            let acc = state.get_or_insert_with(|| agg.create());
            let old = (!agg.is_empty(acc)).then(|| agg.result(acc));
            match row.kind {
                RowKind::Insert | RowKind::UpdateAfter => agg.add(acc, &row.row),
                RowKind::UpdateBefore | RowKind::Delete => agg.retract(acc, &row.row),
            }
            let new = if agg.is_empty(acc) {
                state.take();
                None
            } else {
                Some(agg.result(acc))
            };
            (old, new)
        };
        let key = ctx.key().clone();
        match (old, new) {
            (None, Some(new)) => ctx.collect(ChangelogRow::insert((key, new))),
            (Some(old), Some(new)) if old != new => {
                ctx.collect(ChangelogRow::update_before((key.clone(), old)));
                ctx.collect(ChangelogRow::update_after((key, new)));
            }
            (Some(old), None) => ctx.collect(ChangelogRow::delete((key, old))),
            _ => {}
        }
        Ok(())
    }
}
