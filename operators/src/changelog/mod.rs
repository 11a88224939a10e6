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
//!   (insert or replace on `+I`/`+U`, remove on `-D`, nothing on `-U`)
//!   gives the table; adding `+I`/`+U` rows and subtracting `-U`/`-D` rows
//!   gives any aggregate over it, which is how retraction works.

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
                self.before.map(|row| ChangelogRow::new(RowKind::UpdateBefore, row)),
                self.after.map(|row| ChangelogRow::new(RowKind::UpdateAfter, row)),
            ),
            ChangeOp::Delete => (self.before.map(ChangelogRow::delete), None),
        };
        first.into_iter().chain(second)
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
}
