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

fn create(path: &Path) -> Result<File> {
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
        self.open_subtasks.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

/// Writes records as CSV rows (header from the record's field names).
pub struct CsvSink<T> {
    shared: Arc<Shared<csv::Writer<BufWriter<File>>>>,
    _type: std::marker::PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for CsvSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CsvSink({})", self.shared.path.display())
    }
}

impl<T> Clone for CsvSink<T> {
    /// Each subtask's clone counts as one writer of the file.
    fn clone(&self) -> Self {
        self.shared.open_subtasks.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(&self.shared),
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> CsvSink<T> {
    /// A sink writing `path` (created, with parent directories; replaced if it exists).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let writer = csv::Writer::from_writer(BufWriter::new(create(&path)?));
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(Some(writer)),
                open_subtasks: AtomicUsize::new(0),
            }),
            _type: std::marker::PhantomData,
        })
    }
}

impl<T: Data + Serialize> Sink<T> for CsvSink<T> {
    fn name(&self) -> &str {
        "csv_sink"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        let mut guard = self.shared.lock();
        let writer = guard.as_mut().ok_or_else(|| {
            Error::Internal(format!(
                "{} written after close",
                self.shared.path.display()
            ))
        })?;
        for r in &batch {
            writer
                .serialize(&r.value)
                .map_err(|e| Error::user(format!("writing {}: {e}", self.shared.path.display())))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.shared.finish_one() {
            if let Some(mut writer) = self.shared.lock().take() {
                writer.flush().map_err(|e| {
                    Error::user(format!("writing {}: {e}", self.shared.path.display()))
                })?;
            }
        }
        Ok(())
    }
}

/// Writes records as JSON lines (one object per line).
pub struct JsonLinesSink<T> {
    shared: Arc<Shared<BufWriter<File>>>,
    _type: std::marker::PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for JsonLinesSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonLinesSink({})", self.shared.path.display())
    }
}

impl<T> Clone for JsonLinesSink<T> {
    /// Each subtask's clone counts as one writer of the file.
    fn clone(&self) -> Self {
        self.shared.open_subtasks.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(&self.shared),
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> JsonLinesSink<T> {
    /// A sink writing `path` (created, with parent directories; replaced if it exists).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let writer = BufWriter::new(create(&path)?);
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(Some(writer)),
                open_subtasks: AtomicUsize::new(0),
            }),
            _type: std::marker::PhantomData,
        })
    }
}

impl<T: Data + Serialize> Sink<T> for JsonLinesSink<T> {
    fn name(&self) -> &str {
        "jsonl_sink"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        use std::io::Write;
        let path = &self.shared.path;
        let failed =
            |e: &dyn std::fmt::Display| Error::user(format!("writing {}: {e}", path.display()));
        let mut guard = self.shared.lock();
        let writer = guard
            .as_mut()
            .ok_or_else(|| Error::Internal(format!("{} written after close", path.display())))?;
        for r in &batch {
            serde_json::to_writer(&mut *writer, &r.value).map_err(|e| failed(&e))?;
            writer.write_all(b"\n").map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        use std::io::Write;
        if self.shared.finish_one() {
            if let Some(mut writer) = self.shared.lock().take() {
                writer.flush().map_err(|e| {
                    Error::user(format!("writing {}: {e}", self.shared.path.display()))
                })?;
            }
        }
        Ok(())
    }
}

/// The Arrow writer (made at the first batch, which gives the schema) and
/// the record fields it was made for.
type ParquetState = (Option<ArrowWriter<File>>, Vec<FieldRef>);

/// Writes records to a Parquet file (schema from the records' serde form).
pub struct ParquetSink<T> {
    shared: Arc<Shared<ParquetState>>,
    _type: std::marker::PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for ParquetSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParquetSink({})", self.shared.path.display())
    }
}

impl<T> Clone for ParquetSink<T> {
    /// Each subtask's clone counts as one writer of the file.
    fn clone(&self) -> Self {
        self.shared.open_subtasks.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(&self.shared),
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> ParquetSink<T> {
    /// A sink writing `path` (created, with parent directories; replaced if it exists).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // Created now so a bad path fails before the job starts; the Arrow
        // writer needs the schema, which the first batch gives.
        create(&path)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(Some((None, Vec::new()))),
                open_subtasks: AtomicUsize::new(0),
            }),
            _type: std::marker::PhantomData,
        })
    }
}

impl<T: Data + Serialize> Sink<T> for ParquetSink<T> {
    fn name(&self) -> &str {
        "parquet_sink"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        if batch.is_empty() {
            return Ok(());
        }
        let path = &self.shared.path;
        let failed =
            |e: &dyn std::fmt::Display| Error::user(format!("writing {}: {e}", path.display()));
        let values: Vec<&T> = batch.iter().map(|r| &r.value).collect();
        let mut guard = self.shared.lock();
        let (writer, fields) = guard
            .as_mut()
            .ok_or_else(|| Error::Internal(format!("{} written after close", path.display())))?;
        if writer.is_none() {
            *fields = Vec::<FieldRef>::from_samples(
                &values,
                TracingOptions::default().allow_null_fields(true),
            )
            .map_err(|e| failed(&e))?;
            let schema = Arc::new(arrow_schema::Schema::new(fields.clone()));
            *writer =
                Some(ArrowWriter::try_new(create(path)?, schema, None).map_err(|e| failed(&e))?);
        }
        let record_batch = serde_arrow::to_record_batch(fields, &values).map_err(|e| failed(&e))?;
        if let Some(w) = writer.as_mut() {
            w.write(&record_batch).map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    /// The last subtask closes the file. A sink that never got a record has
    /// no schema to write, so it leaves no file rather than an unreadable one.
    fn finish(&mut self) -> Result<()> {
        if self.shared.finish_one() {
            let path = &self.shared.path;
            match self.shared.lock().take() {
                Some((Some(writer), _)) => {
                    writer
                        .close()
                        .map_err(|e| Error::user(format!("writing {}: {e}", path.display())))?;
                }
                _ => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(())
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
        if self.open_subtasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, mut writer) in std::mem::take(&mut *writers) {
                writer.finish()?;
            }
        }
        Ok(())
    }
}
