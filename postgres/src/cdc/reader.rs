//! The task thread's side of a CDC reader: drains the channel from the
//! reader's thread into the engine's batches, and knows the position after
//! the last change it emitted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tideline_engine::{
    Data, Error, Record, Rejected, Result, SourceOffset, SourceOutput, SourceReader, SourceStatus,
};
use tideline_operators::changelog::Change;
use tokio::sync::mpsc;

use super::position::Position;
use super::SharedState;

/// What the reader's thread sends the task thread.
pub(super) enum Event<T> {
    /// Changes (or dead letters), each with the position after it.
    Items(Vec<(Item<T>, Position)>),
    /// Nothing to emit, but the position moved (a transaction without
    /// changes of ours, a keepalive, the snapshot's end).
    Moved(Position),
    /// The bound was reached.
    End,
    /// The thread failed.
    Failed(Error),
}

pub(super) enum Item<T> {
    Change(Record<Change<T>>),
    Rejected(Rejected),
}

/// The task thread's side: drains the channel into the engine's batches.
pub(super) struct CdcReader<T> {
    pub(super) receiver: mpsc::Receiver<Event<T>>,
    /// Items of a batch that did not fit the engine's last batch.
    pub(super) pending: VecDeque<(Item<T>, Position)>,
    /// After the last item emitted.
    pub(super) position: Position,
    pub(super) ended: bool,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) shared: Arc<SharedState>,
}

impl<T> CdcReader<T> {
    fn set_position(&mut self, position: Position) {
        if let Position::Stream { resume, .. } | Position::Snapshot { resume, .. } = &position {
            self.shared
                .metrics
                .position
                .store(*resume, Ordering::Relaxed);
        }
        self.position = position;
    }
}

impl<T: Data> SourceReader<Change<T>> for CdcReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<Change<T>>) -> Result<SourceStatus> {
        // Dead letters count against the batch too: a stream of rows that
        // do not decode must not keep one poll going.
        let capacity = out.remaining();
        let mut budget = capacity;
        loop {
            while budget > 0 {
                let Some((item, position)) = self.pending.pop_front() else {
                    break;
                };
                match item {
                    Item::Change(record) => out.push(record),
                    Item::Rejected(rejected) => out.reject(rejected),
                }
                budget -= 1;
                self.set_position(position);
            }
            if budget == 0 {
                return Ok(SourceStatus::Ready);
            }
            if self.ended {
                return Ok(SourceStatus::Finished);
            }
            match self.receiver.try_recv() {
                Ok(Event::Items(items)) => self.pending.extend(items),
                Ok(Event::Moved(position)) => self.set_position(position),
                Ok(Event::End) => self.ended = true,
                Ok(Event::Failed(error)) => return Err(error),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let emitted = budget < capacity || !out.is_empty();
                    return Ok(if emitted {
                        SourceStatus::Ready
                    } else {
                        SourceStatus::Pending
                    });
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::Internal(
                        "the replication thread ended without saying why".into(),
                    ));
                }
            }
        }
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(self.position.to_offset())
    }

    /// While the snapshot is read: rows copied and rows left by the
    /// planner's estimate; then the log position read and the replication
    /// slot's lag in WAL bytes.
    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        let metrics = super::CdcMetrics(Arc::clone(&self.shared.metrics));
        Some(if metrics.snapshot_done() {
            tideline_engine::PartitionProgress {
                position: metrics.position(),
                lag: Some(metrics.slot_lag_bytes()),
                bounded: false,
            }
        } else {
            let (rows, estimate) = metrics.snapshot_progress();
            tideline_engine::PartitionProgress {
                position: rows,
                lag: Some(estimate.saturating_sub(rows)),
                bounded: false,
            }
        })
    }
}

impl<T> Drop for CdcReader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks a thread waiting for channel space.
        self.receiver.close();
        // The thread sees the stop within 200 ms in the stream, at its next
        // send elsewhere; a long SQL call (the first chunk of a snapshot
        // that sorts) may keep it longer: then it is left to end on its
        // own rather than block the task thread.
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
