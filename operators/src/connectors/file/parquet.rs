//! Parquet through Arrow record batches: only the needed columns are read,
//! and a batch becomes records in one `serde_arrow` pass (row by row only
//! when the batch holds a row that cannot become a record).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, Record, Result, SourceOutput};

use super::csv::open_file;
use parquet::file::statistics::Statistics;

use super::{location, Columns, FileRows, Prune};

/// The number of rows in a Parquet file, from its metadata.
pub(crate) fn row_count(path: &Path) -> Result<u64> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(path)?).map_err(|e| {
        Error::config(
            "file_source.input",
            format!("{} is not a readable Parquet file: {e}", path.display()),
        )
    })?;
    Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

pub(crate) struct ParquetRows<T> {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    /// The projected columns renamed to the fields they fill.
    schema: Option<SchemaRef>,
    columns: Columns,
    /// Rows taken from the reader and converted (records or dead letters).
    row: u64,
    /// Records of the last batch not emitted yet, in file order (a batch
    /// whose rows all converted: the common case, kept as the converter's
    /// own vector so records are not moved once more).
    ready: std::vec::IntoIter<T>,
    /// Converted rows of a batch that held rejected ones, not emitted yet,
    /// in file order: records, or `(reason, record text, location)`. Only
    /// one of `ready` and `mixed` holds rows at a time; each entry is one
    /// input row, so the offset is exact.
    mixed: VecDeque<std::result::Result<T, (String, String, String)>>,
    /// Rows read but not converted yet (the rest of a batch after a skip).
    unread: Option<RecordBatch>,
    /// Rows of the row groups read (after pruning).
    total_rows: u64,
}

/// The broad kind of a column type, for the before-start compatibility check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Bool,
    Text,
    Other,
}

fn kind(type_name: &str) -> Kind {
    if type_name.starts_with("Int") || type_name.starts_with("UInt") {
        Kind::Int
    } else if type_name.starts_with("Float") || type_name.starts_with("Decimal") {
        Kind::Float
    } else if type_name == "Boolean" {
        Kind::Bool
    } else if matches!(type_name, "Utf8" | "LargeUtf8" | "Utf8View") {
        Kind::Text
    } else {
        Kind::Other
    }
}

fn compatible(file: Kind, field: Kind) -> bool {
    file == field
        || file == Kind::Other
        || field == Kind::Other
        || (file == Kind::Int && field == Kind::Float)
}

/// The row groups of `path` that may hold rows in the time range (all of
/// them without a range, or without statistics), and how many there are.
pub(crate) fn row_groups(path: &Path, prune: Prune<'_>) -> Result<(Vec<usize>, usize)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(path)?).map_err(|e| {
        Error::config(
            "file_source.input",
            format!("{} is not a readable Parquet file: {e}", path.display()),
        )
    })?;
    Ok(prunable(&builder, prune))
}

fn prunable<R>(
    builder: &parquet::arrow::arrow_reader::ArrowReaderBuilder<R>,
    prune: Prune<'_>,
) -> (Vec<usize>, usize) {
    let metadata = builder.metadata();
    let total = metadata.num_row_groups();
    let Some((column, start, end)) = prune else {
        return ((0..total).collect(), total);
    };
    let index = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [column.to_string()]);
    let kept = (0..total)
        .filter(|&g| {
            let stats = index.and_then(|i| metadata.row_group(g).column(i).statistics());
            match stats {
                // Keep the group unless its [min, max] misses [start, end).
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => *max >= start && *min < end,
                    _ => true,
                },
                _ => true,
            }
        })
        .collect();
    (kept, total)
}

impl<T: Data + DeserializeOwned> ParquetRows<T> {
    pub(crate) fn open(
        path: &Path,
        columns: &Columns,
        batch_rows: usize,
        prune: Prune<'_>,
    ) -> Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(path)?).map_err(|e| {
            Error::config(
                "file_source.input",
                format!("{} is not a readable Parquet file: {e}", path.display()),
            )
        })?;
        let file_schema = Arc::clone(builder.schema());
        let available: Vec<String> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        columns.check_present(path, &available)?;
        let mut needed = Vec::new();
        for (field, _, field_type) in &columns.fields {
            let column = columns.column_of(field);
            let Ok(file_field) = file_schema.field_with_name(column) else {
                continue; // an optional field the file lacks
            };
            needed.push(column.to_string());
            if let Some(field_type) = field_type {
                let (file_kind, field_kind) = (
                    kind(&format!("{:?}", file_field.data_type())),
                    kind(&format!("{field_type:?}")),
                );
                if !compatible(file_kind, field_kind) {
                    return Err(Error::config(
                        format!("file_source.column '{column}'"),
                        format!(
                            "in {} has type {:?}, which cannot fill field '{field}' ({field_type:?})",
                            path.display(),
                            file_field.data_type()
                        ),
                    ));
                }
            }
        }
        // A record type that could not be traced reads every column.
        let mask = if columns.fields.is_empty() {
            ProjectionMask::all()
        } else {
            ProjectionMask::columns(builder.parquet_schema(), needed.iter().map(String::as_str))
        };
        let (row_groups, _) = prunable(&builder, prune);
        let total_rows = row_groups
            .iter()
            .map(|&g| u64::try_from(builder.metadata().row_group(g).num_rows()).unwrap_or(0))
            .sum();
        let reader = builder
            .with_row_groups(row_groups)
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| {
                Error::config(
                    "file_source.input",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            schema: None,
            columns: columns.clone(),
            row: 0,
            ready: Vec::new().into_iter(),
            mixed: VecDeque::new(),
            unread: None,
            total_rows,
        })
    }

    fn renamed(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = match &self.schema {
            Some(s) => Arc::clone(s),
            None => {
                let mut fields: Vec<Field> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        let name = self.columns.record_name(f.name());
                        Field::new(name.as_ref(), f.data_type().clone(), f.is_nullable())
                    })
                    .collect();
                for (field, value) in self.columns.partition_fields() {
                    // A column the file has wins over its folder name.
                    if fields.iter().any(|f| f.name() == field) {
                        continue;
                    }
                    let data_type = match value.parse::<i64>() {
                        Ok(_) if self.columns.is_integer(field) => arrow_schema::DataType::Int64,
                        _ => arrow_schema::DataType::Utf8,
                    };
                    fields.push(Field::new(field, data_type, false));
                }
                let s: SchemaRef = Arc::new(Schema::new(fields));
                self.schema = Some(Arc::clone(&s));
                s
            }
        };
        let mut arrays = batch.columns().to_vec();
        let file_columns = batch.num_columns();
        for (field, value) in self.columns.partition_fields() {
            if batch
                .schema()
                .fields()
                .iter()
                .take(file_columns)
                .any(|f| self.columns.record_name(f.name()) == field)
            {
                continue;
            }
            let n = batch.num_rows();
            let array: arrow_array::ArrayRef = match value.parse::<i64>() {
                Ok(v) if self.columns.is_integer(field) => {
                    Arc::new(arrow_array::Int64Array::from(vec![v; n]))
                }
                _ => Arc::new(arrow_array::StringArray::from(vec![value; n])),
            };
            arrays.push(array);
        }
        RecordBatch::try_new(schema, arrays).map_err(|e| {
            Error::Internal(format!("renaming columns of {}: {e}", self.path.display()))
        })
    }
}

impl<T: Data + DeserializeOwned> FileRows<T> for ParquetRows<T> {
    fn read(&mut self, out: &mut SourceOutput<T>) -> Result<bool> {
        while out.remaining() > 0 {
            if !self.ready.as_slice().is_empty() {
                let n = out.remaining().min(self.ready.len());
                for value in self.ready.by_ref().take(n) {
                    out.push(Record::untimed(value));
                }
                continue;
            }
            match self.mixed.pop_front() {
                Some(Ok(value)) => {
                    out.push(Record::untimed(value));
                    continue;
                }
                Some(Err((reason, record, at))) => {
                    out.dead_letter_at(reason, record, at);
                    continue;
                }
                None => {}
            }
            let batch = match self.unread.take().map(Ok).or_else(|| self.reader.next()) {
                None => return Ok(false),
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    return Err(Error::user(format!("reading {}: {e}", self.path.display())))
                }
            };
            let batch = self.renamed(&batch)?;
            let first_row = self.row + 1;
            self.row += batch.num_rows() as u64;
            match serde_arrow::from_record_batch::<Vec<T>>(&batch) {
                Ok(rows) => self.ready = rows.into_iter(),
                // Some row cannot become a record (a null in a required
                // field, say): convert row by row to reject just those.
                Err(_) => {
                    for i in 0..batch.num_rows() {
                        match serde_arrow::from_record_batch::<Vec<T>>(&batch.slice(i, 1)) {
                            Ok(rows) => self.mixed.extend(rows.into_iter().map(Ok)),
                            Err(e) => {
                                let at = location(&self.path, first_row + i as u64);
                                self.mixed.push_back(Err((
                                    e.to_string(),
                                    format!("{at} (row)"),
                                    at,
                                )));
                            }
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.row - (self.ready.len() + self.mixed.len()) as u64
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.total_rows)
    }

    fn skip(&mut self, rows: u64) -> Result<()> {
        let mut left = rows;
        while left > 0 && (self.ready.next().is_some() || self.mixed.pop_front().is_some()) {
            left -= 1;
        }
        while left > 0 {
            let batch = match self.unread.take().map(Ok).or_else(|| self.reader.next()) {
                None => return Ok(()),
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    return Err(Error::user(format!("reading {}: {e}", self.path.display())))
                }
            };
            let n = batch.num_rows() as u64;
            if n <= left {
                left -= n;
                self.row += n;
            } else {
                let keep = usize::try_from(left).unwrap_or(usize::MAX);
                self.unread = Some(batch.slice(keep, batch.num_rows() - keep));
                self.row += left;
                left = 0;
            }
        }
        Ok(())
    }
}
