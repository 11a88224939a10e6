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
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::user(format!("cannot create {}: {e}", dir.display())))?;
    }
    File::create(path).map_err(|e| Error::user(format!("cannot create {}: {e}", path.display())))
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
    /// When the file cannot be written.
    fn write(&mut self, records: &[&T]) -> std::result::Result<(), String>;

    /// Completes the file at `path` (flush, footer).
    ///
    /// # Errors
    /// When the file cannot be written.
    fn close(self, path: &Path) -> std::result::Result<(), String>;
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

    fn failed(&self, reason: impl std::fmt::Display) -> Error {
        Error::user(format!("writing {}: {reason}", self.shared.path.display()))
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
        let writer = guard
            .as_mut()
            .ok_or_else(|| self.failed("written after close"))?;
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

/// The CSV format of [`CsvSink`].
#[derive(Debug)]
pub struct CsvWriter(csv::Writer<BufWriter<File>>);

impl<T: Serialize> FileFormatWriter<T> for CsvWriter {
    const NAME: &'static str = "csv_sink";

    fn open(file: File) -> Result<Self> {
        Ok(Self(csv::Writer::from_writer(BufWriter::new(file))))
    }

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), String> {
        records
            .iter()
            .try_for_each(|r| self.0.serialize(r).map_err(|e| e.to_string()))
    }

    fn close(mut self, _path: &Path) -> std::result::Result<(), String> {
        self.0.flush().map_err(|e| e.to_string())
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

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), String> {
        use std::io::Write;
        for r in records {
            serde_json::to_writer(&mut self.0, r).map_err(|e| e.to_string())?;
            self.0.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn close(mut self, _path: &Path) -> std::result::Result<(), String> {
        use std::io::Write;
        self.0.flush().map_err(|e| e.to_string())
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
    pub(crate) fn use_schema_of<T: serde::de::DeserializeOwned>(&mut self) {
        if let Some(fields) = super::traced_fields::<T>() {
            self.fields = fields;
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

    fn write(&mut self, records: &[&T]) -> std::result::Result<(), String> {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        if self.writer.is_none() {
            if self.fields.is_empty() {
                self.fields = Vec::<FieldRef>::from_samples(
                    records,
                    TracingOptions::default().allow_null_fields(true),
                )
                .map_err(|e| e.to_string())?;
            }
            let schema = Arc::new(arrow_schema::Schema::new(self.fields.clone()));
            let file = self.file.take().ok_or("the Parquet file is gone")?;
            self.writer =
                Some(ArrowWriter::try_new(file, schema, None).map_err(|e| e.to_string())?);
        }
        let batch =
            serde_arrow::to_record_batch(&self.fields, &records).map_err(|e| e.to_string())?;
        match self.writer.as_mut() {
            Some(w) => w.write(&batch).map_err(|e| e.to_string()),
            None => Err("no Parquet writer".into()),
        }
    }

    /// A sink that never got a record has no schema to write, so it leaves
    /// no file rather than an unreadable one.
    fn close(self, path: &Path) -> std::result::Result<(), String> {
        match self.writer {
            Some(writer) => writer.close().map(|_| ()).map_err(|e| e.to_string()),
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
    let failed =
        |e: &dyn std::fmt::Display| Error::user(format!("writing {}: {e}", path.display()));
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(BufWriter::new(create(path)?));
    writer.write_record(header).map_err(|e| failed(&e))?;
    for row in rows {
        writer.serialize(row).map_err(|e| failed(&e))?;
    }
    writer.flush().map_err(|e| failed(&e))
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
