//! The end of a chain that feeds another task: routes records to downstream
//! subtasks (forward, rebalance, broadcast or by key group), batches them per
//! channel, and sends watermarks after everything that preceded them.
//!
//! Sends block when a channel is full: that is the backpressure that keeps a
//! fast source from outrunning a slow sink.

use std::sync::Arc;

use std::time::Instant;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use tideline_state::key_group::{key_group_of_hash, subtask_for_key_group};

use crate::checkpoint::snapshot::BarrierCtx;
use crate::error::{Error, Result};
use crate::record::{Data, Message, Record};
use crate::runtime::push::Push;
use crate::time::Watermark;

/// How long a blocked send waits before it books the time blocked and
/// waits again.
const BLOCKED_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// The stable hash of a record's key; fails if the key cannot be encoded.
pub(crate) type KeyHashFn<T> = Arc<dyn Fn(&T) -> Result<u64> + Send + Sync>;

pub(crate) enum Route<T> {
    /// One downstream subtask (same index, same parallelism).
    Forward,
    /// Whole batches round-robin over downstream subtasks.
    Rebalance { next: usize },
    /// Every record to every downstream subtask.
    Broadcast,
    /// By key group.
    Keyed { hash: KeyHashFn<T>, key_groups: u16 },
}

pub(crate) struct ExchangeWriter<T> {
    senders: Vec<Sender<Message<T>>>,
    buffers: Vec<Vec<Record<T>>>,
    route: Route<T>,
    batch_size: usize,
    flush_interval: i64,
    last_flush: i64,
    /// The sending task's cells: time blocked on full channels.
    metrics: Arc<crate::metrics::TaskCounters>,
}

impl<T: Data> ExchangeWriter<T> {
    pub(crate) fn new(
        senders: Vec<Sender<Message<T>>>,
        route: Route<T>,
        batch_size: usize,
        flush_interval: i64,
        metrics: Arc<crate::metrics::TaskCounters>,
    ) -> Self {
        let buffers = senders.iter().map(|_| Vec::new()).collect();
        Self {
            senders,
            buffers,
            route,
            batch_size,
            flush_interval,
            last_flush: i64::MIN,
            metrics,
        }
    }

    fn send(&self, target: usize, msg: Message<T>) -> Result<()> {
        let sender = self
            .senders
            .get(target)
            .ok_or_else(|| Error::Internal(format!("no channel to subtask {target}")))?;
        // A closed channel means the receiving task stopped: the job is failing.
        match sender.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(Error::Cancelled),
            // Full: downstream is slower. Only this path reads the clock,
            // so the time blocked (backpressure) costs nothing otherwise;
            // it is booked in slices, so a long stall shows while it lasts.
            Err(TrySendError::Full(mut msg)) => loop {
                let blocked = Instant::now();
                let sent = sender.send_timeout(msg, BLOCKED_SLICE);
                self.metrics.add_blocked(blocked.elapsed());
                match sent {
                    Ok(()) => return Ok(()),
                    Err(SendTimeoutError::Timeout(m)) => msg = m,
                    Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Cancelled),
                }
            },
        }
    }

    fn flush_buffer(&mut self, target: usize) -> Result<()> {
        if self.buffers[target].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.buffers[target],
            Vec::with_capacity(self.batch_size),
        );
        self.send(target, Message::Batch(batch))
    }

    fn flush_all(&mut self) -> Result<()> {
        (0..self.buffers.len()).try_for_each(|t| self.flush_buffer(t))
    }

    /// Appends a whole batch for one target, sending full batches directly.
    fn enqueue(&mut self, target: usize, mut batch: Vec<Record<T>>) -> Result<()> {
        if self.buffers[target].is_empty() && batch.len() >= self.batch_size / 2 {
            return self.send(target, Message::Batch(batch));
        }
        self.buffers[target].append(&mut batch);
        if self.buffers[target].len() >= self.batch_size {
            self.flush_buffer(target)?;
        }
        Ok(())
    }
}

impl<T: Data> Push<T> for ExchangeWriter<T> {
    fn push_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match &mut self.route {
            Route::Forward => self.enqueue(0, batch),
            Route::Rebalance { next } => {
                let target = *next;
                *next = (target + 1) % self.senders.len();
                self.enqueue(target, batch)
            }
            Route::Broadcast => {
                for target in 0..self.senders.len() {
                    self.enqueue(target, batch.clone())?;
                }
                Ok(())
            }
            Route::Keyed { hash, key_groups } => {
                let (hash, key_groups) = (Arc::clone(hash), *key_groups);
                let parallelism = self.senders.len();
                if parallelism == 1 {
                    return self.enqueue(0, batch);
                }
                for record in batch {
                    let group = key_group_of_hash(hash(&record.value)?, key_groups);
                    let target = subtask_for_key_group(group, key_groups, parallelism);
                    let buffer = &mut self.buffers[target];
                    buffer.push(record);
                    if buffer.len() >= self.batch_size {
                        self.flush_buffer(target)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.flush_all()?;
        (0..self.senders.len()).try_for_each(|t| self.send(t, Message::Watermark(watermark)))
    }

    fn on_tick(&mut self, now: i64) -> Result<()> {
        if self.last_flush == i64::MIN {
            self.last_flush = now;
        } else if now.saturating_sub(self.last_flush) >= self.flush_interval {
            self.last_flush = now;
            self.flush_all()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_all()
    }

    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        self.flush_all()?;
        let id = barrier.id;
        (0..self.senders.len()).try_for_each(|t| self.send(t, Message::Barrier(id)))
    }

    fn finish(&mut self, _last: Option<&mut BarrierCtx>) -> Result<()> {
        self.flush_all()?;
        (0..self.senders.len()).try_for_each(|t| self.send(t, Message::End))
    }

    fn stop(&mut self) -> Result<()> {
        // No `End`: downstream tasks stop at the same savepoint barrier,
        // which they received already, and never read this channel again.
        self.flush_all()
    }
}
