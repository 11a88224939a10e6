//! The source interface. A source has partitions; each partition is read by
//! one reader, in order, and has its own watermark generator. A source
//! subtask reads its partitions round-robin, one batch each, and emits the
//! minimum of their watermarks after every batch, so where watermarks fall is
//! a deterministic function of each partition's record sequence.

use std::sync::Arc;

use crate::error::Result;
use crate::record::Record;
use crate::time::{Clock, EventTime};

/// A source of records of type `T`.
pub trait Source<T>: Send + Sync + 'static {
    /// A short name for errors and the job summary.
    fn name(&self) -> &str {
        "source"
    }

    /// How many partitions the source has (at least 1).
    fn partitions(&self) -> usize;

    /// Whether every partition ends by itself.
    fn is_bounded(&self) -> bool;

    /// Opens partition `partition`.
    ///
    /// # Errors
    /// When the partition cannot be opened; the job does not start.
    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>>;

    /// Opens partition `partition` positioned at `offset` (taken from
    /// [`SourceReader::offset`] of an earlier reader): it continues right
    /// after the last record that reader had emitted. Sources that cannot
    /// replay keep this default, which refuses.
    ///
    /// # Errors
    /// When the source cannot resume, or the offset does not fit it.
    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let _ = (partition, ctx, offset);
        Err(crate::error::Error::config(
            format!("source '{}'.offset", self.name()),
            "this source cannot resume from an offset",
        ))
    }

    /// How often each source subtask asks [`Source::discover_partitions`]
    /// whether partitions were added. `None` (the default): never. Only
    /// unbounded sources are asked.
    fn partition_discovery_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// The number of partitions now, never fewer than before: partitions
    /// numbered from the previous count up are new, and the subtask that
    /// owns each (`partition % parallelism`) opens a reader for it with
    /// [`Source::create_reader`] and a watermark generator of its own. Its
    /// watermark starts at `-inf`, so the subtask's watermark waits for it
    /// (or for its idleness). Called on the subtask's thread: a source that
    /// cannot reach its system now should answer the count it knows.
    ///
    /// # Errors
    /// Any error fails the job.
    fn discover_partitions(&self) -> Result<usize> {
        Ok(self.partitions())
    }

    /// A restored job is about to open this source's readers; `offsets` are
    /// every partition offset the checkpoint holds for it (all subtasks'),
    /// by partition number. A source whose partition numbering depends on
    /// history (partitions discovered while it ran) makes the same numbering
    /// again here; [`Source::partitions`] is asked after this. The default
    /// does nothing.
    ///
    /// # Errors
    /// When the checkpoint's partitions do not fit the source; the job does
    /// not start.
    fn restore_partitions(&self, offsets: &[(usize, SourceOffset)]) -> Result<()> {
        let _ = offsets;
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete and durable; `offsets` are the
    /// positions it recorded for every partition of this source (finished
    /// ones included). The moment to commit consumer-group offsets or to
    /// confirm a replication position upstream: a restore never goes back
    /// before them. Called on the checkpoint thread, in id order, after the
    /// sinks committed (see the [`checkpoint`](crate::checkpoint) module for
    /// the guarantees); also called again, before the job starts, for the
    /// checkpoint a job restores from, so a crash between completion and
    /// this call loses nothing. The default does nothing.
    ///
    /// # Errors
    /// Any error fails the job.
    fn notify_checkpoint_complete(
        &self,
        checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        let _ = (checkpoint, offsets);
        Ok(())
    }

    /// Checkpoint `checkpoint` was given up and will never complete. The
    /// default does nothing.
    ///
    /// # Errors
    /// Any error fails the job.
    fn notify_checkpoint_aborted(&self, checkpoint: u64) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }
}

/// Where a reader stands in its partition: a few integers only its source
/// interprets. Checkpoints record it; [`Source::create_reader_at`] resumes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceOffset(pub Vec<u64>);

/// What a reader knows about where it runs.
#[derive(Clone, Debug)]
pub struct ReaderContext {
    /// The job's processing-time clock.
    pub clock: Arc<dyn Clock>,
    /// The number of partitions of the source.
    pub partitions: usize,
    /// The source subtask that will poll the reader (readers of one subtask
    /// are polled from one thread, so they may share a client).
    pub subtask: crate::sink::SubtaskInfo,
}

/// Reads one partition.
pub trait SourceReader<T>: Send {
    /// Appends up to `out.remaining()` records (and optionally an explicit
    /// watermark). Must not block for long: return [`SourceStatus::Pending`]
    /// when nothing is available yet.
    ///
    /// # Errors
    /// Any error stops the job and is reported with the source's name.
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus>;

    /// The position after everything this reader has emitted, if it can be
    /// resumed from (see [`Source::create_reader_at`]).
    fn offset(&self) -> Option<SourceOffset> {
        None
    }

    /// Where the reader stands and how much is left, for metrics and
    /// progress bars (sampled a few times a second, on the subtask's
    /// thread: keep it cheap, no network round trip). `None` (the default):
    /// the source cannot tell.
    fn progress(&self) -> Option<PartitionProgress> {
        None
    }
}

/// Where a reader stands in its partition, in a unit of the source's
/// choosing (a Kafka offset, rows of a file, bytes of a log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The position after what was read.
    pub position: u64,
    /// How far behind the reader is, in the same unit, if the source knows:
    /// what is left before a bounded partition ends, or how much newer
    /// data waits in an unbounded one.
    pub lag: Option<u64>,
    /// The partition ends when `lag` reaches 0: `position + lag` is where
    /// it ends (what a progress bar may show as 100 %).
    pub bounded: bool,
}

/// What [`SourceReader::poll`] says about its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More may come right away.
    Ready,
    /// Nothing available now; poll again later.
    Pending,
    /// The partition has ended (records appended in this call still count).
    Finished,
}

/// The buffer a reader fills.
#[derive(Debug)]
pub struct SourceOutput<T> {
    pub(crate) records: Vec<Record<T>>,
    pub(crate) watermark: Option<EventTime>,
    pub(crate) capacity: usize,
    /// Input the reader rejected.
    pub(crate) rejected: Vec<Rejected>,
}

/// A piece of input a reader rejected (see [`SourceOutput::dead_letter`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub reason: String,
    /// The input as text.
    pub record: String,
    /// Where it was in its partition, as the source names it (a file's
    /// `path:line`), if the reader said.
    pub offset: Option<String>,
}

impl<T> SourceOutput<T> {
    /// An empty buffer for up to `capacity` records (readers that wrap other
    /// readers use their own).
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            watermark: None,
            capacity,
            rejected: Vec::new(),
        }
    }

    /// Removes and returns the records appended so far.
    pub fn take_records(&mut self) -> Vec<Record<T>> {
        std::mem::take(&mut self.records)
    }

    /// Removes and returns the rejected inputs so far.
    pub fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    /// The records appended so far.
    pub fn records(&self) -> &[Record<T>] {
        &self.records
    }

    /// Whether the reader asserted an explicit watermark in this call.
    pub fn has_watermark(&self) -> bool {
        self.watermark.is_some()
    }

    /// How many records were appended so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many more records fit in this batch.
    pub fn remaining(&self) -> usize {
        self.capacity.saturating_sub(self.records.len())
    }

    /// Appends a record (it may carry the source's own timestamp, or
    /// [`EventTime::MIN`] when the watermark strategy assigns them).
    pub fn push(&mut self, record: Record<T>) {
        self.records.push(record);
    }

    /// Rejects a piece of input that cannot become a record (a malformed
    /// row, say): it goes to the source's dead-letter output with `reason`
    /// (or stops the job under `FailurePolicy::FailFast`). `record` is the
    /// input as text, with where it came from.
    pub fn dead_letter(&mut self, reason: impl std::fmt::Display, record: impl Into<String>) {
        self.reject(Rejected {
            reason: reason.to_string(),
            record: record.into(),
            offset: None,
        });
    }

    /// Like [`SourceOutput::dead_letter`], saying where in the partition the
    /// input was (`offset`, e.g. a file's `path:line`); the dead letter
    /// carries it.
    pub fn dead_letter_at(
        &mut self,
        reason: impl std::fmt::Display,
        record: impl Into<String>,
        offset: impl Into<String>,
    ) {
        self.reject(Rejected {
            reason: reason.to_string(),
            record: record.into(),
            offset: Some(offset.into()),
        });
    }

    /// Rejects input another output rejected (readers that wrap readers
    /// pass their inner rejections on with it).
    pub fn reject(&mut self, rejected: Rejected) {
        self.rejected.push(rejected);
    }

    /// Asserts that this partition will produce nothing at or before `watermark`.
    pub fn watermark(&mut self, watermark: EventTime) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }
}
