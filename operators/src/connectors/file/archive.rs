//! Archiving a live stream per source partition, for an exact replay.
//!
//! [`ArchivingSource`] wraps any source and, as each partition's reader
//! emits records, appends them to that partition's own Parquet file,
//! `root/partition=NNNNN/part.parquet` ([`partitioned_archive`]). The
//! records are the source's, in the order the partition emitted them, so a
//! [`FileSource`](super::FileSource) over `root` with
//! [`partition_per_folder`](super::FileSource::partition_per_folder) and the
//! same watermark strategy gives every partition the same record sequence,
//! hence the same watermarks and, lateness being judged per partition, the
//! same late records and windows, at any parallelism.
//!
//! Invariants and limits:
//! - the folder names the partition and the row position is the record's
//!   position in it (the archive of a source started from its beginning);
//! - only record values are archived, so event time must come from the
//!   value (`WatermarkStrategy::with_timestamps`): a record the source
//!   timestamped itself, or an explicit watermark from the source, stops the
//!   job with an error rather than archive what a replay cannot reproduce.
//!   Input the wrapped reader rejects (its dead letters) is not archived;
//!   archive raw input and parse it in the job (as `examples/quickstart.rs`
//!   does) to replay those too;
//! - a partition file that already exists is an error (archive into an
//!   empty directory), so an earlier run's partitions never mix in;
//! - a partition's file is complete when the partition ends, or when its
//!   reader is dropped (a stopped job); a crash leaves an unreadable file;
//! - an archiving source does not resume from a checkpoint: a restored job
//!   would append a second copy of the records after the checkpoint, so it
//!   refuses with a configuration error. Checkpoints can still be taken.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_engine::{
    Data, Error, ReaderContext, Result, Source, SourceOffset, SourceOutput, SourceReader,
    SourceStatus,
};

use super::partitioned_archive;
use super::sink::{create, FileFormatWriter, FormatError, ParquetWriter};

/// A source whose partitions are archived to Parquet as they are read:
/// each partition's records, in the order it emitted them, go to
/// `root/partition=NNNNN/part.parquet` ([`partitioned_archive`]), so a
/// [`FileSource`](super::FileSource) over `root` with
/// [`partition_per_folder`](super::FileSource::partition_per_folder) and the
/// same watermark strategy replays every partition's sequence exactly: the
/// same watermarks, late records and windows, at any parallelism.
///
/// A partition's file is complete when the partition ends or its reader is
/// dropped (a stopped job). An archiving source can be checkpointed but does
/// not resume from a checkpoint (the archive would hold the records after
/// the checkpoint twice): a restore is refused with a configuration error.
#[derive(Debug)]
pub struct ArchivingSource<S> {
    inner: S,
    root: PathBuf,
}

impl<S> ArchivingSource<S> {
    /// Archives `inner`'s partitions under `root`.
    pub fn new(inner: S, root: impl AsRef<Path>) -> Self {
        Self {
            inner,
            root: root.as_ref().to_path_buf(),
        }
    }
}

impl<T, S> Source<T> for ArchivingSource<S>
where
    T: Data + Serialize + DeserializeOwned + Sync,
    S: Source<T>,
{
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let path = self
            .root
            .join(partitioned_archive(partition))
            .join("part.parquet");
        if path.exists() {
            return Err(Error::config(
                format!("source '{}'.archive", self.inner.name()),
                format!(
                    "{} exists: archive into an empty directory, so that no earlier run's \
                     partitions are replayed with this one's",
                    path.display()
                ),
            ));
        }
        let inner = self.inner.create_reader(partition, ctx)?;
        let mut writer = <ParquetWriter as FileFormatWriter<T>>::open(create(&path)?)?;
        // The schema from the type, not from the first records (whose
        // optional fields may all be empty), where the type allows.
        writer.use_schema_of::<T>();
        Ok(Box::new(ArchivingReader {
            inner,
            writer: Some(writer),
            path,
            source: self.inner.name().to_string(),
        }))
    }

    fn create_reader_at(
        &self,
        _partition: usize,
        _ctx: &ReaderContext,
        _offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Err(Error::config(
            format!("source '{}'.archive", self.inner.name()),
            "an archived source cannot resume from a checkpoint (the archive would hold the \
             records after the checkpoint twice); archive with an exactly-once Parquet sink instead",
        ))
    }
}

struct ArchivingReader<T> {
    inner: Box<dyn SourceReader<T>>,
    writer: Option<ParquetWriter>,
    path: PathBuf,
    /// The wrapped source's name, for errors.
    source: String,
}

impl<T> ArchivingReader<T> {
    /// Completes the partition's file, once.
    fn close(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(w) => close_untyped(w, &self.path).map_err(|e| e.into_error("close", &self.path)),
            None => Ok(()),
        }
    }
}

impl<T: Data + Serialize> SourceReader<T> for ArchivingReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        let before = out.len();
        let status = self.inner.poll(out)?;
        let new = out.records().get(before..).unwrap_or_default();
        let unarchivable = if new.iter().any(|r| r.timestamp.is_set()) {
            Some("a record timestamped by the source")
        } else if out.has_watermark() {
            Some("an explicit watermark from the source")
        } else {
            None
        };
        if let Some(what) = unarchivable {
            return Err(Error::config(
                format!("source '{}'.archive", self.source),
                format!(
                    "{what} cannot be archived (only record values are): take event time \
                     from the value with WatermarkStrategy::with_timestamps"
                ),
            ));
        }
        if let Some(writer) = &mut self.writer {
            let new: Vec<&T> = new.iter().map(|r| &r.value).collect();
            if !new.is_empty() {
                writer
                    .write(&new)
                    .map_err(|e| e.into_error("write", &self.path))?;
            }
        }
        if status == SourceStatus::Finished {
            self.close()?;
        }
        Ok(status)
    }

    fn offset(&self) -> Option<SourceOffset> {
        self.inner.offset()
    }

    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        self.inner.progress()
    }
}

impl<T> Drop for ArchivingReader<T> {
    fn drop(&mut self) {
        // A stopped job's partition file is complete up to where it stopped.
        let _ = self.close();
    }
}

/// Closes a Parquet file without knowing its record type (the footer does
/// not depend on it).
fn close_untyped(writer: ParquetWriter, path: &Path) -> std::result::Result<(), FormatError> {
    <ParquetWriter as FileFormatWriter<()>>::close(writer, path)
}
