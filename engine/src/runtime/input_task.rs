//! A non-source subtask: reads its one receiver (all input channels merged,
//! each message tagged with its channel), combines channel watermarks with a
//! [`WatermarkTracker`], and drives its chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::error::{Error, Result};
use crate::record::{Data, Envelope, Message};
use crate::runtime::push::BoxPush;
use crate::runtime::task::{Step, Task};
use crate::time::{Clock, Watermark, WatermarkTracker};

/// The longest a blocked task waits before re-checking cancellation and the flush timer.
const MAX_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct InputTask<T> {
    pub(crate) name: Arc<str>,
    pub(crate) receiver: Receiver<Envelope<T>>,
    pub(crate) tracker: WatermarkTracker,
    pub(crate) head: BoxPush<T>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Processing time of the last tick; the chain is ticked whenever the clock moves.
    pub(crate) last_tick: i64,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) done: bool,
}

impl<T: Data> InputTask<T> {
    fn emit(&mut self, watermark: Option<Watermark>) -> Result<()> {
        match watermark {
            Some(w) => self.head.push_watermark(w),
            None => Ok(()),
        }
    }

    fn handle(&mut self, channel: usize, message: Message<T>) -> Result<()> {
        match message {
            Message::Batch(batch) => {
                let w = self.tracker.on_data(channel);
                self.emit(w)?;
                self.head.push_batch(batch)
            }
            Message::Watermark(Watermark::EventTime(wm)) => {
                let w = self.tracker.on_watermark(channel, wm);
                self.emit(w)
            }
            Message::Watermark(Watermark::Idle) => {
                let w = self.tracker.on_idle(channel);
                self.emit(w)
            }
            Message::End => {
                let w = self.tracker.on_finished(channel);
                self.emit(w)?;
                if self.tracker.all_finished() {
                    self.head.finish()?;
                    self.done = true;
                }
                Ok(())
            }
        }
    }
}

impl<T: Data> Task for InputTask<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn flush(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.head.flush()
    }

    fn step(&mut self, blocking: bool) -> Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
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
        let now = self.clock.now_millis();
        if let Some((channel, message)) = received {
            self.handle(channel as usize, message)?;
            if self.done {
                return Ok(Step::Done);
            }
        }
        if now > self.last_tick {
            self.last_tick = now;
            self.head.on_tick(now)?;
        }
        Ok(if progressed {
            Step::Progress
        } else {
            Step::Idle
        })
    }
}
