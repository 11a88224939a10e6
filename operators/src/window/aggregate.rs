//! Incremental aggregation: a window keeps one accumulator, records are added
//! as they arrive, and sliding windows and sessions combine accumulators with
//! `merge`. Built-ins: [`Count`], [`Sum`], [`Min`], [`Max`], [`Avg`], tuples
//! of aggregates, and the ones behind `reduce` and `process`.

use std::marker::PhantomData;
use std::ops::Add;
use std::sync::Arc;

use tideline_engine::Data;

/// An incremental aggregation over records `T`.
pub trait AggregateFunction<T>: Clone + Send + Sync + 'static {
    /// The running state of one window (kept in keyed state, so it is
    /// checkpointed: it must be serde-serializable).
    type Acc: tideline_state::StateValue;
    /// What the window emits.
    type Out: Data;

    /// An empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, value: T);
    /// Adds another accumulator's contents (panes of sliding windows, merged sessions).
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    /// The result of an accumulator.
    fn result(&self, acc: Self::Acc) -> Self::Out;

    /// Whether merging accumulators gives exactly what adding the same
    /// records one by one gives, however they are grouped: true for integer
    /// counts, sums, minima and maxima; false for float sums (rounding
    /// depends on the order) and order-keeping lists. Tumbling window
    /// aggregations of such functions pre-aggregate before the keyed
    /// exchange (see the window module); others send every record.
    const EXACT_MERGE: bool = false;
}

/// Numbers the built-in aggregates work on.
pub trait Numeric:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Default
    + Send
    + Sync
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
    /// As a float, for averages.
    fn as_f64(self) -> f64;

    /// Whether [`Numeric::plus`] and comparisons give the same result in
    /// any order (integers, whose sums wrap; not floats, which round and
    /// have NaN).
    const EXACT: bool = false;

    /// The sum [`Sum`] accumulates with: `+` unless the type says
    /// otherwise. Integers wrap on overflow (two's complement), in debug
    /// and release builds alike, as Java's `long` does in Flink and Kafka
    /// Streams: wrapping addition is associative, so a sum is the same
    /// however its records were grouped (pre-aggregated, in panes, in
    /// merged sessions), where a checked or panicking `+` would fail for
    /// some groupings and not others.
    fn plus(self, other: Self) -> Self {
        self + other
    }

    /// The difference a retracting sum takes back with: `-` unless the
    /// type says otherwise (integers wrap, as [`Numeric::plus`] does).
    fn minus(self, other: Self) -> Self
    where
        Self: std::ops::Sub<Output = Self>,
    {
        self - other
    }
}

macro_rules! numeric {
    (integers: $($t:ty),*) => {$(
        impl Numeric for $t {
            const EXACT: bool = true;
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn plus(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn minus(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
        }
    )*};
    (floats: $($t:ty),*) => {$(
        impl Numeric for $t {
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
numeric!(integers: i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
numeric!(floats: f32, f64);

/// Counts records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    const EXACT_MERGE: bool = true;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _value: T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: &u64) {
        *acc += other;
    }
    fn result(&self, acc: u64) -> u64 {
        acc
    }
}

/// A field extractor shared by the numeric aggregates.
pub(crate) struct Field<T, N>(Arc<dyn Fn(&T) -> N + Send + Sync>);

impl<T, N> Clone for Field<T, N> {
    fn clone(&self) -> Self {
        Field(Arc::clone(&self.0))
    }
}

impl<T, N> std::fmt::Debug for Field<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Field")
    }
}

macro_rules! field_aggregate {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T, N>(Field<T, N>);

        impl<T, N> Clone for $name<T, N> {
            fn clone(&self) -> Self {
                $name(self.0.clone())
            }
        }

        impl<T, N> $name<T, N> {
            /// Over the number `f` extracts from each record.
            pub fn of(f: impl Fn(&T) -> N + Send + Sync + 'static) -> Self {
                $name(Field(Arc::new(f)))
            }

            /// The number of `value` this aggregate is over.
            // Min and Max have no retracting form (yet).
            #[allow(dead_code)]
            pub(crate) fn extract(&self, value: &T) -> N {
                (self.0 .0)(value)
            }
        }
    };
}

field_aggregate!(
    /// Sums a numeric field.
    Sum
);
field_aggregate!(
    /// The smallest value of a numeric field.
    Min
);
field_aggregate!(
    /// The largest value of a numeric field.
    Max
);
field_aggregate!(
    /// The mean of a numeric field, as `f64`.
    Avg
);

impl<T: 'static, N: Numeric> AggregateFunction<T> for Sum<T, N> {
    type Acc = N;
    type Out = N;
    const EXACT_MERGE: bool = N::EXACT;
    fn create(&self) -> N {
        N::default()
    }
    fn add(&self, acc: &mut N, value: T) {
        *acc = acc.plus((self.0 .0)(&value));
    }
    fn merge(&self, acc: &mut N, other: &N) {
        *acc = acc.plus(*other);
    }
    fn result(&self, acc: N) -> N {
        acc
    }
}

fn pick<N: Numeric>(a: Option<N>, b: N, smaller: bool) -> Option<N> {
    match a {
        Some(a) if (b < a) == smaller && b != a => Some(b),
        Some(a) => Some(a),
        None => Some(b),
    }
}

macro_rules! extreme {
    ($name:ident, $smaller:expr) => {
        impl<T: 'static, N: Numeric> AggregateFunction<T> for $name<T, N> {
            type Acc = Option<N>;
            type Out = N;
            const EXACT_MERGE: bool = N::EXACT;
            fn create(&self) -> Option<N> {
                None
            }
            fn add(&self, acc: &mut Option<N>, value: T) {
                *acc = pick(*acc, (self.0 .0)(&value), $smaller);
            }
            fn merge(&self, acc: &mut Option<N>, other: &Option<N>) {
                if let Some(o) = other {
                    *acc = pick(*acc, *o, $smaller);
                }
            }
            /// An empty window (which never fires) would give `N::default()`.
            fn result(&self, acc: Option<N>) -> N {
                acc.unwrap_or_default()
            }
        }
    };
}
extreme!(Min, true);
extreme!(Max, false);

impl<T: 'static, N: Numeric> AggregateFunction<T> for Avg<T, N> {
    type Acc = (f64, u64);
    type Out = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), value: T) {
        acc.0 += (self.0 .0)(&value).as_f64();
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (f64, u64), other: &(f64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: (f64, u64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0 / acc.1 as f64
        }
    }
}

macro_rules! tuple_aggregate {
    ($($a:ident $i:tt),+) => {
        /// Several aggregates over the same records, computed together.
        impl<T: Clone + 'static, $($a: AggregateFunction<T>),+> AggregateFunction<T> for ($($a,)+) {
            type Acc = ($($a::Acc,)+);
            type Out = ($($a::Out,)+);
            const EXACT_MERGE: bool = $($a::EXACT_MERGE)&&+;
            fn create(&self) -> Self::Acc {
                ($(self.$i.create(),)+)
            }
            fn add(&self, acc: &mut Self::Acc, value: T) {
                $(self.$i.add(&mut acc.$i, value.clone());)+
            }
            fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
                $(self.$i.merge(&mut acc.$i, &other.$i);)+
            }
            fn result(&self, acc: Self::Acc) -> Self::Out {
                ($(self.$i.result(acc.$i),)+)
            }
        }
    };
}
tuple_aggregate!(A 0, B 1);
tuple_aggregate!(A 0, B 1, C 2);
tuple_aggregate!(A 0, B 1, C 2, D 3);
tuple_aggregate!(A 0, B 1, C 2, D 3, E 4);

/// `reduce`: combines records pairwise into one of the same type.
pub struct Reduce<T, F> {
    f: Arc<F>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T, F> Clone for Reduce<T, F> {
    fn clone(&self) -> Self {
        Self {
            f: Arc::clone(&self.f),
            _t: PhantomData,
        }
    }
}

impl<T, F> std::fmt::Debug for Reduce<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reduce")
    }
}

impl<T, F> Reduce<T, F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f: Arc::new(f),
            _t: PhantomData,
        }
    }
}

impl<T: Data + tideline_state::StateValue, F: Fn(T, T) -> T + Send + Sync + 'static>
    AggregateFunction<T> for Reduce<T, F>
{
    type Acc = Option<T>;
    type Out = T;
    fn create(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, value: T) {
        *acc = Some(match acc.take() {
            Some(a) => (self.f)(a, value),
            None => value,
        });
    }
    fn merge(&self, acc: &mut Option<T>, other: &Option<T>) {
        if let Some(o) = other {
            self.add(acc, o.clone());
        }
    }
    fn result(&self, acc: Option<T>) -> T {
        // Windows fire only with at least one record, so `acc` is `Some`.
        acc.unwrap_or_else(|| unreachable_empty())
    }
}

#[cold]
fn unreachable_empty<T>() -> T {
    // A window is created by its first record; an accumulator without one
    // cannot reach `result`. Reaching this is a bug in the window operator.
    panic!("internal error: reduce window fired without records")
}

/// `process`: keeps every record of the window, in arrival order.
pub struct CollectAll<T>(PhantomData<fn(T) -> T>);

impl<T> Clone for CollectAll<T> {
    fn clone(&self) -> Self {
        CollectAll(PhantomData)
    }
}

impl<T> std::fmt::Debug for CollectAll<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollectAll")
    }
}

impl<T> CollectAll<T> {
    pub(crate) fn new() -> Self {
        CollectAll(PhantomData)
    }
}

impl<T: Data + tideline_state::StateValue> AggregateFunction<T> for CollectAll<T> {
    type Acc = Vec<T>;
    type Out = Vec<T>;
    fn create(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, value: T) {
        acc.push(value);
    }
    fn merge(&self, acc: &mut Vec<T>, other: &Vec<T>) {
        acc.extend(other.iter().cloned());
    }
    fn result(&self, acc: Vec<T>) -> Vec<T> {
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_of_builtins() {
        let agg = (
            Count,
            Sum::of(|v: &i64| *v),
            Min::of(|v: &i64| *v),
            Max::of(|v: &i64| *v),
            Avg::of(|v: &i64| *v),
        );
        let mut a = agg.create();
        for v in [5, -3, 7] {
            agg.add(&mut a, v);
        }
        let mut b = agg.create();
        agg.add(&mut b, 10);
        agg.merge(&mut a, &b);
        assert_eq!(agg.result(a), (4, 19, -3, 10, 4.75));
    }

    /// Sums wrap, in debug builds too, so every grouping of the same
    /// records gives the same sum (and none panics).
    #[test]
    fn integer_sums_wrap_the_same_however_grouped() {
        let sum = Sum::of(|v: &i64| *v);
        let values = [i64::MAX, 1, -1, i64::MIN, -1];
        let mut one_by_one = sum.create();
        for v in values {
            sum.add(&mut one_by_one, v);
        }
        // The same records folded as two partials, merged.
        let (mut first, mut second) = (sum.create(), sum.create());
        for v in &values[..2] {
            sum.add(&mut first, *v);
        }
        for v in &values[2..] {
            sum.add(&mut second, *v);
        }
        sum.merge(&mut first, &second);
        let expected = values.iter().fold(0i64, |a, v| a.wrapping_add(*v));
        assert_eq!(
            (sum.result(one_by_one), sum.result(first)),
            (expected, expected)
        );
        assert_eq!(u8::MAX.plus(1), 0);
        assert_eq!(0u8.minus(1), u8::MAX);
        assert_eq!(1.5f64.plus(2.0), 3.5);
    }

    #[test]
    fn reduce_and_collect() {
        let r = Reduce::new(|a: u32, b: u32| a.max(b));
        let mut acc = r.create();
        r.add(&mut acc, 3);
        r.add(&mut acc, 9);
        r.merge(&mut acc, &Some(4));
        assert_eq!(r.result(acc), 9);
        let c = CollectAll::<char>::new();
        let mut acc = c.create();
        c.add(&mut acc, 'a');
        c.merge(&mut acc, &vec!['b']);
        assert_eq!(c.result(acc), vec!['a', 'b']);
    }
}
