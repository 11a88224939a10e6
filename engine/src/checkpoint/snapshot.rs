//! What operators see of a checkpoint: a [`SnapshotWriter`] when a barrier
//! passes them, a [`RestoreContext`] when a job restarts from one.
//!
//! Invariants: an operator writes its snapshot synchronously, between two
//! batches, into a directory of its own (per operator and subtask); the
//! coordinator makes the files durable afterwards, off the task's thread.
//! A restore hands each new subtask the snapshots of *every* old subtask of
//! the operator, with the range of key groups it now owns, so state can be
//! redistributed when the parallelism changed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_state::key_group::key_group_of;
pub use tideline_state::SnapshotFile;

use crate::checkpoint::storage::{safe_name, PartitionState, StoredFile};
use crate::error::{Error, Result};

/// The kind of operator `Op` is, as checkpoints record it: the name of its
/// type without module path or generic parameters (`WindowOperator`).
/// Generics name closures by source line and the path moves with the code,
/// so neither may make a new version of a program refuse its savepoints.
pub(crate) fn operator_kind<Op>() -> &'static str {
    let name = std::any::type_name::<Op>();
    let base = name.split('<').next().unwrap_or(name);
    base.rsplit("::").next().unwrap_or(base)
}

/// One file staged by a task for a checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct StagedFile {
    /// Root-relative path where the task wrote it.
    pub(crate) staged: String,
    /// Root-relative path where the checkpoint keeps it (`shared/...` for
    /// files several checkpoints may reference).
    pub(crate) stored: String,
}

/// Files of one operator subtask.
#[derive(Clone, Debug, Default)]
pub(crate) struct OperatorPart {
    /// The operator's uid.
    pub(crate) operator: String,
    /// The Rust type of the operator that wrote it.
    pub(crate) kind: String,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) files: Vec<(StoredFile, StagedFile)>,
}

/// Everything one task contributes to a checkpoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskSnapshot {
    /// The node's head operator, and this task's subtask and watermark.
    pub(crate) node: String,
    pub(crate) subtask: usize,
    pub(crate) watermark: i64,
    pub(crate) operators: Vec<OperatorPart>,
    /// `(source name, partition, state)`.
    pub(crate) sources: Vec<(String, usize, PartitionState)>,
    /// `(sink name, subtask, transaction)`.
    pub(crate) transactions: Vec<(String, usize, Vec<u8>)>,
    /// How long the task aligned this checkpoint's barriers.
    pub(crate) alignment: std::time::Duration,
}

/// A barrier (or the end of input) passing down a task's chain, collecting
/// the task's snapshot.
#[derive(Debug)]
pub(crate) struct BarrierCtx {
    /// The checkpoint's id (for a final snapshot: the id sinks name their
    /// last transaction with).
    pub(crate) id: u64,
    pub(crate) root: PathBuf,
    /// Root-relative directory the task stages into.
    pub(crate) stage: String,
    pub(crate) snapshot: TaskSnapshot,
}

impl BarrierCtx {
    /// A writer for the operator of uid `operator` and type `kind` at
    /// `subtask` of `parallelism`.
    pub(crate) fn writer(
        &mut self,
        operator: &str,
        kind: &str,
        subtask: usize,
        parallelism: usize,
    ) -> SnapshotWriter<'_> {
        let local = format!("{}/{}/{subtask}", self.stage, safe_name(operator));
        SnapshotWriter {
            checkpoint: self.id,
            dir: self.root.join(&local),
            local,
            part: OperatorPart {
                operator: operator.to_string(),
                kind: kind.to_string(),
                subtask,
                parallelism,
                files: Vec::new(),
            },
            ctx_parts: &mut self.snapshot.operators,
        }
    }
}

/// Where an operator writes its state at a checkpoint barrier.
#[derive(Debug)]
pub struct SnapshotWriter<'a> {
    checkpoint: u64,
    dir: PathBuf,
    /// Root-relative form of `dir`.
    local: String,
    part: OperatorPart,
    ctx_parts: &'a mut Vec<OperatorPart>,
}

impl SnapshotWriter<'_> {
    /// The checkpoint's id.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint
    }

    /// This operator subtask's snapshot directory (created on first call).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn dir(&mut self) -> Result<&Path> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        Ok(&self.dir)
    }

    /// A subdirectory `name` of [`SnapshotWriter::dir`] (created), for a
    /// state backend that writes its own files (add them with
    /// [`SnapshotWriter::add_files`], named relative to `dir`).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn subdir(&mut self, name: &str) -> Result<PathBuf> {
        // Creating it creates `dir` too.
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(dir)
    }

    /// Records files the operator (or its keyed state) wrote into [`SnapshotWriter::dir`].
    pub fn add_files(&mut self, files: Vec<SnapshotFile>) {
        for f in files {
            let staged = format!("{}/{}", self.local, f.name);
            let stored = match &f.shared_name {
                Some(shared) => format!("shared/{}", safe_name(shared)),
                None => staged.clone(),
            };
            self.part.files.push((
                StoredFile {
                    local: f.name,
                    stored: stored.clone(),
                },
                StagedFile { staged, stored },
            ));
        }
    }

    /// Writes a small value (timers, watermarks, counters) as file `name`.
    ///
    /// # Errors
    /// When it cannot be encoded or written.
    pub fn put<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value)
            .map_err(|e| Error::user(format!("cannot encode the snapshot value `{name}`: {e}")))?;
        let path = self.dir()?.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io("write", &path, e))?;
        self.add_files(vec![SnapshotFile {
            name: name.to_string(),
            shared_name: None,
        }]);
        Ok(())
    }
}

impl Drop for SnapshotWriter<'_> {
    fn drop(&mut self) {
        if !self.part.files.is_empty() {
            self.ctx_parts.push(std::mem::take(&mut self.part));
        }
    }
}

/// What a restarted operator subtask restores from.
#[derive(Clone, Debug)]
pub struct RestoreContext {
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) key_groups: u16,
    pub(crate) range: Range<u16>,
    pub(crate) old_parallelism: usize,
    pub(crate) subtask: usize,
}

impl RestoreContext {
    /// The snapshot directories of every old subtask of the operator (only
    /// those that wrote something), as [`SnapshotWriter::dir`] had them.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The key groups this subtask owns now.
    pub fn key_group_range(&self) -> Range<u16> {
        self.range.clone()
    }

    /// Whether this subtask owns `key` now.
    ///
    /// # Errors
    ///
    /// [`Error::State`] if the key cannot be encoded to
    /// find its key group.
    pub fn owns_key<K: Serialize + ?Sized>(&self, key: &K) -> Result<bool> {
        Ok(self.range.contains(&key_group_of(key, self.key_groups)?))
    }

    /// Whether the job runs at the parallelism the checkpoint was taken at.
    pub fn same_parallelism(&self, parallelism: usize) -> bool {
        self.old_parallelism == parallelism
    }

    /// This subtask's index.
    pub fn subtask(&self) -> usize {
        self.subtask
    }

    /// The value every old subtask wrote with [`SnapshotWriter::put`] under `name`.
    ///
    /// # Errors
    /// When a file is unreadable or does not decode as `T`.
    pub fn read_all<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>> {
        let mut values = Vec::new();
        for dir in &self.dirs {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            values.push(postcard::from_bytes(&bytes).map_err(|e| Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("cannot decode: {e}"),
            })?);
        }
        Ok(values)
    }
}
