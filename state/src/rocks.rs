//! The RocksDB store under the RocksDB backend: one database per operator
//! subtask, one column family per state, keys laid out as
//! `key group | postcard((key, namespace))` (see [`crate::codec`]), so the
//! entries of a key-group range are one contiguous run of every column family.
//!
//! Invariants:
//! - a working database is scratch space: it is created empty (whatever was
//!   at its path is removed) and deleted when the store is dropped; the
//!   write-ahead log is off, because a working database is never recovered
//!   after a crash — checkpoints are;
//! - every write goes through the pending [`WriteBatch`]; [`RocksStore::write`]
//!   applies it atomically;
//! - before a checkpoint the pending batch is written and every memtable is
//!   flushed, so a checkpoint is a set of immutable SST files (hard links, not
//!   copies) plus small metadata files;
//! - a restore never copies entries one by one: a lone relevant checkpoint
//!   becomes the working database (its SST files hard-linked, which is safe
//!   because RocksDB never modifies an SST file, only deletes it), with the
//!   foreign key groups dropped by range deletes; several are each cut to the
//!   owned range into new SST files, written in parallel and ingested;
//! - an adopted checkpoint keeps the old database's RocksDB identity, so the
//!   names of later SST files would collide with those of its other adopters;
//!   the store therefore reports the identity of the fresh database it
//!   replaced (unique, created by RocksDB) as its own.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor,
    DBCompressionType, DBPinnableSlice, IngestExternalFileOptions, Options, ReadOptions,
    SstFileWriter, WriteBatch, WriteOptions, DB,
};

use crate::backend::RocksDbOptions;
use crate::{Result, StateError};

/// One working RocksDB database.
pub(crate) struct RocksStore {
    db: DB,
    path: PathBuf,
    db_options: Options,
    cf_options: Options,
    write_options: WriteOptions,
    /// The identity reported instead of RocksDB's after a checkpoint was
    /// adopted (see the module docs).
    identity: Option<String>,
    /// Writes not yet applied to the database.
    batch: WriteBatch,
    /// Last field: removes the directory after the database is closed.
    _scratch: Scratch,
}

/// Removes a working directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // The working directory is scratch space; checkpoints hold what matters.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish()
    }
}

fn rocks_err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::RocksDb {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn snapshot_err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::snapshot(path, format!("cannot read the RocksDB checkpoint: {e}"))
}

impl RocksStore {
    /// Opens a fresh, empty database at `path` (whatever was there is removed:
    /// a working directory holds nothing durable).
    pub(crate) fn open_fresh(path: PathBuf, options: &RocksDbOptions) -> Result<Self> {
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| StateError::io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| StateError::io(&path, e))?;
        // From here on the directory is removed again if opening fails.
        let scratch = Scratch(path.clone());
        let cache = Cache::new_lru_cache(options.block_cache_bytes.max(1 << 20));
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        // Index and filters live in the block cache (so memory stays within
        // its budget) in 4 KiB partitions under a pinned top level: one
        // filter for a whole large SST (1.2 MB per million keys) outgrows a
        // cache shard, is evicted at once and was read from disk and
        // checksummed on every lookup (a few thousand lookups per second).
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        cf_options.set_compression_type(DBCompressionType::Lz4);
        cf_options.set_write_buffer_size((options.write_buffer_bytes / 4).max(1 << 20));
        cf_options.set_max_write_buffer_number(2);
        let mut db_options = cf_options.clone();
        db_options.create_if_missing(true);
        db_options.set_db_write_buffer_size(options.write_buffer_bytes.max(1 << 20));
        db_options.set_max_open_files(512);
        db_options.set_keep_log_file_num(2);
        let db = DB::open(&db_options, &path).map_err(|e| rocks_err(&path, e))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(Self {
            db,
            path,
            db_options,
            cf_options,
            write_options,
            identity: None,
            batch: WriteBatch::default(),
            _scratch: scratch,
        })
    }

    /// The working directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the column family of state `name` if it does not exist yet.
    pub(crate) fn ensure_cf(&mut self, name: &str) -> Result<()> {
        if self.db.cf_handle(name).is_none() {
            self.db
                .create_cf(name, &self.cf_options)
                .map_err(|e| rocks_err(&self.path, e))?;
        }
        Ok(())
    }

    fn handle(&self, cf: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(cf)
            .ok_or_else(|| rocks_err(&self.path, format!("no column family '{cf}'")))
    }

    /// Reads one stored value (pending batch writes are not visible).
    pub(crate) fn get(&self, cf: &str, key: &[u8]) -> Result<Option<DBPinnableSlice<'_>>> {
        let handle = self.handle(cf)?;
        self.db
            .get_pinned_cf(handle, key)
            .map_err(|e| rocks_err(&self.path, e))
    }

    /// Adds a put to the pending batch.
    pub(crate) fn put(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let handle = self
            .db
            .cf_handle(cf)
            .ok_or_else(|| rocks_err(&self.path, format!("no column family '{cf}'")))?;
        self.batch.put_cf(handle, key, value);
        Ok(())
    }

    /// Adds a delete to the pending batch.
    pub(crate) fn delete(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        let handle = self
            .db
            .cf_handle(cf)
            .ok_or_else(|| rocks_err(&self.path, format!("no column family '{cf}'")))?;
        self.batch.delete_cf(handle, key);
        Ok(())
    }

    /// Applies the pending batch atomically.
    pub(crate) fn write(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| rocks_err(&self.path, e))
    }

    /// The state names (column families other than `default`).
    pub(crate) fn state_names(&self) -> Result<Vec<String>> {
        let mut names =
            DB::list_cf(&Options::default(), &self.path).map_err(|e| rocks_err(&self.path, e))?;
        names.retain(|n| n != "default");
        Ok(names)
    }

    /// The database's identity (a UUID RocksDB creates with the database).
    pub(crate) fn identity(&self) -> Result<String> {
        if let Some(identity) = &self.identity {
            return Ok(identity.clone());
        }
        let bytes = self
            .db
            .get_db_identity()
            .map_err(|e| rocks_err(&self.path, e))?;
        let identity: String = String::from_utf8_lossy(&bytes)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if identity.is_empty() {
            return Err(rocks_err(&self.path, "the database has no identity"));
        }
        Ok(identity)
    }

    /// Applies the pending batch, flushes every memtable and creates a
    /// checkpoint (hard links to the SST files) in `target`, which must not exist.
    pub(crate) fn checkpoint(&mut self, target: &Path) -> Result<()> {
        self.write()?;
        for name in self.state_names()? {
            let handle = self.handle(&name)?;
            self.db
                .flush_cf(handle)
                .map_err(|e| rocks_err(&self.path, e))?;
        }
        self.db.flush().map_err(|e| rocks_err(&self.path, e))?;
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(target))
            .map_err(|e| rocks_err(target, e))
    }

    /// Whether the database holds no state yet (no column family besides
    /// `default`, nothing pending), so a checkpoint may replace it.
    pub(crate) fn is_fresh(&self) -> Result<bool> {
        Ok(self.batch.is_empty() && self.state_names()?.is_empty())
    }

    /// The key groups of every stored entry, as `first..last + 1` (empty when
    /// there is none): the first and last key of each column family.
    pub(crate) fn key_group_span(&self) -> Result<Range<u16>> {
        let mut span: Option<(u16, u16)> = None;
        for name in self.state_names()? {
            let handle = self.handle(&name)?;
            let mut iter = self.db.raw_iterator_cf(handle);
            iter.seek_to_first();
            let first = iter.key().and_then(crate::codec::group_of_stored_key);
            iter.seek_to_last();
            let last = iter.key().and_then(crate::codec::group_of_stored_key);
            iter.status().map_err(|e| rocks_err(&self.path, e))?;
            if let (Some(first), Some(last)) = (first, last) {
                span = Some(match span {
                    None => (first, last),
                    Some((a, b)) => (a.min(first), b.max(last)),
                });
            }
        }
        Ok(span.map_or(0..0, |(first, last)| first..last.saturating_add(1)))
    }

    /// Replaces this fresh database by the checkpoint at `checkpoint`, which
    /// holds key groups `held`, keeping only the groups `keep` (of
    /// `key_groups`): SST files are hard-linked (copied when the file system
    /// refuses), the small metadata files copied, and the foreign groups
    /// removed — whole files by `DeleteFilesInRange`, the rest by range
    /// deletes. Nothing is read entry by entry.
    pub(crate) fn adopt_checkpoint(
        &mut self,
        checkpoint: &Path,
        held: Range<u16>,
        keep: Range<u16>,
        key_groups: u16,
    ) -> Result<()> {
        let identity = self.identity()?;
        let names = DB::list_cf(&Options::default(), checkpoint)
            .map_err(|e| snapshot_err(checkpoint, e))?;
        let target = PathBuf::from(format!("{}-restored", self.path.display()));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| StateError::io(&target, e))?;
        }
        std::fs::create_dir_all(&target).map_err(|e| StateError::io(&target, e))?;
        // Removes the new directory again if anything below fails.
        let scratch = Scratch(target.clone());
        link_checkpoint(checkpoint, &target)?;
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, self.cf_options.clone()));
        let db = DB::open_cf_descriptors(&self.db_options, &target, descriptors).map_err(|e| {
            StateError::snapshot(
                checkpoint,
                format!("cannot open the RocksDB checkpoint: {e}"),
            )
        })?;
        // The old, empty database is closed here and its directory removed
        // when its scratch guard is replaced.
        self.db = db;
        self.path = target;
        self._scratch = scratch;
        self.identity = Some(identity);
        let end_key = key_groups.to_be_bytes();
        let mut foreign = Vec::new();
        if held.start < keep.start {
            foreign.push(([0u8, 0], keep.start.to_be_bytes()));
        }
        if keep.end < held.end {
            foreign.push((keep.end.to_be_bytes(), end_key));
        }
        for name in names.iter().filter(|n| n.as_str() != "default") {
            // The field, not `self.handle`, so the batch stays borrowable.
            let handle = self
                .db
                .cf_handle(name)
                .ok_or_else(|| rocks_err(&self.path, format!("no column family '{name}'")))?;
            for (from, to) in &foreign {
                self.db
                    .delete_file_in_range_cf(handle, from, to)
                    .map_err(|e| rocks_err(&self.path, e))?;
                self.batch.delete_range_cf(handle, from, to);
            }
        }
        self.write()
    }

    /// Restores the entries of key groups `groups` from several checkpoints:
    /// each checkpoint's owned range is written to new SST files (one per
    /// column family) on up to 4 threads, then the files are ingested
    /// (moved, not copied) in checkpoint order, so a later checkpoint wins
    /// for a key present in two.
    pub(crate) fn ingest_ranges(
        &mut self,
        checkpoints: &[&Path],
        groups: Range<u16>,
    ) -> Result<()> {
        let staging = self.path.join("restore-sst");
        std::fs::create_dir_all(&staging).map_err(|e| StateError::io(&staging, e))?;
        let items: Vec<(usize, &Path)> = checkpoints.iter().copied().enumerate().collect();
        let (cf_options, log_dir) = (&self.cf_options, &self.path);
        let files = crate::parallel::map_ordered(&items, |&(i, checkpoint)| {
            let mut files: Vec<(String, PathBuf)> = Vec::new();
            let mut writer: Option<(String, PathBuf, SstFileWriter<'_>)> = None;
            let mut finish = |writer: Option<(String, PathBuf, SstFileWriter<'_>)>| {
                if let Some((name, path, mut w)) = writer {
                    w.finish().map_err(|e| rocks_err(&path, e))?;
                    files.push((name, path));
                }
                Ok::<_, StateError>(())
            };
            scan_checkpoint(checkpoint, log_dir, groups.clone(), |name, key, value| {
                if writer.as_ref().is_none_or(|(n, _, _)| n != name) {
                    finish(writer.take())?;
                    let path = staging.join(format!("{i}-{}.sst", hex_name(name)));
                    let w = SstFileWriter::create(cf_options);
                    w.open(&path).map_err(|e| rocks_err(&path, e))?;
                    writer = Some((name.to_string(), path, w));
                }
                if let Some((_, path, w)) = &mut writer {
                    w.put(key, value).map_err(|e| rocks_err(path, e))?;
                }
                Ok(())
            })?;
            finish(writer.take())?;
            Ok(files)
        });
        let files = match files {
            Ok(files) => files,
            Err(e) => {
                // Best effort: the working directory is scratch space anyway.
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        for (name, path) in files.into_iter().flatten() {
            self.ensure_cf(&name)?;
            let handle = self.handle(&name)?;
            self.db
                .ingest_external_file_cf_opts(handle, &ingest, vec![&path])
                .map_err(|e| rocks_err(&path, e))?;
        }
        std::fs::remove_dir_all(&staging).map_err(|e| StateError::io(&staging, e))
    }

    /// The exact number of entries of all states (a full scan of the keys).
    pub(crate) fn count(&self) -> Result<u64> {
        let mut total = 0u64;
        for name in self.state_names()? {
            let handle = self.handle(&name)?;
            let mut read = ReadOptions::default();
            read.fill_cache(false);
            let mut iter = self.db.raw_iterator_cf_opt(handle, read);
            iter.seek_to_first();
            while iter.valid() {
                total += 1;
                iter.next();
            }
            iter.status().map_err(|e| rocks_err(&self.path, e))?;
        }
        Ok(total)
    }

    /// The sum of RocksDB's integer property `property` over the states
    /// `names` (read from memory: no file is touched; 0 where unknown).
    pub(crate) fn sum_property<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        property: &str,
    ) -> u64 {
        names
            .filter_map(|name| self.handle(name).ok())
            .filter_map(|cf| self.db.property_int_value_cf(cf, property).ok().flatten())
            .sum()
    }

    /// Bytes of all files of the working database on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.path)
    }
}

/// A file-name-safe, collision-free rendering of a column family name for
/// staged SST files: its bytes in hex.
fn hex_name(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Puts the files of the checkpoint `from` into the empty directory `to`:
/// SST files as hard links (immutable, so sharing them is safe; copied when
/// linking fails, e.g. across file systems), every other file copied, since
/// RocksDB may rewrite those in place.
fn link_checkpoint(from: &Path, to: &Path) -> Result<()> {
    let listing = std::fs::read_dir(from).map_err(|e| StateError::io(from, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| StateError::io(from, e))?;
        let source = entry.path();
        let file_type = entry.file_type().map_err(|e| StateError::io(&source, e))?;
        if !file_type.is_file() {
            return Err(StateError::snapshot(
                &source,
                "unexpected non-file in a RocksDB checkpoint",
            ));
        }
        let dest = to.join(entry.file_name());
        let is_sst = source.extension().is_some_and(|e| e == "sst");
        if !is_sst || std::fs::hard_link(&source, &dest).is_err() {
            std::fs::copy(&source, &dest).map_err(|e| StateError::io(&source, e))?;
        }
    }
    Ok(())
}

/// Total size of the regular files under `dir` (0 for what cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Calls `f(state, stored key, stored value)` for every entry of the
/// checkpointed database at `dir` whose key group lies in `groups`, state by
/// state. The checkpoint is opened read-only; RocksDB's info log goes to
/// `log_dir`, so nothing is written into the snapshot.
pub(crate) fn scan_checkpoint(
    dir: &Path,
    log_dir: &Path,
    groups: Range<u16>,
    mut f: impl FnMut(&str, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut options = Options::default();
    options.set_db_log_dir(log_dir);
    options.set_paranoid_checks(true);
    let names = DB::list_cf(&options, dir).map_err(|e| snapshot_err(dir, e))?;
    let source = DB::open_cf_for_read_only(&options, dir, &names, false)
        .map_err(|e| snapshot_err(dir, e))?;
    if groups.is_empty() {
        return Ok(());
    }
    for name in names.iter().filter(|n| n.as_str() != "default") {
        let handle = source
            .cf_handle(name)
            .ok_or_else(|| snapshot_err(dir, format!("no column family '{name}'")))?;
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        read.set_verify_checksums(true);
        read.set_readahead_size(2 << 20);
        read.set_iterate_upper_bound(groups.end.to_be_bytes().to_vec());
        let mut iter = source.raw_iterator_cf_opt(handle, read);
        iter.seek(groups.start.to_be_bytes());
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            f(name, key, value)?;
            iter.next();
        }
        iter.status().map_err(|e| snapshot_err(dir, e))?;
    }
    Ok(())
}
