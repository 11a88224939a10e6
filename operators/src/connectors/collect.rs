use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tideline_engine::{Data, EventTime, Record, Result, Sink};

#[derive(Debug)]
struct Collected<T> {
    records: Vec<Record<T>>,
    watermarks: Vec<EventTime>,
    finished: usize,
}

/// Collects records (and the watermarks it sees) into shared memory; clone it
/// before handing it to `sink` and read the clone afterwards. With parallel
/// subtasks, records of different subtasks interleave in arrival order.
#[derive(Debug)]
pub struct CollectSink<T> {
    inner: Arc<Mutex<Collected<T>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Data> Default for CollectSink<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Data> CollectSink<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Collected {
                records: Vec::new(),
                watermarks: Vec::new(),
                finished: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Collected<T>> {
        // A panic elsewhere cannot leave a Vec half-written; keep reading.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The records collected so far.
    pub fn records(&self) -> Vec<Record<T>> {
        self.lock().records.clone()
    }

    /// The values collected so far.
    pub fn values(&self) -> Vec<T> {
        self.lock()
            .records
            .iter()
            .map(|r| r.value.clone())
            .collect()
    }

    /// Removes and returns the records collected so far.
    pub fn take(&self) -> Vec<Record<T>> {
        std::mem::take(&mut self.lock().records)
    }

    /// How many records were collected.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The watermarks seen, in order (with several subtasks, interleaved).
    pub fn watermarks(&self) -> Vec<EventTime> {
        self.lock().watermarks.clone()
    }

    /// How many sink subtasks have finished.
    pub fn finished_subtasks(&self) -> usize {
        self.lock().finished
    }
}

impl<T: Data> Sink<T> for CollectSink<T> {
    fn name(&self) -> &str {
        "collect"
    }

    fn write_batch(&mut self, mut batch: Vec<Record<T>>) -> Result<()> {
        self.lock().records.append(&mut batch);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime) -> Result<()> {
        self.lock().watermarks.push(watermark);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.lock().finished += 1;
        Ok(())
    }
}
