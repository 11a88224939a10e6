//! Keyed state for Tideline.
//!
//! Operators that run after a `key_by` keep their state here, never in ad-hoc
//! fields, so that a checkpoint sees all of it. State is addressed by
//! *(state name, key, namespace)*: the key is the record's key, the namespace
//! is `()` for plain keyed state and the window for window state.
//!
//! One [`KeyedState`] holds the state of one operator subtask, kept either in
//! typed hash tables on the heap ([`StateBackend::Memory`]) or in a local
//! RocksDB database behind a write-back cache of the same tables
//! (`StateBackend::RocksDb`, with the `rocksdb` Cargo feature). Both expose
//! the same handles ([`ValueState`], [`MapState`], [`ListState`]), write
//! snapshots with [`KeyedState::snapshot_to`] and load them, possibly at
//! another parallelism, with [`KeyedState::restore_from`].
//!
//! Invariants:
//! - a state name is bound to exactly one value type per backend; asking for
//!   the same name with another type is a [`StateError::TypeMismatch`];
//! - every key belongs to exactly one key group ([`key_group::key_group_of`]),
//!   a pure function of the key's postcard encoding (hashed with XXH3, a
//!   specified algorithm, never `std::hash::Hash`), so state can be
//!   redistributed when a job is restored at another parallelism, by another
//!   build of the job;
//! - a stored entry is `key group (u16, big endian) | postcard((key, namespace))`
//!   → `postcard(value)` in both backends' snapshots, so a restore selects a
//!   key-group range without decoding anything.

mod backend;
mod codec;
mod descriptor;
mod error;
pub mod key_group;
mod keyed;
mod parallel;
#[cfg(feature = "rocksdb")]
mod rocks;
mod snapshot;

#[cfg(feature = "rocksdb")]
pub use backend::RocksDbOptions;
pub use backend::StateBackend;
pub use descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
pub use error::StateError;
pub use keyed::{KeyedState, ListState, MapState, SnapshotFile, StateScope, StateSize, ValueState};

/// The former name of [`KeyedState`], kept while operators migrate.
pub type MemoryKeyedState<K> = KeyedState<K>;

/// What a key (or namespace, or map key) of keyed state must provide:
/// `Hash` and equality for in-memory lookup, cloning to store it, thread
/// mobility, and serde for key groups, snapshots and the RocksDB backend.
pub trait StateKey:
    std::hash::Hash + Eq + Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}
impl<T> StateKey for T where
    T: std::hash::Hash
        + Eq
        + Clone
        + Send
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static
{
}

/// What a stored state value must provide.
pub trait StateValue:
    Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}
impl<T> StateValue for T where
    T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}

/// Result type of the state crate.
pub type Result<T, E = StateError> = std::result::Result<T, E>;
