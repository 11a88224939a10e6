//! Where checkpoint files are kept: one small trait, [`CheckpointStore`],
//! over a flat space of `/`-separated keys (`chk-0000000007/_metadata`,
//! `shared/<name>`), so a local directory today and an object store later
//! serve the same checkpoint logic ([`CheckpointStorage`](super::CheckpointStorage)).
//!
//! Tasks never talk to the store: they stage their snapshot files in a local
//! directory (RocksDB needs local files), through [`SnapshotWriter`](super::SnapshotWriter);
//! the checkpoint thread [`store`](CheckpointStore::store)s them, and a
//! restore [`fetch`](CheckpointStore::fetch)es them back into a local
//! scratch directory. Operators and sinks never touch checkpoint files.
//!
//! Contract every implementation keeps:
//! - [`write`](CheckpointStore::write) is atomic and durable: after it
//!   returns the key holds exactly the bytes, and a crash during it leaves
//!   the old value or nothing (the metadata file relies on it: a checkpoint
//!   exists once its metadata does);
//! - [`store`](CheckpointStore::store) is durable when it returns, and never
//!   replaces a key that exists (shared files are immutable);
//! - keys are never modified after the checkpoint that references them is
//!   complete; only [`delete`](CheckpointStore::delete) removes them.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::storage::FileSum;
use crate::error::{Error, Result};

/// The storage of checkpoint files; see the module docs for the contract.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Where the files are (a directory, a bucket URL), for messages.
    fn location(&self) -> String;

    /// Every key that starts with `prefix` (all keys for `""`), in any order.
    ///
    /// # Errors
    /// When the store cannot be listed.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Whether `key` exists.
    ///
    /// # Errors
    /// When the store cannot be asked.
    fn exists(&self, key: &str) -> Result<bool>;

    /// The bytes of `key`.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    fn read(&self, key: &str) -> Result<Vec<u8>>;

    /// Writes `bytes` as `key`, atomically and durably.
    ///
    /// # Errors
    /// When it cannot be written.
    fn write(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Moves the local file `staged` in as `key`, durably; when `key`
    /// exists already (an immutable shared file stored by an earlier
    /// checkpoint) nothing is written and the answer is `false`.
    ///
    /// # Errors
    /// When it cannot be stored.
    fn store(&self, staged: &Path, key: &str) -> Result<bool>;

    /// Length and CRC-32 of `key`, as stored.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    fn checksum(&self, key: &str) -> Result<FileSum>;

    /// Makes `key` available as the local file `local` (a link or a copy,
    /// never to be written to).
    ///
    /// # Errors
    /// When it cannot be fetched.
    fn fetch(&self, key: &str, local: &Path) -> Result<()>;

    /// Removes `key` (nothing when it is missing).
    ///
    /// # Errors
    /// When it cannot be removed.
    fn delete(&self, key: &str) -> Result<()>;

    /// Removes every key of `keys`: pruning's call, so a store where each
    /// call is a round trip can do it in one.
    ///
    /// # Errors
    /// When one cannot be removed (some others may be).
    fn delete_all(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|key| self.delete(key))
    }
}

/// A [`CheckpointStore`] in a local directory; also the staging directory
/// of the tasks, so storing a private file is a rename.
#[derive(Clone, Debug)]
pub struct LocalDirectory {
    root: PathBuf,
}

impl LocalDirectory {
    /// The store at `root` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Removes the empty directories from `dir` up to (not including) the root.
    fn remove_empty_parents(&self, mut dir: Option<&Path>) {
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                return;
            }
            dir = d.parent();
        }
    }

    fn walk(&self, dir: &Path, keys: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
            if path.is_dir() {
                self.walk(&path, keys)?;
            } else {
                keys.push(relative(&self.root, &path));
            }
        }
        Ok(())
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e)),
        None => Ok(()),
    }
}

impl CheckpointStore for LocalDirectory {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // Walk only the top-level entries the prefix can match.
        let first = prefix.split('/').next().unwrap_or(prefix);
        let mut keys = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with(first) && !first.starts_with(&name) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, &mut keys)?;
            } else {
                keys.push(name);
            }
        }
        keys.retain(|k| k.starts_with(prefix));
        Ok(keys)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key).is_file())
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        std::fs::read(&path).map_err(|e| Error::io("read", &path, e))
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let target = self.path(key);
        create_parent(&target)?;
        let tmp = target.with_extension("tmp");
        let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        out.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        out.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, &target).map_err(|e| Error::io("rename into", &target, e))?;
        sync_parents(&self.root, &target)
    }

    fn store(&self, staged: &Path, key: &str) -> Result<bool> {
        let target = self.path(key);
        if staged != target {
            if target.exists() {
                return Ok(false);
            }
            create_parent(&target)?;
            std::fs::rename(staged, &target).map_err(|e| Error::io("rename", staged, e))?;
        }
        fsync(&target)?;
        sync_parents(&self.root, &target)?;
        Ok(true)
    }

    fn checksum(&self, key: &str) -> Result<FileSum> {
        checksum(&self.path(key))
    }

    fn fetch(&self, key: &str, local: &Path) -> Result<()> {
        let source = self.path(key);
        create_parent(local)?;
        if local.exists() {
            std::fs::remove_file(local).map_err(|e| Error::io("delete", local, e))?;
        }
        if std::fs::hard_link(&source, local).is_err() {
            std::fs::copy(&source, local).map_err(|e| Error::io("copy", &source, e))?;
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &path, e)),
        }
        self.remove_empty_parents(path.parent());
        Ok(())
    }
}

/// Length and CRC-32 of a local file.
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

/// Flushes every directory from `path`'s parent up to `root`, so a new
/// entry survives a crash.
fn sync_parents(root: &Path, path: &Path) -> Result<()> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        fsync(d)?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// `path` relative to `root`, with `/` separators.
pub(crate) fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
