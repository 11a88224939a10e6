//! Which backend keeps an operator's keyed state, and how it is sized.

#[cfg(feature = "rocksdb")]
use std::path::PathBuf;

/// Where keyed state lives.
///
/// Non-exhaustive: backends behind Cargo features (`rocksdb`) add variants.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum StateBackend {
    /// Typed hash tables on the heap: fastest, bounded by memory.
    #[default]
    Memory,
    /// RocksDB on local disk behind a write-back cache of hot entries: state
    /// may be far larger than memory. Needs the `rocksdb` feature.
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbOptions),
}

/// Sizing of the RocksDB backend. Memory use per subtask stays under
/// `block_cache_bytes + write_buffer_bytes` plus the write-back cache
/// (`cache_entries` decoded entries per state). Needs the `rocksdb` feature.
#[cfg(feature = "rocksdb")]
#[derive(Clone, Debug)]
pub struct RocksDbOptions {
    /// Directory for the working databases (one per operator subtask). It
    /// holds no durable data: checkpoints are what survive a crash.
    pub dir: PathBuf,
    /// LRU block cache per database, bytes.
    pub block_cache_bytes: usize,
    /// Memtable budget per database (all column families), bytes.
    pub write_buffer_bytes: usize,
    /// Entries per state kept decoded in memory before the dirty ones are
    /// written to RocksDB in one batch and the cache is emptied.
    pub cache_entries: usize,
}

#[cfg(feature = "rocksdb")]
impl RocksDbOptions {
    /// Defaults: 64 MiB block cache, 64 MiB of memtables, 100,000 cached entries per state.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            cache_entries: 100_000,
        }
    }

    /// Sets the block cache size.
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Sets the memtable budget.
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// Sets the write-back cache size (entries per state, at least 1).
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries.max(1);
        self
    }
}
