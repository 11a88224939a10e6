//! The on-disk layout of checkpoints, and the checks that make a checkpoint
//! either complete and verifiable or ignored.
//!
//! ```text
//! DIR/chk-0000000007/<operator>/<subtask>/...   files private to checkpoint 7
//! DIR/chk-0000000007/_metadata                  written last: tmp + fsync + rename
//! DIR/shared/<name>                             immutable files (RocksDB SSTs) that
//!                                               several checkpoints reference
//! DIR/final-<run>/<operator>/<subtask>/...      snapshots of subtasks that finished
//! ```
//!
//! Invariants:
//! - a checkpoint exists only once its `_metadata` is in place; the metadata
//!   carries a CRC-32 of itself and the length and CRC-32 of every file it
//!   references, so a truncated or altered file is detected before anything
//!   is restored from it;
//! - files are never modified after the metadata that references them is
//!   written; pruning deletes a shared or final file only when no retained
//!   checkpoint references it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the metadata file inside a checkpoint directory.
pub(crate) const METADATA: &str = "_metadata";
pub(crate) const FORMAT: u32 = 2;

/// Length and CRC-32 of one referenced file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileSum {
    pub(crate) len: u64,
    pub(crate) crc32: u32,
}

/// One file of an operator subtask's snapshot: where the operator sees it
/// (relative to its snapshot directory) and where it is stored (relative to
/// the checkpoint root).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFile {
    pub(crate) local: String,
    pub(crate) stored: String,
}

/// The snapshot of one operator at one subtask.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OperatorMeta {
    pub(crate) parallelism: usize,
    /// Per subtask (index = subtask), its files.
    pub(crate) subtasks: BTreeMap<usize, Vec<StoredFile>>,
}

/// Where one source partition stood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionState {
    pub(crate) offset: Vec<u64>,
    pub(crate) max_timestamp: i64,
    pub(crate) explicit_watermark: i64,
    pub(crate) finished: bool,
}

/// Everything a checkpoint records besides the files' contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) format: u32,
    pub(crate) id: u64,
    /// Taken when every task had finished (the end of a bounded job).
    pub(crate) is_final: bool,
    /// The last checkpoint of a job stopped with a drain: every window
    /// fired and the watermark is `+inf`, so it cannot be resumed from.
    #[serde(default)]
    pub(crate) drained: bool,
    /// Taken by a stop with a savepoint.
    #[serde(default)]
    pub(crate) savepoint: bool,
    /// By operator uid: the type of the operator that wrote the state, so a
    /// uid reused for another kind of operator is refused on restore.
    #[serde(default)]
    pub(crate) operator_types: BTreeMap<String, String>,
    /// Every referenced file, by its path relative to the root.
    pub(crate) files: BTreeMap<String, FileSum>,
    /// By operator name.
    pub(crate) operators: BTreeMap<String, OperatorMeta>,
    /// By the name of a node's head operator: each subtask's watermark.
    pub(crate) watermarks: BTreeMap<String, BTreeMap<usize, i64>>,
    /// By source name, then partition.
    pub(crate) sources: BTreeMap<String, BTreeMap<usize, PartitionState>>,
    /// By sink name: the transactions to commit, in subtask order.
    pub(crate) transactions: BTreeMap<String, Vec<Vec<u8>>>,
}

#[derive(Serialize, Deserialize)]
struct MetadataFile {
    crc32: u32,
    body: Metadata,
}

/// A complete checkpoint: its metadata was read and every file it references
/// has the recorded length and checksum.
#[derive(Clone, Debug)]
pub struct CompletedCheckpoint {
    pub(crate) root: PathBuf,
    pub(crate) metadata: Metadata,
}

impl CompletedCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> u64 {
        self.metadata.id
    }

    /// Whether it was taken at the end of a bounded job (every input done).
    pub fn is_final(&self) -> bool {
        self.metadata.is_final
    }

    /// The checkpoint's directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join(checkpoint_dir_name(self.metadata.id))
    }

    /// Total bytes of the files it references (shared ones included).
    pub fn size_bytes(&self) -> u64 {
        self.metadata.files.values().map(|f| f.len).sum()
    }
}

/// A checkpoint that was passed over when looking for the latest one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    /// Its id.
    pub id: u64,
    /// Why it cannot be restored.
    pub reason: String,
}

pub(crate) fn checkpoint_dir_name(id: u64) -> String {
    format!("chk-{id:010}")
}

fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// A failed file-system call on checkpoint files (External, with the
/// `io::Error` kept so its kind can be matched).
pub(crate) fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io("access", path, e)
}

/// A checkpoint file that is malformed or inconsistent.
pub(crate) fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Length and CRC-32 of a file.
pub(crate) fn checksum(path: &Path) -> Result<FileSum> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(FileSum {
        len,
        crc32: hasher.finalize(),
    })
}

/// Flushes a file or directory to disk.
pub(crate) fn fsync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", path, e))
}

/// The checkpoints of one job, in one directory.
#[derive(Clone, Debug)]
pub struct CheckpointStorage {
    root: PathBuf,
}

impl CheckpointStorage {
    /// The storage at `root` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids of every checkpoint directory (complete or not), ascending.
    fn dir_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_checkpoint_dir) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The largest checkpoint id used so far (0 if none): new checkpoints
    /// take larger ones, so they never reuse a directory.
    pub(crate) fn max_id(&self) -> Result<u64> {
        Ok(self.dir_ids()?.last().copied().unwrap_or(0))
    }

    /// Ids of the checkpoints that have a metadata file, newest first.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn complete_ids(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self
            .dir_ids()?
            .into_iter()
            .filter(|id| {
                self.root
                    .join(checkpoint_dir_name(*id))
                    .join(METADATA)
                    .is_file()
            })
            .collect();
        ids.reverse();
        Ok(ids)
    }

    fn read_metadata(&self, id: u64) -> Result<Metadata> {
        let path = self.root.join(checkpoint_dir_name(id)).join(METADATA);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let file: MetadataFile = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("malformed metadata: {e}")))?;
        if file.body.format != FORMAT {
            return Err(corrupt(
                &path,
                format!(
                    "metadata of format {} (this build reads format {FORMAT}): written by another version of Tideline",
                    file.body.format
                ),
            ));
        }
        let body = serde_json::to_vec(&file.body).map_err(|e| corrupt(&path, e))?;
        if crc32fast::hash(&body) != file.crc32 {
            return Err(corrupt(&path, "metadata checksum mismatch (altered file)"));
        }
        if file.body.id != id {
            return Err(corrupt(
                &path,
                format!(
                    "metadata of format {} for checkpoint {} found in the directory of checkpoint {id}",
                    file.body.format, file.body.id
                ),
            ));
        }
        Ok(file.body)
    }

    /// Opens checkpoint `id`, verifying every file it references.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file when the metadata is missing or
    /// malformed, or a file is missing, truncated or altered.
    pub fn open(&self, id: u64) -> Result<CompletedCheckpoint> {
        let metadata = self.read_metadata(id)?;
        for (stored, sum) in &metadata.files {
            let path = self.root.join(stored);
            let actual = checksum(&path)?;
            if actual.len != sum.len {
                return Err(corrupt(
                    &path,
                    format!(
                        "truncated or altered: {} bytes, the checkpoint recorded {}",
                        actual.len, sum.len
                    ),
                ));
            }
            if actual.crc32 != sum.crc32 {
                return Err(corrupt(&path, "checksum mismatch (altered file)"));
            }
        }
        Ok(CompletedCheckpoint {
            root: self.root.clone(),
            metadata,
        })
    }

    /// Opens the checkpoint in directory `dir` (a `chk-N` directory).
    ///
    /// # Errors
    /// As [`CheckpointStorage::open`], or when `dir` is not a checkpoint directory.
    pub fn open_dir(dir: &Path) -> Result<CompletedCheckpoint> {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_checkpoint_dir)
            .ok_or_else(|| corrupt(dir, "not a checkpoint directory (expected chk-N)"))?;
        let root = dir
            .parent()
            .ok_or_else(|| corrupt(dir, "a checkpoint directory has a parent"))?;
        CheckpointStorage {
            root: root.to_path_buf(),
        }
        .open(id)
    }

    /// The newest checkpoint that verifies, and the newer ones passed over
    /// because they do not (with why).
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn latest(&self) -> Result<(Option<CompletedCheckpoint>, Vec<SkippedCheckpoint>)> {
        let mut skipped = Vec::new();
        for id in self.complete_ids()? {
            match self.open(id) {
                Ok(c) => return Ok((Some(c), skipped)),
                Err(e) => skipped.push(SkippedCheckpoint {
                    id,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((None, skipped))
    }

    /// Writes the metadata of a checkpoint whose files are in place: to a
    /// temporary file, fsynced, renamed, and the directory fsynced.
    pub(crate) fn write_metadata(&self, metadata: &Metadata) -> Result<()> {
        let dir = self.root.join(checkpoint_dir_name(metadata.id));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let body = serde_json::to_vec(metadata)
            .map_err(|e| Error::Internal(format!("encoding checkpoint metadata: {e}")))?;
        let file = MetadataFile {
            crc32: crc32fast::hash(&body),
            body: metadata.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Internal(format!("encoding checkpoint metadata: {e}")))?;
        let tmp = dir.join(format!("{METADATA}.tmp"));
        let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        out.write_all(&bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        out.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        drop(out);
        let target = dir.join(METADATA);
        std::fs::rename(&tmp, &target).map_err(|e| Error::io("rename into", &target, e))?;
        fsync(&dir)?;
        fsync(&self.root)
    }

    /// Removes directories of checkpoints that never completed (a run
    /// stopped while writing them). Called before a job starts.
    pub(crate) fn remove_incomplete(&self) -> Result<()> {
        let complete: BTreeSet<u64> = self.complete_ids()?.into_iter().collect();
        for id in self.dir_ids()? {
            if !complete.contains(&id) {
                let dir = self.root.join(checkpoint_dir_name(id));
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io("delete", &dir, e))?;
            }
        }
        Ok(())
    }

    /// Keeps the newest `retain` complete checkpoints (and any newer
    /// directory still being written), removes the rest, then every shared or
    /// final file no retained checkpoint references — except under
    /// `own_final`, the finished-subtask snapshots of the running job.
    pub(crate) fn prune(&self, retain: usize, own_final: &str) -> Result<()> {
        let complete = self.complete_ids()?;
        let kept: Vec<u64> = complete.iter().copied().take(retain.max(1)).collect();
        let oldest_kept = kept.last().copied().unwrap_or(0);
        for id in self.dir_ids()? {
            if id < oldest_kept || (complete.contains(&id) && !kept.contains(&id)) {
                let dir = self.root.join(checkpoint_dir_name(id));
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io("delete", &dir, e))?;
            }
        }
        let mut referenced = BTreeSet::new();
        for id in &kept {
            // A kept checkpoint that no longer reads is no reason to keep files.
            if let Ok(meta) = self.read_metadata(*id) {
                referenced.extend(meta.files.into_keys());
            }
        }
        for entry in std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "shared" {
                remove_unreferenced(&self.root, &entry.path(), &referenced)?;
            } else if name.starts_with("final-")
                && name != own_final
                && remove_unreferenced(&self.root, &entry.path(), &referenced)?
            {
                std::fs::remove_dir(entry.path())
                    .map_err(|e| Error::io("delete", entry.path(), e))?;
            }
        }
        Ok(())
    }
}

impl CheckpointStorage {
    /// Copies the complete checkpoint `metadata` describes into `dir`, as a
    /// checkpoint root of its own (`dir/chk-N` with its private and shared
    /// files, hard-linked where the file system allows), metadata last, so
    /// it outlives this storage's pruning. Returns the `chk-N` directory.
    pub(crate) fn export(&self, metadata: &Metadata, dir: &Path) -> Result<PathBuf> {
        let target = CheckpointStorage::new(dir)?;
        for stored in metadata.files.keys() {
            let (from, to) = (self.root.join(stored), target.root.join(stored));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
            if to.exists() {
                std::fs::remove_file(&to).map_err(|e| io_err(&to, e))?;
            }
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| io_err(&from, e))?;
                fsync(&to)?;
            }
        }
        target.write_metadata(metadata)?;
        Ok(target.root.join(checkpoint_dir_name(metadata.id)))
    }
}

/// Deletes every file below `dir` whose root-relative path is not in
/// `referenced`, and directories left empty.
fn remove_unreferenced(root: &Path, dir: &Path, referenced: &BTreeSet<String>) -> Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        if path.is_dir() {
            if remove_unreferenced(root, &path, referenced)? {
                std::fs::remove_dir(&path).map_err(|e| Error::io("delete", &path, e))?;
            } else {
                empty = false;
            }
        } else {
            let rel = relative(root, &path);
            if referenced.contains(&rel) {
                empty = false;
            } else {
                std::fs::remove_file(&path).map_err(|e| Error::io("delete", &path, e))?;
            }
        }
    }
    Ok(empty)
}

/// `path` relative to `root`, with `/` separators.
pub(crate) fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A file-system-safe form of an operator name.
pub(crate) fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) -> Result<FileSum> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io_err(&path, e))?;
        checksum(&path)
    }

    fn complete(storage: &CheckpointStorage, id: u64, files: &[(&str, &[u8])]) -> Result<()> {
        let mut meta = Metadata {
            format: FORMAT,
            id,
            ..Metadata::default()
        };
        for (rel, bytes) in files {
            meta.files
                .insert(rel.to_string(), write(storage.root(), rel, bytes)?);
        }
        storage.write_metadata(&meta)
    }

    #[test]
    fn a_root_that_cannot_be_created_is_an_external_io_error() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").map_err(|e| io_err(&file, e))?;
        let root = file.join("checkpoints");
        let err = CheckpointStorage::new(&root).err();
        assert!(
            matches!(&err, Some(Error::Io { action: "create", path, .. }) if *path == root),
            "{err:?}"
        );
        let err = err.map(|e| (e.domain(), e.io_kind()));
        assert_eq!(
            err,
            Some((
                crate::ErrorDomain::External,
                Some(std::io::ErrorKind::NotADirectory)
            ))
        );
        Ok(())
    }

    #[test]
    fn only_checkpoints_with_metadata_count_and_corruption_falls_back() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let storage = CheckpointStorage::new(dir.path())?;
        complete(&storage, 1, &[("chk-0000000001/a/0/state", b"one")])?;
        complete(
            &storage,
            2,
            &[
                ("chk-0000000002/a/0/state", b"two"),
                ("shared/x.sst", b"sst"),
            ],
        )?;
        // A third that never got its metadata.
        write(dir.path(), "chk-0000000003/a/0/state", b"partial")?;
        assert_eq!(storage.complete_ids()?, vec![2, 1]);
        assert_eq!(storage.max_id()?, 3);
        let (latest, skipped) = storage.latest()?;
        assert_eq!(latest.map(|c| c.id()), Some(2));
        assert!(skipped.is_empty());

        // Truncate a file of checkpoint 2: it is skipped, naming the file.
        std::fs::write(dir.path().join("shared/x.sst"), b"ss")
            .map_err(|e| io_err(dir.path(), e))?;
        let (latest, skipped) = storage.latest()?;
        assert_eq!(latest.map(|c| c.id()), Some(1));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("x.sst") && skipped[0].reason.contains("truncated"));
        // Same length, other bytes: a checksum mismatch.
        std::fs::write(dir.path().join("shared/x.sst"), b"SST")
            .map_err(|e| io_err(dir.path(), e))?;
        let err = storage
            .open(2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("checksum mismatch"), "{err}");
        // Altered metadata is detected too.
        let meta_path = dir.path().join("chk-0000000001").join(METADATA);
        let text = std::fs::read_to_string(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        std::fs::write(&meta_path, text.replace("\"id\": 1", "\"id\": 7"))
            .map_err(|e| io_err(&meta_path, e))?;
        assert!(storage.open(1).is_err());
        let (latest, skipped) = storage.latest()?;
        assert!(latest.is_none());
        assert_eq!(skipped.len(), 2);

        storage.remove_incomplete()?;
        assert!(!dir.path().join("chk-0000000003").exists());
        Ok(())
    }

    #[test]
    fn pruning_keeps_exactly_the_newest_k_and_their_shared_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let storage = CheckpointStorage::new(dir.path())?;
        for id in 1..=5u64 {
            let private = format!("chk-{id:010}/op/0/state");
            let shared = format!("shared/{id}.sst");
            // Each checkpoint references its own SST and the previous one's.
            let previous = format!("shared/{}.sst", id.saturating_sub(1).max(1));
            write(dir.path(), &previous, b"sst")?;
            complete(
                &storage,
                id,
                &[
                    (private.as_str(), b"s"),
                    (shared.as_str(), b"sst"),
                    (previous.as_str(), b"sst"),
                ],
            )?;
            storage.prune(2, "final-own")?;
        }
        write(dir.path(), "final-own/op/0/state", b"mine")?;
        write(dir.path(), "final-old/op/0/state", b"stale")?;
        storage.prune(2, "final-own")?;
        assert_eq!(storage.complete_ids()?, vec![5, 4]);
        let mut shared: Vec<String> = std::fs::read_dir(dir.path().join("shared"))
            .map_err(|e| io_err(dir.path(), e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .collect();
        shared.sort();
        assert_eq!(shared, vec!["3.sst", "4.sst", "5.sst"]);
        assert!(dir.path().join("final-own/op/0/state").exists());
        assert!(!dir.path().join("final-old").exists());
        Ok(())
    }
}
