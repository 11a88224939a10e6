//! The reader behind a [`FileSource`](super::FileSource): files in order,
//! the time-range filter, event-time sorting (spilling sorted runs to disk
//! beyond a row budget, then merging them), and pacing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_engine::time::Clock;
use tideline_engine::{
    Data, Error, PartitionProgress, Record, Rejected, Result, SourceOffset, SourceOutput,
    SourceReader, SourceStatus,
};

#[cfg(feature = "sql")]
use super::predicate::Predicate;
use super::{FileRows, Pacing, SortKey};

/// Reads the files one after the other, keeping records in the time range.
pub(crate) struct Files<T> {
    pub(crate) files: VecDeque<Box<dyn FileRows<T>>>,
    /// `[start, end)` in ms, with the record's event time.
    pub(crate) range: Option<(i64, i64, SortKey<T>)>,
    /// A SQL condition records must meet.
    #[cfg(feature = "sql")]
    pub(crate) predicate: Option<Arc<Predicate>>,
    /// Files finished so far.
    pub(crate) done: u64,
    /// Rows those files held.
    pub(crate) rows_done: u64,
}

impl<T: Data + Serialize> Files<T> {
    fn read(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        let unfiltered = self.range.is_none();
        #[cfg(feature = "sql")]
        let unfiltered = unfiltered && self.predicate.is_none();
        if unfiltered {
            return self.read_all(out);
        }
        let mut chunk = SourceOutput::new(out.remaining().max(1));
        let status = self.read_all(&mut chunk)?;
        let mut records = chunk.take_records();
        if let Some((start, end, time)) = &self.range {
            records.retain(|r| (*start..*end).contains(&time(&r.value)));
        }
        #[cfg(feature = "sql")]
        if let Some(predicate) = &self.predicate {
            records = predicate.retain(records)?;
        }
        for r in records {
            out.push(r);
        }
        for rejected in chunk.take_rejected() {
            out.reject(rejected);
        }
        Ok(status)
    }

    fn read_all(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        while out.remaining() > 0 {
            let Some(file) = self.files.front_mut() else {
                return Ok(SourceStatus::Finished);
            };
            if !file.read(out)? {
                self.rows_done += file.position();
                self.files.pop_front();
                self.done += 1;
            }
        }
        Ok(if self.files.is_empty() {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }
}

impl<T> Files<T> {
    /// Rows consumed over all files, and rows left when every file knows
    /// its row count.
    fn progress(&self) -> PartitionProgress {
        let current = self.files.front().map_or(0, |f| f.position());
        let left = self
            .files
            .iter()
            .map(|f| f.total_rows())
            .sum::<Option<u64>>()
            .map(|total| total.saturating_sub(current));
        PartitionProgress {
            position: self.rows_done + current,
            lag: left,
            bounded: true,
        }
    }

    /// `(files finished, rows consumed in the current file)`.
    fn position(&self) -> (u64, u64) {
        (self.done, self.files.front().map_or(0, |f| f.position()))
    }

    /// Skips to `(file, row)`.
    fn seek(&mut self, file: u64, row: u64) -> Result<()> {
        while self.done < file {
            if self.files.pop_front().is_none() {
                return Err(Error::config(
                    "file_source.offset",
                    format!("file {file} is past the last file"),
                ));
            }
            self.done += 1;
        }
        match self.files.front_mut() {
            Some(f) => f.skip(row),
            None if row == 0 => Ok(()),
            None => Err(Error::config(
                "file_source.offset",
                format!("row {row} of file {file} is past the end"),
            )),
        }
    }
}

/// A sorted run spilled to disk, read back one record at a time.
struct Run<T> {
    lines: Lines<BufReader<std::fs::File>>,
    _file: tempfile::TempPath,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Run<T> {
    fn next(&mut self) -> Result<Option<T>> {
        match self.lines.next() {
            None => Ok(None),
            Some(line) => {
                let line =
                    line.map_err(|e| Error::Internal(format!("reading a sort spill file: {e}")))?;
                serde_json::from_str(&line)
                    .map(Some)
                    .map_err(|e| Error::Internal(format!("reading a sort spill file: {e}")))
            }
        }
    }
}

fn spill<T: Serialize>(rows: &[Record<T>]) -> Result<tempfile::TempPath> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::user(format!("spilling sorted rows to a temporary file: {e}"))
    };
    let file = tempfile::NamedTempFile::new().map_err(|e| failed(&e))?;
    let (file, path) = file.into_parts();
    let mut writer = BufWriter::new(file);
    for r in rows {
        serde_json::to_writer(&mut writer, &r.value).map_err(|e| failed(&e))?;
        writer.write_all(b"\n").map_err(|e| failed(&e))?;
    }
    writer.flush().map_err(|e| failed(&e))?;
    Ok(path)
}

/// Event-time order: everything read and sorted; in memory while it fits
/// the budget, else sorted runs on disk merged on the way out.
enum Sorted<T> {
    Memory(Vec<Record<T>>),
    Merge {
        runs: Vec<Run<T>>,
        /// `(time, run, sequence)`: ties go to the earlier run, so the merge is stable.
        heads: BinaryHeap<Reverse<(i64, usize, u64)>>,
        pending: Vec<Option<T>>,
        sequence: u64,
    },
}

pub(crate) struct FileReader<T> {
    pub(crate) files: Files<T>,
    pub(crate) sort: Option<(SortKey<T>, usize)>,
    sorted: Option<Sorted<T>>,
    /// Event-time order: records emitted so far, and how many to skip first when resuming.
    emitted: u64,
    skip_sorted: u64,
    /// Resumed after the sort had run: its dead letters already went out.
    rejects_sent: bool,
}

impl<T: Data + Serialize + DeserializeOwned> FileReader<T> {
    pub(crate) fn new(files: Files<T>, sort: Option<(SortKey<T>, usize)>) -> Self {
        Self {
            files,
            sort,
            sorted: None,
            emitted: 0,
            skip_sorted: 0,
            rejects_sent: false,
        }
    }

    /// Positions the reader at `offset` (from [`SourceReader::offset`]).
    pub(crate) fn resume(&mut self, offset: &SourceOffset) -> Result<()> {
        match (offset.0.as_slice(), self.sort.is_some()) {
            ([0, file, row], false) => self.files.seek(*file, *row),
            ([1, emitted, sorted], true) => {
                self.skip_sorted = *emitted;
                self.rejects_sent = *sorted == 1;
                Ok(())
            }
            _ => Err(Error::config(
                "file_source.offset",
                format!("{offset:?} does not fit this source's replay order"),
            )),
        }
    }

    fn sort_all(
        &mut self,
        key: &SortKey<T>,
        budget: usize,
        out: &mut SourceOutput<T>,
    ) -> Result<Sorted<T>> {
        let mut buffer: Vec<Record<T>> = Vec::new();
        let mut spilled = Vec::new();
        let mut chunk = SourceOutput::new(8_192);
        loop {
            let status = self.files.read(&mut chunk)?;
            buffer.append(&mut chunk.take_records());
            // Dead letters go out as they are found.
            for rejected in chunk.take_rejected() {
                out.reject(rejected);
            }
            let done = status == SourceStatus::Finished;
            if buffer.len() >= budget.max(1) || (done && !spilled.is_empty()) {
                // Stable: equal times keep their file order.
                buffer.sort_by_key(|r| key(&r.value));
                spilled.push(spill(&buffer)?);
                buffer.clear();
            }
            if done {
                break;
            }
        }
        if spilled.is_empty() {
            buffer.sort_by_key(|r| key(&r.value));
            buffer.reverse(); // emitted by popping from the end
            return Ok(Sorted::Memory(buffer));
        }
        let mut runs = Vec::with_capacity(spilled.len());
        for path in spilled {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::user(format!("reopening a sort spill file: {e}")))?;
            runs.push(Run {
                lines: BufReader::new(file).lines(),
                _file: path,
                _type: std::marker::PhantomData,
            });
        }
        let mut heads = BinaryHeap::new();
        let mut pending = Vec::with_capacity(runs.len());
        let mut sequence = 0;
        for (i, run) in runs.iter_mut().enumerate() {
            let first = run.next()?;
            if let Some(v) = &first {
                heads.push(Reverse((key(v), i, sequence)));
                sequence += 1;
            }
            pending.push(first);
        }
        Ok(Sorted::Merge {
            runs,
            heads,
            pending,
            sequence,
        })
    }
}

impl<T: Data + Serialize + DeserializeOwned> FileReader<T> {
    /// Emits up to `limit` sorted records (pops them from the sorted store).
    fn emit_sorted(
        &mut self,
        key: &SortKey<T>,
        out: &mut SourceOutput<T>,
        limit: usize,
    ) -> Result<SourceStatus> {
        let mut emitted = 0;
        let status = match self.sorted.as_mut() {
            None => SourceStatus::Finished,
            Some(Sorted::Memory(rows)) => {
                while emitted < limit {
                    match rows.pop() {
                        Some(r) => {
                            out.push(r);
                            emitted += 1;
                        }
                        None => break,
                    }
                }
                if rows.is_empty() {
                    SourceStatus::Finished
                } else {
                    SourceStatus::Ready
                }
            }
            Some(Sorted::Merge {
                runs,
                heads,
                pending,
                sequence,
            }) => {
                while emitted < limit {
                    let Some(Reverse((_, run, _))) = heads.pop() else {
                        break;
                    };
                    if let Some(value) = pending[run].take() {
                        out.push(Record::untimed(value));
                        emitted += 1;
                    }
                    let next = runs[run].next()?;
                    if let Some(v) = &next {
                        heads.push(Reverse((key(v), run, *sequence)));
                        *sequence += 1;
                    }
                    pending[run] = next;
                }
                if heads.is_empty() {
                    SourceStatus::Finished
                } else {
                    SourceStatus::Ready
                }
            }
        };
        self.emitted += emitted as u64;
        Ok(status)
    }
}

impl<T: Data + Serialize + DeserializeOwned> SourceReader<T> for FileReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        let Some((key, budget)) = self.sort.clone() else {
            return self.files.read(out);
        };
        if self.sorted.is_none() {
            // Dead letters go out while sorting, unless an earlier reader sent them.
            let mut already_sent = SourceOutput::new(1);
            let rejects = if self.rejects_sent {
                &mut already_sent
            } else {
                &mut *out
            };
            self.sorted = Some(self.sort_all(&key, budget, rejects)?);
            // Resuming: these records went out before the offset was taken.
            while self.emitted < self.skip_sorted {
                let left = usize::try_from(self.skip_sorted - self.emitted)
                    .unwrap_or(usize::MAX)
                    .min(1 << 16);
                let mut skipped = SourceOutput::new(left);
                if self.emit_sorted(&key, &mut skipped, left)? == SourceStatus::Finished {
                    break;
                }
            }
        }
        let room = out.remaining();
        self.emit_sorted(&key, out, room)
    }

    fn progress(&self) -> Option<PartitionProgress> {
        Some(self.files.progress())
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(match self.sort {
            None => {
                let (file, row) = self.files.position();
                SourceOffset(vec![0, file, row])
            }
            Some(_) => SourceOffset(vec![
                1,
                self.emitted,
                u64::from(self.sorted.is_some() || self.rejects_sent),
            ]),
        })
    }
}

/// Holds records back until the pacing allows them, a whole chunk at a
/// time: chunk boundaries (and so where watermarks fall) are a function of
/// the input and the configuration only, and a held chunk is never half
/// emitted, so the reader's offset is exact at every poll.
pub(crate) struct Paced<R, T> {
    pub(crate) inner: R,
    pub(crate) pacing: Pacing,
    pub(crate) event_time: Option<SortKey<T>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The chunk waiting for its time, with its rejected rows.
    pub(crate) held: VecDeque<Record<T>>,
    pub(crate) held_rejects: Vec<Rejected>,
    /// The inner reader's offset before the held chunk.
    pub(crate) held_from: Option<SourceOffset>,
    pub(crate) finished: bool,
    /// `(processing time, first event time)` when the first record went out.
    pub(crate) started: Option<(i64, i64)>,
    pub(crate) emitted: u64,
}

impl<R: SourceReader<T>, T: Data> Paced<R, T> {
    /// Records per chunk: about 50 ms of records at a fixed rate; one
    /// record when replaying event time at a speed (each goes at its time).
    fn chunk_size(&self, remaining: usize) -> usize {
        match self.pacing {
            Pacing::RecordsPerSecond(rate) => ((rate / 20.0) as usize).clamp(1, remaining.max(1)),
            Pacing::Speed(_) => 1,
            Pacing::AsFastAsPossible => remaining.max(1),
        }
    }
}

impl<R: SourceReader<T>, T: Data> SourceReader<T> for Paced<R, T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        if self.held.is_empty() && self.held_rejects.is_empty() {
            if self.finished {
                return Ok(SourceStatus::Finished);
            }
            self.held_from = self.inner.offset();
            let mut chunk = SourceOutput::new(self.chunk_size(out.remaining()));
            let status = self.inner.poll(&mut chunk)?;
            self.finished = status == SourceStatus::Finished;
            self.held.extend(chunk.take_records());
            self.held_rejects = chunk.take_rejected();
            if self.held.is_empty() && self.held_rejects.is_empty() {
                self.held_from = None;
                return Ok(status);
            }
        }
        let now = self.clock.now_millis();
        // A chunk goes when its first record's time has come.
        let release = match self.held.front() {
            None => true,
            Some(next) => {
                let event = self.event_time.as_ref().map_or(0, |f| f(&next.value));
                let (start, first) = *self.started.get_or_insert((now, event));
                match self.pacing {
                    Pacing::RecordsPerSecond(rate) => {
                        ((now - start) as f64 * rate / 1000.0) as u64 + 1 > self.emitted
                    }
                    Pacing::Speed(factor) => {
                        ((event - first) as f64 / factor) as i64 <= now - start
                    }
                    Pacing::AsFastAsPossible => true,
                }
            }
        };
        if !release || self.held.len() > out.remaining() {
            return Ok(SourceStatus::Pending);
        }
        for rejected in self.held_rejects.drain(..) {
            out.reject(rejected);
        }
        self.emitted += self.held.len() as u64;
        for record in self.held.drain(..) {
            out.push(record);
        }
        self.held_from = None;
        Ok(if self.finished {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }

    fn progress(&self) -> Option<PartitionProgress> {
        self.inner.progress()
    }

    fn offset(&self) -> Option<SourceOffset> {
        match &self.held_from {
            Some(before) => Some(before.clone()),
            None => self.inner.offset(),
        }
    }
}
