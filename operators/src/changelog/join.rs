//! Stream–table joins: each record of a keyed stream, enriched with the row
//! its key has in a table given as a changelog (the current row of a
//! CDC'd table, [`to_table`](super::ToTableExt::to_table)'s output).
//!
//! Both inputs are keyed by the same key; the table side is kept as keyed
//! state, the latest row per key (`+I`/`+U` replace it, `-U`/`-D` remove
//! it). Each stream record `a` emits `f(&a, row)`: with
//! [`TableJoin::left`] for every `a` (the row `None` when the key has
//! none), with [`TableJoin::inner`] only when there is a row.
//!
//! # Time semantics
//!
//! **Event time (the default): `a` at time `t` sees the table as of `t`**,
//! every change with timestamp `<= t` applied, in timestamp order (changes
//! of one key with the same timestamp in arrival order), none after. The
//! operator buffers stream records until the watermark reaches their
//! timestamp, and table changes until the watermark reaches theirs, then
//! applies them key by key in timestamp order, changes before records of
//! the same timestamp. The result of each record depends only on the record
//! and on the changes of its key — not on how fast either input was read —
//! so it is the same live and in a replay, at any parallelism, and after a
//! restore (buffers, rows and timers are keyed state and timers,
//! checkpointed). This is Flink's event-time temporal join, which
//! DESIGN.md's determinism asks for; the cost is latency (a record waits
//! for the watermark, as a window does) and buffers of what waits.
//! Outputs carry the stream record's timestamp and lateness watermark.
//!
//! Records behind the watermark, judged as everywhere by the job's
//! lateness rule (by default the record's own source partition's
//! watermark, so the same records are late in every run):
//! - a stream record at `t` at or behind that watermark cannot see the
//!   table as of `t` any more: it is counted as late and goes to the late side output
//!   ([`TableJoin::side_output_late_data`]) if there is one, as with the
//!   interval join; records without a timestamp are late too;
//! - a table change at `t <= w` (its partition's watermark `w`) takes
//!   effect at `w + 1`, the earliest time that is still ahead of the
//!   operator: records up to `w` never see it, records after `w` do, in
//!   every run.
//!
//! **Processing order ([`TableJoin::processing_order`]): `a` sees the row
//! as it is when `a` arrives**, like Kafka Streams' KStream–KTable join.
//! Nothing is buffered and nothing is late, records without timestamps
//! join too, and output is immediate; but which version of a row a record
//! sees depends on how the two inputs interleave, which differs between
//! runs, between live and replay, and after a restore. Use it for tables
//! that change rarely compared with the stream, or streams without event
//! time.

use std::collections::BTreeMap;
use std::sync::Arc;

use tideline_engine::time::{LatenessRule, TimerService};
use tideline_engine::{
    Data, EventTime, KeySelector, KeyedStream, Operator, Output, OutputTag, Record, RestoreContext,
    Result, SnapshotWriter, Stream,
};
use tideline_state::{KeyedState, StateKey, StateValue, ValueStateDescriptor};

use super::{ChangelogRow, RowKind};
use crate::join::{late_reason, tagged_union, Either};

/// Adds [`join_table`](TableJoinExt::join_table) to keyed streams.
pub trait TableJoinExt<K, A> {
    /// Joins each record with the row of its key in `table` (a changelog
    /// keyed by the same key); finish with [`TableJoin::left`] or
    /// [`TableJoin::inner`]. See the [module docs](self) for the time
    /// semantics.
    ///
    /// ```
    /// use tideline_operators::changelog::{ChangelogRow, TableJoinExt};
    /// use tideline_operators::prelude::*;
    ///
    /// let job = Job::new().parallelism(1);
    /// // (user, name) rows, and (user, page) clicks.
    /// let users = job
    ///     .source(
    ///         VecSource::timestamped(vec![
    ///             (10, ChangelogRow::insert((1, "ada".to_string()))),
    ///             (20, ChangelogRow::update_before((1, "ada".to_string()))),
    ///             (20, ChangelogRow::update_after((1, "ada l.".to_string()))),
    ///         ]),
    ///         WatermarkStrategy::monotonous(),
    ///     )
    ///     .key_by(|r: &ChangelogRow<(u32, String)>| r.row.0);
    /// let clicks = job
    ///     .source(
    ///         VecSource::timestamped(vec![(5, (1, "/")), (15, (1, "/a")), (25, (1, "/b"))]),
    ///         WatermarkStrategy::monotonous(),
    ///     )
    ///     .map(|(user, page): (u32, &str)| (user, page.to_string()))
    ///     .key_by(|c: &(u32, String)| c.0);
    /// let out = CollectSink::new();
    /// clicks
    ///     .join_table(&users)
    ///     .left(|c: &(u32, String), user: Option<&(u32, String)>| {
    ///         (c.1.clone(), user.map(|u| u.1.clone()))
    ///     })
    ///     .sink(out.clone());
    /// job.run()?;
    /// assert_eq!(
    ///     out.values(),
    ///     vec![
    ///         ("/".to_string(), None),
    ///         ("/a".to_string(), Some("ada".to_string())),
    ///         ("/b".to_string(), Some("ada l.".to_string())),
    ///     ]
    /// );
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    fn join_table<B: Data + StateValue>(
        &self,
        table: &KeyedStream<K, ChangelogRow<B>>,
    ) -> TableJoin<K, A, B>;
}

impl<K, A> TableJoinExt<K, A> for KeyedStream<K, A>
where
    K: StateKey,
    A: Data + StateValue,
{
    fn join_table<B: Data + StateValue>(
        &self,
        table: &KeyedStream<K, ChangelogRow<B>>,
    ) -> TableJoin<K, A, B> {
        TableJoin {
            input: tagged_union(self, table),
            processing_order: false,
            late_tag: None,
        }
    }
}

/// A stream–table join being configured; finish it with
/// [`TableJoin::left`] or [`TableJoin::inner`].
#[derive(Debug)]
pub struct TableJoin<K, A, B> {
    input: KeyedStream<K, Either<A, ChangelogRow<B>>>,
    processing_order: bool,
    late_tag: Option<OutputTag<A>>,
}

impl<K, A, B> TableJoin<K, A, B>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
{
    /// Joins each record with the row as it is when the record arrives,
    /// without waiting for the watermark (see the [module docs](self):
    /// not deterministic).
    pub fn processing_order(mut self) -> Self {
        self.processing_order = true;
        self
    }

    /// Stream records behind the watermark (event-time joins only) go to
    /// `tag`; without it they are only counted as late.
    pub fn side_output_late_data(mut self, tag: &OutputTag<A>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// A left join: `f(&a, Some(&row))`, or `f(&a, None)` when the key has
    /// no row, for every record `a`.
    pub fn left<O, F>(self, f: F) -> Stream<O>
    where
        O: Data,
        F: Fn(&A, Option<&B>) -> O + Send + Sync + 'static,
    {
        self.build("table_join", move |a, b| Some(f(a, b)))
    }

    /// An inner join: `f(&a, &row)` for every record `a` whose key has a
    /// row; records without one emit nothing.
    pub fn inner<O, F>(self, f: F) -> Stream<O>
    where
        O: Data,
        F: Fn(&A, &B) -> O + Send + Sync + 'static,
    {
        self.build("table_join", move |a, b| b.map(|b| f(a, b)))
    }

    fn build<O, F>(self, name: &str, f: F) -> Stream<O>
    where
        O: Data,
        F: Fn(&A, Option<&B>) -> Option<O> + Send + Sync + 'static,
    {
        let (processing_order, late_tag) = (self.processing_order, self.late_tag);
        let f: Arc<JoinFn<A, B, O>> = Arc::new(f);
        self.input.transform(name, move |ctx, key| {
            Ok(TableJoinOperator {
                key,
                f: Arc::clone(&f),
                processing_order,
                late_tag: late_tag.clone(),
                state: ctx.keyed_state()?,
                timers: TimerService::new(),
                watermark: EventTime::MIN,
                rule: ctx.config.lateness_rule,
            })
        })
    }
}

/// The table's row of each key (as of the last time applied).
fn row_state<B>() -> ValueStateDescriptor<B> {
    ValueStateDescriptor::new("table-join-row")
}

/// Table changes waiting for the watermark, by the time they take effect.
type Changes<B> = BTreeMap<i64, Vec<ChangelogRow<B>>>;

fn changes_state<B>() -> ValueStateDescriptor<Changes<B>> {
    ValueStateDescriptor::new("table-join-changes")
}

/// Stream records waiting for the watermark, by timestamp, each with its
/// lateness watermark.
type Lookups<A> = BTreeMap<i64, Vec<(A, EventTime)>>;

fn lookups_state<A>() -> ValueStateDescriptor<Lookups<A>> {
    ValueStateDescriptor::new("table-join-lookups")
}

/// Removes and returns the entries of `map` up to `at` (inclusive).
fn take_due<V>(map: &mut BTreeMap<i64, V>, at: i64) -> BTreeMap<i64, V> {
    match at.checked_add(1) {
        Some(next) => {
            let later = map.split_off(&next);
            std::mem::replace(map, later)
        }
        None => std::mem::take(map),
    }
}

/// Applies one changelog row to a key's row.
fn apply<B>(row: &mut Option<B>, change: ChangelogRow<B>) {
    match change.kind {
        RowKind::Insert | RowKind::UpdateAfter => *row = Some(change.row),
        RowKind::UpdateBefore | RowKind::Delete => *row = None,
    }
}

type JoinFn<A, B, O> = dyn Fn(&A, Option<&B>) -> Option<O> + Send + Sync;

struct TableJoinOperator<K, A, B, O> {
    key: KeySelector<K, Either<A, ChangelogRow<B>>>,
    f: Arc<JoinFn<A, B, O>>,
    processing_order: bool,
    late_tag: Option<OutputTag<A>>,
    state: KeyedState<K>,
    /// One event-time timer per key and time with something waiting.
    timers: TimerService<K, ()>,
    watermark: EventTime,
    rule: LatenessRule,
}

impl<K, A, B, O> TableJoinOperator<K, A, B, O>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
    O: Data,
{
    /// Processing order: apply the change, or join the record, now.
    fn process_now(
        &mut self,
        key: &K,
        record: Record<Either<A, ChangelogRow<B>>>,
        out: &mut Output<O>,
    ) -> Result<()> {
        let mut stored = self.state.value(&row_state::<B>(), key, &())?;
        match record.value {
            Either::Right(change) => {
                let mut row = stored.take();
                apply(&mut row, change);
                if let Some(row) = row {
                    stored.set(row);
                }
            }
            Either::Left(a) => {
                if let Some(o) = (self.f)(&a, stored.get()) {
                    out.push(
                        Record::new(record.timestamp, o)
                            .with_lateness_watermark(record.lateness_watermark),
                    );
                }
            }
        }
        Ok(())
    }

    /// Event time: buffer the record or change until the watermark passes it.
    fn buffer(
        &mut self,
        key: &K,
        record: Record<Either<A, ChangelogRow<B>>>,
        out: &mut Output<O>,
    ) -> Result<()> {
        let Record {
            timestamp,
            lateness_watermark: mark,
            value,
        } = record;
        let judge = self.rule.judge(mark, self.watermark);
        let behind = !timestamp.is_set() || timestamp <= judge;
        match value {
            Either::Left(a) => {
                if behind {
                    out.count_late_for(late_reason(self.rule, mark, timestamp), 1);
                    if let Some(tag) = &self.late_tag {
                        out.push_to(tag, Record::new(timestamp, a).with_lateness_watermark(mark));
                    }
                    return Ok(());
                }
                let at = timestamp.millis();
                self.state
                    .value(&lookups_state::<A>(), key, &())?
                    .get_or_insert_with(Lookups::new)
                    .entry(at)
                    .or_default()
                    .push((a, mark));
                self.timers.register(key, &(), EventTime::from_millis(at));
            }
            Either::Right(change) => {
                let at = if behind {
                    judge.millis().saturating_add(1)
                } else {
                    timestamp.millis()
                };
                self.state
                    .value(&changes_state::<B>(), key, &())?
                    .get_or_insert_with(Changes::new)
                    .entry(at)
                    .or_default()
                    .push(change);
                self.timers.register(key, &(), EventTime::from_millis(at));
            }
        }
        Ok(())
    }

    /// The timer of `key` at `at`: apply its changes up to `at`, then join
    /// its records up to `at`.
    fn fire(&mut self, key: &K, at: i64, out: &mut Output<O>) -> Result<()> {
        let due_changes = {
            let mut pending = self.state.value(&changes_state::<B>(), key, &())?;
            let due = pending.get_mut().map(|p| take_due(p, at));
            if pending.get().is_some_and(BTreeMap::is_empty) {
                pending.take();
            }
            due.unwrap_or_default()
        };
        let due_lookups = {
            let mut pending = self.state.value(&lookups_state::<A>(), key, &())?;
            let due = pending.get_mut().map(|p| take_due(p, at));
            if pending.get().is_some_and(BTreeMap::is_empty) {
                pending.take();
            }
            due.unwrap_or_default()
        };
        let mut stored = self.state.value(&row_state::<B>(), key, &())?;
        if !due_changes.is_empty() {
            let mut row = stored.take();
            for change in due_changes.into_values().flatten() {
                apply(&mut row, change);
            }
            if let Some(row) = row {
                stored.set(row);
            }
        }
        for (ts, records) in due_lookups {
            for (a, mark) in records {
                if let Some(o) = (self.f)(&a, stored.get()) {
                    out.push(Record::new(ts, o).with_lateness_watermark(mark));
                }
            }
        }
        Ok(())
    }
}

impl<K, A, B, O> Operator<Either<A, ChangelogRow<B>>, O> for TableJoinOperator<K, A, B, O>
where
    K: StateKey,
    A: Data + StateValue,
    B: Data + StateValue,
    O: Data,
{
    fn process_batch(
        &mut self,
        batch: Vec<Record<Either<A, ChangelogRow<B>>>>,
        out: &mut Output<O>,
    ) -> Result<()> {
        for record in batch {
            let key = (self.key)(&record.value);
            if self.processing_order {
                self.process_now(&key, record, out)?;
            } else {
                self.buffer(&key, record, out)?;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
        let watermark = watermark.max(self.watermark);
        self.watermark = watermark;
        while let Some((at, key, ())) = self.timers.pop_due(watermark) {
            self.fire(&key, at.millis(), out)?;
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
}
