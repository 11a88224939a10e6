//! File sinks: CSV and Parquet, one file written by all subtasks of the sink.
//!
//! Records are written as they arrive; the file is complete when the last
//! subtask finishes (end of input). A Parquet sink on a source's raw stream,
//! at the source's parallelism of 1, is an **archive** of the stream in
//! arrival order, which a [`FileSource`](super::FileSource) replays.
//! (Exactly-once commits on checkpoints come with the checkpoint work.)

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arrow_schema::FieldRef;
use parquet::arrow::ArrowWriter;
use serde::Serialize;
use tideline_engine::{Data, Error, Record, Result, Sink};

pub(crate) fn create(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    File::create(path).map_err(|e| Error::io("create", path, e))
}

/// Why a file format failed to write or read: the file system (kept whole,
/// so the sink reports an External [`Error::Io`] whose kind can be matched),
/// or a record the format cannot represent or parse (a User error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Writing, flushing or closing the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A record cannot be encoded in (or decoded from) the format.
    #[error("{0}")]
    Encode(String),
}

impl FormatError {
    /// The engine error for this failure while doing `action` on `path`.
    pub(crate) fn into_error(self, action: &'static str, path: &Path) -> Error {
        match self {
            FormatError::Io(e) => Error::io(action, path, e),
            FormatError::Encode(reason) => {
                Error::user(format!("cannot {action} {}: {reason}", path.display()))
            }
        }
    }
}

impl From<csv::Error> for FormatError {
    fn from(e: csv::Error) -> Self {
        if e.is_io_error() {
            if let csv::ErrorKind::Io(io) = e.into_kind() {
                return FormatError::Io(io);
            }
            // Unreachable: `is_io_error` means the kind is `Io`.
            return FormatError::Encode("CSV I/O error".to_string());
        }
        FormatError::Encode(e.to_string())
    }
}

impl From<serde_json::Error> for FormatError {
    fn from(e: serde_json::Error) -> Self {
        if e.is_io() {
            // serde_json hands back the original `io::Error` for I/O errors.
            FormatError::Io(e.into())
        } else {
            FormatError::Encode(e.to_string())
        }
    }
}

impl From<parquet::errors::ParquetError> for FormatError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        // The Parquet writer wraps the file's `io::Error` as `External`.
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => FormatError::Io(*io),
                    Err(other) => FormatError::Encode(other.to_string()),
                }
            }
            other => FormatError::Encode(other.to_string()),
        }
    }
}

/// Shared by the subtasks of one file sink; the last to finish closes the file.
struct Shared<W> {
    path: PathBuf,
    writer: Mutex<Option<W>>,
    open_subtasks: AtomicUsize,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, Option<W>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this was the last open subtask.
    fn finish_one(&self) -> bool {
        finish_one(&self.open_subtasks)
    }
}

/// Counts one writer out; `true` for the last. Never goes below zero, so a
/// sink used without clones (made per subtask by a factory) still closes.
fn finish_one(open: &AtomicUsize) -> bool {
    let previous = open
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(1))
        })
        .unwrap_or(0);
    previous <= 1
}

/// How one file format writes records.
pub trait FileFormatWriter<T>: Send + 'static {
    /// The sink's name in errors and the job summary.
    const NAME: &'static str;

    /// Prepares to write the file at `path` (already created).
    ///
    /// # Errors
    /// When the file cannot be written.
    fn open(file: File) -> Result<Self>
    where
        Self: Sized;

    /// Writes one batch of records.
    ///
    /// # Errors
    /// When the file cannot be written or a record cannot be encoded.
    fn write(&mut self, records: &[&T]) -> std::result::Result<(), FormatError>;

    /// Completes the file at `path` (flush, footer).
    ///
    /// # Errors
    /// When the file cannot be written.
    fn close(self, path: &Path) -> std::result::Result<(), FormatError>;
}

/// Writes records to one file, shared by all subtasks of the sink: records
/// are appended as they arrive, and the last subtask to finish closes the
/// file. Use [`CsvSink`], [`JsonLinesSink`] or [`ParquetSink`].
pub struct FileSink<T, F> {
    shared: Arc<Shared<F>>,
    _type: std::marker::PhantomData<fn(T)>,
}

/// CSV rows, with a header from the record's field names.
pub type CsvSink<T> = FileSink<T, CsvWriter>;
/// JSON lines, one object per record.
pub type JsonLinesSink<T> = FileSink<T, JsonLinesWriter>;
/// Parquet, with the schema from the records' serde form.
pub type ParquetSink<T> = FileSink<T, ParquetWriter>;

impl<T, F> std::fmt::Debug for FileSink<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileSink({})", self.shared.path.display())
    }
}

impl<T, F> Clone for FileSink<T, F> {
    /// Each subtask's clone counts as one writer of the file.
    fn clone(&self) -> Self {
        self.shared.open_subtasks.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(&self.shared),
            _type: std::marker::PhantomData,
        }
    }
}

impl<T, F: FileFormatWriter<T>> FileSink<T, F> {
    /// A sink writing `path` (created, with parent directories; replaced if it exists).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let writer = F::open(create(&path)?)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(Some(writer)),
                open_subtasks: AtomicUsize::new(0),
            }),
            _type: std::marker::PhantomData,
        })
    }

    fn failed(&self, e: FormatError) -> Error {
        e.into_error("write", &self.shared.path)
    }
}

impl<T: Data + Serialize, F: FileFormatWriter<T>> Sink<T> for FileSink<T, F> {
    fn name(&self) -> &str {
        F::NAME
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let values: Vec<&T> = batch.iter().map(|r| &r.value).collect();
        let mut guard = self.shared.lock();
        let writer = guard.as_mut().ok_or_else(|| {
            Error::Internal(format!(
                "{} written after close",
                self.shared.path.display()
            ))
        })?;
        writer.write(&values).map_err(|e| self.failed(e))
    }

    fn finish(&mut self) -> Result<()> {
        if self.shared.finish_one() {
            if let Some(writer) = self.shared.lock().take() {
                writer
                    .close(&self.shared.path)
                    .map_err(|e| self.failed(e))?;
            }
        }
        Ok(())
    }
}

/// The CSV format of [`CsvSink`]. Every file starts with a header row: the
/// field names of a struct, or `field_0,field_1,...` for records without
/// names (tuples, numbers), so a reader that takes the first row as the
/// header (as [`read_committed`](super::read_committed) and `FileSource`
/// do) never loses a record.
#[derive(Debug)]
pub struct CsvWriter {
    out: csv::Writer<BufWriter<File>>,
    headed: bool,
}

/// The header row for records like `record`.
fn csv_header<T: Serialize>(record: &T) -> std::result::Result<csv::StringRecord, FormatError> {
    // The csv crate writes a header for records with field names only; a
    // probe shows which kind this is.
    let mut probe = csv::WriterBuilder::new()
        .has_headers(true)
        .from_writer(Vec::new());
    probe.serialize(record)?;
    let bytes = probe
        .into_inner()
        .map_err(|e| FormatError::from(csv::Error::from(e.into_error())))?;
    let rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes.as_slice())
        .records()
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(match rows.as_slice() {
        [header, _] => header.clone(),
        [row] => (0..row.len()).map(|i| format!("field_{i}")).collect(),
        _ => csv::StringRecord::new(),
    })
}

impl<T: Serialize> FileFormatWriter<T> for CsvWriter {
    const NAME: &'static str = "csv_sink";

    fn open(file: File) -> Result<Self> {
        let out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::new(file));
        Ok(Self { out, headed: false })
    }

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), FormatError> {
        if let (false, Some(first)) = (self.headed, records.first()) {
            self.out.write_record(&csv_header(*first)?)?;
            self.headed = true;
        }
        records
            .iter()
            .try_for_each(|r| self.out.serialize(r).map_err(FormatError::from))
    }

    fn close(mut self, _path: &Path) -> std::result::Result<(), FormatError> {
        Ok(self.out.flush()?)
    }
}

/// The JSON-lines format of [`JsonLinesSink`].
#[derive(Debug)]
pub struct JsonLinesWriter(BufWriter<File>);

impl<T: Serialize> FileFormatWriter<T> for JsonLinesWriter {
    const NAME: &'static str = "jsonl_sink";

    fn open(file: File) -> Result<Self> {
        Ok(Self(BufWriter::new(file)))
    }

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), FormatError> {
        use std::io::Write;
        for r in records {
            serde_json::to_writer(&mut self.0, r)?;
            self.0.write_all(b"\n")?;
        }
        Ok(())
    }

    fn close(mut self, _path: &Path) -> std::result::Result<(), FormatError> {
        use std::io::Write;
        Ok(self.0.flush()?)
    }
}

/// The Parquet format of [`ParquetSink`]: the Arrow writer is made at the
/// first batch, whose records give the schema.
pub struct ParquetWriter {
    file: Option<File>,
    writer: Option<ArrowWriter<File>>,
    fields: Vec<FieldRef>,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParquetWriter({} fields)", self.fields.len())
    }
}

impl ParquetWriter {
    /// Takes the schema from `T`'s serde form rather than from the first
    /// batch, when `T` can be traced (records with optional fields that the
    /// first batch leaves empty); otherwise the first batch still decides.
    /// Whether `T` could be traced.
    pub(crate) fn use_schema_of<T: serde::de::DeserializeOwned>(&mut self) -> bool {
        match super::traced_fields::<T>() {
            Some(fields) => {
                self.fields = fields;
                true
            }
            None => false,
        }
    }
}

impl<T: Serialize> FileFormatWriter<T> for ParquetWriter {
    const NAME: &'static str = "parquet_sink";

    fn open(file: File) -> Result<Self> {
        Ok(Self {
            file: Some(file),
            writer: None,
            fields: Vec::new(),
        })
    }

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), FormatError> {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        let encode = |e: serde_arrow::Error| FormatError::Encode(e.to_string());
        if self.writer.is_none() {
            if self.fields.is_empty() {
                self.fields = Vec::<FieldRef>::from_samples(
                    records,
                    TracingOptions::default().allow_null_fields(true),
                )
                .map_err(encode)?;
            }
            let schema = Arc::new(arrow_schema::Schema::new(self.fields.clone()));
            let file = self
                .file
                .take()
                .ok_or_else(|| FormatError::Encode("the Parquet file is gone".to_string()))?;
            self.writer = Some(ArrowWriter::try_new(file, schema, None)?);
        }
        let batch = serde_arrow::to_record_batch(&self.fields, &records).map_err(encode)?;
        match self.writer.as_mut() {
            Some(w) => Ok(w.write(&batch)?),
            None => Err(FormatError::Encode("no Parquet writer".to_string())),
        }
    }

    /// A sink that never got a record has no schema to write, so it leaves
    /// no file rather than an unreadable one.
    fn close(self, path: &Path) -> std::result::Result<(), FormatError> {
        match self.writer {
            Some(writer) => Ok(writer.close().map(|_| ())?),
            None => {
                drop(self.file);
                let _ = std::fs::remove_file(path);
                Ok(())
            }
        }
    }
}

/// Writes `rows` to a CSV file at `path` under `header` (written even when
/// there are no rows), for results collected after a bounded run.
///
/// # Errors
/// When the file cannot be written.
pub fn write_csv<'a, T: Serialize + 'a>(
    path: impl AsRef<Path>,
    header: &[&str],
    rows: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    let path = path.as_ref();
    let failed = |e: FormatError| e.into_error("write", path);
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(BufWriter::new(create(path)?));
    writer.write_record(header).map_err(|e| failed(e.into()))?;
    for row in rows {
        writer.serialize(row).map_err(|e| failed(e.into()))?;
    }
    writer.flush().map_err(|e| failed(e.into()))
}

/// A Parquet sink that writes each record under a directory chosen from the
/// record (for example `date=2026-11-20/hour=13`, from a window's start):
/// `root/<partition>/part.parquet`, one file per partition.
pub struct PartitionedParquetSink<T> {
    root: PathBuf,
    partition: Arc<dyn Fn(&T) -> String + Send + Sync>,
    writers: Arc<Mutex<std::collections::BTreeMap<String, ParquetSink<T>>>>,
    open_subtasks: Arc<AtomicUsize>,
}

impl<T> std::fmt::Debug for PartitionedParquetSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartitionedParquetSink({})", self.root.display())
    }
}

impl<T> Clone for PartitionedParquetSink<T> {
    /// Each subtask's clone counts as one writer of the partitions.
    fn clone(&self) -> Self {
        self.open_subtasks.fetch_add(1, Ordering::SeqCst);
        Self {
            root: self.root.clone(),
            partition: Arc::clone(&self.partition),
            writers: Arc::clone(&self.writers),
            open_subtasks: Arc::clone(&self.open_subtasks),
        }
    }
}

impl<T> PartitionedParquetSink<T> {
    /// Writes under `root`, in the directory `partition` names for each record.
    pub fn new(
        root: impl AsRef<Path>,
        partition: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            root: root.as_ref().to_path_buf(),
            partition: Arc::new(partition),
            writers: Arc::default(),
            open_subtasks: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `date=YYYY-MM-DD/hour=HH` of a time in epoch milliseconds (UTC).
    pub fn date_hour(millis: i64) -> String {
        tideline_engine::EventTime::from_millis(millis)
            .to_datetime()
            .map_or_else(
                || "date=unknown".to_string(),
                |t| t.format("date=%Y-%m-%d/hour=%H").to_string(),
            )
    }
}

impl<T: Data + Serialize> Sink<T> for PartitionedParquetSink<T> {
    fn name(&self) -> &str {
        "partitioned_parquet_sink"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        let mut groups: std::collections::BTreeMap<String, Vec<Record<T>>> =
            std::collections::BTreeMap::new();
        for r in batch {
            groups
                .entry((self.partition)(&r.value))
                .or_default()
                .push(r);
        }
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        for (partition, records) in groups {
            let writer = match writers.entry(partition) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let path = self.root.join(e.key()).join("part.parquet");
                    // One clone: the partition file closes when this sink finishes.
                    let sink = ParquetSink::new(path)?.clone();
                    e.insert(sink)
                }
            };
            writer.write_batch(records)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if finish_one(&self.open_subtasks) {
            let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
            // Close every partition even if one fails; report the first failure.
            let mut first_error = None;
            for (_, mut writer) in std::mem::take(&mut *writers) {
                if let Err(e) = writer.finish() {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::ErrorKind;
    use tideline_engine::ErrorDomain;

    #[test]
    fn a_sink_under_a_regular_file_is_an_external_io_error() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let base = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let blocker = base.join("not-a-dir");
        assert!(std::fs::write(&blocker, b"x").is_ok());
        let err = CsvSink::<u64>::new(blocker.join("sub").join("out.csv")).err();
        assert!(
            matches!(&err, Some(Error::Io { action: "create", path, .. }) if *path == blocker.join("sub")),
            "{err:?}"
        );
        let err = err.map(|e| (e.domain(), e.io_kind()));
        assert_eq!(
            err,
            Some((ErrorDomain::External, Some(ErrorKind::NotADirectory)))
        );
    }

    #[test]
    fn a_full_disk_is_an_external_io_error_with_its_kind() {
        // Linux's /dev/full accepts an open and fails every write with ENOSPC.
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let sink = JsonLinesSink::<u64>::new(full);
        assert!(sink.is_ok(), "{:?}", sink.err());
        let Ok(mut sink) = sink else { return };
        // Buffered, so the failure shows at the latest when the file closes.
        let written = sink.write_batch(vec![Record::untimed(7)]);
        let err = written.and_then(|()| sink.finish()).err();
        assert!(
            matches!(&err, Some(Error::Io { action: "write", path, .. }) if path == full),
            "{err:?}"
        );
        let err = err.map(|e| (e.domain(), e.io_kind()));
        assert_eq!(
            err,
            Some((ErrorDomain::External, Some(ErrorKind::StorageFull)))
        );
    }

    #[test]
    fn a_record_the_format_cannot_encode_is_a_user_error() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let base = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let sink = CsvSink::<BTreeMap<String, u64>>::new(base.join("maps.csv"));
        assert!(sink.is_ok(), "{:?}", sink.err());
        let Ok(mut sink) = sink else { return };
        // The csv crate does not serialize maps: a property of the record
        // type, not of the disk.
        let record = BTreeMap::from([("a".to_string(), 1)]);
        let err = sink.write_batch(vec![Record::untimed(record)]).err();
        assert!(matches!(&err, Some(Error::User(_))), "{err:?}");
        let err = err.map(|e| (e.domain(), e.io_kind()));
        assert_eq!(err, Some((ErrorDomain::User, None)));
    }
}
