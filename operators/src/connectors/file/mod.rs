//! Reading historical files: Parquet, CSV and JSON lines.
//!
//! A [`FileSource`] reads a file, a directory or a glob. The matching files
//! are read in name order as **one ordered sequence**, so a replay of the same
//! files with the same configuration produces the same watermarks and the
//! same late records, whatever the parallelism downstream (DESIGN.md).
//!
//! - Rows become typed records through serde: CSV and JSON lines row by row
//!   (a row that does not parse becomes a dead letter naming file, row and
//!   reason), Parquet through Arrow record batches with only the needed
//!   columns read.
//! - Columns can be mapped to fields with another name
//!   ([`FileSource::column`]).
//! - Before the job starts, every file is opened and its columns checked
//!   against the record type. A missing column, or a Parquet column whose
//!   type cannot become the field's type, fails the job with the file and
//!   column named.
//! - [`ReplayOrder::Arrival`] keeps file order. [`ReplayOrder::EventTime`]
//!   sorts all rows by event time (in memory: the input must fit).
//! - [`FileSource::partition_per_file`] (or [`FileSource::partition_per_folder`])
//!   makes each file (each folder) its own source partition, read in its
//!   own order with its own watermark generator: a directory replays in
//!   parallel, and, lateness being judged per partition, with the same late
//!   records at any parallelism. An archive written one file per live
//!   partition ([`partitioned_archive`]) replays exactly like the live run.

mod archive;
mod csv;
mod exactly_once;
mod jsonl;
mod parquet;
#[cfg(feature = "sql")]
mod predicate;
mod reader;
mod sink;
mod sorted_csv;

pub use archive::ArchivingSource;
pub use exactly_once::{
    committed_files, read_committed, ExactlyOnceCsvSink, ExactlyOnceFileSink,
    ExactlyOnceJsonLinesSink, ExactlyOnceParquetSink, PartExtension,
};
pub(crate) use exactly_once::{exists, rename, sync_dir, sync_file};
pub use sink::{
    write_csv, CsvSink, CsvWriter, FileFormatWriter, FileSink, FormatError, JsonLinesSink,
    JsonLinesWriter, ParquetSink, ParquetWriter, PartitionedParquetSink,
};
pub use sorted_csv::sort_committed_csv;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_engine::{
    Data, Error, ReaderContext, Result, Source, SourceOffset, SourceOutput, SourceReader,
};

/// A file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    JsonLines,
}

impl FileFormat {
    /// The format a file name's extension implies.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            _ => None,
        }
    }
}

/// How a file source's files become source partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FilePartitioning {
    /// All files, in name order, are one partition.
    #[default]
    Single,
    /// Each file is a partition.
    PerFile,
    /// The files of each folder (e.g. a Hive `name=value` folder), in name
    /// order, are a partition.
    PerFolder,
}

/// The Arrow fields of record type `T`, traced from its serde form; `None`
/// for types that cannot be traced (e.g. untagged enums), whose rows are
/// then checked one by one.
pub(crate) fn traced_fields<T: DeserializeOwned>() -> Option<Vec<arrow_schema::FieldRef>> {
    use serde_arrow::schema::{SchemaLike, TracingOptions};
    Vec::<arrow_schema::FieldRef>::from_type::<T>(TracingOptions::default().allow_null_fields(true))
        .ok()
}

/// The folder layout of a partitioned archive: `partition=<n>` under the
/// archive's root, zero-padded so that name order is partition order.
pub fn partitioned_archive(partition: usize) -> String {
    format!("partition={partition:05}")
}

/// How fast a file source emits its rows.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Pacing {
    /// As fast as the job can take them.
    #[default]
    AsFastAsPossible,
    /// At most this many records per second (the job's clock).
    RecordsPerSecond(f64),
    /// Event time replayed `factor` times faster than it passed (needs
    /// [`FileSource::event_time`]); `60.0` replays an hour per minute.
    Speed(f64),
}

/// In which order a file source emits its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplayOrder {
    /// File order (files by name): reproduces the live run, late data included.
    #[default]
    Arrival,
    /// Sorted by event time across all files: complete results, no late data.
    EventTime,
}

/// Which columns to read and the record field each one fills.
#[derive(Clone, Debug)]
pub(crate) struct Columns {
    /// `(field, column)` pairs, one per field of the record type.
    pub(crate) mapping: Vec<(String, String)>,
    /// The record type's fields: `(name, nullable, type)`.
    pub(crate) fields: Vec<(String, bool, Option<arrow_schema::DataType>)>,
    /// Hive-style `name=value` directories above the file: extra columns.
    pub(crate) partition: Vec<(String, String)>,
}

impl Columns {
    /// The file column for `field`.
    pub(crate) fn column_of<'a>(&'a self, field: &'a str) -> &'a str {
        self.mapping
            .iter()
            .find(|(f, _)| f == field)
            .map_or(field, |(_, c)| c.as_str())
    }

    /// The field a file column fills, if any.
    pub(crate) fn field_of(&self, column: &str) -> Option<&str> {
        if let Some((f, _)) = self.mapping.iter().find(|(_, c)| c == column) {
            return Some(f);
        }
        self.fields
            .iter()
            .find(|(f, _, _)| f == column && !self.mapping.iter().any(|(mf, _)| mf == f))
            .map(|(f, _, _)| f.as_str())
    }

    /// The same columns for a file under `name=value` directories.
    pub(crate) fn for_file(&self, file: &Path) -> Columns {
        let partition = file
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .filter_map(|c| c.as_os_str().to_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Columns {
            partition,
            ..self.clone()
        }
    }

    /// Whether record field `field` holds an integer (partition values for
    /// it are parsed as numbers).
    pub(crate) fn is_integer(&self, field: &str) -> bool {
        self.fields
            .iter()
            .any(|(f, _, t)| f == field && t.as_ref().is_some_and(|t| t.is_integer()))
    }

    /// The name a file column gets in records: the field it fills; or, for a
    /// column whose name is a field filled from another column, a name no
    /// field has (so the two do not collide); or its own name.
    pub(crate) fn record_name<'a>(&'a self, column: &'a str) -> std::borrow::Cow<'a, str> {
        match self.field_of(column) {
            Some(field) => std::borrow::Cow::Borrowed(field),
            None if self.fields.iter().any(|(f, _, _)| f == column) => {
                std::borrow::Cow::Owned(format!("__unused_{column}"))
            }
            None => std::borrow::Cow::Borrowed(column),
        }
    }

    /// The partition columns that fill record fields: `(field, value)`.
    pub(crate) fn partition_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.partition
            .iter()
            .filter_map(|(column, value)| Some((self.field_of(column)?, value.as_str())))
    }

    /// Checks `available` file columns (plus partition columns) cover every non-optional field.
    pub(crate) fn check_present(&self, file: &Path, available: &[String]) -> Result<()> {
        let available: Vec<String> = available
            .iter()
            .cloned()
            .chain(self.partition.iter().map(|(k, _)| k.clone()))
            .collect();
        for (field, nullable, _) in &self.fields {
            let column = self.column_of(field);
            if !nullable && !available.iter().any(|c| c == column) {
                return Err(Error::config(
                    format!("file_source.column '{column}'"),
                    format!(
                        "missing in {} (it has: {}){}",
                        file.display(),
                        available.join(", "),
                        if column == field {
                            String::new()
                        } else {
                            format!("; it fills field '{field}'")
                        }
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where a row came from, for dead letters.
pub(crate) fn location(file: &Path, row: u64) -> String {
    format!("{}:{row}", file.display())
}

/// Reads one file's rows into the source output.
pub(crate) trait FileRows<T>: Send {
    /// Appends up to `out.remaining()` rows; `false` once the file is exhausted.
    fn read(&mut self, out: &mut SourceOutput<T>) -> Result<bool>;

    /// Input rows consumed so far (records, dead letters and blank lines alike).
    fn position(&self) -> u64;

    /// The rows the file holds (that it will read), if known without
    /// reading it (Parquet metadata).
    fn total_rows(&self) -> Option<u64> {
        None
    }

    /// Consumes exactly `rows` more input rows (fewer at the end of the file)
    /// without emitting them: resuming from an offset.
    fn skip(&mut self, rows: u64) -> Result<()>;
}

/// A time range to prune Parquet row groups with: `(column, start, end)`.
pub(crate) type Prune<'a> = Option<(&'a str, i64, i64)>;

fn open_rows<T: Data + DeserializeOwned>(
    path: &Path,
    format: FileFormat,
    columns: &Columns,
    batch_rows: usize,
    prune: Prune<'_>,
) -> Result<Box<dyn FileRows<T>>> {
    Ok(match format {
        FileFormat::Csv => Box::new(csv::CsvRows::open(path, columns)?),
        FileFormat::JsonLines => Box::new(jsonl::JsonRows::open(path, columns)?),
        FileFormat::Parquet => Box::new(parquet::ParquetRows::open(
            path, columns, batch_rows, prune,
        )?),
    })
}

pub(crate) type SortKey<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// A bounded source over files; see the [module docs](self).
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use tideline_operators::connectors::file::{FileSource, ReplayOrder};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Click { user: i64, ts: i64 }
///
/// let clicks = FileSource::<Click>::new("data/clicks/*.parquet")?
///     .column("user", "user_id")
///     .event_time(|c| c.ts)
///     .order(ReplayOrder::EventTime);
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct FileSource<T> {
    pattern: String,
    files: Vec<PathBuf>,
    format: Option<FileFormat>,
    mapping: Vec<(String, String)>,
    order: ReplayOrder,
    event_time: Option<SortKey<T>>,
    pacing: Pacing,
    batch_rows: usize,
    /// `[start, end)` of event time to keep, and the field holding it.
    range: Option<(String, i64, i64)>,
    /// Rows sorted in memory before sorted runs spill to disk.
    sort_memory_rows: usize,
    /// A SQL condition over the record's fields.
    #[cfg(feature = "sql")]
    predicate: Option<String>,
    /// The files of each source partition, in reading order.
    partitions: Vec<Vec<PathBuf>>,
}

impl<T> fmt::Debug for FileSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("pattern", &self.pattern)
            .field("files", &self.files.len())
            .field("format", &self.format)
            .field("order", &self.order)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

/// The files `pattern` names: a file, every file of a directory (recursively,
/// e.g. Hive-style `date=2026-11-20/` folders), or a glob; sorted by name.
pub fn resolve_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let mut files = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        let mut found = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                Error::config(
                    "file_source.input",
                    format!("cannot list {}: {e}", dir.display()),
                )
            })?;
            for entry in entries {
                let p = entry
                    .map_err(|e| {
                        Error::config(
                            "file_source.input",
                            format!("cannot list {}: {e}", dir.display()),
                        )
                    })?
                    .path();
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(['.', '_']));
                if hidden {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    found.push(p);
                }
            }
        }
        found
    } else {
        let matches = glob::glob(pattern).map_err(|e| {
            Error::config(
                "file_source.input",
                format!("'{pattern}' is not a valid glob: {e}"),
            )
        })?;
        matches
            .filter_map(std::result::Result::ok)
            .filter(|p| p.is_file())
            .collect()
    };
    if files.is_empty() {
        return Err(Error::config(
            "file_source.input",
            format!("'{pattern}' matches no file (no such file, empty directory or glob without matches)"),
        ));
    }
    files.sort();
    Ok(files)
}

impl<T: Data + DeserializeOwned> FileSource<T> {
    /// Reads the files `pattern` names (see [`resolve_files`]).
    ///
    /// # Errors
    /// When nothing matches.
    pub fn new(pattern: &str) -> Result<Self> {
        let files = resolve_files(pattern)?;
        Ok(Self {
            pattern: pattern.to_string(),
            partitions: vec![files.clone()],
            files,
            format: None,
            mapping: Vec::new(),
            order: ReplayOrder::Arrival,
            event_time: None,
            pacing: Pacing::AsFastAsPossible,
            batch_rows: 8_192,
            range: None,
            sort_memory_rows: 10_000_000,
            #[cfg(feature = "sql")]
            predicate: None,
        })
    }

    /// The files, in the order they are read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Makes each file its own source partition (see [`FilePartitioning`]):
    /// files are read in parallel (one source subtask per file, up to the
    /// parallelism), each with its own watermarks. Per partition: in
    /// event-time order each partition is sorted on its own (with its own
    /// [`FileSource::sort_memory_rows`] budget), and [`Pacing`] applies to
    /// each partition (so `RecordsPerSecond(r)` over `n` partitions emits up
    /// to `n * r` in all).
    pub fn partition_per_file(self) -> Self {
        self.partitioning(FilePartitioning::PerFile)
    }

    /// Makes the files of each folder one source partition (see [`FilePartitioning`]).
    pub fn partition_per_folder(self) -> Self {
        self.partitioning(FilePartitioning::PerFolder)
    }

    /// How files become source partitions (default: all files are one).
    pub fn partitioning(mut self, partitioning: FilePartitioning) -> Self {
        self.partitions = match partitioning {
            FilePartitioning::Single => vec![self.files.clone()],
            FilePartitioning::PerFile => self.files.iter().map(|f| vec![f.clone()]).collect(),
            FilePartitioning::PerFolder => {
                let mut folders: std::collections::BTreeMap<&Path, Vec<PathBuf>> =
                    std::collections::BTreeMap::new();
                for f in &self.files {
                    folders
                        .entry(f.parent().unwrap_or(Path::new("")))
                        .or_default()
                        .push(f.clone());
                }
                folders.into_values().collect()
            }
        };
        self
    }

    /// The files of each source partition, in reading order.
    pub fn partition_files(&self) -> &[Vec<PathBuf>] {
        &self.partitions
    }

    /// Reads every file as `format` whatever its extension.
    pub fn format(mut self, format: FileFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Fills record field `field` from file column `column`.
    pub fn column(mut self, field: &str, column: &str) -> Self {
        self.mapping.retain(|(f, _)| f != field);
        self.mapping.push((field.to_string(), column.to_string()));
        self
    }

    /// Each record's event time (ms), for event-time order and speed pacing.
    pub fn event_time(mut self, event_time: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        self.event_time = Some(Arc::new(event_time));
        self
    }

    /// Emits rows in `order` (event-time order needs [`FileSource::event_time`]).
    pub fn order(mut self, order: ReplayOrder) -> Self {
        self.order = order;
        self
    }

    /// Keeps only records whose event time (field `field`, milliseconds) is
    /// in `[start, end)`. Parquet row groups whose statistics show no row in
    /// the range are not read at all, so `field` must hold exactly what
    /// [`FileSource::event_time`] returns (epoch milliseconds), which is also
    /// required. An empty range is a configuration error.
    pub fn time_range(mut self, field: &str, start: i64, end: i64) -> Self {
        self.range = Some((field.to_string(), start, end));
        self
    }

    /// Keeps only records for which the SQL condition `sql` (over the
    /// record's fields, e.g. `"value > 10 AND key <> 3"`) is true. Checked
    /// when the job is built: an unknown field or a non-boolean condition is
    /// a configuration error naming `file_source.predicate`. Needs the `sql`
    /// feature (DataFusion).
    #[cfg(feature = "sql")]
    pub fn filter(mut self, sql: &str) -> Self {
        self.predicate = Some(sql.to_string());
        self
    }

    /// In event-time order, how many rows are sorted in memory before
    /// sorted runs spill to temporary files (default 10 million).
    pub fn sort_memory_rows(mut self, rows: usize) -> Self {
        self.sort_memory_rows = rows.max(1);
        self
    }

    /// Paces the replay (default: as fast as possible).
    pub fn pace(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    /// Per Parquet file, `(row groups to read, row groups in the file)` given
    /// the time range: what pruning saves.
    ///
    /// # Errors
    /// When a file cannot be read as Parquet.
    pub fn row_group_plan(&self) -> Result<Vec<(PathBuf, usize, usize)>> {
        let columns = self.columns();
        let mut plan = Vec::new();
        for path in &self.files {
            if self.format_of(path)? == FileFormat::Parquet {
                let prune = self
                    .range
                    .as_ref()
                    .map(|(field, start, end)| (columns.column_of(field), *start, *end));
                let (kept, total) = parquet::row_groups(path, prune)?;
                plan.push((path.clone(), kept.len(), total));
            }
        }
        Ok(plan)
    }

    /// The number of rows, when the files say it without being read (Parquet
    /// metadata); `None` if any file is CSV or JSON lines.
    pub fn total_rows_hint(&self) -> Option<u64> {
        let mut total = 0u64;
        for path in &self.files {
            if self.format_of(path).ok()? != FileFormat::Parquet {
                return None;
            }
            total += parquet::row_count(path).ok()?;
        }
        Some(total)
    }

    fn columns(&self) -> Columns {
        // Records that cannot be traced (e.g. untagged enums) are checked row by row only.
        let fields = traced_fields::<T>()
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| {
                        (
                            f.name().clone(),
                            f.is_nullable(),
                            Some(f.data_type().clone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Columns {
            mapping: self.mapping.clone(),
            fields,
            partition: Vec::new(),
        }
    }

    fn format_of(&self, path: &Path) -> Result<FileFormat> {
        self.format.or_else(|| FileFormat::from_path(path)).ok_or_else(|| {
            Error::config(
                "file_source.format",
                format!(
                    "cannot tell the format of {} from its extension (use .parquet, .csv or .jsonl, or set the format)",
                    path.display()
                ),
            )
        })
    }
}

impl<T: Data + Serialize + DeserializeOwned + Sync> Source<T> for FileSource<T> {
    fn name(&self) -> &str {
        "file_source"
    }

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(self.paced(self.open_reader(partition)?, ctx))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let mut reader = self.open_reader(partition)?;
        reader.resume(offset)?;
        Ok(self.paced(reader, ctx))
    }
}

impl<T: Data + Serialize + DeserializeOwned + Sync> FileSource<T> {
    /// Opens every file of `partition` (so bad paths, formats and schemas
    /// fail before the job starts) behind one reader.
    fn open_reader(&self, partition: usize) -> Result<reader::FileReader<T>> {
        let partition_files = self.partitions.get(partition).ok_or_else(|| {
            Error::Internal(format!(
                "file source has {} partitions, asked for partition {partition}",
                self.partitions.len()
            ))
        })?;
        if self.order == ReplayOrder::EventTime && self.event_time.is_none() {
            return Err(Error::config(
                "file_source.order",
                "event-time order needs an event-time function",
            ));
        }
        match self.pacing {
            Pacing::Speed(_) if self.event_time.is_none() => {
                return Err(Error::config(
                    "file_source.pace",
                    "speed pacing needs an event-time function",
                ))
            }
            Pacing::Speed(r) | Pacing::RecordsPerSecond(r) if !(r.is_finite() && r > 0.0) => {
                return Err(Error::config(
                    "file_source.pace",
                    format!("{r} is not a positive number"),
                ))
            }
            _ => {}
        }
        let columns = self.columns();
        // Open every file now: bad paths, formats and schemas fail before the job starts.
        let mut files = Vec::with_capacity(partition_files.len());
        for path in partition_files {
            let format = self.format_of(path)?;
            let prune = self
                .range
                .as_ref()
                .map(|(field, start, end)| (columns.column_of(field), *start, *end));
            let rows = open_rows::<T>(
                path,
                format,
                &columns.for_file(path),
                self.batch_rows,
                prune,
            )?;
            files.push(rows);
        }
        if let Some((field, start, end)) = &self.range {
            if start >= end {
                return Err(Error::config(
                    "file_source.time_range",
                    format!("[{start}, {end}) of field '{field}' is empty"),
                ));
            }
        }
        if self.range.is_some() && self.event_time.is_none() {
            return Err(Error::config(
                "file_source.time_range",
                "a time range needs an event-time function",
            ));
        }
        #[cfg(feature = "sql")]
        let predicate = match &self.predicate {
            Some(sql) => {
                let fields = traced_fields::<T>().unwrap_or_default();
                Some(Arc::new(predicate::Predicate::compile(sql, fields)?))
            }
            None => None,
        };
        let files = reader::Files {
            files: files.into(),
            #[cfg(feature = "sql")]
            predicate,
            done: 0,
            rows_done: 0,
            range: match (&self.range, &self.event_time) {
                (Some((_, start, end)), Some(time)) => Some((*start, *end, Arc::clone(time))),
                _ => None,
            },
        };
        let sort = match self.order {
            ReplayOrder::Arrival => None,
            ReplayOrder::EventTime => self
                .event_time
                .clone()
                .map(|key| (key, self.sort_memory_rows)),
        };
        Ok(reader::FileReader::new(files, sort))
    }

    /// Wraps `reader` in the configured pacing.
    fn paced(
        &self,
        reader: reader::FileReader<T>,
        ctx: &ReaderContext,
    ) -> Box<dyn SourceReader<T>> {
        match self.pacing {
            Pacing::AsFastAsPossible => Box::new(reader),
            pacing => Box::new(reader::Paced {
                inner: reader,
                pacing,
                event_time: self.event_time.clone(),
                clock: Arc::clone(&ctx.clock),
                held: std::collections::VecDeque::new(),
                held_rejects: Vec::new(),
                held_from: None,
                finished: false,
                started: None,
                emitted: 0,
            }),
        }
    }
}
