//! Checkpoint-completion hooks: the one way sources and sinks hear that a
//! checkpoint is complete (or will never be).
//!
//! A sink's [`Committer`] commits the transactions the
//! checkpoint holds, then hears that they all are
//! ([`Committer::checkpoint_committed`]); a [`Source`] is told the offsets the
//! checkpoint recorded ([`Source::notify_checkpoint_complete`]),
//! so it can commit Kafka group offsets or confirm a PostgreSQL LSN.
//!
//! Ordering guarantees (the same for both):
//! - a hook for checkpoint `n` runs only after `n`'s metadata is durable, on
//!   the checkpoint thread (never a task's), in increasing id order, at most
//!   once per run; sinks commit first, then sources are notified;
//! - when a hook fails (error or panic) the job fails; later checkpoints are
//!   not completed;
//! - a restored job runs the hooks of the checkpoint it restored from again,
//!   before any task starts: commits are idempotent, and a source that
//!   crashed between completion and its own commit catches up;
//! - a subtask that finished is covered by the first checkpoint completed
//!   after it (its final offsets and transaction are in it), so its last
//!   records are committed and notified like any others;
//! - an aborted checkpoint (given up before completing) is reported to
//!   every hook with its id; its transactions stay pending and are committed
//!   by the next checkpoint that completes, which holds them again.

use std::sync::Arc;

use crate::checkpoint::storage::Metadata;
use crate::error::{guarded, Result};
use crate::sink::Committer;
use crate::source::Source;

/// Something told of completed and aborted checkpoints.
pub(crate) trait CompletionHook: Send + Sync {
    /// The uid of the source or sink, for errors and deduplication.
    fn uid(&self) -> &str;

    /// Whether this is a sink's committer (those run first).
    fn is_sink(&self) -> bool;

    /// Checkpoint `checkpoint` is complete and durable.
    fn completed(&self, checkpoint: &Metadata) -> Result<()>;

    /// Checkpoint `id` will never complete.
    fn aborted(&self, id: u64) -> Result<()>;

    /// The job restarts from `checkpoint`: undo what came after it, then
    /// complete it again.
    fn restoring(&self, checkpoint: &Metadata) -> Result<()> {
        self.completed(checkpoint)
    }
}

/// A sink's committer.
pub(crate) struct SinkHook {
    pub(crate) uid: String,
    pub(crate) committer: Arc<dyn Committer>,
}

impl CompletionHook for SinkHook {
    fn uid(&self) -> &str {
        &self.uid
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn completed(&self, checkpoint: &Metadata) -> Result<()> {
        for txn in checkpoint.transactions.get(&self.uid).into_iter().flatten() {
            guarded(&self.uid, || self.committer.commit(txn))?;
        }
        guarded(&self.uid, || {
            self.committer.checkpoint_committed(checkpoint.id)
        })
    }

    fn aborted(&self, id: u64) -> Result<()> {
        guarded(&self.uid, || self.committer.notify_checkpoint_aborted(id))
    }

    fn restoring(&self, checkpoint: &Metadata) -> Result<()> {
        let keep = checkpoint
            .transactions
            .get(&self.uid)
            .map_or(&[][..], Vec::as_slice);
        guarded(&self.uid, || {
            self.committer.abort_uncommitted(checkpoint.id, keep)
        })?;
        self.completed(checkpoint)
    }
}

/// A source, told the offsets of its partitions.
pub(crate) struct SourceHook<T> {
    pub(crate) uid: String,
    pub(crate) source: Arc<dyn Source<T>>,
}

impl<T: 'static> CompletionHook for SourceHook<T> {
    fn uid(&self) -> &str {
        &self.uid
    }

    fn is_sink(&self) -> bool {
        false
    }

    fn completed(&self, checkpoint: &Metadata) -> Result<()> {
        let offsets = checkpoint.source_offsets(&self.uid);
        guarded(&self.uid, || {
            self.source
                .notify_checkpoint_complete(checkpoint.id, &offsets)
        })
    }

    fn aborted(&self, id: u64) -> Result<()> {
        guarded(&self.uid, || self.source.notify_checkpoint_aborted(id))
    }
}

/// The hooks of one job, sinks first, each uid once.
#[derive(Default)]
pub(crate) struct Hooks(Vec<Arc<dyn CompletionHook>>);

impl Hooks {
    /// Adds `hook` unless one with its uid is registered (every subtask of
    /// a source or sink offers the same one).
    pub(crate) fn add(&mut self, hook: Arc<dyn CompletionHook>) {
        if !self.0.iter().any(|h| h.uid() == hook.uid()) {
            self.0.push(hook);
            // Stable: sinks first, otherwise in graph order.
            self.0.sort_by_key(|h| !h.is_sink());
        }
    }

    /// Runs every hook for a completed checkpoint.
    pub(crate) fn completed(&self, checkpoint: &Metadata) -> Result<()> {
        self.0.iter().try_for_each(|h| h.completed(checkpoint))
    }

    /// Tells every hook that checkpoint `id` was aborted.
    pub(crate) fn aborted(&self, id: u64) -> Result<()> {
        self.0.iter().try_for_each(|h| h.aborted(id))
    }

    /// Runs every hook for the checkpoint a job restarts from.
    pub(crate) fn restoring(&self, checkpoint: &Metadata) -> Result<()> {
        self.0.iter().try_for_each(|h| h.restoring(checkpoint))
    }
}
