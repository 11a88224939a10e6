//! Changelog operators: `to_table`'s normalization, retracting aggregates
//! over it, the stream–table join, the table sink's files, and all of them
//! through a crash and restore.

mod aggregate;
mod join;
mod properties;
mod restore;
mod sink;
mod table;

use serde::{Deserialize, Serialize};
use tideline::prelude::*;

/// A row of a CDC'd `orders` table; `id` is its primary key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: u32,
    pub(crate) status: String,
    pub(crate) amount: i64,
}

pub(crate) fn order(id: u32, status: &str, amount: i64) -> Order {
    Order {
        id,
        status: status.to_string(),
        amount,
    }
}

/// A delete's `before` as a source with only the key knows it.
pub(crate) fn key_only(id: u32) -> Order {
    order(id, "", 0)
}

pub(crate) fn change(op: ChangeOp, before: Option<Order>, after: Option<Order>) -> Change<Order> {
    Change {
        op,
        before,
        after,
        table: "public.orders".to_string(),
        lsn: 0,
        commit_time: 0,
        tx_id: 0,
    }
}

pub(crate) fn insert(o: Order) -> Change<Order> {
    change(ChangeOp::Insert, None, Some(o))
}

pub(crate) fn update(o: Order) -> Change<Order> {
    change(ChangeOp::Update, None, Some(o))
}

pub(crate) fn delete(id: u32) -> Change<Order> {
    change(ChangeOp::Delete, Some(key_only(id)), None)
}

/// Per-status totals, as the aggregate's `(status, (count, sum))` rows
/// become for the sink.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub(crate) status: String,
    pub(crate) count: u64,
    pub(crate) sum: i64,
}

pub(crate) fn totals(row: (String, (u64, i64))) -> Totals {
    Totals {
        status: row.0,
        count: row.1 .0,
        sum: row.1 .1,
    }
}

/// The orders table's changelog, keyed by primary key.
pub(crate) fn orders_table(changes: &Stream<Change<Order>>) -> Stream<ChangelogRow<Order>> {
    changes
        .key_by(|c: &Change<Order>| c.row().map(|o| o.id))
        .to_table()
}

/// Count and sum of the orders' amounts per status, as a changelog.
pub(crate) fn totals_by_status(
    table: &Stream<ChangelogRow<Order>>,
) -> Stream<ChangelogRow<Totals>> {
    table
        .key_by_row(|o: &Order| o.status.clone())
        .aggregate_changelog((Count, Sum::of(|o: &Order| o.amount)))
        .map(|r: ChangelogRow<(String, (u64, i64))>| r.map(totals))
}

/// `+I row`-style text of a changelog, for readable exact comparisons.
pub(crate) fn text<T: std::fmt::Debug>(rows: &[ChangelogRow<T>]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{} {:?}", r.kind, r.row))
        .collect()
}

pub(crate) fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(Error::user)
}
