//! Reading a completed checkpoint back while a job's tasks are built.
//!
//! Each operator subtask's snapshot is laid out again in a scratch directory
//! (hard links, so nothing is copied and the checkpoint's files are never
//! written to), exactly as the operator wrote it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use tideline_state::StateScope;

use crate::checkpoint::storage::{safe_name, CompletedCheckpoint, PartitionState};
use crate::checkpoint::RestoreContext;
use crate::error::{Error, Result};

/// A checkpoint being restored from.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) checkpoint: CompletedCheckpoint,
    scratch: PathBuf,
    /// Operator subtask directories already laid out.
    laid_out: Mutex<BTreeMap<(String, usize), PathBuf>>,
}

impl Restored {
    pub(crate) fn new(checkpoint: CompletedCheckpoint) -> Self {
        let scratch = checkpoint.root.join(format!(
            ".restore-{}-{}",
            checkpoint.id(),
            std::process::id()
        ));
        Self {
            checkpoint,
            scratch,
            laid_out: Mutex::new(BTreeMap::new()),
        }
    }

    fn lay_out(
        &self,
        operator: &str,
        subtask: usize,
        files: &[super::storage::StoredFile],
    ) -> Result<PathBuf> {
        let key = (operator.to_string(), subtask);
        let mut laid_out = self.laid_out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = laid_out.get(&key) {
            return Ok(dir.clone());
        }
        let dir = self
            .scratch
            .join(safe_name(operator))
            .join(subtask.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("delete", &dir, e))?;
        }
        for f in files {
            self.checkpoint
                .store
                .fetch(&f.stored, &dir.join(&f.local))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        laid_out.insert(key, dir.clone());
        Ok(dir)
    }

    /// What subtask `subtask` of `parallelism` of the operator of uid
    /// `operator` and type `kind` restores from; `None` when the checkpoint
    /// holds nothing for that uid.
    ///
    /// # Errors
    /// When the state under that uid was written by another kind of
    /// operator: restoring it would misread it.
    pub(crate) fn operator(
        &self,
        operator: &str,
        kind: &str,
        subtask: usize,
        parallelism: usize,
        key_groups: u16,
    ) -> Result<Option<RestoreContext>> {
        let Some(meta) = self.checkpoint.metadata.operators.get(operator) else {
            return Ok(None);
        };
        if let Some(written_by) = self.checkpoint.metadata.operator_types.get(operator) {
            if written_by != kind {
                return Err(Error::config(
                    format!("operator uid '{operator}'"),
                    format!(
                        "checkpoint {} holds state of a {written_by} under this uid, but the job's operator with it is a {kind}; \
                         give the operators distinct, stable uids with .uid(...)",
                        self.checkpoint.id()
                    ),
                ));
            }
        }
        let dirs = meta
            .subtasks
            .iter()
            .map(|(old, files)| self.lay_out(operator, *old, files))
            .collect::<Result<Vec<_>>>()?;
        let range =
            StateScope::for_subtask(operator, subtask, parallelism, key_groups).key_group_range;
        Ok(Some(RestoreContext {
            dirs,
            key_groups,
            range,
            old_parallelism: meta.parallelism,
            subtask,
        }))
    }

    /// The watermark subtask `subtask` of the node headed by `node` starts
    /// at: its own at the same parallelism, else the smallest of the node's.
    pub(crate) fn watermark(&self, node: &str, subtask: usize, parallelism: usize) -> Option<i64> {
        let marks = self.checkpoint.metadata.watermarks.get(node)?;
        if marks.len() == parallelism {
            if let Some(w) = marks.get(&subtask) {
                return Some(*w);
            }
        }
        marks.values().min().copied()
    }

    /// Where partition `partition` of source `source` stood.
    pub(crate) fn partition(&self, source: &str, partition: usize) -> Option<&PartitionState> {
        self.checkpoint
            .metadata
            .sources
            .get(source)?
            .get(&partition)
    }

    /// Removes the scratch directory (once every operator has restored).
    pub(crate) fn clean_up(&self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
