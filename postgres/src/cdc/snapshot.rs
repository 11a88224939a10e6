//! The initial snapshot: the tables read in an exported snapshot, in
//! primary-key order, so that a checkpoint taken half way says exactly
//! which rows were read (see [`Position::Snapshot`]).
//!
//! Key order must be the same in SQL and here: integer keys compare as
//! numbers; `text`, `varchar` and `name` keys are ordered `COLLATE "C"` in
//! SQL and compared as bytes here; `uuid` keys order by their bytes, which
//! is the order of their text. A table whose primary key has another type,
//! or that has none, is read unordered, and the snapshot is then not
//! resumable ([`Position::UnresumableSnapshot`]).

use std::cmp::Ordering;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, Rejected, Result};
use tideline_operators::changelog::{Change, ChangeOp};

use super::position::Position;
use super::pump::{Pump, BATCH};
use super::reader::{Event, Item};
use crate::connect::{now_micros, quote_ident, quote_literal, quoted_table, table_columns};
use crate::pgoutput::{oid, Column, Datum, Relation};
use crate::row::{decode_row, render_row, text_datums};

/// How a primary-key column orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyOrder {
    /// As integers.
    Integer,
    /// As bytes; `collate`: SQL orders it `COLLATE "C"`.
    Bytes {
        /// Whether SQL needs `COLLATE "C"` to order it so.
        collate: bool,
    },
}

impl KeyOrder {
    fn of(type_oid: u32) -> Option<Self> {
        match type_oid {
            oid::INT2 | oid::INT4 | oid::INT8 => Some(KeyOrder::Integer),
            oid::NAME | oid::TEXT | oid::VARCHAR => Some(KeyOrder::Bytes { collate: true }),
            oid::UUID => Some(KeyOrder::Bytes { collate: false }),
            _ => None,
        }
    }

    fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            KeyOrder::Integer => match (a.parse::<i64>(), b.parse::<i64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.as_bytes().cmp(b.as_bytes()),
            },
            KeyOrder::Bytes { .. } => a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

/// A primary-key column.
#[derive(Clone, Debug)]
pub(super) struct KeyColumn {
    name: String,
    /// Its position among the table's columns.
    index: usize,
    order: KeyOrder,
}

/// A table of the source as the snapshot reads it.
#[derive(Clone, Debug)]
pub(super) struct TableInfo {
    /// `schema.name`, as changes name it.
    pub(super) qualified: String,
    /// Quoted for SQL.
    sql_name: String,
    columns: Vec<Column>,
    /// Its primary key, when the snapshot can order by it.
    key: Option<Vec<KeyColumn>>,
}

impl TableInfo {
    /// Reads the tables' columns and primary keys (in the snapshot's
    /// transaction, so they are the snapshot's).
    pub(super) async fn load(
        sql: &tokio_postgres::Client,
        tables: &[(String, String)],
        fail: impl Fn(String, tokio_postgres::Error) -> Error,
    ) -> Result<Vec<TableInfo>> {
        let mut infos = Vec::with_capacity(tables.len());
        for (schema, table) in tables {
            let sql_name = quoted_table(schema, table);
            let qualified = format!("{schema}.{table}");
            let columns: Vec<Column> = table_columns(sql, schema, table)
                .await
                .map_err(|e| fail(format!("read the columns of {qualified}"), e))?
                .into_iter()
                .map(|c| c.column)
                .collect();
            let key_names: Vec<String> = sql
                .query(
                    "SELECT a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    &[&sql_name],
                )
                .await
                .map_err(|e| fail(format!("read the primary key of {qualified}"), e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let key: Option<Vec<KeyColumn>> = (!key_names.is_empty())
                .then(|| {
                    key_names
                        .iter()
                        .map(|name| {
                            let index = columns.iter().position(|c| &c.name == name)?;
                            Some(KeyColumn {
                                name: name.clone(),
                                index,
                                order: KeyOrder::of(columns[index].type_oid)?,
                            })
                        })
                        .collect()
                })
                .flatten();
            infos.push(TableInfo {
                qualified,
                sql_name,
                columns,
                key,
            });
        }
        Ok(infos)
    }

    /// `ORDER BY` the key (empty without one).
    fn order_by(&self) -> String {
        let Some(key) = &self.key else {
            return String::new();
        };
        let columns: Vec<String> = key.iter().map(Self::sql_key_column).collect();
        format!(" ORDER BY {}", columns.join(", "))
    }

    fn sql_key_column(column: &KeyColumn) -> String {
        match column.order {
            KeyOrder::Bytes { collate: true } => {
                format!("{} COLLATE \"C\"", quote_ident(&column.name))
            }
            _ => quote_ident(&column.name),
        }
    }

    /// `WHERE` the key is past `after`.
    fn after(&self, after: &[String]) -> String {
        let Some(key) = &self.key else {
            return String::new();
        };
        let columns: Vec<String> = key.iter().map(Self::sql_key_column).collect();
        let values: Vec<String> = after.iter().map(|v| quote_literal(v)).collect();
        format!(
            " WHERE ROW({}) > ROW({})",
            columns.join(", "),
            values.join(", ")
        )
    }

    /// The key of a row given in the table's column order.
    fn key_of(&self, row: &tokio_postgres::SimpleQueryRow) -> Option<Arc<[String]>> {
        let key = self.key.as_ref()?;
        key.iter()
            .map(|c| row.get(c.index).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Into::into)
    }
}

/// A fingerprint of `tables` and their primary keys (FNV-1a over their
/// names): a snapshot position is only meaningful for the same tables, in
/// the same order, with the same keys.
pub(super) fn layout(tables: &[TableInfo]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes.iter().chain(&[0]) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for table in tables {
        feed(table.qualified.as_bytes());
        for column in table.key.iter().flatten() {
            feed(column.name.as_bytes());
        }
        feed(b"\n");
    }
    hash
}

/// The rows a snapshot position says were copied: the tables before
/// `table`, and the rows of `table` up to `key`.
#[derive(Clone, Debug)]
pub(super) struct Copied {
    pub(super) tables: Vec<TableInfo>,
    pub(super) table: u64,
    pub(super) key: Option<Arc<[String]>>,
    /// [`layout`] of `tables`.
    pub(super) layout: u64,
}

impl Copied {
    /// Whether the row `tuple` of `relation` is among the copied rows.
    /// Tables the snapshot does not read count as copied (their changes
    /// are all streamed); a row whose key cannot be read counts as copied
    /// too (a change delivered again is harmless downstream of
    /// `to_table`, a lost one is not).
    pub(super) fn contains(&self, relation: &Relation, tuple: &[Datum]) -> bool {
        let name = relation.qualified_name();
        let Some(index) = self.tables.iter().position(|t| t.qualified == name) else {
            return true;
        };
        let index = index as u64;
        if index != self.table {
            return index < self.table;
        }
        let (Some(boundary), Some(key)) = (&self.key, &self.tables[index as usize].key) else {
            return false;
        };
        let mut ordering = Ordering::Equal;
        for (column, bound) in key.iter().zip(boundary.iter()) {
            let value = relation
                .columns
                .iter()
                .position(|c| c.name == column.name)
                .and_then(|i| match tuple.get(i) {
                    Some(Datum::Text(bytes)) => std::str::from_utf8(bytes).ok(),
                    _ => None,
                });
            let Some(value) = value else { return true };
            ordering = column.order.compare(value, bound);
            if ordering != Ordering::Equal {
                break;
            }
        }
        ordering != Ordering::Greater
    }
}

impl<T: Data + DeserializeOwned> Pump<T> {
    /// Copies the rows after `from` (a table and the last key copied of
    /// it), in the snapshot transaction open on `sql`; the rows are as of
    /// the stream position `resume`.
    pub(super) async fn copy_tables(
        &mut self,
        sql: &tokio_postgres::Client,
        tables: &[TableInfo],
        from: (u64, Option<Arc<[String]>>),
        resume: u64,
    ) -> Result<()> {
        let snapshot_time = now_micros();
        let resumable = tables.iter().all(|t| t.key.is_some());
        let layout = layout(tables);
        let mut rows_read = 0u64;
        for (index, table) in tables.iter().enumerate().skip(from.0 as usize) {
            let after = match (&from.1, index as u64 == from.0) {
                (Some(key), true) => table.after(key),
                _ => String::new(),
            };
            let names: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let name = &table.qualified;
            sql.batch_execute(&format!(
                "DECLARE tideline_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}{after}{}",
                names.join(", "),
                table.sql_name,
                table.order_by()
            ))
            .await
            .map_err(|e| self.external(format!("read {name}"), e))?;
            let fetch = format!(
                "FETCH {} FROM tideline_snapshot",
                self.settings.snapshot_chunk
            );
            loop {
                let messages = sql
                    .simple_query(&fetch)
                    .await
                    .map_err(|e| self.external(format!("read {name}"), e))?;
                let mut items = Vec::with_capacity(messages.len());
                for message in &messages {
                    let tokio_postgres::SimpleQueryMessage::Row(row) = message else {
                        continue;
                    };
                    rows_read += 1;
                    let values = text_datums((0..row.len()).map(|i| row.get(i)));
                    let position = match table.key_of(row) {
                        Some(key) if resumable => Position::Snapshot {
                            resume,
                            skip: 0,
                            table: index as u64,
                            key: Some(key),
                            layout,
                        },
                        _ => Position::UnresumableSnapshot { rows: rows_read },
                    };
                    let item = match decode_row::<T>(&table.columns, &values) {
                        Ok(after) => self.record(Change {
                            op: ChangeOp::Read,
                            before: None,
                            after: Some(after),
                            table: name.clone(),
                            lsn: 0,
                            commit_time: snapshot_time,
                            tx_id: 0,
                        }),
                        Err(e) => Item::Rejected(Rejected {
                            reason: format!("cannot decode a row of {name}: {e}"),
                            record: render_row(&table.columns, &values),
                            offset: Some(format!("{name} snapshot row {rows_read}")),
                        }),
                    };
                    items.push((item, position));
                }
                self.shared
                    .metrics
                    .snapshot_rows
                    .fetch_add(items.len() as u64, AtomicOrdering::Relaxed);
                let done = items.len() < self.settings.snapshot_chunk;
                // In pieces, so that the rows in flight stay bounded
                // whatever the chunk size.
                while !items.is_empty() {
                    let rest = items.split_off(items.len().min(BATCH));
                    if !self
                        .send(Event::Items(std::mem::replace(&mut items, rest)))
                        .await
                    {
                        return Err(Error::Cancelled);
                    }
                }
                if done {
                    break;
                }
            }
            sql.batch_execute("CLOSE tideline_snapshot")
                .await
                .map_err(|e| self.external(format!("read {name}"), e))?;
            if resumable {
                self.moved(Position::Snapshot {
                    resume,
                    skip: 0,
                    table: index as u64 + 1,
                    key: None,
                    layout,
                })
                .await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_as_sql_orders_them() {
        assert_eq!(KeyOrder::Integer.compare("9", "10"), Ordering::Less);
        assert_eq!(KeyOrder::Integer.compare("-3", "2"), Ordering::Less);
        let bytes = KeyOrder::Bytes { collate: true };
        assert_eq!(bytes.compare("B", "a"), Ordering::Less);
        assert_eq!(bytes.compare("ab", "a"), Ordering::Greater);
        assert_eq!(
            KeyOrder::of(1700),
            None,
            "numeric keys are not ordered here"
        );
    }
}
