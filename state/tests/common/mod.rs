//! Backends under test, shared by the test files.
#![allow(dead_code, unreachable_pub)]

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "rocksdb")]
use tideline_state::RocksDbOptions;
use tideline_state::{KeyedState, Result, StateBackend, StateKey, StateScope};

/// A scratch directory for RocksDB working databases and snapshots.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A fresh empty directory for one snapshot.
    pub fn snapshot_dir(&self, name: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("snapshots").join(name);
        std::fs::create_dir_all(&path).expect("create snapshot dir");
        path
    }
}

pub fn memory_backend(_env: &Env) -> StateBackend {
    StateBackend::Memory
}

#[cfg(feature = "rocksdb")]
pub fn rocks_backend(env: &Env) -> StateBackend {
    StateBackend::RocksDb(
        RocksDbOptions::new(env.dir.path().join("work"))
            .block_cache_bytes(4 << 20)
            .write_buffer_bytes(4 << 20),
    )
}

/// RocksDB with a write-back cache of 4 entries per state: nearly every
/// access evicts and reloads.
#[cfg(feature = "rocksdb")]
pub fn rocks_tiny_backend(env: &Env) -> StateBackend {
    StateBackend::RocksDb(
        RocksDbOptions::new(env.dir.path().join("work"))
            .block_cache_bytes(1 << 20)
            .write_buffer_bytes(1 << 20)
            .cache_entries(4),
    )
}

pub fn open<K: StateKey>(backend: &StateBackend, scope: StateScope) -> Result<KeyedState<K>> {
    KeyedState::open(backend, scope)
}

pub fn whole<K: StateKey>(backend: &StateBackend) -> Result<KeyedState<K>> {
    open(backend, StateScope::for_subtask("op", 0, 1, 128))
}
