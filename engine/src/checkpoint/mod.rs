//! Checkpoints and recovery: asynchronous barrier snapshots (Chandy–Lamport,
//! as in Flink), stored so that a checkpoint is either complete and
//! verifiable or ignored, and restored at any parallelism.
//!
//! Turn them on with [`Job::checkpointing`](crate::Job::checkpointing) and
//! restart from one with [`Job::restore`](crate::Job::restore). The
//! coordinator module documents the protocol and [`storage`] the layout on
//! disk.
//!
//! Invariants:
//! - checkpoint `n` holds, for every task, its state after exactly the
//!   records that preceded barrier `n` on each of its inputs, and every
//!   source partition's offset at the moment it emitted the barrier: a
//!   restore reprocesses exactly the records after it;
//! - a sink's transaction is committed only once the checkpoint that holds
//!   it is complete, and again on restore (commits are idempotent), so an
//!   exactly-once sink shows every record's effect once;
//! - each restored task starts at the watermark it had at the barrier, so
//!   records are late or not exactly as in an uninterrupted run;
//! - state, source offsets, node watermarks and sink transactions are
//!   stored under uids (`Stream::uid`, default the operator's name; an
//!   exchange takes `<uid of the operator it feeds>@input`), never under a
//!   position in the graph; a restore refuses state for a uid the job does
//!   not have (unless allowed) and state written by another kind of
//!   operator;
//! - sources and sinks hear of completed checkpoints through one hook
//!   ([`hooks`] documents the ordering), after the metadata is durable;
//!   a failure there fails the job, never a silently dropped commit;
//! - a stop with a savepoint is the last checkpoint of a run: tasks stop
//!   after its barrier without firing anything, and it is exported into a
//!   directory no pruning touches; a drained job's last checkpoint is
//!   marked and refused on restore;
//! - every checkpoint file goes through a [`CheckpointStore`]; tasks only
//!   stage files locally.

pub(crate) mod coordinator;
pub mod hooks;
pub(crate) mod restore;
pub(crate) mod snapshot;
pub mod storage;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use snapshot::{RestoreContext, SnapshotFile, SnapshotWriter};
pub use storage::{CheckpointStorage, CompletedCheckpoint, FileSum, SkippedCheckpoint};
pub use store::{CheckpointStore, LocalDirectory};

/// How a job takes checkpoints. Two are equal when their settings are and
/// they name the same store object (or none).
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// Time (of the job's clock) between the end of one checkpoint and the
    /// start of the next.
    pub interval: Duration,
    /// Where checkpoints are written; with a [`store`](Self::store), only
    /// where tasks stage their files (a local directory).
    pub dir: PathBuf,
    /// Where checkpoint files are kept when not in `dir` itself (see
    /// [`Job::checkpoint_store`](crate::Job::checkpoint_store)).
    pub store: Option<Arc<dyn CheckpointStore>>,
    /// How many complete checkpoints are kept (the newest ones).
    pub retain: usize,
    /// How long (of the job's clock) a task may align one checkpoint's
    /// barriers before it gives that checkpoint up (`None`: it waits as long
    /// as it takes).
    pub alignment_timeout: Option<Duration>,
}

impl PartialEq for CheckpointConfig {
    fn eq(&self, other: &Self) -> bool {
        let same_store = match (&self.store, &other.store) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_store
            && (
                self.interval,
                &self.dir,
                self.retain,
                self.alignment_timeout,
            ) == (
                other.interval,
                &other.dir,
                other.retain,
                other.alignment_timeout,
            )
    }
}

impl Eq for CheckpointConfig {}

impl CheckpointConfig {
    /// The job's checkpoints: in its store, staged in `dir`; or in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn storage(&self) -> crate::Result<CheckpointStorage> {
        match &self.store {
            Some(store) => CheckpointStorage::with_store(Arc::clone(store), &self.dir),
            None => CheckpointStorage::new(&self.dir),
        }
    }

    /// Where the checkpoints are, for messages.
    pub(crate) fn location(&self) -> String {
        match &self.store {
            Some(store) => store.location(),
            None => self.dir.display().to_string(),
        }
    }
}

/// Which checkpoint a job restarts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest checkpoint in the job's checkpoint directory that
    /// verifies; newer ones that do not are reported and passed over. With
    /// no checkpoint at all the job starts from the beginning.
    Latest,
    /// The checkpoint in this `chk-N` directory; it must verify.
    Path(PathBuf),
}

/// One completed checkpoint, as the job summary reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// Taken when every task had finished (the end of a bounded job).
    pub is_final: bool,
    /// From the trigger to the metadata being durable.
    pub duration: Duration,
    /// Bytes of every file it references (shared ones included).
    pub size_bytes: u64,
    /// Bytes written for it (the rest was already held by earlier ones).
    pub new_bytes: u64,
    /// The longest any task spent aligning its barriers (from the first
    /// barrier to the last, on the job's clock).
    pub alignment: Duration,
    /// When it completed, in milliseconds of the job's clock.
    pub completed_at_ms: i64,
}

/// A checkpoint given up before it completed, as the job summary reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortedCheckpoint {
    /// Its id (never used again).
    pub id: u64,
    /// Why, naming the task.
    pub reason: String,
}
