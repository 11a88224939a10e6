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
        loop {
            while out.remaining() > 0 {
                let Some((item, position)) = self.pending.pop_front() else {
                    break;
                };
                match item {
                    Item::Change(record) => out.push(record),
                    Item::Rejected(rejected) => out.reject(rejected),
                }
                self.set_position(position);
            }
            if out.remaining() == 0 {
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
                    return Ok(if out.is_empty() {
                        SourceStatus::Pending
                    } else {
                        SourceStatus::Ready
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
}

impl<T> Drop for CdcReader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks a thread waiting for channel space.
        self.receiver.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
