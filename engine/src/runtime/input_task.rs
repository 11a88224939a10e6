//! A non-source subtask: reads its one receiver (all input channels merged,
//! each message tagged with its channel), combines channel watermarks with a
//! [`WatermarkTracker`](crate::time::WatermarkTracker), and drives its chain.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::error::{Error, Result};
use crate::record::{Data, Envelope, Message};
use crate::runtime::task::{ChainHead, Step, Task};
use crate::time::Watermark;

/// The longest a blocked task waits before re-checking cancellation and the clock.
const MAX_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct InputTask<T> {
    pub(crate) head: ChainHead<T>,
    pub(crate) receiver: Receiver<Envelope<T>>,
}

impl<T: Data> InputTask<T> {
    fn handle(&mut self, channel: usize, message: Message<T>) -> Result<()> {
        let tracker = &mut self.head.tracker;
        match message {
            Message::Batch(batch) => {
                let w = tracker.on_data(channel);
                self.head.emit(w)?;
                self.head.push.push_batch(batch)
            }
            Message::Watermark(Watermark::EventTime(wm)) => {
                let w = tracker.on_watermark(channel, wm);
                self.head.emit(w)
            }
            Message::Watermark(Watermark::Idle) => {
                let w = tracker.on_idle(channel);
                self.head.emit(w)
            }
            Message::End => {
                let w = tracker.on_finished(channel);
                self.head.emit(w)?;
                if self.head.tracker.all_finished() {
                    self.head.finish()?;
                }
                Ok(())
            }
        }
    }
}

impl<T: Data> Task for InputTask<T> {
    fn name(&self) -> &str {
        &self.head.name
    }

    fn flush(&mut self) -> Result<()> {
        self.head.flush()
    }

    fn step(&mut self, blocking: bool) -> Result<Step> {
        if let Some(step) = self.head.check()? {
            return Ok(step);
        }
        let received = if blocking {
            match self.receiver.recv_timeout(MAX_WAIT) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                // Every sender is gone without sending End: upstream failed.
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Cancelled),
            }
        } else {
            match self.receiver.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Err(Error::Cancelled),
            }
        };
        let progressed = received.is_some();
        let now = self.head.clock.now_millis();
        if let Some((channel, message)) = received {
            self.handle(channel as usize, message)?;
            if self.head.is_done() {
                return Ok(Step::Done);
            }
        }
        self.head.tick(now)?;
        Ok(if progressed {
            Step::Progress
        } else {
            Step::Idle
        })
    }
}
