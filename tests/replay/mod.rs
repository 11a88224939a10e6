//! Replay from files: formats, bad input, orders, offsets.

mod files;
mod offsets;
mod same_logic;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tideline::prelude::*;

/// The record the replay tests read: three int64 columns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) key: i64,
    pub(crate) value: i64,
    pub(crate) ts: i64,
}

/// A row whose timestamp may be null, to write files with bad rows.
#[derive(Serialize)]
pub(crate) struct Maybe {
    pub(crate) key: i64,
    pub(crate) value: i64,
    pub(crate) ts: Option<i64>,
}

/// `n` rows of key 0 and values `0..n`; every row `i` with `i % every == at` has a null timestamp.
pub(crate) fn with_null_timestamps(n: i64, every: i64, at: i64) -> Vec<Maybe> {
    (0..n)
        .map(|i| Maybe {
            key: 0,
            value: i,
            ts: (i % every != at).then_some(i),
        })
        .collect()
}

/// Writes `rows` to a Parquet file in row groups of `group_rows`.
pub(crate) fn write_parquet_groups<T: Serialize>(
    path: &Path,
    rows: &[T],
    group_rows: usize,
) -> Result<()> {
    use serde_arrow::schema::{SchemaLike, TracingOptions};
    let fields = Vec::<arrow_schema::FieldRef>::from_samples(rows, TracingOptions::default())
        .map_err(Error::user)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows.max(1)))
        .build();
    let file = std::fs::File::create(path).map_err(Error::user)?;
    let schema = Arc::new(arrow_schema::Schema::new(fields.clone()));
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::user)?;
    for chunk in rows.chunks(group_rows.max(1)) {
        let batch = serde_arrow::to_record_batch(&fields, &chunk).map_err(Error::user)?;
        writer.write(&batch).map_err(Error::user)?;
    }
    writer.close().map_err(Error::user)?;
    Ok(())
}

/// Writes `rows` to a Parquet file in one row group.
pub(crate) fn write_parquet<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    write_parquet_groups(path, rows, rows.len())
}
