use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tideline_engine::{
    Data, Error, EventTime, ReaderContext, Record, Result, Source, SourceOutput, SourceReader,
    SourceStatus,
};

enum Event<T> {
    Record(Record<T>),
    Watermark(EventTime),
    Close,
}

/// A source fed by other code through [`SourceHandle`]s, one per partition.
/// A partition ends when its handle is closed or dropped.
#[derive(Debug)]
pub struct PushSource<T> {
    receivers: Vec<Receiver<Event<T>>>,
}

impl<T> std::fmt::Debug for Event<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Record(r) => write!(f, "Record@{}", r.timestamp),
            Event::Watermark(w) => write!(f, "Watermark({w})"),
            Event::Close => f.write_str("Close"),
        }
    }
}

/// Feeds one partition of a [`PushSource`].
#[derive(Debug)]
pub struct SourceHandle<T> {
    sender: Sender<Event<T>>,
}

impl<T: Data> PushSource<T> {
    /// A one-partition source with an unbounded queue; returns the handle to feed it.
    pub fn new() -> (Self, SourceHandle<T>) {
        let (source, mut handles) = Self::with_partitions(1, None);
        let handle = handles.remove(0);
        (source, handle)
    }

    /// A source with `n` partitions. With `capacity`, each partition's queue
    /// holds that many records and `send` blocks when it is full
    /// (backpressure into the feeding code); `None` means unbounded.
    pub fn with_partitions(n: usize, capacity: Option<usize>) -> (Self, Vec<SourceHandle<T>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| match capacity {
                Some(c) => crossbeam_channel::bounded(c),
                None => crossbeam_channel::unbounded(),
            })
            .unzip();
        (
            Self { receivers },
            senders
                .into_iter()
                .map(|sender| SourceHandle { sender })
                .collect(),
        )
    }
}

impl<T: Data> SourceHandle<T> {
    fn push(&self, event: Event<T>) -> Result<()> {
        self.sender
            .send(event)
            .map_err(|_| Error::user("the job reading this push source has stopped"))
    }

    /// Sends `value` at `timestamp`.
    ///
    /// # Errors
    /// When the job has stopped.
    pub fn send_at(&self, timestamp: impl Into<EventTime>, value: T) -> Result<()> {
        self.push(Event::Record(Record::new(timestamp, value)))
    }

    /// Sends `value` without a timestamp (the watermark strategy may assign one).
    ///
    /// # Errors
    /// When the job has stopped.
    pub fn send(&self, value: T) -> Result<()> {
        self.push(Event::Record(Record::untimed(value)))
    }

    /// Asserts no more records at or before `watermark` will come on this partition.
    ///
    /// # Errors
    /// When the job has stopped.
    pub fn watermark(&self, watermark: impl Into<EventTime>) -> Result<()> {
        self.push(Event::Watermark(watermark.into()))
    }

    /// Ends this partition.
    ///
    /// # Errors
    /// When the job has stopped.
    pub fn close(&self) -> Result<()> {
        self.push(Event::Close)
    }
}

impl<T: Data> Source<T> for PushSource<T> {
    fn name(&self) -> &str {
        "push_source"
    }

    fn partitions(&self) -> usize {
        self.receivers.len()
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn create_reader(
        &self,
        partition: usize,
        _ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let receiver = self.receivers.get(partition).cloned().ok_or_else(|| {
            Error::config(
                format!("push_source.partition[{partition}]"),
                "does not exist",
            )
        })?;
        Ok(Box::new(PushReader { receiver, read: 0 }))
    }
}

struct PushReader<T> {
    receiver: Receiver<Event<T>>,
    /// Records read so far.
    read: u64,
}

impl<T: Data> SourceReader<T> for PushReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        while out.remaining() > 0 {
            match self.receiver.try_recv() {
                Ok(Event::Record(r)) => {
                    self.read += 1;
                    out.push(r);
                }
                // A watermark ends the batch so it lands after exactly the
                // records sent before it.
                Ok(Event::Watermark(w)) => {
                    out.watermark(w);
                    return Ok(SourceStatus::Ready);
                }
                Ok(Event::Close) | Err(TryRecvError::Disconnected) => {
                    return Ok(SourceStatus::Finished)
                }
                Err(TryRecvError::Empty) => return Ok(SourceStatus::Pending),
            }
        }
        Ok(SourceStatus::Ready)
    }

    /// Records read, and what was pushed but not read yet (records and
    /// watermarks alike).
    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        Some(tideline_engine::PartitionProgress {
            position: self.read,
            lag: Some(self.receiver.len() as u64),
            bounded: false,
        })
    }
}
