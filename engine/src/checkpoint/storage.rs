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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) use crate::checkpoint::store::fsync;
pub use crate::checkpoint::store::{CheckpointStore, LocalDirectory};
use crate::error::{Error, Result};

/// Name of the metadata file inside a checkpoint directory.
pub(crate) const METADATA: &str = "_metadata";
/// 3: transactions as hex strings, the checksum over the body as stored.
pub(crate) const FORMAT: u32 = 3;

/// Length and CRC-32 of one stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Its length in bytes.
    pub len: u64,
    /// Its CRC-32.
    pub crc32: u32,
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
    #[serde(with = "hex_blobs")]
    pub(crate) transactions: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Metadata {
    /// Every partition offset held for source `uid`, by partition.
    pub(crate) fn source_offsets(&self, uid: &str) -> Vec<(usize, crate::source::SourceOffset)> {
        self.sources
            .get(uid)
            .into_iter()
            .flatten()
            .map(|(partition, state)| {
                (
                    *partition,
                    crate::source::SourceOffset(state.offset.clone()),
                )
            })
            .collect()
    }
}

/// The metadata file: the body as written, and its CRC-32 over those
/// bytes (so reading it checks the bytes, without encoding it again).
#[derive(Serialize, Deserialize)]
struct MetadataFile {
    crc32: u32,
    body: Box<serde_json::value::RawValue>,
}

/// Transactions as hex strings: serde writes bytes as an array of numbers,
/// about twice as long and many times slower to read back, and an
/// exactly-once sink's transaction may hold every record since the last
/// checkpoint.
mod hex_blobs {
    use std::collections::BTreeMap;

    use serde::de::Visitor;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Hex<'a>(&'a [u8]);

    impl Serialize for Hex<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut text = String::with_capacity(self.0.len() * 2);
            for byte in self.0 {
                text.push(char::from(DIGITS[usize::from(byte >> 4)]));
                text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
            }
            serializer.serialize_str(&text)
        }
    }

    struct Blob(Vec<u8>);

    impl<'de> Deserialize<'de> for Blob {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BlobVisitor;
            impl<'de> Visitor<'de> for BlobVisitor {
                type Value = Blob;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a transaction as a hex string")
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Blob, E> {
                    let digit = |c: u8| {
                        char::from(c)
                            .to_digit(16)
                            .map(|d| d as u8)
                            .ok_or_else(|| E::custom("a transaction is not hex"))
                    };
                    let bytes = text.as_bytes();
                    if bytes.len() % 2 != 0 {
                        return Err(E::custom("a transaction has an odd number of hex digits"));
                    }
                    bytes
                        .chunks_exact(2)
                        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
                        .collect::<Result<Vec<u8>, E>>()
                        .map(Blob)
                }
            }
            deserializer.deserialize_str(BlobVisitor)
        }
    }

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<Vec<u8>>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let view: BTreeMap<&String, Vec<Hex<'_>>> = map
            .iter()
            .map(|(sink, txns)| (sink, txns.iter().map(|t| Hex(t)).collect()))
            .collect();
        view.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Vec<Vec<u8>>>, D::Error> {
        let map: BTreeMap<String, Vec<Blob>> = Deserialize::deserialize(deserializer)?;
        Ok(map
            .into_iter()
            .map(|(sink, txns)| (sink, txns.into_iter().map(|b| b.0).collect()))
            .collect())
    }
}

/// A complete checkpoint: its metadata was read and every file it references
/// has the recorded length and checksum.
#[derive(Clone, Debug)]
pub struct CompletedCheckpoint {
    /// The local staging directory of its storage.
    pub(crate) root: PathBuf,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) metadata: Metadata,
}

impl CompletedCheckpoint {
    /// The checkpoint's id.
    pub fn id(&self) -> u64 {
        self.metadata.id
    }

    /// The partition offsets it holds for the source with uid `uid` (its
    /// name unless it was given one), by partition: where a restore from
    /// it resumes each partition.
    pub fn source_offsets(&self, uid: &str) -> Vec<(usize, crate::source::SourceOffset)> {
        self.metadata.source_offsets(uid)
    }

    /// Whether it was taken at the end of a bounded job (every input done).
    pub fn is_final(&self) -> bool {
        self.metadata.is_final
    }

    /// The checkpoint's directory (in its store).
    pub fn dir(&self) -> PathBuf {
        Path::new(&self.store.location()).join(checkpoint_dir_name(self.metadata.id))
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

/// The id of the checkpoint in the `chk-N` directory `dir`, from its name.
pub(crate) fn checkpoint_dir_id(dir: &Path) -> Result<u64> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_checkpoint_dir)
        .ok_or_else(|| corrupt(dir, "not a checkpoint directory (expected chk-N)"))
}

/// A failed file-system call on checkpoint files (External, with the
/// `io::Error` kept so its kind can be matched).
#[cfg(test)]
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

/// The checkpoints of one job: their files in a [`CheckpointStore`], and
/// the local directory tasks stage snapshots in.
#[derive(Clone, Debug)]
pub struct CheckpointStorage {
    /// Local: where tasks stage and restores lay files out.
    root: PathBuf,
    store: Arc<dyn CheckpointStore>,
    /// The files of checkpoints whose metadata this storage wrote or
    /// read, by id: pruning needs them after every checkpoint, and
    /// metadata can be large (an exactly-once sink's transactions are in
    /// it), so it is parsed once, not once per retained checkpoint per
    /// checkpoint.
    files_of: Arc<std::sync::Mutex<BTreeMap<u64, Vec<String>>>>,
}

impl CheckpointStorage {
    /// The storage in the local directory `root` (created if missing), which
    /// is both the store and the staging directory.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let store = LocalDirectory::new(root)?;
        Ok(Self {
            root: store.root().to_path_buf(),
            store: Arc::new(store),
            files_of: Arc::default(),
        })
    }

    /// The storage of checkpoints in `store`, staged in the local directory
    /// `staging` (created if missing).
    ///
    /// # Errors
    /// When the staging directory cannot be created.
    pub fn with_store(
        store: Arc<dyn CheckpointStore>,
        staging: impl Into<PathBuf>,
    ) -> Result<Self> {
        let root = staging.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        Ok(Self {
            root,
            store,
            files_of: Arc::default(),
        })
    }

    /// The local staging directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the checkpoints are kept.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// An error about `key` of the store.
    fn corrupt(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        corrupt(&Path::new(&self.store.location()).join(key), reason)
    }

    /// Ids of every checkpoint with files (complete or not), ascending.
    fn dir_ids(&self) -> Result<Vec<u64>> {
        let ids: BTreeSet<u64> = self
            .store
            .list("chk-")?
            .iter()
            .filter_map(|key| parse_checkpoint_dir(key.split('/').next()?))
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// The largest checkpoint id used so far (0 if none): new checkpoints
    /// take larger ones, so they never reuse a directory.
    pub(crate) fn max_id(&self) -> Result<u64> {
        Ok(self.dir_ids()?.last().copied().unwrap_or(0))
    }

    /// Ids of the checkpoints that have a metadata file, newest first.
    ///
    /// # Errors
    /// When the store cannot be listed.
    pub fn complete_ids(&self) -> Result<Vec<u64>> {
        self.complete_of(&self.dir_ids()?)
    }

    /// Those of `ids` (ascending) that have a metadata file, newest first.
    fn complete_of(&self, ids: &[u64]) -> Result<Vec<u64>> {
        let mut complete = Vec::new();
        for &id in ids {
            if self.store.exists(&metadata_key(id))? {
                complete.push(id);
            }
        }
        complete.reverse();
        Ok(complete)
    }

    fn read_metadata(&self, id: u64) -> Result<Metadata> {
        let key = metadata_key(id);
        let bytes = self.store.read(&key)?;
        let file: MetadataFile = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(&key, format!("malformed metadata: {e}")))?;
        let checksum_ok = crc32fast::hash(file.body.get().as_bytes()) == file.crc32;
        // The format first: another version's file may not even parse.
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let format = serde_json::from_str::<Format>(file.body.get())
            .map(|f| f.format)
            .map_err(|e| self.corrupt(&key, format!("malformed metadata: {e}")))?;
        if format != FORMAT {
            return Err(self.corrupt(
                &key,
                format!(
                    "metadata of format {format} (this build reads format {FORMAT}): written by another version of Tideline"
                ),
            ));
        }
        if !checksum_ok {
            return Err(self.corrupt(&key, "metadata checksum mismatch (altered file)"));
        }
        let body: Metadata = serde_json::from_str(file.body.get())
            .map_err(|e| self.corrupt(&key, format!("malformed metadata: {e}")))?;
        if body.id != id {
            return Err(self.corrupt(
                &key,
                format!(
                    "metadata of format {} for checkpoint {} found in the directory of checkpoint {id}",
                    body.format, body.id
                ),
            ));
        }
        Ok(body)
    }

    /// Opens checkpoint `id`, verifying every file it references.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file when the metadata is missing or
    /// malformed, or a file is missing, truncated or altered.
    pub fn open(&self, id: u64) -> Result<CompletedCheckpoint> {
        let metadata = self.read_metadata(id)?;
        for (stored, sum) in &metadata.files {
            let actual = self.store.checksum(stored)?;
            if actual.len != sum.len {
                return Err(self.corrupt(
                    stored,
                    format!(
                        "truncated or altered: {} bytes, the checkpoint recorded {}",
                        actual.len, sum.len
                    ),
                ));
            }
            if actual.crc32 != sum.crc32 {
                return Err(self.corrupt(stored, "checksum mismatch (altered file)"));
            }
        }
        Ok(CompletedCheckpoint {
            root: self.root.clone(),
            store: Arc::clone(&self.store),
            metadata,
        })
    }

    /// Opens the checkpoint in directory `dir` (a `chk-N` directory).
    ///
    /// # Errors
    /// As [`CheckpointStorage::open`], or when `dir` is not a checkpoint directory.
    pub fn open_dir(dir: &Path) -> Result<CompletedCheckpoint> {
        let id = checkpoint_dir_id(dir)?;
        let root = dir
            .parent()
            .ok_or_else(|| corrupt(dir, "a checkpoint directory has a parent"))?;
        CheckpointStorage::new(root)?.open(id)
    }

    /// The newest checkpoint that verifies, and the newer ones passed over
    /// because they do not (with why).
    ///
    /// # Errors
    /// When the store cannot be listed.
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

    /// Writes the metadata of a checkpoint whose files are in place,
    /// atomically and durably: the checkpoint exists from then on.
    pub(crate) fn write_metadata(&self, metadata: &Metadata) -> Result<()> {
        let body = serde_json::to_string_pretty(metadata)
            .map_err(|e| Error::Internal(format!("encoding checkpoint metadata: {e}")))?;
        let file = MetadataFile {
            crc32: crc32fast::hash(body.as_bytes()),
            body: serde_json::value::RawValue::from_string(body)
                .map_err(|e| Error::Internal(format!("encoding checkpoint metadata: {e}")))?,
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| Error::Internal(format!("encoding checkpoint metadata: {e}")))?;
        self.store.write(&metadata_key(metadata.id), &bytes)?;
        self.files_of
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(metadata.id, metadata.files.keys().cloned().collect());
        Ok(())
    }

    /// Stores the file a task staged at `staged` (relative to the staging
    /// directory) as `stored`, durably; returns its sum and whether it was
    /// written now (a shared file stored before was not).
    pub(crate) fn store_staged(&self, staged: &str, stored: &str) -> Result<(FileSum, bool)> {
        let written = self.store.store(&self.root.join(staged), stored)?;
        Ok((self.store.checksum(stored)?, written))
    }

    /// Deletes every key under `prefix`.
    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.store.delete_all(&self.store.list(prefix)?)
    }

    /// Removes the files of checkpoints that never completed (a run stopped
    /// while writing them). Called before a job starts.
    pub(crate) fn remove_incomplete(&self) -> Result<()> {
        // One listing: it walks every checkpoint's files.
        let ids = self.dir_ids()?;
        let complete: BTreeSet<u64> = self.complete_of(&ids)?.into_iter().collect();
        for id in ids {
            if !complete.contains(&id) {
                self.delete_prefix(&format!("{}/", checkpoint_dir_name(id)))?;
            }
        }
        Ok(())
    }

    /// Keeps the newest `retain` complete checkpoints (and any newer one
    /// still being written), removes the rest, then every shared or final
    /// file no retained checkpoint references — except under `own_final`,
    /// the finished-subtask snapshots of the running job.
    pub(crate) fn prune(&self, retain: usize, own_final: &str) -> Result<()> {
        // One listing: it walks every checkpoint's files.
        let ids = self.dir_ids()?;
        let complete = self.complete_of(&ids)?;
        let kept: Vec<u64> = complete.iter().copied().take(retain.max(1)).collect();
        let oldest_kept = kept.last().copied().unwrap_or(0);
        let mut doomed = Vec::new();
        for id in ids {
            if id < oldest_kept || (complete.contains(&id) && !kept.contains(&id)) {
                doomed.extend(self.store.list(&format!("{}/", checkpoint_dir_name(id)))?);
            }
        }
        let mut referenced = BTreeSet::new();
        {
            let mut files_of = self
                .files_of
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            files_of.retain(|id, _| kept.contains(id));
            for id in &kept {
                if !files_of.contains_key(id) {
                    // A kept checkpoint that no longer reads is no reason
                    // to keep files.
                    if let Ok(meta) = self.read_metadata(*id) {
                        files_of.insert(*id, meta.files.into_keys().collect());
                    }
                }
                referenced.extend(files_of.get(id).into_iter().flatten().cloned());
            }
        }
        let own = format!("{own_final}/");
        let candidates = self.store.list("shared/")?.into_iter().chain(
            self.store
                .list("final-")?
                .into_iter()
                .filter(|k| !k.starts_with(&own)),
        );
        doomed.extend(candidates.filter(|key| !referenced.contains(key)));
        // One call: a store where each is a round trip (Kafka) does it in one.
        self.store.delete_all(&doomed)
    }

    /// Copies the complete checkpoint `metadata` describes into the local
    /// directory `dir`, as a checkpoint root of its own (`dir/chk-N` with
    /// its private and shared files, linked where the file system allows),
    /// metadata last, so it outlives this storage's pruning. Returns the
    /// `chk-N` directory.
    pub(crate) fn export(&self, metadata: &Metadata, dir: &Path) -> Result<PathBuf> {
        let target = CheckpointStorage::new(dir)?;
        for stored in metadata.files.keys() {
            let local = target.root.join(stored);
            self.store.fetch(stored, &local)?;
            fsync(&local)?;
        }
        target.write_metadata(metadata)?;
        Ok(target.root.join(checkpoint_dir_name(metadata.id)))
    }
}

fn metadata_key(id: u64) -> String {
    format!("{}/{METADATA}", checkpoint_dir_name(id))
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
    use crate::checkpoint::store::checksum;

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

    /// A store that keeps every key in memory: the checkpoint logic must
    /// work over any [`CheckpointStore`], not only a directory.
    #[derive(Debug, Default)]
    struct MemoryStore(std::sync::Mutex<BTreeMap<String, Vec<u8>>>);

    impl MemoryStore {
        fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    impl CheckpointStore for MemoryStore {
        fn location(&self) -> String {
            "memory:".into()
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>> {
            Ok(self
                .keys()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
        fn exists(&self, key: &str) -> Result<bool> {
            Ok(self.keys().contains_key(key))
        }
        fn read(&self, key: &str) -> Result<Vec<u8>> {
            self.keys()
                .get(key)
                .cloned()
                .ok_or_else(|| corrupt(Path::new(key), "missing"))
        }
        fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
            self.keys().insert(key.to_string(), bytes.to_vec());
            Ok(())
        }
        fn store(&self, staged: &Path, key: &str) -> Result<bool> {
            if self.exists(key)? {
                return Ok(false);
            }
            let bytes = std::fs::read(staged).map_err(|e| io_err(staged, e))?;
            self.write(key, &bytes)?;
            Ok(true)
        }
        fn checksum(&self, key: &str) -> Result<FileSum> {
            let bytes = self.read(key)?;
            Ok(FileSum {
                len: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            })
        }
        fn fetch(&self, key: &str, local: &Path) -> Result<()> {
            std::fs::write(local, self.read(key)?).map_err(|e| io_err(local, e))
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.keys().remove(key);
            Ok(())
        }
    }

    #[test]
    fn checkpoints_work_over_any_store() -> Result<()> {
        let staging = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let store = Arc::new(MemoryStore::default());
        let storage = CheckpointStorage::with_store(Arc::clone(&store) as _, staging.path())?;
        for id in 1..=3u64 {
            let mut meta = Metadata {
                format: FORMAT,
                id,
                ..Metadata::default()
            };
            for (staged, stored) in [
                (
                    format!("chk-{id:010}/op/0/state"),
                    format!("chk-{id:010}/op/0/state"),
                ),
                (
                    format!("chk-{id:010}/op/0/1.sst"),
                    "shared/1.sst".to_string(),
                ),
            ] {
                let path = staging.path().join(&staged);
                std::fs::create_dir_all(path.parent().unwrap_or(staging.path()))
                    .map_err(|e| io_err(&path, e))?;
                std::fs::write(&path, format!("{staged} of {id}")).map_err(|e| io_err(&path, e))?;
                let (sum, written) = storage.store_staged(&staged, &stored)?;
                // The shared file is stored once, by the first checkpoint.
                assert_eq!(written, id == 1 || !stored.starts_with("shared/"));
                meta.files.insert(stored, sum);
            }
            storage.write_metadata(&meta)?;
            storage.prune(2, "final-none")?;
        }
        assert_eq!(storage.complete_ids()?, vec![3, 2]);
        let (latest, skipped) = storage.latest()?;
        assert!(skipped.is_empty());
        assert_eq!(latest.map(|c| c.id()), Some(3));
        let keys = store.list("")?;
        assert!(keys.contains(&"shared/1.sst".to_string()), "{keys:?}");
        assert!(
            !keys.iter().any(|k| k.starts_with("chk-0000000001/")),
            "{keys:?}"
        );
        // An altered file is detected through the store, and the previous
        // checkpoint is used.
        store.write("chk-0000000003/op/0/state", b"altered")?;
        let (latest, skipped) = storage.latest()?;
        assert_eq!((latest.map(|c| c.id()), skipped.len()), (Some(2), 1));
        Ok(())
    }
}
