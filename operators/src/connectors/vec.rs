use std::sync::Mutex;

use tideline_engine::{
    Data, Error, EventTime, ReaderContext, Record, Result, Source, SourceOffset, SourceOutput,
    SourceReader, SourceStatus,
};

/// A bounded source over records held in memory, split into contiguous
/// partitions. Each partition can be read once per job run. Its offset is
/// the number of records a partition has emitted, so a job restored from a
/// checkpoint over a `VecSource` holding the same records continues after them.
#[derive(Debug)]
pub struct VecSource<T> {
    partitions: Vec<Mutex<Option<Vec<Record<T>>>>>,
}

impl<T: Data> VecSource<T> {
    /// Records without timestamps (give the watermark strategy a timestamp
    /// extractor if the job needs event time), in one partition.
    pub fn new(values: Vec<T>) -> Self {
        Self::from_records(values.into_iter().map(Record::untimed).collect())
    }

    /// Records with timestamps (milliseconds or [`EventTime`]), in one partition.
    pub fn timestamped<E: Into<EventTime>>(values: Vec<(E, T)>) -> Self {
        Self::from_records(values.into_iter().map(|(t, v)| Record::new(t, v)).collect())
    }

    /// Records, in one partition.
    pub fn from_records(records: Vec<Record<T>>) -> Self {
        Self {
            partitions: vec![Mutex::new(Some(records))],
        }
    }

    /// One partition per inner vector, read in parallel.
    pub fn partitioned(partitions: Vec<Vec<Record<T>>>) -> Self {
        Self {
            partitions: partitions
                .into_iter()
                .map(|p| Mutex::new(Some(p)))
                .collect(),
        }
    }

    /// Splits the records into `n` contiguous partitions of (almost) equal size.
    pub fn with_partitions(self, n: usize) -> Self {
        let all: Vec<Record<T>> = self
            .partitions
            .into_iter()
            .filter_map(|p| p.into_inner().ok().flatten())
            .flatten()
            .collect();
        let n = n.max(1);
        let chunk = all.len().div_ceil(n).max(1);
        let mut parts: Vec<Vec<Record<T>>> = (0..n).map(|_| Vec::new()).collect();
        for (i, r) in all.into_iter().enumerate() {
            parts[(i / chunk).min(n - 1)].push(r);
        }
        Self::partitioned(parts)
    }
}

impl<T: Data> VecSource<T> {
    /// Takes partition `partition`'s records (once).
    fn take(&self, partition: usize) -> Result<Vec<Record<T>>> {
        self.partitions
            .get(partition)
            .and_then(|p| p.lock().ok().and_then(|mut g| g.take()))
            .ok_or_else(|| {
                Error::config(
                    format!("vec_source.partition[{partition}]"),
                    "does not exist or was already read (a VecSource serves one run)",
                )
            })
    }
}

impl<T: Data + Sync> Source<T> for VecSource<T> {
    fn name(&self) -> &str {
        "vec_source"
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
        _ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(VecReader {
            records: self.take(partition)?.into_iter(),
            emitted: 0,
        }))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        _ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let &[emitted] = offset.0.as_slice() else {
            return Err(Error::config(
                "vec_source.offset",
                format!("{offset:?} is not a vec_source offset (one count)"),
            ));
        };
        let mut records = self.take(partition)?.into_iter();
        let skip = usize::try_from(emitted).unwrap_or(usize::MAX);
        records.by_ref().take(skip).for_each(drop);
        Ok(Box::new(VecReader { records, emitted }))
    }
}

struct VecReader<T> {
    records: std::vec::IntoIter<Record<T>>,
    emitted: u64,
}

impl<T: Data> SourceReader<T> for VecReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        for r in self.records.by_ref().take(out.remaining()) {
            out.push(r);
            self.emitted += 1;
        }
        Ok(if self.records.len() == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(SourceOffset(vec![self.emitted]))
    }

    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        Some(tideline_engine::PartitionProgress {
            position: self.emitted,
            lag: Some(self.records.len() as u64),
            bounded: true,
        })
    }
}
