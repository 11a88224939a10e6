use crossbeam_channel::Sender;
use tideline_engine::{Data, Error, Record, Result, Sink};

/// Sends each record into a crossbeam channel. A bounded channel gives
/// backpressure: when the receiver is slow, the job slows down.
#[derive(Debug)]
pub struct ChannelSink<T> {
    sender: Sender<Record<T>>,
}

impl<T> Clone for ChannelSink<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T> ChannelSink<T> {
    /// A sink into `sender`.
    pub fn new(sender: Sender<Record<T>>) -> Self {
        Self { sender }
    }
}

impl<T: Data> Sink<T> for ChannelSink<T> {
    fn name(&self) -> &str {
        "channel"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        for r in batch {
            self.sender
                .send(r)
                .map_err(|_| Error::user("the receiving end of the channel sink was dropped"))?;
        }
        Ok(())
    }
}
