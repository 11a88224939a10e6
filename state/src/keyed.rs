//! Keyed state of one operator subtask, in memory or in RocksDB.
//!
//! Each state name owns one typed hash table keyed by `(key, namespace)`.
//! Tables are found by name once per access (a short linear scan over the
//! operator's few states plus one `TypeId` check), then used without boxing
//! or serialization, which keeps the per-record path allocation-free (a key
//! is cloned only when a new entry is inserted).
//!
//! With the memory backend the tables *are* the state. With the RocksDB
//! backend they are a write-back cache in front of one RocksDB database:
//!
//! - creating a handle ([`KeyedState::value`], [`KeyedState::map`],
//!   [`KeyedState::list`]) makes sure the entry of `(key, namespace)` is
//!   cached: on a miss it is read from RocksDB and decoded, so the handle
//!   methods work on memory only;
//! - an entry removed from the cache while RocksDB may hold it is remembered
//!   as a tombstone; a tombstoned key is never read back from RocksDB;
//! - when a table's cache holds `cache_entries` entries and tombstones, all of
//!   them are written in one `WriteBatch` (deletes first, then puts) and the
//!   cache is emptied — before the entry of the new handle is loaded;
//! - a snapshot writes the cache the same way but keeps it, so processing
//!   continues warm.
//!
//! Hence, for every `(state, key, namespace)`: the cached entry if there is
//! one, else absent if tombstoned, else what RocksDB holds, is the state.
//!
//! Until a state is first accessed after a memory restore, its entries stay
//! encoded (the restore cannot know their types), in the very buffers the
//! restore read from the snapshot files; they are decoded on the first access
//! and written back unchanged by a snapshot taken before.
//!
//! Restores read only what the subtask owns (see [`KeyedState::restore_from`]):
//! memory snapshots are sectioned by key group, so a subtask reads the byte
//! ranges of its own groups; a RocksDB checkpoint that holds only foreign
//! groups is skipped, a lone relevant one becomes the working database (hard
//! links, foreign groups dropped by range deletes) and several are cut into
//! SST files that RocksDB ingests. Independent reads run on a few threads and
//! are merged in snapshot order, so the result does not depend on scheduling.

use std::any::{Any, TypeId};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
#[cfg(feature = "rocksdb")]
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{Equivalent, HashMap, HashSet};
use rustc_hash::FxBuildHasher;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::StateBackend;
use crate::codec::{decode, decode_state_key, encode_into, encode_state_key};
use crate::key_group::DEFAULT_KEY_GROUPS;
use crate::parallel;
#[cfg(feature = "rocksdb")]
use crate::rocks::RocksStore;
use crate::snapshot::{self, RawChunk, Section, SnapshotKind};
use crate::{
    ListStateDescriptor, MapStateDescriptor, Result, StateError, StateKey, StateValue,
    ValueStateDescriptor,
};

type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Which part of the key space a subtask's state covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateScope {
    /// The operator's name (names the RocksDB working directory).
    pub operator: String,
    /// The subtask's index.
    pub subtask: usize,
    /// The job's number of key groups (its maximum parallelism).
    pub key_groups: u16,
    /// The key groups this subtask owns; a restore loads only these.
    pub key_group_range: Range<u16>,
}

impl StateScope {
    /// The scope of subtask `subtask` of `parallelism`: the contiguous range of
    /// key groups `g` with [`crate::key_group::subtask_for_key_group`]`(g) == subtask`.
    pub fn for_subtask(
        operator: impl Into<String>,
        subtask: usize,
        parallelism: usize,
        key_groups: u16,
    ) -> Self {
        let groups = usize::from(key_groups.max(1));
        let parallelism = parallelism.max(1);
        // g belongs to s iff s*G <= g*P < (s+1)*G, i.e. g >= ceil(s*G/P).
        let first = |s: usize| (s * groups).div_ceil(parallelism).min(groups);
        let to_u16 = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
        Self {
            operator: operator.into(),
            subtask,
            key_groups: key_groups.max(1),
            key_group_range: to_u16(first(subtask))..to_u16(first(subtask + 1)),
        }
    }
}

/// A file written by [`KeyedState::snapshot_to`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Path relative to the snapshot directory.
    pub name: String,
    /// For immutable files that later checkpoints may reuse unchanged (RocksDB
    /// SST files): a name unique across databases and runs
    /// (`"<RocksDB identity>-<SST file name>"`); `None` for files private to
    /// this snapshot.
    pub shared_name: Option<String>,
}

/// A borrowed `(key, namespace)` that looks up a `(K, N)` table entry without
/// cloning the key. It hashes exactly like the tuple does (fields in order).
#[derive(Debug)]
struct KeyNs<'a, K, N>(&'a K, &'a N);

impl<K: Hash, N: Hash> Hash for KeyNs<'_, K, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<K: Eq, N: Eq> Equivalent<(K, N)> for KeyNs<'_, K, N> {
    fn equivalent(&self, other: &(K, N)) -> bool {
        *self.0 == other.0 && *self.1 == other.1
    }
}

// `From` for a foreign tuple is not allowed by the orphan rules; `entry_ref`
// only needs `Into`, which clones the key when a vacant entry is filled.
#[allow(clippy::from_over_into)]
impl<K: Clone, N: Clone> Into<(K, N)> for &KeyNs<'_, K, N> {
    fn into(self) -> (K, N) {
        (self.0.clone(), self.1.clone())
    }
}

/// The entries of one state: value `T` per `(key, namespace)`, plus the
/// tombstones of the RocksDB backend.
struct TypedTable<K, N, T> {
    entries: FxHashMap<(K, N), T>,
    /// Keys removed from `entries` since the last write to RocksDB. Always
    /// empty with the memory backend (`track_deletes == false`).
    deleted: HashSet<(K, N), FxBuildHasher>,
    /// Keys RocksDB was asked for and does not hold, since the last write
    /// to it: removing such an entry needs no tombstone (a window made and
    /// dropped between two writes never reaches RocksDB at all). Always
    /// empty with the memory backend.
    unstored: HashSet<(K, N), FxBuildHasher>,
    track_deletes: bool,
}

impl<K, N, T> std::fmt::Debug for TypedTable<K, N, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedTable")
            .field("entries", &self.entries.len())
            .field("deleted", &self.deleted.len())
            .finish()
    }
}

impl<K: StateKey, N: StateKey, T: Send + Serialize + DeserializeOwned + 'static>
    TypedTable<K, N, T>
{
    fn new(track_deletes: bool) -> Self {
        Self {
            entries: FxHashMap::default(),
            deleted: HashSet::default(),
            unstored: HashSet::default(),
            track_deletes,
        }
    }

    fn get(&self, key: &K, namespace: &N) -> Option<&T> {
        self.entries.get(&KeyNs(key, namespace))
    }

    fn get_mut(&mut self, key: &K, namespace: &N) -> Option<&mut T> {
        self.entries.get_mut(&KeyNs(key, namespace))
    }

    fn get_or_insert_with(&mut self, key: &K, namespace: &N, f: impl FnOnce() -> T) -> &mut T {
        self.entries
            .entry_ref(&KeyNs(key, namespace))
            .or_insert_with(f)
    }

    fn remove(&mut self, key: &K, namespace: &N) -> Option<T> {
        let (stored_key, value) = self.entries.remove_entry(&KeyNs(key, namespace))?;
        if self.track_deletes && !self.unstored.remove(&stored_key) {
            self.deleted.insert(stored_key);
        }
        Some(value)
    }

    fn insert_decoded(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let key: (K, N) = decode_state_key(name, key)?;
        let value: T = decode(name, "value", value)?;
        self.entries.insert(key, value);
        Ok(())
    }

    /// Makes sure the entry of `(key, namespace)` is cached (RocksDB backend).
    #[cfg(feature = "rocksdb")]
    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        name: &str,
        key: &K,
        namespace: &N,
        store: &mut RocksStore,
        key_groups: u16,
        cache_entries: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let probe = KeyNs(key, namespace);
        if self.entries.contains_key(&probe)
            || self.deleted.contains(&probe)
            || self.unstored.contains(&probe)
        {
            return Ok(());
        }
        if self.entries.len() + self.deleted.len() + self.unstored.len() >= cache_entries {
            self.write_back(name, key_groups, store, buf, true)?;
        }
        encode_state_key(name, key, namespace, key_groups, buf)?;
        match store.get(name, buf)? {
            Some(bytes) => {
                let value: T = decode(name, "value", &bytes)?;
                self.entries.insert((key.clone(), namespace.clone()), value);
            }
            None => {
                self.unstored.insert((key.clone(), namespace.clone()));
            }
        }
        Ok(())
    }

    #[cfg(feature = "rocksdb")]
    fn write_back(
        &mut self,
        name: &str,
        key_groups: u16,
        store: &mut RocksStore,
        buf: &mut Vec<u8>,
        evict: bool,
    ) -> Result<()> {
        let mut value_buf = Vec::new();
        for (key, namespace) in &self.deleted {
            encode_state_key(name, key, namespace, key_groups, buf)?;
            store.delete(name, buf)?;
        }
        for ((key, namespace), value) in &self.entries {
            encode_state_key(name, key, namespace, key_groups, buf)?;
            value_buf.clear();
            encode_into(name, "value", value, &mut value_buf)?;
            store.put(name, buf, &value_buf)?;
        }
        store.write()?;
        self.deleted.clear();
        // Every cached entry is in RocksDB now.
        self.unstored.clear();
        if evict {
            self.entries.clear();
        }
        Ok(())
    }
}

/// Called with each stored `(key, value)` pair, encoded.
type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// What [`KeyedState`] needs from a table without knowing its types.
trait ErasedTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The `TypeId` of the concrete table.
    fn table_type(&self) -> TypeId;
    /// Entries held in memory.
    fn len(&self) -> usize;
    /// Calls `f(stored key, stored value)` for every entry held in memory.
    fn for_each_encoded(&self, name: &str, key_groups: u16, f: &mut EntryVisitor<'_>)
        -> Result<()>;
    /// Adds restored entries.
    fn restore_chunk(&mut self, name: &str, chunk: RawChunk) -> Result<()>;
    /// Writes cached entries and tombstones to RocksDB; empties the cache if `evict`.
    #[cfg(feature = "rocksdb")]
    fn write_back(
        &mut self,
        name: &str,
        key_groups: u16,
        store: &mut RocksStore,
        evict: bool,
    ) -> Result<()>;
}

impl<K: StateKey, N: StateKey, T: Send + Serialize + DeserializeOwned + 'static> ErasedTable
    for TypedTable<K, N, T>
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn table_type(&self) -> TypeId {
        TypeId::of::<Self>()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn for_each_encoded(
        &self,
        name: &str,
        key_groups: u16,
        f: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let (mut key_buf, mut value_buf) = (Vec::new(), Vec::new());
        for ((key, namespace), value) in &self.entries {
            encode_state_key(name, key, namespace, key_groups, &mut key_buf)?;
            value_buf.clear();
            encode_into(name, "value", value, &mut value_buf)?;
            f(&key_buf, &value_buf)?;
        }
        Ok(())
    }

    fn restore_chunk(&mut self, name: &str, chunk: RawChunk) -> Result<()> {
        chunk.for_each(|key, value| self.insert_decoded(name, key, value))
    }

    #[cfg(feature = "rocksdb")]
    fn write_back(
        &mut self,
        name: &str,
        key_groups: u16,
        store: &mut RocksStore,
        evict: bool,
    ) -> Result<()> {
        TypedTable::write_back(self, name, key_groups, store, &mut Vec::new(), evict)
    }
}

/// Restored entries of a state not accessed since (their types are unknown),
/// kept as read: one buffer per snapshot range, no allocation per entry.
#[derive(Default)]
struct RawTable {
    chunks: Vec<RawChunk>,
}

impl ErasedTable for RawTable {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn table_type(&self) -> TypeId {
        TypeId::of::<Self>()
    }

    fn len(&self) -> usize {
        let entries: u64 = self.chunks.iter().map(RawChunk::len).sum();
        usize::try_from(entries).unwrap_or(usize::MAX)
    }

    fn for_each_encoded(
        &self,
        _name: &str,
        _key_groups: u16,
        f: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        self.chunks.iter().try_for_each(|c| c.for_each(&mut *f))
    }

    fn restore_chunk(&mut self, _name: &str, chunk: RawChunk) -> Result<()> {
        self.chunks.push(chunk);
        Ok(())
    }

    #[cfg(feature = "rocksdb")]
    fn write_back(
        &mut self,
        name: &str,
        _key_groups: u16,
        store: &mut RocksStore,
        evict: bool,
    ) -> Result<()> {
        for chunk in &self.chunks {
            chunk.for_each(|key, value| store.put(name, key, value))?;
        }
        store.write()?;
        if evict {
            self.chunks.clear();
        }
        Ok(())
    }
}

struct Table {
    name: Box<str>,
    data: Box<dyn ErasedTable>,
}

/// The RocksDB side of a [`KeyedState`].
#[cfg(feature = "rocksdb")]
struct Rocks {
    store: RocksStore,
    cache_entries: usize,
}

/// Without the `rocksdb` feature there is no RocksDB side: a
/// `KeyedState::rocks` is always `None`.
#[cfg(not(feature = "rocksdb"))]
enum Rocks {}

/// Keyed state of one operator subtask, for keys of type `K`, in memory or in
/// RocksDB (see the module docs for the caching invariants).
pub struct KeyedState<K> {
    tables: Vec<Table>,
    scope: StateScope,
    rocks: Option<Rocks>,
    /// Scratch buffer for encoded keys (RocksDB backend).
    buf: Vec<u8>,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K> std::fmt::Debug for KeyedState<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tables.iter().map(|t| &*t.name).collect();
        f.debug_struct("KeyedState")
            .field("scope", &self.scope)
            .field(
                "backend",
                &self.rocks.as_ref().map_or("memory", |_| "rocksdb"),
            )
            .field("states", &names)
            .finish()
    }
}

impl<K: StateKey> Default for KeyedState<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Distinguishes working directories of states opened in the same process.
#[cfg(feature = "rocksdb")]
static OPEN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file-name-safe rendering of an operator name.
#[cfg(feature = "rocksdb")]
fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "state".to_string()
    } else {
        cleaned
    }
}

/// The table of state `name` with entry type `T`, created if missing.
fn typed_table<'t, K: StateKey, N: StateKey, T: Send + Serialize + DeserializeOwned + 'static>(
    tables: &'t mut Vec<Table>,
    rocks: Option<&mut Rocks>,
    name: &'static str,
) -> Result<&'t mut TypedTable<K, N, T>> {
    let track_deletes = rocks.is_some();
    let index = match tables.iter().position(|t| &*t.name == name) {
        Some(i) => i,
        None => {
            #[cfg(feature = "rocksdb")]
            if let Some(rocks) = rocks {
                rocks.store.ensure_cf(name)?;
            }
            tables.push(Table {
                name: name.into(),
                data: Box::new(TypedTable::<K, N, T>::new(track_deletes)),
            });
            tables.len() - 1
        }
    };
    let table = &mut tables[index];
    if table.data.table_type() != TypeId::of::<TypedTable<K, N, T>>() {
        if let Some(raw) = table.data.as_any_mut().downcast_mut::<RawTable>() {
            let mut typed = TypedTable::<K, N, T>::new(track_deletes);
            for chunk in &raw.chunks {
                chunk.for_each(|key, value| typed.insert_decoded(name, key, value))?;
            }
            table.data = Box::new(typed);
        }
    }
    table
        .data
        .as_any_mut()
        .downcast_mut::<TypedTable<K, N, T>>()
        .ok_or_else(|| StateError::type_mismatch::<T>(name))
}

/// One read of a memory restore: consecutive owned sections of one state
/// of one snapshot file.
#[derive(Debug)]
struct SectionRead {
    path: PathBuf,
    state: String,
    sections: Vec<Section>,
}

/// Bytes per read of a memory restore: large enough that a read costs one
/// seek, small enough that one big state still spreads over the threads.
const READ_BYTES: u64 = 4 << 20;

/// Appends the reads of `sections` (ascending, consecutive in the file),
/// cut at key-group boundaries into pieces of about [`READ_BYTES`].
fn split_reads(path: &Path, state: &str, sections: Vec<Section>, reads: &mut Vec<SectionRead>) {
    let mut piece: Vec<Section> = Vec::new();
    let mut bytes = 0u64;
    for section in sections {
        bytes += section.len;
        piece.push(section);
        if bytes >= READ_BYTES {
            reads.push(SectionRead {
                path: path.to_path_buf(),
                state: state.to_string(),
                sections: std::mem::take(&mut piece),
            });
            bytes = 0;
        }
    }
    if !piece.is_empty() {
        reads.push(SectionRead {
            path: path.to_path_buf(),
            state: state.to_string(),
            sections: piece,
        });
    }
}

impl<K: StateKey> KeyedState<K> {
    /// An empty in-memory state covering all [`DEFAULT_KEY_GROUPS`] key groups
    /// (tests, and the default).
    pub fn new() -> Self {
        Self::with_scope(
            StateScope::for_subtask("state", 0, 1, DEFAULT_KEY_GROUPS),
            None,
        )
    }

    fn with_scope(scope: StateScope, rocks: Option<Rocks>) -> Self {
        Self {
            tables: Vec::new(),
            scope,
            rocks,
            buf: Vec::new(),
            _key: std::marker::PhantomData,
        }
    }

    /// An empty state of `scope` in `backend`. With RocksDB, a fresh working
    /// database is created under `RocksDbOptions::dir` as
    /// `<operator>-<subtask>-<unique suffix>` and removed when the state is dropped.
    ///
    /// # Errors
    /// [`StateError::Io`] or [`StateError::RocksDb`] when the working database
    /// cannot be created.
    pub fn open(backend: &StateBackend, scope: StateScope) -> Result<Self> {
        match backend {
            StateBackend::Memory => Ok(Self::with_scope(scope, None)),
            #[cfg(feature = "rocksdb")]
            StateBackend::RocksDb(options) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir_name = format!(
                    "{}-{}-{}-{nanos:x}-{}",
                    sanitize(&scope.operator),
                    scope.subtask,
                    std::process::id(),
                    OPEN_COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let store = RocksStore::open_fresh(options.dir.join(dir_name), options)?;
                let rocks = Rocks {
                    store,
                    cache_entries: options.cache_entries.max(1),
                };
                Ok(Self::with_scope(scope, Some(rocks)))
            }
        }
    }

    /// The scope this state covers.
    pub fn scope(&self) -> &StateScope {
        &self.scope
    }

    /// The value state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// [`StateError::TypeMismatch`] when the name is already used with another
    /// type; with RocksDB, [`StateError::RocksDb`] or [`StateError::Codec`]
    /// when the entry cannot be loaded.
    pub fn value<'a, N: StateKey, V: StateValue>(
        &'a mut self,
        descriptor: &ValueStateDescriptor<V>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<ValueState<'a, K, N, V>> {
        let table = self.cached_table::<N, V>(descriptor.name(), key, namespace)?;
        Ok(ValueState {
            table,
            key,
            namespace,
        })
    }

    /// The map state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// As for [`KeyedState::value`].
    pub fn map<'a, N: StateKey, MK: StateKey, MV: StateValue>(
        &'a mut self,
        descriptor: &MapStateDescriptor<MK, MV>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<MapState<'a, K, N, MK, MV>> {
        let table = self.cached_table::<N, FxHashMap<MK, MV>>(descriptor.name(), key, namespace)?;
        Ok(MapState {
            table,
            key,
            namespace,
        })
    }

    /// The list state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// As for [`KeyedState::value`].
    pub fn list<'a, N: StateKey, V: StateValue>(
        &'a mut self,
        descriptor: &ListStateDescriptor<V>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<ListState<'a, K, N, V>> {
        let table = self.cached_table::<N, Vec<V>>(descriptor.name(), key, namespace)?;
        Ok(ListState {
            table,
            key,
            namespace,
        })
    }

    /// The table of `name`, with the entry of `(key, namespace)` cached.
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
    fn cached_table<N: StateKey, T: Send + Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &'static str,
        key: &K,
        namespace: &N,
    ) -> Result<&mut TypedTable<K, N, T>> {
        let Self {
            tables,
            rocks,
            scope,
            buf,
            ..
        } = self;
        let table = typed_table::<K, N, T>(tables, rocks.as_mut(), name)?;
        #[cfg(feature = "rocksdb")]
        if let Some(rocks) = rocks {
            table.load(
                name,
                key,
                namespace,
                &mut rocks.store,
                scope.key_groups,
                rocks.cache_entries,
                buf,
            )?;
        }
        Ok(table)
    }

    /// Writes every cached entry and tombstone to RocksDB (no-op in memory).
    #[cfg(feature = "rocksdb")]
    fn write_back_all(&mut self, evict: bool) -> Result<()> {
        if let Some(rocks) = &mut self.rocks {
            for table in &mut self.tables {
                table.data.write_back(
                    &table.name,
                    self.scope.key_groups,
                    &mut rocks.store,
                    evict,
                )?;
            }
        }
        Ok(())
    }

    /// Synchronous part of a checkpoint: writes all state of this subtask into
    /// the existing empty directory `dir` and returns the files written.
    ///
    /// Memory backend: one file, entries encoded with the codec and tagged
    /// with their key group. RocksDB: the write-back cache is written to
    /// RocksDB in one batch (and stays cached), memtables are flushed and a
    /// RocksDB checkpoint (hard links) is created under `dir/rocksdb`; its
    /// `*.sst` files get a [`SnapshotFile::shared_name`]. The state stays
    /// usable afterwards.
    ///
    /// # Errors
    /// [`StateError::Io`], [`StateError::Codec`] or [`StateError::RocksDb`].
    pub fn snapshot_to(&mut self, dir: &Path) -> Result<Vec<SnapshotFile>> {
        #[cfg(feature = "rocksdb")]
        if self.rocks.is_some() {
            return self.snapshot_rocks(dir);
        }
        let mut writer = snapshot::MemoryWriter::create(dir, self.scope.key_groups)?;
        for table in &self.tables {
            if table.data.len() == 0 {
                continue;
            }
            writer.begin_state(&table.name)?;
            table.data.for_each_encoded(
                &table.name,
                self.scope.key_groups,
                &mut |k: &[u8], v: &[u8]| writer.entry(k, v),
            )?;
        }
        writer.finish()?;
        Ok(vec![SnapshotFile {
            name: snapshot::MEMORY_FILE.to_string(),
            shared_name: None,
        }])
    }

    #[cfg(feature = "rocksdb")]
    fn snapshot_rocks(&mut self, dir: &Path) -> Result<Vec<SnapshotFile>> {
        self.write_back_all(false)?;
        let Some(rocks) = &mut self.rocks else {
            return Ok(Vec::new());
        };
        let target = dir.join(snapshot::ROCKS_DIR);
        rocks.store.checkpoint(&target)?;
        let identity = rocks.store.identity()?;
        let groups = rocks.store.key_group_span()?;
        snapshot::write_rocks_meta(dir, self.scope.key_groups, groups)?;
        let mut files = vec![SnapshotFile {
            name: snapshot::ROCKS_META_FILE.to_string(),
            shared_name: None,
        }];
        let listing = std::fs::read_dir(&target).map_err(|e| StateError::io(&target, e))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| StateError::io(&target, e))?;
            let file_type = entry
                .file_type()
                .map_err(|e| StateError::io(&entry.path(), e))?;
            if !file_type.is_file() {
                return Err(StateError::snapshot(
                    &entry.path(),
                    "unexpected non-file in a RocksDB checkpoint",
                ));
            }
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for name in names {
            let shared_name = name.ends_with(".sst").then(|| format!("{identity}-{name}"));
            files.push(SnapshotFile {
                name: format!("{}/{name}", snapshot::ROCKS_DIR),
                shared_name,
            });
        }
        Ok(files)
    }

    /// Restores snapshots: `dirs` are snapshot directories as written by
    /// [`KeyedState::snapshot_to`], possibly by other subtasks at another
    /// parallelism (shared files back in place under their `name`). Loads
    /// every entry whose key group lies in this state's scope range and
    /// reads as little else as it can. Meant for a fresh state, before any
    /// access.
    ///
    /// Memory snapshots: the index of each file is read, then only the byte
    /// ranges of owned key groups, on up to 4 threads. RocksDB: checkpoints
    /// whose recorded key groups miss this range are not opened; when exactly
    /// one remains and this state is fresh, it becomes the working database
    /// (SST files hard-linked, foreign groups dropped with range deletes);
    /// otherwise each relevant checkpoint's owned range is written to SST
    /// files in parallel and ingested. Later directories win over earlier
    /// ones for the same stored key, as if restored one after the other.
    ///
    /// # Errors
    /// [`StateError::Snapshot`] naming the path when a snapshot is missing,
    /// malformed, truncated, written with another number of key groups or by
    /// the other backend kind; [`StateError::Io`], [`StateError::Codec`] or
    /// [`StateError::RocksDb`] otherwise.
    pub fn restore_from(&mut self, dirs: &[PathBuf]) -> Result<()> {
        let own = if self.rocks.is_some() {
            SnapshotKind::RocksDb
        } else {
            SnapshotKind::Memory
        };
        for dir in dirs {
            let kind = snapshot::kind_of(dir)?;
            if kind != own {
                return Err(StateError::snapshot(
                    dir,
                    format!(
                        "written by {}, but this state uses {}",
                        kind.describe(),
                        own.describe()
                    ),
                ));
            }
        }
        match &self.rocks {
            None => self.restore_memory(dirs),
            #[cfg(feature = "rocksdb")]
            Some(_) => self.restore_rocks(dirs),
            #[cfg(not(feature = "rocksdb"))]
            Some(rocks) => match *rocks {},
        }
    }

    /// The RocksDB part of [`KeyedState::restore_from`].
    #[cfg(feature = "rocksdb")]
    fn restore_rocks(&mut self, dirs: &[PathBuf]) -> Result<()> {
        // Cached entries would shadow restored ones.
        self.write_back_all(true)?;
        let range = self.scope.key_group_range.clone();
        let mut relevant = Vec::new();
        for dir in dirs {
            let held = snapshot::read_rocks_meta(dir, self.scope.key_groups)?;
            // Checkpoints holding none of this subtask's groups are not opened.
            if held.start < range.end && range.start < held.end {
                relevant.push((dir.join(snapshot::ROCKS_DIR), held));
            }
        }
        let Some(rocks) = &mut self.rocks else {
            return Ok(());
        };
        match relevant.as_slice() {
            [] => Ok(()),
            [(checkpoint, held)] if rocks.store.is_fresh()? => {
                rocks
                    .store
                    .adopt_checkpoint(checkpoint, held.clone(), range, self.scope.key_groups)
            }
            _ => {
                let checkpoints: Vec<&Path> = relevant.iter().map(|(c, _)| c.as_path()).collect();
                rocks.store.ingest_ranges(&checkpoints, range)
            }
        }
    }

    /// The memory part of [`KeyedState::restore_from`].
    fn restore_memory(&mut self, dirs: &[PathBuf]) -> Result<()> {
        let range = self.scope.key_group_range.clone();
        let mut reads: Vec<SectionRead> = Vec::new();
        for dir in dirs {
            let path = dir.join(snapshot::MEMORY_FILE);
            for state in snapshot::read_memory_index(&path, self.scope.key_groups)? {
                let owned: Vec<Section> = state
                    .sections
                    .into_iter()
                    .filter(|s| range.contains(&s.group))
                    .collect();
                split_reads(&path, &state.name, owned, &mut reads);
            }
        }
        let chunks = parallel::map_ordered(&reads, |read| {
            snapshot::read_sections(&read.path, &read.sections)
        })?;
        for (read, chunk) in reads.iter().zip(chunks) {
            let name = read.state.as_str();
            let index = match self.tables.iter().position(|t| &*t.name == name) {
                Some(i) => i,
                None => {
                    self.tables.push(Table {
                        name: name.into(),
                        data: Box::new(RawTable::default()),
                    });
                    self.tables.len() - 1
                }
            };
            self.tables[index].data.restore_chunk(name, chunk)?;
        }
        Ok(())
    }

    /// Number of entries of all states. In memory it is exact and cheap; with
    /// RocksDB the cache is written back and the database scanned (exact but
    /// O(entries): for tests and occasional gauges).
    ///
    /// # Errors
    /// [`StateError::RocksDb`] or [`StateError::Codec`] (RocksDB backend).
    pub fn approximate_len(&mut self) -> Result<u64> {
        #[cfg(feature = "rocksdb")]
        if self.rocks.is_some() {
            self.write_back_all(false)?;
        }
        match &self.rocks {
            #[cfg(feature = "rocksdb")]
            Some(rocks) => rocks.store.count(),
            #[cfg(not(feature = "rocksdb"))]
            Some(rocks) => match *rocks {},
            None => Ok(self.tables.iter().map(|t| t.data.len() as u64).sum()),
        }
    }

    /// The state's size, cheaply, for metrics: in memory the exact number
    /// of entries; with RocksDB its estimate of the keys it holds plus the
    /// entries cached in front of it (an upper bound: a cached entry may
    /// be in the database too), and the bytes of its live SST files and
    /// memtables (what will be on disk once flushed). Only
    /// states this subtask used since it started count; nothing is read
    /// from disk.
    pub fn size(&self) -> StateSize {
        let cached: u64 = self.tables.iter().map(|t| t.data.len() as u64).sum();
        match &self.rocks {
            #[cfg(feature = "rocksdb")]
            Some(rocks) => {
                let names = || self.tables.iter().map(|t| &*t.name);
                StateSize {
                    entries: cached
                        + rocks
                            .store
                            .sum_property(names(), "rocksdb.estimate-num-keys"),
                    disk_bytes: Some(
                        rocks
                            .store
                            .sum_property(names(), "rocksdb.live-sst-files-size")
                            + rocks
                                .store
                                .sum_property(names(), "rocksdb.cur-size-all-mem-tables"),
                    ),
                }
            }
            #[cfg(not(feature = "rocksdb"))]
            Some(rocks) => match *rocks {},
            None => StateSize {
                entries: cached,
                disk_bytes: None,
            },
        }
    }

    /// Bytes of the RocksDB working database on disk (0 in memory).
    pub fn disk_bytes(&self) -> u64 {
        match &self.rocks {
            #[cfg(feature = "rocksdb")]
            Some(rocks) => rocks.store.disk_bytes(),
            #[cfg(not(feature = "rocksdb"))]
            Some(rocks) => match *rocks {},
            None => 0,
        }
    }

    /// The RocksDB working directory, if this state uses RocksDB.
    pub fn working_dir(&self) -> Option<&Path> {
        match &self.rocks {
            #[cfg(feature = "rocksdb")]
            Some(rocks) => Some(rocks.store.path()),
            #[cfg(not(feature = "rocksdb"))]
            Some(rocks) => match *rocks {},
            None => None,
        }
    }
}

/// One value for the current key and namespace.
#[derive(Debug)]
pub struct ValueState<'a, K, N, V> {
    table: &'a mut TypedTable<K, N, V>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, V: StateValue> ValueState<'_, K, N, V> {
    /// The stored value, if any.
    pub fn get(&self) -> Option<&V> {
        self.table.get(self.key, self.namespace)
    }

    /// The stored value for in-place update, if any.
    pub fn get_mut(&mut self) -> Option<&mut V> {
        self.table.get_mut(self.key, self.namespace)
    }

    /// The stored value, inserting `default()` first when there is none.
    pub fn get_or_insert_with(&mut self, default: impl FnOnce() -> V) -> &mut V {
        self.table
            .get_or_insert_with(self.key, self.namespace, default)
    }

    /// Replaces the stored value.
    pub fn set(&mut self, value: V) {
        match self.table.get_mut(self.key, self.namespace) {
            Some(slot) => *slot = value,
            None => {
                self.table
                    .entries
                    .insert((self.key.clone(), self.namespace.clone()), value);
            }
        }
    }

    /// Removes and returns the stored value.
    pub fn take(&mut self) -> Option<V> {
        self.table.remove(self.key, self.namespace)
    }
}

/// A map for the current key and namespace.
#[derive(Debug)]
pub struct MapState<'a, K, N, MK, MV> {
    table: &'a mut TypedTable<K, N, FxHashMap<MK, MV>>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, MK: StateKey, MV: StateValue> MapState<'_, K, N, MK, MV> {
    /// The value under `map_key`.
    pub fn get(&self, map_key: &MK) -> Option<&MV> {
        self.table
            .get(self.key, self.namespace)
            .and_then(|m| m.get(map_key))
    }

    /// Inserts or replaces the value under `map_key`; returns the previous one.
    pub fn insert(&mut self, map_key: MK, value: MV) -> Option<MV> {
        self.table
            .get_or_insert_with(self.key, self.namespace, FxHashMap::default)
            .insert(map_key, value)
    }

    /// Removes the value under `map_key`.
    pub fn remove(&mut self, map_key: &MK) -> Option<MV> {
        let map = self.table.get_mut(self.key, self.namespace)?;
        let removed = map.remove(map_key);
        if map.is_empty() {
            self.table.remove(self.key, self.namespace);
        }
        removed
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&MK, &MV)> {
        self.table
            .get(self.key, self.namespace)
            .into_iter()
            .flat_map(|m| m.iter())
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.table.remove(self.key, self.namespace);
    }
}

/// A list for the current key and namespace.
#[derive(Debug)]
pub struct ListState<'a, K, N, V> {
    table: &'a mut TypedTable<K, N, Vec<V>>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, V: StateValue> ListState<'_, K, N, V> {
    /// Appends a value.
    pub fn push(&mut self, value: V) {
        self.table
            .get_or_insert_with(self.key, self.namespace, Vec::new)
            .push(value);
    }

    /// The values, oldest first (empty when none).
    pub fn get(&self) -> &[V] {
        self.table
            .get(self.key, self.namespace)
            .map_or(&[], Vec::as_slice)
    }

    /// Removes and returns all values.
    pub fn take(&mut self) -> Vec<V> {
        self.table
            .remove(self.key, self.namespace)
            .unwrap_or_default()
    }
}

/// How big a [`KeyedState`] is ([`KeyedState::size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StateSize {
    /// Entries of all its states (keys × namespaces).
    pub entries: u64,
    /// Bytes RocksDB holds for it, live SST files and memtables; `None`
    /// in memory.
    pub disk_bytes: Option<u64>,
}
