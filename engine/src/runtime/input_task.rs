//! A non-source subtask: reads its input channels (one per upstream subtask
//! of each input edge), combines channel watermarks with a
//! [`WatermarkTracker`](crate::time::WatermarkTracker), aligns checkpoint
//! barriers, and drives its chain.
//!
//! Barrier alignment: once barrier `n` arrived on a channel, that channel is
//! not read until barrier `n` has arrived on every channel that has not
//! ended; then the chain snapshots, the barrier goes on, and the channel is
//! read again. So the snapshot holds exactly the records that preceded the
//! barrier on each channel. Nothing is buffered in the task meanwhile: a
//! blocked channel's messages wait in the channel, which is bounded under
//! the threaded executor, so its sender blocks (backpressure) and memory
//! stays bounded however long alignment takes.
//!
//! Invariants:
//! - channels are read round-robin from a rotating start, so a busy channel
//!   cannot starve the others;
//! - a channel that disconnects before delivering `End` means its upstream
//!   failed: the task ends with [`Error::Cancelled`];
//! - with an alignment timeout, a task that has aligned barrier `n` for
//!   longer than it (on the job clock) gives `n` up: it reads every channel
//!   again, takes no snapshot and sends no barrier for `n`, ignores `n`'s
//!   later barriers, and tells the coordinator, which counts `n` as aborted;
//! - a barrier newer than the one being aligned means the older checkpoint
//!   was given up upstream: alignment moves on to the newer one.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, TryRecvError};

use crate::error::{Error, Result};
use crate::record::{Data, Message};
use crate::runtime::task::{ChainHead, Step, Task};
use crate::time::Watermark;

/// The longest a blocked task waits before re-checking cancellation and the clock.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// A barrier being aligned.
struct Alignment {
    id: u64,
    /// Which channels delivered it (and are not read until it completes).
    arrived: Vec<bool>,
    /// Job-clock time of its first arrival.
    started: i64,
}

pub(crate) struct InputTask<T> {
    pub(crate) head: ChainHead<T>,
    receivers: Vec<Receiver<Message<T>>>,
    aligning: Option<Alignment>,
    /// Channels that ended.
    ended: Vec<bool>,
    /// The channel the next receive tries first.
    next: usize,
    /// Barriers up to this id belong to checkpoints given up here.
    given_up: u64,
    /// Longest alignment, in job-clock milliseconds, before giving up.
    alignment_timeout: Option<i64>,
    /// Messages received since the input queues were last measured.
    since_measured: u32,
}

/// Messages received between two measurements of the input queues.
const MEASURE_QUEUES_EVERY: u32 = 16;

impl<T: Data> InputTask<T> {
    pub(crate) fn new(
        head: ChainHead<T>,
        receivers: Vec<Receiver<Message<T>>>,
        alignment_timeout: Option<Duration>,
    ) -> Self {
        let channels = receivers.len();
        Self {
            head,
            receivers,
            aligning: None,
            ended: vec![false; channels],
            next: 0,
            given_up: 0,
            alignment_timeout: alignment_timeout
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
            since_measured: MEASURE_QUEUES_EVERY,
        }
    }

    /// Publishes how full the input channels are, every few messages.
    fn measure_queues(&mut self) {
        self.since_measured += 1;
        if self.since_measured < MEASURE_QUEUES_EVERY {
            return;
        }
        self.since_measured = 0;
        let queued = self.receivers.iter().map(Receiver::len).sum();
        let capacity = self
            .receivers
            .iter()
            .map(|r| r.capacity().unwrap_or(0))
            .sum();
        self.head.metrics.set_queue(queued, capacity);
    }

    /// Whether channel `channel` may be read now.
    fn readable(&self, channel: usize) -> bool {
        !self.ended[channel] && !self.aligning.as_ref().is_some_and(|a| a.arrived[channel])
    }

    /// The next message of a readable channel, if one is waiting (and, with
    /// `blocking`, after waiting at most [`MAX_WAIT`] for one).
    fn receive(&mut self, blocking: bool) -> Result<Option<(usize, Message<T>)>> {
        let channels = self.receivers.len();
        for k in 0..channels {
            let channel = (self.next + k) % channels;
            if !self.readable(channel) {
                continue;
            }
            match self.receivers[channel].try_recv() {
                Ok(m) => {
                    self.next = (channel + 1) % channels;
                    return Ok(Some((channel, m)));
                }
                Err(TryRecvError::Empty) => {}
                // The sender is gone without sending End: upstream failed.
                Err(TryRecvError::Disconnected) => return Err(Error::Cancelled),
            }
        }
        if !blocking {
            return Ok(None);
        }
        let readable: Vec<usize> = (0..channels).filter(|c| self.readable(*c)).collect();
        let received = match readable.as_slice() {
            [] => return Ok(None),
            [one] => match self.receivers[*one].recv_timeout(MAX_WAIT) {
                Ok(m) => (*one, m),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Cancelled),
            },
            many => {
                let mut select = Select::new();
                for c in many {
                    select.recv(&self.receivers[*c]);
                }
                let Ok(op) = select.select_timeout(MAX_WAIT) else {
                    return Ok(None);
                };
                let channel = many[op.index()];
                match op.recv(&self.receivers[channel]) {
                    Ok(m) => (channel, m),
                    Err(_) => return Err(Error::Cancelled),
                }
            }
        };
        self.next = (received.0 + 1) % channels;
        Ok(Some(received))
    }

    fn handle(&mut self, channel: usize, message: Message<T>, now: i64) -> Result<()> {
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
                self.on_barrier(channel, id, now);
                self.try_complete_alignment(now)
            }
            Message::End => {
                self.ended[channel] = true;
                let w = tracker.on_finished(channel);
                self.head.emit(w)?;
                self.try_complete_alignment(now)?;
                if self.head.tracker.all_finished() {
                    self.head.finish(Vec::new())?;
                }
                Ok(())
            }
        }
    }

    fn on_barrier(&mut self, channel: usize, id: u64, now: i64) {
        if id <= self.given_up {
            return;
        }
        let channels = self.receivers.len();
        let alignment = match &mut self.aligning {
            Some(a) if a.id == id => a,
            // Left over from a checkpoint given up upstream.
            Some(a) if id < a.id => return,
            // A newer checkpoint started, so the one aligned was given up
            // upstream: it can never complete here.
            Some(a) => {
                self.given_up = a.id;
                self.aligning.insert(Alignment {
                    id,
                    arrived: vec![false; channels],
                    started: now,
                })
            }
            None => self.aligning.insert(Alignment {
                id,
                arrived: vec![false; channels],
                started: now,
            }),
        };
        alignment.arrived[channel] = true;
    }

    /// Snapshots and forwards the barrier once every open channel delivered it.
    fn try_complete_alignment(&mut self, now: i64) -> Result<()> {
        let Some(alignment) = &self.aligning else {
            return Ok(());
        };
        let aligned = alignment
            .arrived
            .iter()
            .zip(&self.ended)
            .all(|(a, e)| *a || *e);
        if aligned {
            let (id, started) = (alignment.id, alignment.started);
            self.aligning = None;
            self.head.alignment = millis(now.saturating_sub(started));
            self.head.barrier(id, Vec::new())?;
        }
        Ok(())
    }

    /// Gives the aligned checkpoint up once alignment took longer than the timeout.
    fn check_alignment_timeout(&mut self, now: i64) {
        let (Some(timeout), Some(alignment)) = (self.alignment_timeout, &self.aligning) else {
            return;
        };
        let waited = now.saturating_sub(alignment.started);
        if waited <= timeout {
            return;
        }
        let id = alignment.id;
        if self
            .head
            .checkpoint
            .as_ref()
            .is_some_and(|cp| cp.coordinator.is_stop(id))
        {
            // A stop with a savepoint waits as long as it takes.
            return;
        }
        let missing: Vec<usize> = (0..self.receivers.len())
            .filter(|c| !alignment.arrived[*c] && !self.ended[*c])
            .collect();
        self.aligning = None;
        self.given_up = id;
        if let Some(cp) = &self.head.checkpoint {
            cp.coordinator.abort(
                id,
                format!(
                    "task '{}' waited {waited} ms for barrier {id} on input channels \
                     {missing:?}, longer than the alignment timeout of {timeout} ms",
                    self.head.name
                ),
            );
        }
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
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
        self.check_alignment_timeout(self.head.clock.now_millis());
        let received = self.receive(blocking)?;
        let progressed = received.is_some();
        let now = self.head.clock.now_millis();
        if let Some((channel, message)) = received {
            self.measure_queues();
            self.handle(channel, message, now)?;
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
