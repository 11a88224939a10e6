//! `to_table`: a keyed stream of [`Change`]s materialized as a table (the
//! latest row per primary key), emitted as the table's own normalized
//! changelog.
//!
//! For each change, with `old` the row stored under the change's key:
//!
//! | change | `old` | emitted | stored |
//! |---|---|---|---|
//! | `Read`/`Insert`/`Update`, row `new` | none | `+I new` | `new` |
//! | `Read`/`Insert`/`Update`, row `new` | `old == new` | nothing | `old` |
//! | `Read`/`Insert`/`Update`, row `new` | `old != new` | `-U old`, `+U new` | `new` |
//! | `Delete` | `old` | `-D old` | none |
//! | `Delete` | none | nothing | none |
//!
//! Invariants:
//! - the key is the keyed stream's key (the primary key): a change's
//!   `before` is never trusted, so a delete whose `before` holds only the
//!   key still retracts the complete stored row, and an update whose source
//!   does not know `before` still retracts the right one;
//! - changes are applied in arrival order per key (see the
//!   [module invariants](super#invariants)); event time only stamps the
//!   output rows, each with the timestamp and lateness watermark of its
//!   change;
//! - a change that changes nothing emits nothing, so a change delivered
//!   again (a source replaying after a restore, at-least-once delivery) is
//!   harmless;
//! - the table is keyed state of the operator (value state
//!   `changelog-table-row`), so it is checkpointed and restored with either
//!   state backend, also at another parallelism;
//! - a `Read`, `Insert` or `Update` without `after` goes to the dead-letter
//!   output (or fails the job under `FailurePolicy::FailFast`).
//!
//! An update that changes the primary key is, keyed by the new key, an
//! insert of the new key; the old key's row stays. Sources that allow such
//! updates should emit them as a delete and an insert
//! ([`Change::split_key_update`]).

use tideline_engine::{Data, KeyedStream, Result, Stream};
use tideline_state::{StateKey, StateValue, ValueStateDescriptor};

use super::{Change, ChangeOp, ChangelogRow};
use crate::process::{process_named, KeyedProcessFunction, ProcessContext};

/// The stored row of each key.
fn row_state<T>() -> ValueStateDescriptor<T> {
    ValueStateDescriptor::new("changelog-table-row")
}

/// Adds [`to_table`](ToTableExt::to_table) to keyed streams of changes.
pub trait ToTableExt<K, T> {
    /// The table the changes describe, as its normalized changelog (see the
    /// [module docs](self)). Key the changes by the primary key first.
    ///
    /// ```
    /// use tideline_operators::changelog::{Change, ChangeOp, ChangelogRow, ToTableExt};
    /// use tideline_operators::prelude::*;
    ///
    /// // (id, name) rows of a table `users`.
    /// let row = |id: u32, name: &str| Some((id, name.to_string()));
    /// let change = |op, before, after| Change {
    ///     op, before, after, table: "public.users".to_string(), lsn: 0, commit_time: 0, tx_id: 0,
    /// };
    /// let job = Job::new().parallelism(1);
    /// let out = CollectSink::new();
    /// job.source(
    ///     VecSource::new(vec![
    ///         change(ChangeOp::Insert, None, row(1, "ada")),
    ///         change(ChangeOp::Update, None, row(1, "ada l.")),
    ///         change(ChangeOp::Update, None, row(1, "ada l.")), // redelivered
    ///         change(ChangeOp::Delete, row(1, ""), None), // the key only
    ///     ]),
    ///     WatermarkStrategy::none(),
    /// )
    /// .key_by(|c: &Change<(u32, String)>| c.row().map(|r| r.0))
    /// .to_table()
    /// .sink(out.clone());
    /// job.run()?;
    /// assert_eq!(
    ///     out.values(),
    ///     vec![
    ///         ChangelogRow::insert((1, "ada".to_string())),
    ///         ChangelogRow::update_before((1, "ada".to_string())),
    ///         ChangelogRow::update_after((1, "ada l.".to_string())),
    ///         ChangelogRow::delete((1, "ada l.".to_string())),
    ///     ]
    /// );
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    fn to_table(&self) -> Stream<ChangelogRow<T>>;
}

impl<K, T> ToTableExt<K, T> for KeyedStream<K, Change<T>>
where
    K: StateKey,
    T: Data + StateValue + PartialEq,
{
    fn to_table(&self) -> Stream<ChangelogRow<T>> {
        process_named(self, "to_table", ToTable)
    }
}

/// The process function behind [`ToTableExt::to_table`].
#[derive(Clone, Copy, Debug, Default)]
struct ToTable;

impl<K, T> KeyedProcessFunction<K, Change<T>, ChangelogRow<T>> for ToTable
where
    K: StateKey,
    T: Data + StateValue + PartialEq,
{
    fn process_element(
        &mut self,
        change: Change<T>,
        ctx: &mut ProcessContext<'_, K, ChangelogRow<T>>,
    ) -> Result<()> {
        let op = change.op;
        let emit = {
            let mut stored = ctx.value_state(&row_state::<T>())?;
            match op {
                ChangeOp::Delete => stored.take().map(|old| (Some(old), None)),
                ChangeOp::Read | ChangeOp::Insert | ChangeOp::Update => {
                    let Some(new) = change.after else {
                        let text = format!(
                            "{op:?} change of {} (lsn {}, tx {})",
                            change.table, change.lsn, change.tx_id
                        );
                        return ctx.dead_letter_text(
                            format!("{op:?} change without the row after it (`after` is None)"),
                            text,
                        );
                    };
                    match stored.get() {
                        Some(old) if *old == new => None,
                        _ => {
                            let old = stored.take();
                            stored.set(new.clone());
                            Some((old, Some(new)))
                        }
                    }
                }
            }
        };
        match emit {
            Some((None, Some(new))) => ctx.collect(ChangelogRow::insert(new)),
            Some((Some(old), Some(new))) => {
                ctx.collect(ChangelogRow::update_before(old));
                ctx.collect(ChangelogRow::update_after(new));
            }
            Some((Some(old), None)) => ctx.collect(ChangelogRow::delete(old)),
            Some((None, None)) | None => {}
        }
        Ok(())
    }
}
