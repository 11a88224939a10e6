//! Streams of changes to tables, and the operators that understand them.
//!
//! Two record types carry changes:
//!
//! - [`Change<T>`]: one row change as a change-data-capture source reads it
//!   (PostgreSQL's WAL, a snapshot of a table): the operation, the row
//!   before and after, and where it comes from (table, log position,
//!   commit time, transaction).
//! - [`ChangelogRow<T>`]: one row of a *changelog*, the form in which
//!   tables and the aggregates over them describe their own changes, as
//!   Flink's row kinds do: `+I` (insert), `-U` (the row before an update),
//!   `+U` (the row after it), `-D` (delete). Applying a changelog in order
//!   (insert or replace on `+I`/`+U`, remove on `-U`/`-D`) gives the table;
//!   adding `+I`/`+U` rows and subtracting `-U`/`-D` rows gives any
//!   aggregate over it, which is how retraction works.
//!
//! # Operators
//!
//! | what | where | state (keyed, checkpointed) |
//! |---|---|---|
//! | [`ToTableExt::to_table`]: changes → the table's normalized changelog | [`table`] | the latest row per key |
//! | [`ChangelogStreamExt::key_by_row`]: group a changelog by a function of the row | [`stream`] | none |
//! | [`AggregateChangelogExt::aggregate_changelog`]: retracting aggregates, emitting their own changelog | [`aggregate`] | one accumulator per group |
//! | [`TableJoinExt::join_table`]: enrich a stream with the current row of a table | [`join`] | the row per key, and what waits for the watermark |
//! | [`ChangelogTableSink`]: a changelog applied as upserts and deletes, written as a CSV and/or Parquet snapshot | [`sink`] | the table, in the sink's files |
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tideline_operators::changelog::*;
//! use tideline_operators::prelude::*;
//! use tideline_operators::window::{Count, Sum};
//!
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! struct Order { id: u32, status: String, amount: i64 }
//! let order = |status: &str, amount| Order { id: 1, status: status.into(), amount };
//! let change = |op, before, after: Option<Order>| Change {
//!     op, before, after, table: "public.orders".into(), lsn: 0, commit_time: 0, tx_id: 0,
//! };
//!
//! let job = Job::new();
//! let totals = ChangelogTableSink::new(|r: &(String, (u64, i64))| r.0.clone());
//! job.source(
//!     VecSource::new(vec![
//!         change(ChangeOp::Insert, None, Some(order("pending", 30))),
//!         change(ChangeOp::Update, None, Some(order("paid", 30))),
//!     ]),
//!     WatermarkStrategy::none(),
//! )
//! .key_by(|c: &Change<Order>| c.row().map(|o| o.id))
//! .to_table()
//! .key_by_row(|o: &Order| o.status.clone())
//! .aggregate_changelog((Count, Sum::of(|o: &Order| o.amount)))
//! .sink(totals.clone());
//! job.run()?;
//! // `pending` got +I (1, 30), then -D when the order moved to `paid`.
//! assert_eq!(totals.values(), vec![("paid".to_string(), (1, 30))]);
//! # Ok::<(), tideline_engine::Error>(())
//! ```
//!
//! # Invariants
//!
//! - **Order.** Every operator here applies the rows of one key in arrival
//!   order. The engine keeps the order of the records one subtask sends
//!   another, so a key's rows stay in order as long as they come out of one
//!   subtask: the changes of one primary key from one source partition (as
//!   a change-data-capture source emits them), a table's or aggregate's
//!   changelog from the subtask that owns the key.
//! - **Normalized changelogs.** [`ToTableExt::to_table`] and
//!   [`AggregateChangelogExt::aggregate_changelog`] emit, per key, `+I`,
//!   then any number of `-U`/`+U` pairs, then possibly `-D`, then possibly
//!   `+I` again: every retraction (`-U`, `-D`) carries exactly the row last
//!   added for its key, a `-U` is followed by its `+U` in the same batch at
//!   the same timestamp (no checkpoint barrier between them), and nothing
//!   is emitted for a change that changes nothing. That is what makes
//!   retraction downstream exact, and redelivered changes harmless.
//! - **Timestamps.** Rows carry the timestamp and lateness watermark of the
//!   record that caused them.

pub mod aggregate;
pub mod join;
pub mod sink;
pub mod stream;
pub mod table;

pub use aggregate::{AggregateChangelogExt, RetractingAggregate};
pub use join::{TableJoin, TableJoinExt};
pub use sink::ChangelogTableSink;
pub use stream::ChangelogStreamExt;
pub use table::ToTableExt;

use serde::{Deserialize, Serialize};

/// What a [`Change`] did to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeOp {
    /// The row as an initial snapshot of the table read it (it existed
    /// before the log was read from): `after` holds it.
    Read,
    /// The row was inserted: `after` holds it.
    Insert,
    /// The row was updated: `after` holds the new row; `before` the old
    /// one where the source knows it (see the source's docs).
    Update,
    /// The row was deleted: `before` holds it, or as much of it as the
    /// source knows (at least its key).
    Delete,
}

/// One change to one row of a table, as a change-data-capture source
/// reads it.
///
/// Every change of one database transaction carries the transaction's
/// `tx_id`, commit `lsn` and `commit_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change<T> {
    /// What happened.
    pub op: ChangeOp,
    /// The row before the change (deletes; updates where the source knows
    /// it).
    pub before: Option<T>,
    /// The row after the change (reads, inserts, updates).
    pub after: Option<T>,
    /// The table, as `schema.name`.
    pub table: String,
    /// The log position of the commit of the change's transaction (0 for
    /// snapshot reads, which belong to no transaction of the log).
    pub lsn: u64,
    /// When the transaction committed, in microseconds since the Unix
    /// epoch (for snapshot reads: when the snapshot was taken).
    pub commit_time: i64,
    /// The transaction's id (0 for snapshot reads).
    pub tx_id: u32,
}

impl<T> Change<T> {
    /// The row as it is now: `after`, or `before` for a delete.
    pub fn row(&self) -> Option<&T> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// The change as changelog rows: `+I` for reads and inserts, `-U` (when
    /// `before` is known) and `+U` for updates, `-D` for deletes.
    pub fn into_changelog(self) -> impl Iterator<Item = ChangelogRow<T>> {
        let (first, second) = match self.op {
            ChangeOp::Read | ChangeOp::Insert => (self.after.map(ChangelogRow::insert), None),
            ChangeOp::Update => (
                self.before
                    .map(|row| ChangelogRow::new(RowKind::UpdateBefore, row)),
                self.after
                    .map(|row| ChangelogRow::new(RowKind::UpdateAfter, row)),
            ),
            ChangeOp::Delete => (self.before.map(ChangelogRow::delete), None),
        };
        first.into_iter().chain(second)
    }

    /// The change as [`to_table`](ToTableExt::to_table) needs it when an
    /// update may change the primary key (`key` of the row): such an update
    /// (with `before` known) becomes a `Delete` of `before` followed by an
    /// `Insert` of `after`, both with this change's source fields; any
    /// other change is returned as it is. Key the result by the key of
    /// [`Change::row`].
    ///
    /// ```
    /// use tideline_operators::changelog::{Change, ChangeOp};
    /// let update = Change {
    ///     op: ChangeOp::Update, before: Some((1, "a")), after: Some((2, "a")),
    ///     table: "t".to_string(), lsn: 9, commit_time: 0, tx_id: 3,
    /// };
    /// let ops: Vec<ChangeOp> = update.split_key_update(|r| r.0).map(|c| c.op).collect();
    /// assert_eq!(ops, vec![ChangeOp::Delete, ChangeOp::Insert]);
    /// ```
    pub fn split_key_update<K: PartialEq>(
        self,
        key: impl Fn(&T) -> K,
    ) -> impl Iterator<Item = Change<T>> {
        let moved = self.op == ChangeOp::Update
            && matches!((&self.before, &self.after), (Some(b), Some(a)) if key(b) != key(a));
        if !moved {
            return std::iter::once(self).chain(None);
        }
        let Change {
            before,
            after,
            table,
            lsn,
            commit_time,
            tx_id,
            ..
        } = self;
        let delete = Change {
            op: ChangeOp::Delete,
            before,
            after: None,
            table: table.clone(),
            lsn,
            commit_time,
            tx_id,
        };
        let insert = Change {
            op: ChangeOp::Insert,
            before: None,
            after,
            table,
            lsn,
            commit_time,
            tx_id,
        };
        std::iter::once(delete).chain(Some(insert))
    }
}

/// The kind of a [`ChangelogRow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RowKind {
    /// `+I`: a row that was not there.
    Insert,
    /// `-U`: the row an update replaces (retracts it).
    UpdateBefore,
    /// `+U`: the row an update puts in place.
    UpdateAfter,
    /// `-D`: a row removed (retracts it).
    Delete,
}

impl RowKind {
    /// The short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// Whether the row is added (`+I`, `+U`) rather than retracted.
    pub fn is_addition(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }
}

impl std::fmt::Display for RowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short())
    }
}

/// One row of a changelog: a row and whether it is added or retracted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChangelogRow<T> {
    /// Added or retracted, and how.
    pub kind: RowKind,
    /// The row.
    pub row: T,
}

impl<T> ChangelogRow<T> {
    /// A row of kind `kind`.
    pub fn new(kind: RowKind, row: T) -> Self {
        Self { kind, row }
    }

    /// `+I row`.
    pub fn insert(row: T) -> Self {
        Self::new(RowKind::Insert, row)
    }

    /// `-D row`.
    pub fn delete(row: T) -> Self {
        Self::new(RowKind::Delete, row)
    }

    /// `-U row`.
    pub fn update_before(row: T) -> Self {
        Self::new(RowKind::UpdateBefore, row)
    }

    /// `+U row`.
    pub fn update_after(row: T) -> Self {
        Self::new(RowKind::UpdateAfter, row)
    }

    /// Whether the row is added (`+I`, `+U`) rather than retracted.
    pub fn is_addition(&self) -> bool {
        self.kind.is_addition()
    }

    /// The same kind of row, with `f` applied to the row.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ChangelogRow<U> {
        ChangelogRow {
            kind: self.kind,
            row: f(self.row),
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for ChangelogRow<T> {
    /// `+I row`, `-U row`...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.row)
    }
}
