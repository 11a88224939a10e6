//! A non-source subtask: reads its one receiver (all input channels merged,
//! each message tagged with its channel), combines channel watermarks with a
//! [`WatermarkTracker`](crate::time::WatermarkTracker), aligns checkpoint
//! barriers, and drives its chain.
//!
//! Barrier alignment: once barrier `n` arrived on a channel, later messages
//! of that channel are held back (in arrival order) until barrier `n` has
//! arrived on every channel that has not ended; then the chain snapshots,
//! the barrier goes on, and the held-back messages are processed first. So
//! the snapshot holds exactly the records that preceded the barrier on each
//! channel.

use std::collections::VecDeque;
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
    /// The barrier being aligned, and which channels delivered it.
    pub(crate) aligning: Option<(u64, Vec<bool>)>,
    /// Messages held back per channel (of blocked channels, or queued
    /// behind such messages), in arrival order.
    pub(crate) held: Vec<VecDeque<Message<T>>>,
    /// Channels that ended.
    pub(crate) ended: Vec<bool>,
}

impl<T: Data> InputTask<T> {
    pub(crate) fn new(
        head: ChainHead<T>,
        receiver: Receiver<Envelope<T>>,
        channels: usize,
    ) -> Self {
        Self {
            head,
            receiver,
            aligning: None,
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            ended: vec![false; channels],
        }
    }

    fn blocked(&self, channel: usize) -> bool {
        self.aligning
            .as_ref()
            .is_some_and(|(_, arrived)| arrived.get(channel).copied().unwrap_or(false))
    }

    /// A held-back message of a channel no longer blocked, if any.
    fn next_held(&mut self) -> Option<(usize, Message<T>)> {
        let channel =
            (0..self.held.len()).find(|c| !self.blocked(*c) && !self.held[*c].is_empty())?;
        self.held[channel].pop_front().map(|m| (channel, m))
    }

    /// Takes a received message: handles it, or holds it back.
    fn receive(&mut self, channel: usize, message: Message<T>) -> Result<()> {
        let hold = self.blocked(channel) || self.held.get(channel).is_some_and(|q| !q.is_empty());
        match self.held.get_mut(channel) {
            Some(queue) if hold => {
                queue.push_back(message);
                Ok(())
            }
            _ => self.handle(channel, message),
        }
    }

    fn handle(&mut self, channel: usize, message: Message<T>) -> Result<()> {
        if self.head.is_done() {
            // Stopped at a savepoint barrier: nothing after it is read.
            return Ok(());
        }
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
            Message::Barrier(id) => {
                let channels = self.ended.len();
                let (_, arrived) = self
                    .aligning
                    .get_or_insert_with(|| (id, vec![false; channels]));
                if let Some(slot) = arrived.get_mut(channel) {
                    *slot = true;
                }
                self.try_complete_alignment()
            }
            Message::End => {
                if let Some(slot) = self.ended.get_mut(channel) {
                    *slot = true;
                }
                let w = tracker.on_finished(channel);
                self.head.emit(w)?;
                self.try_complete_alignment()?;
                if self.head.tracker.all_finished() {
                    self.head.finish(Vec::new())?;
                }
                Ok(())
            }
        }
    }

    /// Snapshots and forwards the barrier once every open channel delivered it.
    fn try_complete_alignment(&mut self) -> Result<()> {
        let Some((id, arrived)) = &self.aligning else {
            return Ok(());
        };
        let aligned = arrived.iter().zip(&self.ended).all(|(a, e)| *a || *e);
        if aligned {
            let id = *id;
            self.aligning = None;
            self.head.barrier(id, Vec::new())?;
        }
        Ok(())
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
        self.head.start()?;
        if let Some((channel, message)) = self.next_held() {
            self.handle(channel, message)?;
            return Ok(if self.head.is_done() {
                Step::Done
            } else {
                Step::Progress
            });
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
            self.receive(channel as usize, message)?;
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
