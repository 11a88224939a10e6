use std::sync::Mutex;

use tideline_engine::{
    Data, Error, EventTime, ReaderContext, Record, Result, Source, SourceOutput, SourceReader,
    SourceStatus,
};

/// A bounded source over records held in memory, split into contiguous
/// partitions. Each partition can be read once per job run.
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
        let records = self
            .partitions
            .get(partition)
            .and_then(|p| p.lock().ok().and_then(|mut g| g.take()))
            .ok_or_else(|| {
                Error::config(
                    format!("vec_source.partition[{partition}]"),
                    "does not exist or was already read (a VecSource serves one run)",
                )
            })?;
        Ok(Box::new(VecReader {
            records: records.into_iter(),
        }))
    }
}

struct VecReader<T> {
    records: std::vec::IntoIter<Record<T>>,
}

impl<T: Data> SourceReader<T> for VecReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        for r in self.records.by_ref().take(out.remaining()) {
            out.push(r);
        }
        Ok(if self.records.len() == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::Ready
        })
    }
}
